"""Strategy choice (`auto` by environment, TPU without hardware) and MirroredStrategy paths on 2 logical CPUs:
gradient accumulation over replicas, and `tfm train --set trainer.strategy=mirrored` evaluation.

Run as a script (subprocesses of the tests: logical CPUs must be split before TensorFlow starts):
`python -m tests.training.test_strategy accumulate OUT.npz WORKDIR` or `... train CONFIG.yaml`.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import yaml

from tfm.errors import InputError
from tfm.recipes import get_recipe
from tfm.training.strategy import create_strategy, resolve_strategy_name

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TWO_WORKERS = json.dumps({"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 0}})
ONE_WORKER = json.dumps({"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 0}})


@pytest.mark.parametrize("env, gpus, expected", [
    ({}, (0, 4), "tpu"),  # a TPU VM (Colab's TPU runtime) sets no TPU_NAME
    ({"TF_CONFIG": TWO_WORKERS}, (0, 4), "tpu"),
    ({"TPU_NAME": "my-tpu"}, 0, "tpu"),
    ({"TPU_NAME": "my-tpu", "TF_CONFIG": TWO_WORKERS}, 8, "tpu"),  # a TPU wins over everything
    ({"TF_CONFIG": TWO_WORKERS}, 2, "multi_worker"),
    ({"TF_CONFIG": json.dumps({"cluster": {"chief": ["h:1"], "worker": ["h:2"]}})}, 0, "multi_worker"),
    ({"TF_CONFIG": ONE_WORKER}, 2, "mirrored"),  # a one-worker cluster is a single host
    ({"TPU_NAME": ""}, 2, "mirrored"),
    ({}, 1, "default"),
    ({"TF_CONFIG": ""}, 0, "default"),
])
def test_auto_strategy_is_chosen_by_environment(env, gpus, expected):
    gpus, tpus = gpus if isinstance(gpus, tuple) else (gpus, 0)
    assert resolve_strategy_name("auto", env, num_gpus=gpus, num_tpus=tpus) == expected
    assert resolve_strategy_name("mirrored", env, num_gpus=gpus, num_tpus=tpus) == "mirrored"  # explicit names stay


def test_bad_strategy_names_and_tf_config_are_input_errors():
    with pytest.raises(InputError, match=r"trainer.strategy must be one of \['auto', 'default', 'mirrored', "
                                         r"'multi_worker', 'tpu'\], got 'gpu'"):
        resolve_strategy_name("gpu", {}, 0)
    with pytest.raises(InputError, match="TF_CONFIG is not valid JSON"):
        resolve_strategy_name("auto", {"TF_CONFIG": "{worker"}, 0)


def test_create_strategy_auto_uses_the_real_environment(monkeypatch):
    for name in ("TPU_NAME", "TF_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    assert create_strategy("auto") is tf.distribute.get_strategy()  # this CPU machine: the default strategy
    # Two (faked) GPUs: auto builds a MirroredStrategy over them.
    gpus = [tf.config.LogicalDevice(f"/device:GPU:{i}", "GPU") for i in range(2)]
    real_list = tf.config.list_logical_devices
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: gpus if kind == "GPU" else real_list(kind))
    monkeypatch.setattr(tf.distribute, "MirroredStrategy", lambda devices: ("mirrored", devices))
    assert create_strategy("auto") == ("mirrored", ["/device:GPU:0", "/device:GPU:1"])
    monkeypatch.setenv("TF_CONFIG", TWO_WORKERS)
    monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy", lambda: "multi_worker")
    assert create_strategy("auto") == "multi_worker"


def test_tpu_strategy_without_a_tpu_says_what_to_set(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("TPU_NAME", raising=False)
    with pytest.raises(InputError, match="trainer.strategy=tpu but no TPU found: set TPU_NAME"):
        create_strategy("tpu")

    def unreachable(tpu):
        raise ValueError(f"could not resolve {tpu}\nmore detail")

    monkeypatch.setenv("TPU_NAME", "my-tpu")
    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", unreachable)
    with pytest.raises(InputError) as error:
        create_strategy("auto")
    assert str(error.value) == "trainer.strategy=tpu: cannot connect to TPU_NAME='my-tpu': could not resolve my-tpu"
    # From the CLI: one line and exit status 2.
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "run"), "data": {"train": ["x.txt"]}}))
    monkeypatch.delenv("TPU_NAME")
    from tfm.cli import main

    assert main(["train", str(config), "--set", "trainer.strategy=tpu"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "tfm train: error: trainer.strategy=tpu but no TPU found: set TPU_NAME to the TPU's name or grpc:// "
        "address (`local` on a TPU VM), or use trainer.strategy=auto"]


# ------------------------------------------------------------------------------- 2 logical CPUs (subprocess)
def _subprocess(*args, timeout=400):
    proc = subprocess.run([sys.executable, "-m", "tests.training.test_strategy", *map(str, args)], cwd=REPO,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout


@pytest.mark.slow
def test_grad_accumulation_over_two_replicas_equals_one_device_full_batch(tmp_path):
    _subprocess("accumulate", tmp_path / "out.npz", tmp_path)
    out = np.load(tmp_path / "out.npz")
    assert int(out["replicas"]) == 2
    # 2 replicas x 2 micro-batches of 2 examples = the same 8 examples as one device's batch of 8.
    np.testing.assert_allclose(out["accumulated_losses"], out["single_losses"], rtol=1e-5)
    np.testing.assert_allclose(out["accumulated_weights"], out["single_weights"], rtol=1e-5, atol=1e-6)
    assert not np.allclose(out["single_weights"], out["initial_weights"], atol=1e-4)  # the steps moved the weights


def _accumulate(out_path, workdir):
    from tests.training.toy_training import model_fn, train
    from tfm.training.strategy import split_logical_cpus

    split_logical_cpus(2)
    import keras

    keras.utils.set_random_seed(0)
    initial = np.concatenate([v.numpy().ravel() for v in model_fn("mlm").trainable_variables])
    mirrored = create_strategy("mirrored")
    accumulated, replicas, _ = train("mlm", mirrored, f"{workdir}/accumulated", grad_accum_steps=2)
    single, single_replicas, _ = train("mlm", create_strategy("default"), f"{workdir}/single")
    flat = lambda rs, r: np.concatenate([v[r].ravel() for v in rs])  # noqa: E731
    np.testing.assert_array_equal(flat(replicas, 0), flat(replicas, 1))  # replicas in sync
    np.savez(out_path, replicas=mirrored.num_replicas_in_sync, accumulated_losses=accumulated, single_losses=single,
             accumulated_weights=flat(replicas, 0), single_weights=flat(single_replicas, 0), initial_weights=initial)


LINES = ["a wonderful warm film", "a dull and tired film", "wonderful acting and a warm story", "tired jokes",
         "warm and funny", "dull dull dull", "a funny wonderful cast", "a tired dull plot", "funny and warm",
         "the story is dull", "wonderful", "tired", "a warm funny film", "dull acting", "the cast is wonderful",
         "a dull story", "warm acting", "tired and dull jokes", "a wonderful story", "the film is tired"]


@pytest.mark.slow
def test_tfm_train_mirrored_evaluation_equals_single_device_evaluation(tmp_path):
    def tsv(name, lines):
        (tmp_path / name).write_text("label\tsentence\n" + "".join(
            f"{int(any(w in s for w in ('wonderful', 'warm', 'funny')))}\t{s}\n" for s in lines))
        return str(tmp_path / name)

    # 13 eval lines at 4 per replica: 4 batches, the last with one real row (3 zero-weight rows).
    config = {"output_dir": str(tmp_path / "run"), "task": {"name": "text_classifier"},
              "model": {"family": "bert", "preset": "bert_tiny", "num_layers": 1, "hidden_dim": 16, "num_heads": 2,
                        "intermediate_dim": 32, "dropout": 0.0},
              "data": {"train": [tsv("train.tsv", LINES)], "eval": [tsv("dev.tsv", LINES[:13])], "format": "tsv",
                       "sequence_length": 12, "tokenizer": {"vocabulary_size": 60}},
              "trainer": {"steps": 6, "batch_size": 8, "learning_rate": 1e-2, "log_every": 3, "eval_every": 6,
                          "checkpoint_every": 6, "peak_flops": 1e11}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert "replicas=2" in _subprocess("train", path)
    metrics = json.load(open(tmp_path / "run" / "metrics.json"))
    assert metrics["step"] == 6

    from tfm.training.evaluation import evaluate_run
    from tfm.training.experiment import load_run

    run = load_run(str(tmp_path / "run"))
    recipe = get_recipe(run.config.task.name)
    data = recipe.read_split(run.config, run.config.data.eval, "eval", labels=None)
    sums, losses = {}, []
    for x, y in recipe.labelled_dataset(run.config, run.tokenizer, data, 5, False):  # one device, no padding
        logits = run.task(x, training=False)
        for key, value in run.task.metric_sums(y, logits, None).items():
            sums[key] = sums.get(key, 0.0) + float(value)
        losses.extend(run.task.loss_sums(y[i:i + 1], logits[i:i + 1])[0].numpy() for i in range(len(y)))
    assert sums["weight"] == 13.0
    single = run.task.metrics_from_sums(sums)
    # Counting any example twice or dropping one would move the mean loss by more than this tolerance.
    assert min(abs(loss - single["loss"]) for loss in losses) / 13 > 1e-5 * single["loss"]
    assert metrics["loss"] == pytest.approx(single["loss"], rel=1e-5)
    report = evaluate_run(str(tmp_path / "run"), write=False)
    assert report["num_examples"] == 13
    for key in ("accuracy", "macro_f1", "matthews_corrcoef", "f1"):
        assert metrics[key] == pytest.approx(report[key], abs=1e-9), key


def _train_mirrored(config):
    from tfm.training.strategy import split_logical_cpus

    split_logical_cpus(2)
    from tfm.cli import main

    print(f"replicas={create_strategy('mirrored').num_replicas_in_sync}")
    sys.exit(main(["train", config, "--set", "trainer.strategy=mirrored"]))


if __name__ == "__main__":
    if sys.argv[1] == "accumulate":
        _accumulate(*sys.argv[2:4])
    else:
        _train_mirrored(sys.argv[2])
