"""Long runs survive: exact --resume, resume after a kill, and 2-process training on a CPU."""
import json
import os
import os.path as osp
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from conftest import tiny_run_options, tiny_shapes

from mmdet_dyhead.checkpoint import load_local_checkpoint
from mmdet_dyhead.utils.paths import ROOT

CONFIG = 'configs/demo/atss_r18_fpn_dyhead_16e_shapes.py'
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONHASHSEED='0')

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return tiny_shapes(tmp_path_factory, 8, 96)


def options(root, epochs):
    return tiny_run_options(root, epochs, val_interval=100)


def train(work, root, epochs, *extra, wait=True):
    cmd = [sys.executable, 'tools/train.py', CONFIG, '--work-dir', str(work), *extra,
           '--cfg-options', *options(root, epochs)]
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    p = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout + p.stderr


def losses(work):
    """Logged training losses by iteration, from every run in the work dir."""
    out = {}
    for root, _, files in os.walk(work):
        for f in files:
            if f == 'scalars.json':
                for line in open(osp.join(root, f)):
                    rec = json.loads(line)
                    if 'loss' in rec and 'iter' in rec:
                        out[rec['iter']] = rec['loss']
    return out


def state(path):
    ckpt = load_local_checkpoint(str(path), map_location='cpu')
    return ckpt['state_dict'], ckpt['optimizer']['state']


def assert_same_training(a, b):
    (wa, oa), (wb, ob) = state(a), state(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    for k in oa:
        for name in oa[k]:
            va, vb = oa[k][name], ob[k][name]
            assert torch.equal(va, vb) if torch.is_tensor(va) else va == vb, (k, name)


@pytest.fixture(scope='module')
def straight(data, tmp_path_factory):
    work = tmp_path_factory.mktemp('straight')
    train(work, data, 3)
    return work


def test_resume_is_bit_exact(data, straight, tmp_path):
    train(tmp_path, data, 1)                                   # 4 iterations
    log = train(tmp_path, data, 3, '--resume')                 # resume to 12
    assert 'resumed epoch: 1, iter: 4' in log
    assert_same_training(straight / 'epoch_3.pth', tmp_path / 'epoch_3.pth')
    a, b = losses(straight), losses(tmp_path)
    assert set(a) == set(range(1, 13)) and set(b) == set(a)
    assert all(a[i] == b[i] for i in a), (a, b)


def test_killed_run_resumes_from_its_last_checkpoint(data, straight, tmp_path):
    proc = train(tmp_path, data, 3, wait=False)
    deadline = time.time() + 300
    while not osp.exists(tmp_path / 'last_checkpoint') and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # mid-run, somewhere after the first checkpoint
    proc.wait()
    assert not osp.exists(tmp_path / 'epoch_3.pth'), 'finished before it could be killed'
    last = open(tmp_path / 'last_checkpoint').read().strip()
    epoch = int(re.search(r'epoch_(\d+)\.pth$', last).group(1))
    log = train(tmp_path, data, 3, '--resume')                 # latest checkpoint in the work dir
    assert f'resumed epoch: {epoch}, iter: {4 * epoch}' in log  # lost only what came after it
    assert_same_training(straight / 'epoch_3.pth', tmp_path / 'epoch_3.pth')


def test_two_process_training_on_cpu_then_test(data, tmp_path):
    with socket.socket() as sock:  # a free port for torchrun's rendezvous
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    env = dict(ENV, PORT=str(port))
    cmd = ['bash', 'tools/dist_train.sh', CONFIG, '2', '--work-dir', str(tmp_path),
           '--cfg-options', *options(data, 1)]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    log = p.stdout + p.stderr
    assert "dist_cfg: {'backend': 'gloo'}" in log
    # mmengine reports the world size as "GPU number"; each of the 2 ranks runs 8 / 2 / 2 iterations
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
    assert 'Epoch(train) [1][2/2]' in log
    ckpt = tmp_path / 'epoch_1.pth'
    assert ckpt.exists()
    out = subprocess.run([sys.executable, 'tools/test.py', CONFIG, str(ckpt), '--work-dir',
                          str(tmp_path / 'test'), '--cfg-options', *options(data, 1),
                          'model.test_cfg.score_thr=0.0'],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '"coco/bbox_mAP"' in out.stdout
