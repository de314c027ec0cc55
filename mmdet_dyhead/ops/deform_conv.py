"""Modulated deformable convolution (DCNv2) as gather + matrix product.

Computes exactly what mmcv's ``modulated_deform_conv2d`` computes (same sampling
positions, same bilinear rule, same zero padding, same sub-gradients at integer
positions), but as

    columns (P, K*C)  =  mask * bilinear-gather(x, positions)      # memory bound
    output  (P, C_out) = columns @ weight.T                         # one GEMM

over chunks of P output positions. mmcv's CPU kernel is a scalar loop; this
path is vectorised and puts almost all FLOPs in a GEMM. Backward recomputes the
columns chunk by chunk instead of storing them, so peak memory stays at one
chunk's columns (like mmcv's per-image column buffer).

Limits: ``groups == 1`` and ``deform_groups == 1`` (what DyHead uses); the
caller falls back to mmcv for anything else.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable

# Column elements per chunk (positions x taps x channels). The 4 gathered corners of a chunk,
# 4 x 128 x 9 x 256 floats = 4.5 MiB, stay in cache while they are blended and multiplied;
# 4x larger chunks ran 1.5-2x slower on 2 cores. Fewer channels get more positions per chunk,
# so small convs are not dominated by per-op overhead.
CHUNK_ELEMENTS = 128 * 9 * 256


def _out_size(size: int, k: int, stride: int, pad: int, dil: int) -> int:
    return (size + 2 * pad - (dil * (k - 1) + 1)) // stride + 1


def _taps(offset: Tensor, H: int, W: int, kh: int, kw: int, stride: Tuple[int, int],
          pad: Tuple[int, int], dil: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """Absolute sampling positions, each (N*Ho*Wo, K), positions-major.

    offset: (N, 2K, Ho, Wo), channel 2k = dy and 2k+1 = dx of tap k = i*kw + j
    (mmcv's layout). Computed as (base + offset) in the offset dtype, the same
    float operation as mmcv's kernel, so floor() agrees at integer positions.
    """
    N, _, Ho, Wo = offset.shape
    K = kh * kw
    dev, dt = offset.device, offset.dtype
    ki = torch.arange(kh, device=dev).repeat_interleave(kw) * dil[0]  # (K,)
    kj = torch.arange(kw, device=dev).repeat(kh) * dil[1]
    hs = torch.arange(Ho, device=dev) * stride[0] - pad[0]
    ws = torch.arange(Wo, device=dev) * stride[1] - pad[1]
    base_y = (hs.view(Ho, 1, 1) + ki.view(1, 1, K)).to(dt)  # (Ho, 1, K)
    base_x = (ws.view(1, Wo, 1) + kj.view(1, 1, K)).to(dt)  # (1, Wo, K)
    off = offset.view(N, K, 2, Ho, Wo).permute(0, 3, 4, 1, 2)  # (N, Ho, Wo, K, 2)
    py = (base_y + off[..., 0]).reshape(N * Ho * Wo, K)
    px = (base_x + off[..., 1]).reshape(N * Ho * Wo, K)
    return py, px


class _Bilinear:
    """Bilinear sampling of a chunk of taps, the 4 corners stacked on a leading axis.

    ``index`` (4 * rows * K,) points into the flat input; corners outside the map point at its
    appended zero row, so they contribute exactly zero (even next to inf or NaN), as in mmcv.
    ``weight``, ``dweight_y``, ``dweight_x``: (4, rows, K) corner weights and their derivatives
    with respect to the tap's y and x.
    """

    def __init__(self, py: Tensor, px: Tensor, row_base: Tensor, H: int, W: int, zero_row: int):
        y0f, x0f = torch.floor(py), torch.floor(px)
        ly, lx = py - y0f, px - x0f
        hy, hx = 1 - ly, 1 - lx
        y0, x0 = y0f.long(), x0f.long()
        ys = torch.stack([y0, y0, y0 + 1, y0 + 1])
        xs = torch.stack([x0, x0 + 1, x0, x0 + 1])
        valid = (ys >= 0) & (ys < H) & (xs >= 0) & (xs < W)
        self.index = torch.where(valid, row_base.view(-1, 1) + ys * W + xs, zero_row).view(-1)
        # a tap outside (-1, H) x (-1, W), or at a NaN position, samples nothing and gets no
        # coordinate gradient, as in mmcv (where, not a product: NaN * 0 is NaN)
        inside = (py > -1) & (py < H) & (px > -1) & (px < W)
        zero = py.new_zeros(())
        self.weight = torch.where(inside, torch.stack([hy * hx, hy * lx, ly * hx, ly * lx]), zero)
        self.dweight_y = torch.where(inside, torch.stack([-hx, -lx, hx, lx]), zero)
        self.dweight_x = torch.where(inside, torch.stack([-hy, hy, -ly, ly]), zero)

    def gather(self, flat: Tensor) -> Tensor:
        """(4, rows, K, C) corner values."""
        _, rows, K = self.weight.shape
        return flat.index_select(0, self.index).view(4, rows, K, flat.shape[1])


def _flat_input(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N*H*W + 1, C) rows, channels last, one zero row at the end."""
    N, C, H, W = x.shape
    flat = x.new_empty(N * H * W + 1, C)
    flat[:-1].view(N, H, W, C).copy_(x.permute(0, 2, 3, 1))
    flat[-1].zero_()
    return flat


class _Plan:
    """Shapes and chunking shared by forward and backward."""

    def __init__(self, x: Tensor, offset: Tensor, weight: Tensor, stride, pad, dil):
        self.N, self.C, self.H, self.W = x.shape
        self.Cout, _, self.kh, self.kw = weight.shape
        self.K = self.kh * self.kw
        self.Ho, self.Wo = offset.shape[-2:]
        self.P = self.N * self.Ho * self.Wo
        self.stride, self.pad, self.dil = stride, pad, dil
        # first row of each position's image in the flat input
        self.row_base = torch.arange(self.N, device=x.device).repeat_interleave(
            self.Ho * self.Wo) * (self.H * self.W)

    def chunks(self):
        step = max(16, CHUNK_ELEMENTS // (self.K * self.C))
        for start in range(0, self.P, step):
            yield slice(start, min(start + step, self.P))


def _columns(corners: Tensor, bil: _Bilinear, m: Tensor) -> Tensor:
    """Masked bilinear samples (rows, K, C) from the (4, rows, K, C) corner values."""
    wm = (bil.weight * m).unsqueeze(-1)
    cols = corners[0] * wm[0]
    for q in range(1, 4):  # in place: no (4, rows, K, C) temporary
        cols.addcmul_(corners[q], wm[q])
    return cols


class ModulatedDeformConv2dFunction(Function):
    """Autograd function; see module docstring. Returns (N, C_out, Ho, Wo) in channels-last memory."""

    @staticmethod
    def forward(ctx, x, offset, mask, weight, bias, stride, padding, dilation):
        plan = _Plan(x, offset, weight, stride, padding, dilation)
        flat = _flat_input(x)
        py, px = _taps(offset, plan.H, plan.W, plan.kh, plan.kw, stride, padding, dilation)
        m = mask.permute(0, 2, 3, 1).reshape(plan.P, plan.K)
        w2d = weight.permute(0, 2, 3, 1).reshape(plan.Cout, plan.K * plan.C)  # (Cout, K*C)
        out = x.new_empty(plan.P, plan.Cout)
        zero_row = flat.shape[0] - 1
        for sl in plan.chunks():
            bil = _Bilinear(py[sl], px[sl], plan.row_base[sl], plan.H, plan.W, zero_row)
            cols = _columns(bil.gather(flat), bil, m[sl]).view(sl.stop - sl.start, -1)
            if bias is not None:
                torch.addmm(bias, cols, w2d.t(), out=out[sl])
            else:
                torch.mm(cols, w2d.t(), out=out[sl])
        ctx.save_for_backward(x, offset, mask, weight)
        ctx.has_bias = bias is not None
        ctx.conf = (stride, padding, dilation)
        return out.view(plan.N, plan.Ho, plan.Wo, plan.Cout).permute(0, 3, 1, 2)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, offset, mask, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.conf
        plan = _Plan(x, offset, weight, stride, padding, dilation)
        N, C, K, P = plan.N, plan.C, plan.K, plan.P
        need_x, need_off, need_mask, need_w, need_b = ctx.needs_input_grad[:5]
        flat = _flat_input(x)
        zero_row = flat.shape[0] - 1
        py, px = _taps(offset, plan.H, plan.W, plan.kh, plan.kw, stride, padding, dilation)
        m = mask.permute(0, 2, 3, 1).reshape(P, K)
        w2d = weight.permute(0, 2, 3, 1).reshape(plan.Cout, K * C)
        go = grad_out.permute(0, 2, 3, 1).reshape(P, plan.Cout)

        grad_flat = torch.zeros_like(flat) if need_x else None
        grad_w2d = torch.zeros_like(w2d) if need_w else None
        grad_py = py.new_empty(P, K) if need_off else None
        grad_px = px.new_empty(P, K) if need_off else None
        grad_m = m.new_empty(P, K) if need_mask else None
        for sl in plan.chunks():
            rows = sl.stop - sl.start
            bil = _Bilinear(py[sl], px[sl], plan.row_base[sl], plan.H, plan.W, zero_row)
            ms = m[sl]
            corners = bil.gather(flat)
            if need_w:
                grad_w2d.addmm_(go[sl].t(), _columns(corners, bil, ms).view(rows, -1))
            gcols = torch.mm(go[sl], w2d).view(rows, K, C)  # d loss / d columns
            if need_x:
                grad_flat.index_add_(
                    0, bil.index, (gcols * (bil.weight * ms).unsqueeze(-1)).view(-1, C))
            if need_off or need_mask:
                dots = (corners * gcols).sum(-1)  # (4, rows, K)
            if need_mask:
                grad_m[sl] = (bil.weight * dots).sum(0)
            if need_off:
                grad_py[sl] = ms * (bil.dweight_y * dots).sum(0)
                grad_px[sl] = ms * (bil.dweight_x * dots).sum(0)

        del flat
        grad_x = grad_off = grad_mask = grad_weight = grad_bias = None
        Ho, Wo = plan.Ho, plan.Wo
        if need_x:  # a channels-last view: no extra copy of the input's size at the peak
            grad_x = grad_flat[:-1].view(N, plan.H, plan.W, C).permute(0, 3, 1, 2)
        if need_off:
            grad_off = torch.stack([grad_py, grad_px], dim=-1).view(N, Ho, Wo, 2 * K)
            grad_off = grad_off.permute(0, 3, 1, 2).contiguous()
        if need_mask:
            grad_mask = grad_m.view(N, Ho, Wo, K).permute(0, 3, 1, 2).contiguous()
        if need_w:
            grad_weight = grad_w2d.view(plan.Cout, plan.kh, plan.kw, C).permute(0, 3, 1, 2)
            grad_weight = grad_weight.contiguous()
        if need_b and ctx.has_bias:
            grad_bias = go.sum(0)
        return grad_x, grad_off, grad_mask, grad_weight, grad_bias, None, None, None


def _pair(v) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def modulated_deform_conv2d(x: Tensor, offset: Tensor, mask: Tensor, weight: Tensor,
                            bias: Optional[Tensor] = None, stride=1, padding=0,
                            dilation=1) -> Tensor:
    """Functional modulated deformable convolution, mmcv semantics.

    Args:
        x: (N, C, H, W) input.
        offset: (N, 2*kh*kw, Ho, Wo), (dy, dx) per tap, mmcv's layout.
        mask: (N, kh*kw, Ho, Wo) modulation, usually a sigmoid.
        weight: (C_out, C, kh, kw). bias: (C_out,) or None.
    Returns:
        (N, C_out, Ho, Wo); its memory is channels last.
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    Ho = _out_size(x.shape[2], weight.shape[2], stride[0], padding[0], dilation[0])
    Wo = _out_size(x.shape[3], weight.shape[3], stride[1], padding[1], dilation[1])
    K = weight.shape[2] * weight.shape[3]
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f'weight expects {weight.shape[1]} input channels, got {x.shape[1]}')
    if offset.shape != (x.shape[0], 2 * K, Ho, Wo):
        raise ValueError(f'offset must have shape {(x.shape[0], 2 * K, Ho, Wo)} for an input '
                         f'of {tuple(x.shape)}, got {tuple(offset.shape)}')
    if mask.shape != (x.shape[0], K, Ho, Wo):
        raise ValueError(f'mask must have shape {(x.shape[0], K, Ho, Wo)}, '
                         f'got {tuple(mask.shape)}')
    dtype = torch.promote_types(x.dtype, weight.dtype)
    x, offset, mask, weight = (t.to(dtype) for t in (x, offset, mask, weight))
    if bias is not None:
        bias = bias.to(dtype)
    return ModulatedDeformConv2dFunction.apply(x, offset, mask, weight, bias, stride, padding,
                                               dilation)
