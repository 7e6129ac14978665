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
from tfm.errors import InputError
from tfm.training.config import ConfigError, TrainerConfig
from tfm.training.optimizer import NO_WEIGHT_DECAY, AdamW, PreReducedAdamW, create_optimizer
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


@pytest.mark.parametrize("named", [None, {"kernel": 3.0}])
@pytest.mark.parametrize("cls", [AdamW, PreReducedAdamW])
def test_layer_decay_trains_each_variable_as_keras_adamw_at_its_layers_rate(cls, named):
    # Two transformer layers: layer 1 (the top) at decay**1, layer 0 at decay**2, the embeddings at decay**3, the
    # head at the full rate. Keras' AdamW run on each variable alone, at that rate, is the reference, weight decay
    # (lr * weight_decay, so scaled with it) included. With `named`, every kernel's rate is also tripled.
    decay, k = 0.5, 3.0 if named else 1.0
    layout = [("token_embedding", "embeddings", (50, 8), decay ** 3),
              ("transformer_layer_0", "kernel", (8, 8), decay ** 2 * k),
              ("transformer_layer_1", "kernel", (8, 8), decay * k),
              ("transformer_layer_1", "bias", (8,), decay), ("logits", "kernel", (8, 2), 1.0 * k)]
    rng = np.random.default_rng(0)
    initial = [rng.normal(size=shape).astype("float32") for _, _, shape, _ in layout]
    steps = [[rng.normal(size=shape).astype("float32") for _, _, shape, _ in layout] for _ in range(4)]

    def variables():
        made = []
        for (scope, name, _, _), value in zip(layout, initial):
            with keras.name_scope(scope):
                made.append(keras.Variable(value, name=name))
        return made

    def schedule(factor):
        return keras.optimizers.schedules.PolynomialDecay(1e-2 * factor, 10, 1e-3 * factor)

    layered = variables()
    assert [v.path for v in layered][:2] == ["token_embedding/embeddings", "transformer_layer_0/kernel"]
    optimizer = cls(learning_rate=schedule(1.0), weight_decay=0.05, epsilon=1e-6, layer_decay=decay,
                    learning_rate_multipliers=named)
    optimizer.exclude_from_weight_decay(var_names=NO_WEIGHT_DECAY)
    for grads in steps:
        optimizer.apply([tf.constant(g) for g in grads], layered)

    for index, (_, _, _, factor) in enumerate(layout):
        alone = variables()[index]
        reference = keras.optimizers.AdamW(learning_rate=schedule(factor), weight_decay=0.05, epsilon=1e-6)
        reference.exclude_from_weight_decay(var_names=NO_WEIGHT_DECAY)
        for grads in steps:
            reference.apply([tf.constant(grads[index])], [alone])
        np.testing.assert_allclose(layered[index].numpy(), alone.numpy(), rtol=1e-6, atol=2e-6)
    moved = [np.abs(v.numpy() - w).max() for v, w in zip(layered, initial)]
    assert moved[0] < moved[1] < moved[2] < moved[4]  # the rates really differ, bottom to top


def test_learning_rate_multipliers_reach_the_optimizer_and_bad_names_are_errors():
    # LoRA+: B at 16 times A's rate. After one Adam step (about lr per entry, whatever the gradient's size), B
    # moved exactly 16 times as far as A.
    for pre_reduced in (False, True):
        optimizer = create_optimizer(TrainerConfig(learning_rate=1e-3, weight_decay=0.0,
                                                   learning_rate_multipliers={"lora_b": 16.0}), pre_reduced)
        assert type(optimizer).from_config(optimizer.get_config()).learning_rate_multipliers == {"lora_b": 16.0}
        with keras.name_scope("update_query"):
            a = keras.Variable(np.zeros((4, 2), "float32"), name="lora_a")
            b = keras.Variable(np.zeros((2, 4), "float32"), name="lora_b")
        optimizer.apply([tf.ones((4, 2)), tf.ones((2, 4))], [a, b])
        np.testing.assert_allclose(-a.numpy(), 1e-3, rtol=1e-3)  # the schedule's first rate, 1e-3 (epsilon aside)
        np.testing.assert_allclose(b.numpy() / a.numpy()[0, 0], 16.0, rtol=1e-6)
    typo = create_optimizer(TrainerConfig(learning_rate_multipliers={"lora_B": 16.0}))
    with pytest.raises(InputError, match=r"learning_rate_multipliers: \['lora_B'\] match no trainable variable; "
                                         r"variable paths look like \['update_query/lora_a'"):
        typo.build([a])
    with pytest.raises(ConfigError, match=r"learning_rate_multipliers.lora_b must map a non-empty name to a "
                                          r"factor > 0, got 'lora_b': -1"):
        TrainerConfig(learning_rate_multipliers={"lora_b": -1})._validate()


def test_layer_decay_reaches_the_optimizer_from_the_config_and_is_checked():
    for pre_reduced in (False, True):
        optimizer = create_optimizer(TrainerConfig(layer_decay=0.8), pre_reduced=pre_reduced)
        assert isinstance(optimizer, AdamW) and optimizer.layer_decay == 0.8
        assert type(optimizer).from_config(optimizer.get_config()).layer_decay == 0.8
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match=r"layer_decay.*\(0, 1\]"):
            TrainerConfig(layer_decay=bad)._validate()
