#!/usr/bin/env python
"""Where DynamicHead's CPU time goes, by part, next to the stacked convs it replaces.

    python tools/profile_neck.py [--size 512 512] [--batch 2] [--blocks 6] [--channels 256]
                                 [--rounds 2] [--out docs/profile_neck]

torch.profiler over forward (no autograd) and forward+backward of DynamicHead (corrected offsets,
our kernel) and of ATSS's two towers of 4 x (conv3x3, GN, ReLU), on P3-P7 of the image; each op's
own time in one category of ``mmdet_dyhead.utils.profile``. Writes OUT.json and OUT.md.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import torch  # noqa: E402
from benchmark_neck import StackedConvs, pyramid_sizes  # noqa: E402

from mmdet_dyhead import DynamicHead  # noqa: E402
from mmdet_dyhead.utils.build import offsets_off_zero  # noqa: E402
from mmdet_dyhead.utils.machine import machine_name  # noqa: E402
from mmdet_dyhead.utils.profile import CATEGORIES, profile  # noqa: E402


def steps(model, feats):
    def fwd():
        with torch.no_grad():
            model(feats)

    def fwd_bwd():
        xs = [f.detach().requires_grad_() for f in feats]
        sum(o.sum() for o in model(xs)).backward()
    return {'forward': fwd, 'forward+backward': fwd_bwd}


def table(result: dict) -> str:
    cols = [(m, p) for m in result['models'] for p in result['models'][m]]
    head = '| part | ' + ' | '.join(f'{m}, {p}' for m, p in cols) + ' |'
    lines = [head, '|' + ' --- |' * (len(cols) + 1)]
    for c in list(CATEGORIES) + ['total', 'wall']:
        cells = []
        for m, p in cols:
            r = result['models'][m][p]
            ms = r[c]
            share = f' ({100 * ms / r["total"]:.0f}%)' if c in CATEGORIES and r['total'] else ''
            cells.append(f'{ms:.0f} ms{share}' if ms else '-')
        name = {'total': 'sum of the ops', 'wall': 'wall time (no profiler)'}.get(c, c)
        lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n' + floor(result)


def floor(result: dict) -> str:
    """DynamicHead over the stacked convs (sums of the ops), and the same if only its GEMMs and
    its offset convs took time: the lowest ratio this kernel design allows."""
    models = result['models']
    dy = next((m for m in models if m.startswith('DynamicHead')), None)
    if dy is None or '4 stacked convs' not in models:
        return ''
    now, low = [], []
    for part, r in models[dy].items():
        base = models['4 stacked convs'][part]['total']
        now.append(f'{part} {r["total"] / base:.2f}x')
        low.append(f'{(r[CATEGORIES[0]] + r[CATEGORIES[4]]) / base:.2f}x')
    return (f'\n{dy} / 4 stacked convs (sums of the ops): {", ".join(now)}; with only its GEMMs '
            f'and offset convs taking time (everything else free): {" and ".join(low)}.\n')


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size', nargs=2, type=int, default=[512, 512], metavar=('H', 'W'))
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--blocks', type=int, default=6)
    p.add_argument('--channels', type=int, default=256)
    p.add_argument('--rounds', type=int, default=2)
    p.add_argument('--out', default='docs/profile_neck')
    a = p.parse_args()
    torch.manual_seed(0)
    c = a.channels
    feats = [torch.randn(a.batch, c, h, w) for h, w in pyramid_sizes(*a.size)]
    neck = offsets_off_zero(DynamicHead(c, c, num_blocks=a.blocks))
    models = {f'DynamicHead ({a.blocks} blocks)': neck, '4 stacked convs': StackedConvs(c)}
    result = dict(machine=machine_name(), torch=torch.__version__, size=a.size, batch=a.batch,
                  channels=c, rounds=a.rounds, models={})
    for name, model in models.items():
        result['models'][name] = {}
        for part, step in steps(model, feats).items():
            step()  # warm-up (and the C++ loops' build)
            t0 = time.perf_counter()
            for _ in range(a.rounds):
                step()
            wall = (time.perf_counter() - t0) * 1000 / a.rounds
            r = profile(step, a.rounds)
            r['wall'] = wall
            result['models'][name][part] = {k: round(v, 1) for k, v in r.items()}
            print(f'{name}, {part}: {wall:.0f} ms', flush=True)
    os.makedirs(osp.dirname(a.out) or '.', exist_ok=True)
    with open(a.out + '.json', 'w') as f:
        json.dump(result, f, indent=1)
    md = (f'P3-P7 of {a.size[0]}x{a.size[1]}, batch {a.batch}, {c} channels; '
          f'{result["machine"]}; self time of each op per call, '
          f'mean of {a.rounds} (`python tools/profile_neck.py`)\n\n' + table(result))
    with open(a.out + '.md', 'w') as f:
        f.write(md)
    print(md)


if __name__ == '__main__':
    main()
