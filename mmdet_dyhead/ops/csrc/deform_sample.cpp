// Fused bilinear sampling for mmdet_dyhead's CPU modulated deformable conv (deform_conv.py).
//
// The pure-torch path gathers the 4 corners of every tap into a (rows, 4, K, C) buffer and
// then blends them, and in backward multiplies and scatters another buffer of that size:
// memory-bound passes that cost more than the GEMM next to them. These loops read each corner
// row once and write nothing but the result.
//
// Both directions work the taps' corners and weights out in the loop from the positions: no
// (rows, 4, K) tables are built. Layouts (all contiguous): flat (R, C) input rows, channels
// last, last row zero; positions and masks (rows, K); cols / gcols (rows, K, C), tap-major, so
// each tap's channels are one contiguous row that the loops read and write without a transpose
// (the caller lays the weight out as (C_out, kh, kw, C) to match).
//
// Types: T is the data's (flat, cols, gcols), A the arithmetic's (positions, weights,
// grad_flat, every blend and sum). fp32 and fp64 compute in their own type; bf16 data (CPU
// autocast) is widened to fp32 on load and rounded to nearest-even once on store, so only the
// stored columns and inputs carry bf16's rounding, never a running sum.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

namespace {

// bf16 travels as its raw bits: plain integer shifts that the compiler vectorises
inline float load(const float* p, int64_t i) { return p[i]; }
inline double load(const double* p, int64_t i) { return p[i]; }
inline float load(const uint16_t* p, int64_t i) {
  const uint32_t u = static_cast<uint32_t>(p[i]) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline void store(float* p, int64_t i, float v) { p[i] = v; }
inline void store(double* p, int64_t i, double v) { p[i] = v; }
inline void store(uint16_t* p, int64_t i, float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;  // to nearest, ties to even
  p[i] = v != v ? static_cast<uint16_t>(0x7FC0) : static_cast<uint16_t>(rounded);  // NaN stays NaN
}

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

// o[i] = f[i] in the arithmetic's type (widens a bf16 row)
template <typename T, typename A>
inline void widen_row(A* __restrict__ o, const T* __restrict__ f, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) o[i] = load(f, i);
}

template <typename T, typename A>
inline A dot_row(const T* __restrict__ f, const A* __restrict__ g, int64_t n) {
  A acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += load(f, i) * g[i];
  return acc;
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

template <>
inline void widen_row<uint16_t, float>(float* __restrict__ o, const uint16_t* __restrict__ f,
                                       int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(o + i, load16(f + i));
  for (; i < n; ++i) o[i] = load(f, i);
}

template <>
inline float dot_row<uint16_t, float>(const uint16_t* __restrict__ f, const float* __restrict__ g,
                                      int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) acc = _mm512_fmadd_ps(load16(f + i), _mm512_loadu_ps(g + i), acc);
  float out = _mm512_reduce_add_ps(acc);
  for (; i < n; ++i) out += load(f, i) * g[i];
  return out;
}

#endif

// One tap's bilinear sampling, worked out from its position as _Bilinear does in torch (the
// same operations in the same order, so the same bits): the 4 corner rows (the zero row where a
// corner is outside the map), their unmasked weights and, for the backward, the weights'
// derivatives with respect to y and x. A tap outside (-1, H) x (-1, W), or at a NaN position,
// samples nothing and gets no gradient, as in mmcv (and no NaN is cast to an integer).
template <typename A>
struct Tap {
  int64_t idx[4];
  A w[4], dy[4], dx[4];
  bool inside;

  Tap(A y, A x, int64_t H, int64_t W, int64_t base, int64_t zero_row) {
    inside = y > -1 && y < H && x > -1 && x < W;
    for (int q = 0; q < 4; ++q) {
      idx[q] = zero_row;
      w[q] = dy[q] = dx[q] = 0;
    }
    if (!inside) return;
    const A y0f = std::floor(y), x0f = std::floor(x);
    const A ly = y - y0f, lx = x - x0f, hy = 1 - ly, hx = 1 - lx;
    const int64_t y0 = static_cast<int64_t>(y0f), x0 = static_cast<int64_t>(x0f);
    const bool vy0 = y0 >= 0 && y0 < H, vy1 = y0 >= -1 && y0 < H - 1;
    const bool vx0 = x0 >= 0 && x0 < W, vx1 = x0 >= -1 && x0 < W - 1;
    const int64_t i00 = base + y0 * W + x0;
    if (vy0 && vx0) idx[0] = i00;
    if (vy0 && vx1) idx[1] = i00 + 1;
    if (vy1 && vx0) idx[2] = i00 + W;
    if (vy1 && vx1) idx[3] = i00 + W + 1;
    w[0] = hy * hx;
    w[1] = hy * lx;
    w[2] = ly * hx;
    w[3] = ly * lx;
    dy[0] = -hx, dy[1] = -lx, dy[2] = hx, dy[3] = lx;
    dx[0] = -hy, dx[1] = hy, dx[2] = -ly, dx[3] = ly;
  }
};

// The forward straight from the sampling positions, no (rows, 4, K) tables:
//   py, px, m (rows, K): tap positions and masks; row_base (rows,): the first input row of the
//   position's image; hs, ws (rows,): its map's size; zero_row: the all-zero input row;
//   cols (rows, K, C): tap-major columns, each tap's C channels one contiguous row.
template <typename T, typename A>
void sample_kernel(const T* __restrict__ flat, const A* __restrict__ py, const A* __restrict__ px,
                   const A* __restrict__ m, const int64_t* __restrict__ row_base,
                   const int64_t* __restrict__ hs, const int64_t* __restrict__ ws,
                   int64_t zero_row, T* __restrict__ cols, int64_t rows, int64_t K, int64_t C) {
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t k = 0; k < K; ++k) {
        const int64_t j = r * K + k;
        const Tap<A> t(py[j], px[j], hs[r], ws[r], row_base[r], zero_row);
        const A mk = m[j];
        // outside, the weights are 0 * mask: a NaN mask spreads as in mmcv
        blend4_row<T, A>(cols + j * C, flat + t.idx[0] * C, flat + t.idx[1] * C,
                         flat + t.idx[2] * C, flat + t.idx[3] * C, t.w[0] * mk, t.w[1] * mk,
                         t.w[2] * mk, t.w[3] * mk, C);
      }
    }
  });
}

// The backward of sample_kernel for a chunk of rows, one read of each corner row for all:
//   grad_flat[corner] += mask * w * gcols[r, k, :]                    (optional)
//   grad_m[r, k] = sum_q w_q <flat[corner_q], gcols[r, k, :]>          (optional)
//   grad_py/px[r, k] = mask * sum_q dw_q/dy|dx <flat[corner_q], gcols[r, k, :]>   (optional)
//   cols[r, k, :] = the forward's columns, for the weight's gradient   (optional)
// gcols (rows, K, C) is d loss / d cols. Taps of different positions hit the same input rows, so
// threads split the channels, not the taps: no two threads ever add to the same element. Each
// keeps partial sums of its channels for the three per-tap gradients; they are added after.
template <typename T, typename A>
void sample_backward_kernel(const T* __restrict__ flat, const A* __restrict__ py,
                            const A* __restrict__ px, const A* __restrict__ m,
                            const int64_t* __restrict__ row_base, const int64_t* __restrict__ hs,
                            const int64_t* __restrict__ ws, int64_t zero_row,
                            const T* __restrict__ gcols, A* __restrict__ grad_flat,
                            A* __restrict__ grad_py, A* __restrict__ grad_px,
                            A* __restrict__ grad_m, T* __restrict__ cols, int64_t rows, int64_t K,
                            int64_t C) {
  const int64_t n = rows * K, lanes = 16;
  const int64_t slices = std::max<int64_t>(
      1, std::min<int64_t>(at::get_num_threads(), (C + lanes - 1) / lanes));
  const int64_t width = ((C + slices - 1) / slices + lanes - 1) / lanes * lanes;
  const bool need_dots = grad_py || grad_m;
  std::vector<A> partial(need_dots ? slices * n * 3 : 0);  // (slice, tap, [m, y, x])
  at::parallel_for(0, slices, 1, [&](int64_t sb, int64_t se) {
    std::vector<A> wide(width);  // a bf16 gradient row widened to fp32
    for (int64_t s = sb; s < se; ++s) {
      const int64_t c0 = s * width, c1 = std::min(C, c0 + width), cw = c1 - c0;
      if (cw <= 0) continue;
      A* pd = need_dots ? partial.data() + s * n * 3 : nullptr;
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t k = 0; k < K; ++k) {
          const int64_t j = r * K + k;
          const Tap<A> t(py[j], px[j], hs[r], ws[r], row_base[r], zero_row);
          const A mk = m[j];
          const T* g_src = gcols + j * C + c0;
          const A* __restrict__ g;
          if constexpr (std::is_same<T, A>::value) {
            g = g_src;
          } else {
            widen_row<T, A>(wide.data(), g_src, cw);
            g = wide.data();
          }
          A d[4] = {0, 0, 0, 0};
          for (int q = 0; q < 4; ++q) {
            const int64_t row = t.idx[q];
            const T* __restrict__ f = flat + row * C + c0;
            if (grad_flat && t.inside) {
              A* __restrict__ gf = grad_flat + row * C + c0;
              const A w = t.w[q] * mk;
#pragma omp simd
              for (int64_t i = 0; i < cw; ++i) gf[i] += w * g[i];
            }
            if (pd && row != zero_row) d[q] = dot_row<T, A>(f, g, cw);
          }
          if (pd) {
            pd[j * 3] = t.w[0] * d[0] + t.w[1] * d[1] + t.w[2] * d[2] + t.w[3] * d[3];
            pd[j * 3 + 1] = t.dy[0] * d[0] + t.dy[1] * d[1] + t.dy[2] * d[2] + t.dy[3] * d[3];
            pd[j * 3 + 2] = t.dx[0] * d[0] + t.dx[1] * d[1] + t.dx[2] * d[2] + t.dx[3] * d[3];
          }
          if (cols)
            blend4_row<T, A>(cols + j * C + c0, flat + t.idx[0] * C + c0,
                             flat + t.idx[1] * C + c0, flat + t.idx[2] * C + c0,
                             flat + t.idx[3] * C + c0, t.w[0] * mk, t.w[1] * mk, t.w[2] * mk,
                             t.w[3] * mk, cw);
        }
      }
    }
  });
  if (!need_dots) return;
  for (int64_t j = 0; j < n; ++j) {
    A sm = 0, sy = 0, sx = 0;
    for (int64_t s = 0; s < slices; ++s) {
      const A* p = partial.data() + (s * n + j) * 3;
      sm += p[0], sy += p[1], sx += p[2];
    }
    if (grad_m) grad_m[j] = sm;
    if (grad_py) {
      grad_py[j] = m[j] * sy;
      grad_px[j] = m[j] * sx;
    }
  }
}

// the arithmetic's type of a data type: bf16 computes in fp32
at::ScalarType acc_type(at::ScalarType t) { return t == at::kBFloat16 ? at::kFloat : t; }

// calls f(T*-typed zero, A*-typed zero) for flat's (data, arithmetic) types
template <typename F>
void dispatch(at::ScalarType t, F f) {
  if (t == at::kFloat) f(static_cast<float*>(nullptr), static_cast<float*>(nullptr));
  else if (t == at::kDouble) f(static_cast<double*>(nullptr), static_cast<double*>(nullptr));
  else f(static_cast<uint16_t*>(nullptr), static_cast<float*>(nullptr));
}

template <typename T>
T* ptr(const at::Tensor& t) { return static_cast<T*>(t.data_ptr()); }

void check_positions(const at::Tensor& flat, const at::Tensor& py, const at::Tensor& px,
                     const at::Tensor& m, const at::Tensor& row_base, const at::Tensor& hs,
                     const at::Tensor& ws, int64_t zero_row) {
  TORCH_CHECK(flat.dim() == 2 && flat.is_contiguous(), "flat must be contiguous (R, C)");
  TORCH_CHECK(flat.scalar_type() == at::kFloat || flat.scalar_type() == at::kDouble ||
                  flat.scalar_type() == at::kBFloat16,
              "flat must be float32, float64 or bfloat16, got ", flat.scalar_type());
  const auto acc = acc_type(flat.scalar_type());
  const int64_t rows = py.size(0), K = py.size(1);
  for (const auto* t : {&py, &px, &m}) {
    TORCH_CHECK(t->dim() == 2 && t->size(0) == rows && t->size(1) == K && t->is_contiguous() &&
                    t->scalar_type() == acc,
                "positions and masks must be contiguous (rows, K) in flat's arithmetic type");
  }
  for (const auto* t : {&row_base, &hs, &ws}) {
    TORCH_CHECK(t->dim() == 1 && t->size(0) == rows && t->is_contiguous() &&
                    t->scalar_type() == at::kLong,
                "row_base, hs and ws must be contiguous int64 (rows,)");
  }
  TORCH_CHECK(zero_row >= 0 && zero_row < flat.size(0), "zero_row outside flat");
}

void check_columns(const at::Tensor& flat, const at::Tensor& py, const at::Tensor& cols,
                   const char* what) {
  TORCH_CHECK(cols.dim() == 3 && cols.size(0) == py.size(0) && cols.size(1) == py.size(1) &&
                  cols.size(2) == flat.size(1) && cols.is_contiguous() &&
                  cols.scalar_type() == flat.scalar_type(),
              what, " must be contiguous (rows, K, C) of flat's dtype");
}

void check_per_tap(const at::Tensor& flat, const at::Tensor& py, const at::Tensor& t) {
  TORCH_CHECK(t.sizes() == py.sizes() && t.is_contiguous() &&
                  t.scalar_type() == acc_type(flat.scalar_type()),
              "per-tap gradients must be contiguous (rows, K) in flat's arithmetic type");
}

template <typename T>
T* opt(const c10::optional<at::Tensor>& t) { return t ? ptr<T>(*t) : nullptr; }

// cols (rows, K, C) from tap positions: sample_kernel
void sample(const at::Tensor& flat, const at::Tensor& py, const at::Tensor& px,
            const at::Tensor& m, const at::Tensor& row_base, const at::Tensor& hs,
            const at::Tensor& ws, int64_t zero_row, at::Tensor cols) {
  check_positions(flat, py, px, m, row_base, hs, ws, zero_row);
  check_columns(flat, py, cols, "columns");
  dispatch(flat.scalar_type(), [&](auto* t, auto* a) {
    using T = std::remove_pointer_t<decltype(t)>;
    using A = std::remove_pointer_t<decltype(a)>;
    sample_kernel<T, A>(ptr<T>(flat), ptr<A>(py), ptr<A>(px), ptr<A>(m),
                        row_base.data_ptr<int64_t>(), hs.data_ptr<int64_t>(),
                        ws.data_ptr<int64_t>(), zero_row, ptr<T>(cols), py.size(0), py.size(1),
                        flat.size(1));
  });
}

// sample_backward_kernel; every output optional (grad_py and grad_px together)
void sample_backward(const at::Tensor& flat, const at::Tensor& py, const at::Tensor& px,
                     const at::Tensor& m, const at::Tensor& row_base, const at::Tensor& hs,
                     const at::Tensor& ws, int64_t zero_row, const at::Tensor& gcols,
                     c10::optional<at::Tensor> grad_flat, c10::optional<at::Tensor> grad_py,
                     c10::optional<at::Tensor> grad_px, c10::optional<at::Tensor> grad_m,
                     c10::optional<at::Tensor> cols) {
  check_positions(flat, py, px, m, row_base, hs, ws, zero_row);
  check_columns(flat, py, gcols, "gcols");
  if (cols) check_columns(flat, py, *cols, "columns");
  if (grad_flat) {
    TORCH_CHECK(grad_flat->sizes() == flat.sizes() && grad_flat->is_contiguous() &&
                    grad_flat->scalar_type() == acc_type(flat.scalar_type()),
                "grad_flat must match flat, in its arithmetic type (fp32 for bf16)");
  }
  TORCH_CHECK(grad_py.has_value() == grad_px.has_value(), "grad_py and grad_px go together");
  for (const auto* t : {&grad_py, &grad_px, &grad_m})
    if (*t) check_per_tap(flat, py, **t);
  dispatch(flat.scalar_type(), [&](auto* t, auto* a) {
    using T = std::remove_pointer_t<decltype(t)>;
    using A = std::remove_pointer_t<decltype(a)>;
    sample_backward_kernel<T, A>(ptr<T>(flat), ptr<A>(py), ptr<A>(px), ptr<A>(m),
                                 row_base.data_ptr<int64_t>(), hs.data_ptr<int64_t>(),
                                 ws.data_ptr<int64_t>(), zero_row, ptr<T>(gcols),
                                 opt<A>(grad_flat), opt<A>(grad_py), opt<A>(grad_px),
                                 opt<A>(grad_m), opt<T>(cols), py.size(0), py.size(1),
                                 flat.size(1));
  });
}

}  // namespace

void bind_scale_task(pybind11::module_& m);  // scale_task.cpp

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  bind_scale_task(m);
  m.def("sample", &sample, "masked bilinear columns (rows, K, C) from tap positions");
  m.def("sample_backward", &sample_backward,
        "input, position and mask gradients of sample, and its columns again");
}
