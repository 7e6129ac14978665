"""CausalLM serving: prompt strings -> generated text, with the decode loop XLA-compiled inside the export.

The loop and the sampling rule are `CausalLM.generate`'s own (`tfm.tasks.generation.Decoder` and
`tfm.tasks.samplers.sample_tokens`), run with the settings as tensors, so one export serves every setting
and answers as `generate` does: for the same prompt ids, `serving_default` with `temperature=t, top_k=k,
top_p=p, seed=S` gives the tokens of `generate(..., sampler=..., seed=S)` with the sampler of the same
settings (`GreedySampler` = `temperature=0`, `RandomSampler(t)`, `TopKSampler(k, t)`, `TopPSampler(p, k, t)`),
and `beam_search` those of `generate(..., sampler=BeamSampler(num_beams))`.

Signatures (as Hugging Face's `generate(do_sample=..., num_beams=...)` splits them): `serving_default`
samples or decodes greedily with per-request settings; an export made with `num_beams=n` (the beam count
sizes the compiled batch, so it is fixed at export time, as in KerasHub's `BeamSampler`) also has
`beam_search`, which takes `prompt` and `max_new_tokens` and returns the same outputs.
"""

import tensorflow as tf

from tfm.export.serving import STRINGS, ServingModule
from tfm.export.text_ops import clean_text
from tfm.tasks.generation import Decoder
from tfm.tasks.samplers import sample_tokens  # noqa: F401  (historical import path of the export's sampler)


class CausalLMModule(ServingModule):
    """`prompt` + settings -> `text` (the continuation only), `token_ids`, `num_tokens`.

    `serving_default` inputs: `prompt` string `(B,)`, `max_new_tokens` int32 scalar (clipped to
    `[0, max_new_tokens]` of the export), `temperature` float32 (0 = greedy), `top_k` int32 (0 = off),
    `top_p` float32 (1 = off), `seed` int64 (same seed, same text). `beam_search` inputs (exports with
    `num_beams`): `prompt`, `max_new_tokens`. Outputs: `text` string `(B,)` (valid UTF-8: bytes of a
    character cut off by the token limit become U+FFFD), `token_ids` int32 `(B, max_new_tokens)` (-1 after
    the end), `num_tokens` int32 `(B,)`. Generation of a row stops after the end token (`<|endoftext|>` /
    eos), which is not part of the outputs. Prompts keep their last `sequence_length - max_new_tokens`
    tokens; an empty prompt is the end token alone (a document start, as in causal-LM packing).

    Args:
        max_new_tokens: int, most tokens a request can ask for (fixes the compiled buffer sizes).
        num_beams: optional int >= 1; adds the `beam_search` signature with this many beams.
    """

    task_name = "causal_lm"

    def __init__(self, task, tokenizer, sequence_length, max_new_tokens=64, num_beams=None):
        super().__init__(task, tokenizer, sequence_length)
        if tokenizer.end_token_id is None:
            raise ValueError("the tokenizer has no end token to start empty prompts and stop generation")
        self.max_new_tokens = int(max_new_tokens)
        self.prompt_length = self.sequence_length - self.max_new_tokens
        if self.max_new_tokens < 1 or self.prompt_length < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} must be in [1, sequence_length - 1] "
                             f"(sequence_length={sequence_length})")
        if num_beams is not None and int(num_beams) < 1:
            raise ValueError(f"num_beams must be >= 1, got {num_beams}")
        self.num_beams = None if num_beams is None else int(num_beams)
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.end_token_id
        # A plain object (not tracked): the model it holds is saved as `self.model`.
        self._decoder = Decoder(task, self.max_new_tokens, stop_token_ids=(tokenizer.end_token_id,),
                                pad_token_id=self.pad_id)
        self.decode = tf.function(self._decode, jit_compile=True, autograph=False)
        self.decode_beams = tf.function(self._decode_beams, jit_compile=True, autograph=False)

    def _decode(self, token_ids, padding_mask, max_new_tokens, temperature, top_k, top_p, seed):
        """Right-padded `(B, P)` prompts -> `(tokens, mask)` `(B, P + max_new_tokens)`: `Decoder.sample`."""
        def sampler(logits, step_seed):
            return sample_tokens(logits, temperature, top_k, top_p, step_seed)

        seed = tf.stack([seed, tf.zeros_like(seed)])  # generate's `(seed, 0)`
        return self._decoder.sample(token_ids, padding_mask, sampler, seed, limit=max_new_tokens)

    def _decode_beams(self, token_ids, padding_mask, max_new_tokens):
        return self._decoder.beam_search(token_ids, padding_mask, self.num_beams, limit=max_new_tokens)

    def prompt_ids(self, prompt):
        """Right-padded `(B, P)` ids and mask: each prompt's last P tokens, the end token if empty."""
        ids = self.tokenizer.tokenize(clean_text(prompt))[:, -self.prompt_length:]
        empty = tf.cast(tf.equal(ids.row_lengths(), 0), tf.int64)
        starts = tf.RaggedTensor.from_row_lengths(tf.fill([tf.reduce_sum(empty)], self.tokenizer.end_token_id), empty)
        ids = tf.concat([starts, ids], axis=1)
        shape = [None, self.prompt_length]
        mask = tf.ones_like(ids).to_tensor(0, shape=shape)
        return ids.to_tensor(self.pad_id, shape=shape), mask

    def _outputs(self, tokens, out_mask, prompt_mask):
        lengths = tf.reduce_sum(prompt_mask, axis=1)
        new = (tf.range(self.sequence_length)[None, :] >= lengths[:, None]) & tf.equal(out_mask, 1)
        new &= tf.not_equal(tokens, self.tokenizer.end_token_id)
        generated = tf.ragged.boolean_mask(tokens, new)
        # Byte-level tokens can stop inside a character: clean, so every output string is valid UTF-8.
        return {"text": clean_text(self.tokenizer.detokenize(generated)),
                "token_ids": generated.to_tensor(-1, shape=[None, self.max_new_tokens]),
                "num_tokens": tf.cast(generated.row_lengths(), tf.int32)}

    def generate(self, prompt, max_new_tokens, temperature, top_k, top_p, seed):
        token_ids, mask = self.prompt_ids(prompt)
        max_new_tokens = tf.clip_by_value(max_new_tokens, 0, self.max_new_tokens)
        tokens, out_mask = self.decode(token_ids, mask, max_new_tokens, temperature, top_k, top_p, seed)
        return self._outputs(tokens, out_mask, mask)

    def beam_search(self, prompt, max_new_tokens):
        token_ids, mask = self.prompt_ids(prompt)
        max_new_tokens = tf.clip_by_value(max_new_tokens, 0, self.max_new_tokens)
        tokens, out_mask = self.decode_beams(token_ids, mask, max_new_tokens)
        return self._outputs(tokens, out_mask, mask)

    def signatures(self):
        scalar = lambda dtype: tf.TensorSpec([], dtype)  # noqa: E731
        specs = [STRINGS, scalar(tf.int32), scalar(tf.float32), scalar(tf.int32), scalar(tf.float32), scalar(tf.int64)]
        signatures = {"serving_default": tf.function(self.generate, input_signature=specs).get_concrete_function()}
        if self.num_beams is not None:
            beams = tf.function(self.beam_search, input_signature=[STRINGS, scalar(tf.int32)])
            signatures["beam_search"] = beams.get_concrete_function()
        return signatures

    def metadata(self):
        extra = {} if self.num_beams is None else {"num_beams": self.num_beams}
        return {**super().metadata(), "inputs": ["prompt", "max_new_tokens", "temperature", "top_k", "top_p",
                                                 "seed"],
                "max_new_tokens": self.max_new_tokens, "prompt_length": self.prompt_length, **extra}
