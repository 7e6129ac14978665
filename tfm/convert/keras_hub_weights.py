"""KerasHub <-> tfm weight maps for BERT and GPT-2 backbones (and the MLM head), and the backbone import
that `Backbone.from_preset(KERASHUB_DIR)` uses.

This module imports no tfm model or task module: a backbone class is passed in, so `tfm.models` can use it
without an import cycle and without loading the task heads (those convert in `tfm.convert.keras_hub`).
The only structural difference is attention: KerasHub keeps separate query/key/value kernels
`(H, heads, head_dim)`, tfm one fused `(H, 3H)` kernel. Everything else maps one to one.
"""

import numpy as np

# Per-block weights: tfm local path -> KerasHub local path, for each family.
_BERT_BLOCK = {
    "attention_layer_norm/gamma": "self_attention_layer_norm/gamma",
    "attention_layer_norm/beta": "self_attention_layer_norm/beta",
    "feedforward_layer_norm/gamma": "feedforward_layer_norm/gamma",
    "feedforward_layer_norm/beta": "feedforward_layer_norm/beta",
    "intermediate_dense/kernel": "feedforward_intermediate_dense/kernel",
    "intermediate_dense/bias": "feedforward_intermediate_dense/bias",
    "output_dense/kernel": "feedforward_output_dense/kernel",
    "output_dense/bias": "feedforward_output_dense/bias",
}
_BERT_TOP = {
    "token_embedding/embeddings": "token_embedding/embeddings",
    "position_embedding/embeddings": "position_embedding/embeddings",
    "segment_embedding/embeddings": "segment_embedding/embeddings",
    "embeddings_layer_norm/gamma": "embeddings_layer_norm/gamma",
    "embeddings_layer_norm/beta": "embeddings_layer_norm/beta",
    "pooled_dense/kernel": "pooled_dense/kernel",
    "pooled_dense/bias": "pooled_dense/bias",
}
_GPT_TOP = {
    "token_embedding/embeddings": "token_embedding/embeddings",
    "position_embedding/embeddings": "position_embedding/embeddings",
    "layer_norm/gamma": "layer_norm/gamma",
    "layer_norm/beta": "layer_norm/beta",
}
_MLM_HEAD = {
    "masked_lm_head/output_bias": "mlm_head/output_bias",
    "masked_lm_head/dense/kernel": "mlm_head/intermediate_dense/kernel",
    "masked_lm_head/dense/bias": "mlm_head/intermediate_dense/bias",
    "masked_lm_head/layer_norm/gamma": "mlm_head/intermediate_layer_norm/gamma",
    "masked_lm_head/layer_norm/beta": "mlm_head/intermediate_layer_norm/beta",
}


def _weights_by_path(model):
    return {w.path: w for w in model.weights}


def _name_map(family, num_layers, with_mlm_head):
    """tfm path -> KerasHub path for every weight except fused attention."""
    top = dict(_BERT_TOP if family == "bert" else _GPT_TOP)
    attention = "self_attention_layer" if family == "bert" else "self_attention"
    block = _BERT_BLOCK if family == "bert" else {
        **_BERT_BLOCK,
        "attention_layer_norm/gamma": "self_attention_layer_norm/gamma",
        "attention_layer_norm/beta": "self_attention_layer_norm/beta",
    }
    for i in range(num_layers):
        prefix = f"transformer_layer_{i}/"
        for ours, theirs in block.items():
            top[prefix + ours] = prefix + theirs
        top[prefix + "self_attention/attention_output/kernel"] = prefix + attention + "/attention_output/kernel"
        top[prefix + "self_attention/attention_output/bias"] = prefix + attention + "/attention_output/bias"
    if with_mlm_head:
        top.update(_MLM_HEAD)
    return top, attention


def copy_weights(tfm_model, kh_model, family, num_layers, with_mlm_head, to_tfm):
    ours, theirs = _weights_by_path(tfm_model), _weights_by_path(kh_model)
    names, attention = _name_map(family, num_layers, with_mlm_head)
    copied = set()
    for our_path, their_path in names.items():
        src, dst = (theirs[their_path], ours[our_path]) if to_tfm else (ours[our_path], theirs[their_path])
        dst.assign(np.reshape(np.asarray(src), dst.shape))  # attention_output (h, d, H) <-> (H, H)
        copied.add(our_path)
    for i in range(num_layers):
        qkv_path = f"transformer_layer_{i}/self_attention/qkv/"
        kh_prefix = f"transformer_layer_{i}/{attention}/"
        for kind in ("kernel", "bias"):
            parts = [theirs[f"{kh_prefix}{p}/{kind}"] for p in ("query", "key", "value")]
            fused = ours[qkv_path + kind]
            if to_tfm:
                flat = [np.reshape(np.asarray(p), tuple(fused.shape[:-1]) + (-1,)) for p in parts]
                fused.assign(np.concatenate(flat, axis=-1))
            else:
                for part, value in zip(parts, np.split(np.asarray(fused), 3, axis=-1)):
                    part.assign(np.reshape(value, part.shape))
            copied.add(qkv_path + kind)
    missing = set(ours) - copied
    if missing:
        raise ValueError(f"Conversion left tfm weights unset: {sorted(missing)}")


def _bert_args(backbone):
    return {k: getattr(backbone, k) for k in (
        "vocabulary_size", "num_layers", "num_heads", "hidden_dim", "intermediate_dim", "dropout",
        "max_sequence_length", "num_segments")}


def _gpt_args(backbone):
    return {k: getattr(backbone, k) for k in (
        "vocabulary_size", "num_layers", "num_heads", "hidden_dim", "intermediate_dim", "dropout",
        "max_sequence_length")}


# KerasHub backbone class -> (family, constructor hyperparameters read from it, fixed tfm arguments).
BACKBONES = {
    "BertBackbone": ("bert", ("vocabulary_size", "num_layers", "num_heads", "hidden_dim", "intermediate_dim",
                              "dropout", "max_sequence_length", "num_segments"), {"activation": "gelu_approximate"}),
    "GPT2Backbone": ("gpt", ("vocabulary_size", "num_layers", "num_heads", "hidden_dim", "intermediate_dim",
                             "dropout", "max_sequence_length"), {}),
}


def backbone_args(model, keras_hub_class):
    """The hyperparameters shared by a tfm backbone and its KerasHub twin `keras_hub_class` (a BACKBONES key)."""
    return {k: getattr(model, k) for k in BACKBONES[keras_hub_class][1]}


def backbone_from_keras_hub(model, cls):
    """The tfm backbone of class `cls` (with `KERAS_HUB_CLASS`) equal to a KerasHub backbone, same weights."""
    name = cls.KERAS_HUB_CLASS
    if type(model).__name__ != name:
        raise ValueError(f"a KerasHub {type(model).__name__} cannot become a {cls.__name__} (needs a {name})")
    family, _, fixed = BACKBONES[name]
    ours = cls(**backbone_args(model, name), **fixed, dtype=getattr(model, "dtype_policy", None))
    copy_weights(ours, model, family, model.num_layers, with_mlm_head=False, to_tfm=True)
    return ours


def backbone_from_keras_hub_preset(directory, cls):
    """Loads a local KerasHub preset directory (from `save_to_preset`) as a tfm backbone of class `cls`."""
    import keras_hub

    model = keras_hub.models.Backbone.from_preset(directory)
    if type(model).__name__ != cls.KERAS_HUB_CLASS:
        raise ValueError(f"Preset directory {directory} holds a {type(model).__name__}, not a {cls.__name__} "
                         f"(which converts from a KerasHub {cls.KERAS_HUB_CLASS}).")
    return backbone_from_keras_hub(model, cls)
