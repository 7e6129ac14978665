"""The causal-LM recipe: next-token pretraining on plain text, sample continuations in TensorBoard,
served as text generation."""

from tfm.recipes.base import LanguageModelRecipe


class CausalLMRecipe(LanguageModelRecipe):
    name = "causal_lm"
    family = "gpt"
    export_options = ("max_new_tokens", "num_beams")

    def task_class(self):
        from tfm.tasks import CausalLM

        return CausalLM

    def build(self, cfg, backbone, label_names=None, num_choices=None):
        return self.task_class()(backbone)

    def text_batches(self, cfg, tokenizer, texts, batch_size, training):
        from tfm import data as tfm_data

        return tfm_data.clm_dataset(texts, tokenizer, cfg.data.sequence_length, batch_size, shuffle=training,
                                    seed=cfg.trainer.seed, drop_remainder=training)

    def sample_fn(self, cfg, tokenizer):
        """Greedy continuations of the first `trainer.num_samples` eval texts (16-token prompts)."""
        if not cfg.trainer.num_samples or not cfg.data.eval:
            return None
        import numpy as np
        import tensorflow as tf

        from tfm.recipes import corpus_texts

        prompts = [t.numpy() for t in corpus_texts(cfg, cfg.data.eval).dataset.take(cfg.trainer.num_samples)]

        def sample(model):
            ids = [tokenizer.tokenize(tf.constant([p])).flat_values.numpy()[:16] for p in prompts]
            length = max(len(i) for i in ids)
            token_ids = np.zeros((len(ids), length), "int32")
            mask = np.zeros_like(token_ids)
            for row, i in enumerate(ids):
                token_ids[row, : len(i)], mask[row, : len(i)] = i, 1
            out = model.generate(token_ids, max_new_tokens=24, padding_mask=mask)
            kept = tf.ragged.boolean_mask(out["token_ids"], tf.cast(out["padding_mask"], tf.bool))
            return [t.decode("utf-8", "replace") for t in tokenizer.detokenize(kept).numpy()]

        return sample

    def export_kwargs(self, cfg, options):
        kwargs = super().export_kwargs(cfg, options)
        kwargs.setdefault("max_new_tokens", min(64, cfg.data.sequence_length // 2))
        return kwargs

    def serving_module(self, task, tokenizer, sequence_length, label_names=None, **options):
        from tfm.export.generation import CausalLMModule

        return CausalLMModule(task, tokenizer, sequence_length, **options)

    def format_prediction(self, row):
        return row["text"]
