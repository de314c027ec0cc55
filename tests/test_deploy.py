"""Export to onnxruntime and OpenVINO: the runtimes compute what PyTorch computes, DynamicHead
alone (offsets across the borders, odd sizes, batch 1 and 2, both offset modes) and whole
detectors (one- and two-stage, masks), and bad settings get errors that name them."""
import copy
import glob
import json

import pytest
import torch
from conftest import perturb
from mmengine.config import Config

from mmdet_dyhead import DynamicHead
from mmdet_dyhead.deploy import BACKENDS, Session, attach, export, export_module
from mmdet_dyhead.utils.build import build_detector, offsets_off_zero, synthetic_batch

pytestmark = pytest.mark.cpu_only

PYRAMID = [(40, 32), (20, 16), (10, 8), (5, 4), (3, 2)]  # P3-P7 of a 320x256 image
ODD = [(13, 11), (7, 6), (4, 3)]  # stride-2 sizes of odd maps
NOT_HALVES = [(12, 10), (5, 5), (3, 2)]  # not exact halves (corrected offsets only)


def _outputs(backend, path, n_out, inputs):
    names = [f'input{i}' for i in range(len(inputs))]
    return Session(path, backend, names, [f'output{i}' for i in range(n_out)])(*inputs)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('legacy, sizes', [(False, PYRAMID), (False, ODD), (False, NOT_HALVES),
                                           (True, PYRAMID), (True, ODD)])
def test_dynamic_head_alone_equals_pytorch(backend, legacy, sizes, tmp_path):
    torch.manual_seed(0)
    neck = DynamicHead(32, 32, num_blocks=2, hsigmoid='paper', legacy_offsets=legacy).eval()
    perturb(neck, 0.5)  # offsets of several pixels: taps cross the borders of every level
    with torch.no_grad():
        offsets = neck.blocks[0].spatial.offsets(torch.randn(1, 32, *sizes[0]))[0]
    assert offsets.abs().max() > 3
    path = export_module(neck, [torch.randn(1, 32, h, w) for h, w in sizes],
                         str(tmp_path / 'neck.onnx'), backend, dynamic=True)
    for batch in (1, 2):
        feats = [torch.randn(batch, 32, h, w) for h, w in sizes]
        with torch.no_grad():
            want = neck(feats)
        got = _outputs(backend, path, len(sizes), feats)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            assert (g - w).abs().max() <= 1e-4 * w.abs().max(), (backend, batch)


def _trained(config, steps=4, **test_cfg):
    """A demo detector after a few AdamW steps on one batch (offsets and scores move)."""
    torch.manual_seed(0)
    cfg = Config.fromfile(config)
    for k, v in test_cfg.items():
        cfg.merge_from_dict({k: v})
    model = build_detector(cfg)
    masks = 'mask' in config
    batch = synthetic_batch(2, 128, 160, 6, with_mask=masks)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(steps):
        data = model.data_preprocessor(batch, True)
        loss = model.parse_losses(model(**data, mode='loss'))[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return cfg, model.eval()


def _assert_same_detections(want, got, size):
    """The same detections: labels, scores within 1e-4, boxes within 0.1% of the size. Detections
    whose scores tie to rounding may come in either order, so each is matched to one of the other
    side's detections with (nearly) its score, not to the one at its index."""
    for w, g in zip(want, got):
        w, g = w.pred_instances, g.pred_instances
        assert len(w.bboxes) == len(g.bboxes) > 0
        assert (w.scores - g.scores).abs().max() <= 1e-4  # both sorted by score
        free, order = set(range(len(g.bboxes))), []
        for i in range(len(w.bboxes)):
            match = next((j for j in sorted(free) if w.labels[i] == g.labels[j]
                          and abs(w.scores[i] - g.scores[j]) <= 1e-4
                          and (w.bboxes[i] - g.bboxes[j]).abs().max() <= 1e-3 * size), None)
            assert match is not None, f'detection {i} ({w.labels[i]}, {w.scores[i]:.4f}) unmatched'
            free.remove(match)
            order.append(match)
        if 'masks' in w:
            assert (w.masks != g.masks[order]).float().mean() < 1e-3


@pytest.mark.parametrize('backend', BACKENDS)
def test_atss_dynamic_head_detections_equal_pytorch(backend, tmp_path):
    cfg, model = _trained('configs/demo/atss_r18_fpn_dyhead_16e_shapes.py',
                          **{'model.test_cfg.score_thr': 0.01})
    meta = export(model, cfg, str(tmp_path), backend, dynamic=True)
    assert set(meta['parts']) == {'features', 'bbox_head'}
    # no custom op library: every node is the runtime's own
    import onnx
    graph = onnx.load(str(tmp_path / 'features.onnx')).graph
    domains = {n.domain for n in graph.node}
    assert domains <= ({'', 'org.openvinotoolkit'} if backend == 'openvino' else {''})
    ops = {n.op_type for n in graph.node}
    assert ('DeformableConv2D' if backend == 'openvino' else 'DeformConv') in ops
    deployed = attach(build_detector(cfg), str(tmp_path), backend)
    batch = synthetic_batch(2, 224, 288, 6)  # not the export's size: dynamic
    data = model.data_preprocessor(batch, False)
    with torch.no_grad():
        want = model.predict(data['inputs'], copy.deepcopy(data['data_samples']))
        got = deployed.predict(data['inputs'], copy.deepcopy(data['data_samples']))
    _assert_same_detections(want, got, 288)


@pytest.mark.parametrize('config, backend', [
    ('configs/demo/faster-rcnn_r18_fpn_dyhead-2stage_16e_shapes.py', 'openvino'),
    ('configs/demo/mask-rcnn_r18_fpn_dyhead_16e_shapes.py', 'onnxruntime')])
def test_two_stage_detections_and_masks_equal_pytorch(config, backend, tmp_path):
    cfg, model = _trained(config, **{'model.test_cfg.rcnn.score_thr': 0.0})
    meta = export(model, cfg, str(tmp_path), backend, shape=(320, 320))
    parts = {'features', 'rpn_head', 'roi_bbox_head'} | ({'roi_mask_head'} if 'mask' in config
                                                         else set())
    assert set(meta['parts']) == parts
    deployed = attach(build_detector(cfg), str(tmp_path), backend)
    batch = synthetic_batch(1, 320, 320, 6)
    data = model.data_preprocessor(batch, False)
    with torch.no_grad():
        want = model.predict(data['inputs'], copy.deepcopy(data['data_samples']))
        got = deployed.predict(data['inputs'], copy.deepcopy(data['data_samples']))
    _assert_same_detections(want, got, 320)


def test_fixed_size_pads_smaller_images_as_mmdet_pads_a_batch(tmp_path):
    cfg, model = _trained('configs/demo/atss_r18_fpn_dyhead_16e_shapes.py',
                          **{'model.test_cfg.score_thr': 0.01})
    export(model, cfg, str(tmp_path), 'onnxruntime')  # the config's 320x320
    assert json.loads((tmp_path / 'deploy.json').read_text())['input_shape'] == [1, 3, 320, 320]
    deployed = attach(build_detector(cfg), str(tmp_path), 'onnxruntime')
    data = model.data_preprocessor(synthetic_batch(1, 256, 320, 6), False)
    padded = torch.nn.functional.pad(data['inputs'], (0, 0, 0, 64))
    with torch.no_grad():
        want = model.predict(padded, copy.deepcopy(data['data_samples']))
        got = deployed.predict(data['inputs'], copy.deepcopy(data['data_samples']))
    _assert_same_detections(want, got, 320)
    too_big = torch.zeros(1, 3, 352, 320)
    with pytest.raises(ValueError, match='exported for 320x320 inputs; this batch is 352x320'):
        deployed.extract_feat(too_big)


def test_bad_settings_are_named(tmp_path):
    cfg = Config.fromfile('configs/demo/atss_r18_fpn_dyhead_16e_shapes.py')
    model = build_detector(cfg)
    with pytest.raises(ValueError, match="backend must be one of"):
        export(model, cfg, str(tmp_path), 'tensorrt')
    with pytest.raises(ValueError, match='multiples of 32'):
        export(model, cfg, str(tmp_path), 'onnxruntime', shape=(300, 320))
    with pytest.raises(FileNotFoundError, match='no deploy.json'):
        attach(model, str(tmp_path), 'onnxruntime')
    (tmp_path / 'deploy.json').write_text(json.dumps(dict(backend='openvino', kind='one-stage')))
    with pytest.raises(ValueError, match='exported for openvino, not onnxruntime'):
        attach(model, str(tmp_path), 'onnxruntime')
    (tmp_path / 'deploy.json').write_text(json.dumps(dict(backend='openvino', kind='two-stage')))
    with pytest.raises(ValueError, match='holds a two-stage detector, the config a one-stage'):
        attach(model, str(tmp_path))


CONFIGS = sorted(glob.glob('configs/*_coco.py')) + sorted(glob.glob('configs/demo/*.py'))


@pytest.mark.slow
@pytest.mark.parametrize('config', CONFIGS, ids=lambda p: p.split('/')[-1])
def test_every_config_exports(config, tmp_path):
    """Every config in configs/ (COCO: R50, 6 blocks of 256 channels; demo: with and without
    DynamicHead), at a small fixed size to keep the test short: exported and run in onnxruntime,
    its features and first head equal to PyTorch's."""
    torch.manual_seed(0)
    cfg = Config.fromfile(config)
    model = offsets_off_zero(build_detector(cfg).eval())
    meta = export(model, cfg, str(tmp_path), 'onnxruntime', shape=(128, 160))
    assert meta['input_shape'] == [1, 3, 128, 160]
    deployed = attach(build_detector(cfg), str(tmp_path), 'onnxruntime')
    image = torch.randn(1, 3, 128, 160)
    head = 'bbox_head' if meta['kind'] == 'one-stage' else 'rpn_head'
    with torch.no_grad():
        want = model.extract_feat(image)
        got = deployed.extract_feat(image)
        pairs = list(zip(want, got))
        for w, g in zip(getattr(model, head)(want), getattr(deployed, head)(want)):
            pairs += list(zip(w, g))
    for w, g in pairs:
        assert w.shape == g.shape and (w - g).abs().max() <= 1e-4 * w.abs().max().clamp_min(1e-6)


def test_deploy_latency_table_rows_and_ratio():
    from mmdet_dyhead.deploy.benchmark import VARIANTS, table
    r = dict(model='m', rows={'DynamicHead': dict(zip(VARIANTS, [40.0, 90.0, 30.0, 33.0])),
                              '4 stacked convs': {VARIANTS[0]: 30.0, 'onnxruntime': 24.0,
                                                  'openvino': 25.0}})
    lines = table([r]).splitlines()
    assert lines[2].split(' | ')[-1] == '1.25x (onnxruntime) |'  # 30 / 24: fastest of each side
    assert lines[3].split(' | ')[3] == '-'  # no mmcv kernel in a head without deformable convs


def test_openvino_bound_comes_from_the_exports_own_profile():
    """On the demo models: OpenVINO's per-node profile of both exports finds DynamicHead's
    deformable convs (and none in the stacked-conv detector), the towers' time as the difference
    of the two heads, and the ratio (T - A + B) / T from them."""
    from mmdet_dyhead.deploy.benchmark import benchmark, table
    r = benchmark('demo', rounds=1, warmup=0, variants=['openvino'], bound=True)
    b = r['openvino_bound']
    nodes = b['node_times']
    assert nodes['dyhead']['features'].get('DeformableConvolution', 0) > 0
    assert 'DeformableConvolution' not in nodes['stacked']['features']
    assert b['deformable_convs_ms'] == round(nodes['dyhead']['features']['DeformableConvolution'], 1)
    assert b['towers_ms'] == round(sum(nodes['stacked']['bbox_head'].values())
                                   - sum(nodes['dyhead']['bbox_head'].values()), 1)
    t = r['rows']['4 stacked convs']['openvino']
    assert b['ratio'] == round((t - b['towers_ms'] + b['deformable_convs_ms']) / t, 3)
    assert f'take about {b["ratio"]:.2f}x' in table([r])


def test_deploy_benchmark_names_the_head_its_config_builds():
    from mmdet_dyhead.deploy.benchmark import describe_head
    cfg = Config.fromfile('configs/demo/atss_r18_fpn_dyhead_16e_shapes.py')
    dy, convs = cfg.model.neck[1], cfg.model.bbox_head.stacked_convs
    assert describe_head(cfg) == (f'{dy.num_blocks} blocks of {dy.out_channels} ch + {convs} '
                                  f'stacked conv{"s" * (convs > 1)} per task')
    cfg.model.neck[1].num_blocks, cfg.model.bbox_head.stacked_convs = 1, 0
    assert describe_head(cfg) == f'1 block of {dy.out_channels} ch'
    del cfg.model.neck[1]['num_blocks'], cfg.model.bbox_head['stacked_convs']
    # omitted settings are the registered classes' defaults (DynamicHead: 6; ATSSHead: 4)
    assert describe_head(cfg) == f'6 blocks of {dy.out_channels} ch + 4 stacked convs per task'
    assert describe_head(Config.fromfile('configs/atss_r50_fpn_dyhead_1x_coco.py')) == (
        '6 blocks of 256 ch')


def test_readme_deploy_latency_table_is_what_the_saved_benchmark_says(tmp_path):
    import subprocess
    import sys

    from mmdet_dyhead.utils.paths import ROOT
    out = subprocess.run([sys.executable, 'tools/benchmark_deploy.py', '--from-json',
                          'docs/bench_deploy.json', '--out', str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    with open(f'{ROOT}/README.md') as f:
        assert (tmp_path / 'table.md').read_text().strip() in f.read()


def test_a_missing_runtime_says_what_to_install(monkeypatch):
    import builtins

    from mmdet_dyhead.deploy import require
    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name.split('.')[0] in ('openvino', 'onnx'):
            raise ImportError(f'No module named {name!r}')
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, '__import__', no_openvino)
    import importlib
    monkeypatch.setattr(importlib, 'import_module', lambda name: no_openvino(name))
    with pytest.raises(SystemExit, match='needs the openvino package.*pip install openvino=='):
        require('openvino')
    with pytest.raises(SystemExit, match='needs the onnx package.*pip install onnx=='):
        require('onnxruntime', export=True)
    assert require('onnxruntime').__name__ == 'onnxruntime'


@pytest.mark.parametrize('stride', [1, 2])
def test_openvino_border_pads_folded_into_the_conv_sample_as_mmcv(stride, tmp_path):
    """The OpenVINO rewrite (zero ring -> the conv's pads with bilinear_interpolation_pad) at the
    borders: every tap half a pixel to 1.5 px outside the map, and random taps across it."""
    import openvino as ov

    from mmdet_dyhead.deploy.openvino_passes import fold_border_pads
    from mmdet_dyhead.models.deform_conv_norm import DeformConvNorm

    class Conv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dcn = DeformConvNorm(8, 8, stride)

        def forward(self, xs):
            return self.dcn(*xs)

    conv = Conv().eval()
    h, w = 7, 6
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    x = torch.randn(1, 8, h, w)
    offset = torch.empty(1, 18, ho, wo)
    offset[:, 0::2], offset[:, 1::2] = -0.5, 0.7  # (dy, dx): off the top, onto the right ring
    offset[..., 0, :] = torch.empty(1, 18, wo).uniform_(-1.5, -0.5)  # the top row further out
    offset[..., -1] = torch.randn(1, 18, ho) * 2
    mask = torch.rand(1, 9, ho, wo)
    path = export_module(conv, [x, offset, mask], str(tmp_path / 'dcn.onnx'), 'openvino')
    graph = ov.Core().read_model(path)
    assert fold_border_pads(graph) == 1
    assert not [n for n in graph.get_ordered_ops() if n.get_type_name() == 'Pad']
    with torch.no_grad():
        want = conv([x, offset, mask])
    got = _outputs('openvino', path, 1, [x, offset, mask])[0]  # Session folds the pads
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    # the attribute matters at these taps: the same conv without it (OpenVINO's default)
    # moves the samples near the border onto it
    import openvino.opset8 as ops
    conv_node = next(n for n in graph.get_ordered_ops()
                     if n.get_type_name() == 'DeformableConvolution')
    a = conv_node.get_attributes()
    clamping = ops.deformable_convolution(
        *[conv_node.input_value(i) for i in range(3)], a['strides'], a['pads_begin'],
        a['pads_end'], a['dilations'], mask=conv_node.input_value(3),
        bilinear_interpolation_pad=False)
    conv_node.output(0).replace(clamping.output(0))
    clamped = ov.Core().compile_model(graph, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})(
        [t.numpy() for t in (x, offset, mask)])[0]
    assert (torch.from_numpy(clamped) - want).abs().max() > 1e-2 * want.abs().max()
