"""OpenAI's original GPT-2 checkpoints (openai/gpt-2 `download_model.py`): `model.ckpt.*`, `hparams.json`,
`encoder.json`, `vocab.bpe`.

Why a renamer: the variables are renamed to Hugging Face GPT-2 names and handed to the HF engine
(`tfm.convert.hugging_face`), so GPT-2 keeps one tensor table. OpenAI's `conv1d` stores `w` as `[1, in, out]`;
HF's `Conv1D` weight is the same matrix without the leading axis. Checks run on OpenAI's names first:

| OpenAI variable                                     | Hugging Face tensor (`GPT2LMHeadModel`, lm_head tied)   |
|-----------------------------------------------------|---------------------------------------------------------|
| `model/wte`, `model/wpe`                            | `wte.weight`, `wpe.weight`                              |
| `model/hN/ln_1/{g,b}`, `ln_2`                       | `h.N.ln_1.{weight,bias}`, `ln_2`                        |
| `model/hN/attn/c_attn/{w,b}` (`w` `[1, E, 3E]`)     | `h.N.attn.c_attn.{weight,bias}` (`[E, 3E]`)             |
| `model/hN/attn/c_proj`, `mlp/c_fc`, `mlp/c_proj`    | `h.N.attn.c_proj`, `h.N.mlp.c_fc`, `h.N.mlp.c_proj`     |
| `model/ln_f/{g,b}`                                  | `ln_f.{weight,bias}`                                    |

`hparams.json` (`n_vocab`, `n_ctx`, `n_embd`, `n_head`, `n_layer`) fixes everything else as OpenAI's `model.py`
does: tanh GELU (`gelu_new`), LayerNorm epsilon 1e-5, MLP width 4 x n_embd, `<|endoftext|>` = the last id.
Optimizer state of fine-tuned checkpoints (`*/Adam`, `global_step`, ...) is skipped.
"""

from pathlib import Path

import numpy as np

from tfm.convert.google_bert import checkpoint_prefix, read_json, read_variables
from tfm.errors import InputError

CONFIG_FILE = "hparams.json"
ENCODER_FILE = "encoder.json"  # = HF vocab.json
BPE_FILE = "vocab.bpe"  # = HF merges.txt
CHECKPOINT = "model.ckpt"


def hf_config(hparams, source):
    """The HF `config.json` dict (`GPT2LMHeadModel`) of an `hparams.json` dict."""
    missing = [k for k in ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer") if k not in hparams]
    if missing:
        raise InputError(f"{source}: no {missing[0]!r} (OpenAI's hparams.json has n_vocab, n_ctx, n_embd, n_head, "
                         f"n_layer)")
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": hparams["n_vocab"],
        "n_positions": hparams["n_ctx"],
        "n_ctx": hparams["n_ctx"],
        "n_embd": hparams["n_embd"],
        "n_head": hparams["n_head"],
        "n_layer": hparams["n_layer"],
        "n_inner": None,  # 4 * n_embd
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1,
        "bos_token_id": hparams["n_vocab"] - 1,  # <|endoftext|> (50256 in the released encoder.json)
        "eos_token_id": hparams["n_vocab"] - 1,
        "tie_word_embeddings": True,
    }


def variable_table(config):
    """OpenAI variable -> (HF name, expected OpenAI shape, squeeze the leading conv1d axis)."""
    e = config["n_embd"]
    table = {"model/wte": ("wte.weight", (config["vocab_size"], e), False),
             "model/wpe": ("wpe.weight", (config["n_positions"], e), False)}

    def conv1d(openai, hf, n_in, n_out):
        table[f"{openai}/w"] = (f"{hf}.weight", (1, n_in, n_out), True)
        table[f"{openai}/b"] = (f"{hf}.bias", (n_out,), False)

    def norm(openai, hf):
        table[f"{openai}/g"] = (f"{hf}.weight", (e,), False)
        table[f"{openai}/b"] = (f"{hf}.bias", (e,), False)

    for n in range(config["n_layer"]):
        o, h = f"model/h{n}/", f"h.{n}."
        norm(o + "ln_1", h + "ln_1")
        conv1d(o + "attn/c_attn", h + "attn.c_attn", e, 3 * e)
        conv1d(o + "attn/c_proj", h + "attn.c_proj", e, e)
        norm(o + "ln_2", h + "ln_2")
        conv1d(o + "mlp/c_fc", h + "mlp.c_fc", e, 4 * e)
        conv1d(o + "mlp/c_proj", h + "mlp.c_proj", 4 * e, e)
    norm("model/ln_f", "ln_f")
    return table


def read_checkpoint(directory):
    """`(HF config dict, {HF name: numpy array})` of an OpenAI GPT-2 directory, checked in OpenAI's names."""
    d = Path(directory)
    config = hf_config(read_json(d / CONFIG_FILE, "an OpenAI GPT-2 directory has hparams.json"), d / CONFIG_FILE)
    table = variable_table(config)
    found = read_variables(checkpoint_prefix(d, CHECKPOINT), {n: shape for n, (_, shape, _) in table.items()},
                           config_file=CONFIG_FILE)
    tensors = {}
    for name, value in found.items():
        hf_name, _, squeeze = table[name]
        tensors[hf_name] = np.ascontiguousarray(value[0] if squeeze else value)
    return config, tensors


def source(directory):
    """How errors name the checkpoint: its path prefix."""
    return str(checkpoint_prefix(directory, CHECKPOINT))


def load_tokenizer(directory):
    """`tfm.data.BytePairTokenizer` over `encoder.json` + `vocab.bpe` (no prefix space, as OpenAI's encoder)."""
    from tfm.data import BytePairTokenizer

    d = Path(directory)
    for name in (ENCODER_FILE, BPE_FILE):
        if not (d / name).is_file():
            raise InputError(f"{d / name}: no such file (an OpenAI GPT-2 tokenizer is encoder.json + vocab.bpe)")
    vocabulary = read_json(d / ENCODER_FILE, "the token -> id map")
    try:
        return BytePairTokenizer(vocabulary, d / BPE_FILE)
    except ValueError as error:  # ids with gaps / duplicates
        raise InputError(f"{d / ENCODER_FILE}: {error}") from None
