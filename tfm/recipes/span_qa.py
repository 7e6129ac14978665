"""The span QA recipe: SQuAD-format (v1.1 / v2.0) questions over contexts, cut into overlapping windows."""

from tfm.recipes.base import LabelledRecipe


class SpanQARecipe(LabelledRecipe):
    name = "span_qa"
    formats = ("squad", "tfds")
    export_options = ("doc_stride", "max_query_length", "max_answer_length", "max_windows", "allow_no_answer")

    def task_class(self):
        from tfm.tasks import SpanQA

        return SpanQA

    def build(self, cfg, backbone, label_names=None, num_choices=None):
        return self.task_class()(backbone)

    def read_source(self, cfg, source, labels):
        """A list of SquadExamples (questions without a valid answer are counted skips)."""
        from tfm import data as tfm_data
        from tfm.data.readers import require_examples

        examples, skipped = tfm_data.read_squad(source)
        require_examples(source, len(examples), skipped)
        return examples

    def limit(self, data, count):
        from tfm.training.task_data import TaskData

        return TaskData(examples=data.examples[:count]) if count else data

    def features(self, cfg, tokenizer, examples):
        """The windows (`tfm.data.SquadFeatures`) of `examples` at the config's window settings."""
        from tfm import data as tfm_data

        return tfm_data.squad_features(examples, tokenizer, cfg.data.sequence_length, doc_stride=cfg.task.doc_stride,
                                       max_query_length=cfg.task.max_query_length)

    def batches(self, cfg, tokenizer, data, batch_size, training, ctx=None):
        from tfm.training.task_data import shard

        ds = self.features(cfg, tokenizer, data.examples).dataset(batch_size, shuffle=training, seed=cfg.trainer.seed,
                                                                  drop_remainder=training)
        if ctx is not None and ctx.num_input_pipelines > 1:  # shard windows, not batches
            ds = shard(ds.unbatch(), ctx).batch(batch_size, drop_remainder=training)
        return ds

    def texts_of(self, data):
        import tensorflow as tf

        from tfm import data as tfm_data

        texts = [t for e in data.examples for t in (e.context, e.question)]
        return tfm_data.ReadResult(tf.data.Dataset.from_tensor_slices(tf.constant(texts, tf.string)), len(texts), {})

    def score(self, model, cfg, tokenizer, data, label_names=None, batch_size=None):
        """SQuAD exact match / F1 (and the no-answer split for v2.0) over whole examples."""
        from tfm import metrics as tfm_metrics
        from tfm.recipes.scoring import predict_batches
        from tfm.tasks import span_predictions

        features = self.features(cfg, tokenizer, data.examples)
        outputs, _ = predict_batches(model, features.dataset(batch_size or cfg.trainer.batch_size))
        answers = span_predictions(features, outputs["start_logits"], outputs["end_logits"],
                                   max_answer_length=cfg.task.max_answer_length, allow_no_answer=cfg.task.allow_no_answer)
        scores = tfm_metrics.squad_scores(answers, {e.id: [a[0] for a in e.answers] for e in data.examples})
        return scores, {**scores, "num_examples": len(data.examples), "predictions": answers}

    def serving_module(self, task, tokenizer, sequence_length, label_names=None, **options):
        from tfm.export.span_qa import SpanQAModule

        return SpanQAModule(task, tokenizer, sequence_length, **options)

    def format_prediction(self, row):
        if row["start"] < 0:
            return f"(no answer)\t{row['score']:.4f}"
        return f"{row['answer']}\t{row['score']:.4f}\t{row['start']}:{row['end']}"
