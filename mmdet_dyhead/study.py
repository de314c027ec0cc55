"""The accuracy study: which rows exist, how one run is made and saved, and the tables and plots
that are regenerated from the saved runs (``tools/study.py`` is the command line).

One run = one row (a demo config plus a few ``--cfg-options``), one seed, one schedule. It is
trained by ``tools/train.py`` in its own process, validated every ``val_interval`` epochs (the
learning curve), then measured in a fresh process (latency, FLOPs, parameters), and saved as one
JSON file ``docs/study/{row}_e{epochs}_s{seed}.json``. Everything in the README's study section is
computed from those files, so it can be regenerated (and is checked by a test) at any time.
"""
import glob
import json
import math
import os
import os.path as osp
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .utils.paths import ROOT

RESULTS_DIR = osp.join(ROOT, 'docs', 'study')
DEMO = 'configs/demo'


@dataclass(frozen=True)
class Row:
    """A study row: ``config`` (relative to the repo root) with ``options`` (cfg-options)."""
    name: str
    config: str
    label: str
    options: Tuple[Tuple[str, object], ...] = ()


def _row(name, config, label, **options) -> Row:
    return Row(name, f'{DEMO}/{config}', label,
               tuple((k.replace('__', '.'), v) for k, v in options.items()))


_ATSS, _DYH = 'atss_r18_fpn_16e_shapes.py', 'atss_r18_fpn_dyhead_16e_shapes.py'
_BLOCKS = 'model__neck__1__num_blocks'
# Each row sets the keys the study varies explicitly, so a row means the same thing whatever the
# demo configs' defaults become: the FPN's norm, DynamicHead's depth and hard sigmoid, and the
# head's stacked convs kept after DynamicHead.
_PLAIN_FPN = {'model__neck__norm_cfg': None}
_NO_CONVS = {'model__bbox_head__stacked_convs': 0}  # DynamicHead replaces all of them
_PLAIN_FPN_DY = {'model__neck__0__norm_cfg': None, 'model__neck__1__hsigmoid': 'reference',
                 **_NO_CONVS}
_GN_FPN = {'model__neck__norm_cfg__type': 'GN', 'model__neck__norm_cfg__num_groups': 16}
_GN_FPN_DY = {'model__neck__0__norm_cfg__type': 'GN', 'model__neck__0__norm_cfg__num_groups': 16,
              **_NO_CONVS}
_RECIPE = {**_GN_FPN_DY, 'model__neck__1__hsigmoid': 'paper'}  # + 4 blocks: the paper's form
_PER_TASK = {_BLOCKS: 3, **_RECIPE, 'model__bbox_head__stacked_convs': 1}  # the demo config's
# the paper's optimizer (SGD, momentum 0.9, weight decay 1e-4; mmdet's lr 0.01 for batch 16,
# doubled here for a from-scratch backbone at batch 8) with the same warm-up and cosine schedule;
# no lr multiplier on the offset convs (the paper has none)
_SGD = {'optim_wrapper__optimizer__type': 'SGD', 'optim_wrapper__optimizer__lr': 0.01,
        'optim_wrapper__optimizer__momentum': 0.9, 'optim_wrapper__optimizer__weight_decay': 1e-4,
        'optim_wrapper__paramwise_cfg__custom_keys__offset_conv__lr_mult': 1.0}
_ALL_OFF = {'model__neck__1__scale_aware': False, 'model__neck__1__spatial_aware': False,
            'model__neck__1__task_aware': False}
ROWS: Dict[str, Row] = {r.name: r for r in [
    # how the recipe was found (ATSS, 4 blocks = the FLOPs of the 2 x 4 stacked convs)
    _row('atss', _ATSS, 'ATSS, 4 stacked convs, plain FPN', **_PLAIN_FPN),
    _row('atss-dyhead4', _DYH, 'DynamicHead 4, plain FPN', **{_BLOCKS: 4, **_PLAIN_FPN_DY}),
    _row('atss-fpngn', _ATSS, 'ATSS, 4 stacked convs, FPN with GN', **_GN_FPN),
    _row('atss-dyhead4-fpngn', _DYH, 'DynamicHead 4, FPN with GN',
         **{_BLOCKS: 4, **_GN_FPN_DY, 'model__neck__1__hsigmoid': 'reference'}),
    _row('atss-dyhead4-fpngn-off1', _DYH, 'DynamicHead 4, FPN with GN, offset lr x1',
         **{_BLOCKS: 4, **_GN_FPN_DY, 'model__neck__1__hsigmoid': 'reference',
            'optim_wrapper__paramwise_cfg__custom_keys__offset_conv__lr_mult': 1.0}),
    _row('atss-dyhead4-fpngn-hsp', _DYH,
         "DynamicHead 4, FPN with GN, the paper's hard sigmoid",
         **{_BLOCKS: 4, **_RECIPE}),
    # the optimizer: SGD as in the paper, both sides
    _row('atss-fpngn-sgd', _ATSS, 'ATSS, 4 stacked convs, FPN with GN, SGD', **{**_GN_FPN, **_SGD}),
    _row('atss-dyhead4-fpngn-hsp-sgd', _DYH, "DynamicHead 4, FPN with GN, paper's hard sigmoid, SGD",
         **{_BLOCKS: 4, **_RECIPE, **_SGD}),
    # depth, on the recipe
    _row('atss-dyhead1', _DYH, 'DynamicHead 1', **{_BLOCKS: 1, **_RECIPE}),
    _row('atss-dyhead2', _DYH, 'DynamicHead 2', **{_BLOCKS: 2, **_RECIPE}),
    _row('atss-dyhead6', _DYH, 'DynamicHead 6', **{_BLOCKS: 6, **_RECIPE}),
    _row('atss-dyhead4-legacy', _DYH, 'DynamicHead 4, legacy offsets',
         **{_BLOCKS: 4, **_RECIPE, 'model__neck__1__legacy_offsets': True}),
    # DynamicHead shares one trunk between classification and regression, where the stacked
    # convs give each task its own tower: fewer blocks plus one or two task convs, same FLOPs
    _row('atss-dyhead3-convs1', _DYH,
         'DynamicHead 3 + 1 stacked conv per task, FPN with GN, paper\'s hard sigmoid '
         '(the demo recipe)', **_PER_TASK),
    _row('atss-dyhead2-convs2', _DYH, 'DynamicHead 2 + 2 stacked convs per task',
         **{_BLOCKS: 2, **_RECIPE, 'model__bbox_head__stacked_convs': 2}),
    # the same structure without the attentions: is the gain DyHead's or the structure's?
    _row('atss-dyhead3-convs1-none', _DYH, '3 plain blocks (no attention) + 1 stacked conv per task',
         **{**_PER_TASK, **_ALL_OFF}),
    # Table 1 of the paper, in miniature (4 blocks, the recipe): none, each alone
    _row('atss-dyhead4-none', _DYH, 'no attention (plain convs, level mean, ReLU)',
         **{_BLOCKS: 4, **_RECIPE, **_ALL_OFF}),
    _row('atss-dyhead4-L', _DYH, 'scale-aware only',
         **{_BLOCKS: 4, **_RECIPE, **_ALL_OFF, 'model__neck__1__scale_aware': True}),
    _row('atss-dyhead4-S', _DYH, 'spatial-aware only',
         **{_BLOCKS: 4, **_RECIPE, **_ALL_OFF, 'model__neck__1__spatial_aware': True}),
    _row('atss-dyhead4-C', _DYH, 'task-aware only',
         **{_BLOCKS: 4, **_RECIPE, **_ALL_OFF, 'model__neck__1__task_aware': True}),
    # the other detectors (their demo configs as they are)
    _row('fcos', 'fcos_r18_fpn_16e_shapes.py', 'FCOS, 4 stacked convs'),
    _row('fcos-dyhead', 'fcos_r18_fpn_dyhead_16e_shapes.py', "FCOS + DynamicHead 4 (the paper's form)",
         **{_BLOCKS: 4, **_NO_CONVS}),
    _row('fcos-dyhead3-convs1', 'fcos_r18_fpn_dyhead_16e_shapes.py',
         'FCOS + DynamicHead 3 + 1 stacked conv per task (its demo config)',
         **{_BLOCKS: 3, 'model__bbox_head__stacked_convs': 1}),
    _row('retinanet', 'retinanet_r18_fpn_16e_shapes.py', 'RetinaNet, 4 stacked convs'),
    _row('retinanet-dyhead', 'retinanet_r18_fpn_dyhead_16e_shapes.py', 'RetinaNet + DynamicHead'),
    # RetinaNet's towers have no norm, DynamicHead has GroupNorm: the baseline with GN towers too
    _row('retinanet-gn', 'retinanet_r18_fpn_16e_shapes.py', 'RetinaNet, 4 stacked convs with GN',
         model__bbox_head__norm_cfg__type='GN', model__bbox_head__norm_cfg__num_groups=16),
    _row('faster-rcnn', 'faster-rcnn_r18_fpn_16e_shapes.py', 'Faster R-CNN, 2 shared FCs'),
    _row('faster-rcnn-dyhead', 'faster-rcnn_r18_fpn_dyhead_16e_shapes.py',
         'Faster R-CNN + DynamicHead on P2-P6'),
    _row('faster-rcnn-dyhead-2stage', 'faster-rcnn_r18_fpn_dyhead-2stage_16e_shapes.py',
         'Faster R-CNN, two-stage form (Fig. 2c)'),
    _row('mask-rcnn', 'mask-rcnn_r18_fpn_16e_shapes.py', 'Mask R-CNN, 2 shared FCs, mask head'),
    _row('mask-rcnn-dyhead', 'mask-rcnn_r18_fpn_dyhead_16e_shapes.py',
         'Mask R-CNN + DynamicHead on P2-P6'),
]}


def schedule_options(epochs: int, seed: int, val_interval: int) -> List[str]:
    """cfg-options for a run of ``epochs`` (the demo configs' warm-up + cosine schedule)."""
    return [f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={val_interval}',
            f'param_scheduler.1.end={epochs}', f'param_scheduler.1.T_max={epochs}',
            f'default_hooks.checkpoint.interval={epochs}', f'randomness.seed={seed}']


def row_options(row: Row) -> List[str]:
    return [f'{k}={v}' for k, v in row.options]


def run_name(row: str, epochs: int, seed: int) -> str:
    return f'{row}_e{epochs}_s{seed}'


def read_scalars(work_dir: str) -> Tuple[List[dict], dict, Optional[float]]:
    """From mmengine's scalars.json: the val curve [{epoch, bbox_mAP, ...}], the last val's
    metrics, and the mean training loss over the last epoch's log lines."""
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not files:
        raise FileNotFoundError(f'no scalars.json under {work_dir}')
    train, val = [], []
    with open(files[-1]) as f:
        for line in f:
            rec = json.loads(line)
            (val if 'coco/bbox_mAP' in rec else train).append(rec)
    curve = [dict(epoch=int(r['step']), **{k.split('/')[-1]: round(float(v), 4)
                                           for k, v in r.items() if k.startswith('coco/')})
             for r in val]
    last_epoch = max((r.get('epoch', 0) for r in train), default=0)
    losses = [r['loss'] for r in train if r.get('epoch') == last_epoch and 'loss' in r]
    return curve, (curve[-1] if curve else {}), (statistics.fmean(losses) if losses else None)


def measure(config: str, options: Sequence[str], checkpoint: Optional[str],
            iters: int = 20) -> dict:
    """Latency (batch 1, 320x320, predict with pre/post-processing), FLOPs and parameters."""
    from mmengine.config import Config

    from .utils.build import build_detector, num_classes_of, synthetic_batch
    from .utils.flops import count_flops
    from .utils.machine import machine_name
    from .utils.timing import summarize, time_inference
    cfg = Config.fromfile(osp.join(ROOT, config))
    if options:
        cfg.merge_from_dict(dict(_parse_option(o) for o in options))
    model = build_detector(cfg, 'cpu', checkpoint)
    lat, iqr = summarize(time_inference(model, synthetic_batch(1, 320, 320, num_classes_of(cfg)),
                                        'cpu', iters, 3))
    r = count_flops(model, 320, 320)
    return dict(latency_ms=round(lat * 1000, 2), latency_iqr_ms=round(iqr * 1000, 2),
                gflops=round(r['flops'] / 1e9, 4), neck_gflops=round(r['neck_flops'] / 1e9, 4),
                params_m=round(r['params'] / 1e6, 4), machine=machine_name())


def _parse_option(opt: str):
    from mmengine.config import DictAction  # the parser of --cfg-options, so both agree
    key, value = opt.split('=', 1)
    return key, DictAction._parse_iterable(value)


def _run(cmd: List[str], log: str):
    with open(log, 'w') as f:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise RuntimeError(f'failed ({proc.returncode}): {" ".join(cmd)}; see {log}')


def run(row: Row, seed: int, epochs: int, val_interval: int, work_root: str,
        results_dir: str = RESULTS_DIR) -> dict:
    """Train, validate and measure one run; save and return its result."""
    name = run_name(row.name, epochs, seed)
    work = osp.join(work_root, name)
    os.makedirs(work, exist_ok=True)
    opts = row_options(row)
    t0 = time.perf_counter()
    _run([sys.executable, 'tools/train.py', row.config, '--work-dir', work, '--cfg-options',
          *opts, *schedule_options(epochs, seed, val_interval)], osp.join(work, 'train.log'))
    train_s = time.perf_counter() - t0
    curve, final, loss = read_scalars(work)
    with open(osp.join(work, 'last_checkpoint')) as f:
        ckpt = f.read().strip()
    bench = osp.join(work, 'measure.json')
    _run([sys.executable, '-m', 'mmdet_dyhead.study', 'measure', row.config, ckpt, bench, *opts],
         osp.join(work, 'measure.log'))
    with open(bench) as f:
        m = json.load(f)
    result = dict(row=row.name, label=row.label, config=row.config, options=opts, seed=seed,
                  epochs=epochs, val_interval=val_interval,
                  **{k: v for k, v in final.items() if k != 'epoch'},
                  final_train_loss=None if loss is None else round(loss, 4),
                  train_s=round(train_s, 1), curve=curve, **m,
                  date=time.strftime('%Y-%m-%d'))
    save(result, results_dir)
    return result


def save(result: dict, results_dir: str = RESULTS_DIR) -> str:
    os.makedirs(results_dir, exist_ok=True)
    path = osp.join(results_dir, run_name(result['row'], result['epochs'], result['seed']) + '.json')
    with open(path, 'w') as f:
        json.dump(result, f, indent=1)
        f.write('\n')
    return path


def load_results(results_dir: str = RESULTS_DIR) -> List[dict]:
    """The saved runs. Where ``latency.json`` (``measure_latencies``: every row side by side in
    one process) has a row, its latency replaces the one measured after each run (kept as
    ``run_latency_ms``), so the tables compare latencies taken at the same time."""
    out = []
    for path in sorted(glob.glob(osp.join(results_dir, '*_e*_s*.json'))):
        with open(path) as f:
            out.append(json.load(f))
    side_by_side = osp.join(results_dir, LATENCY_FILE)
    if osp.isfile(side_by_side):
        with open(side_by_side) as f:
            rows = json.load(f)['rows']
        for r in out:
            if r['row'] in rows:
                r['run_latency_ms'], r['latency_ms'] = r.get('latency_ms'), rows[r['row']]
    return out


LATENCY_FILE = 'latency.json'


def measure_latencies(rows: Sequence[str], rounds: int = 20, warmup: int = 3) -> dict:
    """CPU latency (ms, median) of each row's detector, batch 1, 320x320, predict with pre- and
    post-processing, all rows alternating in this one process (each round runs every row once),
    so machine drift hits every row alike. Random weights (the same for every run of a row)."""
    import torch
    from mmengine.config import Config

    from .utils.build import build_detector, num_classes_of, synthetic_batch
    from .utils.machine import machine_name
    from .utils.timing import time_predict_alternating
    models, data = {}, {}
    for name in rows:
        row = ROWS[name]
        cfg = Config.fromfile(osp.join(ROOT, row.config))
        if row.options:
            cfg.merge_from_dict(dict(_parse_option(o) for o in row_options(row)))
        torch.manual_seed(0)
        models[name] = build_detector(cfg, 'cpu').eval()
        data[name] = models[name].data_preprocessor(
            synthetic_batch(1, 320, 320, num_classes_of(cfg)), False)
    times = time_predict_alternating(models, data, rounds, warmup)
    return dict(machine=machine_name(), date=time.strftime('%Y-%m-%d'), rounds=rounds,
                size=[320, 320], rows={n: round(statistics.median(v) * 1000, 2)
                                       for n, v in times.items()})


# ---------------------------------------------------------------------------------------------
# tables and plots, regenerated from the saved runs

@dataclass
class Summary:
    """The runs of one row at one schedule."""
    row: str
    label: str
    epochs: int
    runs: List[dict] = field(default_factory=list)

    def values(self, key: str) -> List[float]:
        return [r[key] for r in self.runs if r.get(key) is not None]

    def mean(self, key: str) -> float:
        return statistics.fmean(self.values(key))

    def std(self, key: str) -> float:
        v = self.values(key)
        return statistics.stdev(v) if len(v) > 1 else float('nan')

    def median(self, key: str) -> float:
        return statistics.median(self.values(key))


def summarize_rows(results: Sequence[dict], rows: Sequence[str], epochs: int) -> List[Summary]:
    out = []
    for name in rows:
        runs = sorted((r for r in results if r['row'] == name and r['epochs'] == epochs),
                      key=lambda r: r['seed'])
        if runs:
            label = ROWS[name].label if name in ROWS else runs[0]['label']
            out.append(Summary(name, label, epochs, runs))
    return out


def _pm(s: Summary, key: str, digits: int = 3) -> str:
    m, sd = s.mean(key), s.std(key)
    return f'{m:.{digits}f}' if math.isnan(sd) else f'{m:.{digits}f} ± {sd:.{digits}f}'


def table(summaries: Sequence[Summary], ref: Optional[str] = None,
          pairs: Optional[Dict[str, str]] = None) -> str:
    """Markdown: mean ± std (sample std over seeds) of mAP, mAP@50, mAP@75, the mean AP of small
    and large objects (where saved), mask mAP (where a row has masks), final training loss, and
    the medians of training time, latency, FLOPs and parameters. Latencies are given as a
    multiple of ``ref``'s, or of each row's own baseline in ``pairs`` (row -> baseline row)."""
    sizes = any(s.values('bbox_mAP_s') for s in summaries)
    masks = any(s.values('segm_mAP') for s in summaries)
    rows = ['| row | seeds | mAP | mAP@50 | mAP@75 |' + (' AP small / large |' if sizes else '')
            + (' mask mAP |' if masks else '')
            + ' final train loss | training | latency (1 img) | GFLOPs | params |',
            '| --- ' * (10 + sizes + masks) + '|']
    by_row = {s.row: s for s in summaries}
    for s in summaries:
        base = by_row.get(pairs.get(s.row) if pairs is not None else ref)
        lat = f'{s.median("latency_ms"):.0f} ms'
        if base is not None and s is not base:
            lat += f' ({s.median("latency_ms") / base.median("latency_ms"):.2f}x)'
        seeds = ','.join(str(r['seed']) for r in s.runs)
        size = ''
        if sizes:
            size = (f' {s.mean("bbox_mAP_s"):.3f} / {s.mean("bbox_mAP_l"):.3f} |'
                    if s.values('bbox_mAP_s') and s.values('bbox_mAP_l') else ' - |')
        mask = (f' {_pm(s, "segm_mAP") if s.values("segm_mAP") else "-"} |' if masks else '')
        rows.append(f'| {s.label} | {seeds} | {_pm(s, "bbox_mAP")} | {_pm(s, "bbox_mAP_50")} '
                    f'| {_pm(s, "bbox_mAP_75")} |{size}{mask} {_pm(s, "final_train_loss", 2)} '
                    f'| {s.median("train_s") / 60:.1f} min | {lat} | {s.median("gflops"):.2f} '
                    f'| {s.median("params_m"):.2f} M |')
    return '\n'.join(rows) + '\n'


# The README's study sections: (marker, rows, schedule); each is a table of those rows.
SECTIONS: List[Tuple[str, Tuple[str, ...], int]] = [
    ('main', ('atss-fpngn', 'atss-dyhead4-fpngn-hsp', 'atss-dyhead3-convs1'), 16),
    ('recipe', ('atss', 'atss-dyhead4', 'atss-fpngn', 'atss-dyhead4-fpngn',
                'atss-dyhead4-fpngn-off1', 'atss-dyhead4-fpngn-hsp', 'atss-dyhead2-convs2',
                'atss-dyhead3-convs1-none', 'atss-dyhead3-convs1'), 16),
    ('ablation', ('atss-fpngn', 'atss-dyhead4-none', 'atss-dyhead4-L', 'atss-dyhead4-S',
                  'atss-dyhead4-C', 'atss-dyhead4-fpngn-hsp'), 16),
    ('depth', ('atss-fpngn', 'atss-dyhead1', 'atss-dyhead2', 'atss-dyhead4-fpngn-hsp',
               'atss-dyhead6'), 16),
    ('offsets', ('atss-dyhead4-fpngn-hsp', 'atss-dyhead4-legacy'), 16),
    ('optimizer', ('atss-fpngn', 'atss-dyhead4-fpngn-hsp', 'atss-fpngn-sgd',
                   'atss-dyhead4-fpngn-hsp-sgd'), 16),
    ('detectors', ('fcos', 'fcos-dyhead', 'fcos-dyhead3-convs1', 'retinanet', 'retinanet-gn',
                   'retinanet-dyhead', 'faster-rcnn', 'faster-rcnn-dyhead',
                   'faster-rcnn-dyhead-2stage', 'mask-rcnn', 'mask-rcnn-dyhead'), 16),
]
# the detectors table: each row's latency against its own detector's baseline
PAIRS = {'fcos-dyhead': 'fcos', 'fcos-dyhead3-convs1': 'fcos', 'retinanet-gn': 'retinanet',
         'retinanet-dyhead': 'retinanet', 'faster-rcnn-dyhead': 'faster-rcnn',
         'faster-rcnn-dyhead-2stage': 'faster-rcnn', 'mask-rcnn-dyhead': 'mask-rcnn'}


def sections(results: Sequence[dict]) -> Dict[str, str]:
    """The tables that have something of their own: the first two sections (the main pair and
    the recipe) always; the others once a row that is not in those two has a run."""
    out, shared = {}, {row for _, rows, _ in SECTIONS[:2] for row in rows}
    for i, (marker, rows, epochs) in enumerate(SECTIONS):
        summaries = summarize_rows(results, rows, epochs)
        if summaries and (i < 2 or any(s.row not in shared for s in summaries)):
            out[marker] = (table(summaries, pairs=PAIRS) if marker == 'detectors'
                           else table(summaries, ref=summaries[0].row))
    return out


def marker(name: str) -> Tuple[str, str]:
    return f'<!-- study:{name}:begin -->', f'<!-- study:{name}:end -->'


def readme_section(text: str, name: str) -> Optional[str]:
    begin, end = marker(name)
    if begin not in text:
        return None
    return text.split(begin, 1)[1].split(end, 1)[0].strip('\n') + '\n'


def update_readme(text: str, tables: Dict[str, str]) -> str:
    """Replace each ``<!-- study:NAME:begin --> ... end -->`` block that has a table."""
    for name, md in tables.items():
        begin, end = marker(name)
        if begin not in text or end not in text:
            continue
        head, rest = text.split(begin, 1)
        text = head + begin + '\n' + md + end + rest.split(end, 1)[1]
    return text


def _axes():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt.subplots(figsize=(6, 4))


def _save(fig, ax, xlabel: str, path: str, legend_loc: str = 'best'):
    import matplotlib.pyplot as plt
    ax.set_xlabel(xlabel)
    ax.set_ylabel('val bbox mAP')
    ax.grid(alpha=0.3)
    if legend_loc == 'below':  # many rows: under the axes, where it hides no point
        ax.legend(fontsize=6, loc='upper center', bbox_to_anchor=(0.5, -0.22))
    else:
        ax.legend(fontsize=6, loc=legend_loc)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches='tight')
    plt.close(fig)


def plot_curves(results: Sequence[dict], rows: Sequence[str], epochs: int, path: str):
    """Val mAP against epoch, mean over seeds with the min-max band, one line per row."""
    fig, ax = _axes()
    for s in summarize_rows(results, rows, epochs):
        by_epoch: Dict[int, List[float]] = {}
        for r in s.runs:
            for p in r['curve']:
                by_epoch.setdefault(p['epoch'], []).append(p['bbox_mAP'])
        xs = sorted(by_epoch)
        ax.plot(xs, [statistics.fmean(by_epoch[x]) for x in xs], marker='o',
                label=f'{s.label} ({len(s.runs)} seeds)')
        ax.fill_between(xs, [min(by_epoch[x]) for x in xs], [max(by_epoch[x]) for x in xs],
                        alpha=0.2)
    _save(fig, ax, 'epoch', path, legend_loc='lower right')  # the curves rise from lower left


def plot_map_vs_latency(results: Sequence[dict], rows: Sequence[str], epochs: int, path: str):
    """Mean mAP (std as error bar) against median latency, one point per row."""
    fig, ax = _axes()
    for s in summarize_rows(results, rows, epochs):
        sd = s.std('bbox_mAP')
        ax.errorbar(s.median('latency_ms'), s.mean('bbox_mAP'),
                    yerr=None if math.isnan(sd) else sd, marker='o', capsize=3,
                    label=f'{s.label} ({s.median("gflops"):.2f} GFLOPs)')
    _save(fig, ax, 'CPU latency, batch 1, 320x320 (ms)', path, legend_loc='below')


def depth_points(results: Sequence[dict], rows: Sequence[str], epochs: int) -> List[dict]:
    """One point per row of the depth study: its depth label, median GFLOPs and latency, mean
    mAP and its sample std (nan with one seed)."""
    return [dict(row=s.row, label=depth_label(s.row), gflops=s.median('gflops'),
                 latency_ms=s.median('latency_ms'), mAP=s.mean('bbox_mAP'), std=s.std('bbox_mAP'))
            for s in summarize_rows(results, rows, epochs)]


def depth_label(row: str) -> str:
    """'4 stacked convs' for a row without DynamicHead, else its depth ('1 block', '6 blocks')."""
    blocks = dict(ROWS[row].options).get(_BLOCKS.replace('__', '.'))
    if blocks is None:
        return '4 stacked convs'
    return f'{blocks} block' + ('s' if blocks > 1 else '')


def plot_depth(results: Sequence[dict], rows: Sequence[str], epochs: int, path: str):
    """The depth study as one figure: mAP (std as error bar) against GFLOPs (left) and against
    latency (right); DynamicHead's depths joined in order, the stacked convs as a square."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    points = depth_points(results, rows, epochs)
    dy = [p for p in points if 'block' in p['label']]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
    for ax, key, xlabel in ((axes[0], 'gflops', 'GFLOPs (320x320)'),
                            (axes[1], 'latency_ms', 'CPU latency, batch 1, 320x320 (ms)')):
        ax.plot([p[key] for p in dy], [p['mAP'] for p in dy], color='tab:orange', alpha=0.5,
                label='DynamicHead')
        for p in points:
            is_dy = p in dy
            ax.errorbar(p[key], p['mAP'], yerr=None if math.isnan(p['std']) else p['std'],
                        marker='o' if is_dy else 's', capsize=3,
                        color='tab:orange' if is_dy else 'tab:blue')
            ax.annotate(p['label'], (p[key], p['mAP']), fontsize=7, xytext=(4, 4),
                        textcoords='offset points')
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel('val bbox mAP')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


PLOTS = (('curves.png', plot_curves, SECTIONS[0][1], 16),
         ('map_vs_latency.png', plot_map_vs_latency, SECTIONS[1][1], 16),
         ('depth.png', plot_depth, SECTIONS[3][1], 16))


def write_plots(results: Sequence[dict], out_dir: str = RESULTS_DIR) -> List[str]:
    paths = []
    for fname, fn, rows, epochs in PLOTS:
        if summarize_rows(results, rows, epochs):
            paths.append(osp.join(out_dir, fname))
            fn(results, rows, epochs, paths[-1])
    return paths


def _main(argv: Sequence[str]):
    # `python -m mmdet_dyhead.study measure CONFIG CKPT OUT.json [OPTIONS...]`: a fresh process,
    # so one run's memory and threads do not colour the next measurement
    if len(argv) >= 4 and argv[0] == 'measure':
        config, ckpt, out, *opts = argv[1:]
        with open(out, 'w') as f:
            json.dump(measure(config, opts, ckpt), f, indent=1)
        return
    raise SystemExit('usage: python -m mmdet_dyhead.study measure CONFIG CKPT OUT.json [K=V ...]')


if __name__ == '__main__':
    _main(sys.argv[1:])
