"""The recipe interface, and the two shared shapes of a recipe: a labelled (fine-tuning) task and a
language model trained on plain text.

Each method is one task-specific decision that used to be a branch on the task's name somewhere else;
the callers are `tfm.training` (experiment, evaluation, run dirs), `tfm.export` and the CLI.
"""

import dataclasses

from tfm.errors import InputError


class TaskRecipe:
    """What a task declares. Subclasses set the class attributes and override the methods.

    Attributes:
        name: str, the `task.name` of configs and of `tfm_export.json`.
        family: str or None, the `model.family` the task needs (None: any).
        formats: tuple of str, the `data.format` values whose files this task reads.
        export_options: tuple of str, the `tfm export` options the task's serving module takes.
        tflite: bool, whether `tfm export --format tflite` supports the task.
        several_text_columns: bool, whether `data.text_column` may list several columns.
    """

    name = None
    family = None
    formats = ()
    export_options = ()
    tflite = False
    several_text_columns = False

    def task_class(self):
        """The `tfm.tasks` class (imported on use: recipes load without TensorFlow)."""
        raise NotImplementedError

    def validate_config(self, cfg):
        """Cross-field checks of an ExperimentConfig for this task (raise `ConfigError`)."""
        from tfm.training.config_core import ConfigError

        if self.family is not None and cfg.model.family != self.family:
            raise ConfigError("model.family", f"must be {self.family!r} for task.name={self.name!r}, "
                                              f"got {cfg.model.family!r}")
        if not isinstance(cfg.data.text_column, str) and not self.several_text_columns:
            raise ConfigError("data.text_column", f"must be one column for task.name={self.name!r}, got "
                                                  f"{cfg.data.text_column!r} (a list is read by text_embedder)")

    def build(self, cfg, backbone, label_names=None, num_choices=None):
        """The task model on `backbone`. `label_names` / `num_choices`: from the run's labels.json."""
        raise NotImplementedError

    def read_data(self, cfg):
        """`(train_data, eval_data, meta)` read before training: TaskData (or None) and the dict saved as
        the run's labels.json (label names, number of choices)."""
        raise NotImplementedError

    def dataset_fns(self, cfg, tokenizer, train_data=None, eval_data=None):
        """`(train_fn, eval_fn)` for the Trainer: `(per_replica_batch, input_context) -> dataset`."""
        raise NotImplementedError

    def corpus_texts(self, cfg, sources):
        """The text of `sources` (in this task's formats) as a ReadResult of tf.string documents."""
        raise NotImplementedError

    def evaluate(self, run, sources):
        """The report dict of `tfm evaluate` on `sources` (scalars at top level, `text` printable)."""
        raise NotImplementedError

    def report_fn(self, cfg, tokenizer, eval_data, meta):
        """A `model -> scalars` function the Trainer logs at each evaluation, or None."""
        return None

    def sample_fn(self, cfg, tokenizer):
        """A `model -> list of str` function the Trainer shows in TensorBoard, or None."""
        return None

    def predicted_fraction(self, cfg):
        """The fraction of positions that go through the output head (training FLOPs)."""
        return 1.0

    def serving_module(self, task, tokenizer, sequence_length, label_names=None, **options):
        """The `tfm.export` serving module of `task` (tokenizer: a `GraphTokenizer`)."""
        raise NotImplementedError

    def export_kwargs(self, cfg, options):
        """The serving-module options of a run: the set `options` this task takes, plus the run's own."""
        return {k: v for k, v in options.items() if k in self.export_options and v is not None}

    def format_prediction(self, row):
        """One line of `tfm predict` output for a `serving_default` prediction dict."""
        raise NotImplementedError


class LabelledRecipe(TaskRecipe):
    """A fine-tuning task: labelled examples read per source, batched, scored on whole examples."""

    def read_source(self, cfg, source, labels):
        """One file as a ReadResult (labels outside the LabelVocabulary `labels` are errors)."""
        raise NotImplementedError

    def batches(self, cfg, tokenizer, data, batch_size, training, ctx=None):
        """Model batches `(x, y[, w])` of a TaskData, one pass (sharded by `ctx`), not repeated."""
        raise NotImplementedError

    def texts_of(self, data):
        """A TaskData's input text as a ReadResult of documents (tokenizer training, MLM pretraining)."""
        raise NotImplementedError

    def pipeline_batches(self, pipeline, cfg, tokenizer, data, batch_size, training, ctx=None):
        """`batches` through a `tfm.data` pipeline (`classification_dataset`, ...) over a TaskData's examples,
        sharded by `ctx`, shuffled and cut to full batches when training."""
        from tfm.training.task_data import shard

        return pipeline(shard(data.result.dataset, ctx), tokenizer, cfg.data.sequence_length, batch_size,
                        shuffle=training, seed=cfg.trainer.seed, drop_remainder=training)

    def score(self, model, cfg, tokenizer, data, label_names=None, batch_size=None):
        """`(scalars, report)` of `model` on a TaskData: scalars for TensorBoard, the JSON-able report."""
        raise NotImplementedError

    def read_split(self, cfg, sources, split, labels=None):
        """Reads `sources` (files / tfds names) into one TaskData: files with `read_source`, tfds sources
        with `tfm.data.load_tfds`.

        Args:
            cfg: ExperimentConfig.
            sources: list of str.
            split: "train" or "eval" (chooses the default tfds split).
            labels: optional LabelVocabulary; labels outside it are errors naming file and line.
        """
        from tfm import data as tfm_data
        from tfm.data.readers import require_examples
        from tfm.training.task_data import TaskData, concat, tfds_source

        d = cfg.data
        if not sources:
            raise InputError(f"data.{split} is empty: {self.name} needs labelled {split} data")
        if d.format not in self.formats:
            raise InputError(f"data.format={d.format!r} cannot feed task.name={self.name!r}; "
                             f"use one of {list(self.formats)}")
        results, examples = [], []
        for source in sources:
            if source.startswith("tfds:"):
                loaded = tfm_data.load_tfds(*tfds_source(source, "train" if split == "train" else "validation"))
            else:
                loaded = self.read_source(cfg, source, labels)
                if not isinstance(loaded, list):  # an empty file would end in a StopIteration
                    require_examples(source, loaded.num_examples, loaded.skipped,
                                     header=d.header and d.format in ("tsv", "csv"))
            (examples.extend if isinstance(loaded, list) else results.append)(loaded)
            if labels is None and results and results[-1].labels is not None:
                labels = results[-1].labels  # later files must use the first file's label set
        return TaskData(examples=examples) if examples else TaskData(result=concat(results))

    def labelled_dataset(self, cfg, tokenizer, data, batch_size, training, ctx=None, static_batch=False):
        """Model batches `(x, y[, sample_weight])` of a TaskData, repeated and shuffled when training.

        Args:
            cfg: ExperimentConfig. tokenizer: the run's Tokenizer. data: TaskData.
            batch_size: int, per-replica batch size.
            training: bool, shuffle, drop the remainder (static batch) and repeat.
            ctx: optional `tf.distribute.InputContext` (sharding).
            static_batch: bool, evaluation batches as `(x, y, w)` with a static batch dimension, padded with
                zero-weight rows (`task_data.static_batches`): what the Trainer feeds. False for predictions.
        """
        from tfm.training.task_data import length_bucketed, replicas_per_pipeline, static_batches

        ds = self.batches(cfg, tokenizer, data, batch_size, training, ctx)
        if training:
            ds = ds.repeat()
            if cfg.data.length_buckets:
                ds = length_bucketed(ds, cfg.data.length_buckets, batch_size, cfg.data.sequence_length)
            return ds
        return static_batches(ds, batch_size, replicas_per_pipeline(ctx)) if static_batch else ds

    def metadata(self, cfg, train_data):
        """The run's labels.json: label names and number of choices where the task has them."""
        return {"label_names": None, "num_choices": None}

    def given_labels(self, cfg):
        """The label names fixed before reading the data (`task.label_names`), in label-id order, or None."""
        return list(cfg.task.label_names) if cfg.task.label_names else None

    def read_data(self, cfg):
        from tfm.data import LabelVocabulary

        given = self.given_labels(cfg)
        train_data = self.read_split(cfg, cfg.data.train, "train", labels=LabelVocabulary(given) if given else None)
        meta = self.metadata(cfg, train_data)
        eval_data = None
        if cfg.data.eval:
            names = meta.get("label_names")
            eval_data = self.read_split(cfg, cfg.data.eval, "eval",
                                             labels=LabelVocabulary(names) if names else None)
        return train_data, eval_data, meta

    def limit(self, data, count):
        """The first `count` examples of a TaskData (`data.max_eval_examples`)."""
        from tfm import data as tfm_data
        from tfm.training.task_data import TaskData

        if not count:
            return data
        return TaskData(result=tfm_data.ReadResult(data.result.dataset.take(count), count, {}))

    def dataset_fns(self, cfg, tokenizer, train_data=None, eval_data=None):
        train_fn = lambda batch, ctx: self.labelled_dataset(cfg, tokenizer, train_data, batch, True, ctx)  # noqa: E731
        eval_fn = None
        if eval_data is not None:
            limited = self.limit(eval_data, cfg.data.max_eval_examples)
            eval_fn = lambda batch, ctx: self.labelled_dataset(  # noqa: E731
                cfg, tokenizer, limited, batch, False, ctx, static_batch=True)
        return train_fn, eval_fn

    def corpus_texts(self, cfg, sources):
        return self.texts_of(self.read_split(cfg, sources, "train"))

    def report_fn(self, cfg, tokenizer, eval_data, meta):
        if eval_data is None:
            return None
        data = self.limit(eval_data, cfg.data.max_eval_examples)
        names = meta.get("label_names")
        return lambda model: self.score(model, cfg, tokenizer, data, names)[0]

    def evaluate(self, run, sources):
        from tfm.data import LabelVocabulary

        labels = LabelVocabulary(run.label_names) if run.label_names else None
        data = self.read_split(run.config, sources, "eval", labels=labels)
        return self.score(run.task, run.config, run.tokenizer, data, run.label_names)[1]


class LanguageModelRecipe(TaskRecipe):
    """A pretraining task on plain text: documents read lazily, scored by token-weighted loss / accuracy."""

    formats = ("text", "jsonl", "tfds")

    def text_batches(self, cfg, tokenizer, texts, batch_size, training):
        """Model batches of a dataset of documents (new masks / windows each pass when training)."""
        raise NotImplementedError

    def read_data(self, cfg):
        return None, None, {}

    def corpus_texts(self, cfg, sources):
        from tfm import data as tfm_data
        from tfm.data.readers import require_examples
        from tfm.training.task_data import concat, tfds_source

        d = cfg.data
        if not sources:
            raise InputError(f"no {d.format} files to read: set data.train")
        if d.format == "tfds":
            return concat([tfm_data.load_tfds(*tfds_source(s, "train")) for s in sources])
        results = [tfm_data.read_text_corpus(s, format="jsonl" if d.format == "jsonl" else "lines",
                                             text_field=d.text_column) for s in sources]
        for source, result in zip(sources, results):
            require_examples(source, result.num_examples, result.skipped)
        return concat(results)

    def dataset_fns(self, cfg, tokenizer, train_data=None, eval_data=None):
        from tfm.recipes import corpus_texts
        from tfm.training import task_data

        def make(sources, batch, ctx, training):
            texts = corpus_texts(cfg, sources).dataset  # read when the Trainer asks, not before
            if not training and cfg.data.max_eval_examples:
                texts = texts.take(cfg.data.max_eval_examples)  # before sharding: the limit is global
            texts = task_data.shard(texts, ctx)
            if training:  # every epoch draws new masks: dynamic masking
                ds = self.text_batches(cfg, tokenizer, texts.repeat(), batch, True)
                if cfg.data.length_buckets:  # short lines (a Chinese corpus): steps on fewer padding tokens
                    ds = task_data.length_bucketed(ds, cfg.data.length_buckets, batch, cfg.data.sequence_length)
                return ds
            # Evaluation: a static batch dimension (TPU), the short last batch padded with zero weights.
            return task_data.static_batches(self.text_batches(cfg, tokenizer, texts, batch, False), batch,
                                            task_data.replicas_per_pipeline(ctx))

        train_fn = lambda batch, ctx: make(cfg.data.train, batch, ctx, True)  # noqa: E731
        eval_fn = (lambda batch, ctx: make(cfg.data.eval, batch, ctx, False)) if cfg.data.eval else None  # noqa
        return train_fn, eval_fn

    def evaluate(self, run, sources):
        """Token-weighted loss / accuracy (/ perplexity) on text `sources`; the training data is not read."""
        cfg = dataclasses.replace(run.config, data=dataclasses.replace(run.config.data, eval=list(sources)))
        _, eval_fn = self.dataset_fns(cfg, run.tokenizer)
        if eval_fn is None:
            raise InputError("no evaluation data: give --data FILE (the run's config has no data.eval)")
        totals = {}
        for batch in eval_fn(cfg.trainer.batch_size, None):
            x, y, w = (tuple(batch) + (None,))[:3]
            for key, value in run.task.metric_sums(y, run.task(x, training=False), w).items():
                totals[key] = totals.get(key, 0.0) + float(value)
        report = run.task.metrics_from_sums(totals)
        report["text"] = "\n".join(f"{k:>12}: {v:.4f}" for k, v in report.items()) + "\n"
        return report
