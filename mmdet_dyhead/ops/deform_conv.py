"""Modulated deformable convolution (DCNv2) as gather + matrix product.

Computes exactly what mmcv's ``modulated_deform_conv2d`` computes (same sampling
positions, same bilinear rule, same zero padding, same sub-gradients at integer
positions), but as

    columns (P, C*K)  =  mask * bilinear-gather(x, positions)      # memory bound
    output  (P, C_out) = columns @ weight.view(C_out, C*K).T        # one GEMM

over chunks of P output positions. mmcv's CPU kernel is a scalar loop; this
path is vectorised and puts almost all FLOPs in a GEMM (oneDNN's on CPU). On a CPU with the C++
extension (cpu_ext, built on first use) each direction is one C++ call: per chunk, loops that work
each tap's corners out from its position (read from the offsets and masks where they lie, the
inputs channels-last) and write tap-major columns (P, K, C), then oneDNN GEMMs against the
(C_out, kh, kw, C) weight matrix that write the output rows and add the weight gradient in place.
Without a compiler the same runs in torch ops over corner tables, with mmcv's channel-major
columns (P, C, K), against the weight as it is. Backward recomputes the columns chunk by chunk
instead of storing them, so peak memory stays at one chunk's columns (like mmcv's per-image
column buffer).

Precision: fp32 and fp64 compute in their own type. bf16 data (under ``torch.autocast('cpu')``
or a bf16 model) runs the sampling loops and the GEMMs on bf16 rows and columns, while positions,
bilinear weights, masks and every running sum (the GEMMs' own, the input, weight, offset and mask
gradients) stay fp32; an fp32 weight is cast per call and keeps an fp32 gradient.

Limits: ``groups == 1`` and ``deform_groups == 1`` (what DyHead uses); the
caller falls back to mmcv for anything else.
"""
import contextlib
import functools
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

from . import cpu_ext

# Column elements per chunk (positions x channels x taps): 256 x 256 x 9 floats = 2.3 MiB of
# columns stay in cache between sampling and GEMM; 128 to 512 positions ran within 5% of each
# other (256 best) with the C++ loops on 2 cores. Fewer channels get more positions per chunk,
# so small convs are not dominated by per-op overhead.
CHUNK_ELEMENTS = 256 * 9 * 256
# Positions whose sampling tables (corner indices and weights) are built in one go: enough to
# amortise the per-op overhead over many chunks, bounded so the tables stay small next to x.
TABLE_ROWS = 4096
# The C++ conv (cpu_ext) when it builds; False forces the pure-torch loops.
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


def backward_gemm(library: Optional[str] = None) -> Optional[str]:
    """The library of the C++ conv's fp32 backward GEMMs: ``'onednn'``, or ``'mkl'`` (MKL's
    sgemm, torch.mm's). ``library`` sets it first: ``'auto'`` (the default) takes MKL on Intel
    CPUs, where it runs these products faster, and oneDNN elsewhere (MKL is slow on AMD CPUs);
    ``$MMDET_DYHEAD_BACKWARD_GEMM`` sets it when the C++ code loads. None where the C++ code is
    not built (the torch loops' products are torch's own)."""
    if library is not None and library not in cpu_ext.BACKWARD_GEMMS:
        raise ValueError(f'backward GEMM library must be one of {cpu_ext.BACKWARD_GEMMS}, '
                         f'got {library!r}')
    ext = cpu_ext.load() if USE_CPU_EXT else None
    if ext is None:
        return None
    return ext.backward_gemm(library or '')


def _linear(a: Tensor, w: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """a (M, K) @ w (N, K).T (+ bias): oneDNN for fp32 and bf16 on CPU, else torch.mm. Strided
    views (transposes) are read in place by both."""
    if (a.dtype in (torch.float32, torch.bfloat16) and a.device.type == 'cpu'
            and w.dtype == a.dtype and _onednn_linear_ok()):
        return torch.ops.mkldnn._linear_pointwise(a, w, bias, 'none', [], '')
    return torch.addmm(bias, a, w.t()) if bias is not None else torch.mm(a, w.t())


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The arithmetic's dtype for data of ``dtype``: positions, weights and sums of bf16 data are fp32."""
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


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
        self.step = _step(self.C, self.K, x0.dtype)
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
        self.groups = [(self.couts[run.start], slice(self.pos0[run.start], self.pos0[run.stop]),
                        run) for run in _runs(self.couts)]

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
            chunk = slice(start, min(start + rows, group.stop))
            H = self.H if isinstance(self.H, int) else self.H[chunk]
            W = self.W if isinstance(self.W, int) else self.W[chunk]
            yield chunk, _Bilinear(py[chunk], px[chunk], self.row_base[chunk], H, W, self.zero_row, grads)

    def chunks(self, chunk: slice):
        """Chunks of a block, as slices relative to it."""
        n = chunk.stop - chunk.start
        for start in range(0, n, self.step):
            yield slice(start, min(start + self.step, n))


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

    def columns(self, index: Tensor, masked_weight: Tensor) -> Tensor:
        """Masked bilinear samples (rows, C, K) for corner indices and weights (rows, 4, K);
        the blend runs in the weights' dtype (fp32 for bf16 data), stored in the data's."""
        corners, masked_weight = self._gather(index), masked_weight.unsqueeze(-1)
        cols = corners[:, 0] * masked_weight[:, 0]
        for q in range(1, 4):  # in place: no second (rows, 4, K, C) temporary
            cols.addcmul_(corners[:, q], masked_weight[:, q])
        return self.cols[:index.shape[0]].copy_(cols.transpose(1, 2))

    def backward(self, index: Tensor, masked_weight: Tensor, gcols: Tensor, grad_flat: Optional[Tensor],
                 dots: Optional[Tensor], need_cols: bool) -> Optional[Tensor]:
        """grad_flat[index] += masked_weight * gcols; dots (rows, 4, K) = corner values . gcols (rows, C, K);
        returns the columns (rows, C, K) if ``need_cols`` (for the weight's gradient)."""
        cols = self.columns(index, masked_weight) if need_cols else None
        gcols = gcols.transpose(1, 2).contiguous().unsqueeze(1)
        mixed = masked_weight.dtype != self.flat.dtype  # bf16 data: products and sums in fp32
        if dots is not None:
            corners = self._gather(index)
            if mixed:
                torch.sum(corners.to(dots.dtype).mul_(gcols), -1, out=dots)
            else:
                torch.sum(corners.mul_(gcols), -1, out=dots)
        if grad_flat is not None:
            if mixed:
                contrib = gcols * masked_weight.unsqueeze(-1)
            else:
                contrib = self.buf[:index.numel()].view(*index.shape, -1)
                torch.mul(gcols, masked_weight.unsqueeze(-1), out=contrib)
            grad_flat.index_add_(0, index.reshape(-1), contrib.view(-1, contrib.shape[-1]))
        return cols


def _kc_weight(weight: Tensor, dtype: torch.dtype) -> Tensor:
    """(C_out, C, kh, kw) -> (C_out, kh*kw*C): the GEMM matrix of tap-major columns. A view for a
    weight stored tap-major (``models.deform_conv_norm.tap_major``), else one copy per call
    (instead of a transpose of every chunk's columns)."""
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1).to(dtype)


def _step(C: int, K: int, dtype: torch.dtype) -> int:
    """Positions per chunk: CHUNK_ELEMENTS column elements. bf16 columns take half the bytes:
    twice the positions for the same cache footprint, and twice the inner size of the weight
    gradient's products."""
    per_element = max(1, 4 // dtype.itemsize)
    return max(16, CHUNK_ELEMENTS * per_element // (K * C))


def _cpp(x: Tensor):
    """The C++ conv (cpu_ext: sampling loops and GEMMs in one call per direction) for x's
    device and dtype, or None: the torch loops run instead."""
    if (USE_CPU_EXT and x.device.type == 'cpu'
            and x.dtype in (torch.float32, torch.float64, torch.bfloat16)):
        return cpu_ext.load()
    return None


def _cpp_args(xs, weight: Tensor, stride, padding, dilation, out_channels):
    """What cpu_ext's forward_levels / backward_levels take besides data: channels-last inputs,
    the tap-major weight matrix, the geometry, the groups (end, cout) and the chunk size."""
    runs = _runs(out_channels)
    C, kh, kw = int(xs[0].shape[1]), int(weight.shape[2]), int(weight.shape[3])
    return ([x.contiguous(memory_format=torch.channels_last) for x in xs],
            _kc_weight(weight, xs[0].dtype), [kh, kw, *stride, *padding, *dilation],
            [r.stop for r in runs], [int(out_channels[r.start]) for r in runs],
            _step(C, kh * kw, xs[0].dtype))


# The registered ops: ``mmdet_dyhead::deform_conv2d_levels`` and its backward. They return one
# (P_g, cout_g) tensor of output rows per group of inputs (``_Segments.groups``), never views of
# each other or of an input (a custom op may not return aliases); the functional forms below cut
# them into per-input (N, cout, Ho, Wo) views. Registered ops, unlike an autograd.Function, are
# seen by name by torch.export, torch.compile (through their fake implementations), the ONNX
# exporters and jit tracing (the FLOP counter).

def _conf(stride, padding, dilation):
    return tuple(stride), tuple(padding), tuple(dilation)


def _levels_forward(xs: List[Tensor], offsets: List[Tensor], masks: List[Tensor],
                   weight: Tensor, bias: Optional[Tensor], stride: List[int],
                   padding: List[int], dilation: List[int],
                   out_channels: List[int]) -> List[Tensor]:
    """Output rows (P_g, cout_g) of each group of inputs; see ``modulated_deform_conv2d_levels``."""
    stride, padding, dilation = _conf(stride, padding, dilation)
    ext = _cpp(xs[0])
    if ext is not None:  # sampling and GEMMs in C++, straight from the positions
        xs_cl, wkc, conf, ends, couts, step = _cpp_args(xs, weight, stride, padding, dilation,
                                                        out_channels)
        return ext.forward_levels(xs_cl, offsets, masks, wkc, bias, conf, ends, couts, step)
    segments = _Segments(xs, offsets, weight, out_channels, stride, padding, dilation)
    K, C = segments.K, segments.C
    flat = segments.flat(xs)
    py, px = segments.taps(offsets)
    m = segments.per_position(masks).view(segments.P, 1, K)
    bias = None if bias is None else bias.to(flat.dtype)
    loops = _TorchLoops(flat, segments.step, K)
    outs = []
    # the torch loops: corner tables, channel-major columns, so the weight is the GEMM's matrix
    # as it is (a view; a copy only to cast it for bf16 data)
    w2d = weight.reshape(segments.Cout, C * K).to(flat.dtype)
    for cout, group, _ in segments.groups:
        out = flat.new_empty(group.stop - group.start, cout)
        w, b = w2d[:cout], None if bias is None else bias[:cout]
        for blk, bilinear in segments.blocks(group, py, px):
            masked_weight = bilinear.weight * m[blk]
            dst = out[blk.start - group.start:blk.stop - group.start]
            for chunk in segments.chunks(blk):
                cols = loops.columns(bilinear.index[chunk], masked_weight[chunk])
                dst[chunk] = _linear(cols.view(chunk.stop - chunk.start, C * K), w, b)
        outs.append(out)
    return outs


deform_conv2d_levels_op = torch.library.custom_op(
    'mmdet_dyhead::deform_conv2d_levels', mutates_args=())(_levels_forward)


def _runs(couts) -> List[range]:
    """The groups of inputs: runs of consecutive inputs that use the same number of channels."""
    runs, start = [], 0
    for i in range(1, len(couts) + 1):
        if i == len(couts) or couts[i] != couts[start]:
            runs.append(range(start, i))
            start = i
    return runs


def _positions(x: Tensor, offset: Tensor) -> int:
    """Output positions of one input: N * Ho * Wo."""
    return x.shape[0] * offset.shape[2] * offset.shape[3]


def _group_rows(xs, offsets, out_channels) -> List[Tuple[int, int]]:
    """(positions, cout) of each group, from the shapes alone (for the fake implementations)."""
    return [(sum(_positions(xs[i], offsets[i]) for i in run), out_channels[run.start])
            for run in _runs(out_channels)]


@deform_conv2d_levels_op.register_fake
def _(xs, offsets, masks, weight, bias, stride, padding, dilation, out_channels):
    return [xs[0].new_empty(p, cout) for p, cout in _group_rows(xs, offsets, out_channels)]


def _levels_backward(
        grads: List[Tensor], xs: List[Tensor], offsets: List[Tensor], masks: List[Tensor],
        weight: Tensor, stride: List[int], padding: List[int], dilation: List[int],
        out_channels: List[int], needs: List[bool]) -> List[Tensor]:
    """Gradients [weight, bias, x_0 .. x_n-1, offset_0 .. offset_n-1, mask_0 .. mask_n-1] (an
    empty tensor for each that ``needs`` = [weight, bias, x, offset, mask] does not ask for):

        weight (C_out, C_in, kh, kw) in its dtype, contiguous (a parameter's own layout, which
        autograd keeps as its .grad without a copy, whatever the layout of the weight passed in);
        bias (C_out,); per input, x (N, C_in, H, W),
        offset (N, 2K, Ho, Wo) and mask (N, K, Ho, Wo), channels-last; all but the weight in the
        arithmetic's type (fp32 for bf16 data).
    """
    stride, padding, dilation = _conf(stride, padding, dilation)
    need_w, need_b, need_x, need_off, need_mask = needs
    acc = acc_dtype(xs[0].dtype)  # bf16 data: every gradient sums in fp32
    ext = _cpp(xs[0])
    if ext is not None:
        xs_cl, wkc, conf, ends, couts, step = _cpp_args(xs, weight, stride, padding, dilation,
                                                        out_channels)
        grad_wmat, *per_input = ext.backward_levels(grads, xs_cl, offsets, masks, wkc, conf,
                                                    ends, couts, step,
                                                    [need_w, need_x, need_off, need_mask])
        grad_weight = grad_wmat.view(weight.shape).to(weight.dtype) if need_w else grad_wmat
    else:
        grad_weight, per_input = _torch_backward(grads, xs, offsets, masks, weight, stride,
                                                 padding, dilation, out_channels, needs)
    grad_b = weight.new_zeros(weight.shape[0], dtype=acc) if need_b else weight.new_empty(0)
    if need_b:
        for run, go in zip(_runs(out_channels), grads):
            grad_b[:out_channels[run.start]].add_(go.sum(0, dtype=acc))
    return [grad_weight, grad_b, *per_input]


deform_conv2d_levels_backward_op = torch.library.custom_op(
    'mmdet_dyhead::deform_conv2d_levels_backward', mutates_args=())(_levels_backward)


def _torch_backward(grads, xs, offsets, masks, weight, stride, padding, dilation, out_channels,
                    needs):
    """The backward op's gradients of the weight and of each input, offset and mask, with the
    torch loops (corner tables, channel-major columns)."""
    need_w, _, need_x, need_off, need_mask = needs
    segments = _Segments(xs, offsets, weight, out_channels, stride, padding, dilation)
    C, K, P = segments.C, segments.K, segments.P
    flat = segments.flat(xs)
    acc = acc_dtype(flat.dtype)
    py, px = segments.taps(offsets)
    m = segments.per_position(masks).view(P, 1, K)
    loops = _TorchLoops(flat, segments.step, K)
    wmat = weight.reshape(segments.Cout, C * K).to(flat.dtype)
    grad_flat = torch.zeros_like(flat, dtype=acc) if need_x else None
    grad_wmat = wmat.new_zeros(wmat.shape, dtype=acc) if need_w else None
    grad_py = py.new_empty(P, K) if need_off else None
    grad_px = px.new_empty(P, K) if need_off else None
    grad_m = m.new_empty(P, K) if need_mask else None
    for (cout, group, _), go in zip(segments.groups, grads):
        wg = wmat[:cout]
        for blk, bilinear in segments.blocks(group, py, px, grads=need_off):
            masked_weight = bilinear.weight * m[blk]
            grad_out_block = go[blk.start - group.start:blk.stop - group.start]
            dots = (bilinear.weight.new_empty(bilinear.weight.shape)
                    if need_off or need_mask else None)
            for chunk in segments.chunks(blk):
                n = chunk.stop - chunk.start
                gcols = _linear(grad_out_block[chunk], wg.t()).view(n, C, K)
                cols = loops.backward(bilinear.index[chunk], masked_weight[chunk], gcols,
                                      grad_flat, None if dots is None else dots[chunk], need_w)
                if need_w:
                    grad_wmat[:cout].add_(_linear(grad_out_block[chunk].t(),
                                                  cols.view(n, C * K).t()))
            if need_mask:
                grad_m[blk] = (bilinear.weight * dots).sum(1)
            if need_off:
                grad_py[blk] = m[blk, 0] * (bilinear.dweight_y * dots).sum(1)
                grad_px[blk] = m[blk, 0] * (bilinear.dweight_x * dots).sum(1)
    grad_weight = (grad_wmat.view(weight.shape).to(weight.dtype)
                   if need_w else flat.new_empty(0, dtype=acc))
    # per input, as the C++ conv gives them: channels-last maps, each its own tensor (a custom
    # op's outputs may not alias each other)
    gxs, goffs, gmasks = [], [], []
    cl = torch.channels_last
    for (N, H, W, Ho, Wo), r0, p0, p1 in zip(segments.shapes, segments.row0, segments.pos0,
                                             segments.pos0[1:]):
        gxs.append(grad_flat[r0:r0 + N * H * W].view(N, H, W, C).permute(0, 3, 1, 2)
                   .clone(memory_format=cl) if need_x else flat.new_empty(0, dtype=acc))
        goffs.append(torch.stack([grad_py[p0:p1], grad_px[p0:p1]], dim=-1)
                     .view(N, Ho, Wo, 2 * K).permute(0, 3, 1, 2) if need_off
                     else flat.new_empty(0, dtype=acc))
        gmasks.append(grad_m[p0:p1].view(N, Ho, Wo, K).permute(0, 3, 1, 2)
                      .clone(memory_format=cl) if need_mask else flat.new_empty(0, dtype=acc))
    return grad_weight, gxs + goffs + gmasks


@deform_conv2d_levels_backward_op.register_fake
def _(grads, xs, offsets, masks, weight, stride, padding, dilation, out_channels, needs):
    need_w, need_b, need_x, need_off, need_mask = needs
    acc = acc_dtype(xs[0].dtype)
    K = weight.shape[2] * weight.shape[3]

    def maps(sizes, wanted):  # channels-last maps, or empty
        return [torch.empty(size, dtype=acc, device=xs[0].device,
                            memory_format=torch.channels_last) if wanted
                else xs[0].new_empty(0, dtype=acc) for size in sizes]
    return [torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)
            if need_w else xs[0].new_empty(0, dtype=acc),
            weight.new_empty(weight.shape[0], dtype=acc) if need_b else weight.new_empty(0),
            *maps([x.shape for x in xs], need_x),
            *maps([o.shape for o in offsets], need_off),
            *maps([(o.shape[0], K, *o.shape[2:]) for o in offsets], need_mask)]


def _setup_context(ctx, inputs, output):
    xs, offsets, masks, weight, bias, stride, padding, dilation, out_channels = inputs
    ctx.save_for_backward(weight, *xs, *offsets, *masks)
    ctx.conf = (list(stride), list(padding), list(dilation), list(out_channels))
    ctx.needs = [weight.requires_grad, bias is not None and bias.requires_grad,
                 *(any(t.requires_grad for t in ts) for ts in (xs, offsets, masks))]
    ctx.has_bias = bias is not None


def _backward(ctx, grads, backward_op=None):
    weight, *tensors = ctx.saved_tensors
    n = len(tensors) // 3
    xs, offsets, masks = tensors[:n], tensors[n:2 * n], tensors[2 * n:]
    stride, padding, dilation, couts = ctx.conf
    grads = [g.contiguous() for g in grads]  # one row per output position, as the ops read them
    grad_w, grad_b, *per_input = (backward_op or deform_conv2d_levels_backward_op)(
        grads, list(xs), list(offsets), list(masks), weight, stride, padding, dilation,
        couts, ctx.needs)
    need_w, need_b, need_x, need_off, need_mask = ctx.needs
    gxs = ([g.to(x.dtype) for g, x in zip(per_input[:n], xs)] if need_x  # bf16 x: fp32 sums
           else [None] * n)
    goffs = per_input[n:2 * n] if need_off else [None] * n
    gmasks = per_input[2 * n:] if need_mask else [None] * n
    return (gxs, goffs, gmasks, grad_w if need_w else None,
            grad_b.to(weight.dtype) if ctx.has_bias and need_b else None, None, None, None, None)


deform_conv2d_levels_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerLevels(torch.autograd.Function):
    """The registered op's forward and backward functions as a plain autograd Function, for
    eager calls (``_eager``): the same code and results without the op's dispatch, whose Python
    layers cost about 0.75 ms per call and its backward (1-2% of DynamicHead's training step at
    320x320 to 512x512). Profiles still see the ops' names."""

    @staticmethod
    def forward(ctx, n, *args):
        inputs = (list(args[:n]), list(args[n:2 * n]), list(args[2 * n:3 * n]), *args[3 * n:])
        with _named('mmdet_dyhead::deform_conv2d_levels'):
            outs = _levels_forward(*inputs)
        _setup_context(ctx, inputs, outs)
        return tuple(outs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        with _named('mmdet_dyhead::deform_conv2d_levels_backward'):
            gxs, goffs, gmasks, *rest = _backward(ctx, grads, _levels_backward)
        return (None, *gxs, *goffs, *gmasks, *rest)


def _named(name: str):
    """A profiler range under the registered op's name while a profiler runs (tools'
    profiles sort time by it), else nothing."""
    if torch.autograd.profiler._is_profiler_enabled:
        return torch.profiler.record_function(name)
    return contextlib.nullcontext()


def _eager(tensors: Sequence[Tensor]) -> bool:
    """Whether the registered op may be bypassed: eager autograd on plain tensors, nothing that
    needs to see the op itself (torch.compile and export, jit tracing and scripting, ONNX
    export, dispatch modes such as fake tensors or FLOP counters, functorch transforms)."""
    return (not torch.compiler.is_compiling() and not torch.jit.is_tracing()
            and not torch.jit.is_scripting() and not torch.onnx.is_in_onnx_export()
            and _get_current_dispatch_mode() is None
            and torch._C._functorch.peek_interpreter_stack() is None
            and all(type(t) in (Tensor, torch.nn.Parameter) for t in tensors))


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


def _cpu_bf16_autocast(x: Tensor) -> bool:
    return (x.device.type == 'cpu' and torch.is_autocast_enabled('cpu')
            and torch.get_autocast_dtype('cpu') == torch.bfloat16)


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
    return split_groups(*modulated_deform_conv2d_groups(xs, offsets, masks, weight, bias, stride,
                                                        padding, dilation, out_channels))


def split_groups(groups: Sequence[Tensor], where: Sequence['Where']) -> List[Tensor]:
    """Groups' output rows -> each input's (N, cout_g, Ho, Wo) channels-last map, in ``where``'s
    order (``modulated_deform_conv2d_groups``' two results)."""
    outs = []  # each input's rows of its group -> (N, cout, Ho, Wo), channels last
    for g, group in enumerate(groups):
        mine = [w for w in where if w[0] == g]
        # one split, not a slice per input: a slice's backward pads its gradient with zeros to
        # the whole group's size, and autograd then adds those up
        parts = group.split([n * h * w for _, _, (n, h, w) in mine]) if len(mine) > 1 \
            else [group]
        for rows, (_, _, (n, h, w)) in zip(parts, mine):
            outs.append(rows.view(n, h, w, group.shape[1]).permute(0, 3, 1, 2))
    return outs


# where an input's output rows lie: (group, first row, (N, Ho, Wo))
Where = Tuple[int, int, Tuple[int, int, int]]


def group_view(group: Tensor, first_row: int, shape,
               channels: Optional[Tuple[int, int]] = None) -> Tensor:
    """An input's (N, cout_g, Ho, Wo) channels-last view of its group's rows (P_g, cout_g), or
    (first, count) ``channels`` of them: one as_strided, not a narrow, view, permute and slice
    (each costs its dispatch; the folded passes take ~40 such views per block and step)."""
    n, h, w = shape
    c0, c = (0, group.shape[1]) if channels is None else channels
    row, col = group.stride()
    return group.as_strided((n, c, h, w), (h * w * row, col, w * row, row),
                            group.storage_offset() + first_row * row + c0 * col)


def modulated_deform_conv2d_groups(xs: Sequence[Tensor], offsets: Sequence[Tensor],
                                   masks: Sequence[Tensor], weight: Tensor,
                                   bias: Optional[Tensor] = None, stride=1, padding=0,
                                   dilation=1, out_channels: Optional[Sequence[int]] = None
                                   ) -> Tuple[List[Tensor], List[Where]]:
    """``modulated_deform_conv2d_levels`` before the per-input views: the output rows (P_g,
    cout_g) of each group of consecutive inputs with the same out_channels, and per input where
    its rows lie (group, first row, (N, Ho, Wo)); ``group_view`` makes its map. For a caller whose
    backward writes each group's gradient whole (no split of the rows to undo)."""
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
    if dtype == torch.float32 and _cpu_bf16_autocast(xs[0]):
        dtype = torch.bfloat16  # as autocast runs a conv: bf16 data, fp32 sums
    acc = acc_dtype(dtype)
    # positions and bilinear weights in fp32 at least: in bf16 a position past 256 would not
    # even keep its integer part
    xs = [x.to(dtype) for x in xs]
    offsets, masks = [o.to(acc) for o in offsets], [m.to(acc) for m in masks]
    if dtype != torch.bfloat16:  # a bf16 conv keeps an fp32 weight (and its fp32 gradient)
        weight, bias = weight.to(dtype), None if bias is None else bias.to(dtype)
    args = (list(stride), list(padding), list(dilation), list(couts))
    if _eager([*xs, *offsets, *masks, weight] + ([] if bias is None else [bias])):
        groups = _EagerLevels.apply(len(xs), *xs, *offsets, *masks, weight, bias, *args)
    else:
        groups = deform_conv2d_levels_op(list(xs), list(offsets), list(masks), weight, bias,
                                         *args)
    where = []
    for g, run in enumerate(_runs(couts)):
        row = 0
        for i in run:
            where.append((g, row, (int(xs[i].shape[0]), *map(int, offsets[i].shape[2:]))))
            row += _positions(xs[i], offsets[i])
    return list(groups), where


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
