#!/usr/bin/env python
"""Train and test each demo detector with and without DynamicHead under one schedule.

    python tools/compare.py [--families atss fcos retinanet faster-rcnn] [--epochs N]
                            [--out outputs/compare] [--update-readme]

For each config: training wall time (tools/train.py), COCO bbox mAP on the val split
(tools/test.py), inference latency (batch 1, 320x320, median of 20, same process for all configs)
and FLOPs (tools/get_flops.py's counter, deformable convs included). Runs one process at a time.
Writes results.json and table.md under --out; --update-readme puts the table in README.md.
"""
import argparse
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

DEMO = 'configs/demo'
FAMILIES = {
    'atss': ['atss_r18_fpn_16e_shapes.py', 'atss_r18_fpn_dyhead_16e_shapes.py'],
    'fcos': ['fcos_r18_fpn_16e_shapes.py', 'fcos_r18_fpn_dyhead_16e_shapes.py'],
    'retinanet': ['retinanet_r18_fpn_16e_shapes.py', 'retinanet_r18_fpn_dyhead_16e_shapes.py'],
    'faster-rcnn': ['faster-rcnn_r18_fpn_16e_shapes.py', 'faster-rcnn_r18_fpn_dyhead_16e_shapes.py',
                    'faster-rcnn_r18_fpn_dyhead-2stage_16e_shapes.py'],
}
BEGIN, END = '<!-- compare:begin -->', '<!-- compare:end -->'


def _run(cmd, log):
    with open(log, 'w') as f:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f'failed ({proc.returncode}): {" ".join(cmd)}; see {log}')


def run_one(config: str, out: str, epochs: int, reuse: bool = False) -> dict:
    py = sys.executable
    name = osp.splitext(osp.basename(config))[0]
    work = osp.join(out, name)
    saved = osp.join(work, 'result.json')
    if reuse and osp.isfile(saved):
        with open(saved) as f:
            r = json.load(f)
        if r.get('epochs') == epochs:
            print(f'[compare] {name}: reusing {saved}', flush=True)
            return r
    os.makedirs(work, exist_ok=True)
    opts = []
    if epochs:
        opts = ['--cfg-options', f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}',
                f'param_scheduler.1.end={epochs}', f'param_scheduler.1.T_max={epochs}',
                f'default_hooks.checkpoint.interval={epochs}']
    print(f'[compare] training {name}', flush=True)
    t0 = time.perf_counter()
    _run([py, 'tools/train.py', config, '--work-dir', work, *opts], osp.join(work, 'train.log'))
    train_s = time.perf_counter() - t0
    with open(osp.join(work, 'last_checkpoint')) as f:
        ckpt = f.read().strip()
    _run([py, 'tools/test.py', config, ckpt, '--work-dir', osp.join(work, 'test')],
         osp.join(work, 'test.log'))
    with open(osp.join(work, 'test.log')) as f:
        metrics = json.loads(re.search(r'^metrics: (.*)$', f.read(), re.M).group(1))
    # latency and FLOPs in a fresh process, so one config's memory does not slow the next
    bench = osp.join(work, 'bench.json')
    _run([py, '-c', f'''
import json, sys
sys.path.insert(0, {ROOT!r})
from mmengine.config import Config
from mmdet_dyhead.analysis import (build_detector, count_flops, num_classes_of, summarize,
                                   synthetic_batch, time_inference)
cfg = Config.fromfile({config!r})
model = build_detector(cfg, 'cpu', {ckpt!r})
lat, iqr = summarize(time_inference(model, synthetic_batch(1, 320, 320, num_classes_of(cfg)),
                                    'cpu', 20, 3))
r = count_flops(model, 320, 320)
json.dump(dict(latency_s=lat, latency_iqr_s=iqr, flops=r['flops'], neck_flops=r['neck_flops'],
               params=r['params']), open({bench!r}, 'w'))
'''], osp.join(work, 'bench.log'))
    with open(bench) as f:
        b = json.load(f)
    r = dict(config=config, name=name, epochs=epochs, train_s=train_s,
             mAP=metrics['coco/bbox_mAP'], mAP50=metrics['coco/bbox_mAP_50'],
             mAP75=metrics['coco/bbox_mAP_75'], **b)
    with open(saved, 'w') as f:
        json.dump(r, f, indent=1)
    print(f'[compare] {name}: mAP {r["mAP"]:.3f}, train {train_s / 60:.1f} min, '
          f'latency {b["latency_s"] * 1000:.0f} ms, {b["flops"] / 1e9:.2f} GFLOPs', flush=True)
    return r


def table(results, machine: str) -> str:
    rows = ['| detector | neck / head | mAP | mAP@50 | mAP@75 | training | latency (1 img) | GFLOPs | params |',
            '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for r in results:
        family = r['name'].split('_')[0]
        variant = ('DyHead on pyramid, pi_C after RoIAlign (Fig. 2c)' if 'dyhead-2stage' in r['name']
                   else 'FPN + DynamicHead (2 blocks)' if 'dyhead' in r['name']
                   else 'FPN + 2 FC' if family == 'faster-rcnn' else 'FPN + 4 stacked convs')
        rows.append(f'| {family} | {variant} | {r["mAP"]:.3f} | {r["mAP50"]:.3f} | {r["mAP75"]:.3f} '
                    f'| {r["train_s"] / 60:.1f} min | {r["latency_s"] * 1000:.0f} ms '
                    f'| {r["flops"] / 1e9:.2f} | {r["params"] / 1e6:.2f} M |')
    epochs = results[0]['epochs'] or 'the configs\''
    return '\n'.join(rows) + (
        f'\n\nAll rows: {epochs} epochs on the 600 training images, evaluated on the 100 val images, '
        f'same seed; half-width ResNet-18 from scratch, 320 px. Latency: batch 1, 320x320, '
        f'predict with pre/post-processing, median of 20. FLOPs at 320x320 (multiply-adds, '
        f'deformable convs counted). Machine: {machine}. Command: `python tools/compare.py '
        + (f'--epochs {results[0]["epochs"]} ' if results[0]['epochs'] else '')
        + '--update-readme`.\n')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--families', nargs='+', choices=list(FAMILIES), default=list(FAMILIES))
    p.add_argument('--epochs', type=int, default=0, help='override the configs\' epochs (0: keep)')
    p.add_argument('--out', default='outputs/compare')
    p.add_argument('--update-readme', action='store_true')
    p.add_argument('--reuse', action='store_true',
                   help='keep finished runs (result.json in their work dir) of the same epochs')
    a = p.parse_args(argv)
    os.makedirs(osp.join(ROOT, a.out), exist_ok=True)
    if not osp.isfile(osp.join(ROOT, 'data/shapes/annotations/val.json')):
        subprocess.run([sys.executable, '-m', 'mmdet_dyhead.demo_data', '--out', 'data/shapes'],
                       cwd=ROOT, check=True)
    results = [run_one(osp.join(DEMO, c), osp.join(ROOT, a.out), a.epochs, a.reuse)
               for fam in a.families for c in FAMILIES[fam]]
    from mmdet_dyhead.analysis import machine_name
    md = table(results, machine_name() + ', fp32')
    with open(osp.join(ROOT, a.out, 'results.json'), 'w') as f:
        json.dump(results, f, indent=1)
    with open(osp.join(ROOT, a.out, 'table.md'), 'w') as f:
        f.write(md)
    print(md)
    if a.update_readme:
        path = osp.join(ROOT, 'README.md')
        with open(path) as f:
            text = f.read()
        if BEGIN not in text or END not in text:
            raise SystemExit(f'README.md has no {BEGIN} ... {END} markers')
        head, rest = text.split(BEGIN, 1)
        text = head + BEGIN + '\n' + md + END + rest.split(END, 1)[1]
        with open(path, 'w') as f:
            f.write(text)
        print('[compare] README.md updated')


if __name__ == '__main__':
    main()
