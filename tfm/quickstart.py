"""`make quickstart`: fetch real text from PyPI, train a WordPiece vocabulary, pretrain bert_tiny with MLM.

The text is the sentence corpus of Hutto & Gilbert (ICWSM 2014) shipped inside the vaderSentiment 3.3.2
sdist (MIT): 10,605 Rotten Tomatoes snippets plus tweets, NYT editorial and Amazon review sentences,
23,699 in all. `pip download` reaches it on any machine with access to PyPI.
"""

import io
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VADER_SDIST = "vaderSentiment==3.3.2"
INNER_ARCHIVE = "additional_resources/hutto_ICWSM_2014.tar.gz"
CORPUS_FILES = (
    "movieReviewSnippets_GroundTruth.txt",
    "tweets_GroundTruth.txt",
    "nytEditorialSnippets_GroundTruth.txt",
    "amazonReviewSnippets_GroundTruth.txt",
)
EVAL_SENTENCES = 1000  # held out from the movie snippets (every 10th), never trained on
REPO = Path(__file__).resolve().parents[1]


def sentences_from_sdist(sdist_path):
    """`{file name: [sentences]}` from the vaderSentiment sdist (`id<TAB>rating<TAB>text` lines, CRLF).

    Args:
        sdist_path: path of `vaderSentiment-3.3.2.tar.gz`.
    """
    with tarfile.open(sdist_path) as outer:
        member = next((m for m in outer.getmembers() if m.name.endswith(INNER_ARCHIVE)), None)
        if member is None:
            raise ValueError(f"{sdist_path}: no {INNER_ARCHIVE} inside")
        inner_bytes = outer.extractfile(member).read()
    corpus = {}
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        for m in inner.getmembers():
            name = os.path.basename(m.name)
            if name not in CORPUS_FILES:
                continue
            lines = inner.extractfile(m).read().decode("utf-8").splitlines()
            sentences = []
            for number, line in enumerate(lines, 1):
                parts = line.split("\t")
                if len(parts) != 3 or not parts[2].strip():
                    raise ValueError(f"{sdist_path}:{m.name}:{number}: expected 'id<TAB>rating<TAB>text', got {line[:80]!r}")
                sentences.append(parts[2].strip())
            corpus[name] = sentences
    missing = set(CORPUS_FILES) - set(corpus)
    if missing:
        raise ValueError(f"{sdist_path}: missing {sorted(missing)}")
    return corpus


def write_corpus(corpus, directory):
    """Writes `train.txt` and `eval.txt` (one sentence a line); returns their paths and line counts."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    train, evaluation = [], []
    for name in CORPUS_FILES:
        for i, sentence in enumerate(corpus[name]):
            held_out = name == CORPUS_FILES[0] and i % 10 == 0 and len(evaluation) < EVAL_SENTENCES
            (evaluation if held_out else train).append(sentence)
    (directory / "train.txt").write_text("\n".join(train) + "\n", encoding="utf-8")
    (directory / "eval.txt").write_text("\n".join(evaluation) + "\n", encoding="utf-8")
    return {"train": (str(directory / "train.txt"), len(train)), "eval": (str(directory / "eval.txt"), len(evaluation))}


def fetch_corpus(directory):
    """Downloads the vaderSentiment sdist with pip (once) and writes the corpus into `directory`."""
    directory = Path(directory)
    if (directory / "train.txt").exists() and (directory / "eval.txt").exists():
        return {"train": (str(directory / "train.txt"), None), "eval": (str(directory / "eval.txt"), None)}
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                   VADER_SDIST, "-d", tmp]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"'{' '.join(command)}' failed (is PyPI reachable?):\n{result.stderr[-2000:]}")
        sdist = next(Path(tmp).glob("vaderSentiment-*.tar.gz"))
        return write_corpus(sentences_from_sdist(sdist), directory)


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
