"""The text classifier's recipe: TSV / CSV / JSONL / tfds sentences (or pairs) with a class label."""

from tfm.recipes.base import LabelledRecipe


class TextClassifierRecipe(LabelledRecipe):
    name = "text_classifier"
    formats = ("tsv", "csv", "jsonl", "tfds")
    tflite = True

    def task_class(self):
        from tfm.tasks import TextClassifier

        return TextClassifier

    def validate_config(self, cfg):
        super().validate_config(cfg)
        from tfm.training.config_core import _require

        _require(cfg.task.pooling in ("pooler", "mean"), "task.pooling",
                 f"must be 'pooler' or 'mean' for task.name=text_classifier, got {cfg.task.pooling!r}")
        names, classes = cfg.task.label_names, cfg.task.num_classes
        if names is not None:
            _require(classes == len(names), "task.label_names", f"has {len(names)} names but num_classes is {classes}")

    def build(self, cfg, backbone, label_names=None, num_choices=None):
        return self.task_class()(backbone, len(label_names) if label_names else cfg.task.num_classes,
                                 pooling=cfg.task.pooling)

    def metadata(self, cfg, train_data):
        names = self.given_labels(cfg) or list(train_data.result.labels.names)
        return {"label_names": names, "num_choices": None}

    def read_source(self, cfg, source, labels):
        from tfm import data as tfm_data

        d = cfg.data
        text_column = d.text_column if d.text_column != "text" or d.format == "jsonl" else None
        return tfm_data.read_classification(source, text_column=text_column, text_pair_column=d.text_pair_column,
                                            label_column=d.label_column, format=d.format, header=d.header,
                                            labels=labels)

    def batches(self, cfg, tokenizer, data, batch_size, training, ctx=None):
        from tfm import data as tfm_data

        return self.pipeline_batches(tfm_data.classification_dataset, cfg, tokenizer, data, batch_size, training, ctx)

    def texts_of(self, data):
        from tfm.training.task_data import texts_of

        return texts_of(data.result, ["text", "text_pair"])

    def score(self, model, cfg, tokenizer, data, label_names=None, batch_size=None):
        from tfm.recipes.scoring import classification_scores, predict_batches
        batches = self.labelled_dataset(cfg, tokenizer, data, batch_size or cfg.trainer.batch_size, False)
        logits, labels = predict_batches(model, batches)
        return classification_scores(logits, labels, label_names, binary_f1=len(label_names or ()) == 2)

    def serving_module(self, task, tokenizer, sequence_length, label_names=None, **options):
        from tfm.export.serving import TextClassifierModule

        return TextClassifierModule(task, tokenizer, sequence_length, label_names=label_names, **options)

    def export_kwargs(self, cfg, options):
        return {"text_pair": cfg.data.text_pair_column is not None}

    def format_prediction(self, row):
        if "predictions" in row:  # a regression head
            return " ".join(f"{v:.4f}" for v in row["predictions"])
        return f"{row['label_name']}\t{max(row['probabilities']):.4f}"
