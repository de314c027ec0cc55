// Channels-last (N, C, H, W) maps to contiguous ones, tile by tile.
//
// DynamicHead works channels-last and hands its outputs back contiguous, as mmdet's heads expect.
// torch's copy does that conversion pixel row by pixel row: on a 64 x 64 map every write of a
// pixel's C channels lands one plane (16 KiB) after the last, and the copy ran at about 1 GB/s
// (7.7 ms for a 256-channel, batch-2 map; the other direction took 1 ms). Here each tile of
// kTile pixels x kTile channels is read row by row into a small buffer and written out plane by
// plane, so both sides move whole cache lines; the threads split the tiles.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace {

constexpr int64_t kTile = 32;

template <typename T>
void transpose_tiles(const T* __restrict__ in, T* __restrict__ out, int64_t N, int64_t C,
                     int64_t HW) {
  const int64_t pixel_tiles = (HW + kTile - 1) / kTile, channel_tiles = (C + kTile - 1) / kTile;
  at::parallel_for(0, N * pixel_tiles * channel_tiles, 16, [&](int64_t begin, int64_t end) {
    T tile[kTile][kTile];
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / (pixel_tiles * channel_tiles);
      const int64_t p0 = (t / channel_tiles) % pixel_tiles * kTile, c0 = t % channel_tiles * kTile;
      const int64_t np = std::min(kTile, HW - p0), nc = std::min(kTile, C - c0);
      const T* src = in + (n * HW + p0) * C + c0;
      for (int64_t p = 0; p < np; ++p)
        for (int64_t c = 0; c < nc; ++c) tile[c][p] = src[p * C + c];
      T* dst = out + (n * C + c0) * HW + p0;
      for (int64_t c = 0; c < nc; ++c) std::memcpy(dst + c * HW, tile[c], np * sizeof(T));
    }
  });
}

// x: (N, C, H, W), channels-last and dense -> the same values, contiguous
at::Tensor channels_last_to_contiguous(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "channels_last_to_contiguous: x must be a dense channels-last (N, C, H, W) map");
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  if (x.numel() == 0) return out;
  switch (x.element_size()) {  // a copy moves bits: only their width matters
    case 2: transpose_tiles(static_cast<const uint16_t*>(x.data_ptr()),
                            static_cast<uint16_t*>(out.data_ptr()), N, C, HW); break;
    case 4: transpose_tiles(static_cast<const uint32_t*>(x.data_ptr()),
                            static_cast<uint32_t*>(out.data_ptr()), N, C, HW); break;
    case 8: transpose_tiles(static_cast<const uint64_t*>(x.data_ptr()),
                            static_cast<uint64_t*>(out.data_ptr()), N, C, HW); break;
    default: out.copy_(x);
  }
  return out;
}

}  // namespace

void bind_layout(pybind11::module_& m) {
  m.def("channels_last_to_contiguous", &channels_last_to_contiguous,
        "a dense channels-last (N, C, H, W) map as a contiguous one, tile by tile");
}
