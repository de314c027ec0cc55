// The CPU modulated deformable conv of mmdet_dyhead (deform_conv.py) as one C++ call per
// direction: sampling loops and GEMMs, chunk by chunk, over every input (pyramid level) of a conv.
//
// Forward, per chunk of output positions (each thread its own share of the rows): the loops
// write the chunk's columns (rows, K, C), tap-major, each tap's C channels one contiguous row
// (the weight is laid out (C_out, kh, kw, C) to match); one GEMM on the same thread writes the
// chunk's output rows in place. Backward, per chunk (each thread its own slice of the channels):
// a GEMM gives d loss / d the slice's columns; the loops add the input gradient, work out the
// slice's share of the offset and mask gradients and write the slice's columns again; a GEMM
// adds the chunk's share of the weight gradient into the slice's own accumulator.
// No (rows, 4, K) tables and no flat copy of the inputs: each tap's corners, weights and
// derivatives come from its position in the loop, read from the inputs, offsets and masks
// where they lie (inputs channels-last; offsets and masks in any layout).
//
// The loops read each corner row once and write nothing but the result. The GEMMs write into the
// output and add into the weight gradient without a copy or a second pass. The forward's are
// oneDNN's (the library torch's convs use; torch.mm's MKL runs at under half its rate on some
// AMD CPUs); the backward's are MKL's on Intel CPUs, where it runs their shapes faster (see
// backward_gemm below), and oneDNN's elsewhere.
//
// Types: T is the data's (inputs, columns), A the arithmetic's (positions, weights, input
// gradients, every blend and sum). fp32 and fp64 compute in their own type; bf16 data (CPU
// autocast) is widened to fp32 on load and rounded to nearest-even once on store, so only the
// stored columns and inputs carry bf16's rounding, never a running sum.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include "dtypes.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

namespace {

using mmdet_dyhead::load;
using mmdet_dyhead::store;

// Row operations of the loops below, n contiguous elements. The generic forms are plain loops the
// compiler vectorises; for bf16 data the narrowing and widening defeat its vectoriser (it picks
// 4- to 16-byte vectors), so on CPUs with AVX-512 BF16 they are written out 16 lanes at a time.
template <typename T, typename A>
inline void blend4_row(T* __restrict__ o, const T* __restrict__ a, const T* __restrict__ b,
                       const T* __restrict__ c, const T* __restrict__ d, A w0, A w1, A w2, A w3,
                       int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i)
    store(o, i, w0 * load(a, i) + w1 * load(b, i) + w2 * load(c, i) + w3 * load(d, i));
}

// One tap's backward over n channels in one pass, each corner row read once:
//   X: gf_q[i] += s_q * g[i]          (the input gradient; s_q = the corner's masked weight)
//   D: d_q = <c_q, g>                  (for the offset and mask gradients)
//   O: o[i] = sum_q s_q * c_q[i]       (the forward's column again, for the weight gradient)
// The gf_q are distinct rows (a corner outside adds into a scratch row of its own).
template <bool X, bool D, bool O, typename T, typename A>
inline void tap_backward_row(const T* __restrict__ c0, const T* __restrict__ c1,
                             const T* __restrict__ c2, const T* __restrict__ c3,
                             const T* __restrict__ g, A* __restrict__ gf0, A* __restrict__ gf1,
                             A* __restrict__ gf2, A* __restrict__ gf3, const A* s,
                             T* __restrict__ o, A* d, int64_t n) {
  const A s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3];
  A d0 = 0, d1 = 0, d2 = 0, d3 = 0;
#pragma omp simd reduction(+ : d0, d1, d2, d3)
  for (int64_t i = 0; i < n; ++i) {
    const A gi = load(g, i), a = load(c0, i), b = load(c1, i), c = load(c2, i),
            e = load(c3, i);
    if (X) {
      gf0[i] += s0 * gi;
      gf1[i] += s1 * gi;
      gf2[i] += s2 * gi;
      gf3[i] += s3 * gi;
    }
    if (D) {
      d0 += a * gi;
      d1 += b * gi;
      d2 += c * gi;
      d3 += e * gi;
    }
    if (O) store(o, i, s0 * a + s1 * b + s2 * c + s3 * e);
  }
  d[0] = d0, d[1] = d1, d[2] = d2, d[3] = d3;
}

#if defined(__AVX512BF16__)
inline __m512 load16(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline void store16(uint16_t* p, __m512 v) {
  const __m256i h = reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v));  // nearest even, NaN kept
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), h);
}

template <>
inline void blend4_row<uint16_t, float>(uint16_t* __restrict__ o, const uint16_t* __restrict__ a,
                                        const uint16_t* __restrict__ b,
                                        const uint16_t* __restrict__ c,
                                        const uint16_t* __restrict__ d, float w0, float w1,
                                        float w2, float w3, int64_t n) {
  const __m512 v0 = _mm512_set1_ps(w0), v1 = _mm512_set1_ps(w1), v2 = _mm512_set1_ps(w2),
               v3 = _mm512_set1_ps(w3);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 acc = _mm512_mul_ps(v0, load16(a + i));
    acc = _mm512_fmadd_ps(v1, load16(b + i), acc);
    acc = _mm512_fmadd_ps(v2, load16(c + i), acc);
    acc = _mm512_fmadd_ps(v3, load16(d + i), acc);
    store16(o + i, acc);
  }
  for (; i < n; ++i)
    store(o, i, w0 * load(a, i) + w1 * load(b, i) + w2 * load(c, i) + w3 * load(d, i));
}


template <bool X, bool D, bool O>
inline void tap_backward_row_bf16(const uint16_t* __restrict__ c0, const uint16_t* __restrict__ c1,
                                  const uint16_t* __restrict__ c2, const uint16_t* __restrict__ c3,
                                  const uint16_t* __restrict__ g, float* __restrict__ gf0,
                                  float* __restrict__ gf1, float* __restrict__ gf2,
                                  float* __restrict__ gf3, const float* s,
                                  uint16_t* __restrict__ o, float* d, int64_t n) {
  const __m512 s0 = _mm512_set1_ps(s[0]), s1 = _mm512_set1_ps(s[1]), s2 = _mm512_set1_ps(s[2]),
               s3 = _mm512_set1_ps(s[3]);
  __m512 d0 = _mm512_setzero_ps(), d1 = d0, d2 = d0, d3 = d0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 gi = load16(g + i), a = load16(c0 + i), b = load16(c1 + i),
                 c = load16(c2 + i), e = load16(c3 + i);
    if (X) {
      _mm512_storeu_ps(gf0 + i, _mm512_fmadd_ps(s0, gi, _mm512_loadu_ps(gf0 + i)));
      _mm512_storeu_ps(gf1 + i, _mm512_fmadd_ps(s1, gi, _mm512_loadu_ps(gf1 + i)));
      _mm512_storeu_ps(gf2 + i, _mm512_fmadd_ps(s2, gi, _mm512_loadu_ps(gf2 + i)));
      _mm512_storeu_ps(gf3 + i, _mm512_fmadd_ps(s3, gi, _mm512_loadu_ps(gf3 + i)));
    }
    if (D) {
      d0 = _mm512_fmadd_ps(a, gi, d0);
      d1 = _mm512_fmadd_ps(b, gi, d1);
      d2 = _mm512_fmadd_ps(c, gi, d2);
      d3 = _mm512_fmadd_ps(e, gi, d3);
    }
    if (O) {
      __m512 acc = _mm512_mul_ps(s0, a);
      acc = _mm512_fmadd_ps(s1, b, acc);
      acc = _mm512_fmadd_ps(s2, c, acc);
      acc = _mm512_fmadd_ps(s3, e, acc);
      store16(o + i, acc);
    }
  }
  float r[4] = {_mm512_reduce_add_ps(d0), _mm512_reduce_add_ps(d1), _mm512_reduce_add_ps(d2),
                _mm512_reduce_add_ps(d3)};
  if (i < n) {  // the tail, through the generic form
    float t[4];
    tap_backward_row<X, D, O, uint16_t, float>(c0 + i, c1 + i, c2 + i, c3 + i, g + i, gf0 + i,
                                               gf1 + i, gf2 + i, gf3 + i, s, o ? o + i : o, t,
                                               n - i);
    for (int q = 0; q < 4; ++q) r[q] += t[q];
  }
  for (int q = 0; q < 4; ++q) d[q] = r[q];
}

#endif


// One tap's bilinear sampling, worked out from its position as _Bilinear does in torch (the
// same operations in the same order, so the same bits): the 4 corner pixels (-1 where a corner
// is outside the map, whose row then reads as zeros), their unmasked weights and, with Grads,
// the weights' derivatives with respect to y and x. A tap outside (-1, H) x (-1, W), or at a
// NaN position, samples nothing and gets no gradient, as in mmcv (and no NaN is cast to an
// integer).
template <typename A, bool Grads>
struct Tap {
  int64_t pix[4];
  A w[4], dy[4], dx[4];

  Tap(A y, A x, int64_t H, int64_t W) {
    for (int q = 0; q < 4; ++q) {
      pix[q] = -1;
      w[q] = 0;
      if (Grads) dy[q] = dx[q] = 0;
    }
    if (!(y > -1 && y < H && x > -1 && x < W)) return;
    const A y0f = std::floor(y), x0f = std::floor(x);
    const A ly = y - y0f, lx = x - x0f, hy = 1 - ly, hx = 1 - lx;
    const int64_t y0 = static_cast<int64_t>(y0f), x0 = static_cast<int64_t>(x0f);
    const bool vy0 = y0 >= 0 && y0 < H, vy1 = y0 >= -1 && y0 < H - 1;
    const bool vx0 = x0 >= 0 && x0 < W, vx1 = x0 >= -1 && x0 < W - 1;
    const int64_t p00 = y0 * W + x0;
    if (vy0 && vx0) pix[0] = p00;
    if (vy0 && vx1) pix[1] = p00 + 1;
    if (vy1 && vx0) pix[2] = p00 + W;
    if (vy1 && vx1) pix[3] = p00 + W + 1;
    w[0] = hy * hx;
    w[1] = hy * lx;
    w[2] = ly * hx;
    w[3] = ly * lx;
    if (Grads) {
      dy[0] = -hx, dy[1] = -lx, dy[2] = hx, dy[3] = lx;
      dx[0] = -hy, dx[1] = hy, dx[2] = -ly, dx[3] = ly;
    }
  }
};

// The conv's geometry: channels C, taps K = kh * kw, stride, and per tap k its place in the window
// from kernel width kw, padding and dilation, ky[k] = (k / kw) * dh - ph and
// kx[k] = (k % kw) * dw - pw (worked out once: a division per tap of every row cost a measurable
// share of the loops).
constexpr int64_t kMaxTaps = 64;
struct Conf {
  int64_t C, K, sh, sw;
  int64_t ky[kMaxTaps], kx[kMaxTaps];

  Conf() = default;
  Conf(int64_t C_, int64_t K_, int64_t kw, int64_t sh_, int64_t sw_, int64_t ph, int64_t pw,
       int64_t dh, int64_t dw)
      : C(C_), K(K_), sh(sh_), sw(sw_) {
    for (int64_t k = 0; k < K && k < kMaxTaps; ++k) {
      ky[k] = (k / kw) * dh - ph;
      kx[k] = (k % kw) * dw - pw;
    }
  }
};

// One input of a group: its map, offsets and masks, where its positions lie in the group's
// rows, and (backward) where its gradients go. x and grad_x are (N, H, W, C); offsets
// (N, 2K, Ho, Wo) and masks (N, K, Ho, Wo) are read through their strides; grad_off
// (N, Ho, Wo, 2K) and grad_mask (N, Ho, Wo, K).
template <typename T, typename A>
struct Input {
  const T* x;
  int64_t H, W, Ho, Wo, first, end;  // [first, end): its rows in the group
  int64_t pixels;                     // N * H * W
  const A* off;
  int64_t os[4];
  const A* mask;
  int64_t ms[4];
  A* grad_x = nullptr;
  // per channel slice of the backward, a flag per input pixel: whether the slice has touched its
  // gradient row yet (zeroed at the first contribution: no zero fill of the whole map)
  uint8_t* seen = nullptr;
  A* grad_off = nullptr;
  A* grad_mask = nullptr;
};

// Where a row of a group lies in its input: image n, output pixel (ho, wo).
struct Position {
  int64_t n, ho, wo;
};

template <typename T, typename A>
inline Position locate(const Input<T, A>& in, int64_t r) {
  const int64_t q = r - in.first, plane = in.Ho * in.Wo, hw = q % plane;
  return {q / plane, hw / in.Wo, hw % in.Wo};
}

// tap k of row p's mask
template <typename T, typename A>
inline A tap_mask(const Input<T, A>& in, const Position& p, int64_t k) {
  return in.mask[p.n * in.ms[0] + k * in.ms[1] + p.ho * in.ms[2] + p.wo * in.ms[3]];
}

// tap k of row p: its position (y, x) in the input map and its mask, as _taps computes them
// ((base + offset) in the offsets' type, so floor() agrees with mmcv at integer positions)
template <typename T, typename A>
inline void tap_position(const Input<T, A>& in, const Conf& cf, const Position& p, int64_t k,
                         A& y, A& x, A& mk) {
  const A* o = in.off + p.n * in.os[0] + p.ho * in.os[2] + p.wo * in.os[3];
  y = static_cast<A>(p.ho * cf.sh + cf.ky[k]) + o[2 * k * in.os[1]];
  x = static_cast<A>(p.wo * cf.sw + cf.kx[k]) + o[(2 * k + 1) * in.os[1]];
  mk = tap_mask(in, p, k);
}

// the input whose rows hold row r, searched from l on (rows are visited in ascending order)
template <typename T, typename A>
inline size_t input_of(const std::vector<Input<T, A>>& ins, int64_t r, size_t l) {
  while (r >= ins[l].end) ++l;
  return l;
}

// Rows visited one after the other from `first`: each row's input (l) and position (p), the
// position stepped on from the last row's instead of divided out of the row index (locate: four
// divisions per row)
template <typename T, typename A>
struct RowCursor {
  const std::vector<Input<T, A>>& ins;
  int64_t r;
  size_t l;
  Position p;

  RowCursor(const std::vector<Input<T, A>>& ins_, int64_t first)
      : ins(ins_), r(first), l(input_of(ins_, first, 0)), p(locate(ins_[l], first)) {}
  const Input<T, A>& in() const { return ins[l]; }
  void next() {
    if (++r >= ins[l].end) {  // into the next input (none past the last row of the group)
      if (r < ins.back().end) {
        l = input_of(ins, r, l);
        p = locate(ins[l], r);
      }
    } else if (++p.wo == ins[l].Wo) {
      p.wo = 0;
      if (++p.ho == ins[l].Ho) p.ho = 0, ++p.n;
    }
  }
};

// Columns (r1 - r0, K, C) of rows [r0, r1) of a group, each tap's masked bilinear sample.
template <typename T, typename A>
void sample_chunk(const std::vector<Input<T, A>>& ins, const Conf& cf, const T* zeros,
                  int64_t r0, int64_t r1, T* __restrict__ cols) {
  RECORD_FUNCTION("mmdet_dyhead::sample_loops", std::vector<c10::IValue>());
  const int64_t C = cf.C, K = cf.K;
  at::parallel_for(r0, r1, 1, [&](int64_t begin, int64_t end) {
    for (RowCursor<T, A> cur(ins, begin); cur.r < end; cur.next()) {
      const int64_t r = cur.r;
      const Input<T, A>& in = cur.in();
      const Position& p = cur.p;
      const T* image = in.x + p.n * in.H * in.W * C;
      for (int64_t k = 0; k < K; ++k) {
        A y, x, mk;
        tap_position(in, cf, p, k, y, x, mk);
        const Tap<A, false> t(y, x, in.H, in.W);
        const T* c[4];
        for (int q = 0; q < 4; ++q) c[q] = t.pix[q] >= 0 ? image + t.pix[q] * C : zeros;
        // outside, the weights are 0 * mask: a NaN mask spreads as in mmcv
        blend4_row<T, A>(cols + ((r - r0) * K + k) * C, c[0], c[1], c[2], c[3], t.w[0] * mk,
                         t.w[1] * mk, t.w[2] * mk, t.w[3] * mk, C);
      }
    }
  });
}

// Rows [first, last) cut into count chunks of at most `step` rows, all within one row of each
// other in length: no short tail chunk (a GEMM of a few rows runs far below the rate of a full one)
struct Chunks {
  int64_t first, rows, count;  // no rows: no chunks
  Chunks(int64_t first_, int64_t last, int64_t step)
      : first(first_), rows(last - first_), count((rows + step - 1) / step) {}
  int64_t start(int64_t j) const { return first + rows * j / count; }
  int64_t longest() const { return count ? (rows + count - 1) / count : 0; }
};

// The backward's threads split the channels: this many slices of slice_width(C) channels (a
// multiple of 16, the AVX-512 lanes; the last slice may be shorter, or empty).
inline int64_t channel_slices(int64_t C) {
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), (C + 15) / 16));
}
inline int64_t slice_width(int64_t C) {
  const int64_t slices = channel_slices(C);
  return ((C + slices - 1) / slices + 15) / 16 * 16;
}
// slice s of slices of `width` channels out of C: its first channel and width (<= 0: empty)
struct ChannelSlice {
  int64_t c0, cw;
  ChannelSlice(int64_t C, int64_t width, int64_t s)
      : c0(s * width), cw(std::min(C, s * width + width) - s * width) {}
};

// tap_backward_row for the data's type (bf16 rows 16 lanes at a time where the CPU has AVX-512 BF16)
template <bool X, bool D, bool O, typename T, typename A>
inline void tap_backward(const T* const* c, const T* g, A* const* gf, const A* s, T* o, A* d,
                         int64_t n) {
#if defined(__AVX512BF16__)
  if constexpr (std::is_same<T, uint16_t>::value) {
    tap_backward_row_bf16<X, D, O>(c[0], c[1], c[2], c[3], g, gf[0], gf[1], gf[2], gf[3], s, o,
                                   d, n);
    return;
  }
#endif
  tap_backward_row<X, D, O, T, A>(c[0], c[1], c[2], c[3], g, gf[0], gf[1], gf[2], gf[3], s, o,
                                  d, n);
}

// The backward of sample_chunk for channels [c0, c0 + cw) (slice s) of rows [r0, r1), one read
// of each corner row for all:
//   grad_x[corner] += mask * w * gcols[r, k, :]                       (X: the inputs have grad_x;
//                     a slice's first contribution to a pixel zeroes its row: see Input::seen)
//   pd[j] = (sum_q w_q <x[corner_q], g>, sum_q dw_q/dy <..>, sum_q dw_q/dx <..>)   (D: the offset
//                     or mask gradient is wanted; this slice's partial sums, added over slices after)
//   cols[r, k, :] = the forward's columns, for the weight's gradient   (O)
// gcols (d loss / d columns) and cols hold this slice's channels only: (r1 - r0, K, cw), the
// thread's own buffers.
template <bool X, bool D, bool O, typename T, typename A>
void backward_slice(const std::vector<Input<T, A>>& ins, const Conf& cf, const T* zeros,
                    int64_t r0, int64_t r1, const T* __restrict__ gcols, T* __restrict__ cols,
                    int64_t s, int64_t c0, int64_t cw, A* pd, A* scratch) {
  RECORD_FUNCTION("mmdet_dyhead::sample_loops", std::vector<c10::IValue>());
  const int64_t C = cf.C, K = cf.K;
  for (RowCursor<T, A> cur(ins, r0); cur.r < r1; cur.next()) {
    const int64_t r = cur.r;
    const Input<T, A>& in = cur.in();
    const Position& p = cur.p;
    const int64_t image_row = p.n * in.H * in.W;
    const T* image = in.x + image_row * C + c0;
    A* grad_image = X ? in.grad_x + image_row * C + c0 : nullptr;
    uint8_t* seen = X ? in.seen + s * in.pixels + image_row : nullptr;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t j = (r - r0) * K + k;
      A y, x, mk;
      tap_position(in, cf, p, k, y, x, mk);
      const Tap<A, true> t(y, x, in.H, in.W);
      const T* c[4];
      A* gf[4];
      // outside, the weights are 0 * mask: a NaN mask spreads as in mmcv
      const A w[4] = {t.w[0] * mk, t.w[1] * mk, t.w[2] * mk, t.w[3] * mk};
      for (int q = 0; q < 4; ++q) {
        gf[q] = scratch + q * cw;  // a corner outside: added to, never read
        if (t.pix[q] < 0) {
          c[q] = zeros;
          continue;
        }
        c[q] = image + t.pix[q] * C;
        if (X) {
          gf[q] = grad_image + t.pix[q] * C;
          if (!seen[t.pix[q]]) {  // this slice's first contribution to the pixel
            std::memset(gf[q], 0, cw * sizeof(A));
            seen[t.pix[q]] = 1;
          }
        }
      }
      A d[4];
      tap_backward<X, D, O, T, A>(c, gcols + j * cw, gf, w, O ? cols + j * cw : nullptr,
                                  d, cw);
      if (D) {
        for (int q = 0; q < 4; ++q)
          if (t.pix[q] < 0) d[q] = 0;  // a corner outside has no gradient, even from inf * 0
        pd[j * 3] = t.w[0] * d[0] + t.w[1] * d[1] + t.w[2] * d[2] + t.w[3] * d[3];
        pd[j * 3 + 1] = t.dy[0] * d[0] + t.dy[1] * d[1] + t.dy[2] * d[2] + t.dy[3] * d[3];
        pd[j * 3 + 2] = t.dx[0] * d[0] + t.dx[1] * d[1] + t.dx[2] * d[2] + t.dx[3] * d[3];
      }
    }
  }
}

// Rows [0, rows) of a slice's weight gradient (C_out, K, cw), tap-major as its GEMMs summed it,
// into channels [c0, c0 + cw) of the parameter's layout (C_out, C, K): per output channel, a
// (K, cw) block read row by row and written as one contiguous run of cw * K values.
template <typename A>
void gather_weight_grad(const A* __restrict__ in, A* __restrict__ out, int64_t rows, int64_t C,
                        int64_t K, int64_t c0, int64_t cw) {
  for (int64_t o = 0; o < rows; ++o) {
    const A* block = in + o * K * cw;
    A* run = out + (o * C + c0) * K;
    for (int64_t k = 0; k < K; ++k)
#pragma omp simd
      for (int64_t c = 0; c < cw; ++c) run[c * K + k] = block[k * cw + c];
  }
}

// the (X, D, O) form of backward_slice that a call needs
template <typename T, typename A>
using SliceFn = void (*)(const std::vector<Input<T, A>>&, const Conf&, const T*, int64_t, int64_t,
                         const T*, T*, int64_t, int64_t, int64_t, A*, A*);

template <typename T, typename A>
SliceFn<T, A> slice_form(bool x, bool dots, bool cols) {
  static const SliceFn<T, A> forms[8] = {
      backward_slice<false, false, false, T, A>, backward_slice<false, false, true, T, A>,
      backward_slice<false, true, false, T, A>,  backward_slice<false, true, true, T, A>,
      backward_slice<true, false, false, T, A>,  backward_slice<true, false, true, T, A>,
      backward_slice<true, true, false, T, A>,   backward_slice<true, true, true, T, A>};
  return forms[(x ? 4 : 0) + (dots ? 2 : 0) + (cols ? 1 : 0)];
}

// The offset and mask gradients of a group's rows [0, rows) from the slices' partial sums
// (slice, row * K + k, [m, y, x]), added in slice order:
//   grad_mask[r, k] = sum_q w_q <x[corner_q], gcols[r, k, :]>
//   grad_off[r, 2k | 2k+1] = mask * sum_q dw_q/dy|dx <x[corner_q], gcols[r, k, :]>
template <typename T, typename A>
void add_partials(const std::vector<Input<T, A>>& ins, const Conf& cf, const std::vector<A>& partial,
                  int64_t slices, int64_t rows, bool need_off, bool need_mask) {
  const int64_t K = cf.K, n = rows * K;
  // each row is one output pixel of one input: rows write disjoint gradient entries
  at::parallel_for(0, rows, 1024, [&](int64_t begin, int64_t end) {
    for (RowCursor<T, A> cur(ins, begin); cur.r < end; cur.next()) {
      const int64_t r = cur.r;
      const Input<T, A>& in = cur.in();
      const Position& p = cur.p;
      const int64_t pixel = (p.n * in.Ho + p.ho) * in.Wo + p.wo;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t j = r * K + k;
        A sm = 0, sy = 0, sx = 0;
        for (int64_t s = 0; s < slices; ++s) {
          const A* q = partial.data() + (s * n + j) * 3;
          sm += q[0], sy += q[1], sx += q[2];
        }
        if (need_mask) in.grad_mask[pixel * K + k] = sm;
        if (need_off) {
          const A mk = tap_mask(in, p, k);
          in.grad_off[pixel * 2 * K + 2 * k] = mk * sy;
          in.grad_off[pixel * 2 * K + 2 * k + 1] = mk * sx;
        }
      }
    }
  });
}

}  // namespace

namespace at {
namespace native {
// oneDNN's matmul as torch's own addmm calls it for bf16 (ATen/native/mkldnn/Matmul.h, not
// among the installed headers): result = beta * result + alpha * mat1 @ mat2, written in place;
// mat1 and mat2 contiguous or transposed. Weak: where a torch build lacks it, it is null and
// the GEMMs go through at::mm.
__attribute__((weak)) void mkldnn_matmul(const at::Tensor& mat1, const at::Tensor& mat2,
                                         const at::Tensor& result, float beta, float alpha);
}  // namespace native
}  // namespace at

namespace {

// whether oneDNN's matmul is there and right (checked once, on fixed values: no RNG drawn)
bool onednn_ok() {
  static const bool ok = [] {
    if (!at::native::mkldnn_matmul) return false;
    try {
      const auto a = at::arange(35, at::kFloat).view({5, 7}).sin_();
      const auto b = at::arange(21, at::kFloat).view({3, 7}).cos_();
      auto out = at::full({5, 3}, 1.0f);
      at::native::mkldnn_matmul(a, b.t(), out, 1.0f, 1.0f);
      const auto ref = at::mm(a.to(at::kDouble), b.to(at::kDouble).t()) + 1.0;
      return at::allclose(out.to(at::kDouble), ref, 1e-5, 1e-5);
    } catch (...) {
      return false;
    }
  }();
  return ok;
}

// The library of the backward's fp32 GEMMs (the columns' gradient, an inner dimension of C_out;
// the weight gradient's, an inner dimension of a chunk's rows). On an Intel Xeon MKL's sgemm
// (torch.mm's) ran these shapes 7-11% faster than oneDNN's matmul, and a 512x512 forward+backward
// took 0.94x the time with it (docs/speed.md); on AMD CPUs MKL picks slow kernels, so "auto"
// takes oneDNN there.
enum class Blas { kOneDnn, kMkl };

Blas auto_blas() {
#if defined(__x86_64__) || defined(__i386__)
  return __builtin_cpu_is("intel") && at::hasMKL() ? Blas::kMkl : Blas::kOneDnn;
#else
  return Blas::kOneDnn;
#endif
}

std::atomic<Blas>& backward_blas() {
  static std::atomic<Blas> blas{auto_blas()};
  return blas;
}

// backward_gemm("auto" | "onednn" | "mkl") sets the backward's library; "" only reads it.
// Returns the library in use ("onednn" or "mkl") after the call.
std::string backward_gemm(const std::string& name) {
  if (!name.empty()) {
    TORCH_CHECK(name == "auto" || name == "onednn" || name == "mkl",
                "backward GEMM library must be 'auto', 'onednn' or 'mkl', got '", name, "'");
    TORCH_CHECK(name != "mkl" || at::hasMKL(), "this torch build has no MKL");
    backward_blas() = name == "auto" ? auto_blas() : name == "mkl" ? Blas::kMkl : Blas::kOneDnn;
  }
  return backward_blas() == Blas::kMkl ? "mkl" : "onednn";
}

// out = a @ b, or out += a @ b (add), in place; out may be of a wider type than a and b (a bf16
// product summed into fp32). fp32 goes to oneDNN unless blas says MKL (at::mm's BLAS).
void gemm(const at::Tensor& a, const at::Tensor& b, at::Tensor out, bool add,
          Blas blas = Blas::kOneDnn) {
  RECORD_FUNCTION("mmdet_dyhead::gemm", std::vector<c10::IValue>());
  if (out.scalar_type() == at::kFloat && a.scalar_type() == at::kFloat &&
      blas == Blas::kOneDnn && onednn_ok()) {
    at::native::mkldnn_matmul(a, b, out, add ? 1.0f : 0.0f, 1.0f);
  } else if (out.scalar_type() != a.scalar_type()) {
    if (add) out.add_(at::mm(a, b));
    else out.copy_(at::mm(a, b));
  } else if (add) {
    out.addmm_(a, b);
  } else {
    at::mm_out(out, a, b);
  }
}

// the arithmetic's type of a data type: bf16 computes in fp32
at::ScalarType acc_type(at::ScalarType t) { return t == at::kBFloat16 ? at::kFloat : t; }

// calls f(T*-typed null, A*-typed null) for the data's (data, arithmetic) types
template <typename F>
void dispatch(at::ScalarType t, F f) {
  if (t == at::kFloat) f(static_cast<float*>(nullptr), static_cast<float*>(nullptr));
  else if (t == at::kDouble) f(static_cast<double*>(nullptr), static_cast<double*>(nullptr));
  else f(static_cast<uint16_t*>(nullptr), static_cast<float*>(nullptr));
}

template <typename T>
T* ptr(const at::Tensor& t) { return static_cast<T*>(t.data_ptr()); }

// The conv as the Python side hands it over: inputs (N, C, H, W) channels-last; offsets
// (N, 2K, Ho, Wo) and masks (N, K, Ho, Wo) in the arithmetic's type, any layout; conf =
// (kh, kw, stride h, w, padding h, w, dilation h, w); the groups as their end (one past their
// last input) and their output channels.
struct Problem {
  Conf cf;
  std::vector<int64_t> ends, couts, group_rows;
  at::ScalarType dtype;

  Problem(const std::vector<at::Tensor>& xs, const std::vector<at::Tensor>& offsets,
          const std::vector<at::Tensor>& masks, const at::Tensor& wkc,
          const std::vector<int64_t>& conf, std::vector<int64_t> ends_,
          std::vector<int64_t> couts_)
      : ends(std::move(ends_)), couts(std::move(couts_)) {
    TORCH_CHECK(!xs.empty() && xs.size() == offsets.size() && xs.size() == masks.size(),
                "as many inputs, offsets and masks, at least one");
    TORCH_CHECK(conf.size() == 8, "conf is (kh, kw, sh, sw, ph, pw, dh, dw)");
    TORCH_CHECK(ends.size() == couts.size() && !ends.empty() &&
                    ends.back() == static_cast<int64_t>(xs.size()),
                "groups must cover the inputs");
    dtype = xs[0].scalar_type();
    TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16,
                "inputs must be float32, float64 or bfloat16, got ", dtype);
    const int64_t C = xs[0].size(1), K = conf[0] * conf[1];
    TORCH_CHECK(K <= kMaxTaps, "at most ", kMaxTaps, " taps (kh * kw), got ", K);
    cf = Conf(C, K, conf[1], conf[2], conf[3], conf[4], conf[5], conf[6], conf[7]);
    TORCH_CHECK(wkc.dim() == 2 && wkc.size(1) == K * C && wkc.is_contiguous() &&
                    wkc.scalar_type() == dtype,
                "weight must be a contiguous (C_out, kh*kw*C) matrix of the inputs' dtype");
    const auto acc = acc_type(dtype);
    for (size_t i = 0; i < xs.size(); ++i) {
      const auto& x = xs[i];
      TORCH_CHECK(x.dim() == 4 && x.size(1) == C && x.scalar_type() == dtype &&
                      x.is_contiguous(at::MemoryFormat::ChannelsLast),
                  "inputs must be channels-last (N, C, H, W) of one dtype and C");
      const auto& o = offsets[i];
      const auto& m = masks[i];
      TORCH_CHECK(o.dim() == 4 && o.size(0) == x.size(0) && o.size(1) == 2 * K &&
                      o.scalar_type() == acc,
                  "offsets must be (N, 2K, Ho, Wo) in the arithmetic's type");
      TORCH_CHECK(m.dim() == 4 && m.size(0) == x.size(0) && m.size(1) == K &&
                      m.size(2) == o.size(2) && m.size(3) == o.size(3) && m.scalar_type() == acc,
                  "masks must be (N, K, Ho, Wo) like the offsets");
    }
    int64_t start = 0;
    for (size_t g = 0; g < ends.size(); ++g) {
      TORCH_CHECK(ends[g] > start && couts[g] > 0 && couts[g] <= wkc.size(0), "bad groups");
      int64_t rows = 0;
      for (int64_t i = start; i < ends[g]; ++i)
        rows += offsets[i].size(0) * offsets[i].size(2) * offsets[i].size(3);
      group_rows.push_back(rows);
      start = ends[g];
    }
  }

  template <typename T, typename A>
  std::vector<Input<T, A>> inputs(int64_t g, const std::vector<at::Tensor>& xs,
                                  const std::vector<at::Tensor>& offsets,
                                  const std::vector<at::Tensor>& masks) const {
    std::vector<Input<T, A>> ins;
    int64_t first = 0;
    for (int64_t i = g ? ends[g - 1] : 0; i < ends[g]; ++i) {
      const auto &x = xs[i], &o = offsets[i], &m = masks[i];
      Input<T, A> in;
      in.x = ptr<T>(x);
      in.H = x.size(2), in.W = x.size(3), in.Ho = o.size(2), in.Wo = o.size(3);
      in.pixels = x.size(0) * in.H * in.W;
      in.first = first;
      in.end = first + x.size(0) * in.Ho * in.Wo;
      in.off = ptr<A>(o);
      in.mask = ptr<A>(m);
      for (int d = 0; d < 4; ++d) in.os[d] = o.stride(d), in.ms[d] = m.stride(d);
      first = in.end;
      ins.push_back(in);
    }
    return ins;
  }
};

// Inside the threads of a parallel region: torch ops as in the op's own thread, below autograd
// (the other threads do not inherit its dispatch state, and a weight that requires grad would
// send at::mm_out through autograd, which refuses out= arguments)
struct BelowAutograd {
  at::AutoDispatchBelowADInplaceOrView below;
  at::NoGradGuard no_grad;
};

// One output (P_g, cout_g) per group: its rows are its inputs' output positions (N, Ho, Wo)
// one input after the other. Each thread takes one contiguous share of the rows and runs, chunk
// by chunk of `step` rows, the loops that write the chunk's columns and one GEMM (single-threaded
// inside the parallel region) into the output rows: a chunk's columns never leave the core that
// wrote them. (With the loops and a multi-threaded GEMM splitting each chunk differently, half of
// every chunk's columns crossed between cores, which in this machine's slow phase cost more than
// the second core gained.)
std::vector<at::Tensor> forward_levels(const std::vector<at::Tensor>& xs,
                                       const std::vector<at::Tensor>& offsets,
                                       const std::vector<at::Tensor>& masks,
                                       const at::Tensor& wkc,
                                       const c10::optional<at::Tensor>& bias,
                                       const std::vector<int64_t>& conf,
                                       const std::vector<int64_t>& ends,
                                       const std::vector<int64_t>& couts, int64_t step) {
  const Problem pb(xs, offsets, masks, wkc, conf, ends, couts);
  const int64_t C = pb.cf.C, K = pb.cf.K;
  std::vector<at::Tensor> outs;
  onednn_ok();  // its one-time check runs torch ops: here, not inside the threads below
  dispatch(pb.dtype, [&](auto* t, auto* a) {
    using T = std::remove_pointer_t<decltype(t)>;
    using A = std::remove_pointer_t<decltype(a)>;
    const std::vector<T> zeros(C, T(0));
    for (size_t g = 0; g < ends.size(); ++g) {
      const auto ins = pb.inputs<T, A>(g, xs, offsets, masks);
      const int64_t rows = pb.group_rows[g], cout = couts[g];
      at::Tensor out = at::empty({rows, cout}, xs[0].options());
      if (bias) out.copy_(bias->narrow(0, 0, cout).to(out.scalar_type()).expand({rows, cout}));
      const at::Tensor w = wkc.narrow(0, 0, cout).t();  // (K*C, cout), a transposed view
      const int64_t shares = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(),
                                                           (rows + step - 1) / step));
      at::parallel_for(0, shares, 1, [&](int64_t sb, int64_t se) {
        const BelowAutograd below;
        at::Tensor cols = at::empty({std::min(step, rows), K * C}, xs[0].options());
        for (int64_t s = sb; s < se; ++s) {
          const int64_t first = rows * s / shares, last = rows * (s + 1) / shares;
          const Chunks ch(first, last, step);
          for (int64_t j = 0; j < ch.count; ++j) {
            const int64_t r0 = ch.start(j), r1 = ch.start(j + 1);
            sample_chunk<T, A>(ins, pb.cf, zeros.data(), r0, r1, ptr<T>(cols));
            gemm(cols.narrow(0, 0, r1 - r0), w, out.narrow(0, r0, r1 - r0), bias.has_value());
          }
        }
      });
      outs.push_back(out);
    }
  });
  return outs;
}

// Gradients of forward_levels from each group's output gradient (P_g, cout_g), contiguous:
// [weight (C_out, C * kh*kw), the (C_out, C, kh, kw) parameter's layout; then per input:
// x (N, C, H, W), offsets (N, 2K, Ho, Wo), masks (N, K, Ho, Wo), each channels-last], all in the
// arithmetic's type; an empty tensor for each gradient that `needs` (weight, x, offsets, masks)
// does not ask for.
std::vector<at::Tensor> backward_levels(const std::vector<at::Tensor>& grads,
                                        const std::vector<at::Tensor>& xs,
                                        const std::vector<at::Tensor>& offsets,
                                        const std::vector<at::Tensor>& masks,
                                        const at::Tensor& wkc, const std::vector<int64_t>& conf,
                                        const std::vector<int64_t>& ends,
                                        const std::vector<int64_t>& couts, int64_t step,
                                        const std::vector<bool>& needs) {
  const Problem pb(xs, offsets, masks, wkc, conf, ends, couts);
  TORCH_CHECK(needs.size() == 4, "needs is (weight, x, offsets, masks)");
  TORCH_CHECK(grads.size() == ends.size(), "one output gradient per group");
  const bool need_w = needs[0], need_x = needs[1], need_off = needs[2], need_mask = needs[3];
  const int64_t C = pb.cf.C, K = pb.cf.K, n = static_cast<int64_t>(xs.size());
  const auto acc = acc_type(pb.dtype);
  const auto acc_opts = xs[0].options().dtype(acc);
  const auto cl = at::MemoryFormat::ChannelsLast;
  // a fresh empty tensor per unwanted gradient: a custom op's outputs may not alias each other
  const auto none = [&] { return at::empty({0}, acc_opts); };
  // written by the first GEMM that reaches each row (rows below `written` are added to): no
  // zero fill; rows no group reaches are zeroed at the end
  at::Tensor grad_w = need_w ? at::empty(wkc.sizes(), acc_opts) : none();
  int64_t written = 0;
  std::vector<at::Tensor> gx, goff, gmask;
  for (int64_t i = 0; i < n; ++i) {
    const auto &x = xs[i], &o = offsets[i];
    gx.push_back(need_x ? at::empty(x.sizes(), acc_opts.memory_format(cl)) : none());
    goff.push_back(need_off ? at::empty(o.sizes(), acc_opts.memory_format(cl)) : none());
    gmask.push_back(need_mask
                        ? at::empty({o.size(0), K, o.size(2), o.size(3)}, acc_opts.memory_format(cl))
                        : none());
  }
  // Threads split the channels (taps of different positions hit the same input rows, so no two
  // threads may split the rows): each runs, for its slice, the GEMM that gives the slice's
  // columns' gradient, the loops, and the GEMM that adds the slice's share of the weight
  // gradient into its own accumulator, on buffers of its own, so no chunk's columns cross
  // between cores. The weight's slice (C_out, K, cw) is copied once per call.
  const int64_t slices = channel_slices(C), width = slice_width(C);
  // a slice's columns are at most min(width, C) of C channels wide: as many more rows per chunk
  // for the same bytes (and a deeper inner dimension for the weight gradient's products)
  const int64_t slice_step = std::max<int64_t>(1, step * C / std::min(width, C));
  std::vector<at::Tensor> gws(slices);  // per slice: (C_out, K * cw) of the weight gradient
  for (int64_t s = 0; need_w && s < slices; ++s)
    gws[s] = at::empty({wkc.size(0), K * std::max<int64_t>(0, ChannelSlice(C, width, s).cw)},
                       acc_opts);
  // per slice: the weight's (C_out, K * cw) matrix of its channels, one copy per call (each
  // group takes its first cout rows), made by the thread that uses it
  std::vector<at::Tensor> wslices(slices);
  const int64_t max_cout = *std::max_element(couts.begin(), couts.end());
  at::parallel_for(0, slices, 1, [&](int64_t sb, int64_t se) {
    const BelowAutograd below;
    for (int64_t s = sb; s < se; ++s) {
      const auto [c0, cw] = ChannelSlice(C, width, s);
      if (cw > 0)
        wslices[s] = wkc.narrow(0, 0, max_cout).view({max_cout, K, C}).narrow(2, c0, cw)
                         .reshape({max_cout, K * cw});
    }
  });
  // per input, per channel slice, whether each pixel's gradient row has been written
  std::vector<std::vector<uint8_t>> seen(n);
  if (need_x)
    for (int64_t i = 0; i < n; ++i)
      seen[i].assign(slices * xs[i].size(0) * xs[i].size(2) * xs[i].size(3), 0);
  onednn_ok();  // its one-time check runs torch ops: here, not inside the threads below
  const bool need_dots = need_off || need_mask;
  const Blas blas = backward_blas();
  dispatch(pb.dtype, [&](auto* t, auto* a) {
    using T = std::remove_pointer_t<decltype(t)>;
    using A = std::remove_pointer_t<decltype(a)>;
    const std::vector<T> zeros(C, T(0));
    const SliceFn<T, A> slice_fn = slice_form<T, A>(need_x, need_dots, need_w);
    // the group with the most output channels first: it writes every weight-gradient row the
    // others add to, so no GEMM has to write a part of the rows and add to the rest (which made
    // oneDNN copy the output gradient's rows it was given as a strided slice)
    std::vector<size_t> order(ends.size());
    for (size_t g = 0; g < order.size(); ++g) order[g] = g;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return couts[a] > couts[b]; });
    for (const size_t g : order) {
      auto ins = pb.inputs<T, A>(g, xs, offsets, masks);
      for (size_t j = 0; j < ins.size(); ++j) {
        const int64_t i = (g ? ends[g - 1] : 0) + static_cast<int64_t>(j);
        if (need_x) ins[j].grad_x = ptr<A>(gx[i]), ins[j].seen = seen[i].data();
        if (need_off) ins[j].grad_off = ptr<A>(goff[i]);
        if (need_mask) ins[j].grad_mask = ptr<A>(gmask[i]);
      }
      const int64_t rows = pb.group_rows[g], cout = couts[g];
      const at::Tensor& go = grads[g];
      TORCH_CHECK(go.dim() == 2 && go.size(0) == rows && go.size(1) == cout &&
                      go.is_contiguous() && go.scalar_type() == pb.dtype,
                  "output gradient ", g, " must be contiguous (", rows, ", ", cout, ")");
      if (!(need_x || need_dots || need_w)) continue;
      // per slice, per tap of every row: the three partial sums of the offset/mask gradients
      std::vector<A> partial(need_dots ? slices * rows * K * 3 : 0);
      const Chunks chunks(0, rows, slice_step);
      const int64_t chunk = chunks.longest();
      at::parallel_for(0, slices, 1, [&](int64_t sb, int64_t se) {
        const BelowAutograd below;
        std::vector<A> scratch(4 * width);
        for (int64_t s = sb; s < se; ++s) {
          const auto [c0, cw] = ChannelSlice(C, width, s);
          if (cw <= 0) continue;
          const at::Tensor ws = wslices[s].narrow(0, 0, cout);
          at::Tensor gcols = at::empty({chunk, K * cw}, xs[0].options());
          at::Tensor cols = need_w ? at::empty({chunk, K * cw}, xs[0].options()) : at::Tensor();
          at::Tensor gw = need_w ? gws[s].narrow(0, 0, cout) : at::Tensor();
          int64_t done = written;  // rows of gw below this are added to, the rest written
          for (int64_t j = 0; j < chunks.count; ++j) {
            const int64_t r0 = chunks.start(j), r1 = chunks.start(j + 1), m = r1 - r0;
            const at::Tensor go_chunk = go.narrow(0, r0, m);
            gemm(go_chunk, ws, gcols.narrow(0, 0, m), false, blas);  // d loss / d its columns
            slice_fn(ins, pb.cf, zeros.data(), r0, r1, ptr<T>(gcols),
                     need_w ? ptr<T>(cols) : nullptr, s, c0, cw,
                     need_dots ? partial.data() + (s * rows + r0) * K * 3 : nullptr,
                     scratch.data());
            if (need_w) {
              const at::Tensor a = go_chunk.t(), b = cols.narrow(0, 0, m);
              const int64_t added = std::min(done, cout);
              if (added > 0) gemm(a.narrow(0, 0, added), b, gw.narrow(0, 0, added), true, blas);
              if (added < cout)
                gemm(a.narrow(0, added, cout - added), b, gw.narrow(0, added, cout - added),
                     false, blas);
              done = std::max(done, cout);
            }
          }
        }
      });
      if (need_w && rows > 0) written = std::max(written, cout);  // (no rows: nothing written)
      if (need_dots) add_partials<T, A>(ins, pb.cf, partial, slices, rows, need_off, need_mask);
    }
    // the slices' weight gradients into the parameter's own layout (C_out, C, kh * kw): the
    // one reordering copy (autograd then keeps this tensor as the .grad, without a copy of its
    // own), each slice by the thread that summed it (torch's copy split the rows between the
    // cores otherwise, and read half of each accumulator from the other core's cache)
    if (need_w && written > 0)
      at::parallel_for(0, slices, 1, [&](int64_t sb, int64_t se) {
        for (int64_t s = sb; s < se; ++s) {
          const auto [c0, cw] = ChannelSlice(C, width, s);
          if (cw > 0) gather_weight_grad(ptr<A>(gws[s]), ptr<A>(grad_w), written, C, K, c0, cw);
        }
      });
  });
  if (need_w && written < grad_w.size(0)) grad_w.narrow(0, written, grad_w.size(0) - written).zero_();
  // pixels no tap reached: zero gradient rows (every slice visits the same pixels; the first
  // slice is never empty)
  for (int64_t i = 0; need_x && i < n; ++i) {
    const uint8_t* flags = seen[i].data();
    auto* base = static_cast<char*>(gx[i].data_ptr());
    const int64_t row_bytes = C * gx[i].element_size();
    at::parallel_for(0, gx[i].numel() / C, 2048, [&](int64_t b, int64_t e) {
      for (int64_t p = b; p < e; ++p)
        if (!flags[p]) std::memset(base + p * row_bytes, 0, row_bytes);
    });
  }
  std::vector<at::Tensor> out{grad_w};
  for (const auto* v : {&gx, &goff, &gmask}) out.insert(out.end(), v->begin(), v->end());
  return out;
}

}  // namespace

void bind_scale_task(pybind11::module_& m);       // scale_task.cpp
void bind_norm_scale_task(pybind11::module_& m);  // norm_scale_task.cpp
void bind_small_math(pybind11::module_& m);       // small_math.cpp
void bind_layout(pybind11::module_& m);           // layout.cpp

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  bind_scale_task(m);
  bind_norm_scale_task(m);
  bind_small_math(m);
  bind_layout(m);
  m.def("forward_levels", &forward_levels,
        "modulated deformable conv over several inputs: output rows of each group");
  m.def("backward_levels", &backward_levels,
        "gradients of forward_levels: weight matrix, inputs, offsets, masks");
  m.def("backward_gemm", &backward_gemm,
        "the backward's fp32 GEMM library: set ('auto', 'onednn', 'mkl') or read ('')");
}
