"""tools/ through the command line, as a user runs them: train a few iterations, test the checkpoint."""
import json
import math
import os.path as osp
import re
import subprocess
import sys

import pytest
from conftest import tiny_run_options, tiny_shapes

from mmdet_dyhead.utils.paths import ROOT

CONFIG = 'configs/demo/atss_r18_fpn_dyhead_16e_shapes.py'

pytestmark = pytest.mark.slow


def data_options(root):
    return tiny_run_options(root, epochs=1, val_interval=1)


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    return tiny_shapes(tmp_path_factory, 6, 128)


def run(args, **kw):
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope='module')
def trained(tiny_data, tmp_path_factory):
    work = tmp_path_factory.mktemp('work')
    # score_thr 0: the barely trained model's boxes reach COCO eval, so val has metrics
    log = run(['tools/train.py', CONFIG, '--work-dir', str(work), '--cfg-options',
               *data_options(tiny_data), 'model.test_cfg.score_thr=0.0'])
    return work, log


def test_train_runs_and_saves_a_checkpoint(trained):
    work, log = trained
    assert re.search(r'Epoch\(train\)\s+\[1\]\[3/3\].*loss: [0-9.]+', log)
    assert osp.isfile(work / 'epoch_1.pth')
    assert open(work / 'last_checkpoint').read().strip().endswith('epoch_1.pth')


def test_mask_rcnn_trains_on_the_demo_masks_and_reports_mask_map(tiny_data, tmp_path):
    log = run(['tools/train.py', 'configs/demo/mask-rcnn_r18_fpn_dyhead_16e_shapes.py',
               '--work-dir', str(tmp_path), '--cfg-options', *data_options(tiny_data),
               'model.test_cfg.rcnn.score_thr=0.0'])
    assert re.search(r'loss_mask: [0-9.]+', log)  # the masks were read and learnt from
    scalars = next(tmp_path.glob('*/vis_data/scalars.json')).read_text()
    val = [json.loads(line) for line in scalars.splitlines() if 'coco/segm_mAP' in line]
    assert len(val) == 1 and 0 <= val[0]['coco/segm_mAP'] <= 1 and 'coco/bbox_mAP' in val[0]


def test_train_draws_its_learning_curve(trained):
    work, _ = trained
    curve = json.load(open(work / 'learning_curve.json'))
    scalars = next(work.glob('*/vis_data/scalars.json')).read_text().splitlines()
    logged = [json.loads(line) for line in scalars if 'coco/bbox_mAP' in line]
    assert len(logged) == 1
    assert [p['bbox_mAP'] for p in curve['val']] == [r['coco/bbox_mAP'] for r in logged]
    assert (work / 'learning_curve.png').stat().st_size > 1000


def test_test_py_loads_the_checkpoint_and_prints_coco_metrics(trained, tiny_data, tmp_path):
    work, _ = trained
    # an untrained model scores below the config's 0.05: keep every box so COCO eval runs
    out = run(['tools/test.py', CONFIG, str(work / 'epoch_1.pth'), '--work-dir', str(tmp_path),
               '--cfg-options', *data_options(tiny_data), 'model.test_cfg.score_thr=0.0'])
    # the metrics line carries what pycocotools printed, not some other number
    printed = {iou: float(v) for iou, v in re.findall(
        r'Average Precision  \(AP\) @\[ IoU=(0\.50:0\.95|0\.50     ) \| area=   all \| '
        r'maxDets= *[0-9]+ \] = (-?[0-9.]+)', out)}
    assert set(printed) == {'0.50:0.95', '0.50     '}, out[-2000:]
    metrics = json.loads(re.search(r'^metrics: (.*)$', out, re.M).group(1))
    assert metrics['coco/bbox_mAP'] == pytest.approx(printed['0.50:0.95'], abs=6e-4)
    assert metrics['coco/bbox_mAP_50'] == pytest.approx(printed['0.50     '], abs=6e-4)


@pytest.mark.parametrize('backend', ['onnxruntime', 'openvino'])
def test_deployed_model_tests_and_infers_as_the_checkpoint(trained, tiny_data, tmp_path, backend):
    """tools/deploy.py, then tools/test.py --backend: the same metrics line and the same
    predictions (--out) as tools/test.py on the checkpoint; tools/infer.py --backend: the same
    boxes as tools/infer.py."""
    work, _ = trained
    opts = ['--cfg-options', *data_options(tiny_data), 'model.test_cfg.score_thr=0.0']
    export = tmp_path / 'export'
    out = run(['tools/deploy.py', CONFIG, str(work / 'epoch_1.pth'), '--backend', backend,
               '--out', str(export), '--dynamic', *opts])
    assert 'exported 2 parts (features, bbox_head)' in out
    runs = {}
    for name, args in (('pytorch', [str(work / 'epoch_1.pth')]),
                       (backend, [str(export), '--backend', backend])):
        log = run(['tools/test.py', CONFIG, *args, '--work-dir', str(tmp_path / name),
                   '--out', str(tmp_path / f'{name}.pkl'), *opts])
        runs[name] = json.loads(re.search(r'^metrics: (.*)$', log, re.M).group(1))
    assert runs[backend].keys() == runs['pytorch'].keys()
    for k, v in runs['pytorch'].items():
        assert abs(runs[backend][k] - v) <= 0.002, k
    import pickle
    want, got = (pickle.load(open(tmp_path / f'{n}.pkl', 'rb')) for n in ('pytorch', backend))
    assert [w['img_id'] for w in want] == [g['img_id'] for g in got]
    for w, g in zip(want, got):
        w, g = w['pred_instances'], g['pred_instances']
        assert len(w['bboxes']) == len(g['bboxes']) > 0
        top_w, top_g = w['scores'].sort(descending=True)[0], g['scores'].sort(descending=True)[0]
        assert (top_w[:20] - top_g[:20]).abs().max() < 1e-4
    image = str(tiny_data / 'val' / '00000.jpg')
    boxes = {}
    for name, args in (('pytorch', [str(work / 'epoch_1.pth')]),
                       (backend, [str(export), '--backend', backend])):
        run(['tools/infer.py', CONFIG, *args, image, '--out-dir', str(tmp_path / f'infer_{name}'),
             '--score-thr', '0', *opts])
        boxes[name] = json.loads((tmp_path / f'infer_{name}' / 'preds' / '00000.json').read_text())
    assert len(boxes[backend]['bboxes']) == len(boxes['pytorch']['bboxes']) > 0
    assert max(abs(a - b) for a, b in zip(sorted(boxes[backend]['scores'], reverse=True)[:20],
                                          sorted(boxes['pytorch']['scores'], reverse=True)[:20])) < 1e-4


def test_deploy_names_what_is_wrong(trained, tmp_path):
    work, _ = trained
    proc = subprocess.run([sys.executable, 'tools/deploy.py', CONFIG, str(work / 'epoch_1.pth'),
                           '--backend', 'onnxruntime', '--shape', '300', '320',
                           '--out', str(tmp_path), '--cfg-options', 'model.neck.1.num_blocks=1'],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and 'use multiples of 32' in proc.stderr
    # the checkpoint has 1 block (the tiny run's options); the config as it is has 4
    proc = subprocess.run([sys.executable, 'tools/deploy.py', CONFIG, str(work / 'epoch_1.pth'),
                           '--backend', 'onnxruntime', '--out', str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and 'does not match the config' in proc.stderr
    assert 'missing in the checkpoint' in proc.stderr and 'neck.1.blocks.1' in proc.stderr
    proc = subprocess.run([sys.executable, 'tools/test.py', CONFIG, str(tmp_path), '--backend',
                           'openvino'], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and 'no deploy.json' in proc.stderr


def test_test_py_reports_a_missing_checkpoint(tmp_path):
    proc = subprocess.run([sys.executable, 'tools/test.py', CONFIG, str(tmp_path / 'nope.pth')],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and 'checkpoint not found' in proc.stderr


def test_amp_on_cpu_trains_in_bf16(tiny_data, tmp_path):
    """--amp without a GPU: bf16 autocast through tools/train.py, finite losses."""
    log = run(['tools/train.py', CONFIG, '--amp', '--work-dir', str(tmp_path), '--cfg-options',
               *data_options(tiny_data), 'train_cfg.val_interval=100'])
    assert "type='CPUAutocastOptimWrapper'" in log
    losses = [float(v) for v in re.findall(r'Epoch\(train\).*? loss: ([0-9.naninf]+)', log)]
    assert losses and all(math.isfinite(v) for v in losses)


@pytest.mark.parametrize('src,saved,head', [
    ('docs/bench_cpu.json', 'docs/bench_cpu.md', 'fp32, cpu: '),
    ('docs/bench_gpu/fp32/results.json', 'docs/bench_gpu/fp32/table.md', 'fp32, cuda: NVIDIA'),
    ('docs/bench_gpu/fp16/results.json', 'docs/bench_gpu/fp16/table.md', 'fp16, cuda: NVIDIA')])
def test_saved_speed_tables_are_what_the_saved_benchmarks_say(tmp_path, src, saved, head):
    """Each saved speed table (make bench's, the GPU runs') is redrawn exactly from its JSON, the
    benchmark's own output, and docs/speed.md carries that table."""
    out = subprocess.run([sys.executable, 'tools/benchmark_neck.py', '--from-json', src, '--out',
                          str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    table = (tmp_path / 'table.md').read_text()
    assert table.startswith('256 channels, 6 blocks, batch 2, P3-P7, ' + head)
    with open(osp.join(ROOT, saved)) as f:
        assert f.read() == table
    with open(osp.join(ROOT, 'docs/speed.md')) as f:
        assert table.strip() in f.read()
    import matplotlib.image
    png = matplotlib.image.imread(str(tmp_path / 'time_vs_size.png'))
    assert png.shape[0] > 200 and png.shape[1] > 300  # a drawn figure, not an empty canvas:
    assert png[..., :3].std() > 0.05  # lines and text in more than one colour


@pytest.mark.parametrize('paths', [
    ['docs/bench_cpu.json'] + [
        f'docs/bench_ratio_runs/{run}/results.json'
        for run in ['run2', 'run3', 'run4', 'eb2437d_bench', 'eb2437d_run2', 'eb2437d_run3',
                    'eb2437d_run4', 'eb2437d_run5', '4747ab5_bench', '4747ab5_run2',
                    '4747ab5_run3', '3ab460d_bench', '3ab460d_run2', '3ab460d_run3']],
    [f'docs/bench_ratio_runs/xeon_run{i}/results.json' for i in range(1, 22)]], ids=['epyc', 'xeon'])
def test_speed_doc_ratio_runs_are_what_the_saved_runs_say(paths):
    """docs/speed.md's runs side by side are `benchmark_neck.py --ratios` of the saved runs."""
    out = subprocess.run([sys.executable, 'tools/benchmark_neck.py', '--ratios', *paths],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    table = out.stdout.strip()
    assert table.count('\n') == 1 + len(paths)  # head, rule, one row per run
    with open(osp.join(ROOT, 'docs/speed.md')) as f:
        assert table in f.read()


ALLOCATOR_RUNS = ['xeon_glibc_defaults', 'xeon_keep_memory', 'xeon_glibc_defaults_run2',
                  'xeon_keep_memory_run2', 'xeon_eval_glibc_defaults', 'xeon_eval_keep_memory']


def test_allocator_runs_in_the_docs_are_what_the_saved_runs_say():
    """docs/speed.md's allocator table is `--ratios` of the saved pairs, each run records how it
    allocated, and the README's figures (faults, time ratios, forward ratios) are the JSON's."""
    paths = [f'docs/bench_allocator/{run}/results.json' for run in ALLOCATOR_RUNS]
    out = subprocess.run([sys.executable, 'tools/benchmark_neck.py', '--sizes', '800x1333',
                          '--ratios', *paths], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    with open(osp.join(ROOT, 'docs/speed.md')) as f:
        assert out.stdout.strip() in f.read()
    runs = {}
    for run, path in zip(ALLOCATOR_RUNS, paths):
        with open(osp.join(ROOT, path)) as f:
            runs[run] = json.load(f)
        kept = 'keep_memory' in run
        assert runs[run]['allocator'].startswith('GLIBC_TUNABLES=') == kept
    t = {run: r['sizes']['800x1333']['time'] for run, r in runs.items()}
    ours, convs = 'ours, default', '4 stacked convs'

    def ratio(run, key):
        return f'{_ratio(runs[run], "800x1333", key):.2f}x'

    faults = runs['xeon_glibc_defaults']['sizes']['800x1333']['page_faults']
    kept_time = [f'{t[k][ours]["fwd_bwd"] / t[d][ours]["fwd_bwd"]:.2f}x' for d, k in
                 [('xeon_glibc_defaults', 'xeon_keep_memory'),
                  ('xeon_glibc_defaults_run2', 'xeon_keep_memory_run2')]]
    fwd_bwd = sorted(ratio(run, 'fwd_bwd') for run in ALLOCATOR_RUNS[:4])
    with open(osp.join(ROOT, 'README.md')) as f:
        readme = ' '.join(f.read().split())
    assert (f'{faults[convs]["fwd"] / 1000:.0f} against {faults[ours]["fwd"] / 1000:.0f} '
            'thousand per forward') in readme
    assert (f'took {kept_time[0]} and {kept_time[1]} the time in two pairs of runs') in readme
    assert (f'from {ratio("xeon_glibc_defaults", "fwd")} and '
            f'{ratio("xeon_glibc_defaults_run2", "fwd")} to {ratio("xeon_keep_memory", "fwd")} '
            f'and {ratio("xeon_keep_memory_run2", "fwd")} (batch 1: '
            f'{ratio("xeon_eval_glibc_defaults", "fwd")} to '
            f'{ratio("xeon_eval_keep_memory", "fwd")})') in readme
    assert f'forward+backward stayed at {fwd_bwd[0][:-1]}-{fwd_bwd[-1]}' in readme


def test_ratios_table_divides_ours_by_the_stacked_convs():
    r = {'sizes': {'64x64': {'time': {'ours, default': {'fwd': 3.0, 'fwd_bwd': 9.0},
                                      '4 stacked convs': {'fwd': 2.0, 'fwd_bwd': 6.0}}}},
         'atss': {'ratio': 1.234},
         'dcn_gflops': {'ours, torch kernel': 80.0, 'matmul (oneDNN)': 100.0}}
    md = _tool('benchmark_neck').ratios_table([('a.json', r), ('b.json', {'sizes': r['sizes']})],
                                              ['64x64'])
    assert '| `a.json` | 1.50x | 1.50x | 1.23x | 80% |' in md
    assert '| `b.json` | 1.50x | 1.50x | - | - |' in md


def test_benchmark_table_sets_the_plain_conv_apart_from_the_matmul_limit():
    """The plain 3x3 conv's rate (the stacked convs' kernel) is its own sentence, not one of the
    shares of 'the limit'; runs saved before it was measured redraw as they were."""
    tool = _tool('benchmark_neck')
    r = {'channels': 8, 'blocks': 1, 'batch': 1, 'dtype': 'torch.float32', 'device': 'cpu',
         'machine': 'm', 'sizes': {'8x8': {'time': {'a': {'fwd': 1.0, 'fwd_bwd': 2.0}}}},
         'dcn_gflops': {'matmul (oneDNN)': 100.0, 'ours, torch kernel': 80.0,
                        tool.PLAIN_CONV: 110.0}}
    md = tool.table(r, ['8x8'], ['a'])
    assert ('(the limit): matmul (oneDNN) 100 (100%), ours, torch kernel 80 (80%). A plain 3x3 '
            "conv of the same FLOPs (the stacked convs' kernel): 110 (110%).") in md
    del r['dcn_gflops'][tool.PLAIN_CONV]
    assert tool.table(r, ['8x8'], ['a']).count('plain') == 0


def _tool(name):
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    import importlib
    return importlib.import_module(name)


def test_unfolded_benchmark_model_is_the_default_without_the_fold(monkeypatch):
    """benchmark_neck's 'ours, unfolded' is 'ours, default' with the GroupNorm/resize fold off:
    the same outputs, and the folded passes never run."""
    import torch

    from mmdet_dyhead.ops import norm_scale_task as nst
    models = _tool('benchmark_neck').build(32, 1, 'cpu')
    calls = []
    monkeypatch.setattr('mmdet_dyhead.models.dynamic_head.norm_scale_task',
                        lambda *a: calls.append(1) or nst.norm_scale_task(*a))
    feats = [torch.randn(1, 32, s, s) for s in (8, 4, 2)]
    with torch.no_grad():
        folded = models['ours, default'](feats)
        assert len(calls) == 1
        unfolded = models['ours, unfolded'](feats)
    assert len(calls) == 1
    for a, b in zip(folded, unfolded):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_memory_table_states_each_peak_against_the_stacked_convs():
    r = dict(machine='m', device='cpu', batch=2, channels=8, blocks=1,
             peak_mib={'64x64': {'ours, default': 30.0, '4 stacked convs': 10.0},
                       '96x96': {'ours, with_cp': 5.0, '4 stacked convs': 20.0}})
    rows = {line.split(' | ')[0].strip('| '): line for line in
            _tool('benchmark_neck').memory_table(r).splitlines() if line.startswith('| ')}
    assert rows['ours, default'] == '| ours, default | 30 MiB (3.0x) | - |'
    assert rows['ours, with_cp'] == '| ours, with_cp | - | 5 MiB (0.2x) |'
    assert rows['4 stacked convs'] == '| 4 stacked convs | 10 MiB | 20 MiB |'


def test_precision_table_gives_bf16_speedups_and_ratios_to_the_stacked_convs():
    t = {'DynamicHead': {'fp32': {'fwd': 4.0, 'fwd_bwd': 12.0}, 'bf16': {'fwd': 2.0, 'fwd_bwd': 8.0}},
         '4 stacked convs': {'fp32': {'fwd': 2.0, 'fwd_bwd': 6.0},
                             'bf16': {'fwd': 1.0, 'fwd_bwd': 2.0}}}
    md = _tool('benchmark_precision').table(dict(machine='m', channels=8, blocks=1, batch=2,
                                                 sizes={'64x64': t}))
    assert '| 64x64 | DynamicHead | 4.000 s | 2.000 s | 12.000 s | 8.000 s | 2.00x / 1.50x |' in md
    assert '| 64x64 | DynamicHead / stacked convs | 2.00x | 2.00x | 2.00x | 4.00x | |' in md


@pytest.mark.parametrize('tool,fn,src,saved', [
    ('benchmark_neck', 'memory_table', 'bench_memory.json', 'bench_memory.md'),
    ('benchmark_precision', 'table', 'bench_bf16.json', 'bench_bf16.md'),
    ('benchmark_precision', 'table', 'bench_bf16_runs/xeon/results.json',
     'bench_bf16_runs/xeon/table.md')])
def test_saved_memory_and_bf16_tables_are_what_their_results_say(tool, fn, src, saved):
    """docs/bench_memory.md and the bf16 tables (this CPU's, the Xeon's) are drawn exactly from the
    benchmarks' saved JSON, and docs/speed.md carries them."""
    with open(osp.join(ROOT, 'docs', src)) as f:
        md = getattr(_tool(tool), fn)(json.load(f))
    with open(osp.join(ROOT, 'docs', saved)) as f:
        assert f.read() == md
    with open(osp.join(ROOT, 'docs/speed.md')) as f:
        assert md.strip() in f.read()


def test_readme_bf16_and_memory_figures_are_the_saved_ones():
    with open(osp.join(ROOT, 'docs/bench_bf16.json')) as f:
        b = json.load(f)['sizes']['512x512']
    with open(osp.join(ROOT, 'docs/bench_memory.json')) as f:
        m = json.load(f)['peak_mib']['512x512']
    with open(osp.join(ROOT, 'README.md')) as f:
        readme = ' '.join(f.read().split())
    dy, st = b['DynamicHead'], b['4 stacked convs']
    assert (f'takes {dy["bf16"]["fwd_bwd"]:.3f} s ({dy["fp32"]["fwd_bwd"] / dy["bf16"]["fwd_bwd"]:.2f}x '
            f'faster than fp32) against {st["bf16"]["fwd_bwd"]:.3f} s') in readme
    assert (f'from {m["ours, default"]:.0f} MiB to {m["ours, with_cp"]:.0f} MiB at 512x512 '
            f'(the stacked convs: {m["4 stacked convs"]:.0f} MiB)') in readme


def test_readme_gpu_sentence_is_what_the_saved_run_says():
    with open(osp.join(ROOT, 'docs/bench_gpu/fp32/results.json')) as f:
        t = json.load(f)['sizes']['512x512']['time']
    ours, ref = t['ours, default']['fwd_bwd'], t['mmdet DyHead']['fwd_bwd']
    with open(osp.join(ROOT, 'README.md')) as f:
        readme = ' '.join(f.read().split())
    assert (f'takes {ours:.3f} s against {ref:.3f} s for mmdet\'s `DyHead` ({ref / ours:.2f}x '
            f'faster) and {t["4 stacked convs"]["fwd_bwd"]:.3f} s for the stacked convs') in readme


def test_mmcv_subset_keeps_only_the_named_cuda_kernels(tmp_path):
    """tools/gpu/mmcv_subset.py on a small mmcv-like tree: the kept kernels and their bindings stay,
    the others go, direct CUDA callers lose MMCV_WITH_CUDA, THC's header is replaced, and a second
    run changes nothing."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('mmcv_subset', osp.join(ROOT, 'tools/gpu/mmcv_subset.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    pt = tmp_path / 'mmcv/ops/csrc/pytorch'
    (pt / 'cuda').mkdir(parents=True)
    common = tmp_path / 'mmcv/ops/csrc/common'
    common.mkdir()
    (common / 'pytorch_cuda_helper.hpp').write_text(tool.THC + '\n')
    for name in tool.KEEP_CU + ['other_cuda.cu']:
        (pt / 'cuda' / name).write_text('// kernel\n')
    for name in tool.DIRECT_CUDA:
        (pt / name).write_text('#ifdef MMCV_WITH_CUDA\n#endif\n')
    ops = [('other', 'OtherLauncher')] + [(k.lower(), k) for k in tool.KEEP_BINDINGS]
    bind = '#include "pytorch_cpp_helper.hpp"\n#include "pytorch_device_registry.hpp"\n\n' + ''.join(
        f'void {launcher}(Tensor x);\n\nvoid {op}_cuda(Tensor x) {{\n  {launcher}(x);\n}}\n\n'
        f'void {op}_impl(Tensor x);\nREGISTER_DEVICE_IMPL({op}_impl, CUDA,\n'
        f'                     {op}_cuda);\n\n' for op, launcher in ops)
    (pt / 'cuda/cudabind.cpp').write_text(bind)
    tool.main(str(tmp_path))
    assert sorted(p.name for p in (pt / 'cuda').glob('*.cu')) == sorted(tool.KEEP_CU)
    kept = (pt / 'cuda/cudabind.cpp').read_text()
    assert kept.startswith('#include "pytorch_cpp_helper.hpp"\n#include "pytorch_device_registry.hpp"')
    assert 'OtherLauncher' not in kept and 'other_impl' not in kept
    for op, launcher in ops[1:]:
        assert f'REGISTER_DEVICE_IMPL({op}_impl, CUDA,' in kept and f'void {launcher}(' in kept
    for name in tool.DIRECT_CUDA:
        assert (pt / name).read_text().startswith('#undef MMCV_WITH_CUDA')
    assert 'ATen/cuda/Atomic.cuh' in (common / 'pytorch_cuda_helper.hpp').read_text()
    before = {p: p.read_text() for p in tmp_path.rglob('*') if p.is_file()}
    tool.main(str(tmp_path))
    assert {p: p.read_text() for p in tmp_path.rglob('*') if p.is_file()} == before


def _ratio(run: dict, size: str, part: str) -> float:
    t = run['sizes'][size]['time']
    return t['ours, default'][part] / t['4 stacked convs'][part]


def _xeon_runs(*numbers) -> list:
    runs = []
    for i in numbers:
        with open(osp.join(ROOT, f'docs/bench_ratio_runs/xeon_run{i}/results.json')) as f:
            runs.append(json.load(f))
    return runs


def test_readme_xeon_sentence_is_what_the_saved_runs_say():
    """The README's Xeon ranges are the min and max over the runs since f976683,
    docs/bench_ratio_runs/xeon_run5 to 21, and every Xeon run and the Xeon bf16 run ran on a Xeon;
    the last four runs' figures and the side-by-side run's are theirs."""
    with open(osp.join(ROOT, 'docs/bench_bf16_runs/xeon/results.json')) as f:
        assert all('Intel(R) Xeon(R)' in r['machine'] for r in _xeon_runs(*range(1, 22)) + [json.load(f)])
    runs = _xeon_runs(*range(5, 22))

    def span(values):
        return f'{min(values):.2f}-{max(values):.2f}x'
    fb = {s: span([_ratio(r, s, 'fwd_bwd') for r in runs]) for s in ('512x512', '800x1333')}
    atss = span([r['atss']['ratio'] for r in runs])
    with open(osp.join(ROOT, 'README.md')) as f:
        readme = ' '.join(f.read().split())
    assert (f'forward+backward takes {fb["512x512"]} the stacked convs at 512x512 and '
            f'{fb["800x1333"]} at 800x1333, and the ATSS iteration {atss} (seventeen runs at') in readme
    last = runs[-4:]  # the runs of 33a0040 (18 to 21)
    assert all(r['backward_gemm'] == 'mkl' for r in last)
    atss_last = [f'{r["atss"]["ratio"]:.2f}x' for r in last]
    fb_last = span([_ratio(r, '512x512', 'fwd_bwd') for r in last])
    fb_last_800 = span([_ratio(r, '800x1333', 'fwd_bwd') for r in last])
    assert (f'gave {", ".join(atss_last[:-1])} and {atss_last[-1]} for the ATSS iteration and '
            f'{fb_last} forward+backward at 512x512 ({fb_last_800} at 800x1333)') in readme
    with open(osp.join(ROOT, 'docs/bench_backward_gemm/xeon/results.json')) as f:
        side = json.load(f)
    t = side['sizes']['512x512']['time']
    mkl, onednn = (t[n]['fwd_bwd'] / t['4 stacked convs']['fwd_bwd']
                   for n in ('ours, default', 'ours, oneDNN backward'))
    assert side['backward_gemm'] == 'mkl'
    assert f'side in one run, {mkl:.2f}x against {onednn:.2f}x with oneDNN\'s backward' in readme
    fwd_last = span([_ratio(r, s, 'fwd') for r in last for s in ('512x512', '800x1333')])
    assert f'The forward there still takes {fwd_last}' in readme


def test_plain_conv_rates_in_the_docs_are_what_the_saved_runs_say():
    """The README's and docs/speed.md's plain-conv-over-matmul figures are the saved Xeon runs that
    timed the plain conv (xeon_run10 and the eval runs 5 and 6)."""
    paths = ['docs/bench_ratio_runs/xeon_run10', 'docs/bench_eval/xeon_run5',
             'docs/bench_eval/xeon_run6']
    pairs = []
    for path in paths:
        with open(osp.join(ROOT, path, 'results.json')) as f:
            g = json.load(f)['dcn_gflops']
        pairs.append((g['plain 3x3 conv'], g['matmul (oneDNN)']))
    shares = [p / m for p, m in pairs]
    with open(osp.join(ROOT, 'README.md')) as f:
        readme = ' '.join(f.read().split())
    assert (f'runs {round(100 * min(shares)) - 100}-{round(100 * max(shares)) - 100}% faster than '
            f'the fastest matrix product') in readme
    with open(osp.join(ROOT, 'docs/speed.md')) as f:
        doc = ' '.join(f.read().split())
    assert f'at {round(100 * min(shares))}-{round(100 * max(shares))}% of the fastest matrix product' in doc
    (p0, m0), (p1, m1), (p2, m2) = pairs
    assert (f'({p0:.0f} against {m0:.0f} GFLOP/s in `xeon_run10`, {p1:.0f} against {m1:.0f} and '
            f'{p2:.0f} against {m2:.0f} in') in doc


def test_speed_doc_xeon_targets_are_what_the_saved_runs_say():
    """docs/speed.md's table of the targets on the Xeon quotes runs 5 to 21 and the twelve eval runs."""
    runs = _xeon_runs(*range(5, 22))

    def two(size, part):
        return ', '.join(f'{_ratio(r, size, part):.2f}x' for r in runs)
    cells = [f'512x512: {two("512x512", "fwd")}; 800x1333: {two("800x1333", "fwd")}',
             f'512x512: {two("512x512", "fwd_bwd")}; 800x1333: {two("800x1333", "fwd_bwd")}',
             ', '.join(f'{r["atss"]["ratio"]:.2f}x' for r in runs)]
    for name in ('xeon', 'xeon_run2', 'xeon_run3', 'xeon_run4', 'xeon_run5', 'xeon_run6',
                 'xeon_run7', 'xeon_run8', 'xeon_run9', 'xeon_run10', 'xeon_run11',
                 'xeon_run12'):
        with open(osp.join(ROOT, f'docs/bench_eval/{name}/results.json')) as f:
            t = json.load(f)['sizes']['800x1333']['time']
        ours, convs = t['ours, default']['fwd'], t['4 stacked convs']['fwd']
        cells.append(f'{ours / convs:.2f}x ({ours:.3f} against {convs:.3f} s, '
                     f'`docs/bench_eval/{name}/`)')
    with open(osp.join(ROOT, 'docs/speed.md')) as f:
        doc = f.read()
    for cell in cells:
        assert cell in doc, cell


class _TouchesFreshPages:
    """A 'model' whose every call maps 16 MiB anew and writes one byte per page (mmap: whatever
    the allocator)."""

    def __init__(self, pages: int):
        self.pages = pages

    def __call__(self, xs):
        import mmap
        m = mmap.mmap(-1, self.pages * mmap.PAGESIZE)
        for i in range(self.pages):
            m[i * mmap.PAGESIZE] = 1
        m.close()
        return [x.sum() for x in xs]


def test_benchmark_counts_each_calls_page_faults():
    """time_all's fault counts are per call and per implementation: the model that touches 4096
    fresh pages per call shows at least that many, forward and forward+backward, and the one that
    touches none far fewer."""
    import torch
    tool = _tool('benchmark_neck')
    models = {'touches': _TouchesFreshPages(4096), 'none': lambda xs: [x.sum() for x in xs]}
    faults = {}
    times = tool.time_all(models, [torch.ones(2, 3)], 3, 'cpu', torch.float32,
                          ['touches', 'none'], faults)
    assert set(times) == set(faults) == {'touches', 'none'}
    for key in ('fwd', 'fwd_bwd'):
        assert faults['touches'][key] >= 4096
        assert faults['none'][key] < 1000


def test_benchmark_records_the_allocator_and_shows_it(monkeypatch):
    """The allocator's settings go into results.json and the table's caption, and the page faults
    into a sentence under the table; runs saved before either was recorded redraw as they were."""
    tool = _tool('benchmark_neck')
    for k in tool.ALLOCATOR_ENV:
        monkeypatch.delenv(k, raising=False)
    assert tool.allocator() == "glibc's defaults"
    monkeypatch.setenv('GLIBC_TUNABLES', 'glibc.malloc.trim_threshold=1')
    assert tool.allocator() == 'GLIBC_TUNABLES=glibc.malloc.trim_threshold=1'
    r = {'channels': 8, 'blocks': 1, 'batch': 1, 'dtype': 'torch.float32', 'device': 'cpu',
         'machine': 'm', 'allocator': tool.allocator(),
         'sizes': {'8x8': {'time': {'a': {'fwd': 1.0, 'fwd_bwd': 2.0},
                                    'b': {'fwd': 1.0, 'fwd_bwd': 2.0}},
                           'page_faults': {'a': {'fwd': 12.0, 'fwd_bwd': 34.5},
                                           'b': {'fwd': 0.0, 'fwd_bwd': 7.0}}}},
         'dcn_gflops': {'matmul (oneDNN)': 100.0}}
    md = tool.table(r, ['8x8'], ['a', 'b'])
    assert 'Allocator: GLIBC_TUNABLES=glibc.malloc.trim_threshold=1.' in md
    assert ('Minor page faults per call at 8x8 (median; forward, forward+backward): a 12, 34, '
            'b 0, 7.') in md
    del r['allocator'], r['sizes']['8x8']['page_faults']
    md = tool.table(r, ['8x8'], ['a', 'b'])
    assert 'Allocator' not in md and 'page faults' not in md


@pytest.mark.cpu_only
def test_benchmark_runs_the_onednn_backward_implementation_with_onednn():
    """'ours, oneDNN backward' is the default model with oneDNN's backward GEMMs; every other
    implementation keeps the process's library, which is restored afterwards."""
    import torch

    from mmdet_dyhead.ops.deform_conv import backward_gemm
    tool = _tool('benchmark_neck')
    before = backward_gemm()
    if before is None:
        pytest.skip('the C++ conv is not built')
    try:
        backward_gemm('mkl' if torch.backends.mkl.is_available() else 'onednn')
        with tool.backward_gemm_of('ours, oneDNN backward'):
            assert backward_gemm() == 'onednn'
        assert backward_gemm() == ('mkl' if torch.backends.mkl.is_available() else 'onednn')
        with tool.backward_gemm_of('ours, default'):
            assert backward_gemm() == ('mkl' if torch.backends.mkl.is_available() else 'onednn')
    finally:
        backward_gemm(before)


def test_benchmark_layout_times_both_copies_of_every_level(capsys):
    """tools/benchmark_layout.py: one row per pyramid level, both copies timed (the tool checks
    that the tiled copy equals torch's before timing it)."""
    tool = _tool('benchmark_layout')
    tool.main(['--size', '64', '96', '--batch', '1', '--channels', '40', '--repeats', '2'])
    rows = [line for line in capsys.readouterr().out.splitlines() if re.match(r'\| \d+x\d+ \|', line)]
    assert [r.split(' | ')[0] for r in rows] == ['| 8x12', '| 4x6', '| 2x3', '| 1x2', '| 1x1']
    assert all(len(re.findall(r'[0-9.]+ ms \([0-9.]+ GB/s\)', r)) == 2 for r in rows)
