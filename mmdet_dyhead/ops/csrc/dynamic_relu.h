// The dynamic ReLU's element-wise rules, shared by the scale/task passes (scale_task.cpp,
// norm_scale_task.cpp): its maximum, the sign code its forward keeps, and the gradient's split
// in its backward, all as autograd of torch.maximum has them.
#pragma once

#include <cstdint>

namespace mmdet_dyhead {

// torch.maximum: NaN if either is NaN
template <typename A>
inline A nan_max(A y1, A y2) { return (y1 > y2 || y1 != y1) ? y1 : y2; }

// sign of y1 - y2: 1, -1, 0 at a tie (the gradient is split evenly, as torch.maximum does) and
// 2 where either is NaN (each gets the whole gradient, as in autograd of torch.maximum)
template <typename A>
inline int8_t sign_code(A y1, A y2) {
  return y1 > y2 ? 1 : (y1 < y2 ? -1 : (y1 == y2 ? 0 : 2));
}

// the gradient g of max(y1, y2) at one element with sign code k: h1 reaches y1, h2 reaches y2
template <typename A>
inline void split_grad(int8_t k, A g, A& h1, A& h2) {
  h1 = (k == 1 || k == 2) ? g : (k == 0 ? A(0.5) * g : A(0));
  h2 = k == 2 ? g : g - h1;
}

}  // namespace mmdet_dyhead
