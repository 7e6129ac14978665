"""tfm bench: JSON schema, analytical FLOPs, the markdown table, and equal work on both sides (no timings asserted)."""

import json
import statistics

import numpy as np
import pytest

from tfm import benchmark
from tfm.benchmark import CASES, flops_per_token, format_markdown, model_config, training_batch

REQUIRED = {"name", "metric", "tfm", "keras_hub", "ratio"}


def test_flops_per_token_by_hand():
    # BERT-mini, seq 128, 20 masked positions: 6 x 4 layers x (4 h^2 + 2 h i) + 12 x 4 x h x 128 (attention)
    # + 6 x (V h + h^2) x 20/128 (MLM head, masked positions only).
    h, i, vocab = 256, 1024, 30522
    blocks = 6 * 4 * (4 * h * h + 2 * h * i)  # 18,874,368
    attention = 12 * 4 * h * 128  # 1,572,864
    head = 6 * (vocab * h + h * h) * 20 / 128  # 7,386,720
    case = CASES["train_bert_mini"]
    assert case.predictions == 20
    assert flops_per_token(case, model_config(case)) == blocks + attention + head == 27_833_952
    # GPT-2 small, seq 256: every token reaches the tied 50257-way projection (no extra dense).
    h, i, vocab = 768, 3072, 50257
    expected = 6 * 12 * (4 * h * h + 2 * h * i) + 12 * 12 * h * 256 + 6 * vocab * h
    case = CASES["train_gpt2_small"]
    assert flops_per_token(case, model_config(case)) == expected == 769_503_744


def test_flops_per_token_agrees_with_a_built_backbone():
    from tfm.models import BertBackbone
    from tfm.training.flops import training_flops_per_token

    case = benchmark.tiny_case(CASES["train_bert_mini"])
    config = model_config(case, tiny=True)
    backbone = BertBackbone(**config)
    assert flops_per_token(case, config) == training_flops_per_token(backbone, 16, predictions_per_token=3 / 16)


def test_training_batches_are_identical_inputs_for_both_libraries():
    case = CASES["train_bert_base"]
    x, y, w = training_batch(case, model_config(case))
    assert {k: v.shape for k, v in x.items()} == {
        "token_ids": (8, 128), "segment_ids": (8, 128), "padding_mask": (8, 128), "mask_positions": (8, 20)}
    assert all((np.diff(row) > 0).all() for row in x["mask_positions"])  # distinct, sorted
    assert y.shape == w.shape == (8, 20) and w.sum() == 160
    x2, y2, _ = training_batch(case, model_config(case))  # seeded: the same batch every time
    np.testing.assert_array_equal(x["token_ids"], x2["token_ids"])
    x, y, w = training_batch(CASES["train_gpt2_small"], model_config(CASES["train_gpt2_small"]))
    assert x["token_ids"].shape == y.shape == w.shape == (2, 256)
    np.testing.assert_array_equal(y[:, :-1], x["token_ids"][:, 1:])  # next-token labels


def test_markdown_table():
    results = [
        {"name": "train_bert_mini", "metric": "train tokens/s", "tfm": 3210.4, "keras_hub": 2325.0, "ratio": 1.381,
         "tfm_path": "tfm_trainer", "tfm_trainer": 3210.4, "tfm_fit": 3100.2, "mfu_tfm": 0.2345,
         "mfu_keras_hub": 0.1698, "peak_flops": 7.61e10, "machine": "2-core X CPU", "dtype": "float32"},
        {"name": "generate_b1", "metric": "generated tokens/s", "tfm": 39.04, "keras_hub": 17.1, "ratio": 2.283,
         "bandwidth": 2.35e10, "bandwidth_bound": 47.25, "tfm_fraction_of_bound": 0.826},
    ]
    assert format_markdown(results) == "\n".join([
        "| case | metric | tfm | KerasHub | tfm / KerasHub | MFU tfm | MFU KerasHub | notes |",
        "|---|---|---:|---:|---:|---:|---:|---|",
        "| train_bert_mini | train tokens/s | 3,210 | 2,325 | 1.38× | 23.4% | 17.0% | Trainer 3,210 · fit 3,100 |",
        "| generate_b1 | generated tokens/s | 39.0 | 17.1 | 2.28× | – | – | bandwidth bound 47.2 (tfm at 83%) |",
        "",
        "2-core X CPU, float32; measured matmul peak 76.1 GFLOP/s; measured read bandwidth 23.5 GB/s.",
    ])
    results[0].update(tfm_fit_bf16=4012.0, keras_hub_bf16=3300.0, ratio_vs_best_keras_hub=1.215,
                      peak_flops_bfloat16=1.5e11)
    assert format_markdown(results).splitlines()[2].endswith(
        "| Trainer 3,210 · fit 3,100 · fit bf16 4,012; KerasHub fit bf16 3,300; tfm / faster KerasHub 1.22× |")
    assert format_markdown(results).splitlines()[-1] == (
        "2-core X CPU, float32; measured matmul peak 76.1 GFLOP/s; bf16 matmul peak 150.0 GFLOP/s "
        "(MFU of a bf16 path is against it); measured read bandwidth 23.5 GB/s.")


def test_unknown_case_is_a_usage_error(capsys):
    from tfm.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--cases", "train_bert_mini,train_t5"])
    assert exit_info.value.code == 2
    assert "train_t5" in capsys.readouterr().err
    with pytest.raises(ValueError, match="valid cases"):
        benchmark.run_benchmark(["nope"])


def test_tiny_run_both_sides_do_the_same_work(tmp_path, capsys):
    from tfm.cli import main

    path = tmp_path / "bench.json"
    assert main(["bench", "--tiny", "--cases", "train_bert_mini,generate_b1", "--json", str(path)]) == 0
    results = json.loads(path.read_text())
    assert [r["name"] for r in results] == ["train_bert_mini", "generate_b1"]
    for r in results:
        assert REQUIRED <= set(r)
        assert r["tfm"] > 0 and r["keras_hub"] > 0
        best = r.get("tfm_path", "tfm")
        assert r["ratio"] == statistics.median(t / k for t, k in zip(r["rounds"][best], r["rounds"]["keras_hub"]))
        assert r["tfm"] == statistics.median(r["rounds"][best])
    train, generate = results
    # Batch 2 x 16 tokens per step, counted by the Trainer itself and fed to both fits; logits at 3 masked
    # positions over the 512-token toy vocabulary on every side.
    sides = ["tfm_trainer", "tfm_fit", "keras_hub", "tfm_fit_bf16", "keras_hub_bf16"]  # bf16 fits: on by default
    assert train["tokens_per_step"] == dict.fromkeys(sides, 32.0)
    assert train["output_shape"] == dict.fromkeys(sides, [2, 3, 512])
    peak = train["peak_flops_bfloat16"] if train["tfm_path"].endswith("_bf16") else train["peak_flops"]
    assert train["mfu_tfm"] == pytest.approx(train["tfm"] * train["flops_per_token"] / peak)
    their_best = max(["keras_hub", "keras_hub_bf16"], key=lambda n: statistics.median(train["rounds"][n]))
    assert train["keras_hub_path"] == their_best and train["ratio_vs_best_keras_hub"] == statistics.median(
        t / k for t, k in zip(train["rounds"][train["tfm_path"]], train["rounds"][their_best]))
    # 2 rows x 8 new tokens after a 16-token prompt, read back from each library's output mask.
    assert generate["tokens_per_step"] == {"tfm": 16.0, "keras_hub": 16.0}
    assert generate["output_shape"] == {"tfm": [2, 24], "keras_hub": [2, 24]}
    assert generate["bandwidth_bound"] == pytest.approx(generate["bandwidth"] * 2 / generate["weight_bytes"])
    out = capsys.readouterr().out
    assert json.loads(out[: out.index("\n\n| case")]) == results  # stdout: the same JSON, then the table
    assert out.rstrip().endswith(format_markdown(results))
