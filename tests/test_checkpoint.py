"""Checkpoints on torch >= 2.6: mmengine's load, crafted pickles are refused, opt-in works."""

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

import mmdet_dyhead  # noqa: F401  (registers the loader)
from mmdet_dyhead.checkpoint import UntrustedCheckpointError, load_local_checkpoint

MARK = []


def _record(what):
    MARK.append(what)


class _Payload:
    """Stands for a malicious object: unpickling it would call a function of the attacker's."""

    def __reduce__(self):
        return (_record, ('ran',))


def test_mmengine_style_checkpoint_loads_through_mmengine(tmp_path):
    buf = HistoryBuffer()
    buf.update(1.5)
    ckpt = dict(meta=dict(epoch=3, seed=0, dataset_meta=dict(classes=('a', 'b'))),
                state_dict=dict(w=torch.ones(2)),
                message_hub=dict(log_scalars={'train/loss': buf},
                                 runtime_info=dict(iter=np.int64(5), best=np.float64(0.5),
                                                   arr=np.arange(3))))
    path = tmp_path / 'ok.pth'
    torch.save(ckpt, path)
    loaded = CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert torch.equal(loaded['state_dict']['w'], torch.ones(2))
    assert loaded['message_hub']['log_scalars']['train/loss'].current() == 1.5
    assert loaded['message_hub']['runtime_info']['arr'].tolist() == [0, 1, 2]


def test_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv('MMDET_DYHEAD_TRUST_CHECKPOINTS', raising=False)
    path = tmp_path / 'evil.pth'
    torch.save(dict(state_dict={}, payload=_Payload()), path)
    MARK.clear()
    with pytest.raises(UntrustedCheckpointError, match='MMDET_DYHEAD_TRUST_CHECKPOINTS=1'):
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert MARK == []  # nothing was executed
    # opting in for a trusted file loads it fully
    monkeypatch.setenv('MMDET_DYHEAD_TRUST_CHECKPOINTS', '1')
    load_local_checkpoint(str(path))
    assert MARK == ['ran']


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_local_checkpoint(str(tmp_path / 'none.pth'))


def test_getattr_is_limited_to_history_buffer_methods(tmp_path):
    """A pickle that uses getattr to reach anything but a HistoryBuffer method is refused."""
    class _Sneaky:
        def __reduce__(self):
            return (getattr, (HistoryBuffer, '__init__'))

    path = tmp_path / 'sneaky.pth'
    torch.save(dict(x=_Sneaky()), path)
    with pytest.raises(UntrustedCheckpointError, match=r"getattr\(.*'__init__'\) is not allowed"):
        load_local_checkpoint(str(path))
