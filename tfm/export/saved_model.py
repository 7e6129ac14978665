"""Write a task + tokenizer as a SavedModel that takes raw text, in TF Serving's versioned layout."""

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from tfm.export.text_ops import GraphTokenizer

METADATA_FILE = "tfm_export.json"
FORMAT_VERSION = 1


def serving_module(task, tokenizer, asset_dir, sequence_length, label_names=None, recipe=None, **options):
    """The serving module of `task`, from its recipe (default: `tfm.recipes.recipe_for_model(task)`).

    Args:
        task: a `tfm.tasks` model.
        tokenizer: a `tfm.data.Tokenizer`.
        asset_dir: scratch directory for asset files (must live until the SavedModel is written).
        sequence_length: int.
        label_names: list of str (classifier / tagger).
        recipe: optional `tfm.recipes` recipe (a run's own, when several tasks share a model class).
        **options: task options, e.g. `text_pair`, `num_candidates`, `doc_stride`, `max_new_tokens`.
    """
    from tfm.recipes import recipe_for_model

    recipe = recipe or recipe_for_model(task)
    return recipe.serving_module(task, GraphTokenizer(tokenizer, asset_dir), sequence_length,
                                 label_names=label_names, **options)


def next_version(export_dir):
    """1 + the largest numeric version directory in `export_dir` (1 when there is none)."""
    versions = [int(p.name) for p in Path(export_dir).glob("*") if p.is_dir() and re.fullmatch(r"\d+", p.name)]
    return max(versions, default=0) + 1


def latest_version_dir(export_dir):
    """`export_dir` itself if it holds `saved_model.pb`, else its highest numeric version directory."""
    export_dir = Path(export_dir)
    if (export_dir / "saved_model.pb").exists():
        return export_dir
    versions = [p for p in export_dir.glob("*") if re.fullmatch(r"\d+", p.name) and (p / "saved_model.pb").exists()]
    if not versions:
        raise FileNotFoundError(f"{export_dir}: no saved_model.pb and no numeric version directory holding one")
    return max(versions, key=lambda p: int(p.name))


def export_saved_model(task, tokenizer, path, sequence_length=128, label_names=None, version=None, recipe=None,
                       **options):
    """Export `task` with `tokenizer` in the graph as `path/<version>/` (tag `serve`).

    The SavedModel's `serving_default` signature takes raw strings (see the task's serving module for
    inputs, outputs and truncation); BERT-style tasks also get `embed`. The tokenizer's files, the
    id -> token vocabulary and `tfm_export.json` (task, inputs, labels, settings) are in `assets/`, so the
    directory can be moved or copied as a whole. Loading needs only `tensorflow` and `import tensorflow_text`.

    Args:
        task: a `tfm.tasks` model (TextClassifier, TokenClassifier, SpanQA, MaskedLM, CausalLM, MultipleChoice).
        tokenizer: the `tfm.data.Tokenizer` the task was trained with.
        path: export directory; versions are numbered subdirectories (TF Serving's layout).
        sequence_length: int, model window (the training `data.sequence_length`).
        label_names: list of str, class / tag names (required for TokenClassifier).
        version: int; default one more than the largest existing version (1 for a new directory).
        recipe: optional task recipe; default the one of `task`'s class. Its name is the export's `task`
            (which `tfm predict` formats by).
        **options: task options: `text_pair` (TextClassifier), `num_candidates` (MaskedLM), `doc_stride`,
            `max_query_length`, `max_answer_length`, `max_windows`, `allow_no_answer`,
            `no_answer_threshold` (SpanQA), `max_new_tokens`, `num_beams` (CausalLM).

    Returns:
        Path of the written version directory.

    Example:
        >>> export_saved_model(clf, tokenizer, "exported/sst2", label_names=["neg", "pos"])  # doctest: +SKIP
        PosixPath('exported/sst2/1')
    """
    path, version = new_version(path, version)
    with tempfile.TemporaryDirectory() as scratch:
        from tfm.recipes import recipe_for_model

        recipe = recipe or recipe_for_model(task)
        module = serving_module(task, tokenizer, os.path.join(scratch, "assets"), sequence_length,
                                label_names=label_names, recipe=recipe, **options)
        metadata = {**module.metadata(), "task": recipe.name, "format_version": FORMAT_VERSION,
                    "tokenizer": tokenizer.kind}
        return save_module(module, path, version, os.path.join(scratch, "assets"), metadata)


def new_version(path, version=None):
    """`(Path(path), version)` for a new export version: `path` created, `version` the next free number when
    None; an existing version directory is refused (FileExistsError)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    version = next_version(path) if version is None else int(version)
    if (path / str(version)).exists():
        raise FileExistsError(f"{path / str(version)} exists; pass another version")
    return path, version


def save_module(module, path, version, assets_dir, metadata):
    """Writes the serving `module` as `path/<version>/`: `metadata` plus each signature's inputs and outputs go
    to `assets_dir/tfm_export.json` (an asset of the SavedModel). Returns the version directory."""
    from tfm import kernels

    with kernels.portable():  # an int8 model traces TensorFlow's own ops: the export loads without tfm
        signatures = module.signatures()
    metadata = {**metadata, "signatures": {}}
    for name, function in signatures.items():
        specs = function.structured_input_signature[0]  # positional specs, named after the arguments
        metadata["signatures"][name] = {
            "inputs": {spec.name: [spec.dtype.name, spec.shape.as_list()] for spec in specs},
            "outputs": sorted(function.structured_outputs),
        }
    os.makedirs(assets_dir, exist_ok=True)
    metadata_file = os.path.join(assets_dir, METADATA_FILE)
    with open(metadata_file, "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=2, default=str)
    module.metadata_file = tf.saved_model.Asset(metadata_file)
    # Write beside the target and rename: TF Serving must never see a half-written version.
    staging, target = path / f".tmp-{version}", path / str(version)
    shutil.rmtree(staging, ignore_errors=True)
    with kernels.portable():
        tf.saved_model.save(module, str(staging), signatures=signatures)
    os.replace(staging, target)
    return target


def read_metadata(version_dir):
    """The `tfm_export.json` dict of an export version directory (or of its latest version)."""
    version_dir = latest_version_dir(version_dir)
    return json.loads((version_dir / "assets" / METADATA_FILE).read_text(encoding="utf-8"))
