"""From an ExperimentConfig to a trained run dir: tokenizer, datasets, task model, Trainer.

This is what `tfm train CONFIG` runs. Rerunning the same config on the same output_dir resumes.
"""

import dataclasses
import json
import os

import tensorflow as tf

from tfm import data as tfm_data
from tfm.errors import InputError
from tfm.training import task_data
from tfm.training.config import save_config
from tfm.training.flops import measure_peak_flops, training_flops_per_token
from tfm.training.strategy import create_strategy, is_chief
from tfm.training.checkpoints import CHECKPOINT_DIR, check_output_dir, checkpoint_readable
from tfm.training.trainer import Trainer

TOKENIZER_DIR = "tokenizer"


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
    tokenizer = tfm_data.load_tokenizer(directory) if directory else _init_tokenizer(cfg)
    if tokenizer is None:
        texts = task_data.corpus_texts(cfg, cfg.data.train)
        if t.type == "wordpiece":
            tokenizer = tfm_data.WordPieceTokenizer.train(texts.dataset, t.vocab_size, lowercase=t.lowercase)
        elif t.type == "sentencepiece":
            tokenizer = tfm_data.SentencePieceTokenizer.train(texts.dataset, t.vocab_size)
        else:
            raise InputError("data.tokenizer.type=gpt2_bpe needs data.tokenizer.path (vocab.json + merges.txt)")
    if chief and not os.path.isdir(run_tokenizer):
        tokenizer.save(run_tokenizer)
    return tokenizer


def _init_source(cfg):
    """`(kind, path)` of `task.init_checkpoint`: ("run", run dir), ("keras_hub", preset dir) or (None, None)."""
    src = cfg.task.init_checkpoint
    if not src:
        return None, None
    if os.path.isfile(os.path.join(src, "config.yaml")):
        return "run", src
    if os.path.isfile(os.path.join(src, "config.json")):
        return "keras_hub", src
    if os.path.basename(os.path.dirname(os.path.normpath(src))) == "checkpoints":  # run/checkpoints/ckpt-N
        return "run", os.path.dirname(os.path.dirname(os.path.normpath(src)))
    raise FileNotFoundError(f"task.init_checkpoint={src!r} is not a tfm run dir (with config.yaml), a checkpoint "
                            f"in one (RUN/checkpoints/ckpt-N) or a KerasHub preset dir (with config.json)")


def _init_tokenizer(cfg):
    """The tokenizer that comes with `task.init_checkpoint`, or None."""
    kind, path = _init_source(cfg)
    if kind == "run":
        return tfm_data.load_tokenizer(os.path.join(path, TOKENIZER_DIR))
    if kind == "keras_hub":
        vocab = os.path.join(path, "assets", "tokenizer", "vocabulary.txt")
        if not os.path.isfile(vocab):
            raise FileNotFoundError(f"task.init_checkpoint={path!r}: no assets/tokenizer/vocabulary.txt")
        lowercase = True
        config_file = os.path.join(path, "tokenizer.json")
        if os.path.isfile(config_file):
            with open(config_file) as f:
                lowercase = json.load(f).get("config", {}).get("lowercase", True)
        return tfm_data.WordPieceTokenizer(vocab, lowercase=lowercase)
    return None


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


def _initial_backbone(cfg, tokenizer):
    """A fresh backbone, or the trained one of `task.init_checkpoint` (its own architecture)."""
    kind, path = _init_source(cfg)
    if kind is None:
        return build_backbone(cfg, tokenizer.vocabulary_size)
    if kind == "keras_hub":
        from tfm.models import BertBackbone

        backbone = BertBackbone.from_preset(path)
    else:
        run = load_run(path, checkpoint=cfg.task.init_checkpoint if path != cfg.task.init_checkpoint else None)
        backbone = run.task.backbone
    if backbone.vocabulary_size != tokenizer.vocabulary_size:
        raise InputError(f"task.init_checkpoint={cfg.task.init_checkpoint!r} has a vocabulary of "
                         f"{backbone.vocabulary_size} tokens but the tokenizer has {tokenizer.vocabulary_size}; "
                         f"leave data.tokenizer.path unset to use the checkpoint's tokenizer")
    dropout = cfg.model.dropout
    if dropout is not None and dropout != backbone.dropout:  # this stage's dropout, on the pretrained weights
        rebuilt = type(backbone).from_config({**backbone.get_config(), "dropout": dropout})
        rebuilt.set_weights(backbone.get_weights())
        backbone = rebuilt
    return backbone


def build_task(cfg, tokenizer, label_names=None, num_choices=None, initialize=True):
    """The task model of `task.name`: a new head on a fresh or `init_checkpoint` backbone.

    Args:
        cfg: ExperimentConfig. tokenizer: the run's Tokenizer.
        label_names: list of str, the classes / tags (classifiers).
        num_choices: int (multiple choice), when not in the config.
        initialize: bool, load `task.init_checkpoint` (False when a run's own checkpoint follows).
    """
    from tfm import tasks

    t = cfg.task
    backbone = _initial_backbone(cfg, tokenizer) if initialize else build_backbone(cfg, tokenizer.vocabulary_size)
    if t.name == "masked_lm":
        return tasks.MaskedLM(backbone, next_sentence=True) if t.next_sentence else tasks.MaskedLM(backbone)
    if t.name == "causal_lm":
        return tasks.CausalLM(backbone)
    if t.name == "text_classifier":
        return tasks.TextClassifier(backbone, len(label_names) if label_names else t.num_classes)
    if t.name == "token_classifier":
        return tasks.TokenClassifier(backbone, len(label_names) if label_names else t.num_labels,
                                     lstm_units=t.lstm_units)
    if t.name == "span_qa":
        return tasks.SpanQA(backbone)
    return tasks.MultipleChoice(backbone, t.num_choices or num_choices)


def _label_names(cfg, train_data):
    """The class / tag names, in label-id order: `task.label_names`, else those found in the training data."""
    if cfg.task.name not in ("text_classifier", "token_classifier"):
        return None
    if cfg.task.label_names:
        return list(cfg.task.label_names)
    return list(train_data.result.labels.names)


def _num_choices(cfg, train_data):
    if cfg.task.name != "multiple_choice":
        return None
    if cfg.task.num_choices:
        return cfg.task.num_choices
    return int(next(iter(train_data.result.dataset))["choices"].shape[0])


def dataset_fns(cfg, tokenizer, train_data=None, eval_data=None):
    """`(train_fn, eval_fn)` for the Trainer: `(per_replica_batch, input_context) -> dataset`."""
    seq, task, seed = cfg.data.sequence_length, cfg.task, cfg.trainer.seed
    if task.name not in ("masked_lm", "causal_lm"):
        train_fn = lambda batch, ctx: task_data.labelled_dataset(cfg, tokenizer, train_data, batch, True, ctx)  # noqa
        eval_fn = None
        if eval_data is not None:
            limited = eval_data
            if cfg.data.max_eval_examples and eval_data.result is not None:
                limited = task_data.TaskData(result=tfm_data.ReadResult(
                    eval_data.result.dataset.take(cfg.data.max_eval_examples), cfg.data.max_eval_examples, {}))
            eval_fn = lambda batch, ctx: task_data.labelled_dataset(  # noqa: E731
                cfg, tokenizer, limited, batch, False, ctx, static_batch=True)
        return train_fn, eval_fn
    train_texts = task_data.corpus_texts(cfg, cfg.data.train)
    eval_texts = task_data.corpus_texts(cfg, cfg.data.eval) if cfg.data.eval else None

    def make(texts, batch, ctx, training):
        texts = texts.dataset
        if not training and cfg.data.max_eval_examples:
            texts = texts.take(cfg.data.max_eval_examples)  # before sharding: the limit is global
        texts = task_data.shard(texts, ctx)
        if training:
            return batches(texts.repeat(), batch, training)  # every epoch draws new masks: dynamic masking
        # Evaluation: a static batch dimension (TPU), the short last batch padded with zero weights.
        return task_data.static_batches(batches(texts, batch, training), batch, task_data.replicas_per_pipeline(ctx))

    def batches(texts, batch, training):
        if task.name == "masked_lm":
            return tfm_data.mlm_dataset(texts, tokenizer, seq, batch, max_predictions=task.max_predictions,
                                        mask_rate=task.mask_rate, whole_word=task.whole_word_masking,
                                        next_sentence=task.next_sentence, shuffle=training, seed=seed,
                                        drop_remainder=training)
        return tfm_data.clm_dataset(texts, tokenizer, seq, batch, shuffle=training, seed=seed, drop_remainder=training)

    train_fn = lambda batch, ctx: make(train_texts, batch, ctx, True)  # noqa: E731
    eval_fn = (lambda batch, ctx: make(eval_texts, batch, ctx, False)) if eval_texts else None  # noqa: E731
    return train_fn, eval_fn

def _sample_fn(cfg, tokenizer):
    """Greedy continuations of a few eval-text prompts, for the TensorBoard text plugin (causal LM)."""
    if cfg.task.name != "causal_lm" or not cfg.trainer.num_samples or not cfg.data.eval:
        return None
    prompts = [t.numpy() for t in task_data.corpus_texts(cfg, cfg.data.eval).dataset.take(cfg.trainer.num_samples)]

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


LABELS_FILENAME = "labels.json"


def run_experiment(cfg, strategy=None, verbose=True):
    """Trains `cfg` in `cfg.output_dir` (resuming if it holds checkpoints); returns `(metrics, trainer)`.

    With a `pretrain` section the masked-LM stage runs first (or resumes, or is skipped when finished)
    in `<output_dir>/pretrain`, and the task starts from it.
    """
    from tfm.quickstart import prepare_data
    from tfm.training.config import pretrain_config

    check_output_dir(cfg.output_dir)  # an unwritable or full run dir fails now, before any work
    prepare_data(cfg.data)  # `data.prepare`: write missing input files (e.g. the quickstart corpus) first
    strategy = strategy or create_strategy(cfg.trainer.strategy)
    stage = pretrain_config(cfg)
    if stage is not None:
        if verbose:
            print(f"pretrain stage: masked LM in {stage.output_dir}")
        run_experiment(stage, strategy, verbose)
        cfg = dataclasses.replace(cfg, pretrain=None, task=dataclasses.replace(cfg.task, init_checkpoint=stage.output_dir))
    chief = is_chief(strategy)
    if chief:
        save_config(cfg, cfg.output_dir)
    tokenizer = prepare_tokenizer(cfg, chief)
    train_data = eval_data = labels = num_choices = None
    if cfg.task.name not in ("masked_lm", "causal_lm"):
        train_data = task_data.read_split(cfg, cfg.data.train, "train", labels=_vocabulary(cfg.task.label_names))
        labels = _label_names(cfg, train_data)
        num_choices = _num_choices(cfg, train_data)
        if cfg.data.eval:
            eval_data = task_data.read_split(cfg, cfg.data.eval, "eval", labels=_vocabulary(labels))
        if chief:
            with open(os.path.join(cfg.output_dir, LABELS_FILENAME), "w", encoding="utf-8") as f:
                json.dump({"label_names": labels, "num_choices": num_choices}, f, ensure_ascii=False)
    train_fn, eval_fn = dataset_fns(cfg, tokenizer, train_data, eval_data)
    peak = cfg.trainer.peak_flops
    if peak is None:
        peak = measure_peak_flops(1024)
        cfg.trainer.peak_flops = peak
    report_fn = None
    if eval_data is not None:
        from tfm.training.evaluation import task_report

        report_data = eval_data
        if cfg.data.max_eval_examples and eval_data.examples is not None:
            report_data = task_data.TaskData(examples=eval_data.examples[: cfg.data.max_eval_examples])
        report_fn = lambda model: task_report(model, cfg, tokenizer, report_data, labels)[0]  # noqa: E731
    trainer = Trainer(cfg.trainer, cfg.output_dir, lambda: build_task(cfg, tokenizer, labels, num_choices),
                      train_fn, eval_fn, strategy=strategy, sample_fn=_sample_fn(cfg, tokenizer),
                      report_fn=report_fn, hparams=_flat_hparams(cfg), verbose=verbose)
    predicted = cfg.task.max_predictions / cfg.data.sequence_length if cfg.task.name == "masked_lm" else 1.0
    trainer.flops_per_token = training_flops_per_token(trainer.model.backbone, cfg.data.sequence_length, predicted)
    metrics = trainer.train()
    if chief:
        with open(os.path.join(cfg.output_dir, "run_info.json"), "w") as f:
            json.dump({"peak_flops": peak, "flops_per_token": trainer.flops_per_token,
                       "restored_from": trainer.restored_from}, f, indent=2)
    return metrics, trainer


def _vocabulary(names):
    return tfm_data.LabelVocabulary(names) if names else None


@dataclasses.dataclass
class Run:
    """A trained run dir, loaded: `task` (restored), `tokenizer`, `config`, `label_names`, `checkpoint`."""

    task: object
    tokenizer: object
    config: object
    label_names: list
    checkpoint: str


def load_run(run_dir, checkpoint=None):
    """Rebuilds a run dir's task model and restores its latest checkpoint (or `checkpoint`).

    Args:
        run_dir: str, a `tfm train` output dir (config.yaml, tokenizer/, checkpoints/).
        checkpoint: optional checkpoint path inside it.

    Returns:
        Run.

    Raises:
        InputError: one line naming the run dir or checkpoint, when it is missing, unreadable or does not fit
            the run's config.yaml.
    """
    from tfm.training.config import CONFIG_FILENAME, load_config

    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        raise InputError(f"{run_dir}: no such run dir")
    if not os.path.isfile(os.path.join(run_dir, CONFIG_FILENAME)):
        raise InputError(f"{run_dir}: not a tfm run dir (no {CONFIG_FILENAME})")
    cfg = load_config(run_dir)
    if not os.path.isdir(os.path.join(run_dir, TOKENIZER_DIR)):
        raise InputError(f"{run_dir}: no {TOKENIZER_DIR}/ (was the run started with `tfm train`?)")
    tokenizer = tfm_data.load_tokenizer(os.path.join(run_dir, TOKENIZER_DIR))
    meta = {}
    if os.path.isfile(os.path.join(run_dir, LABELS_FILENAME)):
        with open(os.path.join(run_dir, LABELS_FILENAME), encoding="utf-8") as f:
            meta = json.load(f)
    checkpoint = checkpoint or tf.train.latest_checkpoint(os.path.join(run_dir, CHECKPOINT_DIR))
    if checkpoint is None:
        raise InputError(f"{run_dir}: no checkpoint in {os.path.join(run_dir, CHECKPOINT_DIR)} "
                         f"(has training saved one yet?)")
    task = build_task(cfg, tokenizer, meta.get("label_names"), meta.get("num_choices"), initialize=False)
    try:
        tf.train.Checkpoint(model=task).restore(checkpoint).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, IndexError, tf.errors.OpError) as error:
        if not checkpoint_readable(checkpoint):
            raise InputError(f"{run_dir}: checkpoint {checkpoint} is missing or unreadable "
                             f"(truncated or corrupted)") from None
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise InputError(f"{run_dir}: checkpoint {checkpoint} does not fit the model of its {CONFIG_FILENAME} "
                         f"(was it edited after training?): {reason}") from None
    return Run(task, tokenizer, cfg, meta.get("label_names"), checkpoint)


def lm_eval_metrics(run, sources):
    """Token-weighted loss / accuracy (/ perplexity) of a pretraining run on text `sources`."""
    cfg = dataclasses.replace(run.config, data=dataclasses.replace(run.config.data, eval=list(sources)))
    _, eval_fn = dataset_fns(cfg, run.tokenizer)
    totals = {}
    for batch in eval_fn(cfg.trainer.batch_size, None):
        x, y, w = (tuple(batch) + (None,))[:3]
        for key, value in run.task.metric_sums(y, run.task(x, training=False), w).items():
            totals[key] = totals.get(key, 0.0) + float(value)
    return run.task.metrics_from_sums(totals)

def _flat_hparams(cfg):
    from tfm.training.config import to_dict

    flat = {}
    for section in ("task", "model", "data", "trainer"):
        for key, value in to_dict(getattr(cfg, section)).items():
            if isinstance(value, (bool, int, float, str)):
                flat[f"{section}.{key}"] = value
    return flat
