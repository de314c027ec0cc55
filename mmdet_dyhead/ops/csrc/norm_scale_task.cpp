// A level's whole DyHead block after the deformable convs, when no backward will come (eval):
// GroupNorm of each branch, the resize of a branch of another size, the scale-aware weighted
// sum and the task-aware dynamic ReLU, in two reads of each branch and one write of the output
// (norm_scale_task.py has the math that turns the first pass's sums into the second's factors):
//
//   channel_moments:        per (n, c): sum, sum of squares and the sum the bilinear resize to
//                           the level's size would have, of a branch's raw conv output
//   norm_scale_task_forward: out = max(a1 * s + b1, a2 * s + b2),  s = sum_i m_i[n, c] * r_i,
//                           r_i the raw branch, resized on the fly (bilinear, align_corners)
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

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

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
};

struct Strided {
  int64_t N, C, H, W, sn, sh, sw;
};

Strided strided(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && x.stride(1) == 1,
              "maps must be (N, C, H, W) with contiguous channels (channels-last strides)");
  return {x.size(0), x.size(1), x.size(2), x.size(3), x.stride(0), x.stride(2), x.stride(3)};
}

template <typename A>
void moments_kernel(const A* x, const Strided& s, const std::vector<double>& rw,
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
          const A* __restrict__ v = x + n * s.sn + h * s.sh + w * s.sw;
          const A k = static_cast<A>(cw[w]);
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) q1[c] += v[c], q2[c] += v[c] * v[c], q3[c] += k * v[c];
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
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "channel_moments takes float32 or float64 maps");
  const int64_t B = static_cast<int64_t>(maps.size()), N = maps[0].size(0), C = maps[0].size(1);
  at::Tensor out = at::zeros({B, N, 3, C}, maps[0].options().dtype(at::kDouble));
  for (int64_t b = 0; b < B; ++b) {
    const Strided s = strided(maps[b]);
    TORCH_CHECK(s.N == N && s.C == C && maps[b].scalar_type() == dtype,
                "maps must share N, C and dtype");
    TORCH_CHECK(sizes[b].size() == 2 && sizes[b][0] > 0 && sizes[b][1] > 0,
                "each resized size must be two positive ints");
    const int64_t oh = sizes[b][0], ow = sizes[b][1];
    AT_DISPATCH_FLOATING_TYPES(dtype, "channel_moments", [&] {
      const bool same = oh == s.H && ow == s.W;
      const auto rw = same ? std::vector<double>(s.H, 1.0) : Axis<scalar_t>(s.H, oh).weights(s.H);
      const auto cw = same ? std::vector<double>(s.W, 1.0) : Axis<scalar_t>(s.W, ow).weights(s.W);
      moments_kernel<scalar_t>(maps[b].data_ptr<scalar_t>(), s, rw, cw,
                               out.data_ptr<double>() + b * N * 3 * C);
    });
  }
  return out;
}

// torch.maximum: NaN if either is NaN
template <typename A>
inline A nan_max(A y1, A y2) { return (y1 > y2 || y1 != y1) ? y1 : y2; }

template <typename A>
struct Branch {
  const A* x;
  Strided s;
  bool resized;
  Axis<A> ay, ax;
};

template <typename A>
void forward_kernel(const std::vector<Branch<A>>& br, const A* m, const A* a1, const A* b1,
                    const A* a2, const A* b2, A* out, int64_t N, int64_t C, int64_t H,
                    int64_t W) {
  const int64_t L = static_cast<int64_t>(br.size());
  at::parallel_for(0, N * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> acc(C);
    A* __restrict__ s = acc.data();
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / H, h = row % H;
      const A* __restrict__ c1 = a1 + n * C;
      const A* __restrict__ d1 = b1 + n * C;
      const A* __restrict__ c2 = a2 + n * C;
      const A* __restrict__ d2 = b2 + n * C;
      for (int64_t w = 0; w < W; ++w) {
        for (int64_t i = 0; i < L; ++i) {
          const Branch<A>& b = br[i];
          const A* __restrict__ mi = m + (n * L + i) * C;
          const A* base = b.x + n * b.s.sn;
          if (!b.resized) {
            const A* __restrict__ v = base + h * b.s.sh + w * b.s.sw;
            if (i == 0) {
#pragma omp simd
              for (int64_t c = 0; c < C; ++c) s[c] = mi[c] * v[c];
            } else {
#pragma omp simd
              for (int64_t c = 0; c < C; ++c) s[c] += mi[c] * v[c];
            }
            continue;
          }
          // upsample_bilinear2d's blend: h0l * (w0l * v00 + w1l * v01) + h1l * (w0l * v10 + ...)
          const A hy0 = b.ay.l0[h], hy1 = b.ay.l1[h], wx0 = b.ax.l0[w], wx1 = b.ax.l1[w];
          const A* __restrict__ v00 = base + b.ay.i0[h] * b.s.sh + b.ax.i0[w] * b.s.sw;
          const A* __restrict__ v01 = base + b.ay.i0[h] * b.s.sh + b.ax.i1[w] * b.s.sw;
          const A* __restrict__ v10 = base + b.ay.i1[h] * b.s.sh + b.ax.i0[w] * b.s.sw;
          const A* __restrict__ v11 = base + b.ay.i1[h] * b.s.sh + b.ax.i1[w] * b.s.sw;
          if (i == 0) {
#pragma omp simd
            for (int64_t c = 0; c < C; ++c)
              s[c] = mi[c] * (hy0 * (wx0 * v00[c] + wx1 * v01[c]) +
                              hy1 * (wx0 * v10[c] + wx1 * v11[c]));
          } else {
#pragma omp simd
            for (int64_t c = 0; c < C; ++c)
              s[c] += mi[c] * (hy0 * (wx0 * v00[c] + wx1 * v01[c]) +
                               hy1 * (wx0 * v10[c] + wx1 * v11[c]));
          }
        }
        A* __restrict__ o = out + ((n * H + h) * W + w) * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c)
          o[c] = nan_max(c1[c] * s[c] + d1[c], c2[c] * s[c] + d2[c]);
      }
    }
  });
}

// branches: L' raw maps (N, C, H_i, W_i), channels contiguous; m (N, L', C); a1, b1, a2, b2
// (N, C); all of one floating type. Returns (N, C, out_h, out_w), channels-last.
at::Tensor norm_scale_task_forward(const std::vector<at::Tensor>& branches, const at::Tensor& m,
                                   const at::Tensor& a1, const at::Tensor& b1,
                                   const at::Tensor& a2, const at::Tensor& b2, int64_t out_h,
                                   int64_t out_w) {
  RECORD_FUNCTION("mmdet_dyhead::norm_scale_task", std::vector<c10::IValue>());
  TORCH_CHECK(!branches.empty(), "at least one branch");
  const auto dtype = branches[0].scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "norm_scale_task_forward takes float32 or float64 maps");
  const int64_t N = branches[0].size(0), C = branches[0].size(1),
                L = static_cast<int64_t>(branches.size());
  for (const auto& b : branches)
    TORCH_CHECK(b.dim() == 4 && b.size(0) == N && b.size(1) == C && b.scalar_type() == dtype,
                "branches must share N, C and dtype");
  TORCH_CHECK(m.sizes() == at::IntArrayRef({N, L, C}) && m.is_contiguous() &&
                  m.scalar_type() == dtype,
              "m must be a contiguous (N, L', C) tensor of the maps' dtype");
  for (const auto* t : {&a1, &b1, &a2, &b2})
    TORCH_CHECK(t->sizes() == at::IntArrayRef({N, C}) && t->is_contiguous() &&
                    t->scalar_type() == dtype,
                "coefficients must be contiguous (N, C) tensors of the maps' dtype");
  at::Tensor out = at::empty({N, C, out_h, out_w},
                             branches[0].options().memory_format(at::MemoryFormat::ChannelsLast));
  AT_DISPATCH_FLOATING_TYPES(dtype, "norm_scale_task_forward", [&] {
    std::vector<Branch<scalar_t>> br;
    for (const auto& b : branches) {
      const Strided s = strided(b);
      const bool resized = s.H != out_h || s.W != out_w;
      br.push_back({b.data_ptr<scalar_t>(), s, resized, Axis<scalar_t>(s.H, out_h),
                    Axis<scalar_t>(s.W, out_w)});
    }
    forward_kernel<scalar_t>(br, m.data_ptr<scalar_t>(), a1.data_ptr<scalar_t>(),
                             b1.data_ptr<scalar_t>(), a2.data_ptr<scalar_t>(),
                             b2.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), N, C, out_h,
                             out_w);
  });
  return out;
}

}  // namespace

void bind_norm_scale_task(pybind11::module_& m) {
  m.def("channel_moments", &channel_moments,
        "per channel: sum, sum of squares and the bilinear-resized sum of a map, in double");
  m.def("norm_scale_task_forward", &norm_scale_task_forward,
        "GroupNorm-folded scale-aware sum (branches resized on the fly) and dynamic ReLU");
}
