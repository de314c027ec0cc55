"""Bad input: a ValueError/TypeError that names the problem, before anything reaches mmcv."""
import pytest
import torch
from mmdet.registry import MODELS

import mmdet_dyhead  # noqa: F401
from mmdet_dyhead import (
    DynamicHead,
    ScaleAwareAttention,
    SpatialAwareAttention,
    TaskAwareAttention,
    TaskAwareBBoxHead,
)

GN4 = dict(type='GN', num_groups=4)


@pytest.fixture(scope='module')
def neck():
    return DynamicHead(8, 8, num_blocks=1, norm_cfg=GN4)


@pytest.mark.parametrize('inputs,err,msg', [
    (lambda: torch.randn(1, 8, 4, 4), TypeError, 'tuple or list of feature maps'),
    (lambda: {'p3': torch.randn(1, 8, 4, 4)}, TypeError, 'tuple or list'),
    (lambda: [], ValueError, 'empty sequence'),
    (lambda: [torch.randn(1, 8, 4, 4), 'p4'], TypeError, 'level 1 is a str'),
    (lambda: [torch.randn(8, 4, 4)], ValueError, r'level 0 must be 4D'),
    (lambda: [torch.randn(1, 8, 4, 4), torch.randn(1, 6, 2, 2)], ValueError,
     r'level 1 has 6 channels, but in_channels=8'),
    (lambda: [torch.randn(2, 8, 4, 4), torch.randn(3, 8, 2, 2)], ValueError,
     'batch sizes differ'),
    (lambda: [torch.randn(1, 8, 2, 2), torch.randn(1, 8, 4, 4)], ValueError, 'finest first'),
    (lambda: [torch.randn(1, 8, 0, 4)], ValueError, 'is empty'),
])
def test_bad_inputs(neck, inputs, err, msg):
    with pytest.raises(err, match=msg):
        neck(inputs())


def test_legacy_needs_stride_two_sizes():
    neck = DynamicHead(8, 8, num_blocks=1, norm_cfg=GN4, legacy_offsets=True)
    with pytest.raises(ValueError, match='stride-2 size'):
        neck([torch.randn(1, 8, 8, 8), torch.randn(1, 8, 3, 3)])


@pytest.mark.parametrize('kwargs,err,msg', [
    (dict(num_blocks=0), ValueError, 'num_blocks must be a positive integer'),
    (dict(num_blocks=2.5), ValueError, 'num_blocks'),
    (dict(in_channels=-1), ValueError, 'in_channels'),
    (dict(out_channels=30), ValueError,
     r'out_channels \(30\) must be divisible by the GroupNorm groups \(16\)'),
    (dict(hsigmoid='sigmoid'), ValueError, 'hsigmoid must be one of'),
    (dict(dcn_impl='cuda'), ValueError, 'dcn_impl must be one of'),
    (dict(scale_aware='yes'), TypeError, 'scale_aware must be True or False'),
    (dict(legacy_offsets=True, spatial_aware=False), ValueError, 'legacy_offsets=True needs'),
    (dict(norm_cfg='GN'), TypeError, 'norm_cfg must be a dict'),
])
def test_bad_options(kwargs, err, msg):
    with pytest.raises(err, match=msg):
        DynamicHead(**kwargs)


def test_unknown_option_from_a_config():
    with pytest.raises(TypeError, match='num_block'):
        MODELS.build(dict(type='DynamicHead', num_block=3))


def test_dcn_impl_setter_validates(neck):
    with pytest.raises(ValueError, match='dcn_impl'):
        neck.dcn_impl = 'fast'


def test_init_cfg_may_only_load_weights():
    """mmengine's initialisers would overwrite the zero offsets and the attentions' init."""
    with pytest.raises(ValueError, match='init_cfg may only load weights'):
        DynamicHead(8, 8, num_blocks=1, norm_cfg=GN4,
                    init_cfg=dict(type='Normal', layer='Conv2d', std=0.01))
    with pytest.raises(ValueError, match='init_cfg may only load weights'):
        MODELS.build(dict(type='DynamicHead', in_channels=8, out_channels=8, num_blocks=1,
                          norm_cfg=GN4, init_cfg=[dict(type='Pretrained', checkpoint='a.pth'),
                                                  dict(type='Xavier', layer='Conv2d')]))
    neck = DynamicHead(8, 8, num_blocks=1, norm_cfg=GN4,
                       init_cfg=dict(type='Pretrained', checkpoint='dyhead.pth'))
    assert neck.init_cfg['type'] == 'Pretrained'
    neck = DynamicHead(8, 8, num_blocks=1, norm_cfg=GN4)
    neck.init_weights()  # no init_cfg: the modules' own init stands, offsets at zero
    assert all(b.spatial.offset_conv.weight.abs().sum() == 0 for b in neck.blocks)


@pytest.mark.parametrize('build,err,msg', [
    (lambda: TaskAwareBBoxHead(num_blocks=True, in_channels=8, num_classes=2),
     ValueError, 'TaskAwareBBoxHead: num_blocks must be a positive integer, got True'),
    (lambda: DynamicHead(8, 8, num_blocks=True, norm_cfg=GN4), ValueError,
     'DynamicHead: num_blocks must be a positive integer, got True'),
    (lambda: TaskAwareAttention(2), ValueError,
     'TaskAwareAttention: task-aware attention needs channels >= reduction'),
    (lambda: DynamicHead(2, 2, num_blocks=1, norm_cfg=None), ValueError,
     'DynamicHead: task-aware attention needs channels >= reduction'),
    (lambda: ScaleAwareAttention(8, hsigmoid='sigmoid'), ValueError,
     'ScaleAwareAttention: hsigmoid must be one of'),
    (lambda: SpatialAwareAttention(8, 8, dcn_impl='cuda'),
     ValueError, 'SpatialAwareAttention: dcn_impl must be one of'),
])
def test_each_module_names_itself_and_the_option(build, err, msg):
    with pytest.raises(err, match=msg):
        build()
