"""The block and the neck: sizes, levels, batch, switches, legacy vs corrected offsets, registry."""
import pytest
import torch
from conftest import perturb
from mmdet.registry import MODELS

import mmdet_dyhead  # noqa: F401  (registers DynamicHead)
from mmdet_dyhead import DynamicHead

GN4 = dict(type='GN', num_groups=4, requires_grad=True)


def _feats(sizes, n=2, c=16, grad=False):
    return [torch.randn(n, c, h, w, requires_grad=grad) for h, w in sizes]


def _perturb(module, std=0.1):
    perturb(module, std)


@pytest.mark.parametrize('sizes', [
    [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)],   # exact halves down to 1x1
    [(15, 21), (8, 11), (4, 6)],                  # odd sizes
    [(13, 9), (5, 4), (4, 3)],                    # not halves of each other
    [(7, 5)],                                     # a single level
])
@pytest.mark.parametrize('n', [1, 3])
def test_neck_keeps_shapes_and_gives_gradients(sizes, n):
    neck = DynamicHead(16, 16, num_blocks=2, norm_cfg=GN4)
    _perturb(neck)
    feats = _feats(sizes, n=n, grad=True)
    out = neck(feats)
    assert isinstance(out, tuple) and len(out) == len(sizes)
    for o, f in zip(out, feats):
        assert o.shape == f.shape and torch.isfinite(o).all()
    sum(o.sum() for o in out).backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats)


def test_in_channels_differ_from_out_channels():
    neck = DynamicHead(in_channels=12, out_channels=8, num_blocks=2, norm_cfg=GN4)
    out = neck(_feats([(9, 9), (5, 5)], c=12))
    assert [o.shape[1] for o in out] == [8, 8]
    assert neck.blocks[0].spatial.offset_conv.in_channels == 12
    assert neck.blocks[1].spatial.offset_conv.in_channels == 8


def test_defaults_follow_the_paper():
    neck = DynamicHead()
    assert len(neck.blocks) == 6 and neck.out_channels == 256
    assert all(b.spatial.offset_conv.weight.abs().sum() == 0 for b in neck.blocks)
    from mmcv.ops import ModulatedDeformConv2d
    convs = [m for m in neck.modules() if isinstance(m, ModulatedDeformConv2d)]
    assert len(convs) == 18 and all(c.bias is None for c in convs)


def test_switches_fall_back_to_plain_operations():
    x = _feats([(8, 8), (4, 4)])
    off = DynamicHead(16, 16, num_blocks=1, norm_cfg=GN4, scale_aware=False,
                      spatial_aware=False, task_aware=False)
    blk = off.blocks[0]
    assert blk.spatial.offset_conv is None
    assert type(blk.scale).__name__ == 'LevelMean' and isinstance(blk.task, torch.nn.ReLU)
    # by hand: plain conv + GN per branch, plain mean, ReLU
    sp = blk.spatial
    F = torch.nn.functional
    same0 = sp.same.norm(F.conv2d(x[0], sp.same.conv.weight, None, 1, 1))
    coarse0 = F.interpolate(sp.coarser.norm(F.conv2d(x[1], sp.coarser.conv.weight, None, 1, 1)),
                            size=(8, 8), mode='bilinear', align_corners=True)
    torch.testing.assert_close(off(x)[0], torch.relu((same0 + coarse0) / 2))
    # each switch alone changes the result
    full = DynamicHead(16, 16, num_blocks=1, norm_cfg=GN4, zero_init_offset=False)
    _perturb(full, 0.3)
    ref = full(x)
    for switch in ('scale_aware', 'spatial_aware', 'task_aware'):
        other = DynamicHead(16, 16, num_blocks=1, norm_cfg=GN4, **{switch: False})
        other.load_state_dict(full.state_dict(), strict=False)
        assert not torch.allclose(other(x)[0], ref[0], atol=1e-4), switch


def test_legacy_and_corrected_offsets():
    sizes = [(12, 10), (6, 5), (3, 3)]
    x = _feats(sizes)
    fixed = DynamicHead(16, 16, num_blocks=1, norm_cfg=GN4)
    legacy = DynamicHead(16, 16, num_blocks=1, norm_cfg=GN4, legacy_offsets=True)
    legacy.load_state_dict(fixed.state_dict())
    # zero offsets (the default init): the misread changes nothing
    for a, b in zip(fixed(x), legacy(x)):
        torch.testing.assert_close(a, b)
    # real offsets: levels with a coarser neighbour differ, the coarsest level agrees
    _perturb(fixed, 0.2)
    legacy.load_state_dict(fixed.state_dict())
    a, b = fixed(x), legacy(x)
    assert not torch.allclose(a[0], b[0], atol=1e-3)
    assert not torch.allclose(a[1], b[1], atol=1e-3)
    torch.testing.assert_close(a[2], b[2])


def test_corrected_coarser_branch_uses_the_coarser_levels_own_offsets():
    neck = DynamicHead(16, 16, num_blocks=1, norm_cfg=GN4)
    _perturb(neck, 0.2)
    sp = neck.blocks[0].spatial
    x = _feats([(8, 6), (4, 3)])
    off1, mask1 = sp.offsets(x[1])
    expected = sp.coarser(x[1], off1, mask1, 'mmcv')
    got = sp(x)[0][1]  # level 0, coarser branch (upsampled)
    up = torch.nn.functional.interpolate(expected, size=(8, 6), mode='bilinear',
                                         align_corners=True)
    torch.testing.assert_close(got, up, rtol=1e-4, atol=1e-5)


def test_dcn_impls_agree_in_the_neck():
    neck = DynamicHead(16, 16, num_blocks=2, norm_cfg=GN4, zero_init_offset=False)
    _perturb(neck, 0.1)
    x = _feats([(11, 9), (6, 5), (3, 3)])
    neck.dcn_impl = 'mmcv'
    ref = neck(x)
    neck.dcn_impl = 'torch'
    for a, b in zip(neck(x), ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_built_from_the_registry_in_eval_and_no_grad():
    """The registry builds the same module as the class; eval mode and no_grad change nothing
    (GroupNorm, no dropout), so a detector's predict sees what its training saw."""
    neck = MODELS.build(dict(type='DynamicHead', in_channels=16, out_channels=16, num_blocks=1,
                             norm_cfg=GN4))
    direct = DynamicHead(16, 16, num_blocks=1, norm_cfg=GN4)
    assert isinstance(neck, DynamicHead) and neck.state_dict().keys() == direct.state_dict().keys()
    perturb(neck, 0.2)
    direct.load_state_dict(neck.state_dict())
    x = tuple(_feats([(6, 6), (3, 3)]))
    train_out = direct(x)
    neck.eval()
    with torch.no_grad():
        out = neck(x)
    assert out[0].shape == (2, 16, 6, 6) and out[1].shape == (2, 16, 3, 3)
    for a, b in zip(out, train_out):
        torch.testing.assert_close(a, b.detach())


def test_with_cp_gives_the_same_outputs_and_gradients():
    """Gradient checkpointing recomputes each block in the backward: nothing else changes."""
    torch.manual_seed(0)
    plain = DynamicHead(32, 32, num_blocks=2)
    perturb(plain, 0.05)
    cp = DynamicHead(32, 32, num_blocks=2, with_cp=True)
    cp.load_state_dict(plain.state_dict())
    feats = [torch.randn(2, 32, s, s + 1) for s in (12, 6, 3)]
    calls = {id(plain): 0, id(cp): 0}
    for model in (plain, cp):
        model.blocks[0].register_forward_pre_hook(
            lambda *_, key=id(model): calls.__setitem__(key, calls[key] + 1))
    outs, grads = [], []
    for model in (plain, cp):
        xs = [f.clone().requires_grad_() for f in feats]
        out = model(xs)
        sum((o * torch.randn_like(o, generator=torch.Generator(o.device).manual_seed(1))).sum()
            for o in out).backward()
        outs.append(out)
        grads.append([x.grad for x in xs] + [p.grad for p in model.parameters()])
    assert calls == {id(plain): 1, id(cp): 2}  # the block ran again in the backward
    for a, b in zip(*outs):
        assert torch.allclose(a, b, atol=1e-6)
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    with pytest.raises(TypeError, match='with_cp must be True or False'):
        DynamicHead(32, 32, with_cp=1)


def test_task_attention_without_autograd_equals_the_autograd_form():
    from mmdet_dyhead import TaskAwareAttention
    torch.manual_seed(0)
    task = TaskAwareAttention(32)
    perturb(task, 0.3)
    x = torch.randn(2, 32, 7, 5)
    with torch.no_grad():
        fast = task(x)
    assert torch.equal(fast, task(x).detach())


def test_built_under_a_default_device_every_parameter_lands_there():
    """mmcv's deformable conv makes its weight with the legacy torch.Tensor(...), which ignores
    the default device; the neck's parameters must all follow it (TORCH_DEVICE=cuda relies on it)."""
    with torch.device('meta'):
        neck = DynamicHead(16, 16, num_blocks=1, norm_cfg=dict(type='GN', num_groups=4))
    devices = {name: p.device.type for name, p in neck.named_parameters()}
    assert set(devices.values()) == {'meta'}, devices
