"""Causal-LM generated samples in TensorBoard: written at every eval, one per prompt, reproducible from checkpoints."""

import os

import numpy as np
import pytest
import tensorflow as tf
import yaml

from tests.helpers import shared_sentences
from tfm.data import load_tokenizer
from tfm.tasks import CausalLM
from tfm.training.config import load_config
from tfm.training.experiment import run_experiment

PROMPT_TOKENS, NEW_TOKENS = 16, 24  # what the experiment's sampler uses: prompts cut to 16 tokens, 24 new ones


def _text_summaries(directory, tag):
    found = []
    for path in sorted(tf.io.gfile.glob(os.path.join(directory, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    assert value.metadata.plugin_data.plugin_name == "text"
                    texts = [t.decode("utf-8") for t in tf.make_ndarray(value.tensor).ravel()]
                    found.append((event.step, texts))
    return found


def _greedy(model, tokenizer, prompt):
    """One prompt alone (no padding), greedy, as many tokens as the sampler: the reference continuation."""
    ids = tokenizer.tokenize(tf.constant([prompt])).flat_values.numpy()[:PROMPT_TOKENS]
    out = model.generate(ids[None].astype("int32"), max_new_tokens=NEW_TOKENS)
    assert out["padding_mask"].all()  # no stop tokens: every row runs the full 24 tokens
    ragged = tf.RaggedTensor.from_tensor(out["token_ids"])  # keeps a generated pad id (dense input strips it)
    return tokenizer.detokenize(ragged).numpy()[0].decode("utf-8"), ids


@pytest.mark.slow
@pytest.mark.parametrize("tokenizer_type", ["wordpiece", "sentencepiece"])
def test_eval_writes_greedy_samples_that_checkpoints_reproduce(tmp_path, tokenizer_type):
    # The first dev sentence is short (< 16 tokens), the second long: the sampler batches them right-padded.
    train, evals = shared_sentences("sst2", "train", 400), shared_sentences("sst2", "dev", 40)
    (tmp_path / "train.txt").write_text("\n".join(train) + "\n", encoding="utf-8")
    (tmp_path / "eval.txt").write_text("\n".join(evals) + "\n", encoding="utf-8")
    config = {
        "output_dir": str(tmp_path / "run"),
        "task": {"name": "causal_lm"},
        "model": {"family": "gpt", "preset": "gpt2_small", "num_layers": 1, "num_heads": 2, "hidden_dim": 32,
                  "intermediate_dim": 64, "max_sequence_length": 64, "dropout": 0.0},
        "data": {"train": [str(tmp_path / "train.txt")], "eval": [str(tmp_path / "eval.txt")], "format": "text",
                 "sequence_length": 32, "max_eval_examples": 16,
                 "tokenizer": {"type": tokenizer_type, "vocabulary_size": 300}},
        "trainer": {"steps": 20, "batch_size": 8, "learning_rate": 3e-3, "log_every": 10, "eval_every": 10,
                    "checkpoint_every": 10, "keep_checkpoints": 3, "num_samples": 2, "peak_flops": 1e11,
                    "strategy": "default"},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    cfg = load_config(tmp_path / "config.yaml")
    _, trainer = run_experiment(cfg, verbose=False)
    run = tmp_path / "run"

    samples = _text_summaries(run / "eval", "samples")
    assert [step for step, _ in samples] == [10, 20]  # one summary per evaluation
    assert all(len(texts) == 2 for _, texts in samples)  # exactly trainer.num_samples

    tokenizer = load_tokenizer(str(run / "tokenizer"))
    model = CausalLM.from_config(trainer.model.get_config())  # fresh weights, filled from each checkpoint
    prompt_lengths = set()
    for step, texts in samples:
        tf.train.Checkpoint(model=model).restore(str(run / "checkpoints" / f"ckpt-{step}")).expect_partial()
        if step == 20:  # the final checkpoint holds the trainer's final weights
            for restored, trained in zip(model.weights, trainer.model.weights):
                np.testing.assert_array_equal(np.asarray(restored), np.asarray(trained), err_msg=restored.path)
        for prompt, text in zip(evals, texts):
            expected, ids = _greedy(model, tokenizer, prompt)
            prompt_text = tokenizer.detokenize(tf.constant(ids[None])).numpy()[0].decode("utf-8")
            prompt_lengths.add(len(ids))
            # The prompt is the eval text's start (WordPiece detokenizes "it 's" as "it ' s": compare without spaces).
            assert prompt.replace(" ", "").startswith(prompt_text.replace(" ", "")) and len(prompt_text) > 10
            assert text.startswith(prompt_text), (step, text, prompt_text)
            assert tokenizer.tokenize(tf.constant([text])).flat_values.numpy()[: len(ids)].tolist() == ids.tolist()
            assert text == expected, (step, text, expected)
            assert len(text) > len(prompt_text)  # something was generated
    assert PROMPT_TOKENS in prompt_lengths  # a prompt cut at 16 tokens
    if tokenizer_type == "wordpiece":  # and a shorter one (SentencePiece's 300 pieces make both long)
        assert len(prompt_lengths) == 2
