"""HashDropout: Keras Dropout semantics (rate, scaling, seeded replay) with a hashed mask."""

import keras
import numpy as np
import tensorflow as tf

from tfm.layers.dropout import HashDropout


def _xla(layer, x):
    return tf.function(lambda v: layer(v, training=True), jit_compile=True)(x).numpy()


def _eager(layer, x):
    return np.asarray(layer(x, training=True))


def _mix32(h):
    h = (h ^ (h >> 16)) * np.uint32(0x7FEB352D)
    h = (h ^ (h >> 15)) * np.uint32(0x846CA68B)
    return h ^ (h >> 16)


def test_rate_scaling_and_inference_identity_on_both_paths():
    x = np.ones((64, 128, 128), "float32")  # 1M elements
    for run in (_xla, _eager):  # the hash under XLA, Keras' kernel elsewhere
        layer = HashDropout(0.1, seed=3)
        y = run(layer, x)
        dropped = (y == 0).mean()
        assert abs(dropped - 0.1) < 0.002  # 4 binomial standard deviations at n = 1M
        np.testing.assert_allclose(y[y != 0], 1 / 0.9, rtol=1e-6)
        assert abs(y.mean() - 1.0) < 0.003  # unbiased
        np.testing.assert_array_equal(layer(x, training=False), x)
        np.testing.assert_array_equal(HashDropout(0.0)(x, training=True), x)


def test_xla_mask_is_the_seeded_hash():
    # The compiled path keeps an element iff hash(index, seed state) >= rate * 2^32: recomputed here in numpy.
    layer = HashDropout(0.3, seed=5)
    seed = layer.seed_generator.state.numpy().astype(np.uint32)
    kept = _xla(layer, np.ones((4, 8, 16), "float32")) != 0
    with np.errstate(over="ignore"):
        key = _mix32(seed[0] ^ _mix32(seed[1]))
        salt = _mix32(key + np.uint32(0x9E3779B9))
        bits = _mix32(_mix32(np.arange(4 * 8 * 16, dtype=np.uint32) + key) ^ salt)
    np.testing.assert_array_equal(kept.ravel(), bits >= np.uint32(round(0.3 * 2**32)))


def test_masks_are_fresh_per_call_and_replayed_from_the_seed_state():
    x = np.ones((256, 512), "float32")
    a, b = HashDropout(0.5, seed=1), HashDropout(0.5, seed=1)
    first, second = _xla(a, x) == 0, _xla(a, x) == 0
    assert abs((first & second).mean() - 0.25) < 0.01  # consecutive masks are independent
    np.testing.assert_array_equal(_xla(b, x) == 0, first)  # same seed, same first mask
    other = _xla(HashDropout(0.5, seed=2), x) == 0
    assert abs((first & other).mean() - 0.25) < 0.01
    flat = first.ravel().astype("float64")
    assert abs(np.corrcoef(flat[:-1], flat[1:])[0, 1]) < 0.01  # neighbours uncorrelated


def test_xla_gradients_follow_the_mask():
    x = tf.random.normal((8, 16, 32))
    layer = HashDropout(0.3, seed=5)
    state = layer.seed_generator.state.numpy()
    mask = _xla(layer, x) != 0
    layer.seed_generator.state.assign(state)

    @tf.function(jit_compile=True)
    def grad(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            total = tf.reduce_sum(layer(v, training=True))
        return tape.gradient(total, v)

    np.testing.assert_allclose(grad(x).numpy(), np.where(mask, 1 / 0.7, 0.0), rtol=1e-6)


def test_config_round_trip_keeps_the_class():
    layer = HashDropout(0.2, seed=4, name="drop")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is HashDropout and clone.rate == 0.2 and clone.name == "drop"
    assert [v.name for v in layer.non_trainable_variables] == [v.name for v in clone.non_trainable_variables]


def test_eager_mask_is_16_bit_exact_in_bfloat16_and_handles_odd_sizes():
    # Outside XLA the mask compares 16-bit random halves with rate * 2^16, so a bf16 input keeps the
    # requested rate (Keras' bf16 uniform draws drop 0.1016 for rate 0.1).
    layer = HashDropout(0.1, seed=7, dtype="mixed_bfloat16")
    y = _eager(layer, np.ones((4, 1024, 1024), "float32"))  # 4M elements: 4 SD = 0.0006
    assert y.dtype == tf.bfloat16.as_numpy_dtype
    assert abs((y == 0).mean() - 0.1) < 0.0006
    odd = _eager(HashDropout(0.5, seed=2), np.ones((7, 13), "float32"))
    assert odd.shape == (7, 13) and 0 < (odd == 0).sum() < 91
