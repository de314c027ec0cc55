"""How fast a DynamicHead detector could be in OpenVINO at best, from OpenVINO's own profile.

OpenVINO runs each deformable conv with its DeformableConvolution kernel. Its per-node profile
(``PERF_COUNT``) of the two exported detectors gives, per graph and node type, where the time
goes. With T the stacked-conv detector's latency, A the time its head's towers take (its
``bbox_head`` graph less the DynamicHead detector's, whose head is the same predictors without
towers) and B the time of the DynamicHead detector's DeformableConvolution nodes, no DynamicHead
detector can run faster than T - A + B in OpenVINO, even if everything else DynamicHead adds
(offset convs, GroupNorm, attentions) were free: (T - A + B) / T is the lowest latency ratio its
kernels allow (up to the run-to-run noise of T and of the profile, which are separate runs).
"""
import os.path as osp
import statistics
from typing import Dict

from torch import Tensor

from .runtime import Session, read_meta


def openvino_node_times(deploy_dir: str, image: Tensor, rounds: int = 3) -> Dict:
    """{graph: {node type: ms}} of a one-stage export (``features`` then ``bbox_head``) on
    ``image`` (1, 3, H, W), medians over ``rounds`` after a warm-up."""
    meta = read_meta(deploy_dir)
    parts = {name: meta['parts'][name] for name in ('features', 'bbox_head')}
    sessions = {name: Session(osp.join(deploy_dir, p['file']), 'openvino', p['inputs'],
                              p['outputs'], profile=True) for name, p in parts.items()}
    runs = {name: [] for name in sessions}
    for r in range(rounds + 1):
        feats = sessions['features'](image)
        sessions['bbox_head'](*feats)
        if r:  # the first is the warm-up
            for name, s in sessions.items():
                runs[name].append(s.node_times())
    return {name: {kind: round(statistics.median(t.get(kind, 0.0) for t in times), 2)
                   for kind in set().union(*times)} for name, times in runs.items()}


def openvino_bound(dyhead: Dict, stacked: Dict, stacked_latency_ms: float) -> Dict:
    """A, B and the ratio (T - A + B) / T from the two detectors' ``openvino_node_times``."""
    # rounded first, so that the saved numbers give the saved ratio
    towers = round(sum(stacked['bbox_head'].values()) - sum(dyhead['bbox_head'].values()), 1)
    deform = round(dyhead['features'].get('DeformableConvolution', 0.0), 1)
    return dict(stacked_latency_ms=stacked_latency_ms, towers_ms=towers,
                deformable_convs_ms=deform,
                dyhead_features_ms=round(sum(dyhead['features'].values()), 1),
                stacked_features_ms=round(sum(stacked['features'].values()), 1),
                ratio=round((stacked_latency_ms - towers + deform) / stacked_latency_ms, 3),
                node_times=dict(dyhead=dyhead, stacked=stacked))


def describe(bound: Dict) -> str:
    """The README's sentence on the bound."""
    return (f"OpenVINO's own profile (PERF_COUNT) of the two COCO exports: the stacked head's "
            f"towers (conv, GN, ReLU) take {bound['towers_ms']:.0f} ms, DynamicHead's "
            f"DeformableConvolution nodes {bound['deformable_convs_ms']:.0f} ms. Even if "
            f"everything else DynamicHead adds were free, its detector would take about "
            f"{bound['ratio']:.2f}x the stacked-conv one in OpenVINO "
            f"({bound['stacked_latency_ms']:.0f} - {bound['towers_ms']:.0f} + "
            f"{bound['deformable_convs_ms']:.0f} ms).")
