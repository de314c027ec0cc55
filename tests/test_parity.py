"""Converted weights give the references' outputs: mmdet's DyHead and microsoft/DynamicHead."""
import pytest
import torch
from conftest import DEVICE, perturb
from mmdet.models.necks import DyHead
from official_layout import OfficialTower

from mmdet_dyhead import DynamicHead
from mmdet_dyhead.converters import (
    convert_official_state_dict,
    from_mmdet_dyhead,
    from_official_state_dict,
)

_perturb = perturb


# exact halves (P3-P7 style), odd stride-2 sizes, batch 1
SIZES = [[(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)], [(15, 21), (8, 11), (4, 6), (2, 3)]]


@pytest.mark.parametrize('sizes', SIZES)
@pytest.mark.parametrize('impl', ['mmcv', 'torch'])
def test_mmdet_dyhead_parity(sizes, impl):
    ref = DyHead(32, 32, num_blocks=2).to(DEVICE)  # mmcv makes its conv weights on the CPU
    _perturb(ref, 0.05)  # offsets of about a pixel, so the misread coarser branch matters
    ours = from_mmdet_dyhead(ref, dcn_impl=impl)
    assert ours.legacy_offsets and ours.num_blocks == 2
    for n in (1, 2):
        x = [torch.randn(n, 32, h, w, requires_grad=True) for h, w in sizes]
        y = [t.detach().clone().requires_grad_() for t in x]
        out_ref, out = ref(x), ours(y)
        for a, b in zip(out, out_ref):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
        g = [torch.randn_like(o) for o in out_ref]
        torch.autograd.backward(out_ref, g)
        torch.autograd.backward(out, g)
        for a, b in zip(y, x):  # float32 sums in another order: 1e-4 of the gradient's scale
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4,
                                       atol=1e-4 * b.grad.abs().max().item())


def test_corrected_offsets_differ_from_mmdet_where_it_misreads():
    ref = DyHead(32, 32, num_blocks=1).to(DEVICE)  # mmcv makes its conv weights on the CPU
    _perturb(ref, 0.05)
    fixed = from_mmdet_dyhead(ref, legacy_offsets=False)
    x = [torch.randn(1, 32, s, s) for s in (8, 4, 2)]
    a, b = ref(x), fixed(x)
    assert not torch.allclose(a[0], b[0], atol=1e-3)  # has a coarser branch
    torch.testing.assert_close(a[2], b[2], rtol=0, atol=1e-5)  # coarsest: no coarser branch


def test_official_layout_key_mapping_and_bias():
    tower = OfficialTower(32, 32, num_blocks=2)
    _perturb(tower, 0.05)
    state = {f'backbone.{k}': v for k, v in tower.state_dict().items()}
    converted, others = convert_official_state_dict(state, out_prefix='neck.1.')
    assert not others
    assert converted['neck.1.blocks.0.spatial.coarser.conv.weight'] is \
        state['backbone.dyhead_tower.0.DyConv.0.conv.weight']
    assert converted['neck.1.blocks.1.spatial.finer.conv.bias'] is \
        state['backbone.dyhead_tower.1.DyConv.2.conv.bias']
    assert converted['neck.1.blocks.0.task.fc1.weight'].shape == (8, 32, 1, 1)
    ours = from_official_state_dict(state)
    assert ours.blocks[0].spatial.same.conv.bias is not None
    x = [torch.randn(2, 32, h, w) for h, w in [(12, 10), (6, 5), (3, 3)]]
    for a, b in zip(ours(x), tower(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_mmdet_detector_state_dict_conversion_keeps_other_keys():
    from mmdet_dyhead.converters import convert_mmdet_state_dict
    ref = DyHead(32, 32, num_blocks=1).to(DEVICE)  # mmcv makes its conv weights on the CPU
    state = {f'neck.1.{k}': v for k, v in ref.state_dict().items()}
    state['bbox_head.atss_cls.weight'] = torch.zeros(3)
    converted, others = convert_mmdet_state_dict(state, out_prefix='neck.1.')
    assert list(others) == ['bbox_head.atss_cls.weight']
    ours = DynamicHead(32, 32, num_blocks=1, legacy_offsets=True)
    missing, unexpected = ours.load_state_dict(
        {k[len('neck.1.'):]: v for k, v in converted.items()}, strict=True)
    assert not missing and not unexpected
