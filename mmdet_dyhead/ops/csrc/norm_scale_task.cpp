// A level's whole DyHead block after the deformable convs: GroupNorm of each branch, the resize
// of a branch of another size, the scale-aware weighted sum and the task-aware dynamic ReLU, in
// two reads of each branch and one write of the output (norm_scale_task.py has the math that
// turns the first pass's sums into the second's factors, and the autograd Function whose
// backward runs the two backward passes below):
//
//   channel_moments:        per (n, c): sum, sum of squares and the sum the bilinear resize to
//                           the level's size would have, of a branch's raw conv output
//   norm_scale_task_forward: out = max(a1 * s + b1, a2 * s + b2),  s = sum_i m_i[n, c] * r_i,
//                           r_i the raw branch, resized on the fly (bilinear, align_corners);
//                           with the sign codes when a backward will come
//
// GroupNorm is per-channel affine (its statistics fixed), the resize a weighted mean with weights
// summing to 1, so both fold into the factors m_i and the offsets b1, b2: nothing of a level's
// size is written but its output. Torch ops write each normalised branch, the resized one and
// the weighted sum, and read them back for the averages and the dynamic ReLU.
//
// Maps are read through their strides with the channels contiguous (stride 1): a half of the
// stacked same/coarser conv's output needs no copy.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include "dtypes.h"
#include "dynamic_relu.h"

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

using mmdet_dyhead::load;
using mmdet_dyhead::nan_max;
using mmdet_dyhead::sign_code;
using mmdet_dyhead::split_grad;
using mmdet_dyhead::store;

// T: the maps' element type (bf16 as its bits under CPU autocast; the output and its gradient
// share it), A: the arithmetic's (fp32 for bf16: factors, coefficients, every sum)

// torch's bilinear resize with align_corners=True along one axis, output index t: the two source
// indices and their weights, computed as upsample_bilinear2d does (scale in the data's type)
template <typename A>
struct Axis {
  std::vector<int64_t> i0, i1;
  std::vector<A> l0, l1;

  Axis(int64_t src, int64_t dst) : i0(dst), i1(dst), l0(dst), l1(dst) {
    const A scale = dst > 1 ? static_cast<A>(src - 1) / static_cast<A>(dst - 1) : A(0);
    for (int64_t t = 0; t < dst; ++t) {
      const A real = scale * static_cast<A>(t);
      const int64_t a = std::min(static_cast<int64_t>(real), src - 1);
      i0[t] = a;
      i1[t] = a + (a < src - 1 ? 1 : 0);
      l1[t] = real - static_cast<A>(a);
      l0[t] = A(1) - l1[t];
    }
  }

  // how much each source index weighs in the resized axis, summed over the output
  std::vector<double> weights(int64_t src) const {
    std::vector<double> w(src, 0.0);
    for (size_t t = 0; t < i0.size(); ++t) w[i0[t]] += l0[t], w[i1[t]] += l1[t];
    return w;
  }

  // per source index, the (output index, weight) pairs blended from it, in output order (the
  // resize's transpose, for its backward)
  std::vector<std::vector<std::pair<int64_t, A>>> by_source(int64_t src) const {
    std::vector<std::vector<std::pair<int64_t, A>>> t(src);
    for (size_t o = 0; o < i0.size(); ++o) {
      t[i0[o]].push_back({static_cast<int64_t>(o), l0[o]});
      t[i1[o]].push_back({static_cast<int64_t>(o), l1[o]});
    }
    return t;
  }
};

struct Strided {
  int64_t N, C, H, W, sn, sh, sw;
};

Strided strided(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && x.stride(1) == 1,
              "maps must be (N, C, H, W) with contiguous channels (channels-last strides)");
  return {x.size(0), x.size(1), x.size(2), x.size(3), x.stride(0), x.stride(2), x.stride(3)};
}

// calls f(T*-typed null, A*-typed null) for the maps' (element, arithmetic) types
template <typename F>
void dispatch(at::ScalarType t, F f) {
  if (t == at::kFloat) f(static_cast<float*>(nullptr), static_cast<float*>(nullptr));
  else if (t == at::kDouble) f(static_cast<double*>(nullptr), static_cast<double*>(nullptr));
  else f(static_cast<uint16_t*>(nullptr), static_cast<float*>(nullptr));
}

at::ScalarType acc_type(at::ScalarType t) { return t == at::kBFloat16 ? at::kFloat : t; }

template <typename T, typename A>
void moments_kernel(const T* x, const Strided& s, const std::vector<double>& rw,
                    const std::vector<double>& cw, double* out) {
  const int64_t C = s.C, rows = s.N * s.H;
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows));
  // each part sums its rows on its own, [n][sum | squares | resized] per channel; added after
  std::vector<double> part(parts * s.N * 3 * C, 0.0);
  at::parallel_for(0, parts, 1, [&](int64_t pb, int64_t pe) {
    std::vector<A> r1(C), r2(C), r3(C);
    for (int64_t p = pb; p < pe; ++p) {
      const int64_t per = (rows + parts - 1) / parts;
      for (int64_t row = p * per; row < std::min(rows, (p + 1) * per); ++row) {
        const int64_t n = row / s.H, h = row % s.H;
        std::fill(r1.begin(), r1.end(), A(0));
        std::fill(r2.begin(), r2.end(), A(0));
        std::fill(r3.begin(), r3.end(), A(0));
        A* __restrict__ q1 = r1.data();
        A* __restrict__ q2 = r2.data();
        A* __restrict__ q3 = r3.data();
        for (int64_t w = 0; w < s.W; ++w) {
          const T* __restrict__ v = x + n * s.sn + h * s.sh + w * s.sw;
          const A k = static_cast<A>(cw[w]);
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) {
            const A e = load(v, c);
            q1[c] += e, q2[c] += e * e, q3[c] += k * e;
          }
        }
        // a row's sums (at most a few hundred terms) in A, the rows' in double
        double* o = part.data() + (p * s.N + n) * 3 * C;
        const double kh = rw[h];
        for (int64_t c = 0; c < C; ++c)
          o[c] += q1[c], o[C + c] += q2[c], o[2 * C + c] += kh * q3[c];
      }
    }
  });
  for (int64_t p = 0; p < parts; ++p)
    for (int64_t i = 0; i < s.N * 3 * C; ++i) out[i] += part[p * s.N * 3 * C + i];
}

// maps: B maps (N, C, H_b, W_b) of one N, C and dtype -> (B, N, 3, C) in double: per channel the
// sum, the sum of squares, and the sum of the map resized to sizes[b] (bilinear, align_corners;
// the plain sum at the same size)
at::Tensor channel_moments(const std::vector<at::Tensor>& maps,
                           const std::vector<std::vector<int64_t>>& sizes) {
  // named for the profile's GroupNorm category (utils/profile.py): these are its statistics
  RECORD_FUNCTION("mmdet_dyhead::group_norm_moments", std::vector<c10::IValue>());
  TORCH_CHECK(!maps.empty() && maps.size() == sizes.size(), "one size per map, at least one map");
  const auto dtype = maps[0].scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16,
              "channel_moments takes float32, float64 or bfloat16 maps");
  const int64_t B = static_cast<int64_t>(maps.size()), N = maps[0].size(0), C = maps[0].size(1);
  at::Tensor out = at::zeros({B, N, 3, C}, maps[0].options().dtype(at::kDouble));
  for (int64_t b = 0; b < B; ++b) {
    const Strided s = strided(maps[b]);
    TORCH_CHECK(s.N == N && s.C == C && maps[b].scalar_type() == dtype,
                "maps must share N, C and dtype");
    TORCH_CHECK(sizes[b].size() == 2 && sizes[b][0] > 0 && sizes[b][1] > 0,
                "each resized size must be two positive ints");
    const int64_t oh = sizes[b][0], ow = sizes[b][1];
    dispatch(dtype, [&](auto* t, auto* a) {
      using T = std::remove_pointer_t<decltype(t)>;
      using A = std::remove_pointer_t<decltype(a)>;
      const bool same = oh == s.H && ow == s.W;
      const auto rw = same ? std::vector<double>(s.H, 1.0) : Axis<A>(s.H, oh).weights(s.H);
      const auto cw = same ? std::vector<double>(s.W, 1.0) : Axis<A>(s.W, ow).weights(s.W);
      moments_kernel<T, A>(static_cast<const T*>(maps[b].data_ptr()), s, rw, cw,
                           out.data_ptr<double>() + b * N * 3 * C);
    });
  }
  return out;
}

template <typename T, typename A>
struct Branch {
  const T* x;
  Strided s;
  bool resized;
  Axis<A> ay, ax;
};

// the branch's channels at output position (n, h, w), in A: a pointer into the map or, for a
// resized branch (or bf16 data), written into buf; the resize is upsample_bilinear2d's blend
// h0l * (w0l * v00 + w1l * v01) + h1l * (w0l * v10 + w1l * v11)
template <typename T, typename A>
inline const A* value_row(const Branch<T, A>& b, int64_t n, int64_t h, int64_t w, int64_t C,
                          A* __restrict__ buf) {
  const T* base = b.x + n * b.s.sn;
  if (!b.resized) {
    const T* __restrict__ v = base + h * b.s.sh + w * b.s.sw;
    if constexpr (std::is_same<T, A>::value) {
      return v;
    } else {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) buf[c] = load(v, c);
      return buf;
    }
  }
  const A hy0 = b.ay.l0[h], hy1 = b.ay.l1[h], wx0 = b.ax.l0[w], wx1 = b.ax.l1[w];
  const T* __restrict__ v00 = base + b.ay.i0[h] * b.s.sh + b.ax.i0[w] * b.s.sw;
  const T* __restrict__ v01 = base + b.ay.i0[h] * b.s.sh + b.ax.i1[w] * b.s.sw;
  const T* __restrict__ v10 = base + b.ay.i1[h] * b.s.sh + b.ax.i0[w] * b.s.sw;
  const T* __restrict__ v11 = base + b.ay.i1[h] * b.s.sh + b.ax.i1[w] * b.s.sw;
#pragma omp simd
  for (int64_t c = 0; c < C; ++c)
    buf[c] = hy0 * (wx0 * load(v00, c) + wx1 * load(v01, c)) +
             hy1 * (wx0 * load(v10, c) + wx1 * load(v11, c));
  return buf;
}

struct Geometry {
  int64_t N, C, H, W;
};

// The L (1 to 3) branches' rows at one position and their factors m_i: local restricted
// pointers, so that the fused loops below vectorise (the sign codes are int8 stores, which may
// alias anything reached through memory)
template <typename A>
struct Rows {
  const A* __restrict__ v0;
  const A* __restrict__ v1;
  const A* __restrict__ v2;
  const A* __restrict__ m0;
  const A* __restrict__ m1;
  const A* __restrict__ m2;

  Rows(const A* const* v, const A* m, int64_t L, int64_t C)
      : v0(v[0]), v1(v[L > 1 ? 1 : 0]), v2(v[L > 2 ? 2 : 0]), m0(m), m1(m + (L > 1 ? C : 0)),
        m2(m + (L > 2 ? 2 * C : 0)) {}

  // s = sum_i m_i * v_i at channel c, the branches added in order
  template <int L>
  inline A sum(int64_t c) const {
    A s = m0[c] * v0[c];
    if (L > 1) s += m1[c] * v1[c];
    if (L > 2) s += m2[c] * v2[c];
    return s;
  }
};

// the branches' rows at (n, h, w): a pointer into each map or, for a resized branch (or bf16
// data), its blend written into bufs
template <typename T, typename A>
inline void rows_at(const std::vector<Branch<T, A>>& br, int64_t n, int64_t h, int64_t w,
                    int64_t C, A* bufs, const A** v) {
  for (size_t i = 0; i < br.size(); ++i) v[i] = value_row(br[i], n, h, w, C, bufs + i * C);
}

// calls f(std::integral_constant<int, L>) for L = 1, 2 or 3 branches
template <typename F>
inline void with_branches(int64_t L, F f) {
  if (L == 1) f(std::integral_constant<int, 1>());
  else if (L == 2) f(std::integral_constant<int, 2>());
  else f(std::integral_constant<int, 3>());
}

template <typename T, typename A>
void forward_kernel(const std::vector<Branch<T, A>>& br, const A* m, const A* a1, const A* b1,
                    const A* a2, const A* b2, T* out, int8_t* code, const Geometry& g) {
  const int64_t C = g.C, H = g.H, W = g.W, L = static_cast<int64_t>(br.size());
  with_branches(L, [&](auto branches) {
    constexpr int NB = decltype(branches)::value;
    at::parallel_for(0, g.N * H, 1, [&](int64_t begin, int64_t end) {
      std::vector<A> bufs(L * C);
      const A* v[3];
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / H, h = row % H;
        const A* __restrict__ c1 = a1 + n * C;
        const A* __restrict__ d1 = b1 + n * C;
        const A* __restrict__ c2 = a2 + n * C;
        const A* __restrict__ d2 = b2 + n * C;
        for (int64_t w = 0; w < W; ++w) {
          rows_at(br, n, h, w, C, bufs.data(), v);
          const Rows<A> r(v, m + n * L * C, L, C);
          const int64_t at = ((n * H + h) * W + w) * C;
          T* __restrict__ o = out + at;
          if (code) {
            int8_t* __restrict__ k = code + at;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) {
              const A s = r.template sum<NB>(c);
              const A y1 = c1[c] * s + d1[c], y2 = c2[c] * s + d2[c];
              store(o, c, nan_max(y1, y2));
              k[c] = sign_code(y1, y2);
            }
          } else {
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) {
              const A s = r.template sum<NB>(c);
              store(o, c, nan_max(c1[c] * s + d1[c], c2[c] * s + d2[c]));
            }
          }
        }
      }
    });
  });
}

// Backward, first pass: per (n, c) the sums the small (N, C) math needs, in double:
// dm[n, i, c] = sum gs * v_i and, in dcoef[n, 0..3, c], sum h1 * s, sum h1, sum h2 * s, sum h2
// (gs = h1 * a1 + h2 * a2, the gradient of s)
template <typename T, typename A>
void sums_kernel(const std::vector<Branch<T, A>>& br, const T* grad, const int8_t* code, const A* m,
                 const A* a1, const A* a2, double* dm, double* dcoef, const Geometry& g) {
  const int64_t C = g.C, H = g.H, W = g.W, N = g.N, L = static_cast<int64_t>(br.size());
  const int64_t rows = N * H;
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows));
  const int64_t width = N * (L + 4) * C;  // per part: [n][dm_0 .. dm_L-1 | 4 coefficient sums]
  std::vector<double> part(parts * width, 0.0);
  with_branches(L, [&](auto branches) {
    constexpr int NB = decltype(branches)::value;
    at::parallel_for(0, parts, 1, [&](int64_t pb, int64_t pe) {
      std::vector<A> bufs(L * C), row_sums((L + 4) * C);
      const A* v[3];
      for (int64_t p = pb; p < pe; ++p) {
        const int64_t per = (rows + parts - 1) / parts;
        for (int64_t row = p * per; row < std::min(rows, (p + 1) * per); ++row) {
          const int64_t n = row / H, h = row % H;
          std::fill(row_sums.begin(), row_sums.end(), A(0));
          A* __restrict__ t0 = row_sums.data();
          A* __restrict__ tb = t0 + (NB > 1 ? C : 0);
          A* __restrict__ tc = t0 + (NB > 2 ? 2 * C : 0);
          A* __restrict__ t1 = t0 + L * C;
          A* __restrict__ t2 = t1 + C;
          A* __restrict__ t3 = t2 + C;
          A* __restrict__ t4 = t3 + C;
          const A* __restrict__ c1 = a1 + n * C;
          const A* __restrict__ c2 = a2 + n * C;
          for (int64_t w = 0; w < W; ++w) {
            rows_at(br, n, h, w, C, bufs.data(), v);
            const Rows<A> r(v, m + n * L * C, L, C);
            const int64_t at = ((n * H + h) * W + w) * C;
            const T* __restrict__ gr = grad + at;
            const int8_t* __restrict__ k = code + at;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) {
              A h1, h2;
              split_grad(k[c], load(gr, c), h1, h2);
              const A gs = h1 * c1[c] + h2 * c2[c], s = r.template sum<NB>(c);
              t0[c] += gs * r.v0[c];
              if (NB > 1) tb[c] += gs * r.v1[c];
              if (NB > 2) tc[c] += gs * r.v2[c];
              t1[c] += h1 * s, t2[c] += h1, t3[c] += h2 * s, t4[c] += h2;
            }
          }
          double* o = part.data() + p * width + n * (L + 4) * C;
          for (int64_t j = 0; j < (L + 4) * C; ++j) o[j] += row_sums[j];
        }
      }
    });
  });
  for (int64_t n = 0; n < N; ++n)
    for (int64_t p = 0; p < parts; ++p) {
      const double* q = part.data() + p * width + n * (L + 4) * C;
      for (int64_t j = 0; j < L * C; ++j) dm[n * L * C + j] += q[j];
      for (int64_t j = 0; j < 4 * C; ++j) dcoef[n * 4 * C + j] += q[L * C + j];
    }
}

// Backward, second pass: each branch's map gradient. A branch of the output's size gets
// d v_i = m_i * gs + k1_i + k2_i * v_i in place (its statistics' part folded in by k1, k2); a
// resized one gets m_i * gs + k1_i at the output's size, which the caller takes back through the
// resize.
template <typename T, typename A>
void maps_kernel(const std::vector<Branch<T, A>>& br, const T* grad, const int8_t* code,
                 const A* m, const A* a1, const A* a2, const A* k1, const A* k2,
                 const std::vector<void*>& dst, const std::vector<Strided>& ds,
                 const Geometry& g) {
  const int64_t C = g.C, H = g.H, W = g.W, L = static_cast<int64_t>(br.size());
  at::parallel_for(0, g.N * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> acc(C), bufs(L * C), gsv(C);
    std::vector<const A*> v(L);
    A* __restrict__ s = acc.data();
    A* __restrict__ gs = gsv.data();
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / H, h = row % H;
      const A* __restrict__ c1 = a1 + n * C;
      const A* __restrict__ c2 = a2 + n * C;
      for (int64_t w = 0; w < W; ++w) {
        // only the rows of the branches of the output's size are needed here (not s, and not a
        // resized branch's blend)
        for (int64_t i = 0; i < L; ++i)
          if (!br[i].resized) v[i] = value_row(br[i], n, h, w, C, bufs.data() + i * C);
        const int64_t at = ((n * H + h) * W + w) * C;
        const T* __restrict__ gr = grad + at;
        const int8_t* __restrict__ k = code + at;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          A h1, h2;
          split_grad(k[c], load(gr, c), h1, h2);
          gs[c] = h1 * c1[c] + h2 * c2[c];
        }
        for (int64_t i = 0; i < L; ++i) {
          const A* __restrict__ mi = m + (n * L + i) * C;
          const A* __restrict__ p1 = k1 + (n * L + i) * C;
          const A* __restrict__ p2 = k2 + (n * L + i) * C;
          const int64_t at_d = n * ds[i].sn + h * ds[i].sh + w * ds[i].sw;
          if (br[i].resized) {  // at the output's size, in A
            A* __restrict__ d = static_cast<A*>(dst[i]) + at_d;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) d[c] = mi[c] * gs[c] + p1[c];
          } else {  // the branch's own gradient, in its type
            T* __restrict__ d = static_cast<T*>(dst[i]) + at_d;
            const A* __restrict__ vi = v[i];
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) store(d, c, mi[c] * gs[c] + p1[c] + p2[c] * vi[c]);
          }
        }
      }
    }
  });
}

// dst = R^T fine + k2 * r + k1, R the bilinear resize (align_corners) of r's size to fine's: a
// resized branch's gradient at its own size, from its gradient at the output's size, plus its
// statistics' share. R^T is gathered per row of dst (each thread writes its own rows): a dst
// pixel adds the fine pixels blended from it, in raster order, each with its two weights'
// product, as upsample_bilinear2d_backward's scatter adds them; one pass instead of torch's
// resize backward and three passes to add the shares and copy into the strided rows.
template <typename T, typename A>
void resize_back_kernel(const A* fine, int64_t h, int64_t w, const T* r, const Strided& rs,
                        const A* k1, const A* k2, T* dst, const Strided& ds) {
  const int64_t C = rs.C, H = rs.H, W = rs.W;
  const auto ty = Axis<A>(H, h).by_source(H), tx = Axis<A>(W, w).by_source(W);
  at::parallel_for(0, rs.N * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> acc(W * C);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / H, y = row % H;
      std::fill(acc.begin(), acc.end(), A(0));
      for (const auto& [fy, wy] : ty[y]) {
        const A* frow = fine + (n * h + fy) * w * C;
        for (int64_t x = 0; x < W; ++x) {
          A* __restrict__ q = acc.data() + x * C;
          for (const auto& [fx, wx] : tx[x]) {
            const A k = wy * wx;
            const A* __restrict__ g = frow + fx * C;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) q[c] += k * g[c];
          }
        }
      }
      const A* __restrict__ p1 = k1 + n * C;
      const A* __restrict__ p2 = k2 + n * C;
      for (int64_t x = 0; x < W; ++x) {
        const A* __restrict__ q = acc.data() + x * C;
        const T* __restrict__ v = r + n * rs.sn + y * rs.sh + x * rs.sw;
        T* __restrict__ d = dst + n * ds.sn + y * ds.sh + x * ds.sw;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) store(d, c, q[c] + p2[c] * load(v, c) + p1[c]);
      }
    }
  });
}

template <typename T, typename A>
std::vector<Branch<T, A>> branches_of(const std::vector<at::Tensor>& maps, int64_t H,
                                      int64_t W) {
  std::vector<Branch<T, A>> br;
  for (const auto& b : maps) {
    const Strided s = strided(b);
    br.push_back({static_cast<const T*>(b.data_ptr()), s, s.H != H || s.W != W, Axis<A>(s.H, H), Axis<A>(s.W, W)});
  }
  return br;
}

void check_level(const std::vector<at::Tensor>& branches, const at::Tensor& m,
                 const std::vector<const at::Tensor*>& coefficients) {
  TORCH_CHECK(!branches.empty() && branches.size() <= 3, "1 to 3 branches");
  const auto dtype = branches[0].scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16,
              "the folded scale/task pass takes float32, float64 or bfloat16 maps");
  const auto acc = acc_type(dtype);
  const int64_t N = branches[0].size(0), C = branches[0].size(1),
                L = static_cast<int64_t>(branches.size());
  for (const auto& b : branches)
    TORCH_CHECK(b.dim() == 4 && b.size(0) == N && b.size(1) == C && b.scalar_type() == dtype,
                "branches must share N, C and dtype");
  TORCH_CHECK(m.sizes() == at::IntArrayRef({N, L, C}) && m.is_contiguous() &&
                  m.scalar_type() == acc,
              "m must be a contiguous (N, L', C) tensor of the arithmetic's dtype");
  for (const auto* t : coefficients)
    TORCH_CHECK(t->sizes() == at::IntArrayRef({N, C}) && t->is_contiguous() &&
                    t->scalar_type() == acc,
                "coefficients must be contiguous (N, C) tensors of the arithmetic's dtype");
}

// an output-sized map (grad, code): (N, C, H, W) channels-last
void check_output_map(const at::Tensor& t, const at::Tensor& like, int64_t H, int64_t W,
                      const char* what) {
  TORCH_CHECK(t.dim() == 4 && t.size(0) == like.size(0) && t.size(1) == like.size(1) &&
                  t.size(2) == H && t.size(3) == W &&
                  t.is_contiguous(at::MemoryFormat::ChannelsLast),
              what, " must be (N, C, H, W) of the output's size, channels-last");
}

// branches: L' raw maps (N, C, H_i, W_i), channels contiguous, fp32, fp64 or bf16; m (N, L', C);
// a1, b1, a2, b2 (N, C), in the arithmetic's type (fp32 for bf16 maps). Returns [out (N, C,
// out_h, out_w) channels-last, in the maps' type (computed in the arithmetic's, rounded once)]
// and, if with_code, the sign codes (int8, same layout) the backward needs.
std::vector<at::Tensor> norm_scale_task_forward(const std::vector<at::Tensor>& branches,
                                                const at::Tensor& m, const at::Tensor& a1,
                                                const at::Tensor& b1, const at::Tensor& a2,
                                                const at::Tensor& b2, int64_t out_h,
                                                int64_t out_w, bool with_code) {
  RECORD_FUNCTION("mmdet_dyhead::norm_scale_task", std::vector<c10::IValue>());
  check_level(branches, m, {&a1, &b1, &a2, &b2});
  TORCH_CHECK(out_h > 0 && out_w > 0, "the output size must be positive");
  const Geometry g{branches[0].size(0), branches[0].size(1), out_h, out_w};
  const auto cl = branches[0].options().memory_format(at::MemoryFormat::ChannelsLast);
  at::Tensor out = at::empty({g.N, g.C, out_h, out_w}, cl);
  at::Tensor code = with_code ? at::empty({g.N, g.C, out_h, out_w}, cl.dtype(at::kChar))
                              : at::Tensor();
  dispatch(branches[0].scalar_type(), [&](auto* t, auto* a) {
    using T = std::remove_pointer_t<decltype(t)>;
    using A = std::remove_pointer_t<decltype(a)>;
    forward_kernel<T, A>(branches_of<T, A>(branches, out_h, out_w), m.data_ptr<A>(),
                         a1.data_ptr<A>(), b1.data_ptr<A>(), a2.data_ptr<A>(), b2.data_ptr<A>(),
                         static_cast<T*>(out.data_ptr()), with_code ? code.data_ptr<int8_t>() : nullptr, g);
  });
  return with_code ? std::vector<at::Tensor>{out, code} : std::vector<at::Tensor>{out};
}

// [dm (N, L', C), dcoef (N, 4, C)] in double: see sums_kernel
std::vector<at::Tensor> norm_scale_task_backward_sums(const at::Tensor& grad,
                                                      const at::Tensor& code,
                                                      const std::vector<at::Tensor>& branches,
                                                      const at::Tensor& m, const at::Tensor& a1,
                                                      const at::Tensor& a2) {
  RECORD_FUNCTION("mmdet_dyhead::norm_scale_task_backward", std::vector<c10::IValue>());
  check_level(branches, m, {&a1, &a2});
  const int64_t H = grad.size(2), W = grad.size(3);
  check_output_map(grad, branches[0], H, W, "grad");
  check_output_map(code, branches[0], H, W, "code");
  TORCH_CHECK(grad.scalar_type() == branches[0].scalar_type() && code.scalar_type() == at::kChar,
              "grad must be of the maps' dtype, code int8");
  const Geometry g{grad.size(0), grad.size(1), H, W};
  const auto opts = grad.options().dtype(at::kDouble).memory_format(at::MemoryFormat::Contiguous);
  at::Tensor dm = at::zeros({g.N, static_cast<int64_t>(branches.size()), g.C}, opts);
  at::Tensor dcoef = at::zeros({g.N, 4, g.C}, opts);
  dispatch(branches[0].scalar_type(), [&](auto* t, auto* a) {
    using T = std::remove_pointer_t<decltype(t)>;
    using A = std::remove_pointer_t<decltype(a)>;
    sums_kernel<T, A>(branches_of<T, A>(branches, H, W), static_cast<const T*>(grad.data_ptr()),
                      code.data_ptr<int8_t>(), m.data_ptr<A>(), a1.data_ptr<A>(),
                      a2.data_ptr<A>(), dm.data_ptr<double>(), dcoef.data_ptr<double>(), g);
  });
  return {dm, dcoef};
}

// writes each branch's gradient into dst[i] (see maps_kernel): the branch's own size and type
// (any strides, channels contiguous) or, for a resized branch, the output's size in the
// arithmetic's type
void norm_scale_task_backward_maps(const at::Tensor& grad, const at::Tensor& code,
                                   const std::vector<at::Tensor>& branches, const at::Tensor& m,
                                   const at::Tensor& a1, const at::Tensor& a2,
                                   const at::Tensor& k1, const at::Tensor& k2,
                                   const std::vector<at::Tensor>& dst) {
  RECORD_FUNCTION("mmdet_dyhead::norm_scale_task_backward", std::vector<c10::IValue>());
  check_level(branches, m, {&a1, &a2});
  const int64_t H = grad.size(2), W = grad.size(3);
  check_output_map(grad, branches[0], H, W, "grad");
  check_output_map(code, branches[0], H, W, "code");
  TORCH_CHECK(k1.sizes() == m.sizes() && k2.sizes() == m.sizes() && k1.is_contiguous() &&
                  k2.is_contiguous() && k1.scalar_type() == m.scalar_type() &&
                  k2.scalar_type() == m.scalar_type(),
              "k1, k2 must be contiguous like m");
  TORCH_CHECK(dst.size() == branches.size(), "one destination per branch");
  TORCH_CHECK(grad.scalar_type() == branches[0].scalar_type() && code.scalar_type() == at::kChar,
              "grad must be of the maps' dtype, code int8");
  const Geometry g{grad.size(0), grad.size(1), H, W};
  std::vector<Strided> ds;
  for (size_t i = 0; i < dst.size(); ++i) {
    const Strided d = strided(dst[i]);
    const bool resized = branches[i].size(2) != H || branches[i].size(3) != W;
    const auto type = resized ? m.scalar_type() : branches[i].scalar_type();
    TORCH_CHECK(d.N == g.N && d.C == g.C && dst[i].scalar_type() == type &&
                    d.H == (resized ? H : branches[i].size(2)) &&
                    d.W == (resized ? W : branches[i].size(3)),
                "destination ", i, " must be its branch's size and type (the output's size and ",
                "the arithmetic's type if resized)");
    ds.push_back(d);
  }
  std::vector<void*> dp;
  for (const auto& d : dst) dp.push_back(d.data_ptr());
  dispatch(branches[0].scalar_type(), [&](auto* t, auto* a) {
    using T = std::remove_pointer_t<decltype(t)>;
    using A = std::remove_pointer_t<decltype(a)>;
    maps_kernel<T, A>(branches_of<T, A>(branches, H, W), static_cast<const T*>(grad.data_ptr()),
                      code.data_ptr<int8_t>(), m.data_ptr<A>(), a1.data_ptr<A>(),
                      a2.data_ptr<A>(), k1.data_ptr<A>(), k2.data_ptr<A>(), dp, ds, g);
  });
}

// a resized branch's gradient: dst (its size and type, any strides, channels contiguous) =
// resize backward of fine ((N, C, out_h, out_w) channels-last, the arithmetic's type) + k2 * r
// + k1 (k1, k2: contiguous (N, C), the arithmetic's type); see resize_back_kernel
void norm_scale_task_backward_resized(const at::Tensor& fine, const at::Tensor& r,
                                      const at::Tensor& k1, const at::Tensor& k2,
                                      const at::Tensor& dst) {
  RECORD_FUNCTION("mmdet_dyhead::norm_scale_task_backward", std::vector<c10::IValue>());
  const Strided rs = strided(r), ds = strided(dst);
  const auto acc = acc_type(r.scalar_type());
  TORCH_CHECK(r.scalar_type() == at::kFloat || r.scalar_type() == at::kDouble ||
                  r.scalar_type() == at::kBFloat16,
              "the folded scale/task pass takes float32, float64 or bfloat16 maps");
  TORCH_CHECK(dst.sizes() == r.sizes() && dst.scalar_type() == r.scalar_type(),
              "dst must be the branch's size and type");
  TORCH_CHECK(fine.dim() == 4 && fine.size(0) == rs.N && fine.size(1) == rs.C &&
                  fine.is_contiguous(at::MemoryFormat::ChannelsLast) &&
                  fine.scalar_type() == acc,
              "fine must be (N, C, H, W) channels-last in the arithmetic's type");
  for (const auto* k : {&k1, &k2})
    TORCH_CHECK(k->sizes() == at::IntArrayRef({rs.N, rs.C}) && k->is_contiguous() &&
                    k->scalar_type() == acc,
                "k1, k2 must be contiguous (N, C) tensors of the arithmetic's type");
  dispatch(r.scalar_type(), [&](auto* t, auto* a) {
    using T = std::remove_pointer_t<decltype(t)>;
    using A = std::remove_pointer_t<decltype(a)>;
    resize_back_kernel<T, A>(fine.data_ptr<A>(), fine.size(2), fine.size(3),
                             static_cast<const T*>(r.data_ptr()), rs, k1.data_ptr<A>(),
                             k2.data_ptr<A>(), static_cast<T*>(dst.data_ptr()), ds);
  });
}

}  // namespace

void bind_norm_scale_task(pybind11::module_& m) {
  m.def("channel_moments", &channel_moments,
        "per channel: sum, sum of squares and the bilinear-resized sum of a map, in double");
  m.def("norm_scale_task_forward", &norm_scale_task_forward,
        "GroupNorm-folded scale-aware sum (branches resized on the fly) and dynamic ReLU");
  m.def("norm_scale_task_backward_sums", &norm_scale_task_backward_sums,
        "backward, first pass: the sums behind the factors' and coefficients' gradients");
  m.def("norm_scale_task_backward_maps", &norm_scale_task_backward_maps,
        "backward, second pass: each branch's map gradient");
  m.def("norm_scale_task_backward_resized", &norm_scale_task_backward_resized,
        "backward of a resized branch: its output-size gradient resized back, plus its "
        "statistics' share, into its own rows");
}
