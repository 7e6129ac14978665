// The loops of TfmInt8MatMul, in their own file so they compile with -march=native without TensorFlow's
// headers (whose Eigen does not build with every instruction set g++ can target). Each int8 weight is read once
// per call (per 8 rows of x), widened to float in registers and multiplied: plain loops that g++ vectorizes for
// one row, and AVX-512 / AVX2 intrinsics (plain vector code elsewhere) for the tiles of several rows.
#include "int8_matmul.h"

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstring>

namespace tfm {

// One row of x (batch-1 decoding), where the weights stream from memory: eight weight rows per pass over the
// accumulator, and the next eight rows prefetched while these are multiplied. Streaming GPT-2's shapes from DRAM
// on one core of a 2-core AMD EPYC this reads 18-29 GB/s against 14-17 for four rows without prefetching.
static void RowMajorOneRow(const float* x, const int8_t* w, float* acc, int64_t N, int64_t k0, int64_t k1) {
  int64_t k = k0;
  for (; k + 8 <= k1; k += 8) {
    const int8_t* r = w + k * N;
    if (k + 16 <= k1)
      for (int64_t b = 8 * N; b < 16 * N; b += 64) __builtin_prefetch(r + b);
    const float x0 = x[k], x1 = x[k + 1], x2 = x[k + 2], x3 = x[k + 3];
    const float x4 = x[k + 4], x5 = x[k + 5], x6 = x[k + 6], x7 = x[k + 7];
    for (int64_t j = 0; j < N; ++j)
      acc[j] += (x0 * static_cast<float>(r[j]) + x1 * static_cast<float>(r[N + j])) +
                (x2 * static_cast<float>(r[2 * N + j]) + x3 * static_cast<float>(r[3 * N + j])) +
                ((x4 * static_cast<float>(r[4 * N + j]) + x5 * static_cast<float>(r[5 * N + j])) +
                 (x6 * static_cast<float>(r[6 * N + j]) + x7 * static_cast<float>(r[7 * N + j])));
  }
  for (; k < k1; ++k)
    for (int64_t j = 0; j < N; ++j) acc[j] += x[k] * static_cast<float>(w[k * N + j]);
}

// Several rows of x (small-batch decoding): register tiles of up to kMaxRows rows of x by two vectors of
// columns, so each int8 weight is widened once and used by every row while the accumulators stay in registers
// across a chunk of kChunk weight rows. (g++ 12 widens int8 vectors to float one lane at a time, hence the
// intrinsics.) Four weight rows per pass keep eight loads in flight: on one core of a 2-core AMD EPYC, 8 rows of
// GPT-2's 768 x 3072 computed 74 GFLOP/s with the weights streaming from memory (64 one weight row per pass; 95
// with the weights in L2). The loop before these tiles, 4 weight rows widened into a buffer and re-read for every
// row of x, ran the 49 products of a batch-8 step in 37.8 ms against the one-row-per-pass tile's 25.2.
#if defined(__AVX512F__)
constexpr int kLanes = 16;
constexpr int kMaxRows = 8;  // 16 accumulators of the 32 vector registers
typedef __m512 FloatVec;
static inline FloatVec LoadWidened(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
#elif defined(__AVX2__)
constexpr int kLanes = 8;
constexpr int kMaxRows = 4;  // 8 accumulators of the 16
typedef __m256 FloatVec;
static inline FloatVec LoadWidened(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
#else
constexpr int kLanes = 4;
constexpr int kMaxRows = 4;
typedef float FloatVec __attribute__((vector_size(kLanes * sizeof(float))));
static inline FloatVec LoadWidened(const int8_t* p) {
  return FloatVec{static_cast<float>(p[0]), static_cast<float>(p[1]), static_cast<float>(p[2]),
                  static_cast<float>(p[3])};
}
#endif
constexpr int64_t kChunk = 64;

static inline FloatVec LoadFloats(const float* p) {
  FloatVec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
static inline void StoreFloats(float* p, FloatVec v) { std::memcpy(p, &v, sizeof v); }

// acc[r, j:j+2*kLanes] += x[r, k0:k1] @ w[k0:k1, j:j+2*kLanes] for R rows.
template <int R>
static void RowsTile(const float* x, const int8_t* w, float* acc, int64_t K, int64_t N, int64_t k0, int64_t k1,
                     int64_t j) {
  FloatVec a[R][2];
  for (int r = 0; r < R; ++r) {
    a[r][0] = LoadFloats(acc + r * N + j);
    a[r][1] = LoadFloats(acc + r * N + j + kLanes);
  }
  int64_t k = k0;
  for (; k + 4 <= k1; k += 4) {
    const int8_t* wk = w + k * N + j;
    const FloatVec w0 = LoadWidened(wk), w1 = LoadWidened(wk + kLanes);
    const FloatVec w2 = LoadWidened(wk + N), w3 = LoadWidened(wk + N + kLanes);
    const FloatVec w4 = LoadWidened(wk + 2 * N), w5 = LoadWidened(wk + 2 * N + kLanes);
    const FloatVec w6 = LoadWidened(wk + 3 * N), w7 = LoadWidened(wk + 3 * N + kLanes);
    for (int r = 0; r < R; ++r) {
      const float x0 = x[r * K + k], x1 = x[r * K + k + 1], x2 = x[r * K + k + 2], x3 = x[r * K + k + 3];
      a[r][0] += x0 * w0 + x1 * w2 + x2 * w4 + x3 * w6;
      a[r][1] += x0 * w1 + x1 * w3 + x2 * w5 + x3 * w7;
    }
  }
  for (; k < k1; ++k) {
    const FloatVec w0 = LoadWidened(w + k * N + j), w1 = LoadWidened(w + k * N + j + kLanes);
    for (int r = 0; r < R; ++r) {
      const float xv = x[r * K + k];
      a[r][0] += xv * w0;
      a[r][1] += xv * w1;
    }
  }
  for (int r = 0; r < R; ++r) {
    StoreFloats(acc + r * N + j, a[r][0]);
    StoreFloats(acc + r * N + j + kLanes, a[r][1]);
  }
}

template <int R>
static void RowsBlock(const float* x, const int8_t* w, float* acc, int64_t K, int64_t N, int64_t k0, int64_t k1) {
  const int64_t tiled = N - N % (2 * kLanes);
  for (int64_t j = 0; j < tiled; j += 2 * kLanes) RowsTile<R>(x, w, acc, K, N, k0, k1, j);
  for (int64_t k = k0; k < k1; ++k)  // the columns past the last whole tile
    for (int r = 0; r < R; ++r)
      for (int64_t j = tiled; j < N; ++j) acc[r * N + j] += x[r * K + k] * static_cast<float>(w[k * N + j]);
}

// acc[m, :] += x[m, k0:k1] @ w[k0:k1, :] for w [K, N]: rows k0..k1 of w are one contiguous stretch of memory.
// Several rows of x go through the register tiles kMaxRows at a time, chunk by chunk of the stretch.
void Int8RowMajorRows(const float* x, const int8_t* w, float* acc, int64_t M, int64_t K, int64_t N, int64_t k0,
                      int64_t k1) {
  if (M == 1) return RowMajorOneRow(x, w, acc, N, k0, k1);
  // kChunk weight rows at a time (at most 64 x N bytes: they stay in L2 while every group of rows uses them).
  for (int64_t kc = k0; kc < k1; kc += kChunk) {
    const int64_t kend = std::min(kc + kChunk, k1);
    for (int64_t m = 0; m < M; m += kMaxRows) {
      const float* xm = x + m * K;
      float* am = acc + m * N;
      WithRows<kMaxRows>(std::min<int64_t>(kMaxRows, M - m),
               [&](auto rows) { RowsBlock<decltype(rows)::value>(xm, w, am, K, N, kc, kend); });
    }
  }
}

static inline float Sum(FloatVec v) {
  float s = 0.0f;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}

// y[r, j:j+2] for R rows of x and two rows of w [N, K] (two output columns): 2R accumulators across K.
template <int R>
static void TransposedTile(const float* x, const int8_t* w, const float* scale, float* y, int64_t K, int64_t N,
                           int64_t j) {
  FloatVec a[R][2] = {};
  const int8_t* w0 = w + j * K;
  const int8_t* w1 = w0 + K;
  const int64_t tiled = K - K % kLanes;
  for (int64_t k = 0; k < tiled; k += kLanes) {
    const FloatVec v0 = LoadWidened(w0 + k), v1 = LoadWidened(w1 + k);
    for (int r = 0; r < R; ++r) {
      const FloatVec xv = LoadFloats(x + r * K + k);
      a[r][0] += xv * v0;
      a[r][1] += xv * v1;
    }
  }
  for (int r = 0; r < R; ++r) {
    float s0 = Sum(a[r][0]), s1 = Sum(a[r][1]);
    for (int64_t k = tiled; k < K; ++k) {
      s0 += x[r * K + k] * static_cast<float>(w0[k]);
      s1 += x[r * K + k] * static_cast<float>(w1[k]);
    }
    y[r * N + j] = s0 * scale[j];
    y[r * N + j + 1] = s1 * scale[j + 1];
  }
}

template <int R>
static void TransposedBlock(const float* x, const int8_t* w, const float* scale, float* y, int64_t K, int64_t N,
                            int64_t j0, int64_t j1) {
  int64_t j = j0;
  for (; j + 2 <= j1; j += 2) TransposedTile<R>(x, w, scale, y, K, N, j);
  for (; j < j1; ++j)  // an odd last column
    for (int r = 0; r < R; ++r) {
      float sum = 0.0f;
      for (int64_t k = 0; k < K; ++k) sum += x[r * K + k] * static_cast<float>(w[j * K + k]);
      y[r * N + j] = sum * scale[j];
    }
}

// y[m, j] for w [N, K]: the dot product of x's row m with w's row j (the tied embedding's LM-head layout).
void Int8TransposedRows(const float* x, const int8_t* w, const float* scale, float* y, int64_t M, int64_t K,
                        int64_t N, int64_t j0, int64_t j1) {
  if (M == 1) {
    for (int64_t j = j0; j < j1; ++j) {
      const int8_t* wj = w + j * K;
      float sum = 0.0f;
      for (int64_t k = 0; k < K; ++k) sum += x[k] * static_cast<float>(wj[k]);
      y[j] = sum * scale[j];
    }
    return;
  }
  // 32 weight rows (output columns) at a time, which stay in L1 / L2 while every group of rows uses them.
  for (int64_t jc = j0; jc < j1; jc += 32) {
    const int64_t jend = std::min(jc + 32, j1);
    for (int64_t m = 0; m < M; m += kMaxRows) {
      const float* xm = x + m * K;
      float* ym = y + m * N;
      WithRows<kMaxRows>(std::min<int64_t>(kMaxRows, M - m), [&](auto rows) {
        TransposedBlock<decltype(rows)::value>(xm, w, scale, ym, K, N, jc, jend);
      });
    }
  }
}

}  // namespace tfm
