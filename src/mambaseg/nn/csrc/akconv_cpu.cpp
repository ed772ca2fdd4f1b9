// AKConv sampling + mixing on the CPU: deformable-convolution style im2col / col2im with an irregular kernel of
// N learned points, fused with the (C_out, N*C) matrix product. Channels-last throughout, so that the work for one
// sampling point is a short vector loop over contiguous channels (the compiler vectorises it) and the position
// arithmetic is done once per point, not once per channel.
//
// Inputs (contiguous; x and weight of one dtype X, offsets and p_n of the working dtype T): T = X = float or double,
// or X = bfloat16 with T = float (bf16 samples and products, fp32 positions, accumulation and gradients dx, dp, dw):
//   x: (B, S1, S2, C)    the image to sample, channels last (the caller zero-pads it for AKConv's zero_pad mode)
//   off: (B, h, w, 2N)   offsets (p_conv's output, channels last): [.., n] along S1, [.., N + n] along S2; the sampling
//                        position of point n of output pixel (i, j) is (i, j) * stride + p_n[n] + off + shift
//   weight: (C_out, N*C) the (N, 1) mixing convolution's weight, column n*C + c
// Output: y (B, h*w, C_out) = col_b @ weight^T for every b, col_b (h*w, N*C) the bilinear samples (computed tile by
// tile in the forward), in X. The products are ATen GEMMs in X (for bf16: oneDNN / cpublas, fp32 accumulation);
// for bf16 each tile's weight-gradient product is rounded to bf16 once and added to an fp32 sum.
//
// Sampling, per axis (coordinate q, size S), exactly as the official AKConv / mambaseg's reference:
//   0 <= q < S-1:  corners floor(q), floor(q)+1 with weights 1-f, f (f = q - floor(q)); d/dq of the weights -1, +1
//   otherwise:     q clamped to 0 or S-1, both clamped corners coincide and each gets weight 1: one corner with
//                  weight 2 (the "border quirk": the edge value counts twice); no gradient to q.
// With a zero-padded x every clamped sample is a zero, so the same rule gives true zero-extended bilinear sampling.
//
// Memory: the forward and the backward keep only a tile of samples (and, backward, a tile of dcol) per thread, the
// N-fold buffer is never written out. Per tile, the backward computes dcol = dy W, then in one pass (each point's
// bilinear weights computed once, its corners loaded once) recomputes the samples for the weight gradient,
// scatters dcol to dx and reduces it to dp. Work is split by shape only (units of tiles, see akconv_backward) and
// every reduction has a fixed order, no atomics: results are bit-identical from run to run and independent of the
// number of threads.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t kTile = 1024;  // rows per tile (forward and backward) of the batch's (B*h*w) output pixels
constexpr int64_t kFuseBytes = int64_t{2} << 20;  // backward: largest tile for the fused samples pass (below)
constexpr int64_t kUnits = 8;    // backward: work units (runs of tiles), fewer only when there are fewer tiles

template <typename T>
struct Shape {
  int64_t C, N, S1, S2, hw, w, stride;  // channels, points, input plane, output pixels, output width, stride
  T shift;                              // added to every position (1 for a zero-padded input)
  const T* pn;                          // (2N,) initial sampling shape: rows then columns
};

namespace baseline {
#include "akconv_cpu_kernels.h"
}  // namespace baseline

#if defined(__x86_64__) && defined(__GNUC__)
#define MAMBASEG_HAVE_AVX2 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#include "akconv_cpu_kernels.h"
}  // namespace avx2
#pragma GCC pop_options
bool use_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#define AKCONV_CALL(FN, ...) (use_avx2() ? avx2::FN(__VA_ARGS__) : baseline::FN(__VA_ARGS__))
#else
#define AKCONV_CALL(FN, ...) baseline::FN(__VA_ARGS__)
#endif

// out[e] += parts[0][e] + ... + parts[count-1][e], added one part after the other (parts contiguous, n elements each):
// the same order as sequential add_ calls, in one pass over out; parallel over blocks of elements (exact in any split)
template <typename T>
void add_in_order(T* out, const T* parts, int64_t count, int64_t n) {
  constexpr int64_t kBlock = 4096;
  at::parallel_for(0, (n + kBlock - 1) / kBlock, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t e0 = k * kBlock, e1 = std::min(n, e0 + kBlock);
      T* __restrict__ o = out;
      for (int64_t p = 0; p < count; ++p) {
        const T* __restrict__ q = parts + p * n;
        for (int64_t e = e0; e < e1; ++e) o[e] += q[e];
      }
    }
  });
}

// Rows [r0, r1) of the batch's output pixels (row r = pixel r % hw of batch element r / hw) as pieces within one
// element: f(b, i0, i1, first) for pixels [i0, i1) of element b, first = its first row's index within [r0, r1).
template <typename F>
void for_pieces(int64_t r0, int64_t r1, int64_t hw, const F& f) {
  for (int64_t r = r0; r < r1;) {
    const int64_t b = r / hw, i0 = r - b * hw, i1 = std::min(hw, i0 + (r1 - r));
    f(b, i0, i1, r - r0);
    r += i1 - i0;
  }
}

struct Dims {
  int64_t B, C, N, S1, S2, h, w, Co;
};

Dims check(const at::Tensor& x, const at::Tensor& off, const at::Tensor& weight, const at::Tensor& pn,
           int64_t stride) {
  TORCH_CHECK(x.dim() == 4 && off.dim() == 4 && weight.dim() == 2 && pn.dim() == 1,
              "akconv_cpu: expected x (B,S1,S2,C), offsets (B,h,w,2N), weight (C_out, N*C), p_n (2N,)");
  TORCH_CHECK(x.is_contiguous() && off.is_contiguous() && weight.is_contiguous() && pn.is_contiguous(),
              "akconv_cpu: inputs must be contiguous");
  const auto work = x.scalar_type() == at::kBFloat16 ? at::kFloat : x.scalar_type();
  TORCH_CHECK(x.scalar_type() == weight.scalar_type() && off.scalar_type() == work && pn.scalar_type() == work,
              "akconv_cpu: x and weight must share one dtype (float, double or bfloat16), offsets and p_n that dtype "
              "(float for bfloat16)");
  TORCH_CHECK(off.size(0) == x.size(0) && off.size(3) % 2 == 0 && off.size(3) > 0 && pn.size(0) == off.size(3),
              "akconv_cpu: offsets must be (B, h, w, 2N) and p_n (2N,)");
  TORCH_CHECK(stride >= 0, "akconv_cpu: stride must be >= 0");
  const int64_t N = off.size(3) / 2;
  TORCH_CHECK(weight.size(1) == x.size(3) * N, "akconv_cpu: weight must be (C_out, N*C)");
  return Dims{x.size(0), x.size(3), N, x.size(1), x.size(2), off.size(1), off.size(2), weight.size(0)};
}

template <typename T>
Shape<T> shape_of(const Dims& d, const at::Tensor& pn, int64_t stride, double shift) {
  return Shape<T>{d.C, d.N, d.S1, d.S2, d.h * d.w, d.w, stride, static_cast<T>(shift), pn.data_ptr<T>()};
}

// data pointer of a tensor of storage type X (bfloat16 tensors as their uint16_t bits)
template <typename X>
X* ptr(const at::Tensor& t) {
  if constexpr (std::is_same_v<X, uint16_t>)
    return reinterpret_cast<uint16_t*>(t.data_ptr<at::BFloat16>());
  else
    return t.data_ptr<X>();
}

// calls f with (T, X) placeholders for x's dtype: (float, float), (double, double) or (float, bf16 bits)
template <typename F>
void dispatch_types(at::ScalarType dtype, const char* name, const F& f) {
  if (dtype == at::kFloat)
    f(float{}, float{});
  else if (dtype == at::kDouble)
    f(double{}, double{});
  else if (dtype == at::kBFloat16)
    f(float{}, uint16_t{});
  else
    TORCH_CHECK(false, name, ": unsupported dtype ", dtype, " (expected float, double or bfloat16)");
}

// positions = (row, col) * stride + p_n + offsets + shift (stride 0: the offsets are absolute positions).
// Forward in tiles of kTile rows of the batch's output pixels (a tile may span batch elements, so small maps still
// make one large GEMM): each tile's samples are multiplied while they are in cache, so the N-fold buffer is never
// written out; tiles run in parallel, each GEMM single-threaded.
at::Tensor akconv_forward(const at::Tensor& x, const at::Tensor& off, const at::Tensor& weight, const at::Tensor& pn,
                          int64_t stride, double shift) {
  const Dims d = check(x, off, weight, pn, stride);
  const int64_t hw = d.h * d.w, K = d.N * d.C, rows = d.B * hw, tiles = (rows + kTile - 1) / kTile;
  auto y = at::empty({d.B, hw, d.Co}, x.options());
  if (rows == 0) return y;
  const auto wt = weight.t();
  const auto yv = y.view({rows, d.Co});
  dispatch_types(x.scalar_type(), "akconv_cpu_forward", [&](auto t_tag, auto x_tag) {
    using T = decltype(t_tag);
    using X = decltype(x_tag);
    const auto s = shape_of<T>(d, pn, stride, shift);
    at::parallel_for(0, tiles, 1, [&](int64_t j0, int64_t j1) {
      at::NoGradGuard no_grad;  // worker threads start with autograd on; the caller (a Function) has it off
      auto col = at::empty({std::min(kTile, rows), K}, x.options());
      X* cp = ptr<X>(col);
      for (int64_t j = j0; j < j1; ++j) {
        const int64_t r0 = j * kTile, r1 = std::min(rows, r0 + kTile);
        for_pieces(r0, r1, hw, [&](int64_t b, int64_t i0, int64_t i1, int64_t first) {
          AKCONV_CALL(im2col_range, ptr<X>(x[b]), off[b].data_ptr<T>(), s, cp + first * K, i0, i1);
        });
        auto yt = yv.narrow(0, r0, r1 - r0);
        at::mm_out(yt, col.narrow(0, 0, r1 - r0), wt);
      }
    });
  });
  return y;
}

// Backward in U = min(kUnits, tiles) work units, unit u the tiles [tiles*u/U, tiles*(u+1)/U) (a shape-only split),
// all in one parallel loop, each walking its tiles in order. Per tile: dcol = dy W (GEMM), one fused pass that
// writes the samples, scatters dcol to dx and reduces it to the offsets' gradient, then the samples are multiplied
// into the unit's weight-gradient partial sum (one GEMM over the whole tile); for tiles over kFuseBytes the samples
// get their own pass first and dcol reuses their buffer. A unit
// scatters into dx[b] for the elements whose first row it holds; a unit that starts inside an element scatters
// that element into a buffer of its own, added to dx[b] afterwards in unit order. The weight-gradient partial sums
// are added in unit order too. Every sum has a fixed order: bit-identical results whatever the number of threads.
std::vector<at::Tensor> akconv_backward(const at::Tensor& x, const at::Tensor& off, const at::Tensor& weight,
                                        const at::Tensor& pn, int64_t stride, double shift, const at::Tensor& dy,
                                        bool need_dx, bool need_doff, bool need_dw) {
  const Dims d = check(x, off, weight, pn, stride);
  const int64_t hw = d.h * d.w, K = d.N * d.C, rows = d.B * hw, tiles = (rows + kTile - 1) / kTile;
  const int64_t units = std::min(kUnits, tiles), plane = d.S1 * d.S2 * d.C;
  TORCH_CHECK(dy.is_contiguous() && dy.scalar_type() == x.scalar_type() && dy.numel() == rows * d.Co,
              "akconv_cpu: dy must be contiguous (B, h*w, C_out) with x's dtype");
  const auto wopt = off.options();  // the working dtype: gradients are accumulated and returned in it
  const bool mixed = x.scalar_type() != off.scalar_type();  // bf16 storage: GEMM products rounded, summed in fp32
  auto dx = need_dx ? at::zeros(x.sizes(), wopt) : at::empty({0}, wopt);
  auto doff = need_doff ? at::empty_like(off) : at::empty({0}, x.options());
  if (!(need_dx || need_doff || need_dw) || rows == 0) return {dx, doff, at::zeros(weight.sizes(), wopt)};
  // the units that start inside a batch element: their own dx buffer (slot) for that element
  std::vector<int64_t> slot(units, -1), slot_unit;
  auto unit_rows = [&](int64_t u) { return std::make_pair(tiles * u / units * kTile,
                                                          std::min(rows, tiles * (u + 1) / units * kTile)); };
  for (int64_t u = 0; u < units; ++u)
    if (need_dx && unit_rows(u).first % hw != 0) {
      slot[u] = static_cast<int64_t>(slot_unit.size());
      slot_unit.push_back(u);
    }
  const int64_t slots = static_cast<int64_t>(slot_unit.size());
  auto dxs = slots > 0 ? at::zeros({slots, plane}, wopt) : at::empty({0}, wopt);
  // unit 0's weight-gradient partial sum is dw itself, the others get their own
  auto dw = need_dw ? at::empty({d.Co, K}, wopt) : at::empty({0}, wopt);
  auto dwp = (need_dw && units > 1) ? at::empty({units - 1, d.Co, K}, wopt) : at::empty({0}, wopt);
  const auto dyv = dy.view({rows, d.Co});
  // the samples for the weight gradient come out of the fused pass (corners loaded once) when the two tile buffers
  // stay small; for wide tiles (deep layers) the separate pass over one buffer is faster (a shape-only choice)
  const bool need_dcol = need_dx || need_doff;
  const bool fuse = need_dw && need_dcol && std::min(kTile, rows) * K * x.element_size() <= kFuseBytes;
  dispatch_types(x.scalar_type(), "akconv_cpu_backward", [&](auto t_tag, auto x_tag) {
    using T = decltype(t_tag);
    using X = decltype(x_tag);
    const auto s = shape_of<T>(d, pn, stride, shift);
    at::parallel_for(0, units, 1, [&](int64_t u0, int64_t u1) {
      at::NoGradGuard no_grad;  // worker threads start with autograd on
      auto tile = at::empty({std::min(kTile, rows), K}, x.options());  // samples (weight gradient's operand)
      auto tile2 = fuse ? at::empty({std::min(kTile, rows), K}, x.options()) : tile;  // dcol
      auto prod = mixed && need_dw ? at::empty({d.Co, K}, x.options()) : at::Tensor();  // bf16 dw product
      X* tp = ptr<X>(tile);
      X* tp2 = ptr<X>(tile2);
      for (int64_t u = u0; u < u1; ++u) {
        const auto range = unit_rows(u);
        const int64_t ru0 = range.first, ru1 = range.second;
        auto dwu = !need_dw ? dw : u == 0 ? dw : dwp[u - 1];
        auto dw_product = [&](int64_t r0, int64_t r1, const at::Tensor& dyt) {
          const auto ct = tile.narrow(0, 0, r1 - r0);
          if (mixed) {
            at::mm_out(prod, dyt.t(), ct);
            if (r0 == ru0)
              dwu.copy_(prod);
            else
              dwu.add_(prod);
          } else if (r0 == ru0) {
            at::mm_out(dwu, dyt.t(), ct);
          } else {
            dwu.addmm_(dyt.t(), ct);
          }
        };
        for (int64_t r0 = ru0; r0 < ru1; r0 += kTile) {
          const int64_t r1 = std::min(ru1, r0 + kTile);
          const auto dyt = dyv.narrow(0, r0, r1 - r0);
          if (need_dw && !fuse) {  // the samples in their own pass, then dcol over the same buffer
            for_pieces(r0, r1, hw, [&](int64_t b, int64_t i0, int64_t i1, int64_t first) {
              AKCONV_CALL(im2col_range, ptr<X>(x[b]), off[b].data_ptr<T>(), s, tp + first * K, i0, i1);
            });
            dw_product(r0, r1, dyt);
          }
          if (need_dcol) {  // dcol = dy W, then one pass: samples (if fused), scatter to dx, offsets' gradient
            auto dct = tile2.narrow(0, 0, r1 - r0);
            at::mm_out(dct, dyt, weight);
            for_pieces(r0, r1, hw, [&](int64_t b, int64_t i0, int64_t i1, int64_t first) {
              T* dxb = !need_dx ? nullptr : b * hw >= ru0 ? dx[b].data_ptr<T>() : dxs[slot[u]].data_ptr<T>();
              AKCONV_CALL(backward_tile, ptr<X>(x[b]), tp2 + first * K, off[b].data_ptr<T>(), s,
                          fuse ? tp + first * K : nullptr, dxb, need_doff ? doff[b].data_ptr<T>() : nullptr, i0, i1);
            });
          }
          if (fuse) dw_product(r0, r1, dyt);
        }
      }
    });
    // the scatters of units that started inside an element and the weight-gradient partial sums, in unit order
    for (int64_t k = 0; k < slots; ++k)
      add_in_order(dx[unit_rows(slot_unit[k]).first / hw].data_ptr<T>(), dxs[k].data_ptr<T>(), 1, plane);
    if (need_dw && units > 1) add_in_order(dw.data_ptr<T>(), dwp.data_ptr<T>(), units - 1, d.Co * K);
  });
  return {dx, doff, dw};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &akconv_forward, "AKConv bilinear sampling + (N*C -> C_out) product, channels last, forward (CPU)");
  m.def("backward", &akconv_backward, "AKConv backward: dx, dp, dweight (CPU)");
}
