"""The Trainer's optimizer: the fused AdamW update equals Keras' AdamW; `trainer.clip_norm` clips the token-weighted
mean gradient by its global norm, the norm the Trainer logs.

After one AdamW step the first moments are m = (1 - beta_1) * g, so they show the gradient the optimizer got:
clipped to norm c, every moment is the unclipped one times c / ||g||; below the threshold, they are equal.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.training.toy_training import model_fn, toy_dataset
from tfm.training.config import TrainerConfig
from tfm.training.optimizer import NO_WEIGHT_DECAY, PreReducedAdamW
from tfm.training.trainer import Trainer


def _one_step(tmp_path, name, clip_norm):
    cfg = TrainerConfig(steps=4, batch_size=8, learning_rate=1e-2, log_every=1, eval_every=100, checkpoint_every=100,
                        strategy="default", clip_norm=clip_norm, jit_compile=False)
    trainer = Trainer(cfg, str(tmp_path / name), lambda: model_fn("mlm"), lambda b, c: toy_dataset("mlm", b, c),
                      verbose=False)
    _, grad_norm, _ = trainer.train_step()
    moments = np.concatenate([m.numpy().ravel() for m in trainer.optimizer._momentums])
    return float(grad_norm), moments / (1 - cfg.adam_beta_1)  # the gradient the optimizer applied


def test_clip_norm_scales_the_applied_gradient_to_the_threshold_and_logs_the_unclipped_norm(tmp_path):
    norm, unclipped = _one_step(tmp_path, "none", None)
    assert norm == pytest.approx(np.linalg.norm(unclipped), rel=1e-5)  # the logged norm is the gradient's
    clip = norm / 4
    clipped_norm, clipped = _one_step(tmp_path, "clipped", clip)
    assert clipped_norm == pytest.approx(norm, rel=1e-6)  # logged before clipping
    np.testing.assert_allclose(clipped, unclipped * (clip / norm), rtol=1e-5, atol=1e-9)
    assert np.linalg.norm(clipped) == pytest.approx(clip, rel=1e-5)
    _, loose = _one_step(tmp_path, "loose", norm * 10)  # above the norm: nothing changes
    np.testing.assert_allclose(loose, unclipped, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("jit_compile", [True, False])
def test_fused_update_and_weight_decay_equal_keras_adamw(jit_compile):
    # Keras' AdamW is the reference: five steps of a decaying schedule, a decayed kernel and embedding table and an
    # undecayed bias, under XLA and without.
    rng = np.random.default_rng(0)
    shapes, names = [(64, 32), (32,), (100, 16)], ["kernel", "bias", "embeddings"]
    initial = [rng.normal(size=s).astype("float32") for s in shapes]
    steps = [[np.random.default_rng(i).normal(size=s).astype("float32") for s in shapes] for i in range(5)]

    def run(cls):
        variables = [keras.Variable(w, name=n) for w, n in zip(initial, names)]
        optimizer = cls(learning_rate=keras.optimizers.schedules.PolynomialDecay(1e-2, 10, 1e-3), weight_decay=0.01,
                        epsilon=1e-6)
        optimizer.exclude_from_weight_decay(var_names=NO_WEIGHT_DECAY)
        apply = tf.function(lambda grads: optimizer.apply(grads, variables), jit_compile=jit_compile)
        for grads in steps:
            apply([tf.constant(g) for g in grads])
        return [v.numpy() for v in (*variables, *optimizer._momentums, *optimizer._velocities)]

    keras_states, fused_states = run(keras.optimizers.AdamW), run(PreReducedAdamW)
    for want, got in zip(keras_states, fused_states):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=2e-6)
    decayed = keras_states[0] - run(lambda **kw: keras.optimizers.Adam(**{**kw, "weight_decay": None}))[0]
    assert np.abs(decayed).max() > 1e-4  # the decay is really in both (and far above the tolerance)
