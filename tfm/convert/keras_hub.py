"""Weight conversion between KerasHub models and tfm's own (BERT, GPT-2; backbones and LM tasks).

The only structural difference is attention: KerasHub keeps separate query/key/value kernels
`(H, heads, head_dim)`, tfm one fused `(H, 3H)` kernel. Everything else maps one to one.
"""

import numpy as np

from tfm.models import BertBackbone, GptBackbone
from tfm.tasks import CausalLM, MaskedLM

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


def _copy(tfm_model, kh_model, family, num_layers, with_mlm_head, to_tfm):
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


def from_keras_hub(model):
    """Returns the tfm model equal to a KerasHub one, with the same weights.

    Args:
        model: a `keras_hub.models.BertBackbone`, `GPT2Backbone`, `BertMaskedLM` or `GPT2CausalLM`.

    Example:
    >>> kh = keras_hub.models.BertBackbone(vocabulary_size=100, num_layers=2, num_heads=2,
    ...                                     hidden_dim=8, intermediate_dim=16)
    >>> ours = tfm.convert.from_keras_hub(kh)   # a tfm.models.BertBackbone, same outputs
    """
    import keras_hub

    dtype = getattr(model, "dtype_policy", None)
    if isinstance(model, (keras_hub.models.BertMaskedLM, keras_hub.models.GPT2CausalLM)):
        backbone = from_keras_hub(model.backbone)
        if isinstance(model, keras_hub.models.BertMaskedLM):
            task = MaskedLM(backbone, activation="gelu")
            _copy(task, model, "bert", backbone.num_layers, with_mlm_head=True, to_tfm=True)
            return task
        return CausalLM(backbone)
    if isinstance(model, keras_hub.models.BertBackbone):
        ours = BertBackbone(**_bert_args(model), activation="gelu_approximate", dtype=dtype)
        _copy(ours, model, "bert", model.num_layers, with_mlm_head=False, to_tfm=True)
        return ours
    if isinstance(model, keras_hub.models.GPT2Backbone):
        ours = GptBackbone(**_gpt_args(model), dtype=dtype)
        _copy(ours, model, "gpt", model.num_layers, with_mlm_head=False, to_tfm=True)
        return ours
    raise TypeError(
        f"from_keras_hub supports BertBackbone, GPT2Backbone, BertMaskedLM and GPT2CausalLM; got {type(model).__name__}."
    )


def to_keras_hub(model, allow_gelu_approximation=False):
    """Returns the KerasHub model equal to a tfm one, with the same weights.

    Args:
        model: a `tfm.models.BertBackbone`, `GptBackbone`, `tfm.tasks.MaskedLM` or `CausalLM`.
        allow_gelu_approximation: bool. KerasHub's BERT uses tanh GELU; a tfm BERT with exact GELU
            converts only when this is set, accepting slightly different outputs.
    """
    import keras_hub

    dtype = getattr(model, "dtype_policy", None)
    if isinstance(model, (MaskedLM, CausalLM)):
        backbone = to_keras_hub(model.backbone, allow_gelu_approximation)
        if isinstance(model, MaskedLM):
            task = keras_hub.models.BertMaskedLM(backbone)
            _copy(model, task, "bert", backbone.num_layers, with_mlm_head=True, to_tfm=False)
            return task
        return keras_hub.models.GPT2CausalLM(backbone)
    if isinstance(model, BertBackbone):
        if model.activation != "gelu_approximate" and not allow_gelu_approximation:
            raise ValueError(
                f"This BertBackbone uses activation={model.activation!r}; KerasHub's BertBackbone only has "
                f"tanh GELU. Pass allow_gelu_approximation=True to convert anyway."
            )
        theirs = keras_hub.models.BertBackbone(**_bert_args(model), dtype=dtype)
        _copy(model, theirs, "bert", model.num_layers, with_mlm_head=False, to_tfm=False)
        return theirs
    if isinstance(model, GptBackbone):
        theirs = keras_hub.models.GPT2Backbone(**_gpt_args(model), dtype=dtype)
        _copy(model, theirs, "gpt", model.num_layers, with_mlm_head=False, to_tfm=False)
        return theirs
    raise TypeError(f"to_keras_hub supports tfm BertBackbone, GptBackbone, MaskedLM and CausalLM; got {type(model).__name__}.")


def load_keras_hub_preset(directory):
    """Loads a local KerasHub preset directory (from `save_to_preset`) as a tfm model.

    Args:
        directory: str, path holding KerasHub's `config.json` and weights.
    """
    import keras_hub

    return from_keras_hub(keras_hub.models.Backbone.from_preset(directory))
