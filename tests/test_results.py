"""`results/`: the small artifacts of the full runs the README quotes, and the README agrees with them."""

import json
import sys
from pathlib import Path

import pytest

from tfm.training.config import load_config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
from record_result import record_result  # noqa: E402

RESULTS = sorted(p for p in (REPO / "results").glob("*") if p.is_dir())


def _quoted(value):
    """The ways the README may write a metric, to at least 4 significant digits: 0.1370, 165.4, or a fraction
    as a percentage, 80.73."""
    out = set()
    for v in (value, 100 * value) if abs(value) < 1 else (value,):
        for decimals in range(5):
            text = f"{v:.{decimals}f}"
            if len(text.replace("-", "").replace(".", "").lstrip("0")) >= 4:
                out.add(text)
    return out


def test_record_result_copies_the_small_artifacts_only(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "ckpt-1.index").write_bytes(b"x")
    (run / "config.yaml").write_text("output_dir: runs/x\n")
    (run / "metrics.json").write_text(json.dumps({"step": 3, "accuracy": 0.75}))
    (run / "eval_report_dev.json").write_text("{}")
    target = record_result(run, "x", tmp_path / "results", note="2-core CPU", claims=["accuracy"])
    assert sorted(p.name for p in target.iterdir()) == ["config.yaml", "eval_report_dev.json", "metrics.json",
                                                        "source.json"]
    source = json.loads((target / "source.json").read_text())
    assert source["claims"] == {"accuracy": 0.75} and source["note"] == "2-core CPU"
    with pytest.raises(KeyError, match="has no \\['f1'\\]"):
        record_result(run, "x", tmp_path / "results", claims=["f1"])
    with pytest.raises(FileNotFoundError, match="no config.yaml"):
        record_result(tmp_path / "empty", "y", tmp_path / "results")


@pytest.mark.parametrize("result", RESULTS, ids=[p.name for p in RESULTS])
def test_each_recorded_run_is_loadable_and_quoted_by_the_readme(result):
    cfg = load_config(str(result / "config.yaml"))  # the resolved config still parses under today's schema
    metrics = json.loads((result / "metrics.json").read_text())
    source = json.loads((result / "source.json").read_text())
    assert metrics["step"] == cfg.trainer.steps  # a finished run
    assert source["claims"], f"{result.name}: source.json names no claimed metric"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for key, value in source["claims"].items():
        assert metrics[key] == value
        assert any(q in readme for q in _quoted(value)), f"README does not quote {result.name} {key} = {value}"
