"""In-batch contrastive loss for sentence embeddings (sentence-transformers' MultipleNegativesRankingLoss).

Each of the `B` examples of a batch is `k` texts embedded together, `(B, k, H)`: the anchor, its positive and
`k - 2` hard negatives (k = 2 or 3). Each anchor's softmax runs over every candidate of the batch (all
positives and negatives, scaled cosine similarities); its target is its own positive. Keeping an example's
texts in one row lets `fit` and `tf.distribute` cut batches by example like any other task's. Under a multi-replica `tf.distribute` strategy the candidates of every replica are gathered
(`ReplicaContext.all_gather`, whose gradient returns each replica its own slice of the summed gradient), so
the loss of the global batch is the single-device loss: each replica adds its anchors' terms, the Trainer
sums over replicas and divides by the global weight.
"""

import keras
import tensorflow as tf
from keras import ops


def _gather(tensor):
    """`(tensor gathered over the replicas in sync along axis 0, this replica's index)`; `(tensor, 0)` with
    one replica (or outside a strategy)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return tensor, 0
    return ctx.all_gather(tensor, axis=0), ctx.replica_id_in_sync_group


def contrastive_losses(embeddings, scale=20.0, symmetric=False, weight=None):
    """Per-anchor in-batch softmax losses, float32 `(B,)`.

    Args:
        embeddings: float `(B, k, H)`: per example the anchor, the positive, then `k - 2` hard negatives.
        scale: float, multiplies the cosine similarities (1 / temperature; sentence-transformers' 20).
        symmetric: bool, also each positive -> every anchor of the batch (sentence-transformers'
            `directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"`): the two
            cross-entropies are averaged.
        weight: optional float `(B,)`; candidates of zero-weight examples (the padding rows of a short
            evaluation batch) are left out of every softmax.
    """
    vectors, candidates = _unit_vectors_and_candidates(embeddings)
    batch, columns = ops.shape(vectors)[0], ops.shape(vectors)[1] - 1
    anchors = vectors[:, 0]
    weight = ops.ones((batch,), "float32") if weight is None else ops.cast(ops.reshape(weight, (-1,)), "float32")
    all_candidates, replica = _gather(candidates)
    candidate_weight, _ = _gather(ops.tile(weight, (columns,)))
    # This replica's positives start at column replica * columns * B of the gathered candidates.
    rows = ops.arange(batch, dtype="int32")
    forward = _cross_entropy(scale * ops.matmul(anchors, ops.transpose(all_candidates)),
                             replica * columns * batch + rows, candidate_weight)
    if not symmetric:
        return forward
    all_anchors, _ = _gather(anchors)
    anchor_weight, _ = _gather(weight)
    backward = _cross_entropy(scale * ops.matmul(vectors[:, 1], ops.transpose(all_anchors)),
                              replica * batch + rows, anchor_weight)
    return (forward + backward) / 2.0


def _unit_vectors_and_candidates(embeddings):
    """L2-normalized `(B, k, H)` vectors, and the candidates in blocks: every positive, then every first hard
    negative, ...: `(columns * B, H)`."""
    vectors = ops.normalize(ops.cast(embeddings, "float32"), axis=-1, epsilon=1e-12)
    return vectors, ops.reshape(ops.transpose(vectors[:, 1:], (1, 0, 2)), (-1, ops.shape(vectors)[-1]))


def _cross_entropy(logits, targets, column_weight):
    # A large negative (not -inf) for left-out columns: the target column always has weight on a real row.
    logits = ops.where(ops.expand_dims(column_weight, 0) > 0, logits, -1e9)
    return keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)


def in_batch_accuracy(embeddings, weight=None):
    """Float32 `(B,)`: 1 where an anchor's most similar candidate of this replica's batch is its positive."""
    vectors, candidates = _unit_vectors_and_candidates(embeddings)
    batch = ops.shape(vectors)[0]
    scores = ops.matmul(vectors[:, 0], ops.transpose(candidates))
    if weight is not None:
        columns = ops.shape(vectors)[1] - 1
        keep = ops.tile(ops.cast(ops.reshape(weight, (-1,)), "float32"), (columns,)) > 0
        scores = ops.where(ops.expand_dims(keep, 0), scores, -2.0)
    return ops.cast(ops.equal(ops.cast(ops.argmax(scores, axis=-1), "int32"), ops.arange(batch, dtype="int32")),
                    "float32")


@keras.saving.register_keras_serializable(package="tfm")
class MultipleNegativesRankingLoss(keras.losses.Loss):
    """`contrastive_losses` as a Keras loss for `model.fit`: `y_pred` is `(B, k, H)` (anchor, positive, hard
    negatives per example); `y` is not read (the target is each anchor's own positive: give zeros `(B,)`,
    as `tfm.data.contrastive_dataset` does). Sample weights weight the anchors' terms.

    Args:
        scale: float, cosine similarity multiplier (20, as sentence-transformers).
        symmetric: bool, average with the positive -> anchors direction.

    Example:
    >>> loss = MultipleNegativesRankingLoss(scale=20.0)
    >>> pairs = np.array([[[1.0, 0.0], [1.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]])  # (B=2, k=2, H=2)
    >>> round(float(MultipleNegativesRankingLoss(scale=5.0)(np.zeros(2), pairs)), 5)  # see the test for the sum
    0.11836
    """

    def __init__(self, scale=20.0, symmetric=False, name="multiple_negatives_ranking_loss",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.scale = float(scale)
        self.symmetric = bool(symmetric)

    def call(self, y_true, y_pred):
        return contrastive_losses(y_pred, self.scale, self.symmetric)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "symmetric": self.symmetric}
