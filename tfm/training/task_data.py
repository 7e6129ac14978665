"""Reading a config's data sources for any task, and the Trainer's dataset functions.

Sources are files (format from `data.format`) or `tfds:NAME[:SPLIT]` (split default: `train` for
`data.train`, `validation` for `data.eval`). Every task also has a plain-text view of its data
(`corpus_texts`), which is what tokenizers are trained on and what the `pretrain` stage reads.
"""

import dataclasses
import re

import tensorflow as tf

from tfm import data as tfm_data
from tfm.data.readers import require_examples
from tfm.errors import InputError

LABELED_FORMATS = {
    "text_classifier": ("tsv", "csv", "jsonl", "tfds"),
    "token_classifier": ("conll", "tfds"),
    "span_qa": ("squad", "tfds"),
    "multiple_choice": ("jsonl", "tfds"),
}


@dataclasses.dataclass
class TaskData:
    """What one split holds: a ReadResult (`result`) or, for span QA, SquadExamples (`examples`)."""

    result: tfm_data.ReadResult = None
    examples: list = None

    @property
    def num_examples(self):
        return len(self.examples) if self.examples is not None else self.result.num_examples


def _tfds_source(source, default_split):
    """`tfds:glue/sst2` -> ("glue/sst2", default_split); `tfds:glue/sst2:validation` -> (…, "validation")."""
    name = source[len("tfds:"):]
    head, _, tail = name.rpartition(":")
    if head and not re.fullmatch(r"[\d.]+", tail):  # "name:1.0.0" is a version, not a split
        return head, tail
    return name, default_split


def _concat(results):
    dataset = results[0].dataset
    for r in results[1:]:
        dataset = dataset.concatenate(r.dataset)
    skipped = {}
    for r in results:
        for key, count in r.skipped.items():
            skipped[key] = skipped.get(key, 0) + count
    return tfm_data.ReadResult(dataset, sum(r.num_examples for r in results), skipped, results[0].labels)


def read_split(cfg, sources, split, labels=None):
    """Reads `sources` (a list of files / tfds names) for `cfg.task.name` into one TaskData.

    Args:
        cfg: ExperimentConfig.
        sources: list of str.
        split: "train" or "eval" (chooses the default tfds split).
        labels: optional LabelVocabulary; labels outside it are errors naming file and line.
    """
    d, task = cfg.data, cfg.task.name
    if not sources:
        raise InputError(f"data.{split} is empty: {task} needs labelled {split} data")
    allowed = LABELED_FORMATS.get(task)
    if allowed is not None and d.format not in allowed:
        raise InputError(f"data.format={d.format!r} cannot feed task.name={task!r}; use one of {list(allowed)}")
    results, examples = [], []
    for source in sources:
        if source.startswith("tfds:"):
            name, tfds_split = _tfds_source(source, "train" if split == "train" else "validation")
            loaded = tfm_data.load_tfds(name, tfds_split)
            (examples.extend if isinstance(loaded, list) else results.append)(loaded)
        elif task == "text_classifier":
            text_column = d.text_column if d.text_column != "text" or d.format == "jsonl" else None
            results.append(tfm_data.read_classification(
                source, text_column=text_column, text_pair_column=d.text_pair_column, label_column=d.label_column,
                format=d.format, header=d.header, labels=labels))
        elif task == "token_classifier":
            results.append(tfm_data.read_conll(source, labels=labels))
        elif task == "span_qa":
            read, skipped = tfm_data.read_squad(source)
            require_examples(source, len(read), skipped)
            examples.extend(read)
        elif task == "multiple_choice":
            results.append(tfm_data.read_multiple_choice(source, label_field=d.label_column))
        else:
            raise ValueError(f"task.name={task!r} reads a text corpus, not labelled data")
        if task != "span_qa" and not source.startswith("tfds:"):  # an empty file would end in a StopIteration
            require_examples(source, results[-1].num_examples, results[-1].skipped,
                             header=d.header and d.format in ("tsv", "csv"))
        if labels is None and results and results[-1].labels is not None:
            labels = results[-1].labels  # later files must use the first file's label set
    if examples:
        return TaskData(examples=examples)
    return TaskData(result=_concat(results))


def corpus_texts(cfg, sources):
    """The text of `sources` as a ReadResult of tf.string documents (tokenizer training, MLM pretraining).

    Plain formats give their documents; labelled formats give their input text: a classification text
    (and pair), a NER sentence (words joined by spaces), a QA context and question, an MC context and choices.
    """
    d = cfg.data
    if d.format in ("text", "jsonl") and cfg.task.name not in ("text_classifier", "multiple_choice"):
        if not sources:
            raise InputError(f"no {d.format} files to read: set data.train")
        results = [tfm_data.read_text_corpus(s, format="jsonl" if d.format == "jsonl" else "lines",
                                             text_field=d.text_column) for s in sources]
        for source, result in zip(sources, results):
            require_examples(source, result.num_examples, result.skipped)
        return _concat(results)
    if d.format in ("tsv", "csv", "jsonl") and cfg.task.name not in ("token_classifier", "span_qa", "multiple_choice"):
        # A pretraining run on a classification file: same reader, labels unchecked.
        task_cfg = dataclasses.replace(cfg, task=dataclasses.replace(cfg.task, name="text_classifier"))
        data = read_split(task_cfg, sources, "train")
        return _texts_of(data.result, ["text", "text_pair"])
    task_name = {"conll": "token_classifier", "squad": "span_qa"}.get(d.format, cfg.task.name)
    if d.format == "tfds" and task_name in ("masked_lm", "causal_lm"):
        results = [tfm_data.load_tfds(*_tfds_source(s, "train")) for s in sources]
        return _concat(results)
    task_cfg = dataclasses.replace(cfg, task=dataclasses.replace(cfg.task, name=task_name))
    data = read_split(task_cfg, sources, "train")
    if data.examples is not None:
        texts = [t for e in data.examples for t in (e.context, e.question)]
        return tfm_data.ReadResult(tf.data.Dataset.from_tensor_slices(tf.constant(texts, tf.string)), len(texts), {})
    if task_name == "token_classifier":
        ds = data.result.dataset.map(lambda e: tf.strings.reduce_join(e["tokens"], separator=" "))
        return tfm_data.ReadResult(ds, data.result.num_examples, data.result.skipped)
    return _texts_of(data.result, ["context", "choices"])


def _texts_of(result, keys):
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


def labelled_dataset(cfg, tokenizer, data, batch_size, training, ctx=None, static_batch=False):
    """Model batches of a labelled TaskData: `(x, y[, sample_weight])`, repeated and shuffled when training.

    Args:
        cfg: ExperimentConfig. tokenizer: the run's Tokenizer. data: TaskData.
        batch_size: int, per-replica batch size.
        training: bool, shuffle, drop the remainder (static batch) and repeat.
        ctx: optional `tf.distribute.InputContext` (sharding).
        static_batch: bool, evaluation batches as `(x, y, w)` with a static batch dimension, padded with
            zero-weight rows (`static_batches`): what the Trainer feeds. Leave False for predictions.
    """
    seq, seed, task = cfg.data.sequence_length, cfg.trainer.seed, cfg.task.name
    kwargs = dict(shuffle=training, seed=seed, drop_remainder=training)
    if task == "span_qa":
        features = squad_features(cfg, tokenizer, data.examples)
        ds = features.dataset(batch_size, **kwargs)
        if ctx is not None and ctx.num_input_pipelines > 1:  # shard windows, not batches
            ds = shard(ds.unbatch(), ctx).batch(batch_size, drop_remainder=training)
    else:
        examples = shard(data.result.dataset, ctx)
        if task == "text_classifier":
            ds = tfm_data.classification_dataset(examples, tokenizer, seq, batch_size, **kwargs)
        elif task == "token_classifier":
            ds = tfm_data.token_classification_dataset(examples, tokenizer, seq, batch_size, **kwargs)
        elif task == "multiple_choice":
            ds = tfm_data.multiple_choice_dataset(examples, tokenizer, seq, batch_size, **kwargs)
        else:
            raise ValueError(f"task.name={task!r} has no labelled dataset")
    if training:
        return ds.repeat()
    return static_batches(ds, batch_size, replicas_per_pipeline(ctx)) if static_batch else ds


def squad_features(cfg, tokenizer, examples):
    return tfm_data.squad_features(examples, tokenizer, cfg.data.sequence_length, doc_stride=cfg.task.doc_stride,
                                   max_query_length=cfg.task.max_query_length)
