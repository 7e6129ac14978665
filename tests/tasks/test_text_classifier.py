import keras
import numpy as np
import pytest

import tfm
from tests.data_paths import shared_data
from tests.helpers import TINY_BERT, run_task_test
from tfm.data import WordPieceTokenizer, classification_dataset, read_classification
from tfm.models import BertBackbone
from tfm.tasks import TextClassifier


def _inputs(batch=4, length=10):
    rng = np.random.default_rng(0)
    segments = np.zeros((batch, length), "int32")
    segments[:, 6:] = 1  # a packed pair: second text in segment 1
    return {"token_ids": rng.integers(5, 30, (batch, length)).astype("int32"), "segment_ids": segments,
            "padding_mask": np.ones((batch, length), "int32")}


@pytest.mark.parametrize("num_classes,regression", [(3, False), (1, True), (2, True)])
def test_task_structure_save_load_mixed_precision_and_fit(num_classes, regression):
    targets = np.linspace(-1.0, 2.0, 4 * num_classes, dtype="float32").reshape(4, num_classes)
    # Regression targets are (B,) for one value (as STS-B's), (B, C) for more.
    labels = (targets[:, 0] if num_classes == 1 else targets) if regression else np.array([0, 2, 1, 2], "int32")
    model = run_task_test(
        TextClassifier, {"backbone": BertBackbone(**TINY_BERT), "num_classes": num_classes, "regression": regression},
        _inputs(), labels, (4, num_classes),
        expected_head_params=8 * num_classes + num_classes,  # dense(hidden -> C)
        fit_metrics={"mae": "mae"} if regression else {"accuracy": "accuracy"})
    assert (model.num_classes, model.dropout, model.regression) == (num_classes, 0.1, regression)


def test_regression_sums_mse_mae_pearson():
    model = TextClassifier(BertBackbone(**TINY_BERT), num_classes=1, regression=True)
    y = np.array([1.0, 2.0, 3.0, -1.0], "float32")
    pred = np.array([[1.5], [2.0], [2.0], [-1.0]], "float32")
    loss, weight = model.loss_sums(y, pred, sample_weight=np.array([1.0, 1.0, 2.0, 0.0]))
    assert float(loss) == pytest.approx(0.25 + 0.0 + 2 * 1.0) and float(weight) == 4.0  # negatives are targets
    metrics = model.metrics_from_sums(model.metric_sums(y, pred))
    assert metrics["loss"] == pytest.approx(1.25 / 4) and metrics["mae"] == pytest.approx(1.5 / 4)
    assert metrics["pearson"] == pytest.approx(np.corrcoef(y, pred[:, 0])[0, 1], rel=1e-5)


@pytest.mark.slow
def test_regression_fits_toy_target():
    # Target: the fraction of the 8 tokens that are token 7 (the [CLS] position must learn to count).
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 10, (512, 9)).astype("int32")
    ids[:, 0] = 2
    target = (ids[:, 1:] == 7).mean(-1).astype("float32")
    x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids)}
    # Width 64 and a rate decaying to zero: at width 32 with a constant 3e-3, one init in five (TFM_TEST_SEED=1)
    # stalled at r 0.64 however long it trained; this recipe reached MSE <= 0.0006 x variance on all five.
    backbone = BertBackbone(vocabulary_size=12, num_layers=1, num_heads=2, hidden_dim=64, intermediate_dim=128,
                            max_sequence_length=9, dropout=0.0)
    model = TextClassifier(backbone, num_classes=1, dropout=0.0, regression=True)
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(3e-3, 20 * 14)),
                  jit_compile=False)
    model.fit({k: v[:448] for k, v in x.items()}, target[:448], batch_size=32, epochs=20, verbose=0)  # 280 steps
    held = {k: v[448:] for k, v in x.items()}
    sums = model.metric_sums(target[448:], model.predict(held, verbose=0))
    metrics = model.metrics_from_sums(sums)
    variance = float(target[448:].var())  # MSE of always predicting the mean
    print(f"regression toy held-out MSE {metrics['loss']:.5f} (variance {variance:.5f}), r {metrics['pearson']:.3f}")
    assert metrics["loss"] < 0.05 * variance and metrics["pearson"] > 0.97


@pytest.mark.slow
def test_sst2_slice_learned_above_chance():
    data = read_classification(shared_data("sst2", "train.tsv"))
    train, held = data.dataset.take(4000).cache(), data.dataset.skip(4000).take(500).cache()
    tokenizer = WordPieceTokenizer.train(train.map(lambda r: r["text"]), vocabulary_size=2000)
    backbone = BertBackbone(vocabulary_size=tokenizer.vocabulary_size, num_layers=2, num_heads=2, hidden_dim=32,
                            intermediate_dim=64, max_sequence_length=48)
    model = TextClassifier(backbone, num_classes=2)
    # From random init a tiny model needs a far larger step than fine-tuning's 5e-5; no XLA: compiling
    # costs more than it saves over 300 CPU steps.
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.01), jit_compile=False)
    model.fit(classification_dataset(train, tokenizer, 48, batch_size=32, shuffle=True, seed=0).repeat(),
              steps_per_epoch=300, epochs=1, verbose=0)
    held_ds = classification_dataset(held, tokenizer, 48, batch_size=100)
    labels = np.concatenate([y for _, y in held_ds.as_numpy_iterator()])
    predicted = model.predict(held_ds, verbose=0).argmax(-1)
    accuracy = tfm.metrics.accuracy(labels, predicted)
    majority = max(labels.mean(), 1 - labels.mean())
    print(f"SST-2 held-out accuracy {accuracy:.3f} (majority {majority:.3f})")
    # Measured 0.752, and 0.734 / 0.744 with TFM_TEST_SEED=1 / 2 (2-core AMD EPYC): the floor leaves 0.034
    # below the lowest for other CPUs' rounding.
    assert majority < 0.6 and accuracy >= 0.70

