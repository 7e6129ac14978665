"""Conversion between KerasHub models and tfm's own (BERT, GPT-2; backbones and LM tasks), both ways.

The weight maps are in `tfm.convert.keras_hub_weights` (which the backbones' `from_preset` uses alone).
"""

from tfm.convert.keras_hub_weights import backbone_args, backbone_from_keras_hub, copy_weights
from tfm.models import BertBackbone, GptBackbone
from tfm.tasks import CausalLM, MaskedLM

def from_keras_hub(model):
    """Returns the tfm model equal to a KerasHub one, with the same weights.

    Args:
        model: a `keras_hub.models.BertBackbone`, `GPT2Backbone`, `BertMaskedLM` or `GPT2CausalLM`.

    Example:
    >>> import keras_hub
    >>> kh = keras_hub.models.BertBackbone(vocabulary_size=100, num_layers=2, num_heads=2,
    ...                                     hidden_dim=8, intermediate_dim=16)
    >>> ours = tfm.convert.from_keras_hub(kh)   # a tfm.models.BertBackbone, same outputs
    >>> type(ours).__name__, ours.count_params() == kh.count_params()
    ('BertBackbone', True)
    """
    import keras_hub

    if isinstance(model, (keras_hub.models.BertMaskedLM, keras_hub.models.GPT2CausalLM)):
        backbone = from_keras_hub(model.backbone)
        if isinstance(model, keras_hub.models.BertMaskedLM):
            task = MaskedLM(backbone, activation="gelu")
            copy_weights(task, model, "bert", backbone.num_layers, with_mlm_head=True, to_tfm=True)
            return task
        return CausalLM(backbone)
    if isinstance(model, keras_hub.models.BertBackbone):
        return backbone_from_keras_hub(model, BertBackbone)
    if isinstance(model, keras_hub.models.GPT2Backbone):
        return backbone_from_keras_hub(model, GptBackbone)
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
            copy_weights(model, task, "bert", backbone.num_layers, with_mlm_head=True, to_tfm=False)
            return task
        return keras_hub.models.GPT2CausalLM(backbone)
    if isinstance(model, BertBackbone):
        if model.activation != "gelu_approximate" and not allow_gelu_approximation:
            raise ValueError(
                f"This BertBackbone uses activation={model.activation!r}; KerasHub's BertBackbone only has "
                f"tanh GELU. Pass allow_gelu_approximation=True to convert anyway."
            )
        theirs = keras_hub.models.BertBackbone(**backbone_args(model, "BertBackbone"), dtype=dtype)
        copy_weights(model, theirs, "bert", model.num_layers, with_mlm_head=False, to_tfm=False)
        return theirs
    if isinstance(model, GptBackbone):
        theirs = keras_hub.models.GPT2Backbone(**backbone_args(model, "GPT2Backbone"), dtype=dtype)
        copy_weights(model, theirs, "gpt", model.num_layers, with_mlm_head=False, to_tfm=False)
        return theirs
    raise TypeError(f"to_keras_hub supports tfm BertBackbone, GptBackbone, MaskedLM and CausalLM; got {type(model).__name__}.")


def load_keras_hub_preset(directory):
    """Loads a local KerasHub preset directory (from `save_to_preset`) as a tfm model.

    Args:
        directory: str, path holding KerasHub's `config.json` and weights.
    """
    import keras_hub

    return from_keras_hub(keras_hub.models.Backbone.from_preset(directory))
