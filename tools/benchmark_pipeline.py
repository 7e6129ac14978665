"""Throughput of the masked-LM input pipeline: WordPiece tokenize + pack + MLM masking on SST-2 train.

Usage:
    python tools/benchmark_pipeline.py [--data ../shared/data/sst2/train.tsv] [--vocab DIR]
        [--sequence-length 64] [--batch-size 256] [--epochs 3]

Trains (or loads) a WordPiece vocabulary, runs one warm-up pass over the dataset, then times full passes
and reports non-padding tokens per second (the tokens the tokenizer produced, [CLS]/[SEP] included).
"""

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from tfm.data import WordPieceTokenizer, load_tokenizer, mlm_dataset, read_classification  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2" / "train.tsv"


def benchmark(texts, tokenizer, sequence_length, batch_size, epochs, whole_word_masking=False):
    """Tokens/s of `mlm_dataset` over `texts` after one warm-up pass.

    Args:
        texts: tf.data.Dataset of strings.
        tokenizer: WordPieceTokenizer.
        sequence_length, batch_size, epochs: ints.
        whole_word_masking: bool, whole-word masking.

    Returns:
        dict with tokens, seconds, tokens_per_second, sequences_per_second.
    """
    ds = mlm_dataset(texts, tokenizer, sequence_length, batch_size, whole_word_masking=whole_word_masking, seed=0)
    # Consume every output tensor, move out two scalars per batch.
    ds = ds.map(lambda x, y, w: (tf.reduce_sum(x["padding_mask"]) + tf.reduce_sum(tf.cast(w, tf.int32)) * 0,
                                 tf.shape(y)[0]))
    for _ in ds:  # warm-up: traces the map functions, fills caches
        pass
    tokens = sequences = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for count, rows in ds:
            tokens += int(count)
            sequences += int(rows)
    seconds = time.perf_counter() - start
    return {"tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds,
            "sequences_per_second": sequences / seconds}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="SST-2 style TSV (label<TAB>sentence)")
    parser.add_argument("--vocab", help="saved tokenizer directory (default: train an 8k WordPiece vocab)")
    parser.add_argument("--vocabulary-size", type=int, default=8000)
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--whole-word-masking", action="store_true")
    args = parser.parse_args(argv)

    data = read_classification(args.data)
    texts = data.dataset.map(lambda x: x["text"]).cache()
    if args.vocab:
        tokenizer = load_tokenizer(args.vocab)
    else:
        start = time.perf_counter()
        tokenizer = WordPieceTokenizer.train(texts, args.vocabulary_size)
        print(f"trained WordPiece vocab: {tokenizer.vocabulary_size} tokens from {data.num_examples} sentences "
              f"in {time.perf_counter() - start:.1f} s")
    result = benchmark(texts, tokenizer, args.sequence_length, args.batch_size, args.epochs, args.whole_word_masking)
    print(f"mlm pipeline (tokenize + pack + mask{', whole-word' if args.whole_word_masking else ''}), "
          f"sequence_length={args.sequence_length}, batch_size={args.batch_size}, "
          f"{os.cpu_count()} CPU cores: {result['tokens']:,} tokens in {result['seconds']:.2f} s = "
          f"{result['tokens_per_second']:,.0f} tokens/s ({result['sequences_per_second']:,.0f} sequences/s)")
    return result


if __name__ == "__main__":
    main()
