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
# # Train a small GPT, generate four ways, decode in int8
#
# This notebook trains a small GPT from scratch on real English sentences with Keras' `model.fit` (causal language
# modelling: predict each next token), reports its validation perplexity, and continues the same prompts with
# greedy decoding, top-k sampling, top-p (nucleus) sampling and beam search, all through `CausalLM.generate`, one
# XLA-compiled loop over a key/value cache. Then it quantizes a copy of the model to int8 and compares the two:
# how far the logits move, how many greedy tokens stay the same, and decoding speed at batch 1.
#
# The default parameters (a 2-layer, width-128 GPT, 800 steps of 32 x 64 tokens) take a few minutes on a Colab
# CPU. The model is tiny, so expect fluent-looking fragments, not sense; `tfm train configs/gpt_tiny_clm.yaml`
# is the full recipe for the same corpus.

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
STEPS = 800  # optimizer steps of BATCH_SIZE rows
BATCH_SIZE = 32
SEQUENCE_LENGTH = 64  # tokens per training row, also the longest prompt + continuation the model can take
VOCABULARY_SIZE = 4000  # byte-pair (BPE) tokens learned from the training sentences
NUM_LAYERS = 2
HIDDEN_DIM = 128  # heads of 64 dimensions, feed-forward 4 x HIDDEN_DIM
LEARNING_RATE = 1e-3
JIT_COMPILE = True  # XLA-compile the training step: faster steps, a slower start
LOG_EVERY = 50  # steps per point of the training-loss curve
EVALUATIONS = 4  # validation points on the curve
MAX_SENTENCES = None  # None: every training sentence
NEW_TOKENS = 24  # tokens generated per prompt
TIMING_RUNS = 3  # timed decodes per model (the best one counts)
DATA_DIR = None  # a folder holding sst2/train.tsv and sst2/dev.tsv; None downloads the quickstart corpus from PyPI
WORK_DIR = "gpt_generation"  # the downloaded corpus goes here

# %% [markdown]
# ## The accelerator
# `create_strategy("auto")` picks what the runtime has: a TPU, several GPUs (mirrored), else the one GPU or the
# CPU. The model is built inside the strategy's scope.

# %%
import os
import time

import keras
import numpy as np
import tensorflow as tf

import tfm

strategy = tfm.training.create_strategy("auto")
print(f"{type(strategy).__name__}: {strategy.num_replicas_in_sync} replica(s); devices:",
      [d.device_type for d in tf.config.list_logical_devices() if d.device_type != "CPU"] or ["CPU"])

# %% [markdown]
# ## The data
# tfm's quickstart corpus: the 23,699 English sentences (Rotten Tomatoes snippets, tweets, NYT editorial and
# Amazon review sentences) that Hutto & Gilbert published with VADER, fetched from the `vaderSentiment` source
# package on PyPI; 1,000 movie snippets are held out for validation. Given a `DATA_DIR`, the SST-2 movie-review
# sentences are read from there instead (train for training, dev for validation).

# %%
def lines(path):
    with open(path, encoding="utf-8") as file:
        return [line.strip() for line in file if line.strip()]


if DATA_DIR:  # `label<TAB>sentence` rows under a header
    train_texts, val_texts = ([row.split("\t", 1)[1] for row in lines(os.path.join(DATA_DIR, "sst2", name))[1:]]
                              for name in ("train.tsv", "dev.tsv"))
else:
    from tfm.quickstart import fetch_corpus  # `pip download vaderSentiment==3.3.2`, written once into WORK_DIR

    files = fetch_corpus(os.path.join(WORK_DIR, "corpus"))
    train_texts, val_texts = lines(files["train"][0]), lines(files["eval"][0])
train_texts = train_texts[:MAX_SENTENCES]
print(f"{len(train_texts):,} training sentences, {len(val_texts):,} validation sentences; e.g. {train_texts[0]!r}")

# %% [markdown]
# ## A byte-pair tokenizer
# `configs/gpt_tiny_clm.yaml` trains a SentencePiece vocabulary on the corpus; here SentencePiece learns a
# byte-pair (BPE) one: start from characters, repeatedly merge the most frequent adjacent pair. Ids 0-3 are
# padding, unknown, begin and end; the end token closes each sentence when sentences are packed into rows.

# %%
tokenizer = tfm.data.SentencePieceTokenizer.train(train_texts, VOCABULARY_SIZE, model_type="bpe")
END = tokenizer.end_token_id
example = tokenizer.tokenize([val_texts[0]])[0].numpy().tolist()
print(f"{tokenizer.vocabulary_size} tokens; {val_texts[0]!r} ->")
print(" ".join(tokenizer.id_to_token(i) for i in example))

# %% [markdown]
# ## The model
# `GptBackbone.from_preset("gpt2_small", ...)` is GPT-2's architecture with the sizes above swapped in, randomly
# initialized; `CausalLM` adds the output layer, which reuses the token embedding (tied weights).

# %%
with strategy.scope():
    backbone = tfm.models.GptBackbone.from_preset(
        "gpt2_small", vocabulary_size=tokenizer.vocabulary_size, num_layers=NUM_LAYERS, hidden_dim=HIDDEN_DIM,
        num_heads=max(1, HIDDEN_DIM // 64), intermediate_dim=4 * HIDDEN_DIM, max_sequence_length=SEQUENCE_LENGTH)
    lm = tfm.tasks.CausalLM(backbone)
    schedule = tfm.training.WarmupDecay(LEARNING_RATE, total_steps=STEPS, warmup_steps=STEPS // 16, decay="cosine")
    lm.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.01), jit_compile=JIT_COMPILE)
print(f"{lm.count_params():,} parameters")

# %% [markdown]
# ## Training with `model.fit`
# `clm_dataset` tokenizes inside the tf.data graph, appends the end token to each sentence, concatenates them and
# cuts rows of `SEQUENCE_LENGTH + 1` tokens: the input is a row's first `SEQUENCE_LENGTH` tokens, the target the
# same shifted by one. Each Keras "epoch" below is `LOG_EVERY` steps (one point of the loss curve).

# %%
shuffled = tf.data.Dataset.from_tensor_slices(train_texts).shuffle(len(train_texts), seed=0).repeat()
train_ds = tfm.data.clm_dataset(shuffled, tokenizer, SEQUENCE_LENGTH, BATCH_SIZE)
val_ds = tfm.data.clm_dataset(val_texts, tokenizer, SEQUENCE_LENGTH, BATCH_SIZE).cache()  # full batches only
val_steps = sum(1 for _ in val_ds)
epochs = STEPS // LOG_EVERY
every = max(1, epochs // EVALUATIONS)
history = lm.fit(train_ds, epochs=epochs, steps_per_epoch=LOG_EVERY, validation_data=val_ds,
                 validation_steps=val_steps, validation_freq=every, verbose=2)

# %% [markdown]
# ## The loss curve and validation perplexity
# Perplexity is `exp(mean loss per token)`: the number of equally likely tokens the model is, on average, as
# unsure as. The yardstick is a unigram model (each token's frequency in the training text, no context at all):
# on the quickstart corpus its perplexity is about 980, and a test run of 300 of the default 800 steps reached 361.
# (`configs/gpt_tiny_clm.yaml`, 1,500 steps of 128-token rows, reaches 165 on its 8,000-token vocabulary.)

# %%
import matplotlib.pyplot as plt

val_loss = lm.evaluate(val_ds, steps=val_steps, verbose=0, return_dict=True)["loss"]
perplexity = float(np.exp(val_loss))
counts = np.bincount(tokenizer.tokenize(train_texts).flat_values.numpy(), minlength=tokenizer.vocabulary_size) + 1.0
val_ids = tokenizer.tokenize(val_texts).flat_values.numpy()
unigram = float(np.exp(-np.log(counts / counts.sum())[val_ids].mean()))
print(f"validation perplexity {perplexity:.1f} (unigram baseline {unigram:.1f}, uniform guess "
      f"{tokenizer.vocabulary_size})")

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(np.arange(1, epochs + 1) * LOG_EVERY, history.history["loss"], label="training (mean over each point's steps)")
validated_at = [(e + 1) * LOG_EVERY for e in range(epochs) if (e + 1) % every == 0]
ax.plot(validated_at, history.history["val_loss"], marker="o", label="validation")
ax.axhline(np.log(unigram), color="gray", linestyle="--", label="unigram baseline")
ax.set(xlabel="step", ylabel="loss (nats per token)", title="causal LM loss"), ax.legend()
plt.show()
assert np.isfinite(val_loss) and perplexity < tokenizer.vocabulary_size  # better than guessing uniformly

# %% [markdown]
# ## Four ways to continue a prompt
# - **greedy**: always the most likely next token (deterministic; tends to repeat itself);
# - **top-k**: sample among the k most likely tokens;
# - **top-p** (nucleus): sample among the fewest most likely tokens whose probability reaches p;
# - **beam search**: keep the 4 most likely sequences (total log-probability) and return the best.
#
# Each prompt is decoded on its own (batch 1, the latency case timed below), right-padded to the longest prompt
# so that all share one compiled loop per sampler (`generate` compiles once per sampler and input shape; it also
# takes a whole batch of prompts of different lengths). The samplers draw with stateless random ops, so the same
# `seed` gives the same text; the seed fixes the noise at each position, so each prompt gets its own.

# %%
PROMPTS = ["the movie is", "i thought it was", "this is one of the best", "the acting"]
prompt_ids = tokenizer.tokenize(PROMPTS).to_list()
width = max(map(len, prompt_ids))
padded = np.array([ids + [0] * (width - len(ids)) for ids in prompt_ids], "int32")
mask = (np.arange(width)[None, :] < np.array([len(ids) for ids in prompt_ids])[:, None]).astype("int32")


def generate(model, seed=0, **kwargs):
    """`model.generate` on each prompt at batch 1 (seeds `seed + row`); its outputs stacked over the prompts."""
    rows = [model.generate({"token_ids": padded[i:i + 1], "padding_mask": mask[i:i + 1]}, NEW_TOKENS, seed=seed + i,
                           **kwargs) for i in range(len(PROMPTS))]
    return {key: np.concatenate([row[key] for row in rows]) for key in rows[0]}


settings = {"greedy": dict(sampler="greedy"), "top-k, k=10": dict(sampler="top_k", top_k=10),
            "top-p, p=0.9": dict(sampler="top_p", top_p=0.9), "beam, 4 beams": dict(sampler="beam", num_beams=4)}
outputs = {name: generate(lm, seed=1, **kwargs) for name, kwargs in settings.items()}


def continuation(output, row):
    """The new tokens of one row, up to the end token, as text."""
    new = output["token_ids"][row, len(prompt_ids[row]):][output["padding_mask"][row, len(prompt_ids[row]):] == 1]
    new = new.tolist()[:new.tolist().index(END)] if END in new else new.tolist()
    return tokenizer.detokenize(tf.ragged.constant([new], dtype=tf.int32)).numpy()[0].decode("utf-8")


for row, prompt in enumerate(PROMPTS):
    print(f"\n{prompt!r}")
    for name, output in outputs.items():
        print(f"  {name:>13}: {prompt} | {continuation(output, row)}")

# %% [markdown]
# ## Checks on the decoder
# The output is `(prompts, longest prompt + NEW_TOKENS)`. Greedy decoding ignores the seed, and a sampler given
# the same seed draws the same tokens. And the cached decode loop must pick what a plain full forward pass over
# the text so far picks: for the first tokens of each prompt, the generated token is the argmax of the full
# pass's last logits (up to 1e-4, should two logits tie in float32).

# %%
greedy = outputs["greedy"]["token_ids"]
assert all(o["token_ids"].shape == (len(PROMPTS), width + NEW_TOKENS) for o in outputs.values())
assert np.array_equal(greedy, generate(lm, seed=7)["token_ids"])
assert np.array_equal(outputs["top-k, k=10"]["token_ids"], generate(lm, seed=1, sampler="top_k", top_k=10)["token_ids"])

exact = 0
CHECKED = min(4, NEW_TOKENS)
for row, prompt in enumerate(prompt_ids):
    for step in range(CHECKED):
        text = greedy[row, :len(prompt) + step][None, :]
        logits = lm({"token_ids": text, "padding_mask": np.ones_like(text)}, training=False).numpy()
        assert logits.shape == (1, text.shape[1], tokenizer.vocabulary_size)
        chosen, last = greedy[row, len(prompt) + step], logits[0, -1]
        assert last[chosen] >= last.max() - 1e-4, (row, step)
        exact += int(chosen == last.argmax())
print(f"{exact} of {len(PROMPTS) * CHECKED} greedy tokens are exactly the full forward pass's argmax")

# %% [markdown]
# ## int8 weights
# `quantize("int8")` replaces the backbone's projection, feed-forward and token-embedding weights (so also the
# tied output layer) with int8 values and one float scale per output channel, and quantizes each token's
# activations to int8 at run time (W8A8 dynamic, Keras' int8 mode): a quarter of the weight bytes. It acts in
# place, so it is applied to a copy. How far do the logits move? Rounding a weight to 8 bits moves it by at most
# 1/254 of its channel's largest weight, and the activations likewise; through the whole model, the check
# below requires every logit on a validation batch to stay within 5% of the largest float32 logit.

# %%
with strategy.scope():
    lm_int8 = tfm.tasks.CausalLM.from_config(lm.get_config())
    lm_int8.set_weights(lm.get_weights())
    lm_int8.quantize("int8")
batch = next(iter(val_ds))[0]
float_logits = lm(batch, training=False).numpy()
int8_logits = lm_int8(batch, training=False).numpy()
difference = np.abs(int8_logits - float_logits).max()
bound = 0.05 * np.abs(float_logits).max()
same_top = (int8_logits.argmax(-1) == float_logits.argmax(-1)).mean()
print(f"max |int8 - float32| logit {difference:.4f} (bound {bound:.4f}; largest float32 logit "
      f"{np.abs(float_logits).max():.2f}); same top token at {same_top:.1%} of {float_logits.shape[:2]} positions")
assert int8_logits.shape == float_logits.shape and difference < bound

# %% [markdown]
# ## Decoding speed, float32 vs int8
# One prompt at a time (batch 1), `NEW_TOKENS` greedy tokens, the prompt pass included; the first call of each
# model compiles its loop and is not timed, then the best of `TIMING_RUNS` decodes counts. On a shared or
# throttled CPU (Colab's, CI machines) these numbers move by tens of percent from run to run: read them as
# rough. A model this small is bound by per-step overhead more than by reading weights, so int8 need not be
# faster; tfm's README measures what int8 buys on larger models.

# %%
def tokens_per_second(model):
    prompt = {"token_ids": padded[:1], "padding_mask": mask[:1]}
    model.generate(prompt, NEW_TOKENS)  # compiles
    best = float("inf")
    for _ in range(TIMING_RUNS):
        start = time.perf_counter()
        model.generate(prompt, NEW_TOKENS)
        best = min(best, time.perf_counter() - start)
    return NEW_TOKENS / best


speed = {"float32": tokens_per_second(lm), "int8 (W8A8)": tokens_per_second(lm_int8)}
int8_output = generate(lm_int8)
int8_greedy = int8_output["token_ids"]
new = np.zeros_like(greedy, dtype=bool)
for row, prompt in enumerate(prompt_ids):
    new[row, len(prompt):len(prompt) + NEW_TOKENS] = True
identical = float((int8_greedy == greedy)[new].mean())
print(", ".join(f"{name}: {value:.0f} tokens/s" for name, value in speed.items()))
print(f"{identical:.1%} of the greedy tokens are identical between float32 and int8")
for row, prompt in enumerate(PROMPTS):
    print(f"  int8 greedy: {prompt} | {continuation(int8_output, row)}")

fig, ax = plt.subplots(figsize=(4.5, 3))
ax.bar(list(speed), list(speed.values()), color=["C0", "C2"])
for i, value in enumerate(speed.values()):
    ax.text(i, value, f"{value:.0f}", ha="center", va="bottom")
ax.set(ylabel="tokens / s", title=f"greedy decoding, batch 1, {NEW_TOKENS} new tokens"), ax.margins(y=0.15)
plt.show()
assert int8_greedy.shape == greedy.shape

# %% [markdown]
# Once float32 and int8 pick a different token, the two continuations go their own ways, so the fraction of
# identical tokens is mostly "how long until the first disagreement": near-ties between the top two tokens,
# common in a small, briefly trained model, are where int8's rounding flips the choice.
