import importlib.util
from types import SimpleNamespace
from pathlib import Path

import pytest
import tensorflow as tf

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "benchmark_pipeline.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("benchmark_pipeline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_counts_every_real_token(wordpiece, english_dev):
    tool = _load_tool()
    # A fake clock read twice (start, stop): 2.5 s whatever the machine, so the rates are known numbers.
    tool.time = SimpleNamespace(perf_counter=iter([10.0, 12.5]).__next__)
    texts = english_dev[:150]
    result = tool.benchmark(tf.data.Dataset.from_tensor_slices(texts), wordpiece, sequence_length=16,
                            batch_size=64, epochs=2)
    # Independent count: the tokenizer's pieces per sentence + [CLS] + [SEP], truncated to 16, over two epochs.
    lengths = [len(row) for row in wordpiece.tokenize(texts).to_list()]
    tokens = 2 * sum(min(n + 2, 16) for n in lengths)
    assert any(n + 2 > 16 for n in lengths) and any(n + 2 < 16 for n in lengths)  # both truncation and padding
    assert (result["tokens"], result["seconds"]) == (tokens, 2.5)
    assert result["tokens_per_second"] == pytest.approx(tokens / 2.5)
    assert result["sequences_per_second"] == pytest.approx(300 / 2.5)  # 2 epochs x 150 sentences
