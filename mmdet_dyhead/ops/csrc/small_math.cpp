// The small math of a folded block (norm_scale_task.py) for DynamicHead's own attentions: the
// channel moments of a block's B branches -> the factors its passes take, and back.
//
//   GroupNorm of branch b as scale * r + shift (statistics from its sums and sums of squares);
//   each branch's average, resized and normed;  pi_L: w_b = hsigmoid(fc(average_b)) / L';
//   per level l: mean = sum_b w_b average_b, const = sum_b w_b shift_b;
//   pi_C: theta = hardsigmoid(fc2(relu(fc1(mean)))) - 0.5 -> a1, b1, a2, b2;
//   factors: m_b = w_b * scale_b, a1, b1 + a1 * const, a2, b2 + a2 * const.
//
// Every array is (N, C)-sized or smaller: torch ops on them cost their dispatch and set-up, not
// their arithmetic (about 2.5 ms per block and step as Python ops through autograd, 2 ms as ATen
// calls from C++), so both directions are plain loops here, in float64 throughout; the backward
// is written out. tests/test_norm_scale_task.py checks both against autograd through the same
// math as torch ops (norm_scale_task._factors with the attentions' own methods).
#include <torch/extension.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

using at::Tensor;

// a float64 copy of a small parameter (a loop: an ATen conversion costs more than the copy)
std::vector<double> as_double(const Tensor& t) {
  const Tensor c = t.contiguous();
  std::vector<double> v(c.numel());
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "as_double", [&] {
    const auto* src = c.data_ptr<scalar_t>();
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(src[i]);
  });
  return v;
}

// sum_k a[k] * b[k] in 8 partial sums, added up as a tree (one chain of adds would wait on each
// add's latency; fc2's dots are only 64 long)
template <typename T>
inline double dot(const double* a, const T* b, int64_t n) {
  double acc[8] = {0};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8)
#pragma omp simd
    for (int j = 0; j < 8; ++j) acc[j] += a[k + j] * static_cast<double>(b[k + j]);
  for (; k < n; ++k) acc[0] += a[k] * static_cast<double>(b[k]);
  return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

// y += a * x
template <typename T>
inline void axpy(double a, const T* x, double* y, int64_t n) {
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) y[k] += a * static_cast<double>(x[k]);
}

// torch's hardsigmoid backward multiplies by 1/6 rounded to float, in every type: so do we, so
// that the gradients equal the torch ops' to float64 rounding
constexpr double kOneSixth = static_cast<double>(1.0f / 6.0f);

// relu6(x + 3) / 6, and its gradient g where -3 < x < 3, as torch's
inline double hardsigmoid(double x) { return std::min(std::max(x + 3, 0.0), 6.0) / 6; }
inline double hardsigmoid_grad(double x, double g) {
  return (x > -3 && x < 3) ? g * kOneSixth : 0.0;
}

// pi_C's theta of fc2's output
inline double theta(double x) { return hardsigmoid(x) - 0.5; }

// numel(sizes) doubles as a new tensor in opts' type
Tensor from_double(const double* src, at::IntArrayRef sizes, const at::TensorOptions& opts) {
  Tensor t = at::empty(sizes, opts);
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "from_double", [&] {
    auto* dst = t.data_ptr<scalar_t>();
    for (int64_t i = 0; i < t.numel(); ++i) dst[i] = static_cast<scalar_t>(src[i]);
  });
  return t;
}

struct Levels {  // the branches of each level: [first[l], first[l] + size[l])
  std::vector<int64_t> of, first, size;
};

Levels levels_of(const Tensor& level_of, int64_t L) {
  TORCH_CHECK(level_of.dim() == 1 && level_of.scalar_type() == at::kLong,
              "level_of must be a 1-d int64 tensor");
  Levels s{std::vector<int64_t>(level_of.data_ptr<int64_t>(),
                                level_of.data_ptr<int64_t>() + level_of.numel()),
           std::vector<int64_t>(L, 0), std::vector<int64_t>(L, 0)};
  for (size_t b = 0; b < s.of.size(); ++b) {
    TORCH_CHECK(s.of[b] >= (b ? s.of[b - 1] : 0) && s.of[b] < L,
                "level_of must be sorted levels below L");
    if (s.size[s.of[b]]++ == 0) s.first[s.of[b]] = b;
  }
  return s;
}

// level l's branches' rows of a (B, N, C) array, as the passes take them: (N, L', C) in opts' type
Tensor level_rows(const double* src, const Levels& lv, int64_t l, int64_t N, int64_t C,
                  const at::TensorOptions& opts) {
  const int64_t nb = lv.size[l];
  std::vector<double> rows(N * nb * C);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < nb; ++i)
      std::copy_n(src + ((lv.first[l] + i) * N + n) * C, C, rows.data() + (n * nb + i) * C);
  return from_double(rows.data(), {N, nb, C}, opts);
}

// What the forward keeps for the backward (float64): per branch and sample scale, shift, the
// average (B, N, C), mu, var, r (B, N, G), w and z (B, N); per level and sample mean and const
// (L, N, C), fc1's output after its ReLU h (L, N, R), fc2's output u (L, N, 4 C), a1, a2 (L, N, C)
enum Saved { kScale, kShift, kMeans, kMu, kVar, kR, kW, kZ, kMean, kConst, kH, kU, kA1, kA2,
             kNumSaved };

// -> per level its m (N, L', C) and a1, b1', a2, b2' (N, C) in the parameters' type, and what
// the backward takes
std::tuple<std::vector<std::vector<Tensor>>, std::vector<Tensor>> small_math_forward(
    const Tensor& moments, const std::vector<int64_t>& counts,
    const std::vector<int64_t>& level_counts, const Tensor& level_of, int64_t L, int64_t G,
    double eps, const std::vector<Tensor>& norm_params, const Tensor& norm_of,
    const std::vector<Tensor>& attention_params, bool paper_hsigmoid, double lambda_a,
    std::vector<double> init) {
  RECORD_FUNCTION("mmdet_dyhead::small_math", std::vector<c10::IValue>());
  TORCH_CHECK(moments.dim() == 4 && moments.size(2) == 3 &&
                  moments.scalar_type() == at::kDouble && moments.is_contiguous(),
              "moments must be contiguous (B, N, 3, C) float64");
  TORCH_CHECK(attention_params.size() == 6 && init.size() == 4,
              "the attentions' parameters: scale fc weight, bias, fc1 weight, bias, fc2 weight, "
              "bias; init: a1, a2, b1, b2");
  const int64_t B = moments.size(0), N = moments.size(1), C = moments.size(3);
  TORCH_CHECK(G > 0 && C % G == 0, "the channels must split into the norm's groups");
  const auto& fc1 = attention_params[2];
  const int64_t R = fc1.size(0), per = C / G;
  TORCH_CHECK(fc1.numel() == R * C && attention_params[4].numel() == 4 * C * R &&
                  attention_params[0].numel() == C,
              "the attentions' weights must be (1, C), (R, C) and (4 C, R)");
  TORCH_CHECK(static_cast<int64_t>(counts.size()) == B &&
                  static_cast<int64_t>(level_counts.size()) == B,
              "one count and one level count per branch");
  const Levels lv = levels_of(level_of, L);
  TORCH_CHECK(norm_of.dim() == 1 && norm_of.numel() == B && norm_of.scalar_type() == at::kLong,
              "norm_of must give each branch's norm (B int64)");
  const auto* nof = norm_of.data_ptr<int64_t>();
  const bool affine = !norm_params.empty();
  std::vector<std::vector<double>> gamma, beta;
  for (size_t i = 0; affine && i < norm_params.size(); i += 2) {
    TORCH_CHECK(i + 1 < norm_params.size() && norm_params[i].numel() == C &&
                    norm_params[i + 1].numel() == C,
                "norm_params must be each norm's weight and bias (C each)");
    gamma.push_back(as_double(norm_params[i]));
    beta.push_back(as_double(norm_params[i + 1]));
  }
  for (int64_t b = 0; affine && b < B; ++b)
    TORCH_CHECK(nof[b] >= 0 && nof[b] < static_cast<int64_t>(gamma.size()),
                "norm_of must index norm_params' norms");
  const auto sw = as_double(attention_params[0]), sb = as_double(attention_params[1]);
  const auto b1 = as_double(attention_params[3]), b2 = as_double(attention_params[5]);
  const Tensor w1c = attention_params[2].contiguous(), w2c = attention_params[4].contiguous();

  const auto f64 = moments.options();
  std::vector<Tensor> saved{
      at::empty({B, N, C}, f64), at::empty({B, N, C}, f64), at::empty({B, N, C}, f64),
      at::empty({B, N, G}, f64), at::empty({B, N, G}, f64), at::empty({B, N, G}, f64),
      at::empty({B, N}, f64),    at::empty({B, N}, f64),    at::zeros({L, N, C}, f64),
      at::zeros({L, N, C}, f64), at::empty({L, N, R}, f64), at::empty({L, N, 4 * C}, f64),
      at::empty({L, N, C}, f64), at::empty({L, N, C}, f64)};
  double* p[kNumSaved];
  for (int i = 0; i < kNumSaved; ++i) p[i] = saved[i].data_ptr<double>();
  const double* mom = moments.data_ptr<double>();

  for (int64_t b = 0; b < B; ++b) {
    const double cnt = static_cast<double>(counts[b] * per), q = level_counts[b];
    const int64_t u = affine ? nof[b] : 0;
    for (int64_t n = 0; n < N; ++n) {
      const int64_t bn = b * N + n;
      const double *s1 = mom + bn * 3 * C, *s2 = s1 + C, *s3 = s2 + C;
      double *scale = p[kScale] + bn * C, *shift = p[kShift] + bn * C,
             *avg = p[kMeans] + bn * C;
      for (int64_t g = 0; g < G; ++g) {
        double a = 0, a2 = 0;
        for (int64_t c = g * per; c < (g + 1) * per; ++c) a += s1[c], a2 += s2[c];
        const double mu = a / cnt, var = a2 / cnt - mu * mu;
        const double r = 1.0 / std::sqrt(std::max(var, 0.0) + eps);
        p[kMu][bn * G + g] = mu, p[kVar][bn * G + g] = var, p[kR][bn * G + g] = r;
        for (int64_t c = g * per; c < (g + 1) * per; ++c) {
          scale[c] = affine ? r * gamma[u][c] : r;
          shift[c] = -mu * scale[c] + (affine ? beta[u][c] : 0.0);
          avg[c] = s3[c] / q * scale[c] + shift[c];
        }
      }
      const double z = dot(avg, sw.data(), C) + sb[0];
      const double y = paper_hsigmoid ? std::min(std::max((z + 1) / 2, 0.0), 1.0)
                                      : hardsigmoid(std::max(z, 0.0));
      const int64_t l = lv.of[b];
      const double w = y / static_cast<double>(lv.size[l]);
      p[kZ][bn] = z, p[kW][bn] = w;
      double *mean = p[kMean] + (l * N + n) * C, *cnst = p[kConst] + (l * N + n) * C;
      for (int64_t c = 0; c < C; ++c) mean[c] += w * avg[c], cnst[c] += w * shift[c];
    }
  }
  // pi_C: per level and sample (the weights read in their own type)
  AT_DISPATCH_FLOATING_TYPES(w1c.scalar_type(), "small_math_forward", [&] {
    const auto *w1 = w1c.data_ptr<scalar_t>(), *w2 = w2c.data_ptr<scalar_t>();
    // each weight row read once, for every level and sample (they are few; the weights are not)
    const int64_t LN = L * N;
    for (int64_t r = 0; r < R; ++r)
      for (int64_t ln = 0; ln < LN; ++ln)
        p[kH][ln * R + r] = std::max(dot(p[kMean] + ln * C, w1 + r * C, C) + b1[r], 0.0);
    for (int64_t j = 0; j < 4 * C; ++j)
      for (int64_t ln = 0; ln < LN; ++ln)
        p[kU][ln * 4 * C + j] = dot(p[kH] + ln * R, w2 + j * R, R) + b2[j];
    for (int64_t ln = 0; ln < LN; ++ln) {
      const double* u = p[kU] + ln * 4 * C;
      double *a1 = p[kA1] + ln * C, *a2 = p[kA2] + ln * C;
      for (int64_t c = 0; c < C; ++c) {
        a1[c] = theta(u[c]) * 2 * lambda_a + init[0];
        a2[c] = theta(u[2 * C + c]) * 2 * lambda_a + init[1];
      }
    }
  });
  // the passes' factors, per level, in the parameters' type: m = w * scale, and b_k' = b_k +
  // a_k * const
  std::vector<double> m(B * N * C), b1p(L * N * C), b2p(L * N * C);
  for (int64_t bn = 0; bn < B * N; ++bn)
    for (int64_t c = 0; c < C; ++c) m[bn * C + c] = p[kW][bn] * p[kScale][bn * C + c];
  for (int64_t ln = 0; ln < L * N; ++ln)
    for (int64_t c = 0; c < C; ++c) {
      const double* u = p[kU] + ln * 4 * C;
      const double cnst = p[kConst][ln * C + c];
      b1p[ln * C + c] = theta(u[C + c]) + init[2] + p[kA1][ln * C + c] * cnst;
      b2p[ln * C + c] = theta(u[3 * C + c]) + init[3] + p[kA2][ln * C + c] * cnst;
    }
  const auto opts = moments.options().dtype(attention_params[0].scalar_type());
  std::vector<std::vector<Tensor>> levels;
  for (int64_t l = 0; l < L; ++l) {
    const int64_t off = l * N * C;  // level l's (N, C) rows of the (L, N, C) arrays
    levels.push_back({level_rows(m.data(), lv, l, N, C, opts),
                      from_double(p[kA1] + off, {N, C}, opts),
                      from_double(b1p.data() + off, {N, C}, opts),
                      from_double(p[kA2] + off, {N, C}, opts),
                      from_double(b2p.data() + off, {N, C}, opts)});
  }
  return {levels, saved};
}

// The factors' gradients d_m (B, N, C) and d_coef (L, N, 4, C) for a1, b1', a2, b2' -> per level
// k1, k2 (N, L', C) and per resized branch k1, k2 (N, C) (each branch's gradient gets k1 + k2 * r
// from its moments; a resized branch its resized sum's share at the output's size, the rest after
// the resize back), and the parameters' gradients in norm_params' and attention_params' order
// and shapes.
std::tuple<std::vector<Tensor>, std::vector<Tensor>, std::vector<Tensor>> small_math_backward(
    const std::vector<Tensor>& saved, const Tensor& moments, const Tensor& d_m,
    const Tensor& d_coef, const std::vector<int64_t>& counts,
    const std::vector<int64_t>& level_counts, const std::vector<bool>& resized,
    const Tensor& level_of, int64_t G, const std::vector<Tensor>& norm_params,
    const Tensor& norm_of, const std::vector<Tensor>& attention_params, bool paper_hsigmoid,
    double lambda_a) {
  RECORD_FUNCTION("mmdet_dyhead::small_math_backward", std::vector<c10::IValue>());
  TORCH_CHECK(saved.size() == kNumSaved, "small_math_backward takes small_math_forward's state");
  const int64_t B = saved[kScale].size(0), N = saved[kScale].size(1), C = saved[kScale].size(2);
  const int64_t L = saved[kMean].size(0), R = saved[kH].size(2), per = C / G;
  TORCH_CHECK(d_m.sizes() == at::IntArrayRef({B, N, C}) &&
                  d_coef.sizes() == at::IntArrayRef({L, N, 4, C}),
              "d_m must be (B, N, C) and d_coef (L, N, 4, C)");
  const Levels lv = levels_of(level_of, L);
  const auto* nof = norm_of.data_ptr<int64_t>();
  const bool affine = !norm_params.empty();
  std::vector<std::vector<double>> gamma;
  for (size_t i = 0; affine && i < norm_params.size(); i += 2)
    gamma.push_back(as_double(norm_params[i]));
  const auto sw = as_double(attention_params[0]);
  const Tensor w1c = attention_params[2].contiguous(), w2c = attention_params[4].contiguous();
  const double* p[kNumSaved];
  for (int i = 0; i < kNumSaved; ++i) p[i] = saved[i].data_ptr<double>();
  const auto dm_d = d_m.to(at::kDouble).contiguous(), dc_d = d_coef.to(at::kDouble).contiguous();
  const double *dm = dm_d.data_ptr<double>(), *dc = dc_d.data_ptr<double>();
  const double* mom = moments.data_ptr<double>();

  // pi_C, back from b_k' = b_k + a_k * const: fc2's and fc1's input gradients per level and
  // sample, then their weights' gradients, each row summed over those in registers and written
  // once, in the weights' type
  const int64_t LN = L * N;
  std::vector<double> d_mean(LN * C, 0), d_cnst(LN * C), du(LN * 4 * C), dh(LN * R, 0);
  std::vector<double> d_b1(R, 0), d_b2(4 * C, 0);
  Tensor d_w1 = at::empty_like(w1c), d_w2 = at::empty_like(w2c);
  AT_DISPATCH_FLOATING_TYPES(w1c.scalar_type(), "small_math_backward", [&] {
    const auto *w1 = w1c.data_ptr<scalar_t>(), *w2 = w2c.data_ptr<scalar_t>();
    for (int64_t ln = 0; ln < LN; ++ln) {
      const double* u = p[kU] + ln * 4 * C;
      const double *cnst = p[kConst] + ln * C, *a1 = p[kA1] + ln * C, *a2 = p[kA2] + ln * C;
      double* dul = du.data() + ln * 4 * C;
      for (int64_t c = 0; c < C; ++c) {
        const double* g = dc + (ln * 4) * C + c;  // da1, db1', da2, db2' at stride C
        const double d[4] = {(g[0] + g[C] * cnst[c]) * 2 * lambda_a, g[C],
                             (g[2 * C] + g[3 * C] * cnst[c]) * 2 * lambda_a, g[3 * C]};
        for (int k = 0; k < 4; ++k) dul[k * C + c] = hardsigmoid_grad(u[k * C + c], d[k]);
        d_cnst[ln * C + c] = g[C] * a1[c] + g[3 * C] * a2[c];
      }
    }
    // each weight row read once, for every level and sample
    for (int64_t j = 0; j < 4 * C; ++j)
      for (int64_t ln = 0; ln < LN; ++ln) axpy(du[ln * 4 * C + j], w2 + j * R, &dh[ln * R], R);
    for (int64_t ln = 0; ln < LN; ++ln)
      for (int64_t r = 0; r < R; ++r)
        if (!(p[kH][ln * R + r] > 0)) dh[ln * R + r] = 0;  // ReLU's gradient: output > 0
    for (int64_t r = 0; r < R; ++r)
      for (int64_t ln = 0; ln < LN; ++ln)
        axpy(dh[ln * R + r], w1 + r * C, &d_mean[ln * C], C);
    auto weight_grad = [&](const std::vector<double>& d, int64_t rows, int64_t width,
                           const double* x, int64_t cols, std::vector<double>& d_bias,
                           scalar_t* out) {  // out[i, :] = sum_ln d[ln, i] x[ln, :]
      std::vector<double> acc(cols);
      for (int64_t i = 0; i < rows; ++i) {
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t ln = 0; ln < LN; ++ln) {
          d_bias[i] += d[ln * width + i];
          axpy(d[ln * width + i], x + ln * cols, acc.data(), cols);
        }
        for (int64_t k = 0; k < cols; ++k) out[i * cols + k] = static_cast<scalar_t>(acc[k]);
      }
    };
    weight_grad(du, 4 * C, 4 * C, p[kH], R, d_b2, d_w2.data_ptr<scalar_t>());
    weight_grad(dh, R, R, p[kMean], C, d_b1, d_w1.data_ptr<scalar_t>());
  });

  // per branch: the level sums and m = w * scale, pi_L, the averages, GroupNorm
  const auto opts = d_m.options().dtype(attention_params[0].scalar_type());
  const int64_t U = affine ? static_cast<int64_t>(gamma.size()) : 0;
  std::vector<double> d_gamma(U * C, 0), d_beta(U * C, 0), d_sw(C, 0), d_sb(1, 0);
  std::vector<double> k1(B * N * C), k2(B * N * C), k1_fine(B * N * C);
  std::vector<double> d_means(C);
  for (int64_t b = 0; b < B; ++b) {
    const double cnt = static_cast<double>(counts[b] * per), q = level_counts[b];
    const int64_t l = lv.of[b], u = affine ? nof[b] : 0;
    for (int64_t n = 0; n < N; ++n) {
      const int64_t bn = b * N + n, ln = l * N + n;
      const double *scale = p[kScale] + bn * C, *shift = p[kShift] + bn * C,
                   *avg = p[kMeans] + bn * C, *dmb = dm + bn * C;
      const double *dmean = d_mean.data() + ln * C, *dcnst = d_cnst.data() + ln * C;
      const double w = p[kW][bn], z = p[kZ][bn];
      double d_w = 0;
      for (int64_t c = 0; c < C; ++c)
        d_w += dmean[c] * avg[c] + dcnst[c] * shift[c] + dmb[c] * scale[c];
      const double d_y = d_w / static_cast<double>(lv.size[l]);
      double d_z;
      if (paper_hsigmoid) {
        const double qz = (z + 1) / 2;
        d_z = (qz >= 0 && qz <= 1) ? d_y / 2 : 0.0;
      } else {
        d_z = z > 0 ? hardsigmoid_grad(z, d_y) : 0.0;  // through the ReLU before it
      }
      d_sb[0] += d_z;
      const double* s3 = mom + bn * 3 * C + 2 * C;
      for (int64_t c = 0; c < C; ++c) {
        d_sw[c] += d_z * avg[c];
        d_means[c] = w * dmean[c] + d_z * sw[c];
      }
      for (int64_t g = 0; g < G; ++g) {
        const double mu = p[kMu][bn * G + g], var = p[kVar][bn * G + g], r = p[kR][bn * G + g];
        double d_mu = 0, d_r = 0;
        for (int64_t c = g * per; c < (g + 1) * per; ++c) {
          const double d_res = d_means[c] * scale[c] / q;
          const double dsh = w * dcnst[c] + d_means[c];
          const double dsc = w * dmb[c] + d_means[c] * (s3[c] / q) - dsh * mu;
          d_mu -= dsh * scale[c];
          d_r += affine ? dsc * gamma[u][c] : dsc;
          if (affine) d_gamma[u * C + c] += dsc * r, d_beta[u * C + c] += dsh;
          k1[bn * C + c] = d_res;  // completed below
        }
        const double d_var = var >= 0 ? -0.5 * r * r * r * d_r : 0.0;
        const double d_sum = (d_mu - 2 * mu * d_var) / cnt, d_sum_sq = d_var / cnt;
        for (int64_t c = g * per; c < (g + 1) * per; ++c) {
          k1_fine[bn * C + c] = d_sum;
          if (!resized[b]) k1[bn * C + c] += d_sum;
          k2[bn * C + c] = 2 * d_sum_sq;
        }
      }
    }
  }

  std::vector<Tensor> per_level, per_resized, grads;
  for (int64_t l = 0; l < L; ++l)
    for (const auto* k : {&k1, &k2})
      per_level.push_back(level_rows(k->data(), lv, l, N, C, opts));
  for (int64_t b = 0; b < B; ++b)
    if (resized[b])
      for (const auto* k : {&k1_fine, &k2})
        per_resized.push_back(from_double(k->data() + b * N * C, {N, C}, opts));
  for (int64_t i = 0; i < U; ++i)
    for (int j = 0; j < 2; ++j)
      grads.push_back(from_double((j ? d_beta : d_gamma).data() + i * C,
                                  norm_params[2 * i + j].sizes(),
                                  norm_params[2 * i + j].options()));
  const std::vector<double>* att[] = {&d_sw, &d_sb, nullptr, &d_b1, nullptr, &d_b2};
  for (size_t i = 0; i < 6; ++i)
    grads.push_back(i == 2   ? d_w1.view(attention_params[2].sizes())
                    : i == 4 ? d_w2.view(attention_params[4].sizes())
                             : from_double(att[i]->data(), attention_params[i].sizes(),
                                           attention_params[i].options()));
  return {per_level, per_resized, grads};
}

}  // namespace

void bind_small_math(pybind11::module_& m) {
  m.def("small_math_forward", &small_math_forward,
        "a folded block's moments -> its passes' factors (DynamicHead's own attentions)");
  m.def("small_math_backward", &small_math_backward,
        "the factors' gradients -> the passes' moment shares and the parameters' gradients");
}
