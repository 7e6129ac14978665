"""TFLite TextClassifier with the WordPiece tokenizer inside, run with tf-text's op registrar."""

import numpy as np
import pytest
import tensorflow as tf

import tfm
from tests.export import builders, conftest
from tfm.export import export_saved_model
from tfm.export.tflite import export_tflite, tflite_interpreter

L = builders.SEQUENCE_LENGTH


@pytest.fixture(scope="module")
def classifier():
    import keras

    from tests.conftest import TEST_SEED

    keras.utils.set_random_seed(TEST_SEED)  # a module fixture: not reset by the per-test seed fixture
    tokenizer = builders.wordpiece()
    # The pooler spread too, so an untrained model's answers vary between texts (checked below).
    backbone = builders.spread_head(builders.bert(tokenizer), "pooled_dense")
    task = builders.spread_head(tfm.tasks.TextClassifier(backbone, 3), "logits")
    return task, tokenizer


def test_tflite_matches_the_saved_model(classifier, tmp_path):
    task, tokenizer = classifier
    tflite_file = export_tflite(task, tokenizer, tmp_path / "lite", L, label_names=builders.LABEL_NAMES)
    saved = tf.saved_model.load(str(export_saved_model(task, tokenizer, tmp_path / "sm", L,
                                                       label_names=builders.LABEL_NAMES)))
    runner = tflite_interpreter(tflite_file).get_signature_runner()
    texts = conftest.TEXTS + [conftest.MIXED, conftest.HUGE]
    expected = saved.signatures["serving_default"](text=tf.constant(texts))
    for n, text in enumerate(texts):
        out = runner(text=np.array([text.encode("utf-8")], dtype=object))
        np.testing.assert_allclose(out["probabilities"][0], expected["probabilities"][n], atol=1e-5)
        assert out["label_name"][0] == expected["label_name"][n].numpy()
        assert out["label"][0] == expected["label"][n]
    assert np.ptp(expected["probabilities"].numpy(), axis=0).max() > 1e-3  # texts get different answers
    # Invalid UTF-8 reaches the tokenizer raw (no transcoding op in TFLite): still an answer.
    out = runner(text=np.array([conftest.INVALID], dtype=object))
    assert np.isfinite(out["probabilities"]).all() and out["probabilities"].sum() == pytest.approx(1.0, abs=1e-5)


def test_tflite_export_refuses_other_tasks_and_tokenizers(classifier, tmp_path):
    task, _ = classifier
    with pytest.raises(ValueError, match="WordPiece"):
        export_tflite(task, builders.sentencepiece(), tmp_path, L)
    with pytest.raises(ValueError, match="TextClassifier"):
        export_tflite(tfm.tasks.SpanQA(task.backbone), builders.wordpiece(), tmp_path, L)
