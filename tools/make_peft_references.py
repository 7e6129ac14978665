"""Reference LoRA adapters from the real Hugging Face `peft` (PyTorch CPU), for tfm's PEFT adapter reader/writer.

Why: tfm reads and writes HF PEFT LoRA adapters (adapter_config.json + adapter_model.safetensors); parity must be
against what peft itself writes and computes, but CI has no torch. This tool runs once, in the separate reference
venv (see tests/peft/references/README.md), and writes a tiny base BERT, adapters exactly as peft's
`save_pretrained` writes them, and `outputs.npz` files the tfm tests compare against. It imports no tfm; the tiny
model, inputs and helpers are those of tools/make_hf_references.py.

  generate (default):  python tools/make_peft_references.py --out tests/peft/references
  check-adapter:       python tools/make_peft_references.py check-adapter BASE_DIR ADAPTER_DIR INPUTS_NPZ
      BASE_DIR: an HF model dir (config.json + weights); ADAPTER_DIR: a PEFT adapter (e.g. written by tfm);
      INPUTS_NPZ: token_ids, padding_mask, optional segment_ids and `tfm_logits`. Loads the base with transformers,
      the adapter with PeftModel.from_pretrained, fails on adapter keys peft would ignore or leave at init, and
      prints the max abs diff between peft's logits and tfm_logits (exit 1 above --atol).
"""

import argparse
import copy
import json
import os
import shutil
import sys

import numpy as np
import torch

import peft
import safetensors
import transformers
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_hf_references as hf  # noqa: E402  (tiny BERT config, inputs, perturb/build, finish)

BASE_SEED = 100  # the base model's own seed (make_hf_references uses 1..N); adapter i (1-based) uses BASE_SEED + i
NOISE = 0.1  # added to every lora_A/lora_B/classifier copy: lora_B starts at zero, which would hide a wrong mapping
MERGE_TOL = 1e-5
CLS = "BertForSequenceClassification"
NUM_LABELS = 2
# Every encoder-layer Linear (q, k, v, attention output, intermediate, FFN output) but not the pooler dense.
# peft re.fullmatch-es a string target_modules against module names such as `bert.encoder.layer.0.output.dense`.
ALL_LINEAR_REGEX = (r".*\.encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense"
                    r"|intermediate\.dense|output\.dense)")
SPECS = [  # dir, LoraConfig kwargs, note; seeds follow the position, so only append
    ("lora_query_value", dict(task_type="SEQ_CLS", r=4, lora_alpha=8, lora_dropout=0.0,
                              target_modules=["query", "value"]),
     "target_modules as a list of name suffixes; scaling lora_alpha / r = 2"),
    ("lora_all_rslora", dict(task_type="SEQ_CLS", r=2, lora_alpha=4, lora_dropout=0.0, use_rslora=True,
                             target_modules=ALL_LINEAR_REGEX),
     "target_modules as a regex string (6 Linears per layer, pooler excluded); rsLoRA scaling lora_alpha / sqrt(r)"),
]
MINILM_SHAPE = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                    intermediate_size=1536)
MINILM_EXPECTED = 73728  # 6 layers x 2 modules x (8*384 + 384*8)


def forward(model, inputs):
    """Logits and last hidden state. token_type_ids is passed by name: PeftModel.forward's signature hides it, so
    make_hf_references.run (which inspects the signature) would silently drop the segment ids."""
    kw = {"input_ids": torch.from_numpy(inputs["token_ids"]).long(),
          "attention_mask": torch.from_numpy(inputs["padding_mask"]).long(), "output_hidden_states": True}
    if "segment_ids" in inputs:
        kw["token_type_ids"] = torch.from_numpy(inputs["segment_ids"]).long()
    with torch.no_grad():
        out = model(**kw)
    return out.logits.numpy().astype(np.float32), out.hidden_states[-1].numpy().astype(np.float32)


def max_diff(a, b):
    return float(np.max(np.abs(a - b)))


def adapter_tensors(path):
    """{key: tensor} and the metadata of an adapter_model.safetensors, in file order."""
    with safe_open(os.path.join(path, "adapter_model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def noise_trainables(model, seed):
    """Add N(0, NOISE) to every trainable tensor, which must be exactly the LoRA factors and the classifier copy."""
    gen = torch.Generator().manual_seed(seed)
    names = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if not (".lora_A." in name or ".lora_B." in name or ".classifier.modules_to_save." in name):
                raise RuntimeError(f"unexpected trainable parameter {name}")
            p.add_(NOISE * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            names.append(name)
    return names


def manual_merge(base, tensors, scaling):
    """Independent of peft: W += scaling * B @ A for each `<prefix><module>.lora_A.weight` file key, and the
    classifier copied from the file. Checks the README's key mapping and scaling formula."""
    prefix = "base_model.model."
    sd = {k: v.clone() for k, v in base.state_dict().items()}
    for key, value in tensors.items():
        if not key.startswith(prefix):
            raise KeyError(f"adapter key {key} lacks the {prefix!r} prefix")
        name = key[len(prefix):]
        if name.endswith(".lora_A.weight"):
            module = name[: -len(".lora_A.weight")]
            b = tensors[f"{prefix}{module}.lora_B.weight"]
            sd[f"{module}.weight"] += scaling * (b.double() @ value.double()).float()
        elif name.startswith("classifier."):
            sd[name] = value
        elif not name.endswith(".lora_B.weight"):
            raise KeyError(f"adapter key {key}: neither lora_A/lora_B nor classifier")
    merged = copy.deepcopy(base)
    merged.load_state_dict(sd)
    return merged.eval()


def key_check(model, tensors):
    """Compare the file with the state dict peft saves for this model (get_peft_model_state_dict). A key the file
    lacks stays at peft's init (lora_B zeros) and an odd key may be ignored; peft only warns, so both are errors
    here, as is a loaded value that differs from the file. (peft also tolerates some spellings it never writes,
    e.g. `lora_B.default.weight`; a writer must produce exactly peft's names, so those are reported too.)"""
    want = get_peft_model_state_dict(model)
    missing, unexpected = sorted(set(want) - set(tensors)), sorted(set(tensors) - set(want))
    unequal = sorted(k for k in set(want) & set(tensors)
                     if want[k].shape != tensors[k].shape or not torch.equal(want[k].float(), tensors[k].float()))
    return missing, unexpected, unequal


def load_base(path):
    """A saved HF model through the Auto class its config.json names (eager attention, the plain reference)."""
    with open(os.path.join(path, "config.json")) as f:
        arch = json.load(f)["architectures"][0]
    auto_name = next(a for suffix, a in hf.AUTO_BY_SUFFIX if arch.endswith(suffix))
    model, info = getattr(transformers, auto_name).from_pretrained(
        path, output_loading_info=True, attn_implementation="eager")
    if info["missing_keys"]:
        raise RuntimeError(f"{path}: transformers reports missing keys {sorted(info['missing_keys'])}")
    return model.eval()


def make_adapter(out_dir, position, name, lora_kw, note, base, base_dir, inputs, logits_base, manifest):
    """One adapter dir: peft model with noised trainables, saved by peft, outputs, and every check."""
    seed = BASE_SEED + position
    torch.manual_seed(seed)  # peft's kaiming init of lora_A draws from the global generator
    config = LoraConfig(**lora_kw)
    model = get_peft_model(copy.deepcopy(base), config).eval()
    noised = noise_trainables(model, seed)
    path = os.path.join(out_dir, name)
    model.save_pretrained(path)
    os.remove(os.path.join(path, "README.md"))  # peft's boilerplate model card: no data, 5 KB
    logits, hidden = forward(model, inputs)
    with model.disable_adapter():
        off, off_hidden = forward(model, inputs)
    d_effect = max_diff(hidden, off_hidden)  # the LoRA factors alone (the classifier is after the last layer)
    assert d_effect > 10 * MERGE_TOL, d_effect
    assert max_diff(off, logits_base) == 0.0, "disable_adapter must give the base logits"
    tensors, metadata = adapter_tensors(path)
    missing, unexpected, unequal = key_check(model, tensors)
    assert not (missing or unexpected or unequal), (missing, unexpected, unequal)
    scaling = lora_kw["lora_alpha"] / (lora_kw["r"] ** 0.5 if lora_kw.get("use_rslora") else lora_kw["r"])
    scalings = {m.scaling["default"] for m in model.modules() if isinstance(m, LoraLayer)}
    assert scalings == {scaling}, (scalings, scaling)
    manual, _ = forward(manual_merge(base, tensors, scaling), inputs)
    d_manual = max_diff(manual, logits)
    assert d_manual < MERGE_TOL, d_manual

    fresh = PeftModel.from_pretrained(load_base(base_dir), path).eval()
    reload_logits, reload_hidden = forward(fresh, inputs)
    d_reload = max(max_diff(reload_logits, logits), max_diff(reload_hidden, hidden))
    assert d_reload == 0.0, d_reload
    merged_model = model.merge_and_unload()
    assert type(merged_model).__name__ == CLS, type(merged_model)
    merged, _ = forward(merged_model.eval(), inputs)
    d_merged = max_diff(merged, logits)
    assert d_merged < MERGE_TOL, d_merged

    hf.write(out_dir, name, {**inputs, "logits_base": logits_base, "logits_adapted": logits,
                             "logits_merged": merged, "last_hidden_state_adapted": hidden}, manifest, note)
    with open(os.path.join(path, "adapter_config.json")) as f:
        adapter_config = json.load(f)
    n_lora = sum(".lora_" in k for k in tensors)
    manifest["dirs"][name].update({
        "seed": seed, "scaling": scaling, "adapter_config": adapter_config, "safetensors_metadata": metadata,
        "tensors": {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
                    for k, v in tensors.items()},
        "noised_parameters": len(noised),
    })
    manifest["checks"][name] = (
        f"{n_lora} lora tensors + {len(tensors) - n_lora} classifier tensors; file keys == "
        f"get_peft_model_state_dict keys and values; every LoRA layer's scaling == {scaling:g}; "
        f"disable_adapter == logits_base (diff 0.0); LoRA effect on the last hidden state: max abs diff "
        f"{d_effect:.3f} to the base's, on logits {max_diff(logits, logits_base):.3f}; "
        f"manual merge from the file (W += scaling * B @ A, classifier copied) vs adapted: max abs diff {d_manual:.2e}; PeftModel.from_pretrained on a fresh "
        f"from_pretrained base: logits and last hidden state diff {d_reload}; merge_and_unload vs adapted: "
        f"max abs diff {d_merged:.2e} (< {MERGE_TOL:g})")
    print(f"{name}: merged vs adapted {d_merged:.3e}, manual merge vs adapted {d_manual:.3e}, reload {d_reload}")


def minilm_count():
    """Trainable LoRA parameters peft reports for all-MiniLM-L6-v2's shape (random weights, no download), r=8 on
    query/value, no task head: the number tfm's LoRA on MiniLM must match."""
    torch.manual_seed(0)
    config = transformers.BertConfig(**MINILM_SHAPE)
    model = transformers.BertModel(config)
    pm = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"]))
    trainable, total = pm.get_nb_trainable_parameters()
    assert trainable == MINILM_EXPECTED, (trainable, MINILM_EXPECTED)
    text = (f"BertModel(hidden 384, 6 layers, 12 heads, intermediate 1536, vocab 30522) + LoraConfig(r=8, "
            f"target_modules=[query, value]), no head: peft get_nb_trainable_parameters = {trainable:,} trainable "
            f"of {total:,}")
    print(f"minilm_lora_count: {text}")
    return trainable, text


def versions():
    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "safetensors": safetensors.__version__, "numpy": np.__version__}


def generate(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.set_default_dtype(torch.float32)
    os.makedirs(args.out, exist_ok=True)
    for entry in os.listdir(args.out):  # regenerate from scratch; README.md is kept
        if os.path.isdir(os.path.join(args.out, entry)):
            shutil.rmtree(os.path.join(args.out, entry))
    inputs = hf.make_inputs(True)
    base = hf.build(CLS, hf.BERT_CONFIG, BASE_SEED, num_labels=NUM_LABELS)
    base_dir = os.path.join(args.out, "base")
    base.save_pretrained(base_dir)
    logits_base, _ = forward(base, inputs)
    d_base = max_diff(forward(load_base(base_dir), inputs)[0], logits_base)
    assert d_base == 0.0, d_base
    manifest = {"versions": versions(),
                "inputs": {"batch": hf.BATCH, "length": hf.LENGTH, "valid": list(hf.VALID), "pad_id": 0,
                           "seed": hf.SEED},
                "base": {"class": CLS, "num_labels": NUM_LABELS, "config": hf.BERT_CONFIG, "seed": BASE_SEED,
                         "files": sorted(os.listdir(base_dir))},
                "noise_std": NOISE, "dirs": {}, "checks": {"base": f"transformers reload: logits diff {d_base}"}}
    for position, (name, lora_kw, note) in enumerate(SPECS, start=1):
        make_adapter(args.out, position, name, lora_kw, note, base, base_dir, inputs, logits_base, manifest)
    manifest["minilm_lora_trainable"], manifest["checks"]["minilm_lora_count"] = minilm_count()
    hf.finish(args.out, manifest)


def check_adapter(argv):
    p = argparse.ArgumentParser(prog="make_peft_references.py check-adapter")
    p.add_argument("base_dir")
    p.add_argument("adapter_dir")
    p.add_argument("inputs_npz")
    p.add_argument("--atol", type=float, default=1e-4, help="fail when the logits diff is above this")
    args = p.parse_args(argv)
    data = dict(np.load(args.inputs_npz))
    for key in ("token_ids", "padding_mask", "tfm_logits"):
        if key not in data:
            print(f"FAIL {args.inputs_npz}: no {key!r}; it has {sorted(data)}")
            return 1
    model = PeftModel.from_pretrained(load_base(args.base_dir), args.adapter_dir).eval()
    tensors, _ = adapter_tensors(args.adapter_dir)
    missing, unexpected, unequal = key_check(model, tensors)
    failed = bool(missing or unexpected or unequal)
    if failed:
        print(f"FAIL {args.adapter_dir}: adapter_model.safetensors is not what peft's save_pretrained writes for "
              f"this adapter_config (get_peft_model_state_dict): keys absent {missing} (peft may leave these at "
              f"init), extra keys {unexpected}, loaded values differing from the file {unequal}")
    logits, _ = forward(model, data)
    ours = data["tfm_logits"]
    if ours.shape != logits.shape:
        print(f"FAIL {args.adapter_dir}: tfm_logits shape {ours.shape} vs peft {logits.shape}")
        return 1
    diff = max_diff(logits, ours)
    bad = diff > args.atol
    print(f"{'FAIL' if bad else 'ok  '} {args.adapter_dir} (peft {peft.__version__}, "
          f"{model.peft_config['default'].peft_type}, r={model.peft_config['default'].r}) logits "
          f"{tuple(ours.shape)}: max abs diff {diff:.3e} (atol {args.atol:g})")
    return 1 if (failed or bad) else 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "check-adapter":
        return check_adapter(argv[1:])
    if os.environ.get("PYTHONHASHSEED") != "0":
        # peft keeps a list target_modules as a set and writes list(set) to adapter_config.json: its order follows
        # string hashing, so a fixed hash seed is what makes two runs byte-identical.
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *argv],
                  {**os.environ, "PYTHONHASHSEED": "0"})
    generate(argv[1:] if argv and argv[0] == "generate" else argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
