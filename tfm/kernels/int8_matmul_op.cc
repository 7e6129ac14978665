// TfmInt8MatMul: y = (x @ w) / scale for float32 x [..., K], int8 w [K, N] (or [N, K] with transpose_w) and a
// float32 per-output-channel scale [N] (Keras' convention: w_int8 = round(w * scale)); y is [..., N]. Built for
// batch-1 and small-batch decoding, where a matmul is a weight read: int8 weights stream a quarter of float32's
// bytes, converted to float in registers. With quantize_x (W8A8 dynamic, Keras' int8 mode) each row of x is
// quantized to int8 first and the products are exact int32 byte dot products (int8_dynamic_loops.cc).
// Compiled on first use by tfm.kernels: this file with TensorFlow's flags, the loops with -march=native.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"
#include "int8_matmul.h"

using namespace tensorflow;

REGISTER_OP("TfmInt8MatMul")
    .Input("x: float")
    .Input("w: int8")
    .Input("scale: float")
    .Output("y: float")
    .Attr("transpose_w: bool = false")
    .Attr("quantize_x: bool = false")
    .Attr("epsilon: float = 1e-7")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      bool transpose_w;
      TF_RETURN_IF_ERROR(c->GetAttr("transpose_w", &transpose_w));
      shape_inference::ShapeHandle x, w, leading, y;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &w));
      TF_RETURN_IF_ERROR(c->Subshape(x, 0, -1, &leading));
      TF_RETURN_IF_ERROR(c->Concatenate(leading, c->Vector(c->Dim(w, transpose_w ? 0 : 1)), &y));
      c->set_output(0, y);
      return OkStatus();
    });

namespace {

constexpr int64_t kMaxDynamicK = 65536;  // 65536 * 255 * 127 < 2^31

class TfmInt8MatMulOp : public OpKernel {
 public:
  explicit TfmInt8MatMulOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("transpose_w", &transpose_w_));
    OP_REQUIRES_OK(context, context->GetAttr("quantize_x", &quantize_x_));
    OP_REQUIRES_OK(context, context->GetAttr("epsilon", &epsilon_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    const Tensor& w = context->input(1);
    const Tensor& scale = context->input(2);
    OP_REQUIRES(context, x.dims() >= 1 && w.dims() == 2 && scale.dims() == 1,
                errors::InvalidArgument("TfmInt8MatMul takes x [..., K], w [K, N] and scale [N]"));
    const int64_t K = x.dim_size(x.dims() - 1);
    const int64_t M = K == 0 ? 0 : x.NumElements() / K;
    const int64_t wk = transpose_w_ ? w.dim_size(1) : w.dim_size(0);
    const int64_t N = transpose_w_ ? w.dim_size(0) : w.dim_size(1);
    OP_REQUIRES(context, wk == K && scale.dim_size(0) == N,
                errors::InvalidArgument("TfmInt8MatMul: x ", x.shape().DebugString(), ", w ",
                                        w.shape().DebugString(), " and scale ", scale.shape().DebugString(),
                                        " do not match"));
    TensorShape y_shape = x.shape();
    y_shape.set_dim(x.dims() - 1, N);
    Tensor* y = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, y_shape, &y));
    if (y->NumElements() == 0) return;
    if (K == 0) {  // an empty sum
      std::fill_n(y->flat<float>().data(), y->NumElements(), 0.0f);
      return;
    }
    const float* xp = x.flat<float>().data();
    const int8_t* wp = w.flat<int8>().data();
    // Each int32 lane sums K products (w + 128) * x of at most 255 * 127.
    OP_REQUIRES(context, !quantize_x_ || K <= kMaxDynamicK,
                errors::InvalidArgument("TfmInt8MatMul with quantize_x sums at most ", kMaxDynamicK,
                                        " products in int32; x has K = ", K));
    if (quantize_x_)
      return ComputeDynamic(context, xp, wp, scale.flat<float>().data(), y->flat<float>().data(), M, K, N);
    std::vector<float> inverse(N);  // multiply, not divide, in the loops
    for (int64_t j = 0; j < N; ++j) inverse[j] = 1.0f / scale.flat<float>()(j);
    const float* sp = inverse.data();
    float* yp = y->flat<float>().data();
    auto workers = context->device()->tensorflow_cpu_worker_threads();
    if (transpose_w_) {
      // One unit is one output column (one weight row of K bytes, contiguous).
      Shard(workers->num_threads, workers->workers, N, K * (M + 1),
            [&](int64_t start, int64_t end) { tfm::Int8TransposedRows(xp, wp, sp, yp, M, K, N, start, end); });
      return;
    }
    // Each thread streams its own contiguous band of rows of w into a private accumulator; the bands' sums
    // are added and scaled at the end. (Splitting by columns instead reads short strided runs, which the
    // hardware prefetchers do not follow: measured at a third of the speed.) One row of x is a pure weight
    // stream: on a 2-logical-CPU AMD EPYC a second band on the other logical CPU read no faster than one and
    // added its hand-off (GPT-2's four shapes: 420 us a layer with two bands, 375 with one), so batch 1 uses a
    // band per two worker threads.
    const int64_t threads = M == 1 ? std::max(1, workers->num_threads / 2) : workers->num_threads;
    const int64_t bands = std::max<int64_t>(1, std::min<int64_t>(threads, K / 64));
    std::vector<float> partial(bands * M * N, 0.0f);
    Shard(bands, workers->workers, bands, K * N * (M + 1), [&](int64_t start, int64_t end) {
      for (int64_t b = start; b < end; ++b)
        tfm::Int8RowMajorRows(xp, wp, partial.data() + b * M * N, M, K, N, K * b / bands, K * (b + 1) / bands);
    });
    for (int64_t i = 0; i < M * N; ++i) {
      float sum = 0.0f;
      for (int64_t b = 0; b < bands; ++b) sum += partial[b * M * N + i];
      yp[i] = sum * sp[i % N];
    }
  }

 private:
  // W8A8 dynamic: x quantized per row, exact int32 products, y = acc / (scale * x_scale) as Keras computes it.
  void ComputeDynamic(OpKernelContext* context, const float* xp, const int8_t* wp, const float* sp, float* yp,
                      int64_t M, int64_t K, int64_t N) {
    std::vector<int8_t> q(M * K);
    std::vector<float> x_scale(M);
    std::vector<int32_t> sums(M);
    tfm::QuantizeRows(xp, q.data(), x_scale.data(), sums.data(), M, K, epsilon_);
    auto workers = context->device()->tensorflow_cpu_worker_threads();
    if (transpose_w_) {
      Shard(workers->num_threads, workers->workers, N, K * (M + 1) / 4, [&](int64_t start, int64_t end) {
        tfm::Int8DynamicTransposed(q.data(), wp, sp, x_scale.data(), sums.data(), yp, M, K, N, start, end);
      });
      return;
    }
    // Bands of weight rows as in the float path (one band per two threads for one row: on a 2-core AMD EPYC GPT-2
    // small's 48 products took 4.3-5.1 ms in one band, 5.6-5.7 in two); band edges on multiples of 4.
    const int64_t threads = M == 1 ? std::max(1, workers->num_threads / 2) : workers->num_threads;
    const int64_t bands = std::max<int64_t>(1, std::min<int64_t>(threads, K / 64));
    std::vector<int32_t> partial(bands * M * N, 0);
    Shard(bands, workers->workers, bands, K * N * (M + 1) / 4, [&](int64_t start, int64_t end) {
      for (int64_t b = start; b < end; ++b)
        tfm::Int8DynamicRowMajor(q.data(), wp, partial.data() + b * M * N, M, K, N, K / 4 * b / bands * 4,
                                 b + 1 == bands ? K : K / 4 * (b + 1) / bands * 4);
    });
    tfm::Int8DynamicFinish(partial.data(), bands, sums.data(), sp, x_scale.data(), yp, M, N);
  }

  bool transpose_w_;
  bool quantize_x_;
  float epsilon_;
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("TfmInt8MatMul").Device(DEVICE_CPU), TfmInt8MatMulOp);
