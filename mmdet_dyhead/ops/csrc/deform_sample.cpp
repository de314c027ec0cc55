// Fused bilinear sampling for mmdet_dyhead's CPU modulated deformable conv (deform_conv.py).
//
// The pure-torch path gathers the 4 corners of every tap into a (rows, 4, K, C) buffer and
// then blends them, and in backward multiplies and scatters another buffer of that size:
// memory-bound passes that cost more than the GEMM next to them. These loops read each corner
// row once and write nothing but the result.
//
// Forward (sample): the taps' corners and weights are worked out in the loop from the positions.
// Backward: from tables the Python side builds (it needs the weights' derivatives as well).
// Layouts (all contiguous): flat (R, C) input rows, channels last, last row zero;
// index (rows, 4, K) corner rows into flat; wm (rows, 4, K) masked corner weights;
// cols / gcols (rows, C, K): mmcv's im2col order, so that the (C_out, C, kh, kw) weight is
// the GEMM's (C_out, C*K) matrix as it is, forward and backward, with no copy.
//
// Types: T is the data's (flat, cols, gcols), A the arithmetic's (wm, dots, grad_flat, every
// blend and sum). fp32 and fp64 compute in their own type; bf16 data (CPU autocast) is widened
// to fp32 on load and rounded to nearest-even once on store, so only the stored columns and
// inputs carry bf16's rounding, never a running sum.
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

// acc[i] (+)= w * f[i]
template <typename T, typename A>
inline void axpy_row(A* __restrict__ acc, const T* __restrict__ f, A w, bool first, int64_t n) {
  if (first) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) acc[i] = w * load(f, i);
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) acc[i] += w * load(f, i);
  }
}

template <typename T, typename A>
inline A dot_row(const T* __restrict__ f, const A* __restrict__ g, int64_t n) {
  A acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += load(f, i) * g[i];
  return acc;
}

template <typename T, typename A>
inline void round_row(T* __restrict__ o, const A* __restrict__ v, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) store(o, i, v[i]);
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
inline void axpy_row<uint16_t, float>(float* __restrict__ acc, const uint16_t* __restrict__ f,
                                      float w, bool first, int64_t n) {
  const __m512 vw = _mm512_set1_ps(w);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 x = load16(f + i);
    _mm512_storeu_ps(acc + i, first ? _mm512_mul_ps(vw, x)
                                    : _mm512_fmadd_ps(vw, x, _mm512_loadu_ps(acc + i)));
  }
  for (; i < n; ++i) acc[i] = (first ? 0.f : acc[i]) + w * load(f, i);
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

template <>
inline void round_row<uint16_t, float>(uint16_t* __restrict__ o, const float* __restrict__ v,
                                       int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) store16(o + i, _mm512_loadu_ps(v + i));
  for (; i < n; ++i) store(o, i, v[i]);
}
#endif

// The forward straight from the sampling positions: the corners and their weights are worked
// out per tap here, as _Bilinear does in torch (the same operations in the same order, so the
// same bits), instead of being stored as (rows, 4, K) tables first.
//   py, px, m (rows, K): tap positions and masks; row_base (rows,): the first input row of the
//   position's image; hs, ws (rows,): its map's size; zero_row: the all-zero input row.
template <typename T, typename A>
void sample_kernel(const T* __restrict__ flat, const A* __restrict__ py, const A* __restrict__ px,
                   const A* __restrict__ m, const int64_t* __restrict__ row_base,
                   const int64_t* __restrict__ hs, const int64_t* __restrict__ ws,
                   int64_t zero_row, T* __restrict__ cols, int64_t rows, int64_t K, int64_t C) {
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> tmp(K * C);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t H = hs[r], W = ws[r], base = row_base[r];
      for (int64_t k = 0; k < K; ++k) {
        const A y = py[r * K + k], x = px[r * K + k], mk = m[r * K + k];
        int64_t idx[4] = {zero_row, zero_row, zero_row, zero_row};
        const A none = A(0) * mk;  // a NaN mask spreads even where nothing is sampled, as in mmcv
        A w[4] = {none, none, none, none};
        // outside (-1, H) x (-1, W), or NaN: no sample (as mmcv), and no cast of a NaN
        if (y > -1 && y < H && x > -1 && x < W) {
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
          w[0] = (hy * hx) * mk;
          w[1] = (hy * lx) * mk;
          w[2] = (ly * hx) * mk;
          w[3] = (ly * lx) * mk;
        }
        blend4_row<T, A>(tmp.data() + k * C, flat + idx[0] * C, flat + idx[1] * C,
                         flat + idx[2] * C, flat + idx[3] * C, w[0], w[1], w[2], w[3], C);
      }
      T* __restrict__ out = cols + r * C * K;
      for (int64_t i = 0; i < C; ++i)
        for (int64_t k = 0; k < K; ++k) out[i * K + k] = tmp[k * C + i];
    }
  });
}

// Backward of a chunk, one read of each corner row for all three:
//   grad_flat[index[r,q,k]] += wm[r,q,k] * gcols[r,:,k]       (grad_flat optional)
//   dots[r,q,k] = <flat[index[r,q,k]], gcols[r,:,k]>           (dots optional)
//   cols[r,:,k] = sum_q wm[r,q,k] * flat[index[r,q,k]]         (cols optional: for the weight grad)
// Taps of different positions hit the same input rows, so threads split the channels, not the
// taps: no two threads ever add to the same element. Each keeps partial dots of its channels.
template <typename T, typename A>
void backward_kernel(const T* __restrict__ flat, const int64_t* __restrict__ index,
                     const A* __restrict__ wm, const T* __restrict__ gcols,
                     A* __restrict__ grad_flat, A* __restrict__ dots, T* __restrict__ cols,
                     int64_t rows, int64_t K, int64_t C) {
  const int64_t n = rows * 4 * K;
  const int64_t lanes = 16;
  const int64_t slices = std::max<int64_t>(
      1, std::min<int64_t>(at::get_num_threads(), (C + lanes - 1) / lanes));
  const int64_t width = ((C + slices - 1) / slices + lanes - 1) / lanes * lanes;
  std::vector<A> partial(dots ? slices * n : 0);
  at::parallel_for(0, slices, 1, [&](int64_t sb, int64_t se) {
    std::vector<A> g(K * width), b(width);  // this position's (K, slice) gradient block
    std::vector<T> bt(K * width);             // and its columns, rounded to the data's type
    for (int64_t s = sb; s < se; ++s) {
      const int64_t c0 = s * width, c1 = std::min(C, c0 + width), cw = c1 - c0;
      if (cw <= 0) continue;
      A* pd = dots ? partial.data() + s * n : nullptr;
      for (int64_t r = 0; r < rows; ++r) {
        const T* src = gcols + r * C * K + c0 * K;
        for (int64_t i = 0; i < cw; ++i)
          for (int64_t k = 0; k < K; ++k) g[k * width + i] = load(src, i * K + k);
        for (int64_t k = 0; k < K; ++k) {
          const A* __restrict__ gk = g.data() + k * width;
          // fp32/fp64 blend straight into the columns block; bf16 blends in fp32, then rounds
          constexpr bool same = std::is_same<T, A>::value;
          A* __restrict__ bk = same ? reinterpret_cast<A*>(bt.data() + k * width) : b.data();
          for (int q = 0; q < 4; ++q) {
            const int64_t j = r * 4 * K + q * K + k, row = index[j];
            const A w = wm[j];
            const T* __restrict__ f = flat + row * C + c0;
            if (grad_flat) {
              A* __restrict__ gf = grad_flat + row * C + c0;
#pragma omp simd
              for (int64_t i = 0; i < cw; ++i) gf[i] += w * gk[i];
            }
            if (pd) pd[j] = dot_row<T, A>(f, gk, cw);
            if (cols) axpy_row<T, A>(bk, f, w, q == 0, cw);
          }
          if (cols && !same) round_row<T, A>(bt.data() + k * width, bk, cw);
        }
        if (cols) {
          T* dst = cols + r * C * K + c0 * K;
          for (int64_t i = 0; i < cw; ++i)
            for (int64_t k = 0; k < K; ++k) dst[i * K + k] = bt[k * width + i];
        }
      }
    }
  });
  if (dots) {
    for (int64_t j = 0; j < n; ++j) {
      A acc = 0;
      for (int64_t s = 0; s < slices; ++s) acc += partial[s * n + j];
      dots[j] = acc;
    }
  }
}

// the arithmetic's type of a data type: bf16 computes in fp32
at::ScalarType acc_type(at::ScalarType t) { return t == at::kBFloat16 ? at::kFloat : t; }

void check(const at::Tensor& flat, const at::Tensor& index, const at::Tensor& wm,
           const at::Tensor& cols) {
  TORCH_CHECK(flat.dim() == 2 && flat.is_contiguous(), "flat must be contiguous (R, C)");
  TORCH_CHECK(flat.scalar_type() == at::kFloat || flat.scalar_type() == at::kDouble ||
                  flat.scalar_type() == at::kBFloat16,
              "flat must be float32, float64 or bfloat16, got ", flat.scalar_type());
  TORCH_CHECK(index.dim() == 3 && index.size(1) == 4 && index.is_contiguous() &&
                  index.scalar_type() == at::kLong,
              "index must be contiguous int64 (rows, 4, K)");
  TORCH_CHECK(wm.sizes() == index.sizes() && wm.is_contiguous() &&
                  wm.scalar_type() == acc_type(flat.scalar_type()),
              "wm must match index, in flat's arithmetic type (fp32 for bf16)");
  TORCH_CHECK(cols.dim() == 3 && cols.size(0) == index.size(0) && cols.size(1) == flat.size(1) &&
                  cols.size(2) == index.size(2) && cols.is_contiguous() &&
                  cols.scalar_type() == flat.scalar_type(),
              "columns must be contiguous (rows, C, K) of flat's dtype");
}

// calls f(T*-typed zero, A*-typed zero) for flat's (data, arithmetic) types
template <typename F>
void dispatch(at::ScalarType t, F f) {
  if (t == at::kFloat) f(static_cast<float*>(nullptr), static_cast<float*>(nullptr));
  else if (t == at::kDouble) f(static_cast<double*>(nullptr), static_cast<double*>(nullptr));
  else f(static_cast<uint16_t*>(nullptr), static_cast<float*>(nullptr));
}

template <typename T>
T* ptr(const at::Tensor& t) { return static_cast<T*>(t.data_ptr()); }

// cols (rows, C, K) from tap positions: sample_kernel
void sample(const at::Tensor& flat, const at::Tensor& py, const at::Tensor& px,
            const at::Tensor& m, const at::Tensor& row_base, const at::Tensor& hs,
            const at::Tensor& ws, int64_t zero_row, at::Tensor cols) {
  TORCH_CHECK(flat.dim() == 2 && flat.is_contiguous(), "flat must be contiguous (R, C)");
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
  TORCH_CHECK(cols.dim() == 3 && cols.size(0) == rows && cols.size(1) == flat.size(1) &&
                  cols.size(2) == K && cols.is_contiguous() &&
                  cols.scalar_type() == flat.scalar_type(),
              "columns must be contiguous (rows, C, K) of flat's dtype");
  dispatch(flat.scalar_type(), [&](auto* t, auto* a) {
    using T = std::remove_pointer_t<decltype(t)>;
    using A = std::remove_pointer_t<decltype(a)>;
    sample_kernel<T, A>(ptr<T>(flat), ptr<A>(py), ptr<A>(px), ptr<A>(m),
                        row_base.data_ptr<int64_t>(), hs.data_ptr<int64_t>(),
                        ws.data_ptr<int64_t>(), zero_row, ptr<T>(cols), rows, K, flat.size(1));
  });
}

// backward_kernel's three outputs, each optional; gcols (rows, C, K)
void backward(const at::Tensor& flat, const at::Tensor& index, const at::Tensor& wm,
              const at::Tensor& gcols, c10::optional<at::Tensor> grad_flat,
              c10::optional<at::Tensor> dots, c10::optional<at::Tensor> cols) {
  check(flat, index, wm, gcols);
  const auto acc = acc_type(flat.scalar_type());
  if (grad_flat) {
    TORCH_CHECK(grad_flat->sizes() == flat.sizes() && grad_flat->is_contiguous() &&
                    grad_flat->scalar_type() == acc,
                "grad_flat must match flat, in its arithmetic type (fp32 for bf16)");
  }
  if (dots) {
    TORCH_CHECK(dots->sizes() == index.sizes() && dots->is_contiguous() &&
                    dots->scalar_type() == acc,
                "dots must be contiguous (rows, 4, K) in flat's arithmetic type");
  }
  if (cols) check(flat, index, wm, *cols);
  dispatch(flat.scalar_type(), [&](auto* t, auto* a) {
    using T = std::remove_pointer_t<decltype(t)>;
    using A = std::remove_pointer_t<decltype(a)>;
    backward_kernel<T, A>(ptr<T>(flat), index.data_ptr<int64_t>(), ptr<A>(wm), ptr<T>(gcols),
                          grad_flat ? ptr<A>(*grad_flat) : nullptr,
                          dots ? ptr<A>(*dots) : nullptr, cols ? ptr<T>(*cols) : nullptr,
                          index.size(0), index.size(2), flat.size(1));
  });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("sample", &sample, "masked bilinear columns from tap positions");
  m.def("backward", &backward, "scatter to the input, corner dot products, columns");
}
