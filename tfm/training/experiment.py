"""From an ExperimentConfig to a trained run dir: tokenizer, datasets, task model, Trainer.

This is what `tfm train CONFIG` runs. Rerunning the same config on the same output_dir resumes.
"""

import json
import os

import tensorflow as tf

from tfm import data as tfm_data
from tfm.training.config import save_config
from tfm.training.flops import measure_peak_flops, training_flops_per_token
from tfm.training.strategy import create_strategy, is_chief
from tfm.training.trainer import Trainer

TOKENIZER_DIR = "tokenizer"


def _corpus_texts(paths, cfg):
    """Documents of the data files as a ReadResult of tf.string (text, jsonl, or a TSV/CSV text column)."""
    d = cfg.data
    if d.format in ("text", "jsonl"):
        return tfm_data.read_text_corpus(paths, format="jsonl" if d.format == "jsonl" else "lines", text_field=d.text_column)
    if d.format in ("tsv", "csv"):
        results = [
            tfm_data.read_classification(p, text_column=d.text_column if d.text_column != "text" else None,
                                         label_column=d.label_column, format=d.format, header=d.header)
            for p in paths
        ]
        dataset = results[0].dataset
        for r in results[1:]:
            dataset = dataset.concatenate(r.dataset)
        return tfm_data.ReadResult(dataset.map(lambda e: e["text"]), sum(r.num_examples for r in results),
                                   {k: sum(r.skipped.get(k, 0) for r in results) for r in results for k in r.skipped})
    raise ValueError(f"data.format={d.format!r} is not a pretraining corpus format; use text, jsonl, tsv or csv")


def prepare_tokenizer(cfg, chief=True):
    """Loads the run dir's tokenizer, or `data.tokenizer.path`, or trains one on `data.train` and saves it.

    Args:
        cfg: ExperimentConfig.
        chief: bool, whether this process writes to the run dir.
    """
    run_tokenizer = os.path.join(cfg.output_dir, TOKENIZER_DIR)
    t = cfg.data.tokenizer
    for directory in (run_tokenizer, t.path):
        if directory and os.path.isdir(directory):
            tokenizer = tfm_data.load_tokenizer(directory)
            break
    else:
        if t.path:
            raise FileNotFoundError(f"data.tokenizer.path={t.path!r} does not exist")
        texts = _corpus_texts(cfg.data.train, cfg)
        if t.type == "wordpiece":
            tokenizer = tfm_data.WordPieceTokenizer.train(texts.dataset, t.vocab_size, lowercase=t.lowercase)
        elif t.type == "sentencepiece":
            tokenizer = tfm_data.SentencePieceTokenizer.train(texts.dataset, t.vocab_size)
        else:
            raise ValueError("data.tokenizer.type=gpt2_bpe needs data.tokenizer.path (vocab.json + merges.txt)")
    if chief and not os.path.isdir(run_tokenizer):
        tokenizer.save(run_tokenizer)
    return tokenizer


def build_backbone(cfg, vocabulary_size):
    """The backbone named by `model.preset` (or its family's smallest preset) with the set overrides."""
    from tfm.models import BertBackbone, GptBackbone

    cls = BertBackbone if cfg.model.family == "bert" else GptBackbone
    preset = cfg.model.preset or ("bert_tiny" if cfg.model.family == "bert" else "gpt2_small")
    overrides = dict(cfg.model.backbone_kwargs())
    overrides["vocabulary_size"] = vocabulary_size
    if cls is GptBackbone:
        overrides.pop("num_segments", None)
    return cls.from_preset(preset, **overrides)


def build_task(cfg, tokenizer):
    """The task model of `task.name` on a fresh backbone."""
    from tfm.tasks import CausalLM, MaskedLM

    backbone = build_backbone(cfg, tokenizer.vocabulary_size)
    if cfg.task.name == "masked_lm":
        return MaskedLM(backbone)
    if cfg.task.name == "causal_lm":
        return CausalLM(backbone)
    raise ValueError(f"task.name={cfg.task.name!r} is not available in this trainer yet")


def _shard(dataset, ctx):
    if ctx is not None and ctx.num_input_pipelines > 1:
        return dataset.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
    return dataset


def dataset_fns(cfg, tokenizer):
    """`(train_fn, eval_fn)` for the Trainer: `(per_replica_batch, input_context) -> dataset`."""
    seq, task, seed = cfg.data.sequence_length, cfg.task, cfg.trainer.seed
    train_texts = _corpus_texts(cfg.data.train, cfg)
    eval_texts = _corpus_texts(cfg.data.eval, cfg) if cfg.data.eval else None

    def make(texts, batch, ctx, training):
        texts = _shard(texts.dataset, ctx)
        if training:
            texts = texts.repeat()  # every epoch draws new masks: dynamic masking
        elif cfg.data.max_eval_examples:
            texts = texts.take(cfg.data.max_eval_examples)
        if task.name == "masked_lm":
            return tfm_data.mlm_dataset(texts, tokenizer, seq, batch, max_predictions=task.max_predictions,
                                        mask_rate=task.mask_rate, whole_word=task.whole_word_masking,
                                        shuffle=training, seed=seed, drop_remainder=training)
        return tfm_data.clm_dataset(texts, tokenizer, seq, batch, shuffle=training, seed=seed, drop_remainder=training)

    train_fn = lambda batch, ctx: make(train_texts, batch, ctx, True)  # noqa: E731
    eval_fn = (lambda batch, ctx: make(eval_texts, batch, ctx, False)) if eval_texts else None  # noqa: E731
    return train_fn, eval_fn


def _sample_fn(cfg, tokenizer):
    """Greedy continuations of a few eval-text prompts, for the TensorBoard text plugin (causal LM)."""
    if cfg.task.name != "causal_lm" or not cfg.trainer.num_samples or not cfg.data.eval:
        return None
    prompts = [t.numpy() for t in _corpus_texts(cfg.data.eval, cfg).dataset.take(cfg.trainer.num_samples)]

    def sample(model):
        import numpy as np

        ids = [tokenizer.tokenize(tf.constant([p])).flat_values.numpy()[:16] for p in prompts]
        length = max(len(i) for i in ids)
        token_ids = np.zeros((len(ids), length), "int32")
        mask = np.zeros_like(token_ids)
        for row, i in enumerate(ids):
            token_ids[row, : len(i)], mask[row, : len(i)] = i, 1
        out = model.generate(token_ids, max_new_tokens=24, padding_mask=mask)
        texts = tokenizer.detokenize(tf.ragged.boolean_mask(out["token_ids"], tf.cast(out["padding_mask"], tf.bool)))
        return [t.decode("utf-8", "replace") for t in texts.numpy()]

    return sample


def run_experiment(cfg, strategy=None, verbose=True):
    """Trains `cfg` in `cfg.output_dir` (resuming if it holds checkpoints); returns the final metrics."""
    strategy = strategy or create_strategy(cfg.trainer.strategy)
    chief = is_chief(strategy)
    os.makedirs(cfg.output_dir, exist_ok=True)
    if chief:
        save_config(cfg, cfg.output_dir)
    tokenizer = prepare_tokenizer(cfg, chief)
    train_fn, eval_fn = dataset_fns(cfg, tokenizer)
    peak = cfg.trainer.peak_flops
    if peak is None:
        peak = measure_peak_flops(1024)
        cfg.trainer.peak_flops = peak
    holder = {}

    def model_fn():
        holder["model"] = build_task(cfg, tokenizer)
        return holder["model"]

    trainer = Trainer(cfg.trainer, cfg.output_dir, model_fn, train_fn, eval_fn, strategy=strategy,
                      sample_fn=_sample_fn(cfg, tokenizer), hparams=_flat_hparams(cfg), verbose=verbose)
    predicted = cfg.task.max_predictions / cfg.data.sequence_length if cfg.task.name == "masked_lm" else 1.0
    trainer.flops_per_token = training_flops_per_token(trainer.model.backbone, cfg.data.sequence_length, predicted)
    metrics = trainer.train()
    if chief:
        with open(os.path.join(cfg.output_dir, "run_info.json"), "w") as f:
            json.dump({"peak_flops": peak, "flops_per_token": trainer.flops_per_token,
                       "restored_from": trainer.restored_from}, f, indent=2)
    return metrics, trainer


def _flat_hparams(cfg):
    from tfm.training.config import to_dict

    flat = {}
    for section in ("task", "model", "data", "trainer"):
        for key, value in to_dict(getattr(cfg, section)).items():
            if isinstance(value, (bool, int, float, str)):
                flat[f"{section}.{key}"] = value
    return flat
