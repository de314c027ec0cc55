"""tools/profile_neck.py's bookkeeping: each op's own time lands in the part it belongs to."""
import pytest
import torch
import torch.nn.functional as F

from mmdet_dyhead.ops import cpu_ext
from mmdet_dyhead.ops.deform_conv import modulated_deform_conv2d
from mmdet_dyhead.utils.profile import CATEGORIES, DCN_OPS, LOOPS, category, profile


def test_category_follows_the_enclosing_op():
    assert category('aten::mm', [DCN_OPS[0]]) == 'deformable conv: GEMM'
    assert category('aten::mm', ['aten::linear']) != 'deformable conv: GEMM'
    assert category('aten::floor', ['aten::foo', DCN_OPS[1]]).startswith('deformable conv: pos')
    assert category(LOOPS, [DCN_OPS[0]]) == 'deformable conv: sampling loops'
    assert category('aten::mul', ['aten::native_group_norm']) == 'GroupNorm'
    assert category('aten::mul', ['NativeGroupNormBackward0']) == 'GroupNorm'
    assert category('aten::mkldnn_convolution', ['aten::conv2d']).startswith('other convs')
    assert category('aten::add', ['UpsampleBilinear2DBackward0']) == 'resize (bilinear)'
    assert category('aten::copy_', []) == 'copies and layout'
    assert category('_ToContiguous', []) == 'copies and layout'  # ops/layout.py's copies
    assert category('_ToChannelsLastBackward', []) == 'copies and layout'
    assert category('aten::hardsigmoid', []) == 'attentions: element-wise and pooling'


def test_group_norm_alone_is_counted_as_group_norm():
    x = torch.randn(2, 64, 48, 48, requires_grad=True)
    w = torch.ones(64, requires_grad=True)

    def step():  # the loss's sum and its backward are the only other ops
        torch.autograd.grad(F.group_norm(x, 8, w).sum(), [x, w])
    step()
    r = profile(step, 3)
    assert r['total'] == pytest.approx(sum(r[c] for c in CATEGORIES))
    # the largest part by far (a margin, not a ratio, so that a noisy machine does not fail it)
    assert r['GroupNorm'] == max(r[c] for c in CATEGORIES)
    assert r['GroupNorm'] > 0.4 * r['total']
    assert r['deformable conv: GEMM'] == 0 and r['other convs (offsets / stacked)'] == 0


@pytest.mark.skipif(cpu_ext.load() is None, reason='the C++ loops did not build here')
def test_deformable_conv_parts_are_its_gemm_and_loops():
    torch.manual_seed(0)
    x = torch.randn(1, 16, 20, 20, requires_grad=True)
    offset = torch.randn(1, 18, 20, 20)
    mask = torch.rand(1, 9, 20, 20)
    weight = torch.randn(16, 16, 3, 3, requires_grad=True)

    def step():
        modulated_deform_conv2d(x, offset, mask, weight, None, 1, 1).sum().backward()
    step()
    r = profile(step)
    dcn = sum(v for k, v in r.items() if k.startswith('deformable conv'))
    assert r['deformable conv: GEMM'] > 0 and r['deformable conv: sampling loops'] > 0
    assert dcn > 0.5 * r['total']
    assert r['GroupNorm'] == 0


@pytest.mark.parametrize('name', ['profile_neck', 'profile_neck_xeon', 'profile_neck_xeon_a1611a6',
                                  'profile_neck_xeon_eval'])
def test_saved_profile_table_is_what_its_json_gives(name):
    import importlib.util
    import json
    import os.path as osp

    from mmdet_dyhead.utils.paths import ROOT
    spec = importlib.util.spec_from_file_location('profile_neck',
                                                  osp.join(ROOT, 'tools', 'profile_neck.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with open(osp.join(ROOT, 'docs', f'{name}.json')) as f:
        saved = json.load(f)
    for runs in saved['models'].values():
        for r in runs.values():  # the parts add up to the profiled total
            assert sum(r[c] for c in CATEGORIES) == pytest.approx(r['total'], abs=0.5)
    with open(osp.join(ROOT, 'docs', f'{name}.md')) as f:
        assert tool.table(saved) in f.read()
    if name == 'profile_neck_xeon':  # docs/speed.md's Xeon profile is this one
        with open(osp.join(ROOT, 'docs', 'speed.md')) as f:
            assert tool.table(saved) in f.read()
    if name == 'profile_neck_xeon_eval':  # docs/speed.md quotes its forward's ratios
        dy, convs = saved['models']['DynamicHead (6 blocks)']['forward'], \
            saved['models']['4 stacked convs']['forward']
        low = (dy[CATEGORIES[0]] + dy[CATEGORIES[4]]) / convs['total']
        with open(osp.join(ROOT, 'docs', 'speed.md')) as f:
            doc = ' '.join(f.read().split())
        assert (f'offset convs alone make {low:.2f}x, and the sampling loops') in doc
        assert f"GroupNorm's statistics (1%) the {dy['total'] / convs['total']:.2f}x" in doc
