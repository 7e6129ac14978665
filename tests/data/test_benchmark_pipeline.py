import importlib.util
from pathlib import Path

import pytest
import tensorflow as tf

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "benchmark_pipeline.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("benchmark_pipeline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_counts_every_real_token(wordpiece, sst2_dev):
    tool = _load_tool()
    result = tool.benchmark(tf.data.Dataset.from_tensor_slices(sst2_dev), wordpiece, sequence_length=32,
                            batch_size=100, epochs=2)
    # Independent count: pieces per sentence + [CLS] + [SEP], truncated to 32, over two epochs.
    lengths = [len(row) for row in wordpiece.tokenize(sst2_dev).to_list()]
    assert result["tokens"] == 2 * sum(min(n + 2, 32) for n in lengths)
    assert result["tokens_per_second"] == result["tokens"] / result["seconds"]
    assert result["sequences_per_second"] * result["seconds"] == pytest.approx(2 * len(sst2_dev))
