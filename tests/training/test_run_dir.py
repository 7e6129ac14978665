"""A run dir works from any working directory, and scoring a language-model run needs only its eval text."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.helpers import shared_sentences
from tfm.training.config import load_config

TFM = os.path.join(os.path.dirname(sys.executable), "tfm")


@pytest.mark.slow
def test_evaluate_and_export_a_run_from_another_directory_without_its_training_data(tmp_path):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "configs").mkdir()
    (project / "data" / "train.txt").write_text("\n".join(shared_sentences("sst2", "train", 300)) + "\n")
    (project / "data" / "eval.txt").write_text("\n".join(shared_sentences("sst2", "dev", 40)) + "\n")
    # Paths relative to the config file; the run goes where tfm runs (the project dir here).
    (project / "configs" / "mlm.yaml").write_text(yaml.safe_dump({
        "output_dir": "runs/mlm", "task": {"name": "masked_lm", "max_predictions": 6},
        "model": {"num_layers": 1, "num_heads": 2, "hidden_dim": 16, "intermediate_dim": 32},
        "data": {"train": ["../data/train.txt"], "eval": ["../data/eval.txt"], "format": "text",
                 "sequence_length": 24, "tokenizer": {"vocabulary_size": 200}},
        "trainer": {"steps": 4, "batch_size": 8, "eval_every": 4, "checkpoint_every": 4, "peak_flops": 1e11}}))
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    train = subprocess.run([TFM, "train", "configs/mlm.yaml"], cwd=project, capture_output=True, text=True, env=env,
                           timeout=600)
    assert train.returncode == 0, train.stderr
    run = project / "runs" / "mlm"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["train"] == ["../../data/train.txt"] and saved["trainer"]["peak_flops"] == 1e11
    trained = json.loads((run / "metrics.json").read_text())

    (project / "data" / "train.txt").unlink()  # evaluation must not read the training text
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run([TFM, "evaluate", str(run)], cwd=elsewhere, capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads((run / "eval_report_dev.json").read_text())
    assert report["loss"] == pytest.approx(trained["loss"], rel=1e-5)  # the Trainer's last eval, same checkpoint
    assert report["data"] == [str(project / "data" / "eval.txt")]
    exported = subprocess.run([TFM, "export", str(run), str(elsewhere / "sm")], cwd=elsewhere, capture_output=True,
                              text=True, env=env, timeout=600)
    assert exported.returncode == 0, exported.stderr
    assert (elsewhere / "sm" / "1" / "saved_model.pb").is_file()
    # Moved together with its data (the relative layout kept), the run dir still reads.
    shutil.move(str(project), str(tmp_path / "moved"))
    moved = load_config(tmp_path / "moved" / "runs" / "mlm")
    assert moved.data.eval == [str(tmp_path / "moved" / "data" / "eval.txt")]
