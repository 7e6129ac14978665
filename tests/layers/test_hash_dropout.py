"""HashDropout: Keras Dropout semantics (rate, scaling, seeded replay) with a hashed mask."""

import keras
import numpy as np
import tensorflow as tf

from tfm.layers.attention import HashDropout


def test_rate_scaling_and_inference_identity():
    layer = HashDropout(0.1, seed=3)
    x = np.ones((64, 128, 128), "float32")  # 1M elements
    y = np.asarray(layer(x, training=True))
    dropped = (y == 0).mean()
    assert abs(dropped - 0.1) < 0.002  # 4 binomial standard deviations at n = 1M
    np.testing.assert_allclose(y[y != 0], 1 / 0.9, rtol=1e-6)
    assert abs(y.mean() - 1.0) < 0.003  # unbiased
    np.testing.assert_array_equal(layer(x, training=False), x)
    np.testing.assert_array_equal(HashDropout(0.0)(x, training=True), x)


def test_masks_are_fresh_per_call_and_replayed_from_the_seed_state():
    x = np.ones((256, 512), "float32")
    a, b = HashDropout(0.5, seed=1), HashDropout(0.5, seed=1)
    first, second = np.asarray(a(x, training=True)) == 0, np.asarray(a(x, training=True)) == 0
    assert abs((first & second).mean() - 0.25) < 0.01  # consecutive masks are independent
    np.testing.assert_array_equal(np.asarray(b(x, training=True)) == 0, first)  # same seed, same first mask
    other = np.asarray(HashDropout(0.5, seed=2)(x, training=True)) == 0
    assert abs((first & other).mean() - 0.25) < 0.01
    flat = first.ravel().astype("float64")
    assert abs(np.corrcoef(flat[:-1], flat[1:])[0, 1]) < 0.01  # neighbours uncorrelated


def test_xla_and_graph_masks_match_and_gradients_flow():
    x = tf.random.normal((8, 16, 32))
    layer = HashDropout(0.3, seed=5)
    state = layer.seed_generator.state.numpy()

    def run(jit):
        layer.seed_generator.state.assign(state)
        return tf.function(lambda v: layer(v, training=True), jit_compile=jit)(x).numpy()

    np.testing.assert_array_equal(run(True), run(False))
    layer.seed_generator.state.assign(state)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(layer(x, training=True))
    grad = tape.gradient(total, x).numpy()
    np.testing.assert_allclose(grad, np.where(run(False) != 0, 1 / 0.7, 0.0), rtol=1e-6)


def test_config_round_trip_keeps_the_class():
    layer = HashDropout(0.2, seed=4, name="drop")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is HashDropout and clone.rate == 0.2 and clone.name == "drop"
    assert [v.name for v in layer.non_trainable_variables] == [v.name for v in clone.non_trainable_variables]
