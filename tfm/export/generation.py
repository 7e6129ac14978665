"""CausalLM serving: prompt strings -> generated text, with the decode loop XLA-compiled inside the export.

The loop is `tfm.tasks.generation`'s (prefill the prompt into the static KV cache, then one token per
`tf.while_loop` step with `CausalLM.call_with_cache`), rewritten so the settings are tensors: a served
model takes `max_new_tokens`, `temperature`, `top_k`, `top_p` and `seed` per request, whereas
`CausalLM.generate_function` bakes them into the compiled function as Python values.
"""

import numpy as np
import tensorflow as tf

from tfm.export.serving import STRINGS, ServingModule
from tfm.export.text_ops import clean_text

_NEG_INF = float("-inf")


def sample_tokens(logits, temperature, top_k, top_p, seed):
    """Next tokens `(B,)` from float32 logits `(B, V)`.

    `temperature <= 0` is greedy (argmax, as `GreedySampler`); otherwise a Gumbel-max draw from
    `softmax(logits / temperature)` restricted to the `top_k` most likely tokens (`top_k <= 0`: all) and
    then to the nucleus of mass `top_p` (`top_p >= 1`: all; the top token is always kept).
    """
    def greedy():
        return tf.argmax(logits, axis=-1, output_type=tf.int32)

    def draw():
        vocabulary = logits.shape[-1]
        values, indices = tf.math.top_k(logits / temperature, k=vocabulary)  # sorted, descending
        rank = tf.range(vocabulary)[None, :]
        values = tf.where((top_k <= 0) | (rank < top_k), values, _NEG_INF)
        mass_before = tf.cumsum(tf.nn.softmax(values), axis=-1, exclusive=True)
        values = tf.where((top_p >= 1.0) | (mass_before < top_p), values, _NEG_INF)
        uniform = tf.random.stateless_uniform(tf.shape(values), seed, minval=np.finfo("float32").tiny, maxval=1.0)
        choice = tf.argmax(values - tf.math.log(-tf.math.log(uniform)), axis=-1, output_type=tf.int32)
        return tf.gather(indices, choice, batch_dims=1)

    return tf.cond(temperature > 0.0, draw, greedy)


def _column(x, index):
    return tf.gather(x, index, axis=1)


def _write(x, index, column):
    """`x[:, index] = column` (a select: shape-agnostic, and cheap next to a decoder step)."""
    return tf.where(tf.equal(tf.range(tf.shape(x)[1]), index)[None, :], column[:, None], x)


class CausalLMModule(ServingModule):
    """`prompt` + settings -> `text` (the continuation only), `token_ids`, `num_tokens`.

    Signature inputs: `prompt` string `(B,)`, `max_new_tokens` int32 scalar (clipped to
    `[0, max_new_tokens]` of the export), `temperature` float32 (0 = greedy), `top_k` int32 (0 = off),
    `top_p` float32 (1 = off), `seed` int64 (same seed, same text). Outputs: `text` string `(B,)` (valid
    UTF-8: bytes of a character cut off by the token limit become U+FFFD),
    `token_ids` int32 `(B, max_new_tokens)` (-1 after the end), `num_tokens` int32 `(B,)`. Generation
    of a row stops after the end token (`<|endoftext|>` / eos), which is not part of the outputs.
    Prompts keep their last `sequence_length - max_new_tokens` tokens; an empty prompt is the end token
    alone (a document start, as in causal-LM packing).

    Args:
        max_new_tokens: int, most tokens a request can ask for (fixes the compiled buffer sizes).
    """

    task_name = "causal_lm"

    def __init__(self, task, tokenizer, sequence_length, max_new_tokens=64):
        super().__init__(task, tokenizer, sequence_length)
        if tokenizer.end_id is None:
            raise ValueError("the tokenizer has no end token to start empty prompts and stop generation")
        self.max_new_tokens = int(max_new_tokens)
        self.prompt_length = self.sequence_length - self.max_new_tokens
        if self.max_new_tokens < 1 or self.prompt_length < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} must be in [1, sequence_length - 1] "
                             f"(sequence_length={sequence_length})")
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.end_id
        self.decode = tf.function(self._decode, jit_compile=True, autograph=False)

    def _decode(self, token_ids, padding_mask, max_new_tokens, temperature, top_k, top_p, seed):
        """Right-padded `(B, P)` prompts -> `(tokens, mask)` `(B, P + max_new_tokens)`, as `_Decoder.sample`."""
        backbone, pad, end = self.model.backbone, self.pad_id, self.tokenizer.end_id
        batch, total = tf.shape(token_ids)[0], self.sequence_length
        mask = tf.cast(padding_mask, tf.bool)
        lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)  # (B,)
        limit = lengths + max_new_tokens
        tokens = tf.pad(tf.where(mask, token_ids, pad), [[0, 0], [0, self.max_new_tokens]], constant_values=pad)
        out_mask = tf.pad(tf.cast(mask, tf.int32), [[0, 0], [0, self.max_new_tokens]])
        cache = backbone.init_cache(batch, total)
        _, cache = backbone.call_with_cache(token_ids, cache, 0)  # the whole prompt in one pass
        done = tf.zeros_like(lengths, dtype=tf.bool)

        def cond(index, tokens, out_mask, done, cache):
            return (index < total) & tf.reduce_any(~done & (index < limit))

        def body(index, tokens, out_mask, done, cache):
            logits, _, cache = self.model.call_with_cache(_column(tokens, index - 1)[:, None], cache, index - 1)
            step_seed = tf.stack([seed, tf.cast(index, tf.int64)])
            chosen = sample_tokens(tf.cast(logits[:, 0, :], tf.float32), temperature, top_k, top_p, step_seed)
            in_prompt = index < lengths
            is_new = ~in_prompt & ~done & (index < limit)
            column = tf.where(in_prompt, _column(tokens, index), tf.where(is_new, chosen, pad))
            tokens = _write(tokens, index, column)
            out_mask = _write(out_mask, index, tf.cast(in_prompt | is_new, tf.int32))
            return index + 1, tokens, out_mask, done | (is_new & tf.equal(chosen, end)), cache

        start = tf.reduce_min(lengths)
        _, tokens, out_mask, _, _ = tf.while_loop(cond, body, (start, tokens, out_mask, done, cache))
        return tokens, out_mask

    def prompt_ids(self, prompt):
        """Right-padded `(B, P)` ids and mask: each prompt's last P tokens, the end token if empty."""
        ids = self.tokenizer.tokenize(clean_text(prompt))[:, -self.prompt_length:]
        empty = tf.cast(tf.equal(ids.row_lengths(), 0), tf.int64)
        starts = tf.RaggedTensor.from_row_lengths(tf.fill([tf.reduce_sum(empty)], self.tokenizer.end_id), empty)
        ids = tf.concat([starts, ids], axis=1)
        shape = [None, self.prompt_length]
        mask = tf.ones_like(ids).to_tensor(0, shape=shape)
        return ids.to_tensor(self.pad_id, shape=shape), mask

    def generate(self, prompt, max_new_tokens, temperature, top_k, top_p, seed):
        token_ids, mask = self.prompt_ids(prompt)
        max_new_tokens = tf.clip_by_value(max_new_tokens, 0, self.max_new_tokens)
        tokens, out_mask = self.decode(token_ids, mask, max_new_tokens, temperature, top_k, top_p, seed)
        lengths = tf.reduce_sum(mask, axis=1)
        new = (tf.range(self.sequence_length)[None, :] >= lengths[:, None]) & tf.equal(out_mask, 1)
        new &= tf.not_equal(tokens, self.tokenizer.end_id)
        generated = tf.ragged.boolean_mask(tokens, new)
        # Byte-level tokens can stop inside a character: clean, so every output string is valid UTF-8.
        return {"text": clean_text(self.tokenizer.detokenize(generated)),
                "token_ids": generated.to_tensor(-1, shape=[None, self.max_new_tokens]),
                "num_tokens": tf.cast(generated.row_lengths(), tf.int32)}

    def signatures(self):
        scalar = lambda dtype: tf.TensorSpec([], dtype)  # noqa: E731
        specs = [STRINGS, scalar(tf.int32), scalar(tf.float32), scalar(tf.int32), scalar(tf.float32), scalar(tf.int64)]
        serve = tf.function(self.generate, input_signature=specs)
        return {"serving_default": serve.get_concrete_function()}

    def metadata(self):
        return {**super().metadata(), "inputs": ["prompt", "max_new_tokens", "temperature", "top_k", "top_p",
                                                 "seed"],
                "max_new_tokens": self.max_new_tokens, "prompt_length": self.prompt_length}
