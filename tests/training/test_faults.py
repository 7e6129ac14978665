"""The Trainer under faults: NaN/Inf steps, corrupted checkpoints, unwritable run dirs, resume messages,
and `tfm evaluate` / `tfm export` on broken run dirs (one error line, exit status 2)."""

import dataclasses
import errno
import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import tensorflow as tf
import yaml

import tfm
from tests.training.test_trainer import _events
from tests.training.toy_training import model_fn, toy_dataset
from tfm.cli import main
from tfm.errors import InputError
from tfm.training.config import ExperimentConfig, TrainerConfig, save_config
from tfm.training.experiment import build_task
from tfm.training.trainer import NonFiniteLossError, Trainer

# What a verbose Trainer prints first under the default `trainer.mixed_precision: auto` (the suite sets
# TFM_BF16_UNITS=0 in conftest, so every CPU resolves alike).
PRECISION_LINE = "trainer.mixed_precision=auto: float32 (no CPU bf16 matrix units); XLA on\n"

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(**overrides):
    settings = dict(steps=6, batch_size=8, learning_rate=1e-2, log_every=1, eval_every=1000, checkpoint_every=2,
                    strategy="default")
    return TrainerConfig(**{**settings, **overrides})


def _poisoned(bad_batches, value=np.nan):
    """The toy MLM data with the loss weights of the given (0-based) batches set to `value`."""

    def dataset_fn(batch_size, ctx):
        bad = tf.constant(sorted(bad_batches) or [-1], tf.int64)

        def poison(i, batch):
            x, y, w = batch
            return x, y, tf.where(tf.reduce_any(tf.equal(i, bad)), w * value, w)

        return toy_dataset("mlm", batch_size, ctx).enumerate().map(poison)

    return dataset_fn


def _trainer(output_dir, cfg=None, bad_batches=(), value=np.nan, model=lambda: model_fn("mlm"), verbose=False):
    return Trainer(cfg or _config(), str(output_dir), model, _poisoned(bad_batches, value), verbose=verbose)


def _values(variables):
    return [np.array(v) for v in variables]


def _record_saves(trainer):
    """Wraps `save_checkpoint` to keep the model weights of each save, by checkpoint path."""
    saved, save = {}, trainer.save_checkpoint

    def recording_save():
        path = save()
        saved[path] = _values(trainer.model.weights)
        return path

    trainer.save_checkpoint = recording_save
    return saved


def _restored_weights(path):
    model = model_fn("mlm")
    tf.train.Checkpoint(model=model).restore(path).expect_partial()
    return _values(model.weights)


def _index_files(run_dir):
    return sorted(f for f in os.listdir(os.path.join(run_dir, "checkpoints")) if f.endswith(".index"))


def _assert_equal_lists(actual, expected):
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        np.testing.assert_array_equal(a, b)


def _watch_changes(trainer, variables=None):
    """Wraps `train_step`: the returned list gets, per step, whether it changed any of `variables` (default:
    the weights and the optimizer's variables: slots, iteration count)."""
    changed, step = [], trainer.train_step
    state = lambda: _values(variables or trainer.model.trainable_variables + trainer.optimizer.variables)  # noqa

    def watched_step():
        before = state()
        result = step()
        changed.append(any(not np.array_equal(a, b) for a, b in zip(before, state())))
        return result

    trainer.train_step = watched_step
    return changed


# --------------------------------------------------------------------------------------- NaN / Inf steps
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    # (Eager-graph steps here: the compiled path is the next test's.)
    trainer = _trainer(tmp_path / "run", _config(steps=8, jit_compile=False), bad_batches=[4])  # batch 4: step 5
    saved = _record_saves(trainer)
    with pytest.raises(NonFiniteLossError) as raised:
        trainer.train()
    last = str(tmp_path / "run" / "checkpoints" / "ckpt-4")
    assert str(raised.value).startswith(f"non-finite training step 5 (loss nan, gradient norm nan); the last good "
                                        f"checkpoint is {last}; ")
    assert isinstance(raised.value, FloatingPointError) and not isinstance(raised.value, InputError)
    assert _index_files(tmp_path / "run") == ["ckpt-2.index", "ckpt-4.index"]  # nothing at or after step 5
    assert trainer.manager.latest_checkpoint == last
    assert any(np.isnan(w).any() for w in _values(trainer.model.weights))  # the bad update reached memory only
    _assert_equal_lists(_restored_weights(last), saved[last])
    assert not np.array_equal(saved[last][0], saved[str(tmp_path / "run" / "checkpoints" / "ckpt-2")][0])
    # TensorBoard holds the steps before the failure (flushed on the way out).
    assert [s for s, _ in _events(tmp_path / "run" / "train")["loss"]] == [1, 2, 3, 4]


def test_run_failing_in_its_final_evaluation_keeps_its_steps_and_evaluates_on_resume(tmp_path):
    # The last step's checkpoint is written before the last evaluation: an evaluation that dies (here its input
    # pipeline raises) loses no training, and the next `train()` restores the finished run and evaluates it.
    def broken_eval(batch_size, ctx):
        raise OSError("eval data unreadable")

    cfg = _config(steps=4, checkpoint_every=100, eval_every=100)
    trainer = Trainer(cfg, str(tmp_path / "run"), lambda: model_fn("mlm"), _poisoned(()), eval_dataset_fn=broken_eval,
                      verbose=False)
    with pytest.raises(OSError, match="eval data unreadable"):
        trainer.train()
    assert _index_files(tmp_path / "run") == ["ckpt-4.index"]
    trained = _values(trainer.model.weights)
    resumed = Trainer(cfg, str(tmp_path / "run"), lambda: model_fn("mlm"), _poisoned(()),
                      eval_dataset_fn=lambda b, c: toy_dataset("mlm", b, c).take(2), verbose=False)
    assert int(resumed.step.numpy()) == 4
    metrics = resumed.train()
    _assert_equal_lists(_values(resumed.model.weights), trained)  # restored, not trained again
    assert 0.0 < metrics["loss"] < 10.0 and int(resumed.step.numpy()) == 4
    assert json.load(open(tmp_path / "run" / "metrics.json"))["step"] == 4


def test_skip_nonfinite_steps_changes_nothing_counts_and_stops_after_max_in_a_row(tmp_path):
    # Batches 1, 2 (steps 2, 3) and 6, 7, 8 (steps 7-9) are Inf; 3 in a row stop the run.
    cfg = _config(steps=12, checkpoint_every=3, skip_nonfinite_steps=True, max_skipped_steps=3)
    trainer = _trainer(tmp_path / "run", cfg, bad_batches=[1, 2, 6, 7, 8], value=np.inf)
    changed = _watch_changes(trainer)
    expected = (r"^3 non-finite training steps in a row, the last at step 9 \(loss (inf|nan), gradient norm "
                r"(inf|nan); trainer.max_skipped_steps=3\); the last good checkpoint is .*ckpt-6$")
    with pytest.raises(NonFiniteLossError, match=expected):
        trainer.train()
    assert changed == [True, False, False, True, True, True, False, False, False]
    assert int(trainer.optimizer.iterations.numpy()) == 4 and int(trainer.skipped_steps.numpy()) == 5
    events = _events(tmp_path / "run" / "train")
    assert [(s, int(v)) for s, v in events["skipped_steps"]] == [(1, 0), (2, 1), (3, 2), (4, 2), (5, 2), (6, 2),
                                                                  (7, 3), (8, 4)]
    assert [s for s, _ in events["loss"]] == [1, 4, 5, 6]  # a window of skipped steps logs no loss
    assert all(np.isfinite(v) for _, v in events["loss"])


def test_mixed_float16_keeps_its_own_overflow_skipping(tmp_path):
    # The LossScaleOptimizer skips float16 overflows (routine while it finds its scale) and NaN steps by
    # itself; only the NaN-loss step counts as skipped.
    cfg = _config(steps=4, checkpoint_every=100, mixed_precision="mixed_float16", skip_nonfinite_steps=True,
                  jit_compile=False)
    trainer = _trainer(tmp_path / "run", cfg, bad_batches=[2])
    changed = _watch_changes(trainer, trainer.model.trainable_variables)
    trainer.train()
    assert changed[2] is False and changed[3] is True
    assert int(trainer.skipped_steps.numpy()) == 1
    assert [(s, int(v)) for s, v in _events(tmp_path / "run" / "train")["skipped_steps"]] == [(1, 0), (2, 0), (3, 1),
                                                                                             (4, 1)]


MIRRORED_SKIP = """
import json, sys
import numpy as np
from tfm.training.strategy import split_logical_cpus
split_logical_cpus(2)
import tensorflow as tf
from tests.training.test_faults import _config, _poisoned
from tests.training.toy_training import model_fn
from tfm.training.trainer import Trainer
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
cfg = _config(steps=3, checkpoint_every=100, skip_nonfinite_steps=True)
trainer = Trainer(cfg, sys.argv[1], lambda: model_fn("mlm"), _poisoned([2]), strategy=strategy, verbose=False)
state = lambda: [np.stack(strategy.experimental_local_results(v.value)) for v in trainer.model.trainable_variables]
changed, same = [], []
for _ in range(3):
    before = state()
    trainer.train_step()
    after = state()
    changed.append(any(not np.array_equal(a, b) for a, b in zip(before, after)))
    same.append(all(np.array_equal(a[0], a[1]) for a in after))
print(json.dumps({"changed": changed, "replicas_equal": same, "iterations": int(trainer.optimizer.iterations.numpy())}))
"""


@pytest.mark.slow
def test_skip_nonfinite_steps_under_mirrored_strategy(tmp_path):
    # Two replicas: the optimizer merge_calls, so the skip runs as a cond in cross-replica context.
    # Batch 2 is replica 0's half of step 2: the all-reduced loss is NaN and both replicas skip.
    result = subprocess.run([sys.executable, "-c", MIRRORED_SKIP, str(tmp_path / "run")], cwd=REPO,
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "changed": [True, False, True], "replicas_equal": [True, True, True], "iterations": 2}


def test_cli_prints_a_nonfinite_loss_as_one_line(tmp_path, monkeypatch, capsys):
    def diverge(cfg):
        raise NonFiniteLossError("non-finite training step 5 (loss nan, gradient norm nan); the last good "
                                 "checkpoint is run/checkpoints/ckpt-4; lower trainer.learning_rate")

    monkeypatch.setattr("tfm.training.experiment.run_experiment", diverge)
    save_config(ExperimentConfig(output_dir=str(tmp_path / "run")), str(tmp_path / "config.yaml"))
    assert main(["train", str(tmp_path / "config.yaml")]) == 2
    assert capsys.readouterr().err == ("tfm train: error: non-finite training step 5 (loss nan, gradient norm nan); "
                                       "the last good checkpoint is run/checkpoints/ckpt-4; lower "
                                       "trainer.learning_rate\n")


# --------------------------------------------------------------------------------- corrupted checkpoints
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished 6-step toy run with ckpt-2, ckpt-4, ckpt-6, and the weights of each save."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    trainer = _trainer(run_dir, _config(jit_compile=False))
    saved = _record_saves(trainer)
    trainer.train()
    return run_dir, {os.path.basename(path): weights for path, weights in saved.items()}


def _copy(run, tmp_path):
    run_dir, _ = run
    shutil.copytree(run_dir, tmp_path / "run")
    return tmp_path / "run", tmp_path / "run" / "checkpoints"


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _overwrite(path):
    path.write_bytes(b"\x07" * path.stat().st_size)


CORRUPTIONS = {
    "truncated data": lambda ckpt: _truncate(ckpt.with_name(ckpt.name + ".data-00000-of-00001")),
    "overwritten data": lambda ckpt: _overwrite(ckpt.with_name(ckpt.name + ".data-00000-of-00001")),
    "deleted index": lambda ckpt: ckpt.with_name(ckpt.name + ".index").unlink(),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_unreadable_latest_checkpoint_falls_back_to_the_previous_one(trained_run, tmp_path, corruption, capsys):
    run_dir, checkpoints = _copy(trained_run, tmp_path)
    CORRUPTIONS[corruption](checkpoints / "ckpt-6")
    files = sorted(os.listdir(checkpoints))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = _trainer(run_dir, verbose=True)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 2
    assert messages[0].startswith(f"checkpoint {checkpoints / 'ckpt-6'} is unreadable (")
    assert messages[0].endswith("); trying an older one")
    assert messages[1] == f"resuming from {checkpoints / 'ckpt-4'} instead of the unreadable {checkpoints / 'ckpt-6'}"
    assert trainer.restored_from == str(checkpoints / "ckpt-4") and int(trainer.step.numpy()) == 4
    _assert_equal_lists(_values(trainer.model.weights), trained_run[1]["ckpt-4"])
    assert sorted(os.listdir(checkpoints)) == files  # nothing deleted
    # The resume message: checkpoint, step, and the data position skipped (4 steps x 1 batch, one pipeline).
    assert capsys.readouterr().out == (f"{PRECISION_LINE}Resumed from {checkpoints / 'ckpt-4'} at step 4: skipping 4 "
                                       f"batches of 8 examples in each of 1 input pipeline(s)\n")


def test_no_readable_checkpoint_starts_from_scratch(trained_run, tmp_path):
    run_dir, checkpoints = _copy(trained_run, tmp_path)
    for name in ("ckpt-2", "ckpt-4", "ckpt-6"):
        CORRUPTIONS["truncated data"](checkpoints / name)
    files = sorted(os.listdir(checkpoints))
    with pytest.warns(RuntimeWarning) as caught:
        trainer = _trainer(run_dir)
    unreadable = ", ".join(str(checkpoints / n) for n in ("ckpt-6", "ckpt-4", "ckpt-2"))
    assert str(caught[-1].message) == (f"no readable checkpoint in {checkpoints} (unreadable: {unreadable}); "
                                       f"starting from scratch")
    assert trainer.restored_from is None and int(trainer.step.numpy()) == 0
    fresh = _trainer(tmp_path / "fresh")
    _assert_equal_lists(_values(trainer.model.weights), _values(fresh.model.weights))
    assert sorted(os.listdir(checkpoints)) == files


def test_checkpoint_of_another_model_is_an_input_error(trained_run, tmp_path):
    run_dir, checkpoints = _copy(trained_run, tmp_path)

    def wider_model():
        backbone = tfm.models.BertBackbone(vocabulary_size=64, num_layers=2, num_heads=2, hidden_dim=24,
                                           intermediate_dim=32, max_sequence_length=16, dropout=0.0)
        return tfm.tasks.MaskedLM(backbone)

    with pytest.raises(InputError, match=rf"^checkpoint {checkpoints / 'ckpt-6'} does not fit the model built from "
                                         r"the config \(ValueError: Received incompatible tensor"):
        _trainer(run_dir, model=wider_model)


def test_finished_run_says_so_and_is_evaluated_again(trained_run, tmp_path, capsys):
    run_dir, checkpoints = _copy(trained_run, tmp_path)
    metrics = _trainer(run_dir, verbose=True).train()
    assert metrics == {}  # no eval data in the toy run
    assert capsys.readouterr().out == (
        f"{PRECISION_LINE}Resumed from {checkpoints / 'ckpt-6'} at step 6: skipping 6 batches of 8 examples in each of 1 input "
        f"pipeline(s)\nRun already finished at step 6 (trainer.steps=6): evaluating it again\n")
    written = yaml.safe_load((run_dir / "metrics.json").read_text())
    count = written["total_params"]
    assert written == {"step": 6, "trainable_params": count, "total_params": count} and count > 0


# ------------------------------------------------------------------------------------------- run dirs
def test_output_dir_under_a_file_fails_before_the_model_is_built(tmp_path):
    (tmp_path / "file.txt").write_text("not a directory")
    built = []
    with pytest.raises(InputError, match=rf"^output_dir: cannot write to '{tmp_path}/file.txt/run': Not a directory$"):
        _trainer(tmp_path / "file.txt" / "run", model=lambda: built.append(1))
    assert built == []


def test_full_disk_fails_before_training_and_leaves_no_probe(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)  # a full disk may refuse the data only when it must be written
    with pytest.raises(InputError, match=rf"^output_dir: cannot write to '{tmp_path}/run': No space left on device "
                                         r"\(the disk is full\)$"):
        _trainer(tmp_path / "run")
    assert os.listdir(tmp_path / "run") == []


def test_cli_train_into_an_unwritable_dir_is_one_line(tmp_path, capsys):
    (tmp_path / "file.txt").write_text("")
    save_config(ExperimentConfig(output_dir=str(tmp_path / "file.txt" / "run")), str(tmp_path / "config.yaml"))
    assert main(["train", str(tmp_path / "config.yaml")]) == 2
    assert capsys.readouterr().err == (f"tfm train: error: output_dir: cannot write to "
                                       f"'{tmp_path}/file.txt/run': Not a directory\n")


# ---------------------------------------------------------------------------- evaluate / export a run dir
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(59)]


def _run_dir(tmp_path, with_checkpoint=True):
    """A run dir as `tfm train` leaves it (config, tokenizer, checkpoint), without the training."""
    cfg = ExperimentConfig(output_dir=str(tmp_path / "run"))
    cfg.model = dataclasses.replace(cfg.model, preset="bert_tiny", num_layers=1, hidden_dim=16, num_heads=2,
                                    intermediate_dim=32, max_sequence_length=16)
    cfg.data = dataclasses.replace(cfg.data, sequence_length=16, eval=[str(tmp_path / "eval.txt")])
    (tmp_path / "run" / "tokenizer").mkdir(parents=True)
    (tmp_path / "run" / "tokenizer" / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    save_config(cfg, str(tmp_path / "run"))
    if with_checkpoint:
        task = build_task(cfg, tfm.data.load_tokenizer(tmp_path / "run" / "tokenizer"), initialize=False)
        tf.train.CheckpointManager(tf.train.Checkpoint(model=task), str(tmp_path / "run" / "checkpoints"), 1).save(3)
    return tmp_path / "run"


def _one_error_line(capsys, command):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"tfm {command}: error: ")
    return err[len(f"tfm {command}: error: "):].rstrip("\n")


@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_missing_run_dir_or_checkpoint_is_one_line(tmp_path, capsys, command):
    args = [command] + ([] if command == "evaluate" else [str(tmp_path / "exported")])
    assert main([args[0], str(tmp_path / "nowhere"), *args[1:]]) == 2
    assert _one_error_line(capsys, command) == f"{tmp_path / 'nowhere'}: no such run dir"
    run = _run_dir(tmp_path, with_checkpoint=False)
    assert main([args[0], str(run), *args[1:]]) == 2
    assert _one_error_line(capsys, command) == (f"{run}: no checkpoint in {run / 'checkpoints'} "
                                                f"(has training saved one yet?)")


@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_checkpoint_that_does_not_fit_the_edited_config_is_one_line(tmp_path, capsys, command):
    run = _run_dir(tmp_path)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["hidden_dim"] = 32
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    args = [command, str(run)] + ([] if command == "evaluate" else [str(tmp_path / "exported")])
    assert main(args) == 2
    message = _one_error_line(capsys, command)
    assert message.startswith(f"{run}: checkpoint {run / 'checkpoints' / 'ckpt-3'} does not fit the model of its "
                              f"config.yaml (was it edited after training?): Received incompatible tensor with shape")
    assert not (tmp_path / "exported").exists()


def test_unreadable_checkpoint_is_one_line(tmp_path, capsys):
    run = _run_dir(tmp_path)
    _truncate(run / "checkpoints" / "ckpt-3.data-00000-of-00001")
    assert main(["evaluate", str(run)]) == 2
    assert _one_error_line(capsys, "evaluate") == (f"{run}: checkpoint {run / 'checkpoints' / 'ckpt-3'} is missing "
                                                   f"or unreadable (truncated or corrupted)")
