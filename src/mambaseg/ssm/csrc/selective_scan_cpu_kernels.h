// Kernels of the CPU selective scan; included by selective_scan_cpu.cpp once per instruction set (baseline and,
// on x86-64, AVX2+FMA selected at run time), each time inside its own namespace. No include guard on purpose.
//
// Element-wise work (dt = softplus(delta + bias), the silu gate, the softplus derivative) is done on small
// per-chunk buffers in loops the compiler vectorises; the recurrence itself vectorises over the N states.

// exp that the compiler can vectorise (plain IEEE arithmetic, no libm call): x = k ln2 + r with |r| <= ln2/2 (ln2
// split in a high part exact in float and a low part), a degree-7 polynomial for exp(r) (Cephes expf
// coefficients, ~1 ulp), then scaling by 2^k as two factors 2^(k>>1) and 2^(k-(k>>1)), each a normal float built
// from exponent bits, so underflow to denormals / zero and overflow to +inf happen through ordinary IEEE
// multiplication. Rounding to the nearest k uses the 1.5*2^23 trick (default round-to-nearest mode).
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

// softplus (torch semantics: beta 1, threshold 20) as max(x, 0) + log1p(exp(-|x|)), with
// log1p(t) = 2 atanh(t / (2 + t)) summed as an odd series (t in (0, 1] so s = t / (2 + t) <= 1/3).
inline float softplus_vec(float x) {
  const float t = exp_vec(-std::fabs(x));
  const float s = t / (2.0f + t), s2 = s * s;
  float q = 1.0f / 15.0f;
  q = q * s2 + 1.0f / 13.0f;
  q = q * s2 + 1.0f / 11.0f;
  q = q * s2 + 1.0f / 9.0f;
  q = q * s2 + 1.0f / 7.0f;
  q = q * s2 + 1.0f / 5.0f;
  q = q * s2 + 1.0f / 3.0f;
  q = q * s2 + 1.0f;
  const float res = std::max(x, 0.0f) + 2.0f * s * q;
  return x > 20.0f ? x : res;
}

inline float sigmoid_vec(float x) { return 1.0f / (1.0f + exp_vec(-x)); }

// fp64 is for accuracy checks: libm is fine there.
inline double exp_vec(double x) { return std::exp(x); }
inline double softplus_vec(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }
inline double sigmoid_vec(double x) { return 1.0 / (1.0 + std::exp(-x)); }

#if MAMBASEG_VEC
// GCC/Clang vector extensions: 8 floats, one AVX register (two SSE registers in the baseline build). Left to
// itself the compiler keeps the dot products below scalar (16 loads + 16 scalar FMAs + a shuffle tree per step).
typedef float v8f __attribute__((vector_size(32)));
inline v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
// horizontal sum in a fixed tree: ((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7))
inline float hsum8(v8f s) {
  v8f t = s + __builtin_shufflevector(s, s, 4, 5, 6, 7, 0, 1, 2, 3);
  t = t + __builtin_shufflevector(t, t, 2, 3, 0, 1, 6, 7, 4, 5);
  t = t + __builtin_shufflevector(t, t, 1, 0, 3, 2, 5, 4, 7, 6);
  return t[0];
}
#endif

// sum_n x[n] y[n] in interleaved partial sums (a fixed order, so vectorisable without reassociation)
template <typename T, int NT>
inline T dot(const T* x, const T* y, int64_t N) {
#if MAMBASEG_VEC
  if constexpr (std::is_same<T, float>::value && NT > 0 && NT % 8 == 0) {
    v8f s = load8(x) * load8(y);
    for (int j = 8; j < NT; j += 8) s += load8(x + j) * load8(y + j);
    return hsum8(s);
  } else
#endif
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

// dt[t] = softplus?(delta[t] + bias) for t < steps; raw[t] = delta + bias if raw is not null.
template <typename T>
inline void fill_dt(const Problem<T>& p, int64_t r, int64_t l0, int64_t steps, T* dt, T* raw) {
  const T* de = p.delta + r * p.len + l0;
  const T bias = p.bias ? p.bias[r % p.dim] : T(0);
  for (int64_t t = 0; t < steps; ++t) dt[t] = de[t] + bias;
  if (raw) std::copy(dt, dt + steps, raw);
  if (p.softplus)
    for (int64_t t = 0; t < steps; ++t) dt[t] = softplus_vec(dt[t]);
}

// One row (batch b, channel d): out, the last state and (optionally) the state entering each chunk.
// buf: 2 * chunk scratch values.
template <typename T, int NT>
void forward_row(const Problem<T>& p, int64_t r, T* out, T* last, T* states, T* buf) {
  const int64_t N = NT > 0 ? NT : p.nstate, L = p.len, d = r % p.dim;
  const T* u = p.u + r * L;
  const T* A = p.A + d * N;
  const T* Bm = p.b_of(r);
  const T* Cm = p.c_of(r);
  const T Dd = p.D ? p.D[d] : T(0);
  T* dtb = buf;
  T* yb = buf + p.chunk;
  T h[NT > 0 ? NT : kMaxState];
  for (int64_t n = 0; n < N; ++n) h[n] = 0;
  for (int64_t l0 = 0; l0 < L; l0 += p.chunk) {
    const int64_t steps = std::min(p.chunk, L - l0);
    if (states) std::copy(h, h + N, states + (r * p.nchunks + l0 / p.chunk) * N);
    fill_dt(p, r, l0, steps, dtb, static_cast<T*>(nullptr));
    for (int64_t t = 0; t < steps; ++t) {
      const T dt = dtb[t];
      const T dtu = dt * u[l0 + t];
      const T* Bl = Bm + (l0 + t) * N;
#pragma GCC unroll 1  // keep the loop (not fully unrolled) so that it is vectorised, exp included
      for (int64_t n = 0; n < N; ++n) h[n] = exp_vec(dt * A[n]) * h[n] + dtu * Bl[n];
      yb[t] = dot<T, NT>(h, Cm + (l0 + t) * N, N);
    }
    T* o = out + r * L + l0;
    const T* ul = u + l0;
    for (int64_t t = 0; t < steps; ++t) o[t] = yb[t] + Dd * ul[t];
    if (p.z) {
      const T* zl = p.z + r * L + l0;
      for (int64_t t = 0; t < steps; ++t) o[t] *= zl[t] * sigmoid_vec(zl[t]);
    }
  }
  std::copy(h, h + N, last + r * N);
}

// ---------------------------------------------------------------------------------------------------------------
// N = 4: two channels of one group side by side in 8 lanes (one AVX register), so the exp, the recurrence and the
// adjoint run on 8 values per instruction instead of 4; the channels share B and C (same group). Used when the
// channels of a group come in pairs; results equal the one-channel kernels up to the order of the dB/dC sums.
// ---------------------------------------------------------------------------------------------------------------
template <typename T>
inline void lanes2(T* v, T a, T b) {
  for (int j = 0; j < 4; ++j) v[j] = a;
  for (int j = 0; j < 4; ++j) v[4 + j] = b;
}

template <typename T>
inline T dot4(const T* x, const T* y) {
  return (x[0] * y[0] + x[1] * y[1]) + (x[2] * y[2] + x[3] * y[3]);
}

// s0 = dot4(x, y), s1 = dot4(x + 4, y + 4) (y: 8 values; pass a 4-value vector twice for a shared one)
template <typename T>
inline void dot4x2(const T* x, const T* y, T& s0, T& s1) {
#if MAMBASEG_VEC
  if constexpr (std::is_same<T, float>::value) {
    const v8f q = load8(x) * load8(y);
    const v8f r = q + __builtin_shufflevector(q, q, 1, 0, 3, 2, 5, 4, 7, 6);
    const v8f t = r + __builtin_shufflevector(r, r, 2, 3, 0, 1, 6, 7, 4, 5);
    s0 = t[0];
    s1 = t[4];
    return;
  }
#endif
  s0 = dot4(x, y);
  s1 = dot4(x + 4, y + 4);
}

// rows r, r + 1 (channels d, d + 1 of one group); buf: 4 * chunk scratch values
template <typename T>
void forward_pair4(const Problem<T>& p, int64_t r, T* out, T* last, T* states, T* buf) {
  const int64_t L = p.len, d = r % p.dim;
  const T* u0 = p.u + r * L;
  const T* u1 = u0 + L;
  const T* A8 = p.A + d * 4;  // rows d and d + 1 of A: 8 contiguous values
  const T* Bm = p.b_of(r);
  const T* Cm = p.c_of(r);
  const T D0 = p.D ? p.D[d] : T(0), D1 = p.D ? p.D[d + 1] : T(0);
  T* dt0b = buf;
  T* dt1b = buf + p.chunk;
  T* y0b = buf + 2 * p.chunk;
  T* y1b = buf + 3 * p.chunk;
  T h[8] = {0, 0, 0, 0, 0, 0, 0, 0}, dtv[8], dtuv[8], bv[8], cv[8];
  for (int64_t l0 = 0; l0 < L; l0 += p.chunk) {
    const int64_t steps = std::min(p.chunk, L - l0);
    if (states) {
      std::copy(h, h + 4, states + (r * p.nchunks + l0 / p.chunk) * 4);
      std::copy(h + 4, h + 8, states + ((r + 1) * p.nchunks + l0 / p.chunk) * 4);
    }
    fill_dt(p, r, l0, steps, dt0b, static_cast<T*>(nullptr));
    fill_dt(p, r + 1, l0, steps, dt1b, static_cast<T*>(nullptr));
    for (int64_t t = 0; t < steps; ++t) {
      const T dt0 = dt0b[t], dt1 = dt1b[t];
      const T* Bl = Bm + (l0 + t) * 4;
      lanes2(dtv, dt0, dt1);
      lanes2(dtuv, dt0 * u0[l0 + t], dt1 * u1[l0 + t]);
      for (int j = 0; j < 8; ++j) bv[j] = Bl[j & 3];
      for (int j = 0; j < 8; ++j) h[j] = exp_vec(dtv[j] * A8[j]) * h[j] + dtuv[j] * bv[j];
      const T* Cl = Cm + (l0 + t) * 4;
      for (int j = 0; j < 8; ++j) cv[j] = Cl[j & 3];
      dot4x2(h, cv, y0b[t], y1b[t]);
    }
    for (int q = 0; q < 2; ++q) {
      T* o = out + (r + q) * L + l0;
      const T* ul = (q ? u1 : u0) + l0;
      const T* yb = q ? y1b : y0b;
      const T Dd = q ? D1 : D0;
      for (int64_t t = 0; t < steps; ++t) o[t] = yb[t] + Dd * ul[t];
      if (p.z) {
        const T* zl = p.z + (r + q) * L + l0;
        for (int64_t t = 0; t < steps; ++t) o[t] *= zl[t] * sigmoid_vec(zl[t]);
      }
    }
  }
  std::copy(h, h + 4, last + r * 4);
  std::copy(h + 4, h + 8, last + (r + 1) * 4);
}

// Backward of channels c, c + 1 of a unit over chunk k (see backward_unit, which calls it for pairs when N = 4).
// cr (8): the adjoint carried from the chunk after; dA8 (8), dD2 (2), dbias2 (2): the unit's accumulators.
template <typename T>
void backward_pair4_chunk(const Problem<T>& p, const Grads<T>& gr, int64_t b, int64_t d, int64_t k, const T* Bm,
                          const T* Cm, T* dBm, T* dCm, T* cr, T* dA8, T* dD2, T* dbias2, T* hb, T* ab, T* scratch) {
  const int64_t L = p.len, CH = p.chunk, l0 = k * CH, steps = std::min(L, l0 + CH) - l0;
  const int64_t r = b * p.dim + d;
  const T* A8 = p.A + d * 4;
  T* dtb[2] = {scratch, scratch + CH};
  T* rawb[2] = {scratch + 2 * CH, scratch + 3 * CH};
  T* yb[2] = {scratch + 4 * CH, scratch + 5 * CH};
  T* ddtb[2] = {scratch + 6 * CH, scratch + 7 * CH};
  T* dub[2] = {scratch + 8 * CH, scratch + 9 * CH};
  const T* u[2] = {p.u + r * L + l0, p.u + (r + 1) * L + l0};
  const T Dd[2] = {p.D ? p.D[d] : T(0), p.D ? p.D[d + 1] : T(0)};
  std::copy(gr.states + (r * p.nchunks + k) * 4, gr.states + (r * p.nchunks + k + 1) * 4, hb);
  std::copy(gr.states + ((r + 1) * p.nchunks + k) * 4, gr.states + ((r + 1) * p.nchunks + k + 1) * 4, hb + 4);
  fill_dt(p, r, l0, steps, dtb[0], rawb[0]);
  fill_dt(p, r + 1, l0, steps, dtb[1], rawb[1]);
  T dtv[8], dtuv[8], bv[8];
  for (int64_t t = 0; t < steps; ++t) {  // recompute the chunk's states (hb[t + 1] = h at l0 + t) and the decays
    const T* Bl = Bm + (l0 + t) * 4;
    lanes2(dtv, dtb[0][t], dtb[1][t]);
    lanes2(dtuv, dtb[0][t] * u[0][t], dtb[1][t] * u[1][t]);
    for (int j = 0; j < 8; ++j) bv[j] = Bl[j & 3];
    T* __restrict a = ab + t * 8;
    const T* __restrict hp = hb + t * 8;
    T* __restrict hc = hb + (t + 1) * 8;
    for (int j = 0; j < 8; ++j) {
      a[j] = exp_vec(dtv[j] * A8[j]);
      hc[j] = a[j] * hp[j] + dtuv[j] * bv[j];
    }
    if (p.z) {
      const T* Cl = Cm + (l0 + t) * 4;
      for (int j = 0; j < 8; ++j) bv[j] = Cl[j & 3];
      dot4x2(hc, bv, yb[0][t], yb[1][t]);
    }
  }
  for (int q = 0; q < 2; ++q) {  // gradient reaching y (through the gate), the gate's and D's
    const T* dout = gr.dout + (r + q) * L + l0;
    if (p.z) {
      const T* z = p.z + (r + q) * L + l0;
      T* dz = gr.dz + (r + q) * L + l0;
      for (int64_t t = 0; t < steps; ++t) {
        const T sg = sigmoid_vec(z[t]), pre = yb[q][t] + Dd[q] * u[q][t];
        dz[t] = dout[t] * pre * sg * (T(1) + z[t] * (T(1) - sg));
        yb[q][t] = dout[t] * z[t] * sg;
      }
    } else {
      std::copy(dout, dout + steps, yb[q]);
    }
    T acc = dD2[q];
    for (int64_t t = 0; t < steps; ++t) acc += yb[q][t] * u[q][t];
    dD2[q] = acc;
  }
  T dA_acc[8], gv[8], gh[8], cv[8], dyv[8];
  std::copy(dA8, dA8 + 8, dA_acc);
  std::copy(cr, cr + 8, cv);
  for (int64_t t = steps - 1; t >= 0; --t) {  // adjoint, backwards through the chunk
    const int64_t l = l0 + t;
    const T* __restrict hc = hb + (t + 1) * 8;
    const T* __restrict hp = hb + t * 8;
    const T* __restrict a = ab + t * 8;
    const T* __restrict Bl = Bm + l * 4;
    const T* __restrict Cl = Cm + l * 4;
    T* __restrict dBl = dBm + l * 4;
    T* __restrict dCl = dCm + l * 4;
    const T dt0 = dtb[0][t], dt1 = dtb[1][t], dy0 = yb[0][t], dy1 = yb[1][t];
    const T dtu0 = dt0 * u[0][t], dtu1 = dt1 * u[1][t];
    lanes2(dyv, dy0, dy1);
    lanes2(dtv, dt0, dt1);
    for (int j = 0; j < 8; ++j) {
      gv[j] = cv[j] + dyv[j] * Cl[j & 3];
      gh[j] = gv[j] * hp[j] * a[j];
      dA_acc[j] += gh[j] * dtv[j];
      cv[j] = a[j] * gv[j];
    }
    for (int n = 0; n < 4; ++n) {
      dCl[n] += dy0 * hc[n] + dy1 * hc[4 + n];
      dBl[n] += gv[n] * dtu0 + gv[4 + n] * dtu1;
    }
    T gB0, gB1, gA0, gA1;
    T bd[8];
    for (int j = 0; j < 8; ++j) bd[j] = Bl[j & 3];
    dot4x2(gv, bd, gB0, gB1);
    dot4x2(gh, A8, gA0, gA1);
    ddtb[0][t] = gA0 + gB0 * u[0][t];
    ddtb[1][t] = gA1 + gB1 * u[1][t];
    dub[0][t] = gB0 * dt0;
    dub[1][t] = gB1 * dt1;
  }
  std::copy(dA_acc, dA_acc + 8, dA8);
  std::copy(cv, cv + 8, cr);
  for (int q = 0; q < 2; ++q) {  // element-wise epilogue: du, softplus derivative, delta_bias
    T* du = gr.du + (r + q) * L + l0;
    for (int64_t t = 0; t < steps; ++t) du[t] = dub[q][t] + Dd[q] * yb[q][t];
    if (p.softplus)
      for (int64_t t = 0; t < steps; ++t) ddtb[q][t] *= sigmoid_vec(rawb[q][t]);
    std::copy(ddtb[q], ddtb[q] + steps, gr.ddelta + (r + q) * L + l0);
    T db = dbias2[q];
    for (int64_t t = 0; t < steps; ++t) db += ddtb[q][t];
    dbias2[q] = db;
  }
}

// One backward unit: channels [d0, d1) of group g in batch b, chunk-major (all channels of a chunk, then the
// chunk before), accumulating dB, dC of the group into the unit's own slice buffer in a fixed order.
template <typename T, int NT>
void backward_unit(const Problem<T>& p, const Grads<T>& gr, const Units& un, int64_t unit) {
  const int64_t N = NT > 0 ? NT : p.nstate, L = p.len, CH = p.chunk;
  const int64_t bg = unit / un.slices, s = unit % un.slices;
  const int64_t b = bg / p.groups, g = bg % p.groups;
  const int64_t d0 = g * un.cpg + s * un.per, d1 = std::min(d0 + un.per, (g + 1) * un.cpg);
  const int64_t nch = d1 - d0;
  const T* Bm = p.B + bg * L * N;
  const T* Cm = p.C + bg * L * N;
  T* dBm = gr.dB + (bg * un.slices + s) * L * N;
  T* dCm = gr.dC + (bg * un.slices + s) * L * N;
  std::vector<T> carry(nch * N, T(0)), dA(nch * N, T(0)), dD(nch, T(0)), dbias(nch, T(0));
  constexpr int64_t kLanes = NT == 4 ? 2 : 1;  // N = 4: channels processed in pairs (backward_pair4_chunk)
  std::vector<T> hbuf((CH + 1) * N * kLanes), abuf(CH * N * kLanes), scratch(5 * CH * kLanes);
  T* dtb = scratch.data();
  T* rawb = dtb + CH;
  T* yb = rawb + CH;   // y, then the gradient reaching y
  T* ddtb = yb + CH;   // dL/d(dt)
  T* dub = ddtb + CH;  // dL/du from the scan
  if (gr.dlast)
    for (int64_t c = 0; c < nch; ++c)
      std::copy(gr.dlast + (b * p.dim + d0 + c) * N, gr.dlast + (b * p.dim + d0 + c + 1) * N, &carry[c * N]);
  for (int64_t k = p.nchunks - 1; k >= 0; --k) {
    const int64_t l0 = k * CH, steps = std::min(L, l0 + CH) - l0;
    // the unit's dB, dC slice is zeroed chunk by chunk, while the chunk is hot in cache (no separate pass)
    std::fill(dBm + l0 * N, dBm + (l0 + steps) * N, T(0));
    std::fill(dCm + l0 * N, dCm + (l0 + steps) * N, T(0));
    for (int64_t c = 0; c < nch; ++c) {
      if constexpr (NT == 4) {
        if (c + 1 < nch) {
          backward_pair4_chunk(p, gr, b, d0 + c, k, Bm, Cm, dBm, dCm, &carry[c * 4], &dA[c * 4], &dD[c], &dbias[c],
                               hbuf.data(), abuf.data(), scratch.data());
          ++c;
          continue;
        }
      }
      const int64_t d = d0 + c, r = b * p.dim + d;
      const T* A = p.A + d * N;
      const T* u = p.u + r * L + l0;
      const T Dd = p.D ? p.D[d] : T(0);
      T* cr = &carry[c * N];
      // recompute the chunk's states: hb[t + 1] = h at position l0 + t, hb[0] = state entering the chunk
      T* hb = hbuf.data();
      std::copy(gr.states + (r * p.nchunks + k) * N, gr.states + (r * p.nchunks + k + 1) * N, hb);
      fill_dt(p, r, l0, steps, dtb, rawb);
      for (int64_t t = 0; t < steps; ++t) {
        const T dt = dtb[t], dtu = dt * u[t];
        const T* __restrict Bl = Bm + (l0 + t) * N;
        T* __restrict a = abuf.data() + t * N;
        const T* __restrict hp = hb + t * N;
        T* __restrict hc = hb + (t + 1) * N;
#pragma GCC unroll 1
        for (int64_t n = 0; n < N; ++n) {
          a[n] = exp_vec(dt * A[n]);
          hc[n] = a[n] * hp[n] + dtu * Bl[n];
        }
        if (p.z) yb[t] = dot<T, NT>(hc, Cm + (l0 + t) * N, N);
      }
      // gradient reaching y (through the gate), the gate's gradient and D's
      const T* dout = gr.dout + r * L + l0;
      if (p.z) {
        const T* z = p.z + r * L + l0;
        T* dz = gr.dz + r * L + l0;
        for (int64_t t = 0; t < steps; ++t) {
          const T sg = sigmoid_vec(z[t]), pre = yb[t] + Dd * u[t];
          dz[t] = dout[t] * pre * sg * (T(1) + z[t] * (T(1) - sg));
          yb[t] = dout[t] * z[t] * sg;
        }
      } else {
        std::copy(dout, dout + steps, yb);
      }
      T dD_acc = dD[c];
      for (int64_t t = 0; t < steps; ++t) dD_acc += yb[t] * u[t];
      dD[c] = dD_acc;
      // adjoint, backwards through the chunk
      T dA_acc[NT > 0 ? NT : kMaxState], gv[NT > 0 ? NT : kMaxState], gh[NT > 0 ? NT : kMaxState];
      T cv[NT > 0 ? NT : kMaxState];  // a_{l+1} g_{l+1}
      std::copy(&dA[c * N], &dA[c * N] + N, dA_acc);
      std::copy(cr, cr + N, cv);
      for (int64_t t = steps - 1; t >= 0; --t) {
        const int64_t l = l0 + t;
        const T* __restrict hc = hb + (t + 1) * N;
        const T* __restrict hp = hb + t * N;
        const T* __restrict a = abuf.data() + t * N;
        const T* __restrict Bl = Bm + l * N;
        const T* __restrict Cl = Cm + l * N;
        T* __restrict dBl = dBm + l * N;
        T* __restrict dCl = dCm + l * N;
        const T dt = dtb[t], dy = yb[t], dtu = dt * u[t];
#pragma GCC unroll 1
        for (int64_t n = 0; n < N; ++n) {
          gv[n] = cv[n] + dy * Cl[n];
          dCl[n] += dy * hc[n];
          dBl[n] += gv[n] * dtu;
          gh[n] = gv[n] * hp[n] * a[n];
          dA_acc[n] += gh[n] * dt;
          cv[n] = a[n] * gv[n];
        }
        const T gB = dot<T, NT>(gv, Bl, N);
        ddtb[t] = dot<T, NT>(gh, A, N) + gB * u[t];
        dub[t] = gB * dt;
      }
      std::copy(dA_acc, dA_acc + N, &dA[c * N]);
      std::copy(cv, cv + N, cr);
      // element-wise epilogue: du, softplus derivative, delta_bias
      T* du = gr.du + r * L + l0;
      for (int64_t t = 0; t < steps; ++t) du[t] = dub[t] + Dd * yb[t];
      if (p.softplus)
        for (int64_t t = 0; t < steps; ++t) ddtb[t] *= sigmoid_vec(rawb[t]);
      std::copy(ddtb, ddtb + steps, gr.ddelta + r * L + l0);
      T db = dbias[c];
      for (int64_t t = 0; t < steps; ++t) db += ddtb[t];
      dbias[c] = db;
    }
  }
  for (int64_t c = 0; c < nch; ++c) {
    const int64_t r = b * p.dim + d0 + c;
    std::copy(&dA[c * N], &dA[c * N] + N, gr.dA_rows + r * N);
    gr.dD_rows[r] = dD[c];
    gr.dbias_rows[r] = dbias[c];
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Causal depthwise conv1d (kernel K, K - 1 zeros on the left) followed by SiLU, per row (batch, channel):
//   pre_t = bias + sum_j w_j x_{t-K+1+j},  out_t = pre_t sigmoid(pre_t)
// (Mamba's conv1d + silu before the scan). Positions are processed in blocks; every loop is contiguous in t.
// ---------------------------------------------------------------------------------------------------------------
constexpr int64_t kConvBlock = 256;

// pre[t] for t0 <= t0 + t < t0 + n
template <typename T>
inline void conv_pre_block(const T* x, const T* w, int64_t K, T bias, int64_t t0, int64_t n, T* pre) {
  for (int64_t t = 0; t < n; ++t) pre[t] = bias;
  for (int64_t j = 0; j < K; ++j) {
    const int64_t shift = K - 1 - j;                       // pre[t] += w_j x[t0 + t - shift]
    const int64_t start = std::max<int64_t>(0, shift - t0);  // first t with t0 + t - shift >= 0
    if (start >= n) continue;
    const T wj = w[j];
    const T* xs = x + (t0 + start - shift);
    T* ps = pre + start;
    for (int64_t t = 0; t < n - start; ++t) ps[t] += wj * xs[t];
  }
}

// sum_t a[t] b[t] in 8 interleaved partial sums (fixed order)
template <typename T>
inline T dot_n(const T* a, const T* b, int64_t n) {
  int64_t t = 0;
  T s = 0;
#if MAMBASEG_VEC
  if constexpr (std::is_same<T, float>::value) {
    v8f acc = {0, 0, 0, 0, 0, 0, 0, 0};
    for (; t + 8 <= n; t += 8) acc += load8(a + t) * load8(b + t);
    s = hsum8(acc);
  }
#endif
  for (; t < n; ++t) s += a[t] * b[t];
  return s;
}

template <typename T>
void conv_silu_forward_row(const T* x, const T* w, int64_t K, T bias, int64_t L, T* out) {
  T pre[kConvBlock];
  for (int64_t t0 = 0; t0 < L; t0 += kConvBlock) {
    const int64_t n = std::min(kConvBlock, L - t0);
    conv_pre_block(x, w, K, bias, t0, n, pre);
    T* o = out + t0;
    for (int64_t t = 0; t < n; ++t) o[t] = pre[t] * sigmoid_vec(pre[t]);
  }
}

// g: gradient of the row's output; gp: (L) scratch (gradient of pre); dx: (L); dw: (K); db: (1)
template <typename T>
void conv_silu_backward_row(const T* x, const T* w, int64_t K, T bias, int64_t L, const T* g, T* gp, T* dx, T* dw,
                            T* db) {
  T pre[kConvBlock];
  for (int64_t t0 = 0; t0 < L; t0 += kConvBlock) {
    const int64_t n = std::min(kConvBlock, L - t0);
    conv_pre_block(x, w, K, bias, t0, n, pre);
    const T* gl = g + t0;
    T* gpl = gp + t0;
    for (int64_t t = 0; t < n; ++t) {
      const T s = sigmoid_vec(pre[t]);
      gpl[t] = gl[t] * s * (T(1) + pre[t] * (T(1) - s));
    }
  }
  // dx_s = sum_j w_j gp_{s + K-1-j}
  for (int64_t s = 0; s < L; ++s) dx[s] = 0;
  for (int64_t j = 0; j < K; ++j) {
    const int64_t shift = K - 1 - j;
    if (shift >= L) continue;
    const T wj = w[j];
    const T* gs = gp + shift;
    for (int64_t s = 0; s < L - shift; ++s) dx[s] += wj * gs[s];
  }
  for (int64_t j = 0; j < K; ++j) {
    const int64_t shift = K - 1 - j;
    dw[j] = shift < L ? dot_n(gp + shift, x, L - shift) : T(0);
  }
  T acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t t = 0;
  for (; t + 8 <= L; t += 8)
    for (int q = 0; q < 8; ++q) acc[q] += gp[t + q];
  T sum = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
  for (; t < L; ++t) sum += gp[t];
  *db = sum;
}
