"""`trainer.mixed_precision: auto` / `trainer.jit_compile: auto`: bf16 without XLA on a CPU with bf16 matrix units,
float32 XLA elsewhere; detection from /proc/cpuinfo text, overridden by TFM_BF16_UNITS (the suite sets 0)."""

import keras
import pytest

from tests.training.toy_training import model_fn, toy_dataset
from tfm.training import precision
from tfm.training.config import TrainerConfig
from tfm.training.trainer import Trainer

# Abridged /proc/cpuinfo of the CPUs named in the module docstring (flags cut to the relevant ones).
SAPPHIRE_RAPIDS = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: avx512f avx512_bf16 amx_bf16 amx_tile\n"
ZEN4 = "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: avx2 avx512f avx512_bf16 avx512_vnni\n"
ZEN3 = "processor\t: 0\nmodel name\t: AMD EPYC 7R13\nflags\t\t: avx2 fma sha_ni\n"


def test_bf16_units_from_cpuinfo(monkeypatch):
    monkeypatch.delenv(precision.ENV, raising=False)
    assert precision.bf16_units(SAPPHIRE_RAPIDS) == ["amx_bf16", "avx512_bf16"]
    assert precision.bf16_units(ZEN4) == ["avx512_bf16"]
    assert precision.bf16_units(ZEN3) == []
    assert precision.bf16_units("model name : avx512_bf16 in a name, not a flag\n") == []


def test_environment_overrides_detection(monkeypatch):
    monkeypatch.setenv(precision.ENV, "0")
    assert precision.bf16_units(SAPPHIRE_RAPIDS) == []
    monkeypatch.setenv(precision.ENV, "1")
    assert precision.bf16_units(ZEN3) == ["TFM_BF16_UNITS=1"]
    monkeypatch.setenv(precision.ENV, "yes")
    with pytest.raises(ValueError, match="TFM_BF16_UNITS must be 0 or 1, got 'yes'"):
        precision.bf16_units(ZEN3)


def test_resolve_auto_on_cpus(monkeypatch):
    monkeypatch.delenv(precision.ENV, raising=False)
    policy, jit, reason = precision.resolve("auto", "auto", cpuinfo=ZEN4, speedup=1.85)
    assert (policy, jit) == ("mixed_bfloat16", False)
    assert reason == "trainer.mixed_precision=auto: mixed_bfloat16 (CPU bf16 units: avx512_bf16; bf16 matmul 1.85x float32)"
    # The flag without a faster bf16 matmul (a 2-core Xeon with AVX512-BF16, no AMX: 0.64x) stays float32.
    policy, jit, reason = precision.resolve("auto", "auto", cpuinfo=ZEN4, speedup=0.64)
    assert (policy, jit) == ("float32", True) and reason.endswith("(CPU bf16 units: avx512_bf16; bf16 matmul 0.64x float32)")
    assert precision.resolve("auto", "auto", cpuinfo=ZEN3) == (
        "float32", True, "trainer.mixed_precision=auto: float32 (no CPU bf16 matrix units)")
    # Explicit settings are kept; jit auto follows the precision chosen.
    assert precision.resolve("float32", "auto", cpuinfo=ZEN4) == ("float32", True, None)
    assert precision.resolve("mixed_bfloat16", "auto", cpuinfo=ZEN3) == ("mixed_bfloat16", False, None)
    assert precision.resolve("auto", True, cpuinfo=ZEN4, speedup=2.0)[:2] == ("mixed_bfloat16", True)
    assert precision.resolve("mixed_float16", "auto", cpuinfo=ZEN4)[:2] == ("mixed_float16", True)


def test_config_accepts_auto_and_rejects_other_words():
    cfg = TrainerConfig(mixed_precision="auto", jit_compile="auto")
    assert (cfg.mixed_precision, cfg.jit_compile) == ("auto", "auto")
    with pytest.raises(ValueError, match="jit_compile"):
        TrainerConfig(jit_compile="sometimes")
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainerConfig(mixed_precision="bf16")


@pytest.mark.parametrize("units, policy, jit", [("1", "mixed_bfloat16", False), ("0", "float32", True)])
def test_trainer_runs_what_auto_resolves_to(monkeypatch, tmp_path, capsys, units, policy, jit):
    monkeypatch.setenv(precision.ENV, units)
    # mixed_precision and jit_compile left at their defaults: both `auto`.
    cfg = TrainerConfig(steps=2, batch_size=8, learning_rate=1e-2, log_every=1, eval_every=1000, checkpoint_every=1000,
                        strategy="default")
    assert (cfg.mixed_precision, cfg.jit_compile) == ("auto", "auto")
    try:
        trainer = Trainer(cfg, str(tmp_path), lambda: model_fn("mlm"), lambda b, c: toy_dataset("mlm", b, c))
        assert (trainer.mixed_precision, trainer.jit_compile) == (policy, jit)
        assert trainer.model.dtype_policy.name == policy
        assert trainer.model.backbone.get_layer("transformer_layer_0").compute_dtype == (
            "bfloat16" if units == "1" else "float32")
        trainer.train()
    finally:
        keras.config.set_dtype_policy("float32")
    out = capsys.readouterr().out
    assert f"trainer.mixed_precision=auto: {policy}" in out
    # The variables stay float32 either way (what a checkpoint holds).
    assert {v.dtype for v in trainer.model.trainable_variables} == {"float32"}


def test_a_run_trained_in_mixed_precision_records_a_float32_architecture(tmp_path):
    from tfm.models import BertBackbone
    from tfm.training.run_dir import _recorded_backbone, write_backbone

    backbone = BertBackbone(vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
                            max_sequence_length=16, dtype="mixed_bfloat16")
    write_backbone(str(tmp_path), backbone)
    again = _recorded_backbone(str(tmp_path))
    assert again.dtype_policy.name == "float32" and again.get_layer("transformer_layer_0").compute_dtype == "float32"
    assert again.count_params() == backbone.count_params()
