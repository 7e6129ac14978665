"""Hugging Face BERT (`model_type: bert`) <-> tfm `BertBackbone` and its heads: config and tensor tables.

HF names, relative to the backbone (task checkpoints add `bert.`): `embeddings.*`, `encoder.layer.N.*`,
`pooler.dense`; heads `cls.predictions.*` (MLM, decoder tied to the word embeddings), `cls.seq_relationship`
(next sentence), `classifier` (sequence / token classification). Old checkpoints name LayerNorm parameters
`gamma`/`beta`. HF BERT's `gelu` is the exact erf form, as tfm's `gelu`.
"""

from tfm.convert.hf_weights import Entry, fused_qkv, layer_norm, linear
from tfm.errors import InputError

MODEL_TYPE = "bert"
PREFIX = "bert."
BUFFERS = ("embeddings.position_ids",)  # saved by old transformers versions; not weights
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_approximate", "gelu_pytorch_tanh": "gelu_approximate",
                  "relu": "relu", "tanh": "tanh"}
TFM_ACTIVATIONS = {"gelu": "gelu", "gelu_approximate": "gelu_new", "relu": "relu", "tanh": "tanh"}
LAYER_NORM_EPSILON = 1e-12  # tfm's BertBackbone


def canonical_name(name):
    """Today's HF name of a tensor: LayerNorm `gamma`/`beta` become `weight`/`bias`."""
    if name.endswith("LayerNorm.gamma"):
        return name[: -len("gamma")] + "weight"
    if name.endswith("LayerNorm.beta"):
        return name[: -len("beta")] + "bias"
    return name


def backbone_kwargs(config, source):
    """`BertBackbone` arguments from a HF `config.json` dict; InputError naming a key tfm cannot honour."""
    act = config.get("hidden_act", "gelu")
    if act not in HF_ACTIVATIONS:
        raise InputError(f"{source}: hidden_act={act!r} is not supported; expected one of {sorted(HF_ACTIVATIONS)}")
    position = config.get("position_embedding_type", "absolute")
    if position != "absolute":
        raise InputError(f"{source}: position_embedding_type={position!r} is not supported (tfm BERT has absolute "
                         f"learned positions)")
    epsilon = config.get("layer_norm_eps", LAYER_NORM_EPSILON)
    if abs(epsilon - LAYER_NORM_EPSILON) > 1e-15:
        raise InputError(f"{source}: layer_norm_eps={epsilon} is not supported (tfm BERT uses {LAYER_NORM_EPSILON})")
    try:
        return {
            "vocabulary_size": config["vocab_size"],
            "num_layers": config["num_hidden_layers"],
            "num_heads": config["num_attention_heads"],
            "hidden_dim": config["hidden_size"],
            "intermediate_dim": config["intermediate_size"],
            "dropout": config.get("hidden_dropout_prob", 0.1),
            "max_sequence_length": config.get("max_position_embeddings", 512),
            "num_segments": config.get("type_vocab_size", 2),
            "activation": HF_ACTIVATIONS[act],
        }
    except KeyError as error:
        raise InputError(f"{source}: config.json has no {error.args[0]!r}") from None


def hf_config(backbone):
    """The `config.json` fields of a `BertBackbone` (what `BertConfig` reads)."""
    return {
        "model_type": MODEL_TYPE,
        "vocab_size": backbone.vocabulary_size,
        "hidden_size": backbone.hidden_dim,
        "num_hidden_layers": backbone.num_layers,
        "num_attention_heads": backbone.num_heads,
        "intermediate_size": backbone.intermediate_dim,
        "hidden_act": TFM_ACTIVATIONS[backbone.activation],
        "hidden_dropout_prob": backbone.dropout,
        "attention_probs_dropout_prob": backbone.dropout,
        "max_position_embeddings": backbone.max_sequence_length,
        "type_vocab_size": backbone.num_segments,
        "initializer_range": 0.02,
        "layer_norm_eps": LAYER_NORM_EPSILON,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
    }


def backbone_entries(backbone, prefix=""):
    """Every backbone weight's HF name (with `prefix`, e.g. `bert.`)."""
    p = prefix
    entries = [
        Entry(f"{p}embeddings.word_embeddings.weight", backbone.token_embedding.embeddings),
        Entry(f"{p}embeddings.position_embeddings.weight", backbone.position_embedding.embeddings),
        Entry(f"{p}embeddings.token_type_embeddings.weight", backbone.segment_embedding.embeddings),
        *layer_norm(f"{p}embeddings.LayerNorm", backbone.get_layer("embeddings_layer_norm")),
    ]
    for i, block in enumerate(backbone.transformer_layers):
        b = f"{p}encoder.layer.{i}."
        attention = block.self_attention
        entries += fused_qkv([b + "attention.self.query", b + "attention.self.key", b + "attention.self.value"],
                             attention.qkv_dense, transpose=True)
        entries += linear(b + "attention.output.dense", attention.output_dense)
        entries += layer_norm(b + "attention.output.LayerNorm", block.attention_layer_norm)
        entries += linear(b + "intermediate.dense", block.intermediate_dense)
        entries += linear(b + "output.dense", block.output_dense)
        entries += layer_norm(b + "output.LayerNorm", block.feedforward_layer_norm)
    return entries + linear(f"{p}pooler.dense", backbone.pooled_dense)


def pooler_names(prefix=""):
    """HF drops the pooler from MLM / token-classification models: it may be missing (kept as initialized)."""
    return (f"{prefix}pooler.dense.weight", f"{prefix}pooler.dense.bias")


def masked_lm_entries(task):
    head = task.masked_lm_head
    entries = [*linear("cls.predictions.transform.dense", head.dense),
               *layer_norm("cls.predictions.transform.LayerNorm", head.layer_norm),
               Entry("cls.predictions.bias", head.output_bias)]
    if task.next_sentence:
        entries += linear("cls.seq_relationship", task.get_layer("next_sentence_head"))
    return entries


def classifier_entries(task):
    return linear("classifier", task.get_layer("logits"))


# Tensors that repeat another one (tied): allowed in a file, checked equal, never written.
def tied_names(tensors, prefix):
    return {"cls.predictions.decoder.weight": prefix + "embeddings.word_embeddings.weight",
            "cls.predictions.decoder.bias": "cls.predictions.bias"}
