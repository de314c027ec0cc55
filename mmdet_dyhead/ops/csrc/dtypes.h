// Element access shared by the C++ loops: bf16 travels as its raw bits (uint16_t), widened to
// fp32 on load and rounded to nearest-even on store, with plain integer shifts that the compiler
// vectorises; fp32 and fp64 pass through.
#pragma once

#include <cstdint>
#include <cstring>

namespace mmdet_dyhead {

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

}  // namespace mmdet_dyhead
