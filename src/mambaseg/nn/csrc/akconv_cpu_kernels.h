// AKConv CPU kernels over ranges of work (see akconv_cpu.cpp). Included twice by akconv_cpu.cpp: in namespace
// `baseline` and, on x86-64, in namespace `avx2` under #pragma GCC target("avx2,fma"); no includes of its own.

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
template <typename T>
inline void sample_4(const T* __restrict__ a, const T* __restrict__ b, const T* __restrict__ c,
                     const T* __restrict__ d, T* __restrict__ out, const Tap<T>& t, int64_t C) {
  const T w00 = t.wx0 * t.wy0, w01 = t.wx0 * t.wy1, w10 = t.wx1 * t.wy0, w11 = t.wx1 * t.wy1;
#pragma omp simd
  for (int64_t k = 0; k < C; ++k) out[k] = w00 * a[k] + w01 * b[k] + w10 * c[k] + w11 * d[k];
}

// col[i - begin, n*C + c] = bilinear sample of channel c at point n of output pixel i, for pixels [begin, end)
template <typename T>
void im2col_range(const T* __restrict__ x, const T* __restrict__ p, const Shape<T>& s, T* __restrict__ col,
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
template <typename T>
inline void scatter_grad_4(const T* __restrict__ g, const T* __restrict__ a, const T* __restrict__ b,
                           const T* __restrict__ c, const T* __restrict__ d, T* __restrict__ da, T* __restrict__ db,
                           T* __restrict__ dc, T* __restrict__ dd, const Tap<T>& t, int64_t C, T& sx_out,
                           T& sy_out) {
  const T w00 = t.wx0 * t.wy0, w01 = t.wx0 * t.wy1, w10 = t.wx1 * t.wy0, w11 = t.wx1 * t.wy1;
  T sx = 0, sy = 0;
#pragma omp simd reduction(+ : sx, sy)
  for (int64_t k = 0; k < C; ++k) {
    const T gk = g[k];
    sx += gk * (t.wy0 * (c[k] - a[k]) + t.wy1 * (d[k] - b[k]));
    sy += gk * (t.wx0 * (b[k] - a[k]) + t.wx1 * (d[k] - c[k]));
    da[k] += w00 * gk;
    db[k] += w01 * gk;
    dc[k] += w10 * gk;
    dd[k] += w11 * gk;
  }
  sx_out = sx;
  sy_out = sy;
}

// scatter_grad_4 that also writes the point's samples (out): the corner values are loaded once for both
template <typename T>
inline void sample_scatter_grad_4(const T* __restrict__ g, const T* __restrict__ a, const T* __restrict__ b,
                                  const T* __restrict__ c, const T* __restrict__ d, T* __restrict__ out,
                                  T* __restrict__ da, T* __restrict__ db, T* __restrict__ dc, T* __restrict__ dd,
                                  const Tap<T>& t, int64_t C, T& sx_out, T& sy_out) {
  const T w00 = t.wx0 * t.wy0, w01 = t.wx0 * t.wy1, w10 = t.wx1 * t.wy0, w11 = t.wx1 * t.wy1;
  T sx = 0, sy = 0;
#pragma omp simd reduction(+ : sx, sy)
  for (int64_t k = 0; k < C; ++k) {
    const T gk = g[k], av = a[k], bv = b[k], cv = c[k], dv = d[k];
    out[k] = w00 * av + w01 * bv + w10 * cv + w11 * dv;
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

template <typename T>
inline void scatter_4(const T* __restrict__ g, T* __restrict__ da, T* __restrict__ db, T* __restrict__ dc,
                      T* __restrict__ dd, const Tap<T>& t, int64_t C) {
  const T w00 = t.wx0 * t.wy0, w01 = t.wx0 * t.wy1, w10 = t.wx1 * t.wy0, w11 = t.wx1 * t.wy1;
#pragma omp simd
  for (int64_t k = 0; k < C; ++k) {
    const T gk = g[k];
    da[k] += w00 * gk;
    db[k] += w01 * gk;
    dc[k] += w10 * gk;
    dd[k] += w11 * gk;
  }
}

template <typename T>
inline void grad_4(const T* __restrict__ g, const T* __restrict__ a, const T* __restrict__ b,
                   const T* __restrict__ c, const T* __restrict__ d, const Tap<T>& t, int64_t C, T& sx_out,
                   T& sy_out) {
  T sx = 0, sy = 0;
#pragma omp simd reduction(+ : sx, sy)
  for (int64_t k = 0; k < C; ++k) {
    sx += g[k] * (t.wy0 * (c[k] - a[k]) + t.wy1 * (d[k] - b[k]));
    sy += g[k] * (t.wx0 * (b[k] - a[k]) + t.wx1 * (d[k] - c[k]));
  }
  sx_out = sx;
  sy_out = sy;
}

// The backward's fused pass over one tile: for every sampling point, the tap is computed once, the samples are
// written to col (if col: the weight gradient's operand) and the row of dcol (the tile's, in cache) is read once to
// accumulate the positions' gradient dp (if dp) and to scatter into dx (if dx), pixels [begin, end) in order, tile
// row (i - begin). Where the four corners are distinct (every point inside the map) one loop does it all, loading
// the corners once; clamped points (coinciding corners) take the sequential path.
template <typename T>
void backward_tile(const T* __restrict__ x, const T* __restrict__ dcol, const T* __restrict__ p, const Shape<T>& s,
                   T* __restrict__ col, T* dx, T* __restrict__ dp, int64_t begin, int64_t end) {
  const int64_t C = s.C, N = s.N;
  for (int64_t i = begin; i < end; ++i) {
    for (int64_t n = 0; n < N; ++n) {
      const Tap<T> t = tap_at(p, s, i, n);
      const T* g = dcol + ((i - begin) * N + n) * C;
      T* out = col != nullptr ? col + ((i - begin) * N + n) * C : nullptr;
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
          for (int64_t k = 0; k < C; ++k) a[k] += w00 * g[k];
          for (int64_t k = 0; k < C; ++k) b[k] += w01 * g[k];
          for (int64_t k = 0; k < C; ++k) c[k] += w10 * g[k];
          for (int64_t k = 0; k < C; ++k) d[k] += w11 * g[k];
        }
      }
      if (dp != nullptr) {
        dp[i * 2 * N + n] = sx * t.gx;
        dp[i * 2 * N + N + n] = sy * t.gy;
      }
    }
  }
}
