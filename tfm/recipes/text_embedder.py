"""The text embedder's recipe: TSV / CSV / JSONL (anchor, positive[, hard negative]) pairs, trained with the
in-batch contrastive loss, scored by retrieval (each anchor searches every positive of the split)."""

import numpy as np

from tfm.recipes.base import LabelledRecipe

POOLINGS = ("mean", "cls", "max")


class TextEmbedderRecipe(LabelledRecipe):
    name = "text_embedder"
    family = "bert"
    formats = ("tsv", "csv", "jsonl")
    several_text_columns = True  # data.text_column: [es, kjv] reads one (anchor, positive) pair per column

    def task_class(self):
        from tfm.tasks import TextEmbedder

        return TextEmbedder

    def validate_config(self, cfg):
        super().validate_config(cfg)
        from tfm.training.config_core import _require

        _require(cfg.task.pooling in POOLINGS, "task.pooling",
                 f"must be one of {list(POOLINGS)} for task.name=text_embedder (it has no [CLS] pooler head), "
                 f"got {cfg.task.pooling!r}")
        _require(bool(cfg.data.text_pair_column), "data.text_pair_column",
                 "must name the positive text's column: text_embedder trains on (text, text_pair) pairs")

    def build(self, cfg, backbone, label_names=None, num_choices=None):
        t = cfg.task
        return self.task_class()(backbone, pooling=t.pooling, normalize=t.normalize, scale=t.scale,
                                 symmetric=t.symmetric, sequence_length=cfg.data.sequence_length)

    def read_source(self, cfg, source, labels):
        from tfm.data.text_pairs import read_text_pairs

        d = cfg.data
        return read_text_pairs(source, d.text_column, d.text_pair_column, d.negative_column, format=d.format,
                               header=d.header)

    def labelled_dataset(self, cfg, tokenizer, data, batch_size, training, ctx=None, static_batch=False):
        from tfm.data.text_pairs import contrastive_dataset
        from tfm.training.task_data import replicas_per_pipeline, shard, static_batches

        ds = contrastive_dataset(shard(data.result.dataset, ctx), tokenizer, cfg.data.sequence_length, batch_size,
                                 shuffle=training, seed=cfg.trainer.seed, drop_remainder=training,
                                 shuffle_buffer=cfg.data.shuffle_buffer,
                                 length_buckets=cfg.data.length_buckets if training else None)
        if training:
            return ds.repeat()
        # A short last batch gets weight-0 copies, which the loss leaves out of every softmax.
        return static_batches(ds, batch_size, replicas_per_pipeline(ctx)) if static_batch else ds

    def texts_of(self, data):
        from tfm.training.task_data import texts_of

        return texts_of(data.result, ["text", "text_pair"])

    def score(self, model, cfg, tokenizer, data, label_names=None, batch_size=None):
        """Retrieval over the split: every anchor searches the split's distinct positives; the relevant one is
        its own. Identical positives are one document (several anchors may share it, e.g. two translations)."""
        from tfm.retrieval.index import Index
        from tfm.retrieval.metrics import retrieval_scores

        rows = list(data.result.dataset.as_numpy_iterator())
        queries = [r["text"].decode("utf-8") for r in rows]
        document = {}  # positive text -> its row in the corpus
        relevant = [[document.setdefault(r["text_pair"].decode("utf-8"), len(document))] for r in rows]
        embed = embedder_with(model, tokenizer, cfg.data.sequence_length)
        size = batch_size or cfg.trainer.batch_size
        index = Index.from_vectors(embed.embed(list(document), size))  # exact top-k, ties to the lower row
        top = index.search(embed.embed(queries, size), k=10).rows
        report = retrieval_scores(top, relevant, ks=(1, 10))
        report["examples"] = len(rows)
        report["text"] = "".join(f"{key:>12}: {value:.4f}\n" for key, value in report.items() if key != "examples")
        scalars = {key: value for key, value in report.items() if isinstance(value, float)}
        return scalars, report

    def serving_module(self, task, tokenizer, sequence_length, label_names=None, **options):
        from tfm.export.serving import TextEmbedderModule

        return TextEmbedderModule(task, tokenizer, sequence_length)

    def format_prediction(self, row):
        vector = np.asarray(row["embedding"], "float32")
        return f"dim={vector.size}\t" + " ".join(f"{v:.4f}" for v in vector[:8]) + (" ..." if vector.size > 8 else "")


def embedder_with(model, tokenizer, sequence_length):
    """`model` with `tokenizer` and `sequence_length` set for `embed` (a run's model has no tokenizer)."""
    if model.tokenizer is None:
        model.tokenizer = tokenizer
    model.sequence_length = int(sequence_length)
    return model
