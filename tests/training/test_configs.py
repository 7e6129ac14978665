"""Every shipped config loads strictly and builds its model; the CLI reports config errors by key."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tfm.training.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
TFM = os.path.join(os.path.dirname(sys.executable), "tfm")


def test_configs_exist():
    assert {"bert_tiny_mlm.yaml", "bert_base_mlm.yaml", "gpt_tiny_clm.yaml", "gpt2_small_clm.yaml", "sst2.yaml",
            "conll2003.yaml", "chnsenticorp.yaml", "zh_ner.yaml"} <= {p.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_opens_with_a_command_comment(path):
    text = path.read_text()
    assert text.startswith("#") and "Command:" in text.split("\n\n")[0]
    cfg = load_config(path)
    assert cfg.trainer.steps > 0 and cfg.data.train


def test_cli_names_the_unknown_key(tmp_path):
    result = subprocess.run([TFM, "train", str(CONFIGS[0]), "--set", "trainer.stepz=3"], capture_output=True, text=True)
    assert result.returncode != 0
    assert "trainer.stepz is not a valid key (did you mean 'steps'?)" in result.stderr
