// The loops of TfmInt8MatMul with quantize_x (W8A8 dynamic, Keras' int8 mode): each row of x is quantized to int8
// at run time and the products accumulate exactly in int32. With AVX512-VNNI one vpdpbusd multiplies and sums 64
// byte pairs, against 16 multiply-adds after widening each weight to float: the weights stream at memory speed
// instead of at the speed of their widening. vpdpbusd multiplies unsigned by signed bytes, so the weights enter as
// unsigned w + 128 (one xor) and the caller subtracts 128 * sum(x_q) per row: every path here (tails included)
// computes that same offset sum, so the correction is one number per row of x.
#include "int8_matmul.h"

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#include <immintrin.h>
#define TFM_VNNI 1
#endif

#include <algorithm>
#include <cmath>
#include <cstring>

namespace tfm {

void QuantizeRows(const float* x, int8_t* q, float* scale, int32_t* sums, int64_t M, int64_t K, float epsilon) {
  for (int64_t m = 0; m < M; ++m) {
    const float* xm = x + m * K;
    float largest = 0.0f;
    for (int64_t k = 0; k < K; ++k) largest = std::max(largest, std::fabs(xm[k]));
    const float s = 127.0f / (largest + epsilon);  // keras.quantizers.abs_max_quantize, in float32 as there
    int32_t sum = 0;
    for (int64_t k = 0; k < K; ++k) {
      // nearbyint rounds half to even, as tf.round does.
      const float v = std::min(127.0f, std::max(-127.0f, std::nearbyint(xm[k] * s)));
      q[m * K + k] = static_cast<int8_t>(v);
      sum += static_cast<int32_t>(v);
    }
    scale[m] = s;
    sums[m] = sum;
  }
}

// With VNNI, within each whole group of 64 columns the accumulators are kept in the order the byte interleave
// leaves them: stored position s holds column 16 * ((s / 4) % 4) + 4 * (s / 16) + s % 4 (the swap is its own
// inverse). The plain loops keep the columns in order.
int64_t DynamicColumn(int64_t s, int64_t N) {
#if !TFM_VNNI
  (void)N;
  return s;
#endif
  const int64_t tiled = N - N % 64;
  if (s >= tiled) return s;
  const int64_t g = s - s % 64, p = s % 64;
  return g + 16 * ((p / 4) % 4) + 4 * (p / 16) + p % 4;
}

static inline int32_t Offset(int8_t w) { return static_cast<int32_t>(w) + 128; }

// The plain path, for one weight row k of one row of x: acc[stored(j)] += (w[k, j] + 128) * q[k] for j >= j0 (in
// order, a loop g++ vectorizes, where the columns are stored in order: past the VNNI tiles, or all without VNNI).
static void PlainRow(const int8_t* q, const int8_t* w, int32_t* acc, int64_t N, int64_t k, int64_t j0) {
  const int32_t x = q[k];
#if TFM_VNNI
  const int64_t tiled = N - N % 64;
#else
  const int64_t tiled = 0;
#endif
  for (int64_t j = j0; j < tiled; ++j) acc[DynamicColumn(j, N)] += Offset(w[k * N + j]) * x;
  for (int64_t j = std::max(j0, tiled); j < N; ++j) acc[j] += Offset(w[k * N + j]) * x;
}

#if TFM_VNNI
constexpr int kMaxDynamicRows = 4;  // 16 accumulators + the interleave's registers
constexpr int64_t kDynamicChunk = 64;

// Four weight rows k..k+3 of 64 columns as four vectors of 16 columns x 4 bytes (offset to unsigned), the layout
// vpdpbusd sums over: v[t] holds columns 16L + 4t + i in lane L, dword i.
static inline void Interleave(const int8_t* p, int64_t N, __m512i v[4]) {
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512i r0 = _mm512_xor_si512(_mm512_loadu_si512(p), flip);
  const __m512i r1 = _mm512_xor_si512(_mm512_loadu_si512(p + N), flip);
  const __m512i r2 = _mm512_xor_si512(_mm512_loadu_si512(p + 2 * N), flip);
  const __m512i r3 = _mm512_xor_si512(_mm512_loadu_si512(p + 3 * N), flip);
  const __m512i lo01 = _mm512_unpacklo_epi8(r0, r1), hi01 = _mm512_unpackhi_epi8(r0, r1);
  const __m512i lo23 = _mm512_unpacklo_epi8(r2, r3), hi23 = _mm512_unpackhi_epi8(r2, r3);
  v[0] = _mm512_unpacklo_epi16(lo01, lo23);
  v[1] = _mm512_unpackhi_epi16(lo01, lo23);
  v[2] = _mm512_unpacklo_epi16(hi01, hi23);
  v[3] = _mm512_unpackhi_epi16(hi01, hi23);
}

static inline __m512i Broadcast4(const int8_t* p) {
  int32_t four;
  std::memcpy(&four, p, 4);
  return _mm512_set1_epi32(four);
}

// acc[r, tile j] += q[r, k0:k1] @ w[k0:k1, j:j+64] for R rows; (k1 - k0) % 4 == 0.
// With `ahead`, the same tile of the next chunk is prefetched: the chunk's first pass reads 64 strided streams,
// which the hardware prefetchers do not follow.
template <int R>
static void DynamicTile(const int8_t* q, const int8_t* w, int32_t* acc, int64_t K, int64_t N, int64_t k0,
                        int64_t k1, int64_t j, bool ahead) {
  __m512i a[R][4];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < 4; ++t) a[r][t] = _mm512_loadu_si512(acc + r * N + j + 16 * t);
  for (int64_t k = k0; k < k1; k += 4) {
    __m512i v[4];
    const int8_t* p = w + k * N + j;
    if (ahead)
      for (int i = 0; i < 4; ++i) __builtin_prefetch(p + (kDynamicChunk + i) * N);
    Interleave(p, N, v);
    for (int r = 0; r < R; ++r) {
      const __m512i xb = Broadcast4(q + r * K + k);
      for (int t = 0; t < 4; ++t) a[r][t] = _mm512_dpbusd_epi32(a[r][t], v[t], xb);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < 4; ++t) _mm512_storeu_si512(acc + r * N + j + 16 * t, a[r][t]);
}

#endif

// acc [M, N] (int32, stored order) += (w[k0:k1, :] + 128) products with q[:, k0:k1], for w [K, N] row-major.
void Int8DynamicRowMajor(const int8_t* q, const int8_t* w, int32_t* acc, int64_t M, int64_t K, int64_t N, int64_t k0,
                         int64_t k1) {
  int64_t tiled = 0, kv = k0;
#if TFM_VNNI
  tiled = N - N % 64;
  kv = k0 + (k1 - k0) / 4 * 4;
  if (tiled > 0 && M == 1) {
    // One row streams the weights from memory: four weight rows per pass over all columns, the next four
    // prefetched (a chunk across all rows would read 64 strided streams, which the prefetchers do not follow).
    for (int64_t k = k0; k < kv; k += 4) {
      const int8_t* p = w + k * N;
      if (k + 8 <= kv)
        for (int64_t b = 4 * N; b < 8 * N; b += 64) __builtin_prefetch(p + b);
      const __m512i xb = Broadcast4(q + k);
      for (int64_t j = 0; j < tiled; j += 64) {
        __m512i v[4];
        Interleave(p + j, N, v);
        for (int t = 0; t < 4; ++t) {
          int32_t* at = acc + j + 16 * t;
          _mm512_storeu_si512(at, _mm512_dpbusd_epi32(_mm512_loadu_si512(at), v[t], xb));
        }
      }
    }
  } else if (tiled > 0) {
    // Several rows: chunks of 64 weight rows stay in L2 while every group of 4 rows of x uses them.
    for (int64_t kc = k0; kc < kv; kc += kDynamicChunk) {
      const int64_t kend = std::min(kc + kDynamicChunk, kv);
      for (int64_t m = 0; m < M; m += kMaxDynamicRows)
        WithRows<kMaxDynamicRows>(std::min<int64_t>(kMaxDynamicRows, M - m), [&](auto rows) {
          for (int64_t j = 0; j < tiled; j += 64)
            DynamicTile<decltype(rows)::value>(q + m * K, w, acc + m * N, K, N, kc, kend, j,
                                               m == 0 && kend + kDynamicChunk <= kv);
        });
    }
  } else {
    kv = k0;
  }
#endif
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t k = k0; k < kv; ++k) PlainRow(q + m * K, w, acc + m * N, N, k, tiled);  // columns past the tiles
    for (int64_t k = kv; k < k1; ++k) PlainRow(q + m * K, w, acc + m * N, N, k, 0);      // rows past the tiles
  }
}

// y[m, j] = (sum over bands of partial[b, m, stored(j)] - 128 * sums[m]) / (w_scale[j] * x_scale[m]): the row-major
// product's end, here so that the column map inlines (the caller's file does not know whether VNNI tiles ran).
void Int8DynamicFinish(const int32_t* partial, int64_t bands, const int32_t* sums, const float* w_scale,
                       const float* x_scale, float* y, int64_t M, int64_t N) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t s = 0; s < N; ++s) {
      int32_t total = -128 * sums[m];
      for (int64_t b = 0; b < bands; ++b) total += partial[(b * M + m) * N + s];
      const int64_t j = DynamicColumn(s, N);
      y[m * N + j] = static_cast<float>(total) / (w_scale[j] * x_scale[m]);
    }
}

// y[m, j] for w [N, K] (the tied embedding's LM-head layout): (dot(w[j] + 128, q[m]) - 128 * sums[m]) /
// (w_scale[j] * x_scale[m]), as Keras divides by the product of the two scales.
void Int8DynamicTransposed(const int8_t* q, const int8_t* w, const float* w_scale, const float* x_scale,
                           const int32_t* sums, float* y, int64_t M, int64_t K, int64_t N, int64_t j0, int64_t j1) {
  int64_t tiled = 0;
#if TFM_VNNI
  tiled = K - K % 64;
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
#endif
  for (int64_t m0 = 0; m0 < M; m0 += 4) {
    const int64_t rows = std::min<int64_t>(4, M - m0);
    for (int64_t j = j0; j < j1; ++j) {
      const int8_t* wj = w + j * K;
      int32_t dot[4] = {0, 0, 0, 0};
#if TFM_VNNI
      if (tiled > 0) {
        __m512i a[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                        _mm512_setzero_si512()};
        for (int64_t k = 0; k < tiled; k += 64) {
          const __m512i v = _mm512_xor_si512(_mm512_loadu_si512(wj + k), flip);
          for (int64_t r = 0; r < rows; ++r)
            a[r] = _mm512_dpbusd_epi32(a[r], v, _mm512_loadu_si512(q + (m0 + r) * K + k));
        }
        for (int64_t r = 0; r < rows; ++r) dot[r] = _mm512_reduce_add_epi32(a[r]);
      }
#endif
      for (int64_t r = 0; r < rows; ++r) {
        const int8_t* qm = q + (m0 + r) * K;
        int32_t sum = dot[r];
        for (int64_t k = tiled; k < K; ++k) sum += Offset(wj[k]) * qm[k];
        const int64_t m = m0 + r;
        y[m * N + j] = static_cast<float>(sum - 128 * sums[m]) / (w_scale[j] * x_scale[m]);
      }
    }
  }
}

}  // namespace tfm
