// The scale-aware and task-aware attentions' element-wise work in one pass over memory
// (scale_task.py has the autograd and the torch form these loops equal):
//
//   s   = sum_i w[n, i] * f_i                           scale-aware: weighted mean of L' branches
//   out = max(a1[n, c] * s + b1[n, c], a2[n, c] * s + b2[n, c])     task-aware: dynamic ReLU
//
// Done with torch ops this is 6 to 8 passes over maps of the level's size forward and about 12
// backward (weighted sum, two affine maps, their difference and sign, the maximum; then the
// split gradient, its products and sums). Here the forward reads each branch once and writes the
// output (and, for the backward, a one-byte sign code per element); the backward reads the
// gradient, the branches and the code once and writes each branch's gradient.
//
// Maps (N, C, H, W) are all channels-last or all contiguous (the caller makes them agree); the
// coefficients are (N, C) and the weights (N, L'). Sums run in double: a channel's gradient adds
// up H * W terms.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include "dynamic_relu.h"

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace {

using mmdet_dyhead::nan_max;
using mmdet_dyhead::sign_code;
using mmdet_dyhead::split_grad;

struct Shape {
  int64_t N, C, S, L;
  bool channels_last;
};

// element (n, c, s) of a map lies at n*C*S + (channels_last ? s*C + c : c*S + s). The loops run
// along the contiguous axis (channels, or positions), with the branch count L a template
// argument and every pointer restrict-qualified, so that the compiler vectorises them.

// s = sum_i w_i * f_i[j] over a run of n elements; out and (optionally) code written
template <typename A, int L>
inline void forward_run(const A* const* f, const A* w, const A* a1, const A* b1, const A* a2,
                        const A* b2, bool per_element, A* __restrict__ out,
                        int8_t* __restrict__ code, int64_t n) {
  const A* __restrict__ f0 = f[0];
  const A* __restrict__ f1 = L > 1 ? f[1] : f[0];
  const A* __restrict__ f2 = L > 2 ? f[2] : f[0];
  const A w0 = w[0], w1 = L > 1 ? w[1] : A(0), w2 = L > 2 ? w[2] : A(0);
  const int64_t step = per_element ? 1 : 0;  // coefficients per channel (rows) or per plane
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    A s = w0 * f0[j];
    if (L > 1) s += w1 * f1[j];
    if (L > 2) s += w2 * f2[j];
    const A y1 = a1[j * step] * s + b1[j * step], y2 = a2[j * step] * s + b2[j * step];
    out[j] = nan_max(y1, y2);
    if (code) code[j] = sign_code(y1, y2);
  }
}

template <typename A, int L>
void forward_kernel(const std::vector<const A*>& f, const A* w, const A* a1, const A* b1,
                    const A* a2, const A* b2, A* out, int8_t* code, const Shape& sh) {
  const int64_t C = sh.C, S = sh.S;
  const bool cl = sh.channels_last;
  const int64_t runs = cl ? sh.N * S : sh.N * C, len = cl ? C : S;
  at::parallel_for(0, runs, cl ? 16 : 1, [&](int64_t begin, int64_t end) {
    const A* fr[3];
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = cl ? r / S : r / C, base = r * len, k = cl ? n * C : r;
      for (int i = 0; i < L; ++i) fr[i] = f[i] + base;
      forward_run<A, L>(fr, w + n * L, a1 + k, b1 + k, a2 + k, b2 + k, cl, out + base,
                        code ? code + base : nullptr, len);
    }
  });
}

// The backward over a run of n elements. gs = g1 * a1 + g2 * a2 is the gradient of s;
// gf_i = w_i * gs; wsum_i += <gs, f_i>; the coefficient sums <g1, s>, sum g1, <g2, s>, sum g2
// go per channel into t[0..3][j] (Rows: a run is one position's channels) or into t[0..3][0]
// (a run is one channel's plane). Sums over a run are in A (vectorised); the callers carry
// them on in double.
template <typename A, int L, bool Rows>
inline void backward_run(const A* __restrict__ grad, const int8_t* __restrict__ code,
                         const A* const* f, A* const* gf, const A* w, const A* __restrict__ a1,
                         const A* __restrict__ a2, A* __restrict__ t1, A* __restrict__ t2,
                         A* __restrict__ t3, A* __restrict__ t4, double* wsum, int64_t n) {
  const A* __restrict__ f0 = f[0];
  const A* __restrict__ f1 = f[L > 1 ? 1 : 0];
  const A* __restrict__ f2 = f[L > 2 ? 2 : 0];
  A* __restrict__ g0 = gf[0];
  A* __restrict__ g1p = gf[L > 1 ? 1 : 0];
  A* __restrict__ g2p = gf[L > 2 ? 2 : 0];
  const A w0 = w[0], w1 = L > 1 ? w[1] : A(0), w2 = L > 2 ? w[2] : A(0);
  A s0 = 0, s1 = 0, s2 = 0, c1 = 0, c2 = 0, c3 = 0, c4 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, c1, c2, c3, c4)
  for (int64_t j = 0; j < n; ++j) {
    A s = w0 * f0[j];
    if (L > 1) s += w1 * f1[j];
    if (L > 2) s += w2 * f2[j];
    const int8_t k = code[j];
    const A g = grad[j];
    A h1, h2;
    split_grad(k, g, h1, h2);
    const A gs = Rows ? h1 * a1[j] + h2 * a2[j] : h1 * a1[0] + h2 * a2[0];
    g0[j] = w0 * gs;
    if (L > 1) g1p[j] = w1 * gs;
    if (L > 2) g2p[j] = w2 * gs;
    s0 += gs * f0[j];
    if (L > 1) s1 += gs * f1[j];
    if (L > 2) s2 += gs * f2[j];
    if (Rows) {
      t1[j] += h1 * s, t2[j] += h1, t3[j] += h2 * s, t4[j] += h2;
    } else {
      c1 += h1 * s, c2 += h1, c3 += h2 * s, c4 += h2;
    }
  }
  wsum[0] += s0;
  if (L > 1) wsum[1] += s1;
  if (L > 2) wsum[2] += s2;
  if (!Rows) t1[0] = c1, t2[0] = c2, t3[0] = c3, t4[0] = c4;
}

template <typename A, int L>
void backward_kernel(const A* grad, const std::vector<const A*>& f, const A* w, const int8_t* code,
                     const A* a1, const A* a2, const std::vector<A*>& gf, A* gw, A* ga1, A* gb1,
                     A* ga2, A* gb2, const Shape& sh) {
  const int64_t N = sh.N, C = sh.C, S = sh.S;
  const bool cl = sh.channels_last;
  const int64_t runs = cl ? N * S : N * C, len = cl ? C : S;
  // threads take runs of rows (planes); each keeps its own sums, added in a fixed order after
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), runs));
  const int64_t per = (runs + parts - 1) / parts;
  const int64_t width = N * C * 4 + N * L;  // [a1 | b1 | a2 | b2] x (n, c), then (n, i)
  constexpr int64_t kFlush = 64;  // rows summed in A before they are added to the double sums
  std::vector<double> partial(parts * width, 0.0);
  at::parallel_for(0, parts, 1, [&](int64_t pb, int64_t pe) {
    const A* fr[3];
    A* gr[3];
    std::vector<A> block(cl ? 4 * C : 4, A(0));
    for (int64_t part = pb; part < pe; ++part) {
      double* acc = partial.data() + part * width;
      const int64_t r0 = part * per, r1 = std::min(runs, (part + 1) * per);
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = cl ? r / S : r / C, base = r * len, k = cl ? n * C : r;
        for (int i = 0; i < L; ++i) fr[i] = f[i] + base, gr[i] = gf[i] + base;
        A* t = block.data();
        const int64_t tl = cl ? C : 1;
        if (cl)
          backward_run<A, L, true>(grad + base, code + base, fr, gr, w + n * L, a1 + k, a2 + k,
                                   t, t + tl, t + 2 * tl, t + 3 * tl, acc + 4 * N * C + n * L,
                                   len);
        else
          backward_run<A, L, false>(grad + base, code + base, fr, gr, w + n * L, a1 + k, a2 + k,
                                    t, t + tl, t + 2 * tl, t + 3 * tl, acc + 4 * N * C + n * L,
                                    len);
        // carry the block on in double: per plane after each run, per row block every kFlush
        // rows and where the sample changes
        const bool last = r + 1 == r1 || (cl && (r + 1) / S != n);
        if (!cl || last || (r - r0 + 1) % kFlush == 0) {
          for (int q = 0; q < 4; ++q)
            for (int64_t j = 0; j < tl; ++j) {
              acc[q * N * C + k + j] += block[q * tl + j];
              block[q * tl + j] = 0;
            }
        }
      }
    }
  });
  A* outs[4] = {ga1, gb1, ga2, gb2};
  for (int q = 0; q < 4; ++q)
    for (int64_t j = 0; j < N * C; ++j) {
      double t = 0;
      for (int64_t part = 0; part < parts; ++part) t += partial[part * width + q * N * C + j];
      outs[q][j] = static_cast<A>(t);
    }
  for (int64_t j = 0; j < N * L; ++j) {
    double t = 0;
    for (int64_t part = 0; part < parts; ++part) t += partial[part * width + 4 * N * C + j];
    gw[j] = static_cast<A>(t);
  }
}

Shape check_maps(const std::vector<at::Tensor>& feats, const at::Tensor& weights) {
  TORCH_CHECK(!feats.empty() && feats.size() <= 3, "scale_task: 1 to 3 branches, got ",
              feats.size());
  const auto& f0 = feats[0];
  TORCH_CHECK(f0.dim() == 4, "scale_task: branches must be (N, C, H, W)");
  TORCH_CHECK(f0.scalar_type() == at::kFloat || f0.scalar_type() == at::kDouble,
              "scale_task: float32 or float64 maps, got ", f0.scalar_type());
  const bool cl = f0.is_contiguous(at::MemoryFormat::ChannelsLast) && !f0.is_contiguous();
  for (const auto& f : feats) {
    TORCH_CHECK(f.sizes() == f0.sizes() && f.scalar_type() == f0.scalar_type(),
                "scale_task: branches must share shape and dtype");
    TORCH_CHECK(cl ? f.is_contiguous(at::MemoryFormat::ChannelsLast) : f.is_contiguous(),
                "scale_task: branches must share one dense layout (contiguous or channels-last)");
  }
  const int64_t N = f0.size(0), C = f0.size(1), L = static_cast<int64_t>(feats.size());
  TORCH_CHECK(weights.dim() == 2 && weights.size(0) == N && weights.size(1) == L &&
                  weights.is_contiguous() && weights.scalar_type() == f0.scalar_type(),
              "scale_task: weights must be contiguous (N, branches) of the maps' dtype");
  return Shape{N, C, f0.size(2) * f0.size(3), L, cl};
}

void check_coefficient(const at::Tensor& t, const Shape& sh, at::ScalarType dtype) {
  TORCH_CHECK(t.dim() == 2 && t.size(0) == sh.N && t.size(1) == sh.C && t.is_contiguous() &&
                  t.scalar_type() == dtype,
              "scale_task: coefficients must be contiguous (N, C) of the maps' dtype");
}

// f(std::integral_constant<int, L>) for L = 1, 2, 3 branches
template <typename F>
void with_branches(int64_t L, F f) {
  if (L == 1) f(std::integral_constant<int, 1>());
  else if (L == 2) f(std::integral_constant<int, 2>());
  else f(std::integral_constant<int, 3>());
}

template <typename A>
std::vector<const A*> pointers(const std::vector<at::Tensor>& ts) {
  std::vector<const A*> out;
  for (const auto& t : ts) out.push_back(t.data_ptr<A>());
  return out;
}

// out (N, C, H, W) in the branches' layout, and the sign codes (int8, same layout) if with_code
std::vector<at::Tensor> scale_task_forward(const std::vector<at::Tensor>& feats,
                                           const at::Tensor& weights, const at::Tensor& a1,
                                           const at::Tensor& b1, const at::Tensor& a2,
                                           const at::Tensor& b2, bool with_code) {
  RECORD_FUNCTION("mmdet_dyhead::scale_task", std::vector<c10::IValue>());
  const Shape sh = check_maps(feats, weights);
  for (const auto* t : {&a1, &b1, &a2, &b2}) check_coefficient(*t, sh, feats[0].scalar_type());
  at::Tensor out = at::empty_like(feats[0]);
  at::Tensor code = with_code ? at::empty_like(feats[0], feats[0].options().dtype(at::kChar))
                              : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(feats[0].scalar_type(), "scale_task_forward", [&] {
    auto run = [&](auto branches) {
      forward_kernel<scalar_t, decltype(branches)::value>(
          pointers<scalar_t>(feats), weights.data_ptr<scalar_t>(), a1.data_ptr<scalar_t>(),
          b1.data_ptr<scalar_t>(), a2.data_ptr<scalar_t>(), b2.data_ptr<scalar_t>(),
          out.data_ptr<scalar_t>(), with_code ? code.data_ptr<int8_t>() : nullptr, sh);
    };
    with_branches(sh.L, run);
  });
  return with_code ? std::vector<at::Tensor>{out, code} : std::vector<at::Tensor>{out};
}

// [grad of each branch, grad_weights (N, L'), grad_a1, grad_b1, grad_a2, grad_b2 (N, C)]; grad
// and code in the branches' layout
std::vector<at::Tensor> scale_task_backward(const at::Tensor& grad,
                                            const std::vector<at::Tensor>& feats,
                                            const at::Tensor& weights, const at::Tensor& code,
                                            const at::Tensor& a1, const at::Tensor& a2) {
  RECORD_FUNCTION("mmdet_dyhead::scale_task_backward", std::vector<c10::IValue>());
  const Shape sh = check_maps(feats, weights);
  const auto dtype = feats[0].scalar_type();
  for (const auto* t : {&a1, &a2}) check_coefficient(*t, sh, dtype);
  const auto layout = sh.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  TORCH_CHECK(grad.sizes() == feats[0].sizes() && grad.scalar_type() == dtype &&
                  grad.is_contiguous(layout),
              "scale_task: the gradient must match the branches (shape, dtype, layout)");
  TORCH_CHECK(code.sizes() == feats[0].sizes() && code.scalar_type() == at::kChar &&
                  code.is_contiguous(layout),
              "scale_task: the sign codes must match the branches");
  std::vector<at::Tensor> out;
  for (int64_t i = 0; i < sh.L; ++i)
    out.push_back(at::empty_like(feats[0]));
  at::Tensor gw = at::empty({sh.N, sh.L}, weights.options());
  std::vector<at::Tensor> coef;
  for (int k = 0; k < 4; ++k) coef.push_back(at::empty({sh.N, sh.C}, a1.options()));
  AT_DISPATCH_FLOATING_TYPES(dtype, "scale_task_backward", [&] {
    std::vector<scalar_t*> gf;
    for (int64_t i = 0; i < sh.L; ++i) gf.push_back(out[i].data_ptr<scalar_t>());
    auto run = [&](auto branches) {
      backward_kernel<scalar_t, decltype(branches)::value>(
          grad.data_ptr<scalar_t>(), pointers<scalar_t>(feats), weights.data_ptr<scalar_t>(),
          code.data_ptr<int8_t>(), a1.data_ptr<scalar_t>(), a2.data_ptr<scalar_t>(), gf,
          gw.data_ptr<scalar_t>(), coef[0].data_ptr<scalar_t>(), coef[1].data_ptr<scalar_t>(),
          coef[2].data_ptr<scalar_t>(), coef[3].data_ptr<scalar_t>(), sh);
    };
    with_branches(sh.L, run);
  });
  out.push_back(gw);
  out.insert(out.end(), coef.begin(), coef.end());
  return out;
}

}  // namespace

void bind_scale_task(pybind11::module_& m) {
  m.def("scale_task_forward", &scale_task_forward,
        "weighted sum of the branches, then the dynamic ReLU (and its sign codes)");
  m.def("scale_task_backward", &scale_task_backward,
        "gradients of scale_task_forward: branches, weights, coefficients");
}
