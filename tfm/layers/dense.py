"""`Dense` with a faster XLA CPU vector-matrix product, and the test for XLA tracing both it and `HashDropout` use."""

import math

import keras
import tensorflow as tf
from keras import ops


def compiling_with_xla():
    """True while tracing a `tf.function(jit_compile=True)` (Keras `jit_compile=True` steps, the Trainer's)."""
    if tf.executing_eagerly():
        return False
    from tensorflow.python.ops import control_flow_util  # TF's own test of the same (no public API)

    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


@tf.custom_gradient
def fusion_barrier(x):
    """Identity that XLA may not fuse across (an HLO optimization barrier); its gradient is the identity."""
    from tensorflow.compiler.tf2xla.python import xla  # the op's only Python wrapper

    return xla.optimization_barrier(x)[0], lambda upstream: upstream


def int8_kernel_usable(inputs, inputs_quantizer=None):
    """Whether an int8 product on `inputs` runs on `tfm.kernels`' op: float32 inputs, outside XLA, the op built on
    this machine and not inside `tfm.kernels.portable()`; for W8A8 (an `inputs_quantizer`), a CPU with byte dot
    products (`kernels.byte_dot_products()`) and Keras' default per-row abs-max quantizer to [-127, 127], which the
    op reproduces exactly."""
    from tfm import kernels

    if inputs_quantizer is not None and not (
            kernels.byte_dot_products() and isinstance(inputs_quantizer, keras.quantizers.AbsMaxQuantizer)
            and tuple(inputs_quantizer.value_range) == (-127, 127) and inputs_quantizer.axis in (None, (-1,))
            and inputs_quantizer.output_dtype == "int8" and (inputs.shape[-1] or 0) <= kernels.MAX_W8A8_DEPTH):
        return False
    return inputs.dtype == "float32" and not compiling_with_xla() and kernels.active() is not None


def _is_one_row(inputs):
    leading = tuple(inputs.shape[:-1])
    return None not in leading and math.prod(leading) == 1


@keras.saving.register_keras_serializable(package="tfm")
class Dense(keras.layers.Dense):
    """`keras.layers.Dense` that, for a single input row under XLA, adds the bias outside the dot's fusion.

    With a `tfm.peft` update attached (`peft`), its low-rank output is added to the projection. Quantized by
    `tfm.compression` (Keras' int8 machinery: Keras then calls `quantized_call`), its int8 product (weight-only or
    W8A8) runs on `tfm.kernels`' op outside XLA, and a PEFT update trains on the dequantized base (QLoRA-style).

    XLA on CPU fuses a vector-matrix dot with its bias add into one loop ("output fusion"), and that fused
    loop reads the kernel about 20% slower than the plain dot does; batch-1 decoding is exactly this
    case, so it runs at the memory-bandwidth limit only with the barrier. Anything else (several rows,
    no XLA, no bias, a quantized or LoRA layer) is `keras.layers.Dense` unchanged.

    Example:
    >>> Dense(4)(keras.ops.ones((1, 1, 8))).shape
    TensorShape([1, 1, 4])
    """

    peft = None  # a `tfm.peft` update (LoRA, AdaLoRA) whose output is added before the activation

    def call(self, inputs, training=None):
        if self.peft is not None and self.peft.active is not None and not self.peft.merged:
            x = ops.matmul(inputs, self.kernel)
            if self.bias is not None:
                x = ops.add(x, self.bias)
            x = ops.add(x, self.peft(inputs, training=training))
            return x if self.activation is None else self.activation(x)
        plain = self.bias is None or getattr(self, "lora_enabled", False)
        if plain or not _is_one_row(inputs) or not compiling_with_xla():
            return super().call(inputs, training=training)
        x = ops.add(fusion_barrier(ops.matmul(inputs, self.kernel)), self.bias)
        return x if self.activation is None else self.activation(x)

    def quantized_call(self, inputs, training=None):
        if self.peft is not None and self.peft.active is not None and not self.peft.merged:
            kernel = ops.cast(self._kernel, self.compute_dtype) / ops.cast(self.kernel_scale, self.compute_dtype)
            x = ops.matmul(inputs, kernel)  # the dequantized int8 base
            if self.bias is not None:
                x = ops.add(x, self.bias)
            x = ops.add(x, self.peft(inputs, training=training))
            return x if self.activation is None else self.activation(x)
        if self.quantization_mode == "int8" and int8_kernel_usable(inputs, self.inputs_quantizer):
            from tfm import kernels  # outside XLA: the op streams the int8 bytes (W8A8: int8 byte dot products)

            rows = self.inputs_quantizer  # W8A8: the op quantizes each row as this quantizer does
            x = kernels.int8_matmul(inputs, self._kernel, self.kernel_scale, quantize_x=rows is not None,
                                    epsilon=rows.epsilon if rows is not None else 1e-7)
            if self.bias is not None:
                x = x + self.bias
            return x if self.activation is None else self.activation(x)
        return super().quantized_call(inputs, training=training)
