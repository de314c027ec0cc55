#!/usr/bin/env python
"""DynamicHead and the stacked convs it replaces, in fp32 and in bf16 (CPU autocast), side by side.

    python tools/benchmark_precision.py [--sizes 512x512] [--out outputs/bench_bf16]
    python tools/benchmark_precision.py --from-json docs/bench_bf16.json --out DIR  # redraw only

The models are tools/benchmark_neck.py's (DynamicHead with its default kernel and corrected
offsets, offset convs moved off zero; ATSS's two towers of 4 x conv3x3-GN-ReLU). bf16 is what
``tools/train.py --amp`` runs on a CPU: ``torch.autocast('cpu', dtype=torch.bfloat16)`` around the
forward, fp32 weights. Every (model, precision) pair alternates inside one process; medians of
--repeats. Writes table.md and results.json to --out.
"""
import argparse
import json
import os.path as osp
import statistics
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402
from benchmark_neck import StackedConvs, pyramid_sizes, run_once  # noqa: E402

from mmdet_dyhead.utils.machine import machine_name  # noqa: E402
from mmdet_dyhead.utils.report import write_report  # noqa: E402

MODELS = ['DynamicHead', '4 stacked convs']
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16}


def build(channels: int, blocks: int, seed: int = 0) -> dict:
    from mmdet_dyhead.models.dynamic_head import DynamicHead
    from mmdet_dyhead.utils.build import offsets_off_zero
    torch.manual_seed(seed)
    return {'DynamicHead': offsets_off_zero(DynamicHead(channels, channels, num_blocks=blocks)),
            '4 stacked convs': StackedConvs(channels)}


def measure(channels: int, blocks: int, batch: int, sizes, repeats: int) -> dict:
    models = build(channels, blocks)
    result = dict(machine=machine_name('cpu'), channels=channels, blocks=blocks, batch=batch,
                  sizes={})
    runs = [(m, d) for m in MODELS for d in DTYPES]
    for s in sizes:
        h, w = map(int, s.split('x'))
        feats = [torch.randn(batch, channels, ph, pw) for ph, pw in pyramid_sizes(h, w)]
        t = {}
        for backward in (False, True):
            key = 'fwd_bwd' if backward else 'fwd'
            for m, d in runs:  # warm-up (the bf16 kernels' first call builds their primitives)
                run_once(models[m], feats, backward, 'cpu', DTYPES[d])
            times = {r: [] for r in runs}
            for _ in range(repeats):
                for m, d in runs:
                    times[m, d].append(run_once(models[m], feats, backward, 'cpu', DTYPES[d]))
            for (m, d), v in times.items():
                t.setdefault(m, {}).setdefault(d, {})[key] = statistics.median(v)
        result['sizes'][s] = t
        print(s, json.dumps(t), flush=True)
    return result


def table(r: dict) -> str:
    lines = [f'{r["channels"]} channels, DynamicHead {r["blocks"]} blocks, batch {r["batch"]}, '
             f'P3-P7, CPU: {r["machine"]}. bf16 = torch.autocast(\'cpu\', dtype=torch.bfloat16) '
             f'(what `--amp` runs), fp32 weights. Median of alternating runs in one process.', '',
             '| input | model | fp32 fwd | bf16 fwd | fp32 fwd+bwd | bf16 fwd+bwd | '
             'bf16 speed-up (fwd / fwd+bwd) |',
             '| --- | --- | --- | --- | --- | --- | --- |']
    for s, t in r['sizes'].items():
        for m in MODELS:
            a, b = t[m]['fp32'], t[m]['bf16']
            lines.append(f'| {s} | {m} | {a["fwd"]:.3f} s | {b["fwd"]:.3f} s | '
                         f'{a["fwd_bwd"]:.3f} s | {b["fwd_bwd"]:.3f} s | '
                         f'{a["fwd"] / b["fwd"]:.2f}x / {a["fwd_bwd"] / b["fwd_bwd"]:.2f}x |')
        # time ratios in the header's order: fp32 fwd, bf16 fwd, fp32 fwd+bwd, bf16 fwd+bwd
        dy, st = t['DynamicHead'], t['4 stacked convs']
        lines.append(f'| {s} | DynamicHead / stacked convs | '
                     + ' | '.join(f'{dy[d][k] / st[d][k]:.2f}x' for k in ('fwd', 'fwd_bwd')
                                  for d in ('fp32', 'bf16')) + ' | |')
    return '\n'.join(lines) + '\n'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--sizes', nargs='+', default=['512x512'])
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--channels', type=int, default=256)
    p.add_argument('--blocks', type=int, default=6)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--out', default='outputs/bench_bf16')
    p.add_argument('--from-json', metavar='RESULTS', help='measure nothing: redraw table.md')
    a = p.parse_args(argv)
    if a.from_json:
        with open(a.from_json) as f:
            result = json.load(f)
    else:
        result = measure(a.channels, a.blocks, a.batch, a.sizes, a.repeats)
    write_report(a.out, table(result), None if a.from_json else result)
    return result


if __name__ == '__main__':
    main()
