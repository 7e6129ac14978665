"""Causal language modelling on a GPT backbone, with compiled text generation (`CausalLM.generate`)."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfm.tasks import generation
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

    def metrics_from_sums(self, sums):
        """Mean token loss, next-token accuracy and perplexity (exp of the mean loss)."""
        import math

        metrics = super().metrics_from_sums(sums)
        metrics["perplexity"] = math.exp(min(metrics["loss"], 50.0))
        return metrics

    def call_with_cache(self, token_ids, cache, cache_update_index):
        """Logits for `token_ids` at `cache_update_index` over the KV cache: `(logits, hidden, cache)`.

        Args:
            token_ids: int tensor `(B, T)`.
            cache: from `backbone.init_cache`.
            cache_update_index: int or scalar int tensor.
        """
        hidden, cache = self.backbone.call_with_cache(token_ids, cache, cache_update_index)
        return self.hidden_to_logits(hidden), hidden, cache

    def hidden_to_logits(self, hidden):
        """Float32 vocabulary logits from final hidden states `(..., hidden_dim)` (the tied projection)."""
        return ops.cast(self.backbone.token_embedding(hidden, reverse=True), "float32")

    def reset_compiled_functions(self):
        """`Task.reset_compiled_functions`, and the compiled `generate` loops."""
        super().reset_compiled_functions()
        self.__dict__.pop("_generate_functions", None)

    def generate_function(self, max_new_tokens, sampler="greedy", stop_token_ids=None, pad_token_id=0):
        """The cached `fn(token_ids, padding_mask, seed)` behind `generate` (for export/benchmarks): XLA-compiled,
        except that an int8 weight-only model decodes up to 8 rows outside XLA on tfm's op (`.outside_xla`, `.compiled`).

        One function per `(max_new_tokens, sampler config, stop ids, pad id)`; it retraces only
        for a new input shape. See `tfm.tasks.generation.build_generate_function` (its loop,
        `tfm.tasks.generation.Decoder`, is also the SavedModel export's).

        Args:
            max_new_tokens: int.
            sampler: str or `tfm.tasks.generation.Sampler`.
            stop_token_ids: optional iterable of ints.
            pad_token_id: int.
        """
        sampler = generation.get_sampler(sampler)
        stop_token_ids = tuple(sorted(int(t) for t in (stop_token_ids or ())))
        key = (int(max_new_tokens), sampler.cache_key(), stop_token_ids, int(pad_token_id))
        functions = self.__dict__.get("_generate_functions")
        if functions is None:  # a plain dict outside Keras attribute tracking
            functions = {}
            object.__setattr__(self, "_generate_functions", functions)
        if key not in functions:
            functions[key] = generation.build_generate_function(
                self, sampler, max_new_tokens, stop_token_ids, pad_token_id
            )
        return functions[key]

    def generate(
        self,
        token_ids,
        max_new_tokens,
        sampler="greedy",
        seed=None,
        stop_token_ids=None,
        padding_mask=None,
        temperature=None,
        top_k=None,
        top_p=None,
        num_beams=None,
        pad_token_id=0,
    ):
        """Continues right-padded prompts by up to `max_new_tokens` tokens each, in one compiled XLA loop.

        Args:
            token_ids: int `(B, T)` prompts (right-padded, see `padding_mask`), a dict with `token_ids`
                and `padding_mask`, a `tf.RaggedTensor` or a list of token lists.
            max_new_tokens: int, new tokens per row at most.
            sampler: `"greedy"`, `"temperature"`, `"top_k"`, `"top_p"`, `"beam"` or a
                `tfm.tasks.generation.Sampler` (e.g. `TopKSampler(k=10, temperature=0.8)`).
            seed: optional int; the same seed gives the same samples (stateless random ops), also in the
                exported `serving_default` signature given the sampler's settings (`Sampler.settings()`).
            stop_token_ids: optional iterable of ints; a row ends after producing one of them.
            padding_mask: optional int `(B, T)`, 1 for prompt tokens (default all ones).
            temperature, top_k, top_p, num_beams: settings for a sampler given by name.
            pad_token_id: int, filled in after each row ends (where the output mask is 0).

        Returns:
            `{"token_ids": (B, T + max_new_tokens) int32, "padding_mask": same shape int32}` numpy
            arrays: prompt, then the generated tokens (mask 1), then padding (mask 0).

        Example:
        >>> lm = CausalLM(tfm.models.GptBackbone.from_preset("gpt2_small", num_layers=1, vocabulary_size=100))
        >>> lm.generate([[5, 6, 7], [8]], max_new_tokens=4, sampler="top_k", top_k=10, seed=0)["token_ids"].shape
        (2, 7)
        """
        sampler = generation.get_sampler(sampler, temperature, top_k=top_k, top_p=top_p, num_beams=num_beams)
        token_ids, padding_mask = generation.prepare_prompts(token_ids, padding_mask, pad_token_id)
        if token_ids.shape[1] + max_new_tokens > self.backbone.max_sequence_length:
            raise ValueError(
                f"prompt length {token_ids.shape[1]} + max_new_tokens {max_new_tokens} exceeds "
                f"max_sequence_length {self.backbone.max_sequence_length}."
            )
        if seed is None:
            seed = np.random.randint(0, 2**31 - 1)
        fn = self.generate_function(max_new_tokens, sampler, stop_token_ids, pad_token_id)
        outputs = fn(tf.constant(token_ids), tf.constant(padding_mask), tf.constant([int(seed), 0], tf.int64))
        return {key: value.numpy() for key, value in outputs.items()}
