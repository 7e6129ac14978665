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
# # Train a WordPiece vocabulary and pretrain a small BERT with masked LM
#
# From nothing but English text: learn a **WordPiece vocabulary**, build **bert_tiny** (2 layers, hidden size
# 128) on it and pretrain it with **masked language modelling** (15% of the tokens hidden, the model guesses them
# back) using Keras' own `model.fit`, curves in TensorBoard. Then the model fills in `[MASK]`s and is measured on
# held-out sentences against the bar any masked LM must clear: always guessing the most frequent token.
#
# The text is the sentence corpus of Hutto & Gilbert (ICWSM 2014) inside the `vaderSentiment` sdist on PyPI:
# 23,699 movie-review, tweet, NYT-editorial and Amazon-review sentences. With the default parameters (1,000 steps
# of 64 sentences, a few minutes on a CPU) the model gets about twice the baseline's accuracy; `make quickstart`
# is the same job from the command line.

# %% [markdown]
# ## Install
# On Colab this installs tfm from its repository (a minute or two); where tfm is already installed, as in a
# local clone or in tfm's CI, it does nothing.

# %%
import importlib.util
import subprocess
import sys

REPOSITORY = "https://github.com/tfm-nlp/tfm"
if importlib.util.find_spec("tfm") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"tfm[notebooks] @ git+{REPOSITORY}"], check=True)

# %% [markdown]
# ## Parameters
# The sizes of this run. tfm's CI runs every notebook top to bottom with smaller values put in after this cell.

# %% tags=["parameters"]
STEPS = 1000  # optimizer steps of BATCH_SIZE sentences (22,699 training sentences: 1,000 steps is 2.8 epochs)
BATCH_SIZE = 64
SEQUENCE_LENGTH = 64  # WordPiece tokens per sentence, [CLS] and [SEP] included; longer sentences are cut
LEARNING_RATE = 1e-3  # a small model trained from scratch takes a far larger rate than fine-tuning does
VOCABULARY_SIZE = 8000  # WordPiece tokens to learn, the five special ones included
TRAIN_SENTENCES = None  # None: all of them
EVAL_SENTENCES = None  # held-out sentences; None: all of them
EVALUATIONS = 5  # held-out evaluations during training (the points of the curves)
DATA_DIR = None  # a folder holding sst2/train.tsv and sst2/dev.tsv to use instead; None fetches the corpus from PyPI
WORK_DIR = "bert_tiny_mlm"  # the corpus, the vocabulary and the TensorBoard logs go here
SHOW_TENSORBOARD = True

# %% [markdown]
# ## The accelerator
# `create_strategy("auto")` picks what the runtime has: a TPU (Colab's TPU runtime), several GPUs (mirrored),
# else the one GPU or the CPU. The model is built inside the strategy's scope.

# %%
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import tfm
from tfm.quickstart import fetch_corpus, unigram_baseline

strategy = tfm.training.create_strategy("auto")
print(f"{type(strategy).__name__}: {strategy.num_replicas_in_sync} replica(s); devices:",
      [d.device_type for d in tf.config.list_logical_devices() if d.device_type != "CPU"] or ["CPU"])

# %% [markdown]
# ## The text
# `fetch_corpus` downloads the `vaderSentiment` sdist with `pip download` (any machine that installs packages
# reaches PyPI) and writes its sentences one a line, holding out every tenth movie sentence. With `DATA_DIR`
# the sentences are SST-2's instead (movie-review phrases; its dev sentences are the held-out ones).

# %%
work = Path(WORK_DIR)
work.mkdir(parents=True, exist_ok=True)
if DATA_DIR:
    def sentences(split, count):
        rows = tfm.data.read_classification(os.path.join(DATA_DIR, "sst2", f"{split}.tsv")).dataset
        return [row["text"].decode("utf-8") for row in rows.take(count or -1).as_numpy_iterator()]
    train_texts, eval_texts = sentences("train", TRAIN_SENTENCES), sentences("dev", EVAL_SENTENCES)
else:
    files = fetch_corpus(work / "corpus")
    train_texts, eval_texts = (Path(files[split][0]).read_text(encoding="utf-8").splitlines()[:count]
                               for split, count in (("train", TRAIN_SENTENCES), ("eval", EVAL_SENTENCES)))
for name, texts in (("pretrain.txt", train_texts), ("heldout.txt", eval_texts)):
    (work / name).write_text("\n".join(texts) + "\n", encoding="utf-8")
print(f"{len(train_texts):,} training sentences, {len(eval_texts):,} held out; e.g. {eval_texts[0]!r}")

# %% [markdown]
# ## A WordPiece vocabulary
# `WordPieceTokenizer.train` splits the text into words the way BERT does (lowercased, punctuation apart) and
# learns the pieces: frequent words whole, rarer words from pieces, `##` marking a piece that continues a word.
# It searches the count threshold until the vocabulary lands within 5% below the size asked for.

# %%
tokenizer = tfm.data.WordPieceTokenizer.train(train_texts, vocabulary_size=VOCABULARY_SIZE)
tokenizer.save(work / "tokenizer")
vocabulary = tokenizer.vocabulary
pieces = [token for token in vocabulary if token.startswith("##")]
print(f"asked for {VOCABULARY_SIZE:,} tokens, got {tokenizer.vocabulary_size:,}, {len(pieces):,} of them ##pieces")
print("most frequent:", [token for token in vocabulary[5:] if len(token.lstrip("#")) > 1][:12])  # learned by count

examples = [eval_texts[0], "An unflinchingly bleak, overlong melodrama.", "Surprisingly heartwarming!"]
for text, ids in zip(examples, tokenizer.tokenize(examples).to_list()):
    print(f"{text}\n  -> {' '.join(vocabulary[i] for i in ids)}")

# %% [markdown]
# Every held-out sentence without an unknown character tokenizes, detokenizes (lowercased, words joined by
# spaces) and tokenizes again to exactly the same ids. The sentence lengths tell how much `SEQUENCE_LENGTH` cuts.

# %%
held_out_ids = tokenizer.tokenize(eval_texts).to_list()
known = [ids for ids in held_out_ids if tokenizer.unk_id not in ids]
again = tokenizer.tokenize(tokenizer.detokenize(tf.ragged.constant(known, tf.int32))).to_list()
lengths = np.array([len(ids) for ids in held_out_ids])
unknown = sum(ids.count(tokenizer.unk_id) for ids in held_out_ids) / lengths.sum()
print(f"round trip: {sum(a == b for a, b in zip(again, known))} of {len(known)} sentences "
      f"({len(held_out_ids) - len(known)} hold an [UNK]; {unknown:.2%} of the held-out tokens are [UNK])")
print(f"{lengths.mean():.1f} tokens a sentence; {np.mean(lengths <= SEQUENCE_LENGTH - 2):.1%} fit in {SEQUENCE_LENGTH}")

# %% [markdown]
# ## The bar to clear
# A model that ignores the context can do no better than guess the training set's most frequent token at every
# masked position. `unigram_baseline` scores that guess on the held-out tokens (and the loss of predicting each
# token by its training frequency): anything the model gains over it comes from reading the sentence.

# %%
baseline = unigram_baseline(tokenizer, work / "pretrain.txt", work / "heldout.txt")
most_frequent = np.bincount(tokenizer.tokenize(train_texts).flat_values.numpy()).argmax()
print(f"unigram baseline: always {vocabulary[most_frequent]!r}, accuracy {baseline['accuracy']:.4f}, "
      f"loss {baseline['loss']:.3f} (a uniform guess: loss {np.log(tokenizer.vocabulary_size):.3f})")

# %% [markdown]
# ## The model
# `bert_tiny` sized for this vocabulary, and `MaskedLM`'s head, whose output layer is tied to the token
# embedding. The learning rate warms up over the first 6% of the steps, then decays linearly to zero. The loss
# is averaged over the masked tokens, like the baseline's (tfm's default divides by every prediction slot, the
# empty ones included, which keeps `fit` exact over several GPUs but reads lower than the per-token loss).
# `jit_compile="auto"` is Keras' rule: XLA on a GPU or TPU, none on a CPU-only runtime (sparing the compile).

# %%
with strategy.scope():
    backbone = tfm.models.BertBackbone.from_preset("bert_tiny", vocabulary_size=tokenizer.vocabulary_size)
    mlm = tfm.tasks.MaskedLM(backbone)
    schedule = tfm.training.WarmupDecay(LEARNING_RATE, total_steps=STEPS, warmup_steps=max(1, STEPS * 6 // 100))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight")
    mlm.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.01), loss=loss, jit_compile="auto")
print(f"{mlm.count_params():,} parameters, {backbone.token_embedding.count_params():,} of them in the token embedding")

# %% [markdown]
# ## Pretraining with `model.fit`
# `mlm_dataset` tokenizes inside the tf.data graph and picks 15% of each sentence's tokens (80% of them become
# `[MASK]`, 10% a random token, 10% stay); the labels are the original tokens at those positions. The held-out
# batches use a fixed seed, so every evaluation hides the same tokens. Each "epoch" is `STEPS / EVALUATIONS`
# steps and one held-out evaluation; Keras' TensorBoard callback writes the curves.

# %%
train_ds = tfm.data.mlm_dataset(tf.data.Dataset.from_tensor_slices(train_texts).repeat(), tokenizer,
                                SEQUENCE_LENGTH, BATCH_SIZE, shuffle=True, seed=0, drop_remainder=True)
eval_ds = tfm.data.mlm_dataset(eval_texts, tokenizer, SEQUENCE_LENGTH, BATCH_SIZE, seed=1)
log_dir = os.path.join(WORK_DIR, "logs")
shutil.rmtree(log_dir, ignore_errors=True)  # a rerun draws its own curves only
history = mlm.fit(train_ds, validation_data=eval_ds, epochs=EVALUATIONS, steps_per_epoch=STEPS // EVALUATIONS,
                  callbacks=[keras.callbacks.TensorBoard(log_dir)], verbose=2)

# %% [markdown]
# ## The curves
# Read back from the TensorBoard event files the callback wrote (the same numbers TensorBoard shows). Both
# count the masked positions only; the dashed lines are the unigram baseline.

# %%
import matplotlib.pyplot as plt
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def scalars(run, tag):
    events = EventAccumulator(os.path.join(log_dir, run), size_guidance={"tensors": 0})
    events.Reload()
    return [((e.step + 1) * (STEPS // EVALUATIONS), float(tf.make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)]


fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
for run, label in (("train", "training batches"), ("validation", "held out")):
    left.plot(*zip(*scalars(run, "epoch_loss")), marker="o", label=label)
    right.plot(*zip(*scalars(run, "epoch_accuracy")), marker="o", label=label)
left.axhline(baseline["loss"], color="gray", linestyle="--", label="token frequencies")
right.axhline(baseline["accuracy"], color="gray", linestyle="--", label=f"always {vocabulary[most_frequent]!r}")
left.set(xlabel="step", ylabel="loss", title="masked-token loss"), left.legend()
right.set(xlabel="step", ylabel="accuracy", title="masked-token accuracy"), right.legend()
plt.show()

# %% [markdown]
# TensorBoard itself, inline (on Colab and in Jupyter):

# %%
if SHOW_TENSORBOARD:
    from tensorboard import notebook

    notebook.start(f"--logdir {log_dir}")

# %% [markdown]
# ## Held out: the model against the baseline
# The mean loss and accuracy over the masked held-out tokens, summed batch by batch with the task's own
# `metric_sums` (what `tfm evaluate` reports). The baseline's loss is comparable here: both are per masked token.

# %%
totals = {}
for x, y, weights in eval_ds:
    for key, value in mlm.metric_sums(y, mlm(x, training=False), weights).items():
        totals[key] = totals.get(key, 0.0) + float(value)
held_out = mlm.metrics_from_sums(totals)
print(f"{int(totals['weight']):,} masked held-out tokens after {STEPS} steps")
print(f"  bert_tiny:        accuracy {held_out['accuracy']:.4f}  loss {held_out['loss']:.3f}")
print(f"  unigram baseline: accuracy {baseline['accuracy']:.4f}  loss {baseline['loss']:.3f}")

# %% [markdown]
# ## Fill in the blank
# Sentences with a literal `[MASK]`: the text either side is tokenized, the mask id put between, and the
# model's five most likely tokens for the blank are drawn with their probabilities. After a few minutes of
# pretraining they are still mostly frequent words and punctuation (the default run's held-out accuracy is 0.12:
# it gets the easy, frequent tokens right); fitting content words takes far longer runs and bigger models.

# %%
blanks = ["the movie was [MASK] good .", "it is one of the [MASK] films of the year .",
          "i would [MASK] recommend it to anyone ."]
ids = [[*tokenizer.tokenize(left).numpy(), tokenizer.mask_id, *tokenizer.tokenize(right).numpy()]
       for left, right in (text.split("[MASK]") for text in blanks)]
x = tfm.data.pack_segments([tf.ragged.constant(ids, tf.int32)], SEQUENCE_LENGTH, tokenizer.cls_id,
                           tokenizer.sep_id, tokenizer.pad_id)
x["mask_positions"] = tf.argmax(tf.cast(x["token_ids"] == tokenizer.mask_id, tf.int32), 1, tf.int32)[:, None]
probabilities = tf.nn.softmax(mlm(x, training=False)[:, 0]).numpy()

fig, axes = plt.subplots(1, len(blanks), figsize=(4 * len(blanks), 2.8))
for ax, text, p in zip(axes, blanks, probabilities):
    top = np.argsort(p)[::-1][:5]
    print(f"{text:48} -> " + ", ".join(f"{vocabulary[i]} {p[i]:.2f}" for i in top))
    ax.barh(range(5)[::-1], p[top], color="C2")
    ax.set(yticks=range(5)[::-1], yticklabels=[vocabulary[i] for i in top], xlabel="probability")
    ax.set_title(text, fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Checks
# At any size of run: the vocabulary is within 5% below the size asked for, detokenizing undoes tokenizing, the
# head gives a distribution over the vocabulary, and the held-out loss beats a uniform guess. A run of the
# default length also beats the unigram baseline clearly (CI's few steps stop before the model reads context).

# %%
assert 0.95 * VOCABULARY_SIZE <= tokenizer.vocabulary_size <= VOCABULARY_SIZE, tokenizer.vocabulary_size
assert again == known
assert probabilities.shape == (len(blanks), tokenizer.vocabulary_size)
assert np.allclose(probabilities.sum(-1), 1, atol=1e-4)
assert held_out["loss"] < np.log(tokenizer.vocabulary_size), held_out
if STEPS >= 1000:
    assert held_out["accuracy"] > baseline["accuracy"] + 0.03, (held_out, baseline)
