"""tfm's Dense: keras.layers.Dense numbers everywhere; an HLO barrier only for one row under XLA."""

import keras
import numpy as np
import tensorflow as tf

from tfm.layers.dense import Dense


def _pair(units=6, activation="gelu"):
    ours, reference = Dense(units, activation=activation), keras.layers.Dense(units, activation=activation)
    ours.build((None, 5))
    reference.build((None, 5))
    reference.set_weights([w + 0.1 for w in ours.get_weights()])  # a non-zero bias
    ours.set_weights(reference.get_weights())
    return ours, reference


def _compiled(layer):
    return tf.function(lambda x: layer(x), jit_compile=True)


def test_outputs_equal_keras_dense_for_one_row_and_many_rows_with_and_without_xla():
    ours, reference = _pair()
    for shape in [(1, 1, 5), (1, 5), (3, 4, 5)]:
        x = np.random.default_rng(0).normal(size=shape).astype("float32")
        expected = np.asarray(reference(x))
        np.testing.assert_allclose(np.asarray(ours(x)), expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(_compiled(ours)(x).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_barrier_only_in_the_compiled_one_row_product():
    ours, _ = _pair()
    one_row = _compiled(ours).experimental_get_compiler_ir(tf.zeros((1, 1, 5)))(stage="hlo")
    many_rows = _compiled(ours).experimental_get_compiler_ir(tf.zeros((2, 3, 5)))(stage="hlo")
    assert one_row.count("opt-barrier(") == 1
    assert "opt-barrier(" not in many_rows


def test_gradients_pass_through_the_barrier():
    ours, reference = _pair(activation=None)
    x = tf.constant(np.random.default_rng(1).normal(size=(1, 1, 5)).astype("float32"))

    def grads(layer):
        @tf.function(jit_compile=True)
        def run(v):
            with tf.GradientTape() as tape:
                tape.watch(v)
                total = tf.reduce_sum(tf.square(layer(v)))
            return tape.gradient(total, [v] + layer.trainable_variables)

        return [g.numpy() for g in run(x)]

    for got, expected in zip(grads(ours), grads(reference)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_mixed_precision_one_row_keeps_the_compute_dtype():
    layer = Dense(3, dtype="mixed_bfloat16")
    out = _compiled(layer)(tf.ones((1, 1, 4)))
    assert out.dtype == tf.bfloat16 and out.shape == (1, 1, 3)
    assert layer.kernel.dtype == "float32"
