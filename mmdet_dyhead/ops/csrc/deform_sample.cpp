// Fused bilinear sampling for mmdet_dyhead's CPU modulated deformable conv (deform_conv.py).
//
// The pure-torch path gathers the 4 corners of every tap into a (rows, 4, K, C) buffer and
// then blends them, and in backward multiplies and scatters another buffer of that size:
// memory-bound passes that cost more than the GEMM next to them. These loops read each corner
// row once and write nothing but the result.
//
// Layouts (all contiguous): flat (R, C) input rows, channels last, last row zero;
// index (rows, 4, K) corner rows into flat; wm (rows, 4, K) masked corner weights;
// cols / gcols (rows, C, K): mmcv's im2col order, so that the (C_out, C, kh, kw) weight is
// the GEMM's (C_out, C*K) matrix as it is, forward and backward, with no copy.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

template <typename T>
void blend_kernel(const T* __restrict__ flat, const int64_t* __restrict__ index,
                  const T* __restrict__ wm, T* __restrict__ cols, int64_t rows, int64_t K,
                  int64_t C) {
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> tmp(K * C);  // one position's taps, (K, C): contiguous blends
    for (int64_t r = begin; r < end; ++r) {
      const int64_t* idx = index + r * 4 * K;
      const T* w = wm + r * 4 * K;
      for (int64_t k = 0; k < K; ++k) {
        const T* __restrict__ a = flat + idx[k] * C;
        const T* __restrict__ b = flat + idx[K + k] * C;
        const T* __restrict__ c = flat + idx[2 * K + k] * C;
        const T* __restrict__ d = flat + idx[3 * K + k] * C;
        const T w0 = w[k], w1 = w[K + k], w2 = w[2 * K + k], w3 = w[3 * K + k];
        T* __restrict__ o = tmp.data() + k * C;
#pragma omp simd
        for (int64_t i = 0; i < C; ++i) o[i] = w0 * a[i] + w1 * b[i] + w2 * c[i] + w3 * d[i];
      }
      T* __restrict__ out = cols + r * C * K;  // (K, C) -> (C, K), in L1
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
template <typename T>
void backward_kernel(const T* __restrict__ flat, const int64_t* __restrict__ index,
                     const T* __restrict__ wm, const T* __restrict__ gcols,
                     T* __restrict__ grad_flat, T* __restrict__ dots, T* __restrict__ cols,
                     int64_t rows, int64_t K, int64_t C) {
  const int64_t n = rows * 4 * K;
  const int64_t lanes = 16;
  const int64_t slices = std::max<int64_t>(
      1, std::min<int64_t>(at::get_num_threads(), (C + lanes - 1) / lanes));
  const int64_t width = ((C + slices - 1) / slices + lanes - 1) / lanes * lanes;
  std::vector<T> partial(dots ? slices * n : 0);
  at::parallel_for(0, slices, 1, [&](int64_t sb, int64_t se) {
    std::vector<T> g(K * width), b(K * width);  // this position's (K, slice) blocks
    for (int64_t s = sb; s < se; ++s) {
      const int64_t c0 = s * width, c1 = std::min(C, c0 + width), cw = c1 - c0;
      if (cw <= 0) continue;
      T* pd = dots ? partial.data() + s * n : nullptr;
      for (int64_t r = 0; r < rows; ++r) {
        const T* src = gcols + r * C * K + c0 * K;
        for (int64_t i = 0; i < cw; ++i)
          for (int64_t k = 0; k < K; ++k) g[k * width + i] = src[i * K + k];
        for (int64_t k = 0; k < K; ++k) {
          const T* __restrict__ gk = g.data() + k * width;
          T* __restrict__ bk = b.data() + k * width;
          for (int q = 0; q < 4; ++q) {
            const int64_t j = r * 4 * K + q * K + k, row = index[j];
            const T w = wm[j];
            const T* __restrict__ f = flat + row * C + c0;
            if (grad_flat) {
              T* __restrict__ gf = grad_flat + row * C + c0;
#pragma omp simd
              for (int64_t i = 0; i < cw; ++i) gf[i] += w * gk[i];
            }
            if (pd) {
              T acc = 0;
#pragma omp simd reduction(+ : acc)
              for (int64_t i = 0; i < cw; ++i) acc += f[i] * gk[i];
              pd[j] = acc;
            }
            if (cols) {
              if (q == 0) {
#pragma omp simd
                for (int64_t i = 0; i < cw; ++i) bk[i] = w * f[i];
              } else {
#pragma omp simd
                for (int64_t i = 0; i < cw; ++i) bk[i] += w * f[i];
              }
            }
          }
        }
        if (cols) {
          T* dst = cols + r * C * K + c0 * K;
          for (int64_t i = 0; i < cw; ++i)
            for (int64_t k = 0; k < K; ++k) dst[i * K + k] = b[k * width + i];
        }
      }
    }
  });
  if (dots) {
    for (int64_t j = 0; j < n; ++j) {
      T acc = 0;
      for (int64_t s = 0; s < slices; ++s) acc += partial[s * n + j];
      dots[j] = acc;
    }
  }
}

void check(const at::Tensor& flat, const at::Tensor& index, const at::Tensor& wm,
           const at::Tensor& cols) {
  TORCH_CHECK(flat.dim() == 2 && flat.is_contiguous(), "flat must be contiguous (R, C)");
  TORCH_CHECK(index.dim() == 3 && index.size(1) == 4 && index.is_contiguous() &&
                  index.scalar_type() == at::kLong,
              "index must be contiguous int64 (rows, 4, K)");
  TORCH_CHECK(wm.sizes() == index.sizes() && wm.is_contiguous() &&
                  wm.scalar_type() == flat.scalar_type(),
              "wm must match index and flat's dtype");
  TORCH_CHECK(cols.dim() == 3 && cols.size(0) == index.size(0) && cols.size(1) == flat.size(1) &&
                  cols.size(2) == index.size(2) && cols.is_contiguous() &&
                  cols.scalar_type() == flat.scalar_type(),
              "columns must be contiguous (rows, C, K) of flat's dtype");
}

// cols (rows, C, K) = sum over corners of wm * flat[index]
void blend(const at::Tensor& flat, const at::Tensor& index, const at::Tensor& wm, at::Tensor cols) {
  check(flat, index, wm, cols);
  AT_DISPATCH_FLOATING_TYPES(flat.scalar_type(), "blend", [&] {
    blend_kernel<scalar_t>(flat.data_ptr<scalar_t>(), index.data_ptr<int64_t>(),
                           wm.data_ptr<scalar_t>(), cols.data_ptr<scalar_t>(), index.size(0),
                           index.size(2), flat.size(1));
  });
}

// backward_kernel's three outputs, each optional; gcols (rows, C, K)
void backward(const at::Tensor& flat, const at::Tensor& index, const at::Tensor& wm,
              const at::Tensor& gcols, c10::optional<at::Tensor> grad_flat,
              c10::optional<at::Tensor> dots, c10::optional<at::Tensor> cols) {
  check(flat, index, wm, gcols);
  if (grad_flat) {
    TORCH_CHECK(grad_flat->sizes() == flat.sizes() && grad_flat->is_contiguous() &&
                    grad_flat->scalar_type() == flat.scalar_type(),
                "grad_flat must match flat");
  }
  if (dots) {
    TORCH_CHECK(dots->sizes() == index.sizes() && dots->is_contiguous() &&
                    dots->scalar_type() == flat.scalar_type(),
                "dots must be contiguous (rows, 4, K) of flat's dtype");
  }
  if (cols) check(flat, index, wm, *cols);
  AT_DISPATCH_FLOATING_TYPES(flat.scalar_type(), "backward", [&] {
    backward_kernel<scalar_t>(
        flat.data_ptr<scalar_t>(), index.data_ptr<int64_t>(), wm.data_ptr<scalar_t>(),
        gcols.data_ptr<scalar_t>(), grad_flat ? grad_flat->data_ptr<scalar_t>() : nullptr,
        dots ? dots->data_ptr<scalar_t>() : nullptr, cols ? cols->data_ptr<scalar_t>() : nullptr,
        index.size(0), index.size(2), flat.size(1));
  });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("blend", &blend, "masked bilinear columns from corner rows");
  m.def("backward", &backward, "scatter to the input, corner dot products, columns");
}
