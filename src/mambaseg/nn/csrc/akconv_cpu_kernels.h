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

// col[i - begin, n*C + c] = bilinear sample of channel c at point n of output pixel i, for pixels [begin, end)
template <typename T>
void im2col_range(const T* __restrict__ x, const T* __restrict__ p, const Shape<T>& s, T* __restrict__ col,
                  int64_t begin, int64_t end) {
  const int64_t C = s.C, N = s.N;
  for (int64_t i = begin; i < end; ++i) {
    for (int64_t n = 0; n < N; ++n) {
      const Tap<T> t = tap_at(p, s, i, n);
      const T w00 = t.wx0 * t.wy0, w01 = t.wx0 * t.wy1, w10 = t.wx1 * t.wy0, w11 = t.wx1 * t.wy1;
      const T* __restrict__ a = x + t.o00 * C;
      const T* __restrict__ b = x + t.o01 * C;
      const T* __restrict__ c = x + t.o10 * C;
      const T* __restrict__ d = x + t.o11 * C;
      T* __restrict__ out = col + ((i - begin) * N + n) * C;
#pragma omp simd
      for (int64_t k = 0; k < C; ++k) out[k] = w00 * a[k] + w01 * b[k] + w10 * c[k] + w11 * d[k];
    }
  }
}

// dx[corner, c] += weight * dcol[i, n*C + c] for channels [c0, c1), all pixels in order
template <typename T>
void col2im_range(const T* __restrict__ dcol, const T* __restrict__ p, const Shape<T>& s, T* dx, int64_t c0,
                  int64_t c1) {
  const int64_t C = s.C, N = s.N;
  for (int64_t i = 0; i < s.hw; ++i) {
    for (int64_t n = 0; n < N; ++n) {
      const Tap<T> t = tap_at(p, s, i, n);
      const T w00 = t.wx0 * t.wy0, w01 = t.wx0 * t.wy1, w10 = t.wx1 * t.wy0, w11 = t.wx1 * t.wy1;
      const T* __restrict__ g = dcol + (i * N + n) * C;
      T* a = dx + t.o00 * C;  // corners may coincide (clamped): no __restrict__, updated one after the other
      T* b = dx + t.o01 * C;
      T* c = dx + t.o10 * C;
      T* d = dx + t.o11 * C;
      for (int64_t k = c0; k < c1; ++k) a[k] += w00 * g[k];
      for (int64_t k = c0; k < c1; ++k) b[k] += w01 * g[k];
      for (int64_t k = c0; k < c1; ++k) c[k] += w10 * g[k];
      for (int64_t k = c0; k < c1; ++k) d[k] += w11 * g[k];
    }
  }
}

// dp[i, n] (along S1), dp[i, N + n] (along S2) = sum over channels of dcol * d(sample)/dq, for pixels [begin, end)
template <typename T>
void positions_grad_range(const T* __restrict__ x, const T* __restrict__ dcol, const T* __restrict__ p,
                          const Shape<T>& s, T* __restrict__ dp, int64_t begin, int64_t end) {
  const int64_t C = s.C, N = s.N;
  for (int64_t i = begin; i < end; ++i) {
    for (int64_t n = 0; n < N; ++n) {
      const Tap<T> t = tap_at(p, s, i, n);
      T sx = 0, sy = 0;
      if (t.gx != T(0) || t.gy != T(0)) {
        const T* __restrict__ a = x + t.o00 * C;
        const T* __restrict__ b = x + t.o01 * C;
        const T* __restrict__ c = x + t.o10 * C;
        const T* __restrict__ d = x + t.o11 * C;
        const T* __restrict__ g = dcol + (i * N + n) * C;
#pragma omp simd reduction(+ : sx, sy)
        for (int64_t k = 0; k < C; ++k) {
          sx += g[k] * (t.wy0 * (c[k] - a[k]) + t.wy1 * (d[k] - b[k]));
          sy += g[k] * (t.wx0 * (b[k] - a[k]) + t.wx1 * (d[k] - c[k]));
        }
      }
      dp[i * 2 * N + n] = sx * t.gx;
      dp[i * 2 * N + N + n] = sy * t.gy;
    }
  }
}
