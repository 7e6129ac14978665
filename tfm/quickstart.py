"""`make quickstart`: fetch real text from PyPI, train a WordPiece vocabulary, pretrain bert_tiny with MLM.

The text is the sentence corpus of Hutto & Gilbert (ICWSM 2014) shipped inside the vaderSentiment 3.3.2
sdist (MIT): 10,605 Rotten Tomatoes snippets plus tweets, NYT editorial and Amazon review sentences,
23,699 in all. `pip download` reaches it on any machine with access to PyPI; without one, download
`vaderSentiment-3.3.2.tar.gz` elsewhere and point `TFM_QUICKSTART_SDIST` at it.

A config with `data.prepare: quickstart_corpus` (configs/bert_tiny_mlm.yaml, configs/gpt_tiny_clm.yaml) has
`run_experiment` write the corpus first (`prepare_data`), so `tfm train` works without `tfm quickstart`.
"""

from pathlib import Path

from tfm.data.quickstart_corpus import (  # noqa: F401  (the corpus helpers, public here too)
    CORPUS_FILES,
    EVAL_SENTENCES,
    INNER_ARCHIVE,
    SDIST_ENV,
    VADER_SDIST,
    download_sdist,
    fetch_corpus,
    prepare_data,
    sentences_from_sdist,
    write_corpus,
)

REPO = Path(__file__).resolve().parents[1]


def unigram_baseline(tokenizer, train_path, eval_path):
    """What a model that ignores context scores: `{"loss", "accuracy"}` of predicting each eval token from
    the training set's token frequencies (add-one smoothed); the bar masked-LM pretraining must clear.

    MLM targets are the original tokens at uniformly chosen positions, so this is the expected loss of the
    best context-free predictor on them.
    """
    import numpy as np
    import tensorflow as tf

    def token_ids(path):
        lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        return tokenizer.tokenize(tf.constant(lines)).flat_values.numpy()

    counts = np.bincount(token_ids(train_path), minlength=tokenizer.vocabulary_size).astype(np.float64) + 1.0
    targets = token_ids(eval_path)
    probabilities = counts / counts.sum()
    return {"loss": float(-np.mean(np.log(probabilities[targets]))),
            "accuracy": float(np.mean(targets == np.argmax(counts)))}


def run_quickstart(config_path=None, overrides=()):
    """Fetches the corpus, pretrains bert_tiny with MLM per `configs/bert_tiny_mlm.yaml`, prints the result."""
    from tfm.training.config import load_config
    from tfm.training.experiment import run_experiment

    config_path = config_path or REPO / "configs" / "bert_tiny_mlm.yaml"
    cfg = load_config(config_path, overrides)
    files = fetch_corpus(Path(cfg.data.train[0]).parent)
    print(f"corpus: {files['train'][0]} (train), {files['eval'][0]} (eval)")
    metrics, trainer = run_experiment(cfg)
    from tfm.data import load_tokenizer

    tokenizer = load_tokenizer(Path(cfg.output_dir) / "tokenizer")
    baseline = unigram_baseline(tokenizer, cfg.data.train[0], cfg.data.eval[0])
    print(f"\nmasked-LM accuracy on {EVAL_SENTENCES} held-out sentences after {cfg.trainer.steps} steps: "
          f"{metrics['accuracy']:.4f} (loss {metrics['loss']:.3f})")
    print(f"unigram baseline (token frequencies, no context): accuracy {baseline['accuracy']:.4f} "
          f"(loss {baseline['loss']:.3f})")
    print(f"TensorBoard: tensorboard --logdir {cfg.output_dir}")
    return 0
