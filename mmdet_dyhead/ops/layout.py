"""Layout changes at DynamicHead's edges, fast on a CPU.

DynamicHead computes channels-last and returns contiguous maps (what mmdet's heads expect), and
gives its inputs' gradients back contiguous, like the inputs. torch's own copy from channels-last
to contiguous is slow on large maps (1 GB/s on a 64 x 64, 256-channel map: the writes of each pixel
land a whole plane apart); the C++ copy (csrc/layout.cpp) goes tile by tile.
"""
import torch
from torch import Tensor

from . import cpu_ext


class _ToContiguous(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return cpu_ext.load().channels_last_to_contiguous(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad  # same values; the layout is the consumer's to choose


class _ToChannelsLast(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return to_contiguous(grad)  # the input's layout (a dense channels-last grad: tiled)


def _tiled(x: Tensor) -> bool:
    return (x.device.type == 'cpu' and x.dim() == 4 and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last) and cpu_ext.runs_here())


def to_contiguous(x: Tensor) -> Tensor:
    """``x.contiguous()``: the same values (and gradient), through the tiled C++ copy where x is a
    dense channels-last (N, C, H, W) CPU map."""
    return _ToContiguous.apply(x) if _tiled(x) else x.contiguous()


def to_channels_last(x: Tensor) -> Tensor:
    """``x.contiguous(memory_format=torch.channels_last)`` for a contiguous (N, C, H, W) CPU map,
    whose gradient comes back contiguous like x (through the tiled copy), not channels-last."""
    if x.dim() == 4 and x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last) \
            and torch.is_grad_enabled() and x.requires_grad and x.device.type == 'cpu' \
            and cpu_ext.runs_here():
        return _ToChannelsLast.apply(x)
    return x.contiguous(memory_format=torch.channels_last)
