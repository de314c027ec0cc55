"""The attention statistics read the neck's own tensors, and leave the neck as it was."""
import torch
from conftest import perturb

from mmdet_dyhead import DynamicHead
from mmdet_dyhead.diagnostics import AttentionStats


def test_stats_equal_the_neck_tensors_and_hooks_come_off():
    torch.manual_seed(0)
    neck = DynamicHead(8, 8, num_blocks=2, norm_cfg=dict(type='GN', num_groups=4))
    perturb(neck, 0.3)
    x = [torch.randn(2, 8, 8, 8) * 3, torch.randn(2, 8, 4, 4)]
    reference = neck(x)
    with AttentionStats(neck) as stats:
        out = neck(x)
    for a, b in zip(out, reference):  # the hooks change nothing
        torch.testing.assert_close(a, b)
    s = stats.summary()
    block = neck.blocks[0]
    offs = [block.spatial.offsets(level)[0] for level in x]  # one call per level
    expected = sum(o.abs().mean() for o in offs) / 2
    assert abs(s['blocks.0.spatial']['offset_abs_mean'] - expected.item()) < 1e-4
    assert abs(s['blocks.0.spatial']['offset_abs_max']
               - max(o.abs().max() for o in offs).item()) < 1e-4
    assert s['.input']['level0_std'] == round(x[0].std().item(), 4)
    weights = s['blocks.0.scale']['weight_mean']
    assert 0.5 <= weights <= 1.0  # the 'reference' hard sigmoid after a ReLU
    assert 'attention' not in vars(block.scale)  # the patched method is gone again
    assert s['blocks.1.task']['a1_mean'] != 1.0 and len(s) == 1 + 2 * 3


def test_scale_weights_are_named_by_level_and_branch():
    torch.manual_seed(0)
    neck = DynamicHead(8, 8, num_blocks=1, hsigmoid='paper',
                       norm_cfg=dict(type='GN', num_groups=4))
    perturb(neck, 0.5)
    x = [torch.randn(2, 8, 16, 16), torch.randn(2, 8, 8, 8), torch.randn(2, 8, 4, 4)]
    with AttentionStats(neck) as stats:
        neck(x)
        neck(x)  # a second call starts again at the finest level
    s = stats.summary()['blocks.0.scale']
    block = neck.blocks[0]
    names = [['same', 'coarser'], ['same', 'finer', 'coarser'], ['same', 'finer']]
    expected = {}
    with torch.no_grad():
        for level, branches in enumerate(block.spatial(x)):
            for name, branch in zip(names[level], branches):
                expected[f'P{level}_{name}'] = round(block.scale.attention(branch).mean().item(), 4)
    assert {k: v for k, v in s.items() if k.startswith('P')} == expected
    assert len(set(expected.values())) == len(expected)  # the weights tell the branches apart
    assert 'forward' not in vars(block.scale)
