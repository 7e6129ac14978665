"""The Trainer end to end on real text: resume after SIGKILL, TensorBoard events, accumulation, schedule."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import yaml

from tests.helpers import shared_sentences
from tests.training.toy_training import model_fn, toy_dataset
from tfm.training.config import TrainerConfig
from tfm.training.optimizer import WarmupDecay, create_optimizer
from tfm.training.trainer import Trainer

TFM = os.path.join(os.path.dirname(sys.executable), "tfm")


def _corpus(tmp_path, lines=1500):
    """The first SST-2 training sentences as a plain-text corpus."""
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(shared_sentences("sst2", count=lines)) + "\n", encoding="utf-8")
    return path


def _config(tmp_path, corpus, steps=24, **trainer):
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "task": {"name": "masked_lm", "max_predictions": 8},
        "model": {"family": "bert", "preset": "bert_tiny", "num_layers": 1, "hidden_dim": 32, "num_heads": 2,
                  "intermediate_dim": 64},
        "data": {"train": [str(corpus)], "eval": [str(corpus)], "sequence_length": 32, "max_eval_examples": 64,
                 "tokenizer": {"vocabulary_size": 600}},
        "trainer": {"steps": steps, "batch_size": 16, "learning_rate": 3e-3, "log_every": 4, "eval_every": 12,
                    "checkpoint_every": 6, "peak_flops": 1e11, "strategy": "default", **trainer},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _final_weights(run_dir):
    reader = tf.train.load_checkpoint(os.path.join(run_dir, "checkpoints"))
    # Model weights, optimizer slots, step counter: everything but the object graph description.
    names = sorted(n for n in reader.get_variable_to_shape_map() if n != "_CHECKPOINTABLE_OBJECT_GRAPH")
    return {n: reader.get_tensor(n) for n in names}


def _events(directory):
    values = {}
    for path in tf.io.gfile.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                values.setdefault(value.tag, []).append((event.step, tf.make_ndarray(value.tensor)))
    return values


DETERMINISTIC = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_DETERMINISTIC_OPS": "1"}


class FinishedRun:
    def __init__(self, command, run):
        self.command, self.run = command, run


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One uninterrupted `tfm train` run (warmup set from the command line), shared by the tests that read a
    finished run dir and the killed-run test that must reach its exact weights."""
    tmp = tmp_path_factory.mktemp("finished")
    command = [TFM, "train", str(_config(tmp, _corpus(tmp))), "--set", "trainer.warmup_steps=8"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=DETERMINISTIC)
    assert result.returncode == 0, result.stderr[-3000:]
    return FinishedRun(command, tmp / "run")


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(finished_run, tmp_path):
    corpus = _corpus(tmp_path)
    killed_dir = tmp_path / "killed"
    killed_dir.mkdir()
    command = [TFM, "train", str(_config(killed_dir, corpus, warmup_steps=8))]  # finished_run's config
    env = DETERMINISTIC
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = killed_dir / "run" / "checkpoints" / "ckpt-12.index"
    deadline = time.time() + 600
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed mid-run, not finished
    assert not (killed_dir / "run" / "checkpoints" / "ckpt-24.index").exists()

    result = subprocess.run(command, check=True, env=env, capture_output=True, text=True, timeout=600)
    info = yaml.safe_load((killed_dir / "run" / "run_info.json").read_text())
    # The kill may land between writing ckpt-12 and updating the checkpoint state: 6, 12 or 18.
    assert info["restored_from"].endswith(("ckpt-6", "ckpt-12", "ckpt-18"))
    full, resumed = _final_weights(finished_run.run), _final_weights(killed_dir / "run")
    assert full.keys() == resumed.keys() and len(full) > 50
    for name in full:
        np.testing.assert_array_equal(resumed[name], full[name], err_msg=name)
    assert "loss=" in result.stdout and "accuracy=" in result.stdout


@pytest.mark.slow
def test_run_dir_holds_config_tokenizer_and_tensorboard_scalars(finished_run):
    run = finished_run.run
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["warmup_steps"] == 8
    assert (run / "tokenizer" / "vocab.txt").exists()
    train = _events(run / "train")
    for tag in ("loss", "learning_rate", "grad_norm", "tokens_per_second", "mfu"):
        assert [step for step, _ in train[tag]] == [4, 8, 12, 16, 20, 24], tag
    schedule = WarmupDecay(3e-3, 24, 8)
    for step, value in train["learning_rate"]:
        assert value == pytest.approx(float(schedule(step)), rel=1e-5)
    # MFU = tokens/s x FLOPs/token / peak (peak fixed at 1e11 in the config).
    info = yaml.safe_load((run / "run_info.json").read_text())
    assert (info["mixed_precision"], info["jit_compile"]) == ("float32", True)  # what the run resolved and ran
    for (_, mfu), (_, tps) in zip(train["mfu"], train["tokens_per_second"]):
        assert mfu == pytest.approx(tps * info["flops_per_token"] / 1e11, rel=1e-4)
    losses = [v for _, v in train["loss"]]
    assert losses[-1] < losses[0]
    evals = _events(run / "eval")
    assert [s for s, _ in evals["accuracy"]] == [12, 24] and [s for s, _ in evals["loss"]] == [12, 24]
    metrics = yaml.safe_load((run / "metrics.json").read_text())
    assert metrics["step"] == 24 and metrics["accuracy"] == pytest.approx(float(evals["accuracy"][-1][1]), rel=1e-5)
    # Training a finished run again restores it, trains nothing and evaluates it again: the same numbers,
    # no second eval event, and metrics.json keeps its metrics.
    again = subprocess.run(finished_run.command, capture_output=True, text=True, timeout=600, env=DETERMINISTIC)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "eval at step 24: " in again.stdout and f"accuracy={metrics['accuracy']:.4f}" in again.stdout
    assert [s for s, _ in _events(run / "eval")["accuracy"]] == [12, 24]
    assert yaml.safe_load((run / "metrics.json").read_text()) == pytest.approx(metrics, rel=1e-5)


def test_gradient_accumulation_equals_one_large_batch(tmp_path):
    results = []
    for accum in (1, 2):
        cfg = TrainerConfig(steps=3, batch_size=8, learning_rate=1e-2, grad_accum_steps=accum, log_every=1,
                            eval_every=100, checkpoint_every=100, strategy="default")
        trainer = Trainer(cfg, str(tmp_path / f"a{accum}"), lambda: model_fn("mlm"),
                          lambda b, c: toy_dataset("mlm", b, c), verbose=False)
        losses = [float(trainer._train_step(trainer._iterator)[0]) for _ in range(3)]
        results.append((losses, [np.asarray(v) for v in trainer.model.trainable_variables]))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_batch_that_does_not_split_is_an_error(tmp_path):
    cfg = TrainerConfig(steps=3, batch_size=9, grad_accum_steps=2, strategy="default")
    with pytest.raises(ValueError, match="trainer.batch_size=9 must split into trainer.grad_accum_steps=2"):
        Trainer(cfg, str(tmp_path), lambda: model_fn("mlm"), lambda b, c: toy_dataset("mlm", b, c))


def test_schedule_values():
    linear = WarmupDecay(1e-3, total_steps=110, warmup_steps=10)
    assert [round(float(linear(s)), 9) for s in (0, 5, 10, 60, 110, 200)] == [0.0, 5e-4, 1e-3, 5e-4, 0.0, 0.0]
    cosine = WarmupDecay(1e-3, total_steps=100, decay="cosine")
    assert float(cosine(50)) == pytest.approx(5e-4, rel=1e-6)
    poly = WarmupDecay(1e-3, total_steps=100, decay="polynomial", end=1e-4)
    assert float(poly(50)) == pytest.approx(1e-4 + 9e-4 * 0.25, rel=1e-6)
    with pytest.raises(ValueError, match="trainer.decay must be one of"):
        WarmupDecay(1e-3, 10, decay="step")


def test_weight_decay_skips_layer_norm_and_biases():
    model = model_fn("mlm")
    optimizer = create_optimizer(TrainerConfig(steps=10, weight_decay=0.1))
    optimizer.build(model.trainable_variables)
    decayed = {v.path for v in model.trainable_variables if optimizer._use_weight_decay(v)}
    assert "transformer_layer_0/self_attention/qkv/kernel" in decayed
    assert "token_embedding/embeddings" in decayed
    assert not any(p.endswith(("/gamma", "/beta", "/bias", "output_bias")) for p in decayed)
    assert len(decayed) == 13  # 3 embeddings + 4 kernels x 2 layers + pooler and MLM-head kernels
