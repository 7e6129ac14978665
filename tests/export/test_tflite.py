"""TFLite TextClassifier with the WordPiece tokenizer inside, run with tf-text's op registrar."""

import json

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


def test_dynamic_range_int8_tflite_is_smaller_and_answers_like_the_float_one(classifier, tmp_path):
    task, tokenizer = classifier
    float_file = export_tflite(task, tokenizer, tmp_path / "float", L, label_names=builders.LABEL_NAMES)
    int8_file = export_tflite(task, tokenizer, tmp_path / "int8", L, label_names=builders.LABEL_NAMES, quantize="int8")
    # The float32 kernels of the QKV, output and feed-forward projections (3,072 + 1,024 + 2 x 2,048 values) and
    # the embeddings become int8: 3 bytes saved per value, less the per-channel scales. Measured: 37,276 bytes
    # saved (the file is mostly the tokenizer's tables); the four projection kernels alone are 24,576.
    saved = float_file.stat().st_size - int8_file.stat().st_size
    assert saved >= 3 * (3072 + 1024 + 2 * 2048)
    assert json.loads((tmp_path / "int8" / "tfm_export.json").read_text())["quantization"] == "int8_dynamic_range"
    float_runner = tflite_interpreter(float_file).get_signature_runner()
    int8_runner = tflite_interpreter(int8_file).get_signature_runner()
    for text in conftest.TEXTS:
        want = float_runner(text=np.array([text.encode("utf-8")], dtype=object))["probabilities"][0]
        got = int8_runner(text=np.array([text.encode("utf-8")], dtype=object))["probabilities"][0]
        # Measured (Intel Xeon): at most 0.006 apart on these texts.
        np.testing.assert_allclose(got, want, atol=0.03)
        if np.sort(want)[-1] - np.sort(want)[-2] > 0.06:  # a clear float answer stays the answer
            assert np.argmax(got) == np.argmax(want)
    with pytest.raises(ValueError, match="dynamic range"):
        export_tflite(task, tokenizer, tmp_path / "x", L, quantize="int8_weight_only")
