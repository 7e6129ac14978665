"""A linear-chain conditional random field (Lafferty et al. 2001) over a tagger's per-position scores.

A softmax tagger scores each tag on its own; a CRF adds learned scores for each pair of neighbouring tags (and for
the first and last tag) and trains on the log-likelihood of whole tag sequences:

    score(y) = start[y_1] + sum_t emissions[t, y_t] + sum_t transitions[y_t-1, y_t] + end[y_n]
    log p(y | x) = score(y) - log sum_y' exp(score(y'))

The partition function comes from the forward algorithm (a log-sum-exp scan over positions); the best sequence
from `tfm.tasks.tagging.viterbi_decode`, the decoder tfm already uses for BIO / IOBES constraints, with the learned
scores added to the scheme's 0 / -inf rules. Training itself is unconstrained: a gold sequence that breaks the
scheme (IOB1 data read as IOB2, say) gets a finite loss instead of an infinite one.

Names follow pytorch-crf and AllenNLP's `ConditionalRandomField`: `transitions[previous, next]`,
`start_transitions`, `end_transitions`.
"""

import keras
import tensorflow as tf


def crf_sequence_score(emissions, tags, lengths, transitions, start, end):
    """`score(y)` of each row's tag sequence: float32 `(B,)`, 0 for rows of length 0.

    Args:
        emissions: float `(B, T, K)`; tags: int `(B, T)`; lengths: int `(B,)` valid positions per row (a prefix).
        transitions: float `(K, K)` `[previous, next]`; start, end: float `(K,)`.
    """
    emissions = tf.cast(emissions, tf.float32)
    tags = tf.cast(tf.maximum(tags, 0), tf.int32)
    lengths = tf.cast(lengths, tf.int32)
    valid = tf.sequence_mask(lengths, tf.shape(tags)[1], dtype=tf.float32)  # (B, T)
    emitted = tf.reduce_sum(tf.gather(emissions, tags, axis=2, batch_dims=2) * valid, axis=1)
    pairs = tf.stack([tags[:, :-1], tags[:, 1:]], axis=-1)  # (B, T-1, 2)
    moved = tf.reduce_sum(tf.gather_nd(transitions, pairs) * valid[:, 1:], axis=1)
    nonempty = tf.cast(lengths > 0, tf.float32)
    first = tf.gather(start, tags[:, 0])
    last = tf.gather(end, tf.gather(tags, tf.maximum(lengths - 1, 0), batch_dims=1))
    return emitted + moved + (first + last) * nonempty


def crf_log_norm(emissions, lengths, transitions, start, end):
    """`log sum_y exp(score(y))` over all tag sequences of each row (the forward algorithm): float32 `(B,)`, 0 for
    rows of length 0."""
    emissions = tf.cast(emissions, tf.float32)
    lengths = tf.cast(lengths, tf.int32)
    # One always-invalid step at the end, so the scan never runs over zero elements (T = 1).
    padded = tf.pad(emissions, [[0, 0], [0, 1], [0, 0]])
    valid = tf.sequence_mask(lengths, tf.shape(padded)[1])  # (B, T + 1)

    def step(alpha, inputs):
        emission, is_valid = inputs
        moved = tf.reduce_logsumexp(alpha[:, :, None] + transitions[None], axis=1) + emission
        return tf.where(is_valid[:, None], moved, alpha)

    time_major = (tf.transpose(padded[:, 1:], [1, 0, 2]), tf.transpose(valid[:, 1:]))
    alpha = tf.scan(step, time_major, initializer=padded[:, 0] + start)[-1]
    return tf.where(lengths > 0, tf.reduce_logsumexp(alpha + end, axis=1), 0.0)


def compact_labelled(emissions, labels, keep=None):
    """Moves each row's labelled positions (`labels >= 0`, or `keep`) to its front, in order.

    A tagger labels only a word's first piece; the CRF runs over words, so its chain skips the other pieces,
    special tokens and padding. Returns `(emissions (B, T, K), tags (B, T), lengths (B,))`.
    """
    labels = tf.cast(labels, tf.int32)
    keep = labels >= 0 if keep is None else tf.cast(keep, tf.bool)
    order = tf.argsort(tf.cast(~keep, tf.int32), axis=1, stable=True)
    return (tf.gather(emissions, order, batch_dims=1), tf.gather(labels, order, batch_dims=1),
            tf.reduce_sum(tf.cast(keep, tf.int32), axis=1))


@keras.saving.register_keras_serializable(package="tfm")
class CRF(keras.layers.Layer):
    """Learned transition scores for a tagger: passes its `(B, T, K)` emissions through and owns the CRF weights.

    The layer sits on the model's output so the weights are saved, restored and exported with it; the task's loss
    (`negative_log_likelihood`) and decoding (`scores`, for `tfm.tasks.tagging.viterbi_decode`) read them.

    Args:
        num_tags: int, K.
        learning_rate_multiplier: float, the scores are this times the stored variables, so an optimizer moves them
            this many times faster than the encoder (Adam's step is about the learning rate in the variable's own
            units). Fine-tuning rates (1e-4) would otherwise move a transition by well under 1 in a few thousand
            steps; CRF taggers on BERT usually give the CRF a rate ~100x the encoder's.

    Example:
    >>> crf = CRF(3)
    >>> emissions = keras.ops.convert_to_tensor([[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]])
    >>> nll = crf.negative_log_likelihood(emissions, [[0, 1]], [2])  # zero transitions: the two softmaxes
    >>> round(float(nll[0]), 4)
    0.791
    """

    def __init__(self, num_tags, learning_rate_multiplier=1.0, **kwargs):
        kwargs.setdefault("dtype", "float32")  # scores and the log-sum-exp stay float32 under mixed precision
        super().__init__(**kwargs)
        self.supports_masking = True  # emissions pass through: keep the padding mask, as the Dense before it does
        self.num_tags = num_tags
        self.learning_rate_multiplier = float(learning_rate_multiplier)
        zeros = keras.initializers.Zeros()  # a plain softmax tagger at step 0, as pytorch-crf's small uniform
        self.transitions = self.add_weight((num_tags, num_tags), zeros, name="transitions")
        self.start_transitions = self.add_weight((num_tags,), zeros, name="start_transitions")
        self.end_transitions = self.add_weight((num_tags,), zeros, name="end_transitions")

    def call(self, emissions):
        return tf.cast(emissions, tf.float32)

    def scores(self):
        """`(transitions, start_transitions, end_transitions)` as tensors (the variables times the multiplier)."""
        m = self.learning_rate_multiplier
        return tuple(m * tf.convert_to_tensor(v) for v in (self.transitions, self.start_transitions,
                                                           self.end_transitions))

    def negative_log_likelihood(self, emissions, tags, lengths):
        """`log Z - score(tags)` per row, float32 `(B,)` (0 for rows of length 0)."""
        emissions = tf.convert_to_tensor(emissions, tf.float32)
        tags, lengths = tf.convert_to_tensor(tags), tf.convert_to_tensor(lengths)
        return crf_log_norm(emissions, lengths, *self.scores()) - crf_sequence_score(emissions, tags, lengths,
                                                                                       *self.scores())

    def get_config(self):
        return {**super().get_config(), "num_tags": self.num_tags,
                "learning_rate_multiplier": self.learning_rate_multiplier}
