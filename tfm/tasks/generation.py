"""Text generation for `CausalLM` and its SavedModel export: one XLA-compiled decode loop over the static KV cache.

`Decoder` is the only generation loop in tfm: `CausalLM.generate` (through `build_generate_function`, settings
baked in as Python values) and the exported `serving_default` / `beam_search` signatures
(`tfm.export.generation`, settings as tensors) both run it, with the samplers of `tfm.tasks.samplers`, so
the same prompt, settings and seed give the same tokens in Python and in serving.

The whole of a decode (prefill + token loop) is one `tf.function(jit_compile=True)`: the prompt is written
into the cache in one `call_with_cache`, then a `tf.while_loop` feeds one token per step, with the per-layer
`(key, value)` tensors as loop variables (dynamic-update-slice, no per-step cache rebuild). Prompts are
right-padded; decoding starts at the shortest prompt and positions still inside a longer prompt keep their
prompt token (KerasHub's scheme), so every row continues from its own last real token. Step `i` draws with
the stateless seed `(seed, i)` (`i` = the absolute position written), so a row's tokens do not depend on
the padded prompt width.
"""

import keras
import numpy as np
import tensorflow as tf

from tfm.tasks.samplers import (  # noqa: F401  (the samplers' historical import path)
    BeamSampler,
    GreedySampler,
    RandomSampler,
    Sampler,
    TopKSampler,
    TopPSampler,
    get_sampler,
    sample_tokens,
)

_NEG_INF = float("-inf")


def _is_stop(tokens, stop_token_ids):
    if not stop_token_ids:
        return tf.zeros_like(tokens, dtype=tf.bool)
    return tf.reduce_any(tokens[:, None] == tf.constant(stop_token_ids, tf.int32)[None, :], axis=-1)


def _column(x, index):
    """`x[:, index]` for a scalar tensor index (a dynamic slice under XLA; any batch size)."""
    return tf.gather(x, index, axis=1)


def _write(x, index, column):
    """`x[:, index] = column` in place (dynamic-update-slice)."""
    return keras.ops.slice_update(x, [0, index], column[:, None])


def build_generate_function(model, sampler, max_new_tokens, stop_token_ids=(), pad_token_id=0):
    """The compiled `fn(token_ids (B, T) int32, padding_mask (B, T) int32, seed (2,) int64)` -> dict.

    Returns `{"token_ids", "padding_mask"}`, both `(B, T + max_new_tokens)` int32. Each row gets at most
    `max_new_tokens` new tokens after its own prompt and stops after a stop token; later positions hold
    `pad_token_id` with mask 0. Traces once per input shape. An int8 model with tfm's op decodes up to
    8 rows outside XLA (`decodes_outside_xla`); the function then carries both, as `.outside_xla` and
    `.compiled`.

    Args:
        model: a `CausalLM`.
        sampler: a `Sampler`.
        max_new_tokens: int.
        stop_token_ids: tuple of ints.
        pad_token_id: int, written after a row ends.
    """
    from tfm.compression.quantization import decodes_outside_xla

    def generate_with(decoder):
        def generate(token_ids, padding_mask, seed):
            if isinstance(sampler, BeamSampler):
                tokens, mask = decoder.beam_search(token_ids, padding_mask, sampler.num_beams)
            else:
                tokens, mask = decoder.sample(token_ids, padding_mask, sampler, seed)
            return {"token_ids": tokens, "padding_mask": mask}

        return generate

    options = dict(autograph=False, reduce_retracing=False)
    compiled = tf.function(generate_with(Decoder(model, max_new_tokens, stop_token_ids, pad_token_id)),
                           jit_compile=True, **options)
    if not decodes_outside_xla(model, 1):
        return compiled
    # An int8 model decodes a few rows outside XLA, where its products stream int8 bytes
    # (`tfm.kernels`); the prompt pass, all prompt positions at once, stays one XLA cluster inside that loop.
    decoder = Decoder(model, max_new_tokens, stop_token_ids, pad_token_id)
    decoder.prefill = tf.function(decoder.prefill, jit_compile=True, **options)
    outside = tf.function(generate_with(decoder), jit_compile=False, **options)

    def generate_fn(token_ids, padding_mask, seed):
        use = outside if decodes_outside_xla(model, token_ids.shape[0]) else compiled
        return use(token_ids, padding_mask, seed)

    generate_fn.compiled, generate_fn.outside_xla = compiled, outside
    return generate_fn


class Decoder:
    """The decode loops (sampling and beam search), to be traced inside a `tf.function(jit_compile=True)`.

    The Python values given here are static (they size the buffers); the number of new tokens per call
    can be lowered per request with a `limit` tensor (the export's `max_new_tokens` input).

    Args:
        model: a `CausalLM`.
        max_new_tokens: int, new tokens per row at most (the output is `(B, T + max_new_tokens)`).
        stop_token_ids: tuple of ints; a row ends after producing one.
        pad_token_id: int, written after a row ends.
    """

    def __init__(self, model, max_new_tokens, stop_token_ids=(), pad_token_id=0):
        self.model = model
        self.max_new_tokens = int(max_new_tokens)
        self.stop_token_ids = tuple(int(t) for t in stop_token_ids)
        self.pad_token_id = int(pad_token_id)

    def prefill(self, token_ids, padding_mask):
        """Output buffers `(B, T + max_new_tokens)`, prompt lengths `(B,)`, the prompt's KV cache and its
        final hidden states `(B, T, H)`. `T` must be static; `B` may be dynamic."""
        batch, prompt_length = tf.shape(token_ids)[0], token_ids.shape[1]
        new, pad = self.max_new_tokens, self.pad_token_id
        mask = tf.cast(padding_mask, tf.bool)
        lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)  # (B,)
        tokens = tf.pad(tf.where(mask, token_ids, pad), [[0, 0], [0, new]], constant_values=pad)  # (B, total)
        out_mask = tf.pad(tf.cast(mask, tf.int32), [[0, 0], [0, new]])  # (B, total)
        # The whole prompt in one pass. Cache entries at padding positions are rewritten (with the
        # generated token) before any later position reads them.
        cache = self.model.backbone.init_cache(batch, prompt_length + new)
        hidden, cache = self.model.backbone.call_with_cache(token_ids, cache, 0)
        return tokens, out_mask, lengths, cache, hidden

    def commit(self, index, chosen, tokens, out_mask, done, lengths, limit):
        """Writes position `index`: the prompt token, the `chosen (B,)` token, or padding once a row ended."""
        in_prompt = index < lengths
        is_new = ~in_prompt & ~done & (index < lengths + limit)
        column = tf.where(in_prompt, _column(tokens, index), tf.where(is_new, chosen, self.pad_token_id))
        tokens = _write(tokens, index, column)
        out_mask = _write(out_mask, index, tf.cast(in_prompt | is_new, tf.int32))
        return tokens, out_mask, done | (is_new & _is_stop(chosen, self.stop_token_ids))

    def running(self, index, tokens, done, lengths, limit):
        return (index < tokens.shape[1]) & tf.reduce_any(~done & (index < lengths + limit))

    def sample(self, token_ids, padding_mask, sampler, seed, limit=None):
        """Sampled continuations: `(tokens, mask)` int32 `(B, T + max_new_tokens)`.

        Args:
            token_ids, padding_mask: int32 `(B, T)` right-padded prompts.
            sampler: callable `(logits (B, V) float32, seed (2,)) -> (B,)` tokens, e.g. a `Sampler`.
            seed: int64 `(2,)`; step `i` uses `(seed[0], seed[1] + i)`.
            limit: optional int32 scalar tensor <= max_new_tokens, new tokens per row at most.
        """
        limit = self.max_new_tokens if limit is None else limit
        tokens, out_mask, lengths, cache, hidden = self.prefill(token_ids, padding_mask)
        done = tf.zeros_like(lengths, dtype=tf.bool)  # (B,) produced a stop token

        def choose(index, logits):
            step_seed = tf.stack([seed[0], seed[1] + tf.cast(index, seed.dtype)])
            return tf.cast(sampler(logits, step_seed), tf.int32)  # (B,)

        def cond(index, tokens, out_mask, done, cache):
            return self.running(index, tokens, done, lengths, limit)

        def body(index, tokens, out_mask, done, cache):
            previous = _column(tokens, index - 1)[:, None]  # (B, 1)
            logits, _, cache = self.model.call_with_cache(previous, cache, index - 1)  # (B, 1, V)
            chosen = choose(index, logits[:, 0, :])
            tokens, out_mask, done = self.commit(index, chosen, tokens, out_mask, done, lengths, limit)
            return index + 1, tokens, out_mask, done, cache

        start = tf.reduce_min(lengths)  # first position to write
        # The prompt pass already computed position start - 1 (a real token in every row): its logits give
        # the first choice, saving the loop a step that would recompute that position.
        def first():
            logits = self.model.hidden_to_logits(_column(hidden, start - 1))  # (B, V)
            return self.commit(start, choose(start, logits), tokens, out_mask, done, lengths, limit)

        tokens, out_mask, done = tf.cond(start < tokens.shape[1], first, lambda: (tokens, out_mask, done))
        _, tokens, out_mask, _, _ = tf.while_loop(cond, body, (start + 1, tokens, out_mask, done, cache))
        return tokens, out_mask

    def beam_search(self, token_ids, padding_mask, beams, limit=None):
        """The best of `beams` beams per row (total log-probability): `(tokens, mask)` as `sample`.

        Args:
            token_ids, padding_mask: int32 `(B, T)` right-padded prompts.
            beams: int, beams per row (static: the loop runs `B * beams` rows).
            limit: optional int32 scalar tensor <= max_new_tokens.
        """
        limit = self.max_new_tokens if limit is None else limit
        batch, vocab = tf.shape(token_ids)[0], self.model.backbone.vocabulary_size
        tokens, out_mask, lengths, cache, _ = self.prefill(token_ids, padding_mask)
        start = tf.reduce_min(lengths)
        # Beams are rows b * beams + w of a (B * beams) batch; all start as copies of the prompt.
        repeat = lambda x: tf.repeat(x, beams, axis=0)  # noqa: E731
        tokens, out_mask, cache = repeat(tokens), repeat(out_mask), tf.nest.map_structure(repeat, cache)
        row_lengths = repeat(lengths)  # (B * beams,)
        # Only beam 0 is live at first, so the first expansion picks `beams` distinct tokens.
        scores = tf.tile(tf.constant([[0.0] + [_NEG_INF] * (beams - 1)]), [batch, 1])  # (B, beams)
        done = tf.zeros_like(row_lengths, dtype=tf.bool)
        # A beam that does not extend keeps its score through one placeholder continuation.
        keep = tf.one_hot(self.pad_token_id, vocab, on_value=0.0, off_value=_NEG_INF)  # (V,)
        row_offset = tf.range(batch)[:, None] * beams  # (B, 1)

        def cond(index, tokens, out_mask, done, scores, cache):
            return self.running(index, tokens, done, row_lengths, limit)

        def body(index, tokens, out_mask, done, scores, cache):
            previous = _column(tokens, index - 1)[:, None]  # (B * beams, 1)
            logits, _, cache = self.model.call_with_cache(previous, cache, index - 1)
            log_probs = tf.nn.log_softmax(logits[:, 0, :])  # (B * beams, V)
            extends = ~done & (index >= row_lengths) & (index < row_lengths + limit)
            step = tf.where(extends[:, None], log_probs, keep[None, :])
            candidates = tf.reshape(tf.reshape(scores, [-1, 1]) + step, [batch, beams * vocab])
            top_scores, flat = tf.math.top_k(candidates, k=beams)  # (B, beams)
            # Rows still inside their prompt keep the beam order and scores.
            generating = (index >= lengths)[:, None]  # (B, 1)
            parents = tf.where(generating, flat // vocab, tf.range(beams)[None, :])
            scores = tf.where(generating, top_scores, scores)
            order = tf.reshape(parents + row_offset, [-1])  # (B * beams,)
            tokens, out_mask, done = tf.gather(tokens, order), tf.gather(out_mask, order), tf.gather(done, order)
            cache = tf.nest.map_structure(lambda x: tf.gather(x, order), cache)
            chosen = tf.reshape(flat % vocab, [-1])  # (B * beams,)
            tokens, out_mask, done = self.commit(index, chosen, tokens, out_mask, done, row_lengths, limit)
            return index + 1, tokens, out_mask, done, scores, cache

        loop_vars = (start, tokens, out_mask, done, scores, cache)
        _, tokens, out_mask, _, scores, _ = tf.while_loop(cond, body, loop_vars)
        best = tf.argmax(scores, axis=1, output_type=tf.int32) + row_offset[:, 0]  # (B,)
        return tf.gather(tokens, best), tf.gather(out_mask, best)


def prepare_prompts(token_ids, padding_mask=None, pad_token_id=0):
    """Right-padded `(token_ids, padding_mask)` int32 numpy arrays from a `(B, T)` array, a dict with
    both keys, a `tf.RaggedTensor` or a list of token lists.

    Args:
        token_ids: prompts in one of the forms above.
        padding_mask: optional `(B, T)` mask for an array input (default: all ones).
        pad_token_id: int used to pad ragged prompts.
    """
    if isinstance(token_ids, dict):
        token_ids, padding_mask = token_ids["token_ids"], token_ids.get("padding_mask", padding_mask)
    if isinstance(token_ids, tf.RaggedTensor):
        token_ids = token_ids.to_list()
    if isinstance(token_ids, (list, tuple)) and token_ids and isinstance(token_ids[0], (list, tuple, np.ndarray)):
        if padding_mask is not None:
            raise ValueError("padding_mask is implied by ragged prompts; do not pass one.")
        width = max(len(row) for row in token_ids)
        padding_mask = np.array([[1] * len(row) + [0] * (width - len(row)) for row in token_ids], "int32")
        token_ids = np.array([list(row) + [pad_token_id] * (width - len(row)) for row in token_ids], "int32")
    token_ids = np.asarray(token_ids, "int32")
    if token_ids.ndim != 2:
        raise ValueError(f"token_ids must be (batch, length); got shape {token_ids.shape}.")
    padding_mask = np.ones_like(token_ids) if padding_mask is None else np.asarray(padding_mask).astype("int32")
    if padding_mask.shape != token_ids.shape:
        raise ValueError(f"padding_mask shape {padding_mask.shape} != token_ids shape {token_ids.shape}.")
    if (padding_mask[:, 0] == 0).any() or (np.diff(padding_mask, axis=1) > 0).any():
        raise ValueError("Prompts must be right-padded and non-empty (padding_mask 1...1 0...0 per row).")
    return token_ids, padding_mask
