"""Adapter files: HF PEFT's LoRA files read and written with parity to `peft` (references made by
tools/make_peft_references.py with peft 0.21.2 on torch's CPU build), tfm's files for every method."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import tfm
from tests.peft.helpers import BATCH, METHODS, classifier, spread
from tfm.errors import InputError
from tfm.peft import core

REFERENCES = Path(__file__).with_name("references")
ADAPTERS = ("lora_query_value", "lora_all_rslora")


def _reference(name):
    out = np.load(REFERENCES / name / "outputs.npz")
    inputs = {"token_ids": out["token_ids"], "segment_ids": out["segment_ids"], "padding_mask": out["padding_mask"]}
    return inputs, out


@pytest.mark.parametrize("name", ADAPTERS)
def test_hf_peft_lora_files_load_with_parity_merge_and_write_back_identically(name, tmp_path):
    inputs, out = _reference(name)
    task = tfm.tasks.TextClassifier.from_preset(str(REFERENCES / "base"))
    np.testing.assert_allclose(task(inputs).numpy(), out["logits_base"], atol=1e-5)
    tfm.peft.load_adapter(task, str(REFERENCES / name))
    config = core.active_config(task)
    assert config.method == "lora" and config.also_train == ["head"]
    np.testing.assert_allclose(task(inputs).numpy(), out["logits_adapted"], atol=1e-5)
    hidden = task.backbone(inputs)["sequence_output"].numpy()
    np.testing.assert_allclose(hidden, out["last_hidden_state_adapted"], atol=1e-5)
    tfm.peft.merge(task)
    np.testing.assert_allclose(task(inputs).numpy(), out["logits_merged"], atol=1e-5)
    tfm.peft.unmerge(task)
    # Written back in HF PEFT's layout: the same keys, shapes and values (checked live against peft with
    # `tools/make_peft_references.py check-adapter`, max abs diff 8.9e-08 / 6.0e-08).
    tfm.peft.save_adapter(task, str(tmp_path), format="hf")
    reference, written = load_file(REFERENCES / name / "adapter_model.safetensors"), load_file(
        tmp_path / "adapter_model.safetensors")
    assert sorted(written) == sorted(reference)
    for key, value in reference.items():
        np.testing.assert_allclose(written[key], value, atol=1e-7, err_msg=key)
    ours, theirs = (json.loads((d / "adapter_config.json").read_text()) for d in (tmp_path, REFERENCES / name))
    for key in ("peft_type", "task_type", "r", "lora_alpha", "use_rslora", "bias", "fan_in_fan_out"):
        assert ours[key] == theirs[key], key
    reloaded = tfm.tasks.TextClassifier.from_preset(str(REFERENCES / "base"))
    tfm.peft.load_adapter(reloaded, str(tmp_path))
    np.testing.assert_allclose(reloaded(inputs).numpy(), out["logits_adapted"], atol=1e-5)


def _broken(tmp_path, edit_tensors=None, edit_config=None):
    target = tmp_path / "broken"
    shutil.copytree(REFERENCES / "lora_query_value", target)
    tensors = load_file(target / "adapter_model.safetensors")
    if edit_tensors:
        edit_tensors(tensors)
        save_file(tensors, str(target / "adapter_model.safetensors"))
    if edit_config:
        config = json.loads((target / "adapter_config.json").read_text())
        edit_config(config)
        (target / "adapter_config.json").write_text(json.dumps(config))
    return str(target)


A0 = "base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight"


@pytest.mark.parametrize("edit_tensors, edit_config, message", [
    (lambda t: t.pop("base_model.model.bert.encoder.layer.1.attention.self.value.lora_B.weight"), None,
     r"tensor 'base_model.model.bert.encoder.layer.1.attention.self.value.lora_B.weight' is missing \(expected "
     r"shape \[16, 4\]\)"),
    (lambda t: t.update({A0: np.zeros((4, 15), "float32")}), None,
     rf"tensor '{A0}' has shape \[4, 15\], expected \[4, 16\]"),
    (lambda t: t.update({"base_model.model.bert.pooler.dense.lora_A.weight": np.zeros((4, 16), "float32")}), None,
     "tensor 'base_model.model.bert.pooler.dense.lora_A.weight' is not a LoRA factor"),
    (None, lambda c: c.update(fan_in_fan_out=True), r"fan_in_fan_out=True is not supported"),
    (None, lambda c: c.update(layers_to_transform=[0]), "layers_to_transform"),
    (None, lambda c: c.update(peft_type="IA3"), "peft_type 'IA3'"),
])
def test_bad_adapter_files_name_the_key_and_load_nothing(tmp_path, edit_tensors, edit_config, message):
    task = tfm.tasks.TextClassifier.from_preset(str(REFERENCES / "base"))
    inputs, out = _reference("lora_query_value")
    weights = [w.numpy() for w in task.weights]
    with pytest.raises(InputError, match=message):
        tfm.peft.load_adapter(task, _broken(tmp_path, edit_tensors, edit_config))
    assert not getattr(task, "peft_adapters", None) and core.active_adapter(task) is None
    assert len(task.weights) == len(weights) and all(np.array_equal(w.numpy(), v) for w, v in zip(task.weights, weights))
    np.testing.assert_allclose(task(inputs).numpy(), out["logits_base"], atol=1e-5)
    with pytest.raises(InputError, match="adapter_config.json: no such file"):
        tfm.peft.load_adapter(task, str(tmp_path / "nowhere"))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_tfm_adapter_files_hold_only_the_adapter_and_head_and_round_trip(method, tmp_path):
    task = classifier()
    base_weights = [w.numpy() for w in task.weights]
    spread(tfm.peft.apply(task, method=method, **METHODS[method]))
    expected = task(BATCH).numpy()
    tfm.peft.save_adapter(task, str(tmp_path))
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    head = {k for k in tensors if k.startswith("head.")}
    assert head == {"head.logits/kernel", "head.logits/bias"}
    saved = sum(int(np.prod(v.shape)) for k, v in tensors.items() if k not in head and "rank_allocator" not in k)
    assert saved == core.parameter_counts(task)["peft"]
    assert os.path.getsize(tmp_path / "adapter_model.safetensors") < 4 * (saved + 200) + 4096
    # A fresh model with the same base weights and another head: the file brings back the adapter and head.
    fresh = classifier()
    for target, value in zip(fresh.weights, base_weights):
        target.assign(value)
    fresh.get_layer("logits").kernel.assign(np.zeros((8, 3), "float32"))
    tfm.peft.load_adapter(fresh, str(tmp_path))
    np.testing.assert_allclose(fresh(BATCH).numpy(), expected, atol=1e-6)
    if method == "adalora":
        pattern = {k: v for k, v in tensors.items() if "rank_pattern" in k}
        assert pattern and all(set(np.unique(v)) <= {0.0, 1.0} for v in pattern.values())


def test_adapter_files_carry_the_layer_norms_the_adapter_trained(tmp_path):
    task = classifier()
    base_weights = [w.numpy() for w in task.weights]
    spread(tfm.peft.apply(task, method="pfeiffer", bottleneck_dim=4, also_train=["head", "layer_norm"]))
    norms = core.base_variables(task, ["layer_norm"])
    for v in norms:
        v.assign(v.numpy() * 1.5 + 0.1)
    expected = task(BATCH).numpy()
    tfm.peft.save_adapter(task, str(tmp_path))
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    assert {k for k in tensors if k.startswith("base.")} == {f"base.{v.path}" for v in norms}
    assert sum(v.size for k, v in tensors.items() if k.startswith("base.")) == 2 * 8 * 5  # 5 LayerNorms of width 8
    fresh = classifier()  # the untrained base: its LayerNorms come from the file
    for target, value in zip(fresh.weights, base_weights):
        target.assign(value)
    tfm.peft.load_adapter(fresh, str(tmp_path))
    np.testing.assert_allclose(fresh(BATCH).numpy(), expected, atol=1e-6)
    lora = tfm.peft.apply(classifier(), method="lora", rank=2, also_train=["head", "bias"])
    with pytest.raises(ValueError, match=r"also trains \['bias'\] of the backbone: use format='tfm'"):
        tfm.peft.save_adapter(lora, str(tmp_path / "hf"), format="hf")
