// The loops of TfmInt8MatMul, in their own file so they compile with -march=native without TensorFlow's
// headers (whose Eigen does not build with every instruction set g++ can target). Plain loops that g++
// vectorizes: each int8 weight is read once per call, widened to float in registers and multiplied.
#include "int8_matmul.h"

#include <vector>

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

// acc[m, :] += x[m, k0:k1] @ w[k0:k1, :] for w [K, N]: rows k0..k1 of w are one contiguous stretch of memory,
// read once. Several rows of x: four weight rows at a time, widened to float once and used by every row of x.
void Int8RowMajorRows(const float* x, const int8_t* w, float* acc, int64_t M, int64_t K, int64_t N, int64_t k0,
                      int64_t k1) {
  if (M == 1) return RowMajorOneRow(x, w, acc, N, k0, k1);
  std::vector<float> rows(4 * N);
  int64_t k = k0;
  for (; k + 4 <= k1; k += 4) {
    const int8_t* w0 = w + k * N;
    const int8_t* w1 = w0 + N;
    const int8_t* w2 = w1 + N;
    const int8_t* w3 = w2 + N;
    float* r0 = rows.data();
    float* r1 = r0 + N;
    float* r2 = r1 + N;
    float* r3 = r2 + N;
    for (int64_t j = 0; j < N; ++j) {
      r0[j] = static_cast<float>(w0[j]);
      r1[j] = static_cast<float>(w1[j]);
      r2[j] = static_cast<float>(w2[j]);
      r3[j] = static_cast<float>(w3[j]);
    }
    for (int64_t m = 0; m < M; ++m) {
      const float* xm = x + m * K + k;
      const float x0 = xm[0], x1 = xm[1], x2 = xm[2], x3 = xm[3];
      float* a = acc + m * N;
      for (int64_t j = 0; j < N; ++j) a[j] += x0 * r0[j] + x1 * r1[j] + x2 * r2[j] + x3 * r3[j];
    }
  }
  for (; k < k1; ++k) {
    const int8_t* wk = w + k * N;
    for (int64_t m = 0; m < M; ++m) {
      const float xv = x[m * K + k];
      float* a = acc + m * N;
      for (int64_t j = 0; j < N; ++j) a[j] += xv * static_cast<float>(wk[j]);
    }
  }
}

// y[m, j] for w [N, K]: the dot product of x's row m with w's row j (the tied embedding's LM-head layout).
void Int8TransposedRows(const float* x, const int8_t* w, const float* scale, float* y, int64_t M, int64_t K,
                        int64_t N, int64_t j0, int64_t j1) {
  std::vector<float> row(M == 1 ? 0 : K);
  for (int64_t j = j0; j < j1; ++j) {
    const int8_t* wj = w + j * K;
    if (M == 1) {
      float sum = 0.0f;
      for (int64_t k = 0; k < K; ++k) sum += x[k] * static_cast<float>(wj[k]);
      y[j] = sum * scale[j];
      continue;
    }
    for (int64_t k = 0; k < K; ++k) row[k] = static_cast<float>(wj[k]);
    for (int64_t m = 0; m < M; ++m) {
      const float* xm = x + m * K;
      float sum = 0.0f;
      for (int64_t k = 0; k < K; ++k) sum += xm[k] * row[k];
      y[m * N + j] = sum * scale[j];
    }
  }
}

}  // namespace tfm
