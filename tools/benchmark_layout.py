#!/usr/bin/env python
"""The layout change at DynamicHead's output: torch's copy against the tiled C++ copy.

    python tools/benchmark_layout.py [--size 512 512] [--batch 2] [--channels 256] [--repeats 20]

Each level of P3-P7 (channels-last, as the blocks leave it) made contiguous by
``Tensor.contiguous()`` and by ``mmdet_dyhead.ops.layout.to_contiguous``, alternating, best of
--repeats; prints the milliseconds and GB/s per level.
"""
import argparse
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402
from benchmark_neck import pyramid_sizes  # noqa: E402

from mmdet_dyhead.ops.layout import to_contiguous  # noqa: E402
from mmdet_dyhead.utils.machine import machine_name  # noqa: E402


def best(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size', nargs=2, type=int, default=[512, 512], metavar=('H', 'W'))
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--channels', type=int, default=256)
    p.add_argument('--repeats', type=int, default=20)
    a = p.parse_args(argv)
    print(f'{a.channels} channels, batch {a.batch}, P3-P7 of {a.size[0]}x{a.size[1]}, fp32; '
          f'{machine_name("cpu")}; best of {a.repeats}\n')
    print('| level | MB | torch .contiguous() | to_contiguous (tiled) |')
    print('| --- | --- | --- | --- |')
    for h, w in pyramid_sizes(*a.size):
        x = torch.randn(a.batch, a.channels, h, w).contiguous(memory_format=torch.channels_last)
        assert torch.equal(to_contiguous(x), x.contiguous())
        mb = x.numel() * x.element_size() / 1e6
        t_torch = best(lambda: x.contiguous(), a.repeats)
        t_ours = best(lambda: to_contiguous(x), a.repeats)
        print(f'| {h}x{w} | {mb:.1f} | {t_torch * 1e3:.2f} ms ({mb / t_torch / 1e3:.1f} GB/s) | '
              f'{t_ours * 1e3:.2f} ms ({mb / t_ours / 1e3:.1f} GB/s) |')


if __name__ == '__main__':
    main()
