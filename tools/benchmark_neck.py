#!/usr/bin/env python
"""DynamicHead against mmdet's DyHead (same weights), CPU or GPU: time, memory, GFLOP/s, ATSS ratio.

    python tools/benchmark_neck.py [--device cpu] [--sizes 512x512 800x1333] [--out outputs/bench_cpu]

Implementations, all with the same weights (mmdet's DyHead, perturbed so offsets are non-zero,
converted with mmdet_dyhead.converters.from_mmdet_dyhead):
  mmdet DyHead            mmdet.models.necks.DyHead (mmcv's deformable-conv kernel)
  ours, mmcv kernel       DynamicHead(legacy_offsets=True, dcn_impl='mmcv')
  ours, torch kernel      DynamicHead(legacy_offsets=True, dcn_impl='torch')
  ours, default           DynamicHead(legacy_offsets=False, dcn_impl='auto'): corrected offsets,
                          shared columns, the kernel 'auto' picks for the device
  4 stacked convs         what DyHead replaces in ATSS: 2 x 4 conv3x3-GN-ReLU per level
Runs alternate between implementations inside one process (medians of --repeats); peak memory is
measured in a fresh process per implementation. On a CPU each call's minor page faults are counted
too, and the allocator's settings ($GLIBC_TUNABLES, $LD_PRELOAD, $MALLOC_CONF) are recorded: they
move the implementations' times by different amounts (docs/speed.md). Writes table.md,
results.json and time_vs_size.png.
"""
import argparse
import contextlib
import json
import os
import os.path as osp
import re
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from mmdet_dyhead.models.deform_conv_norm import stride2_size  # noqa: E402
from mmdet_dyhead.ops.deform_conv import backward_gemm  # noqa: E402
from mmdet_dyhead.utils.machine import machine_name  # noqa: E402
from mmdet_dyhead.utils.paths import ROOT  # noqa: E402
from mmdet_dyhead.utils.report import write_report  # noqa: E402
from mmdet_dyhead.utils.timing import sync  # noqa: E402

IMPLS = ['mmdet DyHead', 'ours, mmcv kernel', 'ours, torch kernel', 'ours, default',
         'ours, oneDNN backward', 'ours, unfolded', 'ours, with_cp', '4 stacked convs']
# implementations that are the default model with another library for the C++ conv's backward
# GEMMs (deform_conv.backward_gemm; the default's is 'auto')
BACKWARD_GEMM = {'ours, oneDNN backward': 'onednn'}


def pyramid_sizes(h: int, w: int):
    """P3-P7 of an (h, w) image padded to 32, as mmdet's FPN with extra convs gives them."""
    h, w = -(-h // 32) * 32, -(-w // 32) * 32
    sizes = [(h // 8, w // 8)]
    for _ in range(4):
        ph, pw = sizes[-1]
        sizes.append(stride2_size(ph, pw))
    return sizes


class StackedConvs(nn.Module):
    """ATSS's cls and reg towers: 2 x num_convs conv3x3-GN-ReLU, applied to every level."""

    def __init__(self, channels: int, num_convs: int = 4):
        super().__init__()

        def tower():
            layers = []
            for _ in range(num_convs):
                layers += [nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                           nn.GroupNorm(32, channels), nn.ReLU(inplace=True)]
            return nn.Sequential(*layers)
        self.cls, self.reg = tower(), tower()

    def forward(self, feats):
        return tuple(self.cls(f) + self.reg(f) for f in feats)


def build(channels: int, blocks: int, device: str, seed: int = 0):
    from mmdet.models.necks import DyHead

    from mmdet_dyhead.converters import from_mmdet_dyhead
    torch.manual_seed(seed)
    ref = DyHead(channels, channels, num_blocks=blocks)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    models = {
        'mmdet DyHead': ref,
        'ours, mmcv kernel': from_mmdet_dyhead(ref, dcn_impl='mmcv'),
        'ours, torch kernel': from_mmdet_dyhead(ref, dcn_impl='torch'),
        'ours, default': from_mmdet_dyhead(ref, dcn_impl='auto', legacy_offsets=False),
        '4 stacked convs': StackedConvs(channels),
    }
    models['ours, oneDNN backward'] = models['ours, default']  # see BACKWARD_GEMM
    models['ours, with_cp'] = from_mmdet_dyhead(ref, dcn_impl='auto', legacy_offsets=False)
    models['ours, with_cp'].with_cp = True  # each block recomputed in the backward
    # the default without the GroupNorm/resize fold (ops.norm_scale_task): the norms, resizes and
    # scale/task pass one by one, as before the fold, to measure what it saves
    models['ours, unfolded'] = from_mmdet_dyhead(ref, dcn_impl='auto', legacy_offsets=False)
    for block in models['ours, unfolded'].blocks:
        block._foldable = lambda feats: False
    return {k: m.to(device) for k, m in models.items()}


@contextlib.contextmanager
def backward_gemm_of(name: str):
    """Within: the backward GEMM library of implementation ``name`` (BACKWARD_GEMM), or the
    process's own (auto, or $MMDET_DYHEAD_BACKWARD_GEMM) for the others."""
    library = BACKWARD_GEMM.get(name)
    before = backward_gemm() if library else None
    if before:
        backward_gemm(library)
    try:
        yield
    finally:
        if before:
            backward_gemm(before)


def run_once(model, feats, backward: bool, device: str, dtype, name: str = '') -> float:
    with backward_gemm_of(name):
        sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device_type=device.split(':')[0], dtype=dtype,
                            enabled=dtype != torch.float32):
            if backward:
                xs = [f.detach().requires_grad_() for f in feats]
                out = model(xs)
                sum(o.float().sum() for o in out).backward()
            else:
                with torch.no_grad():
                    model(feats)
        sync(device)
        return time.perf_counter() - t0


def minor_faults() -> int:
    """This process's minor page faults so far (first touches of freshly mapped memory)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_all(models, feats, repeats: int, device: str, dtype, names,
             faults: dict = None) -> dict:
    """Median seconds per call, {name: {'fwd': s, 'fwd_bwd': s}}; ``faults``, if given, gets the
    median minor page faults per call in the same shape."""
    res = {}
    for backward in (False, True):
        key = 'fwd_bwd' if backward else 'fwd'
        for name in names:  # warm-up
            run_once(models[name], feats, backward, device, dtype, name)
        times = {n: [] for n in names}
        counts = {n: [] for n in names}
        for _ in range(repeats):  # alternate, so machine noise hits all alike
            for name in names:
                before = minor_faults()
                times[name].append(run_once(models[name], feats, backward, device, dtype, name))
                counts[name].append(minor_faults() - before)
        for name in names:
            res.setdefault(name, {})[key] = statistics.median(times[name])
            if faults is not None:
                faults.setdefault(name, {})[key] = statistics.median(counts[name])
    return res


# environment variables that change how freed memory goes back to the system: with glibc's
# defaults, large blocks are unmapped when freed and every call pays page faults to touch them
# again (docs/speed.md: the stacked convs far more than DynamicHead)
ALLOCATOR_ENV = ('GLIBC_TUNABLES', 'LD_PRELOAD', 'MALLOC_CONF')


def allocator() -> str:
    """How this process allocates: the settings of ALLOCATOR_ENV, or glibc's defaults."""
    settings = [f'{k}={os.environ[k]}' for k in ALLOCATOR_ENV if os.environ.get(k)]
    return ' '.join(settings) if settings else "glibc's defaults"


PLAIN_CONV = 'plain 3x3 conv'


def dcn_rate(channels: int, size, batch: int, device: str, repeats: int, dtype) -> dict:
    """GFLOP/s of one 3x3 deformable conv (stride 1, P3 size) next to a matmul of equal FLOPs."""
    from mmcv.ops import modulated_deform_conv2d as mmcv_dcn

    from mmdet_dyhead.ops import modulated_deform_conv2d
    from mmdet_dyhead.ops.deform_conv import _linear, _onednn_linear_ok
    h, w = size
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, h, w, generator=g).to(device, dtype)
    off = (torch.randn(batch, 18, h, w, generator=g) * 2).to(device, dtype)
    mask = torch.rand(batch, 9, h, w, generator=g).to(device, dtype)
    wt = (torch.randn(channels, channels, 3, 3, generator=g) * 0.02).to(device, dtype)
    a = torch.randn(batch * h * w, channels * 9, generator=g).to(device, dtype)
    b = torch.randn(channels * 9, channels, generator=g).to(device, dtype)
    flops = 2 * batch * h * w * channels * 9 * channels
    fns = {'matmul (torch.mm)': lambda: a @ b}
    if device == 'cpu' and dtype == torch.float32 and _onednn_linear_ok():
        bt = b.t().contiguous()  # oneDNN's GEMM, which our kernel uses on CPU (MKL's is slower
        fns['matmul (oneDNN)'] = lambda: _linear(a, bt)  # on some CPUs)
    fns['ours, torch kernel'] = lambda: modulated_deform_conv2d(x, off, mask, wt, None, 1, 1)
    # the stacked convs' own kernel on the same FLOPs: a plain conv reads each input pixel for
    # all nine taps, where a deformable conv's matrix product reads nine sampled columns
    fns[PLAIN_CONV] = lambda: F.conv2d(x, wt, None, 1, 1)
    if not (device == 'cpu' and dtype != torch.float32):
        fns['mmcv kernel'] = lambda: mmcv_dcn(x, off, mask, wt, None, 1, 1, 1, 1, 1)
    times = {k: [] for k in fns}
    with torch.no_grad():
        for f in fns.values():
            f()
        for _ in range(repeats):
            for k, f in fns.items():
                sync(device)
                t0 = time.perf_counter()
                f()
                sync(device)
                times[k].append(time.perf_counter() - t0)
    return {k: flops / statistics.median(v) / 1e9 for k, v in times.items()}


def _status_kib(key: str) -> int:
    with open('/proc/self/status') as f:
        return int(re.search(key + r':\s+(\d+) kB', f.read()).group(1))


def measure_peak_memory(name: str, channels: int, blocks: int, batch: int, size,
                        device: str) -> float:
    """Peak extra memory (MiB) of one forward+backward of ``name`` in this process."""
    import gc
    models = build(channels, blocks, device)
    model = models.pop(name)
    del models
    feats = [torch.randn(batch, channels, h, w, device=device) for h, w in pyramid_sizes(*size)]
    if device.startswith('cuda'):
        sync(device)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_once(model, feats, True, device, torch.float32, name)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    run_once(model, feats, True, device, torch.float32, name)  # one-time costs: kernels, extension
    gc.collect()
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset the peak (VmHWM) to the current RSS
    base = _status_kib('VmRSS')
    run_once(model, feats, True, device, torch.float32, name)
    return (_status_kib('VmHWM') - base) / 1024


def peak_memory(name: str, channels: int, blocks: int, batch: int, size, device: str) -> float:
    """``measure_peak_memory`` in a fresh process, so no other implementation's memory counts."""
    cmd = [sys.executable, osp.abspath(__file__), '--peak-memory-of', name, '--channels',
           str(channels), '--blocks', str(blocks), '--batch', str(batch), '--device', device,
           '--sizes', f'{size[0]}x{size[1]}']
    # every allocation over 64 KiB its own mapping, unmapped when freed: otherwise glibc serves
    # the run from heap memory that building the models left free (already resident), and the
    # RSS high-water mark undercounts (the stacked convs read 13 instead of 81 MiB at 256x256)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536')
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    m = re.search(r'PEAK ([0-9.e+-]+)', out.stdout)
    if not m:
        raise RuntimeError(out.stderr[-2000:])
    return float(m.group(1))


def atss_ratio(device: str, repeats: int) -> dict:
    """Training iteration of ATSS-R50 + DynamicHead (6 blocks, no stacked convs) over ATSS-R50-FPN
    with 4 stacked convs, 320x320, batch 2 (random init; the backbone's pretrained init is left out)."""
    from mmengine.config import Config

    from mmdet_dyhead.utils.build import build_detector, synthetic_batch
    from mmdet_dyhead.utils.timing import time_train_iter
    dy = Config.fromfile(osp.join(ROOT, 'configs/atss_r50_fpn_dyhead_1x_coco.py'))
    base = Config.fromfile(osp.join(ROOT, 'configs/atss_r50_fpn_dyhead_1x_coco.py'))
    base.model.neck = base.model.neck[0]
    base.model.bbox_head.stacked_convs = 4
    batch = synthetic_batch(2, 320, 320, 80)
    models = {'ATSS-R50-FPN, 4 stacked convs': build_detector(base, device),
              'ATSS-R50 + DynamicHead (6 blocks)': build_detector(dy, device)}
    times = {k: [] for k in models}
    for k, m in models.items():
        time_train_iter(m, batch, device, 1, 1)
    for _ in range(repeats):
        for k, m in models.items():
            times[k] += time_train_iter(m, batch, device, 1, 0)
    med = {k: statistics.median(v) for k, v in times.items()}
    keys = list(med)
    return dict(seconds=med, ratio=med[keys[1]] / med[keys[0]])


def memory_only(a) -> dict:
    """Peak extra memory of one forward+backward, each implementation in a fresh process."""
    names = [n for n in IMPLS if n in a.impls]
    result = dict(machine=machine_name(a.device), device=a.device, batch=a.batch,
                  channels=a.channels, blocks=a.blocks, peak_mib={})
    path = osp.join(a.out, 'memory.json')
    if osp.isfile(path):  # add to an earlier call's sizes (same settings only)
        with open(path) as f:
            old = json.load(f)
        if all(old[k] == result[k] for k in ('device', 'batch', 'channels', 'blocks')):
            result['peak_mib'] = old['peak_mib']
    for s in a.sizes:
        size = tuple(map(int, s.split('x')))
        result['peak_mib'][s] = {n: peak_memory(n, a.channels, a.blocks, a.batch, size, a.device)
                                 for n in names}  # replaces that size's earlier numbers
        print(s, 'peak MiB', result['peak_mib'][s], flush=True)
    write_report(a.out, memory_table(result), result, 'memory.json', 'memory.md')
    return result


def memory_table(r: dict) -> str:
    """Peak memory per implementation and size, and each as a multiple of the stacked convs'."""
    sizes = list(r['peak_mib'])
    names = list(dict.fromkeys(n for s in sizes for n in r['peak_mib'][s]))
    ref = '4 stacked convs' if '4 stacked convs' in names else None
    lines = [f'Peak extra memory of one forward+backward (fp32), {r["channels"]} channels, '
             f'{r["blocks"]} blocks, batch {r["batch"]}, P3-P7, {r["device"]}: {r["machine"]}. '
             f'Each in a fresh process after one warm-up step, so activations and temporaries '
             f'(not weights or their gradients): the RSS high-water mark with every allocation '
             f'over 64 KiB mapped on its own (MALLOC_MMAP_THRESHOLD_).', '',
             '| implementation | ' + ' | '.join(sizes) + ' |', '|' + ' --- |' * (len(sizes) + 1)]
    for n in names:
        cells = []
        for s in sizes:
            v = r['peak_mib'][s].get(n)
            rel = f' ({v / r["peak_mib"][s][ref]:.1f}x)' if v and ref and n != ref else ''
            cells.append('-' if v is None else f'{v:.0f} MiB{rel}')
        lines.append(f'| {n} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cpu')
    p.add_argument('--sizes', nargs='+', default=['512x512', '800x1333'])
    p.add_argument('--plot-sizes', nargs='*', default=['256x256', '384x384'],
                   help='extra sizes for the plot only')
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--channels', type=int, default=256)
    p.add_argument('--blocks', type=int, default=6)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--atss-repeats', type=int, default=7)
    p.add_argument('--dtype', choices=['fp32', 'fp16', 'bf16'], default='fp32')
    p.add_argument('--impls', nargs='+', choices=IMPLS, default=IMPLS,
                   help='implementations to run (ours with the mmcv kernel runs as fast as '
                        "mmdet's DyHead: leave it out to halve the slow part)")
    p.add_argument('--no-memory', action='store_true')
    p.add_argument('--memory-only', action='store_true',
                   help='peak memory of --impls at --sizes only (fresh processes): memory.md/json')
    p.add_argument('--no-atss', action='store_true')
    p.add_argument('--out', default='outputs/bench_cpu')
    p.add_argument('--from-json', metavar='RESULTS',
                   help='measure nothing: redraw table.md and the plot from a results.json')
    p.add_argument('--ratios', nargs='+', metavar='RESULTS',
                   help="measure nothing: print DynamicHead ('ours, default') over the stacked "
                        'convs at --sizes, the ATSS ratio and the deformable conv\'s share of the '
                        'GEMM rate, one row per saved results.json (runs side by side)')
    p.add_argument('--peak-memory-of', choices=IMPLS, help=argparse.SUPPRESS)  # peak_memory's child
    a = p.parse_args(argv)
    if a.ratios:
        runs = []
        for path in a.ratios:
            with open(path) as f:
                runs.append((path, json.load(f)))
        md = ratios_table(runs, a.sizes)
        print(md)
        return md
    if a.peak_memory_of:
        h, w = map(int, a.sizes[0].split('x'))
        print('PEAK', measure_peak_memory(a.peak_memory_of, a.channels, a.blocks, a.batch, (h, w),
                                          a.device))
        return None
    if a.from_json:
        with open(a.from_json) as f:
            result = json.load(f)
        names = list(next(iter(result['sizes'].values()))['time'])
        sizes = [s for s in result['sizes'] if 'peak_mib' in result['sizes'][s]] or a.sizes
        write_outputs(result, sizes, names, a.out)
        return result
    dtype = dict(fp32=torch.float32, fp16=torch.float16, bf16=torch.bfloat16)[a.dtype]
    os.makedirs(a.out, exist_ok=True)
    if a.memory_only:
        return memory_only(a)
    models = build(a.channels, a.blocks, a.device)
    names = [n for n in IMPLS if n in a.impls]
    if a.device == 'cpu' and dtype != torch.float32:
        names = [n for n in names if 'mmcv' not in n and n != 'mmdet DyHead']
    result = dict(machine=machine_name(a.device), device=a.device, dtype=a.dtype, batch=a.batch,
                  channels=a.channels, blocks=a.blocks, sizes={})
    if a.device == 'cpu':
        if library := backward_gemm():
            result['backward_gemm'] = library  # the default's library in this run
        result['allocator'] = allocator()
    all_sizes = sorted({*a.sizes, *a.plot_sizes},
                       key=lambda s: int(s.split('x')[0]) * int(s.split('x')[1]))
    for s in all_sizes:
        h, w = map(int, s.split('x'))
        feats = [torch.randn(a.batch, a.channels, ph, pw, device=a.device)
                 for ph, pw in pyramid_sizes(h, w)]
        faults = {} if a.device == 'cpu' else None  # page faults: a CPU run's memory traffic
        t = time_all(models, feats, a.repeats, a.device, dtype, names, faults)
        result['sizes'][s] = dict(time=t)
        if faults is not None:
            result['sizes'][s]['page_faults'] = faults
        print(s, {n: {k: round(v, 3) for k, v in t[n].items()} for n in names}, flush=True)
        if s in a.sizes and not a.no_memory and dtype == torch.float32:
            result['sizes'][s]['peak_mib'] = {
                n: peak_memory(n, a.channels, a.blocks, a.batch, (h, w), a.device) for n in names}
            print(s, 'peak MiB', result['sizes'][s]['peak_mib'], flush=True)
    p3 = pyramid_sizes(*map(int, a.sizes[0].split('x')))[0]
    result['dcn_gflops'] = dcn_rate(a.channels, p3, a.batch, a.device, a.repeats * 2, dtype)
    print('GFLOP/s', result['dcn_gflops'], flush=True)
    if not a.no_atss and dtype == torch.float32:
        result['atss'] = atss_ratio(a.device, a.atss_repeats)
        print('ATSS', result['atss'], flush=True)
    write_outputs(result, a.sizes, names, a.out, measured=True)
    return result


def write_outputs(result, sizes, names, out, measured: bool = False) -> str:
    """table.md, time_vs_size.png and, for a measured run, results.json in ``out``; returns the
    table."""
    md = write_report(out, table(result, sizes, names), result if measured else None)
    plot(result, names, osp.join(out, 'time_vs_size.png'))
    return md


def ratios_table(runs, sizes) -> str:
    """Runs side by side: per (name, results) one row of 'ours, default' over '4 stacked convs'
    (forward and forward+backward at each size), the ATSS iteration ratio and the deformable
    conv's forward as a share of oneDNN's GEMM rate."""
    head = ['run'] + [f'{s} {p}' for s in sizes for p in ('fwd', 'fwd+bwd')] + [
        'ATSS iteration', 'deformable conv / GEMM rate']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)]
    for name, r in runs:
        cells = [f'`{name}`']
        for s in sizes:
            t = r['sizes'][s]['time']
            ours, base = t['ours, default'], t['4 stacked convs']
            cells += [f'{ours[k] / base[k]:.2f}x' for k in ('fwd', 'fwd_bwd')]
        cells.append(f'{r["atss"]["ratio"]:.2f}x' if 'atss' in r else '-')
        g = r.get('dcn_gflops', {})
        cells.append(f'{100 * g["ours, torch kernel"] / g["matmul (oneDNN)"]:.0f}%'
                     if 'matmul (oneDNN)' in g else '-')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


_LIBRARY_NAMES = {'mkl': 'MKL', 'onednn': 'oneDNN'}


def table(r, sizes, names) -> str:
    ref = 'mmdet DyHead' if 'mmdet DyHead' in names else names[0]
    memory = any('peak_mib' in r['sizes'][s] for s in sizes)  # a column only where measured
    lines = [f'{r["channels"]} channels, {r["blocks"]} blocks, batch {r["batch"]}, P3-P7, '
             f'{r["dtype"]}, {r["device"]}: {r["machine"]}. Median of alternating runs; '
             f'speed-up = {ref} time / this time.'
             + (f' The C++ conv\'s backward GEMMs: {_LIBRARY_NAMES[r["backward_gemm"]]}\'s.'
                if 'backward_gemm' in r else '')
             + (f' Allocator: {r["allocator"]}.' if 'allocator' in r else ''), '',
             '| input | implementation | forward | speed-up | fwd+bwd | speed-up |'
             + (' peak memory (fwd+bwd) |' if memory else ''),
             '| --- | --- | --- | --- | --- | --- |' + (' --- |' if memory else '')]
    for s in sizes:
        d = r['sizes'][s]
        t = d['time']
        for n in names:
            mem = d.get('peak_mib', {}).get(n)
            lines.append(f'| {s} | {n} | {t[n]["fwd"]:.3f} s | {t[ref]["fwd"] / t[n]["fwd"]:.1f}x '
                         f'| {t[n]["fwd_bwd"]:.3f} s | {t[ref]["fwd_bwd"] / t[n]["fwd_bwd"]:.1f}x |'
                         + ((f' {mem:.0f} MiB |' if mem is not None else ' - |') if memory else ''))
    for s in sizes:
        faults = r['sizes'][s].get('page_faults')
        if faults:
            lines += ['', f'Minor page faults per call at {s} (median; forward, forward+backward): '
                      + ', '.join(f'{n} {faults[n]["fwd"]:.0f}, {faults[n]["fwd_bwd"]:.0f}'
                                  for n in names) + '.']
    g = dict(r['dcn_gflops'])
    plain = g.pop(PLAIN_CONV, None)
    mm = max(v for k, v in g.items() if k.startswith('matmul'))
    lines += ['', 'One 3x3 deformable conv at P3 of the first size (forward), GFLOP/s and share of '
              'the fastest matrix product of the same FLOPs (the limit): ' + ', '.join(
                  f'{k} {v:.0f} ({v / mm:.0%})' for k, v in g.items()) + '.'
              + (f' A plain 3x3 conv of the same FLOPs (the stacked convs\' kernel): {plain:.0f} '
                 f'({plain / mm:.0%}).' if plain else '')]
    if 'atss' in r:
        sec = r['atss']['seconds']
        lines += ['', 'Training iteration, 320x320, batch 2: ' + ', '.join(
            f'{k} {v:.2f} s' for k, v in sec.items()) + f'; ratio {r["atss"]["ratio"]:.2f}x.']
    return '\n'.join(lines) + '\n'


def plot(r, names, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    sizes = list(r['sizes'])
    px = [int(s.split('x')[0]) * int(s.split('x')[1]) / 1e6 for s in sizes]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, title in zip(axes, ('fwd', 'fwd_bwd'), ('forward', 'forward + backward')):
        for n in names:
            ax.plot(px, [r['sizes'][s]['time'][n][key] for s in sizes], marker='o', label=n)
        ax.set_xlabel('input megapixels (P3-P7 of it)')
        ax.set_ylabel('seconds (log scale)')
        ax.set_yscale('log')
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f'DyHead neck, {r["channels"]} ch, {r["blocks"]} blocks, batch {r["batch"]}, '
                 f'{r["dtype"]}: {r["machine"]}', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == '__main__':
    main()
