// AKConv CPU kernels over ranges of work (see akconv_cpu.cpp). Included twice by akconv_cpu.cpp: in namespace
// `baseline` and, on x86-64, in namespace `avx2` under #pragma GCC target("avx2,fma"); no includes of its own.
//
// Two types: T, the arithmetic and the positions (float or double), and X, the storage of the image x, the samples
// (col) and their gradient (dcol): T itself, or uint16_t holding bfloat16 bits (with T = float). Every value is
// widened to T on load (ld) and rounded to X only when a sample is stored (put, round to nearest even); the input
// gradient dx and the positions' gradient dp are always accumulated in T.

inline float ld(float v) { return v; }
inline double ld(double v) { return v; }
inline float ld(uint16_t v) { return __builtin_bit_cast(float, static_cast<uint32_t>(v) << 16); }
inline void put(float& o, float v) { o = v; }
inline void put(double& o, double v) { o = v; }
inline void put(uint16_t& o, float v) {  // float -> bfloat16, round to nearest even (c10's rule, NaN -> 0x7FC0)
  const uint32_t u = __builtin_bit_cast(uint32_t, v);
  const uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  o = (v != v) ? static_cast<uint16_t>(0x7FC0) : static_cast<uint16_t>(r);
}

template <typename T>
struct Tap {  // one sampling point: the four corners (pixel offsets in an S1 x S2 plane) and bilinear weights
  int64_t o00, o01, o10, o11;
  T wx0, wx1, wy0, wy1;  // x = along S1, y = along S2
  T gx, gy;              // 1 where the position receives a gradient along that axis, else 0
};

template <typename T>
inline void axis(T q, int64_t size, int64_t& i0, int64_t& i1, T& w0, T& w1, T& g) {
  if (q >= T(0) && q < T(size - 1)) {
    i0 = static_cast<int64_t>(std::floor(q));
    i1 = i0 + 1;
    w1 = q - T(i0);
    w0 = T(1) - w1;
    g = T(1);
  } else {  // outside [0, size-1) (or NaN): clamp, both corners coincide -> weight 2 on one corner
    i0 = i1 = (q >= T(size - 1)) ? size - 1 : 0;
    w0 = T(2);
    w1 = T(0);
    g = T(0);
  }
}

template <typename T>
inline Tap<T> make_tap(T qx, T qy, int64_t S1, int64_t S2) {
  Tap<T> t;
  int64_t x0, x1, y0, y1;
  axis(qx, S1, x0, x1, t.wx0, t.wx1, t.gx);
  axis(qy, S2, y0, y1, t.wy0, t.wy1, t.gy);
  t.o00 = x0 * S2 + y0;
  t.o01 = x0 * S2 + y1;
  t.o10 = x1 * S2 + y0;
  t.o11 = x1 * S2 + y1;
  return t;
}

// the tap of point n of output pixel i: position = (row, col) * stride + p_n + offset + shift; offsets channels-last
// (h*w, 2N): [i, n] along S1, [i, N + n] along S2
template <typename T>
inline Tap<T> tap_at(const T* __restrict__ off, const Shape<T>& s, int64_t i, int64_t n) {
  const int64_t row = i / s.w, col = i - row * s.w;
  const T qx = T(row * s.stride) + s.pn[n] + off[i * 2 * s.N + n] + s.shift;
  const T qy = T(col * s.stride) + s.pn[s.N + n] + off[i * 2 * s.N + s.N + n] + s.shift;
  return make_tap(qx, qy, s.S1, s.S2);
}

// out[c] = bilinear sample of channel c from the four corner rows (one expression, shared by every pass)
template <typename T, typename X>
inline void sample_4(const X* __restrict__ a, const X* __restrict__ b, const X* __restrict__ c,
                     const X* __restrict__ d, X* __restrict__ out, const Tap<T>& t, int64_t C) {
  const T w00 = t.wx0 * t.wy0, w01 = t.wx0 * t.wy1, w10 = t.wx1 * t.wy0, w11 = t.wx1 * t.wy1;
#pragma omp simd
  for (int64_t k = 0; k < C; ++k) put(out[k], w00 * ld(a[k]) + w01 * ld(b[k]) + w10 * ld(c[k]) + w11 * ld(d[k]));
}

// col[i - begin, n*C + c] = bilinear sample of channel c at point n of output pixel i, for pixels [begin, end)
template <typename T, typename X>
void im2col_range(const X* __restrict__ x, const T* __restrict__ p, const Shape<T>& s, X* __restrict__ col,
                  int64_t begin, int64_t end) {
  const int64_t C = s.C, N = s.N;
  for (int64_t i = begin; i < end; ++i) {
    for (int64_t n = 0; n < N; ++n) {
      const Tap<T> t = tap_at(p, s, i, n);
      sample_4(x + t.o00 * C, x + t.o01 * C, x + t.o10 * C, x + t.o11 * C, col + ((i - begin) * N + n) * C, t, C);
    }
  }
}

// Helpers of the backward's fused pass, for one sampling point and its four corner rows (x: a..d, dx: da..dd).
template <typename T, typename X>
inline void scatter_grad_4(const X* __restrict__ g, const X* __restrict__ a, const X* __restrict__ b,
                           const X* __restrict__ c, const X* __restrict__ d, T* __restrict__ da, T* __restrict__ db,
                           T* __restrict__ dc, T* __restrict__ dd, const Tap<T>& t, int64_t C, T& sx_out,
                           T& sy_out) {
  const T w00 = t.wx0 * t.wy0, w01 = t.wx0 * t.wy1, w10 = t.wx1 * t.wy0, w11 = t.wx1 * t.wy1;
  T sx = 0, sy = 0;
#pragma omp simd reduction(+ : sx, sy)
  for (int64_t k = 0; k < C; ++k) {
    const T gk = ld(g[k]), av = ld(a[k]), bv = ld(b[k]), cv = ld(c[k]), dv = ld(d[k]);
    sx += gk * (t.wy0 * (cv - av) + t.wy1 * (dv - bv));
    sy += gk * (t.wx0 * (bv - av) + t.wx1 * (dv - cv));
    da[k] += w00 * gk;
    db[k] += w01 * gk;
    dc[k] += w10 * gk;
    dd[k] += w11 * gk;
  }
  sx_out = sx;
  sy_out = sy;
}

// scatter_grad_4 that also writes the point's samples (out): the corner values are loaded once for both
template <typename T, typename X>
inline void sample_scatter_grad_4(const X* __restrict__ g, const X* __restrict__ a, const X* __restrict__ b,
                                  const X* __restrict__ c, const X* __restrict__ d, X* __restrict__ out,
                                  T* __restrict__ da, T* __restrict__ db, T* __restrict__ dc, T* __restrict__ dd,
                                  const Tap<T>& t, int64_t C, T& sx_out, T& sy_out) {
  const T w00 = t.wx0 * t.wy0, w01 = t.wx0 * t.wy1, w10 = t.wx1 * t.wy0, w11 = t.wx1 * t.wy1;
  T sx = 0, sy = 0;
#pragma omp simd reduction(+ : sx, sy)
  for (int64_t k = 0; k < C; ++k) {
    const T gk = ld(g[k]), av = ld(a[k]), bv = ld(b[k]), cv = ld(c[k]), dv = ld(d[k]);
    put(out[k], w00 * av + w01 * bv + w10 * cv + w11 * dv);
    sx += gk * (t.wy0 * (cv - av) + t.wy1 * (dv - bv));
    sy += gk * (t.wx0 * (bv - av) + t.wx1 * (dv - cv));
    da[k] += w00 * gk;
    db[k] += w01 * gk;
    dc[k] += w10 * gk;
    dd[k] += w11 * gk;
  }
  sx_out = sx;
  sy_out = sy;
}

template <typename T, typename X>
inline void scatter_4(const X* __restrict__ g, T* __restrict__ da, T* __restrict__ db, T* __restrict__ dc,
                      T* __restrict__ dd, const Tap<T>& t, int64_t C) {
  const T w00 = t.wx0 * t.wy0, w01 = t.wx0 * t.wy1, w10 = t.wx1 * t.wy0, w11 = t.wx1 * t.wy1;
#pragma omp simd
  for (int64_t k = 0; k < C; ++k) {
    const T gk = ld(g[k]);
    da[k] += w00 * gk;
    db[k] += w01 * gk;
    dc[k] += w10 * gk;
    dd[k] += w11 * gk;
  }
}

template <typename T, typename X>
inline void grad_4(const X* __restrict__ g, const X* __restrict__ a, const X* __restrict__ b,
                   const X* __restrict__ c, const X* __restrict__ d, const Tap<T>& t, int64_t C, T& sx_out,
                   T& sy_out) {
  T sx = 0, sy = 0;
#pragma omp simd reduction(+ : sx, sy)
  for (int64_t k = 0; k < C; ++k) {
    const T gk = ld(g[k]), av = ld(a[k]), bv = ld(b[k]), cv = ld(c[k]), dv = ld(d[k]);
    sx += gk * (t.wy0 * (cv - av) + t.wy1 * (dv - bv));
    sy += gk * (t.wx0 * (bv - av) + t.wx1 * (dv - cv));
  }
  sx_out = sx;
  sy_out = sy;
}

// The backward's fused pass over one tile: for every sampling point, the tap is computed once, the samples are
// written to col (if col: the weight gradient's operand) and the row of dcol (the tile's, in cache) is read once to
// accumulate the positions' gradient dp (if dp) and to scatter into dx (if dx), pixels [begin, end) in order, tile
// row (i - begin). Where the four corners are distinct (every point inside the map) one loop does it all, loading
// the corners once; clamped points (coinciding corners) take the sequential path.
template <typename T, typename X>
void backward_tile(const X* __restrict__ x, const X* __restrict__ dcol, const T* __restrict__ p, const Shape<T>& s,
                   X* __restrict__ col, T* dx, T* __restrict__ dp, int64_t begin, int64_t end) {
  const int64_t C = s.C, N = s.N;
  for (int64_t i = begin; i < end; ++i) {
    for (int64_t n = 0; n < N; ++n) {
      const Tap<T> t = tap_at(p, s, i, n);
      const X* g = dcol + ((i - begin) * N + n) * C;
      X* out = col != nullptr ? col + ((i - begin) * N + n) * C : nullptr;
      T sx = 0, sy = 0;
      const bool inside = t.gx != T(0) && t.gy != T(0);  // four distinct corners
      if (out != nullptr && !(dx != nullptr && dp != nullptr && inside))
        sample_4(x + t.o00 * C, x + t.o01 * C, x + t.o10 * C, x + t.o11 * C, out, t, C);
      if (dx != nullptr && inside) {
        if (dp != nullptr && out != nullptr)
          sample_scatter_grad_4(g, x + t.o00 * C, x + t.o01 * C, x + t.o10 * C, x + t.o11 * C, out, dx + t.o00 * C,
                                dx + t.o01 * C, dx + t.o10 * C, dx + t.o11 * C, t, C, sx, sy);
        else if (dp != nullptr)
          scatter_grad_4(g, x + t.o00 * C, x + t.o01 * C, x + t.o10 * C, x + t.o11 * C, dx + t.o00 * C,
                         dx + t.o01 * C, dx + t.o10 * C, dx + t.o11 * C, t, C, sx, sy);
        else
          scatter_4(g, dx + t.o00 * C, dx + t.o01 * C, dx + t.o10 * C, dx + t.o11 * C, t, C);
      } else {
        if (dp != nullptr && (t.gx != T(0) || t.gy != T(0)))
          grad_4(g, x + t.o00 * C, x + t.o01 * C, x + t.o10 * C, x + t.o11 * C, t, C, sx, sy);
        if (dx != nullptr) {  // corners may coincide (clamped): updated one after the other
          const T w00 = t.wx0 * t.wy0, w01 = t.wx0 * t.wy1, w10 = t.wx1 * t.wy0, w11 = t.wx1 * t.wy1;
          T* a = dx + t.o00 * C;
          T* b = dx + t.o01 * C;
          T* c = dx + t.o10 * C;
          T* d = dx + t.o11 * C;
          for (int64_t k = 0; k < C; ++k) a[k] += w00 * ld(g[k]);
          for (int64_t k = 0; k < C; ++k) b[k] += w01 * ld(g[k]);
          for (int64_t k = 0; k < C; ++k) c[k] += w10 * ld(g[k]);
          for (int64_t k = 0; k < C; ++k) d[k] += w11 * ld(g[k]);
        }
      }
      if (dp != nullptr) {
        dp[i * 2 * N + n] = sx * t.gx;
        dp[i * 2 * N + N + n] = sy * t.gy;
      }
    }
  }
}
