"""The data plumbing every task recipe shares: a split's contents (`TaskData`), tfds source names,
sharding over input pipelines and static (TPU) evaluation batches.

Sources are files (format from `data.format`) or `tfds:NAME[:SPLIT]` (split default: `train` for
`data.train`, `validation` for `data.eval`). Which reader, batching and text view a task uses is its
recipe's (`tfm.recipes`).
"""

import dataclasses
import re

import tensorflow as tf

from tfm import data as tfm_data
from tfm.data.pipelines import length_bucketed  # noqa: F401  (the recipes' name for it)


@dataclasses.dataclass
class TaskData:
    """What one split holds: a ReadResult (`result`) or, for span QA, SquadExamples (`examples`)."""

    result: tfm_data.ReadResult = None
    examples: list = None

    @property
    def num_examples(self):
        return len(self.examples) if self.examples is not None else self.result.num_examples


def tfds_source(source, default_split):
    """`tfds:glue/sst2` -> ("glue/sst2", default_split); `tfds:glue/sst2:validation` -> (…, "validation")."""
    name = source[len("tfds:"):]
    head, _, tail = name.rpartition(":")
    if head and not re.fullmatch(r"[\d.]+", tail):  # "name:1.0.0" is a version, not a split
        return head, tail
    return name, default_split


def concat(results):
    """One ReadResult of several (datasets concatenated, counts and skips added up)."""
    dataset = results[0].dataset
    for r in results[1:]:
        dataset = dataset.concatenate(r.dataset)
    skipped = {}
    for r in results:
        for key, count in r.skipped.items():
            skipped[key] = skipped.get(key, 0) + count
    return tfm_data.ReadResult(dataset, sum(r.num_examples for r in results), skipped, results[0].labels)


def texts_of(result, keys):
    """One document per example: the string fields in `keys` (scalars or vectors) joined by newlines."""

    def join(example):
        parts = [tf.reshape(example[k], [-1]) for k in keys if k in example]
        return tf.strings.reduce_join(tf.concat(parts, 0), separator="\n")

    return tfm_data.ReadResult(result.dataset.map(join), result.num_examples, result.skipped)


def shard(dataset, ctx):
    if ctx is not None and ctx.num_input_pipelines > 1:
        return dataset.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
    return dataset


def replicas_per_pipeline(ctx):
    """Replicas fed by one input pipeline (1 without an input context)."""
    if ctx is None:
        return 1
    return max(ctx.num_replicas_in_sync // max(ctx.num_input_pipelines, 1), 1)


def static_batches(dataset, batch_size, replicas=1):
    """A finite dataset of `(x, y[, w])` batches as `(x, y, w)` with a static batch dimension (TPU).

    A short final batch is filled up to `batch_size` with copies of its own rows (real inputs, so every
    output stays finite) whose sample weights are zero, and whole zero-weight batches are appended until
    the batch count is a multiple of `replicas`, so every replica gets a full batch at every step. The
    Trainer's metric sums are weighted, so they are unchanged. Batches without a sample weight get ones.

    Args:
        dataset: tf.data.Dataset of `(x, y)` or `(x, y, sample_weight)` batches (nested structures allowed).
        batch_size: int, the static batch dimension.
        replicas: int, replicas fed by this pipeline (`replicas_per_pipeline(ctx)`).
    """

    def pad(*batch):
        x, y, w = (tuple(batch) + (None,))[:3]
        n = tf.shape(tf.nest.flatten(x)[0])[0]
        if w is None:
            w = tf.ones([n], tf.float32)
        rows = tf.range(batch_size)
        index = rows % tf.maximum(n, 1)
        real = tf.cast(rows < n, tf.float32)
        fill = lambda t: tf.gather(t, index)  # noqa: E731
        # Zero weight on the copies: a weight of rank r gets `real` broadcast over its trailing axes.
        weigh = lambda t: tf.cast(fill(t), tf.float32) * tf.reshape(real, [batch_size] + [1] * (t.shape.rank - 1))  # noqa
        return tf.nest.map_structure(fill, x), tf.nest.map_structure(fill, y), tf.nest.map_structure(weigh, w)

    dataset = dataset.map(pad)
    if replicas <= 1:
        return dataset

    def filler(x, y, w):
        return False, (x, y, tf.nest.map_structure(tf.zeros_like, w))

    def real_batch(x, y, w):
        return True, (x, y, w)

    def count(emitted, item):
        keep = item[0] | (emitted % replicas != 0)  # fillers only until the count reaches a multiple
        return emitted + tf.cast(keep, tf.int64), (keep, item[1])

    def kept(keep, batch):
        return keep

    def batch_of(keep, batch):
        return batch

    fillers = dataset.take(1).map(filler).repeat(replicas - 1)
    tagged = dataset.map(real_batch).concatenate(fillers)
    return tagged.scan(tf.constant(0, tf.int64), count).filter(kept).map(batch_of)
