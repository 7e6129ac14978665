// The loops of TfmInt8MatMul (int8_matmul_loops.cc).
#pragma once
#include <cstdint>
#include <type_traits>

namespace tfm {

// Calls f(std::integral_constant<int, R>()) for R = rows, 1 <= rows <= Max <= 8: the register tiles' row count is
// a compile-time constant, so their accumulators live in registers.
template <int Max, typename F>
inline void WithRows(int64_t rows, F f) {
  static_assert(Max >= 1 && Max <= 8, "tiles hold 1 to 8 rows");
  if (rows == 1) return f(std::integral_constant<int, 1>());
  if constexpr (Max >= 2) if (rows == 2) return f(std::integral_constant<int, 2>());
  if constexpr (Max >= 3) if (rows == 3) return f(std::integral_constant<int, 3>());
  if constexpr (Max >= 4) if (rows == 4) return f(std::integral_constant<int, 4>());
  if constexpr (Max >= 5) if (rows == 5) return f(std::integral_constant<int, 5>());
  if constexpr (Max >= 6) if (rows == 6) return f(std::integral_constant<int, 6>());
  if constexpr (Max >= 7) if (rows == 7) return f(std::integral_constant<int, 7>());
  if constexpr (Max >= 8) if (rows == 8) return f(std::integral_constant<int, 8>());
}

// acc [M, N] += x[:, k0:k1] @ w[k0:k1, :] for w [K, N], row-major (no scale: the caller sums and scales).
void Int8RowMajorRows(const float* x, const int8_t* w, float* acc, int64_t M, int64_t K, int64_t N, int64_t k0,
                      int64_t k1);
// w is [N, K], row-major (w's row j is output column j).
void Int8TransposedRows(const float* x, const int8_t* w, const float* scale, float* y, int64_t M, int64_t K,
                        int64_t N, int64_t j0, int64_t j1);

// W8A8 dynamic (int8_dynamic_loops.cc). Each row of x [M, K] to int8 as keras.quantizers.abs_max_quantize:
// q = clip(round(x * s), -127, 127), s = 127 / (max|x| + epsilon); sums[m] = sum of q's row m.
void QuantizeRows(const float* x, int8_t* q, float* scale, int32_t* sums, int64_t M, int64_t K, float epsilon);
// acc [M, N] int32 += sum over k0 <= k < k1 of q[m, k] * (w[k, j] + 128), w [K, N]; column j is stored at
// position DynamicColumn(j, N) of acc's row (a permutation that is its own inverse).
void Int8DynamicRowMajor(const int8_t* q, const int8_t* w, int32_t* acc, int64_t M, int64_t K, int64_t N, int64_t k0,
                         int64_t k1);
int64_t DynamicColumn(int64_t s, int64_t N);
// y [M, N] from the per-band accumulators partial [bands, M, N] (stored order) of Int8DynamicRowMajor.
void Int8DynamicFinish(const int32_t* partial, int64_t bands, const int32_t* sums, const float* w_scale,
                       const float* x_scale, float* y, int64_t M, int64_t N);
// y[m, j] = q[m] . w[j] / (w_scale[j] * x_scale[m]) for w [N, K], columns j0..j1.
void Int8DynamicTransposed(const int8_t* q, const int8_t* w, const float* w_scale, const float* x_scale,
                           const int32_t* sums, float* y, int64_t M, int64_t K, int64_t N, int64_t j0, int64_t j1);

}  // namespace tfm
