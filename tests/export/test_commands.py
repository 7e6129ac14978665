"""`tfm export RUN_DIR EXPORT_DIR` on a run dir read by `tfm.training.experiment.load_run`, and `tfm predict`."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tests.export import builders, references
from tfm.cli import main
from tfm.training.config import DataConfig, ExperimentConfig, ModelConfig, TaskConfig, save_config
from tfm.training.experiment import LABELS_FILENAME, TOKENIZER_DIR, build_task

L = builders.SEQUENCE_LENGTH


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A text-classifier run dir as `tfm train` leaves it: config, tokenizer, labels, a checkpoint."""
    run = tmp_path_factory.mktemp("run")
    cfg = ExperimentConfig(
        output_dir=str(run), task=TaskConfig(name="text_classifier", num_classes=3),
        model=ModelConfig(num_layers=1, num_heads=2, hidden_dim=32, intermediate_dim=64, max_sequence_length=64),
        data=DataConfig(sequence_length=L))
    save_config(cfg, str(run))
    tokenizer = builders.wordpiece()
    tokenizer.save(run / TOKENIZER_DIR)
    (run / LABELS_FILENAME).write_text(json.dumps({"label_names": builders.LABEL_NAMES}), encoding="utf-8")
    task = builders.spread_head(build_task(cfg, tokenizer, builders.LABEL_NAMES, initialize=False), "logits")
    tf.train.Checkpoint(model=task).save(str(run / "checkpoints" / "ckpt"))
    return run, task, tokenizer


def _json_lines(text):
    return [json.loads(line) for line in text.splitlines()]


def test_export_and_predict_a_run(run_dir, tmp_path, capsys):
    run, task, tokenizer = run_dir
    assert main(["export", str(run), str(tmp_path / "sm")]) == 0
    assert (tmp_path / "sm" / "1" / "saved_model.pb").exists()
    texts = ["a gorgeous, witty film", "Paris 北京", ""]
    (tmp_path / "inputs.txt").write_text("a bad script\n\nMaria in Geneva\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "sm"), *texts, "--file", str(tmp_path / "inputs.txt"), "--json"]) == 0
    rows = _json_lines(capsys.readouterr().out)
    inputs = texts + ["a bad script", "Maria in Geneva"]  # blank file lines are skipped
    assert [r["input"] for r in rows] == inputs
    expected = references.classify(task, tokenizer, inputs, L)
    np.testing.assert_allclose([r["probabilities"] for r in rows], expected, atol=1e-5)
    assert [r["label_name"] for r in rows] == [builders.LABEL_NAMES[i] for i in expected.argmax(-1)]
    # Plain output: one "label<TAB>probability" line per input.
    assert main(["predict", str(tmp_path / "sm"), texts[0]]) == 0
    label, probability = capsys.readouterr().out.strip().split("\t")
    assert (label, float(probability)) == (rows[0]["label_name"], pytest.approx(max(rows[0]["probabilities"]),
                                                                                  abs=1e-4))
    assert main(["predict", str(tmp_path / "sm"), "x", "--signature", "embed", "--json"]) == 0
    assert len(_json_lines(capsys.readouterr().out)[0]["embedding"]) == 32


def test_export_quantized_from_a_run(run_dir, tmp_path, capsys):
    """`tfm export --quantize`: int8 variables in the SavedModel, answers within int8 rounding of the float model."""
    run, task, tokenizer = run_dir
    assert main(["export", str(run), str(tmp_path / "q"), "--quantize", "int8"]) == 0
    dtypes = tf.train.load_checkpoint(str(tmp_path / "q" / "1" / "variables" / "variables")).get_variable_to_dtype_map()
    # 4 projections of the one block, the pooler and the token embedding; the classifier head stays float.
    assert sum(dtype == tf.int8 for dtype in dtypes.values()) == 6
    loaded = tf.saved_model.load(str(tmp_path / "q" / "1"))
    texts = ["a gorgeous, witty film", "Paris 北京", "Maria in Geneva"]
    probabilities = loaded.signatures["serving_default"](text=tf.constant(texts))["probabilities"].numpy()
    expected = references.classify(task, tokenizer, texts, L)
    assert 0 < np.abs(probabilities - expected).max() < 0.05
    # bfloat16 weights: every backbone variable in bfloat16, the classifier head float32.
    assert main(["export", str(run), str(tmp_path / "bf16"), "--quantize", "bfloat16"]) == 0
    dtypes = tf.train.load_checkpoint(str(tmp_path / "bf16" / "1" / "variables" / "variables")).get_variable_to_dtype_map()
    assert sum(d == tf.float32 for d in dtypes.values()) == 2  # the logits layer's kernel and bias
    assert sum(d == tf.bfloat16 for d in dtypes.values()) == len(task.backbone.weights)
    loaded = tf.saved_model.load(str(tmp_path / "bf16" / "1"))
    probabilities = loaded.signatures["serving_default"](text=tf.constant(texts))["probabilities"].numpy()
    assert 0 < np.abs(probabilities - expected).max() < 0.05
    capsys.readouterr()
    assert main(["export", str(run), str(tmp_path / "q_hf"), "--format", "hf", "--quantize", "int8"]) == 2
    assert "--quantize applies to SavedModel and TFLite exports" in capsys.readouterr().err


def test_export_tflite_from_a_run_and_predict_with_it(run_dir, tmp_path, capsys):
    run, task, tokenizer = run_dir
    assert main(["export", str(run), str(tmp_path / "lite"), "--format", "tflite"]) == 0
    assert (tmp_path / "lite" / "model.tflite").exists()
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "lite"), "a witty film", "Paris", "--json"]) == 0
    rows = _json_lines(capsys.readouterr().out)
    expected = references.classify(task, tokenizer, ["a witty film", "Paris"], L)
    np.testing.assert_allclose([r["probabilities"] for r in rows], expected, atol=1e-5)
    # TFLite's dynamic-range int8: a smaller file, answers within int8 rounding.
    assert main(["export", str(run), str(tmp_path / "lite8"), "--format", "tflite", "--quantize", "int8"]) == 0
    assert (tmp_path / "lite8" / "model.tflite").stat().st_size < (tmp_path / "lite" / "model.tflite").stat().st_size
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "lite8"), "a witty film", "Paris", "--json"]) == 0
    quantized = [r["probabilities"] for r in _json_lines(capsys.readouterr().out)]
    assert 0 < np.abs(np.array(quantized) - expected).max() < 0.05
    assert main(["export", str(run), str(tmp_path / "x"), "--format", "tflite", "--quantize", "int8_weight_only"]) == 2
    assert "there is no int8_weight_only TFLite export" in capsys.readouterr().err


def test_cli_errors_are_one_line(run_dir, tmp_path, capsys):
    run, _, _ = run_dir
    assert main(["predict", str(tmp_path)]) == 2
    assert "give texts" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "nothing"), "x"]) == 2
    assert "no saved_model.pb" in capsys.readouterr().err
    main(["export", str(run), str(tmp_path / "sm"), "--version", "3"])
    assert main(["export", str(run), str(tmp_path / "sm"), "--version", "3"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "sm"), "x", "--temperature", "0.5"]) == 2
    assert "takes no ['temperature']" in capsys.readouterr().err
