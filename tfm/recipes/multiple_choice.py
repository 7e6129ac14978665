"""The multiple-choice recipe: JSONL / tfds records of a context, N choices and the right one's index."""

from tfm.recipes.base import LabelledRecipe


class MultipleChoiceRecipe(LabelledRecipe):
    name = "multiple_choice"
    formats = ("jsonl", "tfds")

    def task_class(self):
        from tfm.tasks import MultipleChoice

        return MultipleChoice

    def build(self, cfg, backbone, label_names=None, num_choices=None):
        return self.task_class()(backbone, cfg.task.num_choices or num_choices)

    def metadata(self, cfg, train_data):
        choices = cfg.task.num_choices or int(next(iter(train_data.result.dataset))["choices"].shape[0])
        return {"label_names": None, "num_choices": choices}

    def read_source(self, cfg, source, labels):
        from tfm import data as tfm_data

        return tfm_data.read_multiple_choice(source, label_field=cfg.data.label_column)

    def batches(self, cfg, tokenizer, data, batch_size, training, ctx=None):
        from tfm import data as tfm_data

        return self.pipeline_batches(tfm_data.multiple_choice_dataset, cfg, tokenizer, data, batch_size, training, ctx)

    def texts_of(self, data):
        from tfm.training.task_data import texts_of

        return texts_of(data.result, ["context", "choices"])

    def score(self, model, cfg, tokenizer, data, label_names=None, batch_size=None):
        from tfm.recipes.scoring import classification_scores, predict_batches
        batches = self.labelled_dataset(cfg, tokenizer, data, batch_size or cfg.trainer.batch_size, False)
        logits, labels = predict_batches(model, batches)
        return classification_scores(logits, labels)

    def serving_module(self, task, tokenizer, sequence_length, label_names=None, **options):
        from tfm.export.serving import MultipleChoiceModule

        return MultipleChoiceModule(task, tokenizer, sequence_length, **options)

    def format_prediction(self, row):
        return f"{row['choice']}\t{max(row['probabilities']):.4f}"
