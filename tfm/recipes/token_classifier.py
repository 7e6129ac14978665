"""The token classifier's (NER / tagging) recipe: CoNLL or tfds sentences with one tag per word."""

import numpy as np

from tfm.recipes.base import LabelledRecipe


class TokenClassifierRecipe(LabelledRecipe):
    name = "token_classifier"
    formats = ("conll", "tfds")

    def task_class(self):
        from tfm.tasks import TokenClassifier

        return TokenClassifier

    def build(self, cfg, backbone, label_names=None, num_choices=None):
        return self.task_class()(backbone, len(label_names) if label_names else cfg.task.num_labels,
                                 lstm_units=cfg.task.lstm_units, crf=cfg.task.crf,
                                 crf_learning_rate_multiplier=cfg.task.crf_learning_rate_multiplier)

    def metadata(self, cfg, train_data):
        names = self.given_labels(cfg) or list(train_data.result.labels.names)
        return {"label_names": names, "num_choices": None}

    def read_source(self, cfg, source, labels):
        from tfm import data as tfm_data

        return tfm_data.read_conll(source, labels=labels)

    def batches(self, cfg, tokenizer, data, batch_size, training, ctx=None):
        from tfm import data as tfm_data

        return self.pipeline_batches(tfm_data.token_classification_dataset, cfg, tokenizer, data, batch_size, training, ctx)

    def texts_of(self, data):
        import tensorflow as tf

        from tfm import data as tfm_data

        ds = data.result.dataset.map(lambda e: tf.strings.reduce_join(e["tokens"], separator=" "))
        return tfm_data.ReadResult(ds, data.result.num_examples, data.result.skipped)

    def score(self, model, cfg, tokenizer, data, label_names=None, batch_size=None):
        """Seqeval-style entity P/R/F1 (per entity type and micro) and token accuracy on whole sentences."""
        from tfm import metrics as tfm_metrics
        from tfm.recipes.scoring import predict_batches
        from tfm.tasks import decode_tags
        batches = self.labelled_dataset(cfg, tokenizer, data, batch_size or cfg.trainer.batch_size, False)
        logits, labels = predict_batches(model, batches)
        crf = model.crf_scores() if getattr(model, "crf", False) else None
        true_tags, pred_tags = decode_tags(logits, labels, label_names, crf=crf)
        scheme = cfg.task.tagging_scheme
        scores = tfm_metrics.entity_scores(true_tags, pred_tags, scheme=scheme)
        micro = scores["micro avg"]
        scalars = {"entity_f1": micro["f1"], "entity_precision": micro["precision"], "entity_recall": micro["recall"],
                   "token_accuracy": float(np.mean([t == p for ts, ps in zip(true_tags, pred_tags)
                                                    for t, p in zip(ts, ps)] or [0.0]))}
        text = tfm_metrics.entity_classification_report(true_tags, pred_tags, scheme=scheme)
        return scalars, {**scalars, "entities": scores, "num_examples": len(true_tags), "text": text}

    def serving_module(self, task, tokenizer, sequence_length, label_names=None, **options):
        from tfm.export.entities import TokenClassifierModule

        return TokenClassifierModule(task, tokenizer, sequence_length, label_names=label_names, **options)

    def format_prediction(self, row):
        entities = [f"{t} [{k} {s}:{e} {p:.2f}]" for t, k, s, e, p in
                    zip(row["entity_text"], row["entity_type"], row["entity_start"], row["entity_end"],
                        row["entity_score"])]
        return "; ".join(entities) or "(no entities)"
