"""From an ExperimentConfig to a trained run dir: tokenizer, datasets, task model, Trainer.

This is what `tfm train CONFIG` runs. Rerunning the same config on the same output_dir resumes.
Everything that depends on the task comes from its recipe (`tfm.recipes.get_recipe(cfg.task.name)`).
"""

import dataclasses
import json
import os

from tfm import data as tfm_data
from tfm.data.quickstart_corpus import prepare_data
from tfm.errors import InputError
from tfm.recipes import corpus_texts, get_recipe
from tfm.training.checkpoints import check_output_dir
from tfm.training.config import pretrain_config, save_config, to_dict
from tfm.training.flops import measure_peak_flops, training_flops_per_token
from tfm.training.run_dir import (  # noqa: F401  (build_task, load_run, Run: the public names, also here)
    LABELS_FILENAME,
    RUN_INFO_FILENAME,
    TOKENIZER_DIR,
    Run,
    build_backbone,
    build_task,
    init_tokenizer,
    load_run,
    write_backbone,
    write_labels,
)
from tfm.training.strategy import create_strategy, is_chief
from tfm.training.trainer import Trainer


def prepare_tokenizer(cfg, chief=True):
    """The run's tokenizer: the run dir's, or `data.tokenizer.path`, or `task.init_checkpoint`'s, or one
    trained on the text of `data.train`; saved into the run dir.

    Args:
        cfg: ExperimentConfig.
        chief: bool, whether this process writes to the run dir.
    """
    run_tokenizer = os.path.join(cfg.output_dir, TOKENIZER_DIR)
    t = cfg.data.tokenizer
    if t.path and not os.path.isdir(t.path):
        raise FileNotFoundError(f"data.tokenizer.path={t.path!r} does not exist")
    directory = next((d for d in (run_tokenizer, t.path) if d and os.path.isdir(d)), None)
    tokenizer = tfm_data.load_tokenizer(directory) if directory else init_tokenizer(cfg)
    if tokenizer is None:
        texts = corpus_texts(cfg, cfg.data.train)
        if t.type == "wordpiece":
            tokenizer = tfm_data.WordPieceTokenizer.train(texts.dataset, t.vocabulary_size, lowercase=t.lowercase,
                                                          max_unique_chars=t.max_unique_chars)
        elif t.type == "sentencepiece":
            tokenizer = tfm_data.SentencePieceTokenizer.train(texts.dataset, t.vocabulary_size)
        else:
            raise InputError("data.tokenizer.type=bpe needs data.tokenizer.path (vocab.json + merges.txt)")
    if chief and not os.path.isdir(run_tokenizer):
        tokenizer.save(run_tokenizer)
    return tokenizer


def dataset_fns(cfg, tokenizer, train_data=None, eval_data=None):
    """`(train_fn, eval_fn)` for the Trainer: `(per_replica_batch, input_context) -> dataset` (the recipe's)."""
    return get_recipe(cfg.task.name).dataset_fns(cfg, tokenizer, train_data, eval_data)


def run_experiment(cfg, strategy=None, verbose=True):
    """Trains `cfg` in `cfg.output_dir` (resuming if it holds checkpoints); returns `(metrics, trainer)`.

    With a `pretrain` section the masked-LM stage runs first (or resumes, or is skipped when finished)
    in `<output_dir>/pretrain`, and the task starts from it. The run dir's config.yaml is the config
    that ran, with every value resolved (the pretrain stage as `task.init_checkpoint`, the measured
    `trainer.peak_flops`).
    """
    check_output_dir(cfg.output_dir)  # an unwritable or full run dir fails now, before any work
    prepare_data(cfg.data)  # `data.prepare`: write missing input files (e.g. the quickstart corpus) first
    strategy = strategy or create_strategy(cfg.trainer.strategy)
    stage = pretrain_config(cfg)
    if stage is not None:
        if verbose:
            print(f"pretrain stage: masked LM in {stage.output_dir}")
        run_experiment(stage, strategy, verbose)
        task = dataclasses.replace(cfg.task, init_checkpoint=stage.output_dir)
        cfg = dataclasses.replace(cfg, pretrain=None, task=task)
    if cfg.trainer.peak_flops is None:
        cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, peak_flops=measure_peak_flops(1024)))
    if cfg.distill is not None:  # the teacher run is where it was when training started, wherever one resumes
        distill = dataclasses.replace(cfg.distill, teacher=os.path.abspath(cfg.distill.teacher))
        cfg = dataclasses.replace(cfg, distill=distill)
    recipe = get_recipe(cfg.task.name)
    chief = is_chief(strategy)
    if chief:
        save_config(cfg, cfg.output_dir)
    tokenizer = prepare_tokenizer(cfg, chief)
    train_data, eval_data, meta = recipe.read_data(cfg)
    if chief and meta:
        write_labels(cfg.output_dir, meta)
    labels, num_choices = meta.get("label_names"), meta.get("num_choices")
    train_fn, eval_fn = recipe.dataset_fns(cfg, tokenizer, train_data, eval_data)
    distillation_fn = None
    if cfg.distill is not None:
        from tfm.compression import distill_run

        train_fn, distillation_fn = distill_run.prepare(cfg, recipe, tokenizer, train_data, meta, train_fn)
    trainer = Trainer(cfg.trainer, cfg.output_dir, lambda: build_task(cfg, tokenizer, labels, num_choices),
                      train_fn, eval_fn, strategy=strategy, sample_fn=recipe.sample_fn(cfg, tokenizer),
                      report_fn=recipe.report_fn(cfg, tokenizer, eval_data, meta), hparams=_flat_hparams(cfg),
                      verbose=verbose, distillation_fn=distillation_fn)
    if chief:
        write_backbone(cfg.output_dir, trainer.model.backbone)
    trainer.flops_per_token = training_flops_per_token(trainer.model.backbone, cfg.data.sequence_length,
                                                       recipe.predicted_fraction(cfg))
    metrics = trainer.train()
    if chief:
        with open(os.path.join(cfg.output_dir, RUN_INFO_FILENAME), "w") as f:
            json.dump({"peak_flops": cfg.trainer.peak_flops, "flops_per_token": trainer.flops_per_token,
                       "restored_from": trainer.restored_from, "mixed_precision": trainer.mixed_precision,
                       "jit_compile": trainer.jit_compile}, f, indent=2)
    return metrics, trainer


def _flat_hparams(cfg):
    flat = {}
    for section in ("task", "model", "data", "trainer"):
        for key, value in to_dict(getattr(cfg, section)).items():
            if isinstance(value, (bool, int, float, str)):
                flat[f"{section}.{key}"] = value
    return flat
