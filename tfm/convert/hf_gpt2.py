"""Hugging Face GPT-2 (`model_type: gpt2`) <-> tfm `GptBackbone` and `CausalLM`: config and tensor tables.

HF names, relative to the backbone (`GPT2LMHeadModel` adds `transformer.`): `wte`, `wpe`, `h.N.ln_1`,
`h.N.attn.c_attn` (already fused QKV, `Conv1D` weights stored `(in, out)` as Keras does), `h.N.attn.c_proj`,
`h.N.ln_2`, `h.N.mlp.c_fc`, `h.N.mlp.c_proj`, `ln_f`; `lm_head.weight` is tied to `wte`. The causal-mask
buffers `h.N.attn.bias` / `h.N.attn.masked_bias` of old checkpoints are not weights and are skipped.
"""

import re

from tfm.convert.hf_weights import Entry, conv1d, layer_norm
from tfm.errors import InputError

MODEL_TYPE = "gpt2"
PREFIX = "transformer."
BUFFER_PATTERN = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")
ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")  # tfm's GPT uses the tanh GELU
LAYER_NORM_EPSILON = 1e-5


def canonical_name(name):
    return name


def is_buffer(name):
    return bool(BUFFER_PATTERN.match(name))


def backbone_kwargs(config, source):
    """`GptBackbone` arguments from a HF `config.json` dict; InputError naming a key tfm cannot honour."""
    act = config.get("activation_function", "gelu_new")
    if act not in ACTIVATIONS:
        raise InputError(f"{source}: activation_function={act!r} is not supported (tfm GPT uses the tanh GELU, "
                         f"{ACTIVATIONS[0]!r})")
    epsilon = config.get("layer_norm_epsilon", LAYER_NORM_EPSILON)
    if abs(epsilon - LAYER_NORM_EPSILON) > 1e-12:
        raise InputError(f"{source}: layer_norm_epsilon={epsilon} is not supported (tfm GPT uses {LAYER_NORM_EPSILON})")
    for key in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if config.get(key):
            raise InputError(f"{source}: {key}=true is not supported by tfm's GPT")
    try:
        hidden = config["n_embd"]
        return {
            "vocabulary_size": config["vocab_size"],
            "num_layers": config["n_layer"],
            "num_heads": config["n_head"],
            "hidden_dim": hidden,
            "intermediate_dim": config.get("n_inner") or 4 * hidden,
            "dropout": config.get("resid_pdrop", 0.1),
            "max_sequence_length": config.get("n_positions", 1024),
        }
    except KeyError as error:
        raise InputError(f"{source}: config.json has no {error.args[0]!r}") from None


def hf_config(backbone):
    """The `config.json` fields of a `GptBackbone` (what `GPT2Config` reads)."""
    return {
        "model_type": MODEL_TYPE,
        "vocab_size": backbone.vocabulary_size,
        "n_embd": backbone.hidden_dim,
        "n_layer": backbone.num_layers,
        "n_head": backbone.num_heads,
        "n_inner": backbone.intermediate_dim,
        "n_positions": backbone.max_sequence_length,
        "n_ctx": backbone.max_sequence_length,
        "activation_function": "gelu_new",
        "resid_pdrop": backbone.dropout,
        "embd_pdrop": backbone.dropout,
        "attn_pdrop": backbone.dropout,
        "layer_norm_epsilon": LAYER_NORM_EPSILON,
        "initializer_range": 0.02,
        "bos_token_id": backbone.vocabulary_size - 1,
        "eos_token_id": backbone.vocabulary_size - 1,
        "tie_word_embeddings": True,
    }


def backbone_entries(backbone, prefix=""):
    """Every backbone weight's HF name (with `prefix`, e.g. `transformer.`)."""
    p = prefix
    entries = [Entry(f"{p}wte.weight", backbone.token_embedding.embeddings),
               Entry(f"{p}wpe.weight", backbone.position_embedding.embeddings)]
    for i, block in enumerate(backbone.transformer_layers):
        b = f"{p}h.{i}."
        entries += layer_norm(b + "ln_1", block.attention_layer_norm)
        entries += conv1d(b + "attn.c_attn", block.self_attention.qkv_dense)
        entries += conv1d(b + "attn.c_proj", block.self_attention.output_dense)
        entries += layer_norm(b + "ln_2", block.feedforward_layer_norm)
        entries += conv1d(b + "mlp.c_fc", block.intermediate_dense)
        entries += conv1d(b + "mlp.c_proj", block.output_dense)
    return entries + layer_norm(f"{p}ln_f", backbone.layer_norm)


def tied_names(tensors, prefix):
    return {"lm_head.weight": prefix + "wte.weight"}
