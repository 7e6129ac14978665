"""R-Drop (`trainer.r_drop_alpha`, `Task.compile(r_drop_alpha=...)`): the loss against numpy on known logits,
the Trainer and `fit` paths, and the tasks it refuses."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfm
from tests.training.toy_training import model_fn, toy_dataset
from tfm.errors import InputError
from tfm.tasks.task import Task
from tfm.training.config import ExperimentConfig, TrainerConfig
from tfm.training.config_core import ConfigError, from_dict
from tfm.training.r_drop import r_drop_loss_sums, symmetric_kl
from tfm.training.trainer import Trainer


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _np_symmetric_kl(a, b):
    la, lb = _log_softmax(a.astype("float64")), _log_softmax(b.astype("float64"))
    pa, pb = np.exp(la), np.exp(lb)
    return 0.5 * ((pa * (la - lb)).sum(-1) + (pb * (lb - la)).sum(-1))


def _np_cross_entropy(logits, labels):
    return -np.take_along_axis(_log_softmax(logits.astype("float64")), np.maximum(labels, 0)[:, None], -1)[:, 0]


def test_symmetric_kl_matches_numpy_and_vanishes_on_equal_logits():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 5, 7)).astype("float32") * 3
    np.testing.assert_allclose(keras.ops.convert_to_numpy(symmetric_kl(a, b)), _np_symmetric_kl(a, b), rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(symmetric_kl(a, a + 4.0)), 0.0, atol=1e-6)


class _ScriptedModel:
    """Returns the given logits on successive calls; the loss sums are Task's cross-entropy."""

    def __init__(self, *outputs):
        self.outputs = list(outputs)

    def __call__(self, x, training=None):
        assert training is True
        return self.outputs.pop(0)

    def loss_sums(self, y, y_pred, sample_weight=None):
        return Task.loss_sums(self, y, y_pred, sample_weight)


def test_loss_sums_equal_numpy_on_known_logits_with_ignored_labels_and_weights():
    rng = np.random.default_rng(1)
    first, second = rng.normal(size=(2, 6, 3)).astype("float32") * 2
    labels = np.array([0, 2, -1, 1, 1, 0], "int32")
    weights = np.array([1.0, 0.5, 1.0, 2.0, 0.0, 1.0], "float32")
    total, weight, logits = r_drop_loss_sums(_ScriptedModel(first, second), None, labels, weights, alpha=0.7)
    w = weights * (labels >= 0)
    expected = (0.5 * ((_np_cross_entropy(first, labels) + _np_cross_entropy(second, labels)) * w).sum()
                + 0.7 * (_np_symmetric_kl(first, second) * w).sum())
    assert float(total) == pytest.approx(expected, rel=1e-5)
    assert float(weight) == pytest.approx(w.sum())
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(logits), first)


def _classifier(dropout, num_classes=3, regression=False):
    backbone = tfm.models.BertBackbone(vocabulary_size=40, num_layers=1, num_heads=2, hidden_dim=8,
                                       intermediate_dim=16, max_sequence_length=8, dropout=dropout)
    return tfm.tasks.TextClassifier(backbone, num_classes=num_classes, dropout=dropout, regression=regression)


def _batch(n=6):
    rng = np.random.default_rng(2)
    ids = rng.integers(3, 40, (n, 8)).astype("int32")
    x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids)}
    return x, rng.integers(0, 3, n).astype("int32"), rng.uniform(0.5, 1.5, n).astype("float32")


def test_fit_loss_is_the_mean_of_both_passes_plus_alpha_times_the_kl_per_example():
    # Dropout 0: the second pass is the model's own deterministic output, so the first can be any known logits.
    model = _classifier(dropout=0.0)
    model.compile(r_drop_alpha=0.4)
    x, y, sample_weight = _batch()
    second = keras.ops.convert_to_numpy(model(x, training=True))
    first = second + np.random.default_rng(3).normal(size=second.shape).astype("float32")
    loss = float(model.compute_loss(x, y, first, sample_weight, training=True))
    n = len(y)  # Keras' sum_over_batch_size: weighted sums over the batch's examples
    expected = (0.5 * ((_np_cross_entropy(first, y) + _np_cross_entropy(second, y)) * sample_weight).sum() / n
                + 0.4 * (_np_symmetric_kl(first, second) * sample_weight).sum() / n)
    assert loss == pytest.approx(expected, rel=1e-5)
    # Evaluation is one pass: Keras' loss alone.
    plain = float(model.compute_loss(x, y, first, sample_weight, training=False))
    assert plain == pytest.approx((_np_cross_entropy(first, y) * sample_weight).sum() / n, rel=1e-5)


def test_two_passes_inside_one_xla_step_draw_different_dropout_masks():
    model = _classifier(dropout=0.3)
    x, _, _ = _batch()

    @tf.function(jit_compile=True)
    def two_passes():
        return model(x, training=True), model(x, training=True)

    a, b = (keras.ops.convert_to_numpy(t) for t in two_passes())
    assert np.abs(a - b).max() > 1e-3


def _trainer(tmp_path, name, alpha, model=lambda: model_fn("mlm")):
    cfg = TrainerConfig(steps=3, batch_size=8, learning_rate=1e-2, log_every=1, eval_every=100, checkpoint_every=100,
                        strategy="default", r_drop_alpha=alpha)
    return Trainer(cfg, str(tmp_path / name), model, lambda b, c: toy_dataset("mlm", b, c), verbose=False)


def test_trainer_step_without_dropout_trains_exactly_as_plain_cross_entropy(tmp_path):
    # The toy MLM has no dropout: both passes agree, the KL and its gradient are zero, and the mean of two equal
    # losses is the loss, so three R-Drop steps land on the plain run's weights.
    plain, r_drop = _trainer(tmp_path, "plain", 0.0), _trainer(tmp_path, "r_drop", 5.0)
    for _ in range(3):
        plain.train_step()
        r_drop.train_step()
    for a, b in zip(plain.model.trainable_variables, r_drop.model.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    initial = _trainer(tmp_path, "fresh", 0.0).model.trainable_variables  # the same seed: the starting weights
    assert max(np.abs(a.numpy() - w.numpy()).max() for a, w in zip(plain.model.trainable_variables, initial)) > 1e-3


def test_trainer_with_dropout_adds_alpha_times_a_positive_kl(tmp_path):
    # With dropout the passes disagree. Every Trainer seeds Keras alike, so runs at different alphas draw the same
    # two masks: their first-step losses differ by exactly (alpha - alpha') times the same positive KL.
    def dropout_mlm():
        backbone = tfm.models.BertBackbone(vocabulary_size=64, num_layers=2, num_heads=2, hidden_dim=16,
                                           intermediate_dim=32, max_sequence_length=16, dropout=0.3)
        return tfm.tasks.MaskedLM(backbone)

    losses = {}
    for alpha in (1e-9, 25.0, 50.0):
        trainer = _trainer(tmp_path, f"a{alpha}", alpha, dropout_mlm)
        loss_sum, weight_sum, _, _ = trainer._forward_backward(*next(iter(toy_dataset("mlm", 8, None))))
        losses[alpha] = float(loss_sum / weight_sum)
    kl = (losses[50.0] - losses[1e-9]) / 50.0
    assert kl > 1e-4
    assert losses[25.0] - losses[1e-9] == pytest.approx(25.0 * kl, rel=1e-3)


def test_refused_where_it_does_not_apply():
    with pytest.raises(ValueError, match="regression head"):
        _classifier(0.1, num_classes=1, regression=True).compile(r_drop_alpha=1.0)
    backbone = tfm.models.BertBackbone(vocabulary_size=40, num_layers=1, num_heads=2, hidden_dim=8,
                                       intermediate_dim=16, max_sequence_length=8)
    with pytest.raises(ValueError, match="embeddings"):
        tfm.tasks.TextEmbedder(backbone).compile(r_drop_alpha=1.0)
    with pytest.raises(ConfigError, match="r_drop_alpha"):
        TrainerConfig(r_drop_alpha=-1.0)
    with pytest.raises(ConfigError, match="trainer.r_drop_alpha"):
        from_dict(ExperimentConfig, {"task": {"name": "text_classifier"}, "trainer": {"r_drop_alpha": 1.0},
                                    "distill": {"teacher": "runs/teacher"}})


def test_trainer_refuses_a_regression_head(tmp_path):
    with pytest.raises(InputError, match="trainer.r_drop_alpha=1.0: .*regression head"):
        _trainer(tmp_path, "regression", 1.0, lambda: _classifier(0.1, num_classes=1, regression=True))
