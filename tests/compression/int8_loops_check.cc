// Checks tfm's int8 loops (tfm/kernels) against plain reference sums, without TensorFlow, so that the loops can
// be compiled for other instruction sets than this machine's (tests/compression/test_int8_loops.py).
// Prints one line per failing case and "checked N cases".
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "int8_matmul.h"

static uint64_t state = 42;
static uint32_t Next() {
  state = state * 6364136223846793005ULL + 1442695040888963407ULL;
  return static_cast<uint32_t>(state >> 33);
}
static int8_t RandomInt8() { return static_cast<int8_t>(static_cast<int>(Next() % 255) - 127); }
static float RandomFloat() { return (static_cast<float>(Next() % 20001) - 10000.0f) / 2500.0f; }

int main() {
  const int64_t shapes[][3] = {{1, 768, 256}, {1, 130, 200}, {3, 256, 128}, {9, 66, 64},  {2, 7, 3},
                               {8, 768, 96},  {5, 100, 33},  {1, 64, 64},   {4, 3, 130}, {6, 200, 70}};
  int failures = 0, cases = 0;
  for (const auto& shape : shapes) {
    const int64_t M = shape[0], K = shape[1], N = shape[2];
    std::vector<float> x(M * K), scale(N);
    std::vector<int8_t> w(K * N), q(M * K);
    for (auto& v : x) v = RandomFloat();
    for (auto& v : w) v = RandomInt8();
    for (auto& v : scale) v = 1.0f + static_cast<float>(Next() % 100);
    // W8A8: exact integers against a plain int64 sum.
    std::vector<float> x_scale(M);
    std::vector<int32_t> sums(M), acc(M * N, 0);
    tfm::QuantizeRows(x.data(), q.data(), x_scale.data(), sums.data(), M, K, 1e-7f);
    for (int64_t m = 0; m < M; ++m) {  // keras.quantizers.abs_max_quantize, rounding half to even
      float largest = 0.0f;
      for (int64_t k = 0; k < K; ++k) largest = std::fmax(largest, std::fabs(x[m * K + k]));
      const float s = 127.0f / (largest + 1e-7f);
      for (int64_t k = 0; k < K; ++k) {
        const float v = x[m * K + k] * s;
        float r = std::floor(v + 0.5f);
        if (r - v == 0.5f && std::fmod(r, 2.0f) != 0.0f) r -= 1.0f;
        r = std::fmin(127.0f, std::fmax(-127.0f, r));
        if (q[m * K + k] != static_cast<int8_t>(r) || x_scale[m] != s)
          ++failures, std::printf("quantize %ldx%ld [%ld, %ld]\n", M, K, m, k);
      }
    }
    tfm::Int8DynamicRowMajor(q.data(), w.data(), acc.data(), M, K, N, 0, K);
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t j = 0; j < N; ++j) {
        int64_t exact = 0;
        for (int64_t k = 0; k < K; ++k) exact += static_cast<int64_t>(q[m * K + k]) * w[k * N + j];
        const int64_t got = acc[m * N + tfm::DynamicColumn(j, N)] - 128LL * sums[m];
        if (got != exact) ++failures, std::printf("w8a8 row-major %ldx%ldx%ld [%ld, %ld]\n", M, K, N, m, j);
      }
    }
    ++cases;
    // Weight-only: float sums within rounding of a double reference.
    std::vector<float> facc(M * N, 0.0f);
    tfm::Int8RowMajorRows(x.data(), w.data(), facc.data(), M, K, N, 0, K);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t j = 0; j < N; ++j) {
        double exact = 0.0, size = 0.0;
        for (int64_t k = 0; k < K; ++k)
          exact += static_cast<double>(x[m * K + k]) * w[k * N + j], size += std::fabs(x[m * K + k]) * 127.0;
        if (std::fabs(facc[m * N + j] - exact) > 1e-5 * size + 1e-4)
          ++failures, std::printf("weight-only row-major %ldx%ldx%ld [%ld, %ld]\n", M, K, N, m, j);
      }
    ++cases;
  }
  // The transposed layouts, w [N, K].
  for (const auto& shape : shapes) {
    const int64_t M = shape[0], K = shape[1], N = shape[2];
    std::vector<float> x(M * K), scale(N), y(M * N), fy(M * N), x_scale(M);
    std::vector<int8_t> w(N * K), q(M * K);
    std::vector<int32_t> sums(M);
    for (auto& v : x) v = RandomFloat();
    for (auto& v : w) v = RandomInt8();
    for (auto& v : scale) v = 1.0f + static_cast<float>(Next() % 100);
    tfm::QuantizeRows(x.data(), q.data(), x_scale.data(), sums.data(), M, K, 1e-7f);
    tfm::Int8DynamicTransposed(q.data(), w.data(), scale.data(), x_scale.data(), sums.data(), y.data(), M, K, N, 0, N);
    tfm::Int8TransposedRows(x.data(), w.data(), scale.data(), fy.data(), M, K, N, 0, N);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t j = 0; j < N; ++j) {
        int64_t exact = 0;
        double fexact = 0.0, size = 0.0;
        for (int64_t k = 0; k < K; ++k) {
          exact += static_cast<int64_t>(q[m * K + k]) * w[j * K + k];
          fexact += static_cast<double>(x[m * K + k]) * w[j * K + k], size += std::fabs(x[m * K + k]) * 127.0;
        }
        if (y[m * N + j] != static_cast<float>(exact) / (scale[j] * x_scale[m]))
          ++failures, std::printf("w8a8 transposed %ldx%ldx%ld [%ld, %ld]\n", M, K, N, m, j);
        if (std::fabs(fy[m * N + j] - fexact * scale[j]) > (1e-5 * size + 1e-4) * scale[j])
          ++failures, std::printf("weight-only transposed %ldx%ldx%ld [%ld, %ld]\n", M, K, N, m, j);
      }
    cases += 2;
  }
  std::printf("checked %d cases, %d failures\n", cases, failures);
  return failures ? 1 : 0;
}
