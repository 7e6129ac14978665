// The loops of TfmInt8MatMul (int8_matmul_loops.cc).
#pragma once
#include <cstdint>

namespace tfm {

// acc [M, N] += x[:, k0:k1] @ w[k0:k1, :] for w [K, N], row-major (no scale: the caller sums and scales).
void Int8RowMajorRows(const float* x, const int8_t* w, float* acc, int64_t M, int64_t K, int64_t N, int64_t k0,
                      int64_t k1);
// w is [N, K], row-major (w's row j is output column j).
void Int8TransposedRows(const float* x, const int8_t* w, const float* scale, float* y, int64_t M, int64_t K,
                        int64_t N, int64_t j0, int64_t j1);

}  // namespace tfm
