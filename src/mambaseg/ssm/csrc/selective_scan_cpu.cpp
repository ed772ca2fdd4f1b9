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
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t kMaxState = 256;
constexpr int64_t kMinUnits = 8;  // target number of backward work units (shape-only, for determinism)

template <typename T>
inline T softplus(T x) {  // torch.nn.functional.softplus with beta=1, threshold=20
  return x > T(20) ? x : std::log1p(std::exp(x));
}

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// exp that the compiler can vectorise (plain IEEE arithmetic, no -ffast-math, no libm call): range reduction
// x = k ln2 + r with |r| <= ln2/2 (ln2 split in a high part exact in float and a low part), a degree-7 polynomial
// for exp(r) (Cephes expf coefficients, ~1 ulp), then scaling by 2^k as two factors 2^(k>>1) and 2^(k-(k>>1)),
// each a normal float built from exponent bits, so underflow to denormals / zero and overflow to +inf happen
// through ordinary IEEE multiplication. Rounding to the nearest k uses the 1.5*2^23 trick (round-to-nearest mode).
inline float exp_vec(float x) {
  const float xc = std::min(std::max(x, -104.0f), 89.0f);
  const float kf = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = xc - kf * 0.693359375f;
  r = r - kf * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t k = static_cast<int32_t>(kf);
  const int32_t k1 = k >> 1, k2 = k - k1;
  const int32_t b1 = (k1 + 127) << 23, b2 = (k2 + 127) << 23;
  float s1, s2;
  std::memcpy(&s1, &b1, sizeof(s1));
  std::memcpy(&s2, &b2, sizeof(s2));
  const float res = (p * s1) * s2;
  return x != x ? x : res;  // NaN propagates
}

inline double exp_vec(double x) { return std::exp(x); }

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
  T dt_raw(int64_t r, int64_t l) const { return delta[r * len + l] + (bias ? bias[r % dim] : T(0)); }
  T dt_of(T raw) const { return softplus ? ::softplus(raw) : raw; }
};

// sum_n x[n] y[n] in four interleaved partial sums (fixed order, so vectorisable without reassociation)
template <typename T, int NT>
inline T dot(const T* x, const T* y, int64_t N) {
  if constexpr (NT > 0 && NT % 4 == 0) {
    T s[4] = {0, 0, 0, 0};
    for (int j = 0; j < NT; j += 4)
      for (int q = 0; q < 4; ++q) s[q] += x[j + q] * y[j + q];
    return (s[0] + s[1]) + (s[2] + s[3]);
  } else {
    T s = 0;
    for (int64_t n = 0; n < N; ++n) s += x[n] * y[n];
    return s;
  }
}

template <typename T, int NT>
void forward_row(const Problem<T>& p, int64_t r, T* out, T* last, T* states) {
  const int64_t N = NT > 0 ? NT : p.nstate, L = p.len, d = r % p.dim;
  const T* u = p.u + r * L;
  const T* A = p.A + d * N;
  const T* Bm = p.b_of(r);
  const T* Cm = p.c_of(r);
  const T Dd = p.D ? p.D[d] : T(0);
  T h[NT > 0 ? NT : kMaxState];
  for (int64_t n = 0; n < N; ++n) h[n] = 0;
  T* o = out + r * L;
  for (int64_t l = 0; l < L; ++l) {
    if (states && l % p.chunk == 0) std::copy(h, h + N, states + (r * p.nchunks + l / p.chunk) * N);
    const T dt = p.dt_of(p.dt_raw(r, l));
    const T dtu = dt * u[l];
    const T* Bl = Bm + l * N;
    const T* Cl = Cm + l * N;
    for (int64_t n = 0; n < N; ++n) h[n] = exp_vec(dt * A[n]) * h[n] + dtu * Bl[n];
    T y = dot<T, NT>(h, Cl, N);
    if (p.D) y += Dd * u[l];
    if (p.z) {
      const T zl = p.z[r * L + l];
      y *= zl * sigmoid(zl);
    }
    o[l] = y;
  }
  std::copy(h, h + N, last + r * N);
}

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
  T *du, *ddelta, *dz;   // (R, L); dz may be null
  T *dA_rows;            // (R, N)
  T *dD_rows, *dbias_rows;  // (R,)
  T *dB, *dC;            // (batch, G, slices, L, N)
};

template <typename T, int NT>
void backward_unit(const Problem<T>& p, const Grads<T>& gr, const Units& un, int64_t unit) {
  const int64_t N = NT > 0 ? NT : p.nstate, L = p.len, T_ = p.chunk;
  const int64_t bg = unit / un.slices, s = unit % un.slices;
  const int64_t b = bg / p.groups, g = bg % p.groups;
  const int64_t d0 = g * un.cpg + s * un.per, d1 = std::min(d0 + un.per, (g + 1) * un.cpg);
  const int64_t nch = d1 - d0;
  const T* Bm = p.B + bg * L * N;
  const T* Cm = p.C + bg * L * N;
  T* dBm = gr.dB + (bg * un.slices + s) * L * N;
  T* dCm = gr.dC + (bg * un.slices + s) * L * N;
  std::vector<T> carry(nch * N, T(0)), dA(nch * N, T(0)), dD(nch, T(0)), dbias(nch, T(0));
  std::vector<T> hbuf((T_ + 1) * N), abuf(T_ * N), dtbuf(T_);
  for (int64_t c = 0; c < nch; ++c)
    if (gr.dlast) std::copy(gr.dlast + (b * p.dim + d0 + c) * N, gr.dlast + (b * p.dim + d0 + c + 1) * N,
                            carry.begin() + c * N);
  T g_[NT > 0 ? NT : kMaxState];
  for (int64_t k = p.nchunks - 1; k >= 0; --k) {
    const int64_t l0 = k * T_, steps = std::min(L, l0 + T_) - l0;
    for (int64_t c = 0; c < nch; ++c) {
      const int64_t d = d0 + c, r = b * p.dim + d;
      const T* A = p.A + d * N;
      const T* u = p.u + r * L;
      const T Dd = p.D ? p.D[d] : T(0);
      T* cr = carry.data() + c * N;
      // recompute the chunk's states: hbuf[t + 1] = h at position l0 + t, hbuf[0] = state entering the chunk
      T* hb = hbuf.data();
      std::copy(gr.states + (r * p.nchunks + k) * N, gr.states + (r * p.nchunks + k + 1) * N, hb);
      for (int64_t t = 0; t < steps; ++t) {
        const T dt = p.dt_of(p.dt_raw(r, l0 + t));
        const T dtu = dt * u[l0 + t];
        const T* Bl = Bm + (l0 + t) * N;
        T* a = abuf.data() + t * N;
        const T* hp = hb + t * N;
        T* hc = hb + (t + 1) * N;
        for (int64_t n = 0; n < N; ++n) {
          a[n] = exp_vec(dt * A[n]);
          hc[n] = a[n] * hp[n] + dtu * Bl[n];
        }
        dtbuf[t] = dt;
      }
      T dA_acc[NT > 0 ? NT : kMaxState];
      std::copy(dA.begin() + c * N, dA.begin() + (c + 1) * N, dA_acc);
      T dD_acc = dD[c], dbias_acc = dbias[c];
      // adjoint, backwards through the chunk; cr holds a_{l+1} g_{l+1}
      for (int64_t t = steps - 1; t >= 0; --t) {
        const int64_t l = l0 + t;
        const T* hc = hb + (t + 1) * N;
        const T* hp = hb + t * N;
        const T* a = abuf.data() + t * N;
        const T* Bl = Bm + l * N;
        const T* Cl = Cm + l * N;
        T* dBl = dBm + l * N;
        T* dCl = dCm + l * N;
        const T dt = dtbuf[t], ul = u[l];
        T dy = gr.dout[r * L + l];
        if (p.z) {
          const T zl = p.z[r * L + l];
          const T sg = sigmoid(zl);
          const T pre = dot<T, NT>(hc, Cl, N) + Dd * ul;
          gr.dz[r * L + l] = dy * pre * sg * (T(1) + zl * (T(1) - sg));
          dy = dy * zl * sg;
        }
        dD_acc += dy * ul;
        const T dtu = dt * ul;
        for (int64_t n = 0; n < N; ++n) {
          g_[n] = cr[n] + dy * Cl[n];
          dCl[n] += dy * hc[n];
          dBl[n] += g_[n] * dtu;
        }
        T gh[NT > 0 ? NT : kMaxState];
        for (int64_t n = 0; n < N; ++n) {
          gh[n] = g_[n] * hp[n] * a[n];
          dA_acc[n] += gh[n] * dt;
          cr[n] = a[n] * g_[n];
        }
        const T gB = dot<T, NT>(g_, Bl, N);
        T ddt = dot<T, NT>(gh, A, N) + gB * ul;
        gr.du[r * L + l] = gB * dt + (p.D ? Dd * dy : T(0));
        if (p.softplus) ddt *= sigmoid(p.dt_raw(r, l));
        gr.ddelta[r * L + l] = ddt;
        dbias_acc += ddt;
      }
      std::copy(dA_acc, dA_acc + N, dA.begin() + c * N);
      dD[c] = dD_acc;
      dbias[c] = dbias_acc;
    }
  }
  for (int64_t c = 0; c < nch; ++c) {
    const int64_t r = b * p.dim + d0 + c;
    std::copy(dA.begin() + c * N, dA.begin() + (c + 1) * N, gr.dA_rows + r * N);
    gr.dD_rows[r] = dD[c];
    gr.dbias_rows[r] = dbias[c];
  }
}

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

#define MAMBASEG_DISPATCH_N(N, FN, ...)        \
  switch (N) {                                 \
    case 4: FN<scalar_t, 4>(__VA_ARGS__); break;   \
    case 8: FN<scalar_t, 8>(__VA_ARGS__); break;   \
    case 16: FN<scalar_t, 16>(__VA_ARGS__); break; \
    default: FN<scalar_t, 0>(__VA_ARGS__);     \
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
    at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) MAMBASEG_DISPATCH_N(N, forward_row, p, r, o, la, st)
    });
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
  auto dBp = at::zeros({batch, G, un.slices, L, N}, u.options());
  auto dCp = at::zeros({batch, G, un.slices, L, N}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_cpu_backward", [&] {
    const auto p = make_problem<scalar_t>(u, delta, A, Bt, Ct, D, z, bias, softplus, chunk);
    Grads<scalar_t> gr{dout.data_ptr<scalar_t>(), dlast.has_value() ? dlast->data_ptr<scalar_t>() : nullptr,
                       states.data_ptr<scalar_t>(), du.data_ptr<scalar_t>(), ddelta.data_ptr<scalar_t>(),
                       z.has_value() ? dz.data_ptr<scalar_t>() : nullptr, dA_rows.data_ptr<scalar_t>(),
                       dD_rows.data_ptr<scalar_t>(), dbias_rows.data_ptr<scalar_t>(), dBp.data_ptr<scalar_t>(),
                       dCp.data_ptr<scalar_t>()};
    at::parallel_for(0, batch * G * un.slices, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) MAMBASEG_DISPATCH_N(N, backward_unit, p, gr, un, i)
    });
  });
  // fixed-order reductions: over slices (dB, dC) and over the batch (dA, dD, dbias)
  at::Tensor dB = dBp.select(2, 0), dC = dCp.select(2, 0);
  if (un.slices > 1) {
    dB = dB.clone();
    dC = dC.clone();
    for (int64_t s = 1; s < un.slices; ++s) {
      dB.add_(dBp.select(2, s));
      dC.add_(dCp.select(2, s));
    }
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

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &scan_forward, "selective scan forward (CPU)");
  m.def("backward", &scan_backward, "selective scan backward (CPU)");
}
