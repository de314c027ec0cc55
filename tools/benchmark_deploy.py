#!/usr/bin/env python
"""CPU latency of DynamicHead detectors (and their stacked-conv baselines) in PyTorch (our kernel
and mmcv's), onnxruntime and OpenVINO: batch 1, alternating runs in one process, medians.

    python tools/benchmark_deploy.py [--models demo coco] [--rounds 5] [--out outputs/bench_deploy]
    python tools/benchmark_deploy.py --from-json docs/bench_deploy.json --out DIR   # table only

For the COCO model it also profiles both OpenVINO exports node by node (PERF_COUNT) for the lowest
latency ratio OpenVINO's kernels allow (mmdet_dyhead/deploy/kernel_bound.py; --no-bound skips it).
Writes OUT/bench_deploy.json (with the machine) and OUT/table.md.
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmdet_dyhead.deploy.benchmark import MODELS, benchmark, table  # noqa: E402
from mmdet_dyhead.utils.machine import machine_name  # noqa: E402
from mmdet_dyhead.utils.report import write_report  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--models', nargs='+', choices=list(MODELS), default=list(MODELS))
    p.add_argument('--no-bound', action='store_true',
                   help="skip OpenVINO's per-node profile of the COCO exports")
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--out', default='outputs/bench_deploy')
    p.add_argument('--from-json', help='redraw the table of a saved run')
    a = p.parse_args(argv)
    if a.from_json:
        with open(a.from_json) as f:
            saved = json.load(f)
    else:
        import onnxruntime
        import openvino
        import torch
        saved = dict(machine=machine_name(), torch=torch.__version__,
                     onnxruntime=onnxruntime.__version__, openvino=openvino.__version__,
                     threads=torch.get_num_threads(), results=[])
        for key in a.models:
            saved['results'].append(benchmark(key, a.rounds,
                                              bound=key == 'coco' and not a.no_bound))
            print(json.dumps(saved['results'][-1]), flush=True)
    write_report(a.out, table(saved['results']), None if a.from_json else saved,
                 'bench_deploy.json')
    return saved


if __name__ == '__main__':
    main()
