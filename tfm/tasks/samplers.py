"""Next-token samplers: one rule (`sample_tokens`) for `CausalLM.generate` and the exported generation signature.

The sampler classes follow `keras_hub.samplers` (names and arguments) but are small pure functions of
`(logits, seed)` over stateless random ops (same seed, same text). All of them, and the export's per-request
settings, call `sample_tokens`: with Python settings (`generate`, baked into the compiled graph; a static
`top_k` sorts only `k` logits) or scalar tensors (the export, one compiled graph for every setting).

The draw is a Gumbel-max over the candidate tokens with noise drawn for the whole vocabulary and looked up
by token id, so the token drawn depends only on the seed, the logits and the candidate set, not on how many
logits were sorted to find that set: `TopKSampler(k=5, temperature=0.7)` with seed `S` and the export's
`temperature=0.7, top_k=5, seed=S` give the same tokens.
"""

import numpy as np
import tensorflow as tf

_NEG_INF = float("-inf")


def _static(value):
    return isinstance(value, (int, float, np.integer, np.floating))


def _gumbel(shape, seed):
    """Gumbel(0, 1) noise of `shape` from a stateless uniform draw (never exactly 0 or 1).

    Philox, pinned: "auto_select" may pick another generator on another device, and a model served on one
    device should draw as it generates on another. (XLA lays out Philox's counters unlike the eager kernel:
    an eager call draws other noise than the compiled decode loops, which all run under XLA.)
    """
    uniform = tf.random.stateless_uniform(shape, seed, minval=np.finfo("float32").tiny, maxval=1.0, alg="philox")
    return -tf.math.log(-tf.math.log(uniform))


def sample_tokens(logits, temperature, top_k, top_p, seed):
    """Next tokens `(B,)` int32 from float32 logits `(B, V)`: the sampling rule of every sampler and the export.

    `temperature <= 0` is greedy (argmax; the first maximum). Otherwise one Gumbel-max draw from
    `softmax(logits / temperature)` restricted to the `top_k` most likely tokens (`top_k <= 0`: all), then
    to the nucleus of mass `top_p` within them (`top_p >= 1`: all; the most likely token is always kept).

    Args:
        logits: float32 `(B, V)`.
        temperature, top_k, top_p: Python numbers (static: fewer ops, a positive `top_k` sorts only `k`
            logits) or scalar tensors (float32, int32, float32).
        seed: int `(2,)` stateless seed.

    Example:
    >>> logits = tf.math.log([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    >>> sample_tokens(logits, 0.0, 0, 1.0, seed=[1, 2]).numpy().tolist()  # greedy
    [1, 0]
    >>> sample_tokens(logits, 1.0, 1, 1.0, seed=[1, 2]).numpy().tolist()  # top_k=1 is greedy too
    [1, 0]
    """
    logits = tf.convert_to_tensor(logits, tf.float32)

    def greedy():
        return tf.argmax(logits, axis=-1, output_type=tf.int32)

    def draw():
        return _draw(logits, temperature, top_k, top_p, seed)

    if _static(temperature):
        return draw() if temperature > 0 else greedy()
    return tf.cond(temperature > 0.0, draw, greedy)


def _draw(logits, temperature, top_k, top_p, seed):
    vocabulary = logits.shape[-1]
    scaled = logits / temperature
    noise = _gumbel(tf.shape(logits), seed)  # (B, V), indexed by token id
    k_off = _static(top_k) and top_k <= 0
    p_off = _static(top_p) and top_p >= 1.0
    if k_off and p_off:  # plain temperature sampling: no sort
        return tf.argmax(scaled + noise, axis=-1, output_type=tf.int32)
    width = min(int(top_k), vocabulary) if _static(top_k) and not k_off else vocabulary
    values, indices = tf.math.top_k(scaled, k=width)  # (B, width), descending; ties: lower id first
    keep = tf.ones_like(values, dtype=tf.bool)
    if not _static(top_k):  # a tensor top_k: all V logits are sorted, mask the ranks past it
        keep = (top_k <= 0) | (tf.range(width)[None, :] < top_k)
    if not p_off:
        probs = tf.nn.softmax(tf.where(keep, values, _NEG_INF))
        in_nucleus = tf.cumsum(probs, axis=-1, exclusive=True) < top_p
        keep &= in_nucleus if _static(top_p) else (top_p >= 1.0) | in_nucleus
    scores = tf.where(keep, values + tf.gather(noise, indices, batch_dims=1), _NEG_INF)
    return tf.gather(indices, tf.argmax(scores, axis=-1, output_type=tf.int32), batch_dims=1)


class Sampler:
    """Base sampler: picks next tokens `(B,)` from float32 logits `(B, V)` inside the compiled loop.

    Args:
        temperature: float > 0, logits are divided by it before sampling.
    """

    def __init__(self, temperature=1.0):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.temperature = float(temperature)

    def settings(self):
        """`(temperature, top_k, top_p)` of `sample_tokens` (and of the export's generation signature)."""
        return self.temperature, 0, 1.0

    def __call__(self, logits, seed):
        return sample_tokens(logits, *self.settings(), seed)

    def get_config(self):
        return {"temperature": self.temperature}

    def cache_key(self):
        return (type(self).__name__,) + tuple(sorted(self.get_config().items()))

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class GreedySampler(Sampler):
    """Always the most likely token (argmax; no softmax, no randomness). Export: `temperature=0`.

    Example:
    >>> lm.generate(ids, max_new_tokens=8, sampler=GreedySampler())  # doctest: +SKIP
    """

    def __init__(self):
        super().__init__(temperature=1.0)

    def settings(self):
        return 0.0, 0, 1.0

    def get_config(self):
        return {}


class RandomSampler(Sampler):
    """Samples from the full softmax of `logits / temperature` (`sampler="temperature"`).

    Export equivalent: `temperature=t, top_k=0, top_p=1`.

    Args:
        temperature: float > 0.

    Example:
    >>> lm.generate(ids, max_new_tokens=8, sampler=RandomSampler(temperature=0.7), seed=0)  # doctest: +SKIP
    """


class TopKSampler(Sampler):
    """Samples among the `k` most likely tokens (softmax of their `logits / temperature`).

    Export equivalent: `temperature=t, top_k=k, top_p=1`.

    Args:
        k: int, candidates kept per step.
        temperature: float > 0.

    Example:
    >>> lm.generate(ids, max_new_tokens=8, sampler=TopKSampler(k=10, temperature=0.8), seed=0)  # doctest: +SKIP
    """

    def __init__(self, k=5, temperature=1.0):
        super().__init__(temperature)
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}.")
        self.k = int(k)

    def settings(self):
        return self.temperature, self.k, 1.0

    def get_config(self):
        return {"k": self.k, **super().get_config()}


class TopPSampler(Sampler):
    """Nucleus sampling: the smallest set of most likely tokens whose probability reaches `p`.

    Export equivalent: `temperature=t, top_k=k or 0, top_p=p`. With `k`, the nucleus is taken within the
    top `k` (renormalised) here over `k` sorted logits and in the export over all `V`: the same tokens,
    except where a cumulative mass lies within float rounding of `p`.

    Args:
        p: float in (0, 1], probability mass kept.
        k: optional int; only the top `k` tokens are sorted and considered (much cheaper than a
            full-vocabulary sort; the nucleus is then taken within them, as in KerasHub).
        temperature: float > 0.

    Example:
    >>> lm.generate(ids, max_new_tokens=8, sampler=TopPSampler(p=0.9, k=200), seed=0)  # doctest: +SKIP
    """

    def __init__(self, p=0.1, k=None, temperature=1.0):
        super().__init__(temperature)
        if not 0 < p <= 1:
            raise ValueError(f"p must be in (0, 1], got {p}.")
        self.p = float(p)
        self.k = None if k is None else int(k)

    def settings(self):
        return self.temperature, self.k or 0, self.p

    def get_config(self):
        return {"p": self.p, "k": self.k, **super().get_config()}


class BeamSampler(Sampler):
    """Beam search: keeps the `num_beams` highest total log-probability sequences; returns the best one.

    Finished beams (stop token or length limit) keep their score and compete with the open ones;
    there is no length normalisation. Export equivalent: the `beam_search` signature of an export made
    with `num_beams=n`.

    Args:
        num_beams: int >= 1 (1 is greedy).

    Example:
    >>> lm.generate(ids, max_new_tokens=8, sampler=BeamSampler(num_beams=4))  # doctest: +SKIP
    """

    def __init__(self, num_beams=5):
        super().__init__(temperature=1.0)
        if int(num_beams) < 1:
            raise ValueError(f"num_beams must be >= 1, got {num_beams}.")
        self.num_beams = int(num_beams)

    def __call__(self, logits, seed):
        raise TypeError("BeamSampler is not a per-step sampler; the decode loop runs beam search itself.")

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
