"""`tfm export RUN_DIR EXPORT_DIR` on a run dir read by `tfm.training.experiment.load_run`, and `tfm predict`."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from tests.export import builders, conftest, references
from tfm.cli import main
from tfm.export.latency import measure_latency
from tfm.export.predict import Predictor, format_prediction
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


def test_export_tflite_from_a_run_and_predict_with_it(run_dir, tmp_path, capsys):
    run, task, tokenizer = run_dir
    assert main(["export", str(run), str(tmp_path / "lite"), "--format", "tflite"]) == 0
    assert (tmp_path / "lite" / "model.tflite").exists()
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "lite"), "a witty film", "Paris", "--json"]) == 0
    rows = _json_lines(capsys.readouterr().out)
    expected = references.classify(task, tokenizer, ["a witty film", "Paris"], L)
    np.testing.assert_allclose([r["probabilities"] for r in rows], expected, atol=1e-5)


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


def test_predictor_reads_every_task_export(served):
    """`Predictor` (behind `tfm predict`) gives the standalone process's answers, trimmed of padding."""
    qa = Predictor(served.dirs["qa"])
    rows = [f"{q}\t{c}" for q, c in zip(conftest.QUESTIONS, conftest.CONTEXTS)]
    got = qa.predict(rows)
    assert [g["answer"] for g in got] == [a.decode() for a in served.answer("qa")["answer"]]
    with pytest.raises(ValueError, match=r"input 1: expected 2 tab-separated fields \(question, context\)"):
        qa.predict(["no tab"])
    assert qa.predict(["just text"], signature="embed")[0]["embedding"].__len__() == 32

    tags = Predictor(served.dirs["tagger"]).predict(conftest.TEXTS[:2])
    count = served.answer("tagger")["num_entities"][0]
    assert len(tags[0]["entity_text"]) == count and len(tags[0]["entity_score"]) == count
    line = format_prediction("token_classifier", tags[0])
    assert line.count("[") == count and tags[0]["entity_text"][0] in line

    mc = Predictor(served.dirs["mc"]).predict(["\t".join([c, *choices])
                                               for c, choices in zip(conftest.MC_CONTEXTS, conftest.MC_CHOICES)])
    assert [m["choice"] for m in mc] == served.answer("mc")["choice"].tolist()

    masks = Predictor(served.dirs["mlm"]).predict(conftest.MASKED[:3])
    assert [len(m["tokens"]) for m in masks] == [1, 2, 0] and all(len(t) == 3 for t in masks[1]["tokens"])
    assert format_prediction("masked_lm", masks[2]) == "(no mask token)"

    clm = Predictor(served.dirs["clm"])
    greedy = clm.predict(conftest.PROMPTS)
    expected = served.answer("clm")
    assert [g["num_tokens"] for g in greedy] == expected["num_tokens"].tolist()
    assert [g["token_ids"] for g in greedy] == [r[:n].tolist() for r, n in zip(expected["token_ids"],
                                                                               expected["num_tokens"])]
    sampled = clm.predict(conftest.PROMPTS, temperature=1.0, top_k=1, max_new_tokens=3)
    assert [s["token_ids"] for s in sampled] == [g["token_ids"][:3] for g in greedy]


def test_measure_latency_times_every_request(served, monkeypatch):
    # A fake clock: timed call i takes i + 1 ms, so the statistics are known numbers, and every read is counted.
    reads = []

    def perf_counter():
        reads.append(None)
        call, stop = divmod(len(reads) - 1, 2)
        return 10.0 * call + stop * (call + 1) / 1000.0

    monkeypatch.setattr("tfm.export.latency.time", SimpleNamespace(perf_counter=perf_counter))
    result = measure_latency(served.dirs["classifier"], conftest.TEXTS, iterations=7, warmup=1)
    assert len(reads) == 2 * 7  # a start and a stop around each of the 7 timed calls, none for the warm-up
    # Times 1..7 ms: median 4, mean 4, 99th percentile (linear) 6 + 0.94 x (7 - 6).
    assert result == {"p50_ms": pytest.approx(4.0), "p99_ms": pytest.approx(6.94), "mean_ms": pytest.approx(4.0),
                      "iterations": 7, "format": "saved_model"}
