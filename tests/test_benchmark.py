"""tfm bench: JSON schema, analytical FLOPs, the markdown table, and equal work on both sides (no timings asserted)."""

import json

import numpy as np
import pytest

from tfm import benchmark
from tfm.benchmark import (CASES, Case, add_limits, flops_per_token, format_markdown, model_config, summarize,
                           training_batch)

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


def _matmul_training_flops(layers, hidden, intermediate, vocabulary, length, predicted, mlm=True):
    """Training FLOPs per token by listing every matmul `(m, k, n)` of one sequence: 2 FLOPs per multiply-add
    forward, 3x that for forward + backward. An independent route to `flops_per_token`'s closed form."""
    t, h = length, hidden
    block = [(t, h, h)] * 3 + [(t, h, h), (t, h, intermediate), (t, intermediate, h)]  # q, k, v, out, ffn
    block += [(t, h, t), (t, t, h)]  # scores Q K^T and the weighted sum of V, all heads together
    head = [(predicted, h, h), (predicted, h, vocabulary)] if mlm else [(t, h, vocabulary)]
    total = layers * sum(2 * m * k * n for m, k, n in block) + sum(2 * m * k * n for m, k, n in head)
    return 3 * total / t


def test_flops_per_token_of_a_tiny_config_counted_by_hand():
    # L=1, H=8, I=32, V=10, 4 tokens, 1 masked: per sequence 3472 multiply-adds (q,k,v 768; out 256; ffn 2048;
    # scores 128; values 128; MLM dense 64 + vocabulary 80) -> 6,944 FLOPs forward, 20,832 training, 5,208/token.
    config = {"vocabulary_size": 10, "num_layers": 1, "hidden_dim": 8, "intermediate_dim": 32}
    bert = Case("tiny_bert", "bert", "bert_tiny", batch_size=1, sequence_length=4)
    assert bert.predictions == 1
    assert flops_per_token(bert, config) == _matmul_training_flops(1, 8, 32, 10, 4, 1) == 5208
    # Causal LM: every token reaches the tied projection, no extra dense: 4 x 80 instead of 144.
    gpt = Case("tiny_gpt", "gpt", "gpt2_small", batch_size=1, sequence_length=4)
    assert flops_per_token(gpt, config) == _matmul_training_flops(1, 8, 32, 10, 4, 4, mlm=False) == 5472


def test_mfu_and_bandwidth_bound_on_literal_inputs():
    train = add_limits({"flops_per_token": 1e6, "tfm": 2000.0, "keras_hub": 1000.0, "tfm_path": "tfm_fit"},
                       peak_flops=1e10)
    assert (train["mfu_tfm"], train["mfu_keras_hub"]) == (pytest.approx(0.2), pytest.approx(0.1))
    # A bf16 tfm path is held against the bf16 peak (4x here); KerasHub's float32 path against float32's.
    bf16 = add_limits({"flops_per_token": 1e6, "tfm": 2000.0, "keras_hub": 1000.0, "tfm_path": "tfm_fit_bf16",
                       "peak_flops_bfloat16": 4e10}, peak_flops=1e10)
    assert (bf16["mfu_tfm"], bf16["mfu_keras_hub"]) == (pytest.approx(0.05), pytest.approx(0.1))
    # 20 GB/s reading 4 MB of weights per step for 2 rows: 10,000 tokens/s at most; tfm at 5,000 is half of it.
    gen = add_limits({"weight_bytes": 4e6, "batch_size": 2, "tfm": 5000.0, "keras_hub": 2500.0}, bandwidth=2e10)
    assert (gen["bandwidth_bound"], gen["tfm_fraction_of_bound"]) == (pytest.approx(1e4), pytest.approx(0.5))


def test_summary_medians_and_per_round_ratios_on_literal_rounds():
    from types import SimpleNamespace

    rounds = {"tfm_trainer": [10.0, 30.0, 20.0], "tfm_fit": [12.0, 40.0, 18.0], "keras_hub": [5.0, 10.0, 20.0],
              "keras_hub_bf16": [8.0, 8.0, 30.0]}
    sides = [SimpleNamespace(name=n, tokens_per_step=32.0, output_shape=[2, 3, 512]) for n in rounds]
    result = summarize(Case("c", "bert", "bert_tiny", 2, 16), rounds, sides)
    # Medians 20 / 18 / 10 / 8: the Trainer is tfm's faster path; KerasHub's float32 fit is its faster one.
    assert (result["tfm_path"], result["tfm"], result["tfm_fit"], result["keras_hub"]) == ("tfm_trainer", 20, 18, 10)
    # Per-round ratios 10/5, 30/10, 20/20 = 2, 3, 1 -> median 2 (the ratio of medians would also be 2: change a
    # round to tell them apart: against bf16, 10/8, 30/8, 20/30 -> median 1.25, medians' ratio 2.5).
    assert (result["ratio"], result["keras_hub_path"], result["ratio_vs_best_keras_hub"]) == (2.0, "keras_hub", 2.0)
    assert summarize(Case("c", "bert", "bert_tiny", 2, 16), {k: rounds[k] for k in ("tfm_trainer", "keras_hub_bf16")}
                     | {"keras_hub": rounds["keras_hub_bf16"]}, sides[:1])["ratio"] == 1.25


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


@pytest.mark.slow  # builds, compiles and times both libraries' models (about a minute on 2 cores)
def test_tiny_run_both_sides_do_the_same_work(tmp_path):
    import os
    import subprocess
    import sys

    # `tfm bench` as a user runs it, one process per case at once (each is mostly single-threaded compiling).
    cases = ["train_bert_mini", "generate_b1_int8"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = [subprocess.Popen([sys.executable, "-m", "tfm", "bench", "--tiny", "--cases", case, "--json",
                               str(tmp_path / f"{case}.json")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for case in cases]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    results = [json.loads((tmp_path / f"{case}.json").read_text())[0] for case in cases]
    for (out, _), result in zip(outputs, results):  # stdout: the same JSON, then the table
        assert json.loads(out[: out.index("\n\n| case")]) == [result]
        assert out.rstrip().endswith(format_markdown([result]))
    assert [r["name"] for r in results] == cases
    for r in results:
        assert REQUIRED <= set(r)
        assert r["tfm"] > 0 and r["keras_hub"] > 0
    train, generate = results
    sides = ["tfm_trainer", "tfm_fit", "keras_hub", "tfm_trainer_bf16", "tfm_fit_bf16", "keras_hub_bf16"]  # bf16: default
    assert set(train["rounds"]) == set(sides)
    assert all(len(v) == 1 for v in [*train["rounds"].values(), *generate["rounds"].values()])  # --tiny: 1 round
    # Batch 2 x 16 tokens per step, counted by the Trainer itself and fed to both fits; logits at 3 masked
    # positions over the 512-token toy vocabulary on every side.
    assert train["tokens_per_step"] == dict.fromkeys(sides, 32.0)
    assert train["output_shape"] == dict.fromkeys(sides, [2, 3, 512])
    # Tiny BERT-mini (L=2, H=32, I=64, V=512), 16 tokens, 3 predicted: counted matmul by matmul.
    assert train["flops_per_token"] == _matmul_training_flops(2, 32, 64, 512, 16, 3) == 130_176
    # 2 rows x 8 new tokens after a 16-token prompt, read back from each library's output mask.
    assert generate["tokens_per_step"] == {"tfm": 16.0, "keras_hub": 16.0}
    assert generate["output_shape"] == {"tfm": [2, 24], "keras_hub": [2, 24]}
    # tfm's int8 weight-only GPT (the same code path as float32 but for `quantize`), all weights but the position
    # table: int8 token rows 512x32 plus a float scale per row; per block int8 kernels 32x96, 32x32, 32x64, 64x32
    # with float32 scales and biases (96 + 32 + 64 + 32 each) and two LayerNorms; the final LayerNorm.
    assert generate["weights"] == "int8_weight_only"
    block = (32 * 96 + 32 * 32 + 32 * 64 + 64 * 32) + 4 * 2 * (96 + 32 + 64 + 32) + 4 * 2 * 64
    assert generate["weight_bytes"] == (512 * 32 + 4 * 512) + 2 * block + 4 * 64 == 39_680
