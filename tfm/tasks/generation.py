"""Text generation for `CausalLM`: samplers and one XLA-compiled decode loop over the static KV cache.

The whole of `generate` (prefill + token loop) is a single `tf.function(jit_compile=True)`: the prompt is
written into the cache in one `call_with_cache`, then a `tf.while_loop` feeds one token per step, with the
per-layer `(key, value)` tensors as loop variables (dynamic-update-slice, no per-step cache rebuild). Prompts are right-padded;
decoding starts at the shortest prompt and positions still inside a longer prompt keep their prompt token
(KerasHub's scheme), so every row continues from its own last real token.

The samplers follow `keras_hub.samplers` (names and arguments) but are small pure functions of
`(logits, seed)`: KerasHub's draw from a stateful `SeedGenerator` and take full-vocabulary probabilities,
while ours use stateless random ops (same seed, same text) and work on the top-k logits where they can.
"""

import keras
import numpy as np
import tensorflow as tf

_NEG_INF = float("-inf")


class Sampler:
    """Base sampler: picks next tokens `(B,)` from float32 logits `(B, V)` inside the compiled loop.

    Args:
        temperature: float > 0, logits are divided by it before sampling.
    """

    def __init__(self, temperature=1.0):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.temperature = float(temperature)

    def __call__(self, logits, seed):
        raise NotImplementedError

    def get_config(self):
        return {"temperature": self.temperature}

    def cache_key(self):
        return (type(self).__name__,) + tuple(sorted(self.get_config().items()))

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _draw(logits, seed):
    """Gumbel-max draw of one index per row of `logits (B, K)`; -inf entries are never drawn."""
    uniform = tf.random.stateless_uniform(tf.shape(logits), seed, minval=np.finfo("float32").tiny, maxval=1.0)
    return tf.argmax(logits - tf.math.log(-tf.math.log(uniform)), axis=-1, output_type=tf.int32)


class GreedySampler(Sampler):
    """Always the most likely token (argmax; no softmax, no randomness).

    Example:
    >>> lm.generate(ids, max_new_tokens=8, sampler=GreedySampler())
    """

    def __init__(self):
        super().__init__(temperature=1.0)

    def __call__(self, logits, seed):
        return tf.argmax(logits, axis=-1, output_type=tf.int32)

    def get_config(self):
        return {}


class RandomSampler(Sampler):
    """Samples from the full softmax of `logits / temperature` (`sampler="temperature"`).

    Args:
        temperature: float > 0.

    Example:
    >>> lm.generate(ids, max_new_tokens=8, sampler=RandomSampler(temperature=0.7), seed=0)
    """

    def __call__(self, logits, seed):
        return _draw(logits / self.temperature, seed)


class TopKSampler(Sampler):
    """Samples among the `k` most likely tokens (softmax of their `logits / temperature`).

    Args:
        k: int, candidates kept per step.
        temperature: float > 0.

    Example:
    >>> lm.generate(ids, max_new_tokens=8, sampler=TopKSampler(k=10, temperature=0.8), seed=0)
    """

    def __init__(self, k=5, temperature=1.0):
        super().__init__(temperature)
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}.")
        self.k = int(k)

    def __call__(self, logits, seed):
        values, indices = tf.math.top_k(logits, k=min(self.k, logits.shape[-1]))  # (B, k)
        choice = _draw(values / self.temperature, seed)
        return tf.gather(indices, choice, batch_dims=1)

    def get_config(self):
        return {"k": self.k, **super().get_config()}


class TopPSampler(Sampler):
    """Nucleus sampling: the smallest set of most likely tokens whose probability reaches `p`.

    Args:
        p: float in (0, 1], probability mass kept.
        k: optional int; only the top `k` tokens are sorted and considered (much cheaper than a
            full-vocabulary sort; the nucleus is then taken within them, as in KerasHub).
        temperature: float > 0.

    Example:
    >>> lm.generate(ids, max_new_tokens=8, sampler=TopPSampler(p=0.9, k=200), seed=0)
    """

    def __init__(self, p=0.1, k=None, temperature=1.0):
        super().__init__(temperature)
        if not 0 < p <= 1:
            raise ValueError(f"p must be in (0, 1], got {p}.")
        self.p = float(p)
        self.k = None if k is None else int(k)

    def __call__(self, logits, seed):
        k = logits.shape[-1] if self.k is None else min(self.k, logits.shape[-1])
        values, indices = tf.math.top_k(logits / self.temperature, k=k)  # (B, k), sorted descending
        probs = tf.nn.softmax(values)
        mass_before = tf.cumsum(probs, axis=-1, exclusive=True)
        values = tf.where(mass_before < self.p, values, _NEG_INF)  # the top token is always kept
        return tf.gather(indices, _draw(values, seed), batch_dims=1)

    def get_config(self):
        return {"p": self.p, "k": self.k, **super().get_config()}


class BeamSampler(Sampler):
    """Beam search: keeps the `num_beams` highest total log-probability sequences; returns the best one.

    Finished beams (stop token or length limit) keep their score and compete with the open ones;
    there is no length normalisation.

    Args:
        num_beams: int >= 1 (1 is greedy).

    Example:
    >>> lm.generate(ids, max_new_tokens=8, sampler=BeamSampler(num_beams=4))
    """

    def __init__(self, num_beams=5):
        super().__init__(temperature=1.0)
        if int(num_beams) < 1:
            raise ValueError(f"num_beams must be >= 1, got {num_beams}.")
        self.num_beams = int(num_beams)

    def get_config(self):
        return {"num_beams": self.num_beams}


def get_sampler(sampler="greedy", temperature=None, top_k=None, top_p=None, num_beams=None):
    """A `Sampler` from a name (`"greedy"`, `"temperature"`/`"random"`, `"top_k"`, `"top_p"`, `"beam"`) or an object.

    Args:
        sampler: str or `Sampler`.
        temperature, top_k, top_p, num_beams: settings for a named sampler (None = its default).

    Example:
    >>> get_sampler("top_k", top_k=10, temperature=0.8)
    TopKSampler(k=10, temperature=0.8)
    """
    settings = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "num_beams": num_beams}
    given = {key for key, value in settings.items() if value is not None}
    if isinstance(sampler, Sampler):
        if given:
            raise ValueError(f"Pass {sorted(given)} to the sampler object, not to generate().")
        return sampler
    temp = {} if temperature is None else {"temperature": temperature}
    factories = {
        "greedy": (set(), lambda: GreedySampler()),
        "temperature": ({"temperature"}, lambda: RandomSampler(**temp)),
        "random": ({"temperature"}, lambda: RandomSampler(**temp)),
        "top_k": ({"temperature", "top_k"}, lambda: TopKSampler(**({"k": top_k} if top_k else {}), **temp)),
        "top_p": (
            {"temperature", "top_p", "top_k"},
            lambda: TopPSampler(**({"p": top_p} if top_p else {}), k=top_k, **temp),
        ),
        "beam": ({"num_beams"}, lambda: BeamSampler(**({"num_beams": num_beams} if num_beams else {}))),
    }
    if sampler not in factories:
        raise ValueError(f"Unknown sampler {sampler!r}; expected a Sampler or one of {sorted(factories)}.")
    allowed, make = factories[sampler]
    if given - allowed:
        raise ValueError(f"sampler={sampler!r} does not use {sorted(given - allowed)}.")
    return make()


def _is_stop(tokens, stop_token_ids):
    if not stop_token_ids:
        return tf.zeros_like(tokens, dtype=tf.bool)
    return tf.reduce_any(tokens[:, None] == tf.constant(stop_token_ids, tf.int32)[None, :], axis=-1)


def _column(x, index):
    """`x[:, index]` for a tensor index, as a static-size dynamic slice (XLA-friendly)."""
    return tf.slice(x, [0, index], [x.shape[0], 1])[:, 0]


def _write(x, index, column):
    """`x[:, index] = column` in place (dynamic-update-slice)."""
    return keras.ops.slice_update(x, [0, index], column[:, None])


def build_generate_function(model, sampler, max_new_tokens, stop_token_ids=(), pad_token_id=0):
    """The compiled `fn(token_ids (B, T) int32, padding_mask (B, T) int32, seed (2,) int64)` -> dict.

    Returns `{"token_ids", "padding_mask"}`, both `(B, T + max_new_tokens)` int32. Each row gets at most
    `max_new_tokens` new tokens after its own prompt and stops after a stop token; later positions hold
    `pad_token_id` with mask 0. Traces once per input shape.

    Args:
        model: a `CausalLM`.
        sampler: a `Sampler`.
        max_new_tokens: int.
        stop_token_ids: tuple of ints.
        pad_token_id: int, written after a row ends.
    """
    decoder = _Decoder(model, max_new_tokens, stop_token_ids, pad_token_id)

    @tf.function(jit_compile=True, autograph=False, reduce_retracing=False)
    def generate_fn(token_ids, padding_mask, seed):
        if isinstance(sampler, BeamSampler):
            return decoder.beam_search(token_ids, padding_mask, sampler.num_beams)
        return decoder.sample(token_ids, padding_mask, sampler, seed)

    return generate_fn


class _Decoder:
    """The traced decode loops; every Python value here is static (baked into the compiled graph)."""

    def __init__(self, model, max_new_tokens, stop_token_ids, pad_token_id):
        self.model = model
        self.max_new_tokens = int(max_new_tokens)
        self.stop_token_ids = tuple(int(t) for t in stop_token_ids)
        self.pad_token_id = int(pad_token_id)

    def prefill(self, token_ids, padding_mask):
        """Output buffers `(B, T + max_new_tokens)`, prompt lengths `(B,)`, the prompt's KV cache and its
        final hidden states `(B, T, H)`."""
        batch, prompt_length = token_ids.shape
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

    def commit(self, index, chosen, tokens, out_mask, done, lengths):
        """Writes position `index`: the prompt token, the `chosen (B,)` token, or padding once a row ended."""
        in_prompt = index < lengths
        is_new = ~in_prompt & ~done & (index < lengths + self.max_new_tokens)
        column = tf.where(in_prompt, _column(tokens, index), tf.where(is_new, chosen, self.pad_token_id))
        tokens = _write(tokens, index, column)
        out_mask = _write(out_mask, index, tf.cast(in_prompt | is_new, tf.int32))
        return tokens, out_mask, done | (is_new & _is_stop(chosen, self.stop_token_ids))

    def running(self, index, tokens, done, lengths):
        return (index < tokens.shape[1]) & tf.reduce_any(~done & (index < lengths + self.max_new_tokens))

    def sample(self, token_ids, padding_mask, sampler, seed):
        tokens, out_mask, lengths, cache, hidden = self.prefill(token_ids, padding_mask)
        done = tf.zeros_like(lengths, dtype=tf.bool)  # (B,) produced a stop token

        def choose(index, logits):
            step_seed = tf.stack([seed[0], seed[1] + tf.cast(index, seed.dtype)])
            return tf.cast(sampler(logits, step_seed), tf.int32)  # (B,)

        def cond(index, tokens, out_mask, done, cache):
            return self.running(index, tokens, done, lengths)

        def body(index, tokens, out_mask, done, cache):
            previous = _column(tokens, index - 1)[:, None]  # (B, 1)
            logits, _, cache = self.model.call_with_cache(previous, cache, index - 1)  # (B, 1, V)
            tokens, out_mask, done = self.commit(index, choose(index, logits[:, 0, :]), tokens, out_mask, done, lengths)
            return index + 1, tokens, out_mask, done, cache

        start = tf.reduce_min(lengths)  # first position to write
        # The prompt pass already computed position start - 1 (a real token in every row): its logits give
        # the first choice, saving the loop a step that would recompute that position.
        first = lambda: self.commit(  # noqa: E731
            start, choose(start, self.model.hidden_to_logits(hidden[:, start - 1, :])), tokens, out_mask, done, lengths
        )
        tokens, out_mask, done = tf.cond(start < tokens.shape[1], first, lambda: (tokens, out_mask, done))
        _, tokens, out_mask, _, _ = tf.while_loop(cond, body, (start + 1, tokens, out_mask, done, cache))
        return {"token_ids": tokens, "padding_mask": out_mask}

    def beam_search(self, token_ids, padding_mask, beams):
        batch, vocab = token_ids.shape[0], self.model.backbone.vocabulary_size
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
            return self.running(index, tokens, done, row_lengths)

        def body(index, tokens, out_mask, done, scores, cache):
            previous = _column(tokens, index - 1)[:, None]  # (B * beams, 1)
            logits, _, cache = self.model.call_with_cache(previous, cache, index - 1)
            log_probs = tf.nn.log_softmax(logits[:, 0, :])  # (B * beams, V)
            extends = ~done & (index >= row_lengths) & (index < row_lengths + self.max_new_tokens)
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
            tokens, out_mask, done = self.commit(index, chosen, tokens, out_mask, done, row_lengths)
            return index + 1, tokens, out_mask, done, scores, cache

        loop_vars = (start, tokens, out_mask, done, scores, cache)
        _, tokens, out_mask, _, scores, _ = tf.while_loop(cond, body, loop_vars)
        best = tf.argmax(scores, axis=1, output_type=tf.int32) + row_offset[:, 0]  # (B,)
        return {"token_ids": tf.gather(tokens, best), "padding_mask": tf.gather(out_mask, best)}


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
