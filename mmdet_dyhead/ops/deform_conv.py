"""Modulated deformable convolution (DCNv2) as gather + matrix product.

Computes exactly what mmcv's ``modulated_deform_conv2d`` computes (same sampling
positions, same bilinear rule, same zero padding, same sub-gradients at integer
positions), but as

    columns (P, C*K)  =  mask * bilinear-gather(x, positions)      # memory bound
    output  (P, C_out) = columns @ weight.view(C_out, C*K).T        # one GEMM

over chunks of P output positions. mmcv's CPU kernel is a scalar loop; this
path is vectorised and puts almost all FLOPs in a GEMM (oneDNN's on CPU: see _linear). The
columns use mmcv's im2col order (channel-major), so the weight is the GEMM's matrix as it is,
with no copy, forward and backward. The sampling runs in fused C++ loops (cpu_ext, built on
first use) or, without a compiler, in torch ops. Backward recomputes the
columns chunk by chunk instead of storing them, so peak memory stays at one
chunk's columns (like mmcv's per-image column buffer).

Limits: ``groups == 1`` and ``deform_groups == 1`` (what DyHead uses); the
caller falls back to mmcv for anything else.
"""
import functools
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from . import cpu_ext

# Column elements per chunk (positions x channels x taps): 256 x 256 x 9 floats = 2.3 MiB of
# columns stay in cache between sampling and GEMM; 128 to 512 positions ran within 5% of each
# other (256 best) with the C++ loops on 2 cores. Fewer channels get more positions per chunk,
# so small convs are not dominated by per-op overhead.
CHUNK_ELEMENTS = 256 * 9 * 256
# Positions whose sampling tables (corner indices and weights) are built in one go: enough to
# amortise the per-op overhead over many chunks, bounded so the tables stay small next to x.
TABLE_ROWS = 4096
# The fused C++ sampling loops (cpu_ext) when they build; False forces the pure-torch loops.
USE_CPU_EXT = True


@functools.lru_cache(maxsize=None)
def _onednn_linear_ok() -> bool:
    """Whether oneDNN's fp32 GEMM is there and right. On some x86 CPUs (AMD, AVX-512) MKL's sgemm,
    which torch.mm uses, runs at under half the rate of oneDNN's, the library torch's convs use."""
    try:
        a = torch.randn(5, 7, dtype=torch.float64)
        b = torch.randn(3, 7, dtype=torch.float64)
        got = torch.ops.mkldnn._linear_pointwise(a.float().t().contiguous().t(), b.float(),
                                                 None, 'none', [], '')
        return torch.allclose(got.double(), a @ b.t(), rtol=1e-4, atol=1e-4)
    except Exception:  # op missing or oneDNN off in this build
        return False


def _linear(a: Tensor, w: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """a (M, K) @ w (N, K).T (+ bias): oneDNN for fp32 on CPU, else torch.mm. Strided views
    (transposes) are read in place by both."""
    if (a.dtype == torch.float32 and a.device.type == 'cpu' and w.dtype == torch.float32
            and _onednn_linear_ok()):
        return torch.ops.mkldnn._linear_pointwise(a, w, bias, 'none', [], '')
    return torch.addmm(bias, a, w.t()) if bias is not None else torch.mm(a, w.t())


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
    """Bilinear sampling tables of R positions, the 4 corners on axis 1: (R, 4, K).

    ``index`` points into the flat input; corners outside the map point at its appended zero
    row, so they contribute exactly zero (even next to inf or NaN), as in mmcv. ``weight`` holds
    the corner weights; with ``grads``, ``dweight_y`` and ``dweight_x`` their derivatives with
    respect to the tap's y and x. ``H``, ``W``: the map's size, ints or (R, 1) per position.
    """

    def __init__(self, py: Tensor, px: Tensor, row_base: Tensor, H: int, W: int, zero_row: int,
                 grads: bool = False):
        y0f, x0f = torch.floor(py), torch.floor(px)
        ly, lx = py - y0f, px - x0f
        hy, hx = 1 - ly, 1 - lx
        y0, x0 = y0f.long(), x0f.long()
        vy0, vy1 = (y0 >= 0) & (y0 < H), (y0 >= -1) & (y0 < H - 1)
        vx0, vx1 = (x0 >= 0) & (x0 < W), (x0 >= -1) & (x0 < W - 1)
        valid = torch.stack([vy0 & vx0, vy0 & vx1, vy1 & vx0, vy1 & vx1], 1)
        i00 = row_base.view(-1, 1) + y0 * W + x0
        index = torch.stack([i00, i00 + 1, i00 + W, i00 + (W + 1)], 1)
        self.index = torch.where(valid, index, zero_row)
        # a tap outside (-1, H) x (-1, W), or at a NaN position, samples nothing and gets no
        # coordinate gradient, as in mmcv (where, not a product: NaN * 0 is NaN)
        inside = ((py > -1) & (py < H) & (px > -1) & (px < W)).unsqueeze(1)
        zero = py.new_zeros(())
        self.weight = torch.where(inside, torch.stack([hy * hx, hy * lx, ly * hx, ly * lx], 1),
                                  zero)
        if grads:
            self.dweight_y = torch.where(inside, torch.stack([-hx, -lx, hx, lx], 1), zero)
            self.dweight_x = torch.where(inside, torch.stack([-hy, hy, -ly, ly], 1), zero)


class _Segments:
    """Several inputs (pyramid levels) of one conv as one problem: their rows stacked in one flat
    input, their output positions in one list, so sampling tables and GEMM chunks span them all.

    Inputs with the same number of used output channels (``couts``) that follow each other form
    a group; each group is one GEMM over its positions with the weight's first ``cout`` rows.
    """

    def __init__(self, xs, offsets, weight: Tensor, couts, stride, pad, dil):
        x0 = xs[0]
        dev = x0.device
        # plain ints: under torch.jit.trace (FLOP counting) sizes would be traced tensors
        self.C = int(x0.shape[1])
        self.Cout, _, self.kh, self.kw = (int(v) for v in weight.shape)
        self.K = self.kh * self.kw
        self.stride, self.pad, self.dil = stride, pad, dil
        self.shapes = [tuple(int(v) for v in (x.shape[0], x.shape[2], x.shape[3], o.shape[2],
                                              o.shape[3]))
                       for x, o in zip(xs, offsets)]  # N, H, W, Ho, Wo
        self.couts = list(couts)
        rows = [N * H * W for N, H, W, _, _ in self.shapes]
        self.row0 = [sum(rows[:i]) for i in range(len(rows))]
        self.zero_row = sum(rows)
        pos = [N * Ho * Wo for N, _, _, Ho, Wo in self.shapes]
        self.pos0 = [sum(pos[:i]) for i in range(len(pos))] + [sum(pos)]
        self.P = self.pos0[-1]
        self.step = max(16, CHUNK_ELEMENTS // (self.K * self.C))
        # per position: first row of its image in the flat input, and its map's size (an int
        # where all inputs have the same)
        self.row_base = torch.cat([
            r0 + torch.arange(N, device=dev).repeat_interleave(Ho * Wo) * (H * W)
            for (N, H, W, Ho, Wo), r0 in zip(self.shapes, self.row0)])
        if len({(H, W) for _, H, W, _, _ in self.shapes}) == 1:
            self.H, self.W = self.shapes[0][1:3]
        else:
            def repeated(j):  # shape field j (1: H, 2: W) repeated over N * Ho * Wo
                return torch.cat([torch.full((sh[0] * sh[3] * sh[4], 1), sh[j], device=dev)
                                  for sh in self.shapes])
            self.H, self.W = repeated(1), repeated(2)
        # (cout, slice of positions, range of inputs) per group
        self.groups = []
        i = 0
        while i < len(self.couts):
            j = i
            while j + 1 < len(self.couts) and self.couts[j + 1] == self.couts[i]:
                j += 1
            self.groups.append((self.couts[i], slice(self.pos0[i], self.pos0[j + 1]),
                                range(i, j + 1)))
            i = j + 1

    def flat(self, xs) -> Tensor:
        """(sum of N*H*W + 1, C): every input's rows, channels last, one zero row at the end."""
        flat = _stacked_rows(xs, extra_rows=1)
        flat[-1].zero_()
        return flat

    def taps(self, offsets) -> Tuple[Tensor, Tensor]:
        pys, pxs = [], []
        for (_, H, W, _, _), off in zip(self.shapes, offsets):
            py, px = _taps(off, H, W, self.kh, self.kw, self.stride, self.pad, self.dil)
            pys.append(py)
            pxs.append(px)
        if len(pys) == 1:
            return pys[0], pxs[0]
        return torch.cat(pys), torch.cat(pxs)

    def per_position(self, ts, inputs: Optional[range] = None) -> Tensor:
        """Maps (N, c, Ho, Wo) of ``inputs`` (default all) -> (their positions, c)."""
        inputs = inputs if inputs is not None else range(len(self.shapes))
        return _stacked_rows([ts[i] for i in inputs])

    def blocks(self, group: slice, py: Tensor, px: Tensor, grads: bool = False):
        """(slice of positions, their _Bilinear tables), TABLE_ROWS positions at a time."""
        rows = max(self.step, TABLE_ROWS // self.step * self.step)
        for start in range(group.start, group.stop, rows):
            sl = slice(start, min(start + rows, group.stop))
            H = self.H if isinstance(self.H, int) else self.H[sl]
            W = self.W if isinstance(self.W, int) else self.W[sl]
            yield sl, _Bilinear(py[sl], px[sl], self.row_base[sl], H, W, self.zero_row, grads)

    def chunks(self, sl: slice):
        """Chunks of a block, as slices relative to it."""
        n = sl.stop - sl.start
        for start in range(0, n, self.step):
            yield slice(start, min(start + self.step, n))

    def output(self, out: Tensor, group: slice, i: int) -> Tensor:
        """Input i's rows of its group's (P_g, cout) output -> (N, cout, Ho, Wo), channels last."""
        N, _, _, Ho, Wo = self.shapes[i]
        rows = out[self.pos0[i] - group.start:self.pos0[i + 1] - group.start]
        return rows.view(N, Ho, Wo, out.shape[1]).permute(0, 3, 1, 2)


def _stacked_rows(ts, extra_rows: int = 0) -> Tensor:
    """Maps (N_i, c, H_i, W_i) -> (sum of N_i*H_i*W_i + extra_rows, c): each map's pixels as rows,
    channels last, one map after the other (the extra rows are left uninitialised)."""
    c = ts[0].shape[1]
    if len(ts) == 1 and not extra_rows:  # a view where the map is channels-last already
        return ts[0].permute(0, 2, 3, 1).reshape(-1, c)
    out = ts[0].new_empty(sum(t.numel() // c for t in ts) + extra_rows, c)
    r0 = 0
    for t in ts:
        N, _, H, W = t.shape
        out[r0:r0 + N * H * W].view(N, H, W, c).copy_(t.permute(0, 2, 3, 1))
        r0 += N * H * W
    return out


class _TorchLoops:
    """Sampling of a chunk with torch ops: corners gathered into a (rows, 4, K, C) buffer."""

    def __init__(self, flat: Tensor, step: int, K: int):
        self.flat = flat
        self.buf = flat.new_empty(step * 4 * K, flat.shape[1])
        self.cols = flat.new_empty(step, flat.shape[1], K)

    def _gather(self, index: Tensor) -> Tensor:
        out = self.buf[:index.numel()]
        torch.index_select(self.flat, 0, index.reshape(-1), out=out)
        return out.view(*index.shape, self.flat.shape[1])

    def columns(self, index: Tensor, wm: Tensor) -> Tensor:
        """Masked bilinear samples (rows, C, K) for corner indices and weights (rows, 4, K)."""
        corners, wm = self._gather(index), wm.unsqueeze(-1)
        cols = corners[:, 0] * wm[:, 0]
        for q in range(1, 4):  # in place: no second (rows, 4, K, C) temporary
            cols.addcmul_(corners[:, q], wm[:, q])
        return self.cols[:index.shape[0]].copy_(cols.transpose(1, 2))

    def backward(self, index: Tensor, wm: Tensor, gcols: Tensor, grad_flat: Optional[Tensor],
                 dots: Optional[Tensor], need_cols: bool) -> Optional[Tensor]:
        """grad_flat[index] += wm * gcols; dots (rows, 4, K) = corner values . gcols (rows, C, K);
        returns the columns (rows, C, K) if ``need_cols`` (for the weight's gradient)."""
        cols = self.columns(index, wm) if need_cols else None
        gcols = gcols.transpose(1, 2).contiguous().unsqueeze(1)
        if dots is not None:
            torch.sum(self._gather(index).mul_(gcols), -1, out=dots)
        if grad_flat is not None:
            contrib = self.buf[:index.numel()].view(*index.shape, -1)
            torch.mul(gcols, wm.unsqueeze(-1), out=contrib)
            grad_flat.index_add_(0, index.reshape(-1), contrib.view(-1, contrib.shape[-1]))
        return cols


class _CppLoops:
    """The same with the fused C++ loops (cpu_ext): each corner row read once, no big buffers."""

    def __init__(self, ext, flat: Tensor, step: int, K: int):
        self.ext, self.flat = ext, flat
        self.buf = flat.new_empty(step, flat.shape[1], K)

    def columns(self, index: Tensor, wm: Tensor) -> Tensor:
        cols = self.buf[:index.shape[0]]
        self.ext.blend(self.flat, index, wm, cols)
        return cols

    def backward(self, index, wm, gcols, grad_flat, dots, need_cols):
        cols = self.buf[:index.shape[0]] if need_cols else None
        self.ext.backward(self.flat, index, wm, gcols, grad_flat, dots, cols)
        return cols


def _loops(flat: Tensor, step: int, K: int):
    if USE_CPU_EXT and flat.device.type == 'cpu' and flat.dtype in (torch.float32, torch.float64):
        ext = cpu_ext.load()
        if ext is not None:
            return _CppLoops(ext, flat, step, K)
    return _TorchLoops(flat, step, K)


class ModulatedDeformConv2dFunction(Function):
    """Autograd function over one or more inputs; see module docstring.

    ``apply(weight, bias, conf, x_0, offset_0, mask_0, x_1, ...)`` with conf = (stride, padding,
    dilation, couts) returns one (N, couts[i], Ho, Wo) output per input, in channels-last memory.
    """

    @staticmethod
    def forward(ctx, weight, bias, conf, *tensors):
        stride, padding, dilation, couts = conf
        xs, offsets, masks = tensors[0::3], tensors[1::3], tensors[2::3]
        seg = _Segments(xs, offsets, weight, couts, stride, padding, dilation)
        K, C = seg.K, seg.C
        flat = seg.flat(xs)
        py, px = seg.taps(offsets)
        m = seg.per_position(masks).view(seg.P, 1, K)
        w2d = weight.reshape(seg.Cout, C * K)  # a view: columns are channel-major
        loops = _loops(flat, seg.step, K)
        outs = []
        for cout, group, inputs in seg.groups:
            out = flat.new_empty(group.stop - group.start, cout)
            w, b = w2d[:cout], None if bias is None else bias[:cout]
            for blk, bil in seg.blocks(group, py, px):
                wm = bil.weight * m[blk]
                dst = out[blk.start - group.start:blk.stop - group.start]
                for sl in seg.chunks(blk):
                    cols = loops.columns(bil.index[sl], wm[sl])
                    dst[sl] = _linear(cols.view(sl.stop - sl.start, C * K), w, b)
            outs += [seg.output(out, group, i) for i in inputs]
        ctx.save_for_backward(weight, *tensors)
        ctx.has_bias = bias is not None
        ctx.conf = conf
        return tuple(outs)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grad_outs):
        weight, *tensors = ctx.saved_tensors
        stride, padding, dilation, couts = ctx.conf
        xs, offsets, masks = tensors[0::3], tensors[1::3], tensors[2::3]
        seg = _Segments(xs, offsets, weight, couts, stride, padding, dilation)
        C, K, P = seg.C, seg.K, seg.P
        needs = ctx.needs_input_grad
        need_w, need_b = needs[0], needs[1] and ctx.has_bias
        need_x, need_off, need_mask = (any(needs[3 + j::3]) for j in range(3))
        flat = seg.flat(xs)
        py, px = seg.taps(offsets)
        m = seg.per_position(masks).view(P, 1, K)
        w2d = weight.reshape(seg.Cout, C * K)
        grads = [g if g is not None else x.new_zeros(x.shape[0], cout, *o.shape[2:])
                 for g, x, o, cout in zip(grad_outs, xs, offsets, couts)]

        grad_flat = torch.zeros_like(flat) if need_x else None
        grad_w2d = torch.zeros_like(w2d) if need_w and len(seg.groups) > 1 else None
        grad_b = weight.new_zeros(seg.Cout) if need_b else None
        grad_py = py.new_empty(P, K) if need_off else None
        grad_px = px.new_empty(P, K) if need_off else None
        grad_m = m.new_empty(P, K) if need_mask else None
        loops = _loops(flat, seg.step, K)
        for cout, group, inputs in seg.groups:
            go = seg.per_position(grads, inputs)
            wg, gw_group = w2d[:cout], None
            for blk, bil in seg.blocks(group, py, px, grads=need_off):
                wm = bil.weight * m[blk]
                gob = go[blk.start - group.start:blk.stop - group.start]
                dots = bil.weight.new_empty(bil.weight.shape) if need_off or need_mask else None
                for sl in seg.chunks(blk):
                    rows = sl.stop - sl.start
                    gcols = _linear(gob[sl], wg.t()).view(rows, C, K)  # d loss / d columns
                    cols = loops.backward(bil.index[sl], wm[sl], gcols, grad_flat,
                                          None if dots is None else dots[sl], need_w)
                    if need_w:  # the first chunk's product starts the sum: no zero-filled buffer
                        gw = _linear(gob[sl].t(), cols.view(rows, C * K).t())
                        gw_group = gw if gw_group is None else gw_group.add_(gw)
                if need_mask:
                    grad_m[blk] = (bil.weight * dots).sum(1)
                if need_off:
                    grad_py[blk] = m[blk, 0] * (bil.dweight_y * dots).sum(1)
                    grad_px[blk] = m[blk, 0] * (bil.dweight_x * dots).sum(1)
            if gw_group is not None:
                if grad_w2d is None:  # one group using every output channel
                    grad_w2d = gw_group
                else:
                    grad_w2d[:cout].add_(gw_group)
            if need_b:
                grad_b[:cout].add_(go.sum(0))
        del flat

        grad_weight = None
        if need_w:
            grad_weight = (grad_w2d.view(seg.Cout, C, seg.kh, seg.kw) if grad_w2d is not None
                           else torch.zeros_like(weight))  # no positions
        out = []
        for i, (N, H, W, Ho, Wo) in enumerate(seg.shapes):
            r0, p0, p1 = seg.row0[i], seg.pos0[i], seg.pos0[i + 1]
            gx = go_off = gm = None
            if need_x and needs[3 + 3 * i]:  # a channels-last view: no copy of x's size
                gx = grad_flat[r0:r0 + N * H * W].view(N, H, W, C).permute(0, 3, 1, 2)
            if need_off and needs[4 + 3 * i]:
                go_off = torch.stack([grad_py[p0:p1], grad_px[p0:p1]], dim=-1)
                go_off = go_off.view(N, Ho, Wo, 2 * K).permute(0, 3, 1, 2).contiguous()
            if need_mask and needs[5 + 3 * i]:
                gm = grad_m[p0:p1].view(N, Ho, Wo, K).permute(0, 3, 1, 2).contiguous()
            out += [gx, go_off, gm]
        return (grad_weight, grad_b, None, *out)


def _pair(v) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _check(x: Tensor, offset: Tensor, mask: Tensor, weight: Tensor, stride, padding, dilation,
           what: str = ''):
    Ho = _out_size(x.shape[2], weight.shape[2], stride[0], padding[0], dilation[0])
    Wo = _out_size(x.shape[3], weight.shape[3], stride[1], padding[1], dilation[1])
    K = weight.shape[2] * weight.shape[3]
    if x.dim() != 4 or weight.shape[1] != x.shape[1]:
        raise ValueError(f'{what}weight expects {weight.shape[1]} input channels, got input of '
                         f'shape {tuple(x.shape)}')
    if offset.shape != (x.shape[0], 2 * K, Ho, Wo):
        raise ValueError(f'{what}offset must have shape {(x.shape[0], 2 * K, Ho, Wo)} for an '
                         f'input of {tuple(x.shape)}, got {tuple(offset.shape)}')
    if mask.shape != (x.shape[0], K, Ho, Wo):
        raise ValueError(f'{what}mask must have shape {(x.shape[0], K, Ho, Wo)}, '
                         f'got {tuple(mask.shape)}')


def modulated_deform_conv2d_levels(xs: Sequence[Tensor], offsets: Sequence[Tensor],
                                   masks: Sequence[Tensor], weight: Tensor,
                                   bias: Optional[Tensor] = None, stride=1, padding=0,
                                   dilation=1, out_channels: Optional[Sequence[int]] = None
                                   ) -> List[Tensor]:
    """One modulated deformable conv applied to several inputs (pyramid levels) in one call.

    Equals ``[modulated_deform_conv2d(x, o, m, weight[:c], bias[:c], ...) for ...]`` but
    samples all inputs with one set of tables and runs one GEMM over all their positions, so
    small levels cost no more per position than large ones.

    Args:
        xs, offsets, masks: per input, as in ``modulated_deform_conv2d``; the inputs may differ
            in batch and size, not in channels.
        out_channels: per input, how many leading output channels of ``weight`` it needs
            (default: all). Inputs needing the same number should follow each other.
    Returns:
        one (N_i, out_channels[i], Ho_i, Wo_i) map per input, channels-last memory.
    """
    if not (len(xs) == len(offsets) == len(masks)) or not xs:
        raise ValueError(f'need as many inputs, offsets and masks (at least one), got '
                         f'{len(xs)}, {len(offsets)} and {len(masks)}')
    cout = int(weight.shape[0])  # an int, not a traced size: conf must be constant to jit.trace
    couts = tuple(int(c) for c in out_channels) if out_channels is not None else (cout,) * len(xs)
    if len(couts) != len(xs) or any(not 0 < c <= cout for c in couts):
        raise ValueError(f'out_channels must give 1..{cout} channels for each of the {len(xs)} '
                         f'inputs, got {couts}')
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    for i, (x, o, m) in enumerate(zip(xs, offsets, masks)):
        _check(x, o, m, weight, stride, padding, dilation, f'input {i}: ' if len(xs) > 1 else '')
    dtype = functools.reduce(torch.promote_types, [t.dtype for t in (*xs, weight)])
    tensors = [t.to(dtype) for trio in zip(xs, offsets, masks) for t in trio]
    if bias is not None:
        bias = bias.to(dtype)
    return list(ModulatedDeformConv2dFunction.apply(
        weight.to(dtype), bias, (stride, padding, dilation, couts), *tensors))


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
    return modulated_deform_conv2d_levels([x], [offset], [mask], weight, bias, stride, padding,
                                          dilation)[0]
