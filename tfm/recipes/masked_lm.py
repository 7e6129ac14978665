"""The masked-LM recipe: pretraining on plain text (dynamic masking), served as fill-mask."""

from tfm.recipes.base import LanguageModelRecipe


class MaskedLMRecipe(LanguageModelRecipe):
    name = "masked_lm"
    family = "bert"
    export_options = ("num_candidates",)

    def task_class(self):
        from tfm.tasks import MaskedLM

        return MaskedLM

    def build(self, cfg, backbone, label_names=None, num_choices=None):
        if cfg.task.next_sentence:
            return self.task_class()(backbone, next_sentence=True)
        return self.task_class()(backbone)

    def text_batches(self, cfg, tokenizer, texts, batch_size, training):
        from tfm import data as tfm_data

        t = cfg.task
        return tfm_data.mlm_dataset(texts, tokenizer, cfg.data.sequence_length, batch_size,
                                    max_predictions=self.max_predictions(cfg), mask_rate=t.mask_rate,
                                    whole_word_masking=t.whole_word_masking, word_boundaries=t.word_boundaries,
                                    next_sentence=t.next_sentence,
                                    shuffle=training, seed=cfg.trainer.seed, drop_remainder=training)

    def max_predictions(self, cfg):
        """`task.max_predictions`, or the pipeline's default for the sequence length and mask rate."""
        from tfm.data.pipelines import default_max_predictions

        return cfg.task.max_predictions or default_max_predictions(cfg.data.sequence_length, cfg.task.mask_rate)

    def predicted_fraction(self, cfg):
        return self.max_predictions(cfg) / cfg.data.sequence_length  # only masked positions reach the head

    def serving_module(self, task, tokenizer, sequence_length, label_names=None, **options):
        from tfm.export.serving import MaskedLMModule

        return MaskedLMModule(task, tokenizer, sequence_length, **options)

    def format_prediction(self, row):
        masks = [", ".join(f"{t} {s:.3f}" for t, s in zip(tokens, scores))
                 for tokens, scores in zip(row["tokens"], row["scores"])]
        return " | ".join(masks) or "(no mask token)"
