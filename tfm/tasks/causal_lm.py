"""Causal language modelling on a GPT backbone."""

import keras
from keras import ops

from tfm.tasks.task import Task


@keras.saving.register_keras_serializable(package="tfm")
class CausalLM(Task):
    """Next-token logits from a GPT backbone, projected with the tied token embedding.

    Inputs `{token_ids, padding_mask}`; output float32 logits `(B, T, vocabulary_size)`.

    Args:
        backbone: a `tfm.models.GptBackbone`.

    Example:
    >>> lm = CausalLM(tfm.models.GptBackbone.from_preset("gpt2_small", num_layers=1, vocabulary_size=100))
    >>> lm.output_shape
    (None, None, 100)
    """

    def __init__(self, backbone, **kwargs):
        inputs = dict(backbone.input)
        hidden = backbone(inputs)
        logits = backbone.token_embedding(hidden, reverse=True)
        logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.backbone = backbone

    def call_with_cache(self, token_ids, cache, cache_update_index):
        """Logits for `token_ids` at `cache_update_index` over the KV cache: `(logits, hidden, cache)`.

        Args:
            token_ids: int tensor `(B, T)`.
            cache: from `backbone.init_cache`.
            cache_update_index: int or scalar int tensor.
        """
        hidden, cache = self.backbone.call_with_cache(token_ids, cache, cache_update_index)
        logits = ops.cast(self.backbone.token_embedding(hidden, reverse=True), "float32")
        return logits, hidden, cache
