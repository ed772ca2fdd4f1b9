// Selective scan (Mamba S6) on the CPU: a loop over the sequence per row (batch x channel), the state in registers.
//
// Layouts (all contiguous, one floating dtype T = float or double):
//   u, delta, z, out: (R, L) with R = batch * dim;  A: (dim, N);  D, delta_bias: (dim,)
//   Bt, Ct: (batch, G, L, N)  (time-major per group, transposed in Python so the state loop is contiguous)
//   states: (R, K, N) with K = ceil(L / chunk): the state entering each chunk (states[:, 0] = 0)
//
// Forward: h_l = exp(dt_l A) h_{l-1} + dt_l u_l B_l,  y_l = C_l . h_l,  out_l = (y_l + D u_l) silu(z_l),
// dt_l = softplus?(delta_l + bias).  Parallel over rows.
//
// Backward: per row, the chunks are walked from last to first; each chunk's states are recomputed from the saved
// chunk-start state into a small buffer and the adjoint g_l = dL/dh_l + a_{l+1} g_{l+1} runs backwards. The
// gradients of B and C sum over the channels of a group: work is split into units (batch, group, slice of the
// group's channels) whose number depends only on the shapes; a unit loops over its channels serially (chunk-major
// for locality) and accumulates into its own buffer, and slices are reduced in a fixed order afterwards, so the
// result is bit-identical from run to run and independent of the number of threads.
//
// The extension also holds Mamba's causal depthwise conv1d + SiLU (conv_forward / conv_backward), per row, the
// backward recomputing the conv from x instead of saving it.
//
// The kernels live in selective_scan_cpu_kernels.h, compiled twice: for the baseline instruction set and, on
// x86-64, for AVX2+FMA (chosen at run time with __builtin_cpu_supports), so the build needs no -march=native and
// can be reused on another CPU. Build with -O3 -fno-trapping-math (lets GCC if-convert and vectorise the exp;
// it does not change IEEE results), never -ffast-math.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t kMaxState = 256;
constexpr int64_t kMinUnits = 8;  // target number of backward work units (shape-only, for determinism)

template <typename T>
struct Problem {
  const T* u;
  const T* delta;
  const T* A;
  const T* B;  // (batch, G, L, N)
  const T* C;
  const T* D;     // may be null
  const T* z;     // may be null
  const T* bias;  // may be null
  int64_t batch, dim, len, nstate, groups, chunk, nchunks;
  bool softplus;

  int64_t group_of(int64_t d) const { return d / (dim / groups); }
  const T* b_of(int64_t r) const { return B + ((r / dim) * groups + group_of(r % dim)) * len * nstate; }
  const T* c_of(int64_t r) const { return C + ((r / dim) * groups + group_of(r % dim)) * len * nstate; }
};

struct Units {  // backward work split: (batch, group, slice) units, slices of `per` consecutive channels
  int64_t cpg, slices, per;
  Units(int64_t batch, int64_t dim, int64_t groups) {
    cpg = dim / groups;
    const int64_t base = batch * groups;
    slices = std::min(cpg, std::max<int64_t>(1, (kMinUnits + base - 1) / base));
    per = (cpg + slices - 1) / slices;
    slices = (cpg + per - 1) / per;
  }
};

template <typename T>
struct Grads {
  const T* dout;
  const T* dlast;  // may be null
  const T* states;
  T *du, *ddelta, *dz;      // (R, L); dz may be null
  T* dA_rows;               // (R, N)
  T *dD_rows, *dbias_rows;  // (R,)
  T *dB, *dC;               // (batch, G, slices, L, N)
};

#if defined(__GNUC__) && (defined(__clang__) || __GNUC__ >= 12)  // vector extensions with __builtin_shufflevector
#define MAMBASEG_VEC 1
#pragma GCC diagnostic ignored "-Wpsabi"  // 32-byte vector types in the baseline build: inline helpers only
#else
#define MAMBASEG_VEC 0
#endif

namespace baseline {
#include "selective_scan_cpu_kernels.h"
}  // namespace baseline

#if defined(__x86_64__) && defined(__GNUC__)
#define MAMBASEG_HAVE_AVX2 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#include "selective_scan_cpu_kernels.h"
}  // namespace avx2
#pragma GCC pop_options
bool use_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#else
#define MAMBASEG_HAVE_AVX2 0
#endif

#define MAMBASEG_DISPATCH_NS(NS, N, FN, ...)                \
  switch (N) {                                              \
    case 4: NS::FN<scalar_t, 4>(__VA_ARGS__); break;        \
    case 8: NS::FN<scalar_t, 8>(__VA_ARGS__); break;        \
    case 16: NS::FN<scalar_t, 16>(__VA_ARGS__); break;      \
    default: NS::FN<scalar_t, 0>(__VA_ARGS__);              \
  }

#if MAMBASEG_HAVE_AVX2
#define MAMBASEG_CALL_T(FN, ...)                                                               \
  if (use_avx2()) {                                                                            \
    avx2::FN<scalar_t>(__VA_ARGS__);                                                           \
  } else {                                                                                     \
    baseline::FN<scalar_t>(__VA_ARGS__);                                                       \
  }
#define MAMBASEG_DISPATCH(N, FN, ...)                            \
  if (use_avx2()) {                                              \
    MAMBASEG_DISPATCH_NS(avx2, N, FN, __VA_ARGS__)               \
  } else {                                                       \
    MAMBASEG_DISPATCH_NS(baseline, N, FN, __VA_ARGS__)           \
  }
#else
#define MAMBASEG_CALL_T(FN, ...) baseline::FN<scalar_t>(__VA_ARGS__);
#define MAMBASEG_DISPATCH(N, FN, ...) MAMBASEG_DISPATCH_NS(baseline, N, FN, __VA_ARGS__)
#endif

template <typename T>
Problem<T> make_problem(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& Bt,
                        const at::Tensor& Ct, const c10::optional<at::Tensor>& D, const c10::optional<at::Tensor>& z,
                        const c10::optional<at::Tensor>& bias, bool softplus, int64_t chunk) {
  Problem<T> p;
  p.u = u.data_ptr<T>();
  p.delta = delta.data_ptr<T>();
  p.A = A.data_ptr<T>();
  p.B = Bt.data_ptr<T>();
  p.C = Ct.data_ptr<T>();
  p.D = D.has_value() ? D->data_ptr<T>() : nullptr;
  p.z = z.has_value() ? z->data_ptr<T>() : nullptr;
  p.bias = bias.has_value() ? bias->data_ptr<T>() : nullptr;
  p.batch = u.size(0);
  p.dim = u.size(1);
  p.len = u.size(2);
  p.nstate = A.size(1);
  p.groups = Bt.size(1);
  p.chunk = chunk;
  p.nchunks = (p.len + chunk - 1) / chunk;
  p.softplus = softplus;
  return p;
}

void check_inputs(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& Bt,
                  const at::Tensor& Ct, const c10::optional<at::Tensor>& D, const c10::optional<at::Tensor>& z,
                  const c10::optional<at::Tensor>& bias, int64_t chunk) {
  TORCH_CHECK(u.dim() == 3 && A.dim() == 2 && Bt.dim() == 4, "selective_scan_cpu: bad ranks");
  const auto dtype = u.scalar_type();
  for (const at::Tensor* t : {&u, &delta, &A, &Bt, &Ct})
    TORCH_CHECK(t->is_contiguous() && t->scalar_type() == dtype && t->device().is_cpu(),
                "selective_scan_cpu: inputs must be contiguous CPU tensors of one dtype");
  for (const auto* t : {&D, &z, &bias})
    TORCH_CHECK(!t->has_value() || ((*t)->is_contiguous() && (*t)->scalar_type() == dtype),
                "selective_scan_cpu: optional inputs must be contiguous and of u's dtype");
  TORCH_CHECK(A.size(1) <= kMaxState, "selective_scan_cpu: N must be <= ", kMaxState);
  TORCH_CHECK(chunk >= 1, "selective_scan_cpu: chunk must be >= 1");
  TORCH_CHECK(u.size(1) % Bt.size(1) == 0, "selective_scan_cpu: dim must be divisible by groups");
}

std::vector<at::Tensor> scan_forward(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                     const at::Tensor& Bt, const at::Tensor& Ct, const c10::optional<at::Tensor>& D,
                                     const c10::optional<at::Tensor>& z, const c10::optional<at::Tensor>& bias,
                                     bool softplus, int64_t chunk, bool save_states) {
  check_inputs(u, delta, A, Bt, Ct, D, z, bias, chunk);
  const int64_t rows = u.size(0) * u.size(1), N = A.size(1), K = (u.size(2) + chunk - 1) / chunk;
  auto out = at::empty_like(u);
  auto last = at::empty({u.size(0), u.size(1), N}, u.options());
  auto states = save_states ? at::empty({rows, K, N}, u.options()) : at::empty({0}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_cpu_forward", [&] {
    const auto p = make_problem<scalar_t>(u, delta, A, Bt, Ct, D, z, bias, softplus, chunk);
    scalar_t* o = out.data_ptr<scalar_t>();
    scalar_t* la = last.data_ptr<scalar_t>();
    scalar_t* st = save_states ? states.data_ptr<scalar_t>() : nullptr;
    if (N == 4 && (p.dim / p.groups) % 2 == 0) {  // channel pairs of one group in 8 lanes
      at::parallel_for(0, rows / 2, 1, [&](int64_t begin, int64_t end) {
        std::vector<scalar_t> buf(4 * chunk);
        for (int64_t i = begin; i < end; ++i) {
          MAMBASEG_CALL_T(forward_pair4, p, 2 * i, o, la, st, buf.data())
        }
      });
    } else {
      at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
        std::vector<scalar_t> buf(2 * chunk);
        for (int64_t r = begin; r < end; ++r) {
          MAMBASEG_DISPATCH(N, forward_row, p, r, o, la, st, buf.data())
        }
      });
    }
  });
  return {out, last, states};
}

std::vector<at::Tensor> scan_backward(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                      const at::Tensor& Bt, const at::Tensor& Ct,
                                      const c10::optional<at::Tensor>& D, const c10::optional<at::Tensor>& z,
                                      const c10::optional<at::Tensor>& bias, bool softplus, int64_t chunk,
                                      const at::Tensor& states, const at::Tensor& dout,
                                      const c10::optional<at::Tensor>& dlast) {
  check_inputs(u, delta, A, Bt, Ct, D, z, bias, chunk);
  TORCH_CHECK(dout.is_contiguous() && dout.sizes() == u.sizes() && dout.scalar_type() == u.scalar_type(),
              "selective_scan_cpu: dout must be contiguous with u's shape and dtype");
  TORCH_CHECK(!dlast.has_value() || (dlast->is_contiguous() && dlast->scalar_type() == u.scalar_type()),
              "selective_scan_cpu: dlast must be contiguous with u's dtype");
  const int64_t batch = u.size(0), dim = u.size(1), L = u.size(2), N = A.size(1), G = Bt.size(1);
  const int64_t rows = batch * dim;
  const Units un(batch, dim, G);
  auto du = at::empty_like(u), ddelta = at::empty_like(u);
  auto dz = z.has_value() ? at::empty_like(u) : at::empty({0}, u.options());
  auto dA_rows = at::empty({rows, N}, u.options());
  auto dD_rows = at::empty({rows}, u.options()), dbias_rows = at::empty({rows}, u.options());
  auto dBp = at::empty({batch, G, un.slices, L, N}, u.options());  // zeroed by the units, chunk by chunk
  auto dCp = at::empty({batch, G, un.slices, L, N}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_cpu_backward", [&] {
    const auto p = make_problem<scalar_t>(u, delta, A, Bt, Ct, D, z, bias, softplus, chunk);
    Grads<scalar_t> gr{dout.data_ptr<scalar_t>(), dlast.has_value() ? dlast->data_ptr<scalar_t>() : nullptr,
                       states.data_ptr<scalar_t>(), du.data_ptr<scalar_t>(), ddelta.data_ptr<scalar_t>(),
                       z.has_value() ? dz.data_ptr<scalar_t>() : nullptr, dA_rows.data_ptr<scalar_t>(),
                       dD_rows.data_ptr<scalar_t>(), dbias_rows.data_ptr<scalar_t>(), dBp.data_ptr<scalar_t>(),
                       dCp.data_ptr<scalar_t>()};
    at::parallel_for(0, batch * G * un.slices, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        MAMBASEG_DISPATCH(N, backward_unit, p, gr, un, i)
      }
    });
  });
  // fixed-order reductions: over slices (dB, dC; one pass, parallel over blocks of positions) and over the batch
  // (dA, dD, dbias)
  at::Tensor dB = dBp.select(2, 0), dC = dCp.select(2, 0);
  if (un.slices > 1) {
    dB = at::empty({batch, G, L, N}, u.options());
    dC = at::empty({batch, G, L, N}, u.options());
    AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_cpu_reduce", [&] {
      constexpr int64_t kBlock = 4096;  // values per task
      const int64_t per_bg = L * N, blocks = (per_bg + kBlock - 1) / kBlock, S = un.slices;
      const scalar_t* srcs[2] = {dBp.data_ptr<scalar_t>(), dCp.data_ptr<scalar_t>()};
      scalar_t* dsts[2] = {dB.data_ptr<scalar_t>(), dC.data_ptr<scalar_t>()};
      at::parallel_for(0, 2 * batch * G * blocks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const int64_t which = i / (batch * G * blocks), rest = i % (batch * G * blocks);
          const int64_t bg = rest / blocks, i0 = (rest % blocks) * kBlock, n = std::min(kBlock, per_bg - i0);
          const scalar_t* src = srcs[which] + bg * S * per_bg + i0;
          scalar_t* dst = dsts[which] + bg * per_bg + i0;
          std::copy(src, src + n, dst);
          for (int64_t s = 1; s < S; ++s) {
            const scalar_t* part = src + s * per_bg;
            for (int64_t j = 0; j < n; ++j) dst[j] += part[j];
          }
        }
      });
    });
  }
  auto dA = dA_rows.view({batch, dim, N}).select(0, 0).clone();
  auto dD = dD_rows.view({batch, dim}).select(0, 0).clone();
  auto dbias = dbias_rows.view({batch, dim}).select(0, 0).clone();
  for (int64_t b = 1; b < batch; ++b) {
    dA.add_(dA_rows.view({batch, dim, N}).select(0, b));
    dD.add_(dD_rows.view({batch, dim}).select(0, b));
    dbias.add_(dbias_rows.view({batch, dim}).select(0, b));
  }
  return {du, ddelta, dA, dB.contiguous(), dC.contiguous(), dD, dz, dbias};
}

// Causal depthwise conv1d + SiLU: x (B, D, L), weight (D, K), bias (D,), contiguous, one dtype -> out (B, D, L).
void check_conv(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  TORCH_CHECK(x.dim() == 3 && weight.dim() == 2 && bias.dim() == 1 && weight.size(0) == x.size(1) &&
                  bias.size(0) == x.size(1),
              "causal_conv1d_silu: expected x (B, D, L), weight (D, K), bias (D,)");
  for (const at::Tensor* t : {&x, &weight, &bias})
    TORCH_CHECK(t->is_contiguous() && t->scalar_type() == x.scalar_type() && t->device().is_cpu(),
                "causal_conv1d_silu: inputs must be contiguous CPU tensors of one dtype");
}

at::Tensor conv_forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  check_conv(x, weight, bias);
  const int64_t D = x.size(1), L = x.size(2), K = weight.size(1), rows = x.size(0) * D;
  auto out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "causal_conv1d_silu_forward", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* wp = weight.data_ptr<scalar_t>();
    const scalar_t* bp = bias.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t d = r % D;
        MAMBASEG_CALL_T(conv_silu_forward_row, xp + r * L, wp + d * K, K, bp[d], L, op + r * L)
      }
    });
  });
  return out;
}

// -> dx (B, D, L), dweight (D, K), dbias (D,); the batch sums in a fixed order (bit-identical for any threads)
std::vector<at::Tensor> conv_backward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                      const at::Tensor& grad) {
  check_conv(x, weight, bias);
  TORCH_CHECK(grad.is_contiguous() && grad.sizes() == x.sizes() && grad.scalar_type() == x.scalar_type(),
              "causal_conv1d_silu: grad must be contiguous with x's shape and dtype");
  const int64_t batch = x.size(0), D = x.size(1), L = x.size(2), K = weight.size(1), rows = batch * D;
  auto dx = at::empty_like(x);
  auto dw_rows = at::empty({batch, D, K}, x.options());
  auto db_rows = at::empty({batch, D}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "causal_conv1d_silu_backward", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* wp = weight.data_ptr<scalar_t>();
    const scalar_t* bp = bias.data_ptr<scalar_t>();
    const scalar_t* gp = grad.data_ptr<scalar_t>();
    scalar_t* dxp = dx.data_ptr<scalar_t>();
    scalar_t* dwp = dw_rows.data_ptr<scalar_t>();
    scalar_t* dbp = db_rows.data_ptr<scalar_t>();
    at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scratch(L);
      for (int64_t r = begin; r < end; ++r) {
        const int64_t d = r % D;
        MAMBASEG_CALL_T(conv_silu_backward_row, xp + r * L, wp + d * K, K, bp[d], L, gp + r * L, scratch.data(),
                        dxp + r * L, dwp + r * K, dbp + r)
      }
    });
  });
  auto dw = dw_rows.select(0, 0).clone();
  auto db = db_rows.select(0, 0).clone();
  for (int64_t b = 1; b < batch; ++b) {
    dw.add_(dw_rows.select(0, b));
    db.add_(db_rows.select(0, b));
  }
  return {dx, dw, db};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("conv_forward", &conv_forward, "causal depthwise conv1d + SiLU forward (CPU)");
  m.def("conv_backward", &conv_backward, "causal depthwise conv1d + SiLU backward (CPU)");
  m.def("forward", &scan_forward, "selective scan forward (CPU)");
  m.def("backward", &scan_backward, "selective scan backward (CPU)");
}
