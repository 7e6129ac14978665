"""Tag-sequence decoding that only yields well-formed BIO / IOBES chunks: Viterbi under the scheme's rules.

Per-token argmax lets a tagger emit `O I-ORG` or `B-LOC I-PER`; seqeval then reads the stray `I-` as the
start of a new chunk, so one broken tag costs a false positive and a false negative. Decoding the best
sequence among those the scheme allows (log-probabilities plus 0 / -inf transitions) removes those errors:
on the Chinese NER dev set it lifts entity F1 of a small model by about 8 points (see configs/zh_ner.yaml).
A CRF's learned transitions plug into the same `viterbi_decode`.
"""

import numpy as np
import tensorflow as tf

_FORBIDDEN = -1e4  # added to a disallowed transition's score; finite so that XLA / float16 stay NaN-free


# Tag prefixes as integers; O also stands for "no word" (before the first and after the last word). DOT is
# conlleval's "." prefix (outside, like O, for chunk ends) and OTHER any further prefix letter: only
# `tfm.metrics.get_entities` meets them, on arbitrary tag strings (see `tfm.tasks.entity_chunks`).
O, B, I, E, S, DOT, OTHER = range(7)
_PREFIX_CODES = {"B": B, "I": I, "E": E, "S": S}


def parse_tags(label_names):
    """Prefix codes, entity type ids and the type names of tags like `B-PER` / `O`.

    Args:
        label_names: list of str, `O` or `<B|I|E|S>-<TYPE>`.

    Returns:
        (prefixes, type_ids, type_names): lists; `O` has type id -1.

    Raises:
        ValueError: naming every tag of another form.
    """
    prefixes, type_ids, type_names, unknown = [], [], [], []
    for name in label_names:
        prefix, _, type_name = name.partition("-")
        if name == "O":
            prefixes.append(O)
            type_ids.append(-1)
        elif prefix not in _PREFIX_CODES or not type_name:
            unknown.append(name)
        else:
            if type_name not in type_names:
                type_names.append(type_name)
            prefixes.append(_PREFIX_CODES[prefix])
            type_ids.append(type_names.index(type_name))
    if unknown:
        raise ValueError(f"tags {unknown} are not O or B-/I-/E-/S-<type>; cannot decode under a tagging scheme")
    return prefixes, type_ids, type_names


def allowed_transitions(label_names):
    """`(transitions, start, end)`: 0 where the scheme allows it, `_FORBIDDEN` where it does not.

    The scheme is read off the tag prefixes: IOB2 (`B-`, `I-`) and IOBES (also `E-`, `S-`). An inside or
    end tag must follow a begin or inside tag of its own type; with IOBES, a begin or inside tag must be
    followed by an inside or end tag of its type, and a sequence may not stop inside a chunk.

    Args:
        label_names: list of str, tag of each label id (`O`, `B-PER`, ...).

    Returns:
        transitions: float32 array `(K, K)`, `[previous, next]`; start, end: float32 arrays `(K,)`.

    Example:
    >>> t, s, e = allowed_transitions(["O", "B-PER", "I-PER"])
    >>> (t == 0).astype(int).tolist(), (s == 0).astype(int).tolist()
    ([[1, 1, 0], [1, 1, 1], [1, 1, 1]], [1, 1, 0])
    """
    prefixes, types, _ = parse_tags(label_names)
    iobes = any(p in (E, S) for p in prefixes)

    def opens(p):  # a tag after which the chunk must go on (IOBES only)
        return iobes and p in (B, I)

    def allowed(i, j):
        if prefixes[j] in (I, E):
            return prefixes[i] in (B, I) and types[i] == types[j]
        return not opens(prefixes[i])

    k = len(label_names)
    transitions = np.array([[allowed(i, j) for j in range(k)] for i in range(k)])
    start = np.array([p not in (I, E) for p in prefixes])
    end = np.array([not opens(p) for p in prefixes])
    as_scores = lambda ok: np.where(ok, 0.0, _FORBIDDEN).astype("float32")  # noqa: E731
    return as_scores(transitions), as_scores(start), as_scores(end)


def viterbi_decode(scores, lengths, transitions, start=None, end=None):
    """Best tag sequence per row: argmax of sum(scores[t, y_t]) + sum(transitions[y_t-1, y_t]) + start + end.

    Args:
        scores: float tensor `(B, T, K)`, per-position tag scores (log-probabilities or CRF potentials).
        lengths: int tensor `(B,)`, valid positions per row (the rest is padding; its tags are 0).
        transitions: float `(K, K)`, `[previous, next]` scores.
        start, end: optional float `(K,)`, scores of the first and last tag.

    Returns:
        int32 tensor `(B, T)`.

    Example:
    >>> logp = np.log([[[0.4, 0.1, 0.5], [0.3, 0.3, 0.4]]]).astype("float32")  # argmax: I-PER I-PER
    >>> viterbi_decode(logp, [2], *allowed_transitions(["O", "B-PER", "I-PER"])).numpy().tolist()
    [[0, 0]]
    """
    scores = tf.convert_to_tensor(scores, tf.float32)
    transitions = tf.convert_to_tensor(transitions, tf.float32)
    num_tags = tf.shape(scores)[2]
    lengths = tf.cast(tf.convert_to_tensor(lengths), tf.int32)
    steps = tf.shape(scores)[1]
    # Two always-invalid steps at the end: the scans never see zero elements (T <= 1, or an empty batch,
    # where TensorList stacking fails on an unknown shape); invalid steps pass scores and tags through.
    scores = tf.pad(scores, [[0, 0], [0, 2], [0, 0]])
    valid = tf.sequence_mask(lengths, steps + 2)  # (B, T + 2)
    first = scores[:, 0] + (0.0 if start is None else tf.convert_to_tensor(start, tf.float32))
    identity = tf.broadcast_to(tf.range(num_tags), tf.shape(first))

    def step(carry, inputs):
        best, _ = carry
        emission, is_valid = inputs
        candidates = best[:, :, None] + transitions[None]  # (B, previous, next)
        pointer = tf.argmax(candidates, axis=1, output_type=tf.int32)
        keep = is_valid[:, None]
        return tf.where(keep, tf.reduce_max(candidates, axis=1) + emission, best), tf.where(keep, pointer, identity)

    time_major = (tf.transpose(scores[:, 1:], [1, 0, 2]), tf.transpose(valid[:, 1:]))
    last, pointers = tf.scan(step, time_major, initializer=(first, identity))  # (T+1, B, K) each
    final = last[-1]  # (B, K)
    if end is not None:
        final = final + tf.convert_to_tensor(end, tf.float32)
    tag = tf.argmax(final, axis=-1, output_type=tf.int32)  # (B,)

    def back(tag, pointer):
        return tf.gather(pointer, tag, batch_dims=1)

    earlier = tf.scan(back, pointers, initializer=tag, reverse=True)  # (T+1, B): tag at t from pointer t
    tags = tf.concat([tf.transpose(earlier), tag[:, None]], axis=1)
    return tf.where(valid, tags, 0)[:, :steps]

