"""tools/profile_step.py: the trace parser counts TF's host op events, and names their class and owner."""

import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import profile_step  # noqa: E402


def test_op_times_counts_every_executed_op_of_a_traced_function(tmp_path):
    a = tf.constant(np.ones((64, 64), "float32"))

    @tf.function  # no XLA: the ops stay visible one by one
    def step(x):
        return tf.nn.softmax(tf.matmul(x, x) * 0.5)

    step(a)
    tf.profiler.experimental.start(str(tmp_path))
    for _ in range(3):
        step(a).numpy()
    tf.profiler.experimental.stop()
    totals, counts, scopes = profile_step.op_times(str(tmp_path))
    matmul = [op for op in counts if "MatMul" in op]
    assert len(matmul) == 1 and counts[matmul[0]] == 3 and totals[matmul[0]] > 0  # one matmul a call
    assert profile_step.op_class(matmul[0]) == "matmul"
    assert sum(counts[op] for op in counts if "Softmax" in op) == 3
    assert not any("::" in op or op.startswith("__") for op in counts)  # runtime scopes are not ops
    assert sum(scopes.values()) == pytest.approx(sum(totals.values()), rel=1e-9)  # the same events, regrouped


def test_owner_scopes_of_real_op_names():
    scope = profile_step.scope_of
    assert scope("StatefulPartitionedCall/pre_reduced_adam_w/mul_63") == "optimizer update"
    assert scope("StatefulPartitionedCall/gradient_tape/masked_lm_1/bert_backbone_1/transformer_layer_3/"
                 "self_attention/MatMul") == "backward: transformer_layer"
    assert scope("StatefulPartitionedCall/masked_lm_1/masked_lm_head_1/dense/MatMul") == "masked_lm_head"
    assert scope("StatefulPartitionedCall/truediv_17") == "other (loss, casts, gradient sums)"
    assert profile_step.op_class("Cast") == "cast" and profile_step.op_class("_MklBatchMatMulV2") == "matmul"


@pytest.mark.parametrize("case", ["generate_b8_int8", "generate_b8_w8a8"])
def test_a_generation_case_profiles_the_int8_loop_outside_xla(case, capsys):
    # float32: the op takes float32 inputs (tests/compression asserts it builds here). Weight-only and W8A8 alike.
    from tfm import kernels

    if case.endswith("w8a8") and not kernels.byte_dot_products():
        pytest.skip("W8A8 decodes in XLA on a CPU without AVX512-VNNI")
    profile_step.main(["--case", case, "--tiny", "--precision", "float32", "--steps", "1", "--top", "40"])
    out = capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in out.splitlines() if line.startswith("| ")}
    # Toy GPT: 2 layers of 4 products plus the LM head = 9 op calls per loop step, 7 steps for 8 new tokens, and
    # one LM head call for the first token (from the prompt pass's last position; the prompt pass itself is an XLA
    # cluster, without the op): 64 calls over 8 positions.
    assert float(rows["TfmInt8MatMul"][-1].strip(" |")) == pytest.approx(64 / 8)
    assert f"{case}, outside" in out
