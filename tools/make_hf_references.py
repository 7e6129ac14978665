"""Reference outputs from the real Hugging Face `transformers` (PyTorch CPU) and `sentence-transformers`.

Why: tfm's HF import/export must match what HF itself computes, but CI has no torch. This tool runs once, in a
separate venv with torch (see tests/convert/references/README.md for the exact commands), and writes tiny
random-weight checkpoints plus `outputs.npz` files that the tfm tests compare against. It imports no tfm.

  generate (default):  python tools/make_hf_references.py --out tests/convert/references \
                           --minilm /path/to/all-MiniLM-L6-v2 --sentences /path/to/sst2/dev.tsv
  one new dir:         python tools/make_hf_references.py --out tests/convert/references \
                           --only bert_pretraining_gelu_new
      writes only the named plain tiny-model dirs (SPECS) and merges their entries into manifest.json;
      every other file under --out is left byte-identical (the versions must equal the manifest's).
  check-export:        python tools/make_hf_references.py check-export DIR [DIR...]
      each DIR is a tfm HF export (config.json, model.safetensors) holding `inputs.npz` (token_ids,
      padding_mask, optional segment_ids) and `tfm_outputs.npz`; it is loaded with transformers' Auto class for
      config.json `architectures[0]`, run on those inputs, and the max abs diff per output is printed.
"""

import argparse
import hashlib
import inspect
import json
import os
import shutil
import sys

import numpy as np
import torch

import transformers
from safetensors.torch import load_file, save_file

SEED = 0
NOISE = 0.1  # every parameter gets N(0, NOISE) added: LayerNorm 1/0 and zero biases would hide a wrong mapping
BATCH, LENGTH = 3, 7
VALID = (7, 5, 3)  # right padding: ones per attention_mask row
VOCAB = 99
BERT_CONFIG = dict(
    vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
    max_position_embeddings=32, type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12,
)
GPT2_CONFIG = dict(
    vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=32, activation_function="gelu_new",
    layer_norm_epsilon=1e-5, bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1,  # GPT2Config's 50256 is out of vocab
)
AUTO_BY_SUFFIX = (  # config.json architectures[0] suffix -> Auto class that `from_pretrained` resolves through
    ("ForPreTraining", "AutoModelForPreTraining"), ("ForMaskedLM", "AutoModelForMaskedLM"),
    ("ForSequenceClassification", "AutoModelForSequenceClassification"),
    ("ForTokenClassification", "AutoModelForTokenClassification"), ("LMHeadModel", "AutoModelForCausalLM"),
    ("ForCausalLM", "AutoModelForCausalLM"), ("Model", "AutoModel"),
)
OUTPUT_NAMES = ("last_hidden_state", "pooler_output", "logits", "prediction_logits", "seq_relationship_logits")
PRETRAINING_OUTPUTS = ["last_hidden_state", "pooler_output", "prediction_logits", "seq_relationship_logits"]
SPECS = [  # dir, class, extra config, outputs; each model's seed is its 1-based position, so only append
    ("bert_pretraining", "BertForPreTraining", {}, PRETRAINING_OUTPUTS),
    ("bert_model", "BertModel", {}, ["last_hidden_state", "pooler_output"]),
    ("bert_masked_lm", "BertForMaskedLM", {}, ["logits"]),
    ("bert_sequence_classification", "BertForSequenceClassification", {"num_labels": 3},
     ["logits", "last_hidden_state"]),
    ("bert_token_classification", "BertForTokenClassification", {"num_labels": 5}, ["logits"]),
    ("gpt2_model", "GPT2Model", {}, ["last_hidden_state"]),
    ("gpt2_lm_head", "GPT2LMHeadModel", {}, ["logits"]),
    # Google's BERT runs the tanh GELU: tfm's Google-checkpoint import is checked against this one.
    ("bert_pretraining_gelu_new", "BertForPreTraining", {"hidden_act": "gelu_new"}, PRETRAINING_OUTPUTS),
]
NOTES = {"bert_pretraining_gelu_new": "as bert_pretraining (own seed) with hidden_act gelu_new (tanh GELU)"}


def make_inputs(with_segments):
    """Batch 3 x length 7, right padded (7, 5, 3 valid), pad id 0; BERT also gets segment 1 on the tail."""
    rng = np.random.default_rng(SEED)
    mask = np.zeros((BATCH, LENGTH), np.int32)
    ids = np.zeros((BATCH, LENGTH), np.int32)
    seg = np.zeros((BATCH, LENGTH), np.int32)
    for row, n in enumerate(VALID):
        mask[row, :n] = 1
        ids[row, :n] = rng.integers(1, VOCAB, n)  # 0 only at padding, so a pad leak cannot look like a real token
        seg[row, (n + 1) // 2 : n] = 1  # second "sentence" of each row
    out = {"token_ids": ids, "padding_mask": mask}
    if with_segments:
        out["segment_ids"] = seg
    return out


def perturb(model, seed):
    """Add N(0, NOISE) to every parameter (shared/tied tensors once), so no weight keeps its trivial init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(NOISE * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model.eval()


def run(model, inputs):
    """Forward pass on numpy inputs; returns the transformers ModelOutput (hidden states included)."""
    kw = {"input_ids": torch.from_numpy(inputs["token_ids"]).long(),
          "attention_mask": torch.from_numpy(inputs["padding_mask"]).long(), "output_hidden_states": True}
    if "segment_ids" in inputs and "token_type_ids" in inspect.signature(model.forward).parameters:
        kw["token_type_ids"] = torch.from_numpy(inputs["segment_ids"]).long()
    with torch.no_grad():
        return model(**kw)


def pick(out, names, model=None, inputs=None):
    """Named outputs as float32 numpy. A head model's `last_hidden_state` is its last hidden_states entry; its
    `pooler_output` (BertForPreTraining returns none) comes from running its base model on the same inputs."""
    res = {}
    for name in names:
        if name in out:
            t = out[name]
        elif name == "last_hidden_state":
            t = out.hidden_states[-1]
        elif name == "pooler_output" and model is not None:
            t = run(model.base_model, inputs).pooler_output
        else:
            raise KeyError(f"transformers output has no {name!r}; it has {list(out.keys())}")
        res[name] = t.detach().numpy().astype(np.float32)
    return res


def build(cls_name, config_kw, seed, **extra):
    """A random-weight float32 model from a config, perturbed, eager attention (the plain softmax reference)."""
    torch.manual_seed(seed)
    cfg_cls = transformers.BertConfig if cls_name.startswith("Bert") else transformers.GPT2Config
    config = cfg_cls(**{**config_kw, **extra})  # extra may override (hidden_act)
    model = getattr(transformers, cls_name)._from_config(config, attn_implementation="eager", dtype=torch.float32)
    return perturb(model, seed)


def reload_diff(cls_name, path, inputs, expected):
    """Load `path` back with transformers (no missing keys allowed) and return the max abs diff to `expected`."""
    model, info = getattr(transformers, cls_name).from_pretrained(
        path, output_loading_info=True, attn_implementation="eager")
    if info["missing_keys"]:
        raise RuntimeError(f"{path}: transformers reports missing keys {sorted(info['missing_keys'])}")
    got = pick(run(model.eval(), inputs), list(expected), model, inputs)
    return max(float(np.max(np.abs(got[k] - expected[k]))) for k in expected), sorted(info["unexpected_keys"])


def write(out_dir, name, arrays, manifest, note=""):
    """Save `outputs.npz` in out_dir/name and describe every array (dtype, shape) in the manifest."""
    path = os.path.join(out_dir, name)
    np.savez_compressed(os.path.join(path, "outputs.npz"), **arrays)
    loaded = np.load(os.path.join(path, "outputs.npz"))  # no pickle: every array must load plainly
    manifest["dirs"][name] = {
        "files": sorted(os.listdir(path)), "note": note,
        "arrays": {k: {"dtype": str(loaded[k].dtype), "shape": list(loaded[k].shape)} for k in loaded.files},
    }


def plain_models(out_dir, manifest, selected):
    """The `SPECS` dirs named in `selected`: model saved by transformers, reloaded bit-identically, outputs."""
    bert_in, gpt_in = make_inputs(True), make_inputs(False)
    models = {}
    for seed, (name, cls_name, extra, names) in enumerate(SPECS, start=1):  # seed by position: append only
        if name not in selected:
            continue
        is_bert = cls_name.startswith("Bert")
        inputs = bert_in if is_bert else gpt_in
        model = build(cls_name, BERT_CONFIG if is_bert else GPT2_CONFIG, seed, **extra)
        path = os.path.join(out_dir, name)
        model.save_pretrained(path)
        outputs = pick(run(model, inputs), names, model, inputs)
        diff, unexpected = reload_diff(cls_name, path, inputs, outputs)
        assert diff == 0.0 and not unexpected, (name, diff, unexpected)
        manifest["checks"][name] = f"transformers reload: max abs diff {diff}, unexpected keys {unexpected}"
        write(out_dir, name, {**inputs, **outputs}, manifest, NOTES.get(name, ""))
        models[name] = (model, inputs, outputs)
    return models


def tiny_models(out_dir, manifest):
    """Every tiny BERT / GPT-2 checkpoint layout tfm must read, each with its HF outputs."""
    models = plain_models(out_dir, manifest, [name for name, *_ in SPECS])
    model, inputs, outputs = models["bert_model"]
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}

    path = os.path.join(out_dir, "bert_legacy_names")  # old checkpoints: LayerNorm gamma/beta
    model.save_pretrained(path)
    legacy = {}
    for k, v in sd.items():
        if ".LayerNorm." in k or k.startswith("LayerNorm."):
            k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        legacy[k] = v
    assert sum(".gamma" in k for k in legacy) == 5  # embeddings + 2 per layer
    save_file(legacy, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    diff, unexpected = reload_diff("BertModel", path, inputs, outputs)
    assert diff == 0.0 and not unexpected, ("bert_legacy_names", diff, unexpected)
    manifest["checks"]["bert_legacy_names"] = (
        f"transformers {transformers.__version__} loads the gamma/beta file (no missing/unexpected keys); "
        f"max abs diff to bert_model outputs {diff}")
    write(out_dir, "bert_legacy_names", {**inputs, **outputs}, manifest,
          "bert_model weights, every LayerNorm .weight/.bias renamed .gamma/.beta")

    path = os.path.join(out_dir, "bert_sharded")
    model.save_pretrained(path, max_shard_size="12KB")
    shards = [f for f in os.listdir(path) if f.endswith(".safetensors")]
    assert len(shards) >= 2 and os.path.exists(os.path.join(path, "model.safetensors.index.json")), shards
    diff, _ = reload_diff("BertModel", path, inputs, outputs)
    assert diff == 0.0, diff
    manifest["checks"]["bert_sharded"] = f"{len(shards)} shards; transformers reload max abs diff {diff}"
    write(out_dir, "bert_sharded", {**inputs, **outputs}, manifest, "bert_model, sharded")

    path = os.path.join(out_dir, "bert_pytorch_bin")  # transformers 5 only writes safetensors: torch.save as 4.x did
    model.save_pretrained(path)
    os.remove(os.path.join(path, "model.safetensors"))
    torch.save(sd, os.path.join(path, "pytorch_model.bin"))
    diff, _ = reload_diff("BertModel", path, inputs, outputs)
    assert diff == 0.0, diff
    manifest["checks"]["bert_pytorch_bin"] = f"transformers reload max abs diff {diff}"
    write(out_dir, "bert_pytorch_bin", {**inputs, **outputs}, manifest, "bert_model, pytorch_model.bin only")

    model, inputs, outputs = models["gpt2_model"]
    path = os.path.join(out_dir, "gpt2_legacy_buffers")  # old checkpoints carry the causal-mask buffers
    model.save_pretrained(path)
    tensors = load_file(os.path.join(path, "model.safetensors"))
    n = GPT2_CONFIG["n_positions"]
    for layer in range(GPT2_CONFIG["n_layer"]):
        tensors[f"h.{layer}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
        tensors[f"h.{layer}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    diff, unexpected = reload_diff("GPT2Model", path, inputs, outputs)
    assert diff == 0.0, diff
    manifest["checks"]["gpt2_legacy_buffers"] = (
        f"transformers reload max abs diff {diff}; keys it reports unexpected: {unexpected}")
    write(out_dir, "gpt2_legacy_buffers", {**inputs, **outputs}, manifest,
          "gpt2_model tensors plus h.N.attn.bias float32 [1,1,32,32] tril and h.N.attn.masked_bias float32 [] -1e4")


def read_sentences(path, count):
    """First `count` sentences of a TSV with a header (column sentence/content/text) or of a plain text file."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    if path.endswith(".tsv"):
        header = lines[0].split("\t")
        cols = [c for c in ("sentence", "content", "text") if c in header]
        if not cols:
            raise ValueError(f"{path}: header {header} has none of the columns sentence/content/text")
        col = header.index(cols[0])
        rows = [(i + 1, line.split("\t")[col]) for i, line in enumerate(lines) if i > 0 and line.strip()]
    else:
        rows = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    if len(rows) < count:
        raise ValueError(f"{path}: {len(rows)} sentences, expected at least {count}")
    return rows[:count]


def minilm(out_dir, model_dir, sentences_file, manifest, count=32, backbone_rows=4):
    """sentence-transformers embeddings of real SST-2 sentences, and the BertModel backbone for the first rows."""
    from sentence_transformers import SentenceTransformer

    rows = read_sentences(sentences_file, count)
    texts = [t for _, t in rows]
    st = SentenceTransformer(model_dir, device="cpu")
    emb = st.encode(texts, batch_size=count, convert_to_numpy=True).astype(np.float32)
    tok = st.tokenizer(texts, padding=True, truncation=True, max_length=st.max_seq_length, return_tensors="np")
    ids, mask = tok["input_ids"].astype(np.int32), tok["attention_mask"].astype(np.int32)
    width = int(mask[:backbone_rows].sum(1).max())  # first rows padded to their own longest
    sub = {"token_ids": ids[:backbone_rows, :width], "padding_mask": mask[:backbone_rows, :width]}
    bert = transformers.BertModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    hidden = pick(run(bert, sub), ["last_hidden_state"])["last_hidden_state"]
    hidden *= sub["padding_mask"][..., None]  # padded positions zeroed: they compress away (size budget)
    # Independent check that the backbone + masked mean pooling + L2 norm reproduces sentence-transformers.
    full = pick(run(bert, {"token_ids": ids, "padding_mask": mask}), ["last_hidden_state"])["last_hidden_state"]
    pooled = (full * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    diff = float(np.max(np.abs(pooled - emb)))
    assert diff < 1e-5, diff
    os.makedirs(os.path.join(out_dir, "minilm"), exist_ok=True)
    with open(os.path.join(model_dir, "model.safetensors"), "rb") as f:
        manifest["minilm_model_safetensors_sha256"] = hashlib.sha256(f.read()).hexdigest()
    manifest["checks"]["minilm"] = (
        f"BertModel mean-pool + L2 norm vs SentenceTransformer.encode: max abs diff {diff:.2e}; "
        f"modules {[type(m).__name__ for m in st]}")
    write(out_dir, "minilm", {
        "embeddings": emb, "token_ids": ids, "padding_mask": mask, "last_hidden_state": hidden,
        "sentences_file": np.array(os.path.join(*os.path.normpath(sentences_file).split(os.sep)[-2:])),
        "sentences_lines": np.array([i for i, _ in rows], np.int32),
    }, manifest, f"sentence-transformers embeddings of {count} sentences; last_hidden_state for the first "
                 f"{backbone_rows} = token_ids[:{backbone_rows}, :{width}], padded positions zeroed")


def generate(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--minilm", help="all-MiniLM-L6-v2 sentence-transformers directory (minilm/ skipped without)")
    p.add_argument("--sentences", help="SST-2 dev.tsv (or one sentence a line); only line numbers are stored")
    p.add_argument("--only", action="append", metavar="DIR",
                   help="write only this SPECS dir (repeatable), merge it into manifest.json, touch nothing else")
    args = p.parse_args(argv)
    if bool(args.minilm) != bool(args.sentences):
        p.error("--minilm and --sentences go together")
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(SEED)
    if args.only:
        return generate_only(p, args)
    os.makedirs(args.out, exist_ok=True)
    for entry in os.listdir(args.out):  # regenerate from scratch; README.md is kept
        if os.path.isdir(os.path.join(args.out, entry)):
            shutil.rmtree(os.path.join(args.out, entry))
    manifest = {"versions": versions(),
                "inputs": {"batch": BATCH, "length": LENGTH, "valid": list(VALID), "pad_id": 0, "seed": SEED},
                "noise_std": NOISE, "dirs": {}, "checks": {}}
    tiny_models(args.out, manifest)
    if args.minilm:
        minilm(args.out, args.minilm, args.sentences, manifest)
    finish(args.out, manifest)


def versions():
    import sentence_transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__, "numpy": np.__version__}


def generate_only(parser, args):
    """`--only`: (re)write just the named plain dirs; the manifest's other entries and every other file stay."""
    known = [name for name, *_ in SPECS]
    unknown = sorted(set(args.only) - set(known))
    if unknown or args.minilm:
        parser.error(f"--only takes dirs of {known} (got {unknown}) and no --minilm; derived dirs need a full run")
    with open(os.path.join(args.out, "manifest.json")) as f:
        manifest = json.load(f)
    if manifest["versions"] != versions():  # mixed versions in one reference set would be undocumented
        parser.error(f"manifest.json versions {manifest['versions']} differ from the installed {versions()}; "
                     f"regenerate everything instead")
    for name in args.only:
        if os.path.isdir(os.path.join(args.out, name)):
            shutil.rmtree(os.path.join(args.out, name))
    plain_models(args.out, manifest, set(args.only))
    finish(args.out, manifest)


def finish(out_dir, manifest):
    """Write manifest.json and list every file with its size and the checks made."""
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    total = 0
    for root, _, files in sorted(os.walk(out_dir)):
        for name in sorted(files):
            size = os.path.getsize(os.path.join(root, name))
            total += size
            print(f"{size:>9}  {os.path.relpath(os.path.join(root, name), out_dir)}")
    print(f"{total:>9}  total bytes")
    for name, text in manifest["checks"].items():
        print(f"check {name}: {text}")


def check_export(argv):
    p = argparse.ArgumentParser(prog="make_hf_references.py check-export")
    p.add_argument("dirs", nargs="+")
    p.add_argument("--atol", type=float, default=1e-4, help="fail when a valid-position diff is above this")
    args = p.parse_args(argv)
    failed = False
    for d in args.dirs:
        with open(os.path.join(d, "config.json")) as f:
            arch = json.load(f)["architectures"][0]
        auto_name = next(a for suffix, a in AUTO_BY_SUFFIX if arch.endswith(suffix))
        model, info = getattr(transformers, auto_name).from_pretrained(
            d, output_loading_info=True, attn_implementation="eager")
        if type(model).__name__ != arch or info["missing_keys"]:
            print(f"FAIL {d}: config.json says {arch}, {auto_name} built {type(model).__name__}; "
                  f"missing keys (HF would random-init them) {sorted(info['missing_keys'])}, unexpected {sorted(info['unexpected_keys'])}")
            failed = True
            continue
        inputs = dict(np.load(os.path.join(d, "inputs.npz")))
        ours = dict(np.load(os.path.join(d, "tfm_outputs.npz")))
        out = run(model.eval(), inputs)
        mask = inputs["padding_mask"].astype(bool)
        for key, value in sorted(ours.items()):
            if key not in OUTPUT_NAMES:
                print(f"FAIL {d}: tfm_outputs.npz key {key!r} is not one of {OUTPUT_NAMES}")
                failed = True
                continue
            ref = pick(out, [key], model, inputs)[key]
            if ref.shape != value.shape:
                print(f"FAIL {d} {key}: shape tfm {value.shape} vs transformers {ref.shape}")
                failed = True
                continue
            diff = np.abs(ref - value)
            valid = diff[mask] if diff.ndim >= 2 and diff.shape[:2] == mask.shape else diff
            bad = float(valid.max()) > args.atol
            failed |= bad
            print(f"{'FAIL' if bad else 'ok  '} {d} [{arch} via {auto_name}] {key} {tuple(value.shape)}: "
                  f"max abs diff {float(diff.max()):.3e} (valid positions {float(valid.max()):.3e})")
        if info["unexpected_keys"]:
            print(f"note {d}: transformers ignored unexpected keys {sorted(info['unexpected_keys'])}")
    return 1 if failed else 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "check-export":
        return check_export(argv[1:])
    generate(argv[1:] if argv and argv[0] == "generate" else argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
