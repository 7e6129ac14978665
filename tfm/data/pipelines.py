"""One call per job: raw text datasets → batched, prefetched model inputs with static sequence shapes.

Every helper batches first and then tokenizes/packs/masks whole batches in one `map`, so no Python runs
per example. With `drop_remainder=True` the batch dimension is static too (TPU).
"""

import math

import tensorflow as tf

from tfm.data.conll import IGNORE_LABEL, align_word_labels
from tfm.data.preprocessing import causal_lm_split, chunk_stream, mask_tokens, pack_segments
from tfm.data.readers import ReadResult

AUTOTUNE = tf.data.AUTOTUNE


def _as_dataset(data):
    if isinstance(data, ReadResult):
        return data.dataset
    if isinstance(data, tf.data.Dataset):
        return data
    return tf.data.Dataset.from_tensor_slices(tf.constant(list(data), tf.string))


def _maybe_shuffle(ds, shuffle, seed, buffer_size=10_000):
    return ds.shuffle(buffer_size, seed=seed, reshuffle_each_iteration=True) if shuffle else ds


def default_max_predictions(sequence_length, mask_rate=0.15):
    """Mean selections + 2 standard deviations: the cap rarely binds, so the masking rate stays unbiased."""
    n = sequence_length - 2
    return min(sequence_length, math.ceil(n * mask_rate + 2 * math.sqrt(n * mask_rate * (1 - mask_rate))))


def mlm_dataset(texts, tokenizer, sequence_length=128, batch_size=32, max_predictions=None, mask_rate=0.15,
                whole_word_masking=False, next_sentence=False, truncate="round_robin", shuffle=False, seed=None,
                drop_remainder=False, word_boundaries="pieces"):
    """Masked-LM pretraining batches (the format of KerasHub's `BertMaskedLM`).

    Args:
        texts: tf.data.Dataset of tf.string scalars, ReadResult of `read_text_corpus`, or list of str.
        tokenizer: a Tokenizer with cls/sep/pad/mask ids.
        sequence_length: int.
        batch_size: int.
        max_predictions: int masked slots per sequence; default `default_max_predictions(...)`.
        mask_rate: float, selection probability per token (per word with `whole_word_masking`).
        whole_word_masking: bool, mask all pieces of a word together.
        word_boundaries: `"pieces"` (a word is a piece and its `##` continuations) or `"whitespace"` (a word is
            what lies between spaces: pre-segmented text; see `Tokenizer.tokenize_with_word_starts`).
        next_sentence: bool, pair each two consecutive texts (label 0) or a text with a random one (label 1,
            probability 0.5) as `[CLS] a [SEP] b [SEP]`.
        truncate: "round_robin" or "longest_first".
        shuffle: bool, shuffle texts (buffer 10k) before batching.
        seed: optional int, shuffle/masking seed.
        drop_remainder: bool.

    Returns:
        Dataset of `(x, y, sample_weight)`: x = {"token_ids", "segment_ids", "padding_mask"} int32
        `(B, sequence_length)` (token_ids masked) + "mask_positions" int32 `(B, max_predictions)`;
        y = "mask_ids" int32 `(B, max_predictions)`; sample_weight = "mask_weights" float32 (same shape).
        With `next_sentence`, y = {"mask_ids", "next_sentence_label" (B,)} and sample_weight =
        {"mask_ids": mask_weights, "next_sentence_label": ones (B,)}.
    """
    if tokenizer.mask_id is None:
        raise ValueError(f"{tokenizer!r} has no [MASK] token; masked-LM needs one")
    max_predictions = max_predictions or default_max_predictions(sequence_length, mask_rate)
    ds = _as_dataset(texts)
    if next_sentence:
        # Pair consecutive texts first: shuffling before pairing would make every pair random.
        ds = _sentence_pairs(ds, seed)
    ds = _maybe_shuffle(ds, shuffle, seed)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    # With a seed, each batch's masks come from stateless draws seeded by (seed, batch index): the same
    # masks in every run, whatever the map parallelism, and after a resume that skips batches.
    ds = ds.enumerate()

    def encode(index, batch):
        stateless_seed = None if seed is None else tf.stack([tf.constant(seed, tf.int64), index])
        segments = [batch["a"], batch["b"]] if next_sentence else [batch]
        if whole_word_masking:
            ids, starts = zip(*[tokenizer.tokenize_with_word_starts(s, word_boundaries) for s in segments])
        else:
            ids, starts = [tokenizer.tokenize(s) for s in segments], None
        packed = pack_segments(list(ids), sequence_length, tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id,
                               truncate, aligned=[(list(starts), 1)] if whole_word_masking else None)
        x, word_starts = (packed[0], packed[1][0]) if whole_word_masking else (packed, None)
        x["token_ids"], x["mask_positions"], mask_ids, weights = mask_tokens(
            x["token_ids"], vocabulary_size=tokenizer.vocabulary_size, mask_id=tokenizer.mask_id,
            special_ids=tokenizer.special_ids, max_predictions=max_predictions, mask_rate=mask_rate,
            word_starts=word_starts, stateless_seed=stateless_seed)
        if not next_sentence:
            return x, mask_ids, weights
        label = batch["next_sentence_label"]
        return (x, {"mask_ids": mask_ids, "next_sentence_label": label},
                {"mask_ids": weights, "next_sentence_label": tf.ones_like(label, tf.float32)})

    return ds.map(encode, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def _sentence_pairs(texts, seed):
    """Consecutive pairs (label 0), half of them with `b` replaced by a random text (label 1)."""
    randoms = texts.shuffle(10_000, seed=seed).repeat()
    coins = tf.data.Dataset.random(seed=seed).map(lambda r: r % 2 == 1)

    def pair(ab, other, replace):
        b = tf.where(replace, other, ab[1])
        return {"a": ab[0], "b": b, "next_sentence_label": tf.cast(replace, tf.int32)}

    return tf.data.Dataset.zip(texts.batch(2, drop_remainder=True), randoms, coins).map(pair, AUTOTUNE)


def clm_dataset(texts, tokenizer, sequence_length=128, batch_size=32, shuffle=False, seed=None,
                drop_remainder=True, documents_per_step=256):
    """Causal-LM batches: documents + end token, concatenated and cut into full rows (no padding).

    Args:
        texts: tf.data.Dataset of tf.string scalars, ReadResult, or list of str.
        tokenizer: a Tokenizer with `end_token_id`.
        sequence_length: int, model input length T (rows of T + 1 tokens are cut).
        batch_size: int.
        shuffle: bool, shuffle the cut rows (buffer 10k).
        seed: optional int.
        drop_remainder: bool, default True: static batch dimension.
        documents_per_step: int, documents tokenized per map call.

    Returns:
        Dataset of `(x, y, sample_weight)`: x = {"token_ids", "padding_mask" (all ones)} int32 `(B, T)`,
        y = next tokens int32 `(B, T)`, sample_weight float32 ones `(B, T)`.
    """
    end = tokenizer.end_token_id
    if end is None:
        raise ValueError(f"{tokenizer!r} has no end token for causal-LM packing")

    def tokenize(batch):
        ids = tokenizer.tokenize(batch)
        ends = tf.RaggedTensor.from_tensor(tf.fill([ids.nrows(), 1], tf.cast(end, ids.dtype)))
        ends = ends.with_row_splits_dtype(ids.row_splits.dtype)  # SentencePiece gives int32 row splits
        return tf.concat([ids, ends], axis=1).flat_values

    tokens = _as_dataset(texts).batch(documents_per_step).map(tokenize, num_parallel_calls=AUTOTUNE)
    rows = _maybe_shuffle(chunk_stream(tokens, sequence_length + 1), shuffle, seed)
    rows = rows.batch(batch_size, drop_remainder=drop_remainder)
    return rows.map(causal_lm_split, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def classification_dataset(data, tokenizer, sequence_length=128, batch_size=32, truncate="round_robin",
                           shuffle=False, seed=None, drop_remainder=False):
    """Single-text or text-pair classification batches.

    Args:
        data: ReadResult of `read_classification`, or a Dataset of {"text", ["text_pair"], "label"}.
        tokenizer: a Tokenizer with cls/sep/pad ids.
        sequence_length, batch_size: ints.
        truncate: "round_robin" or "longest_first" for pairs.
        shuffle: bool (buffer 10k). seed: optional int. drop_remainder: bool.

    Returns:
        Dataset of `(x, y)`: x = {"token_ids", "segment_ids", "padding_mask"} int32 `(B, sequence_length)`,
        y = label int32 `(B,)`.
    """
    ds = _maybe_shuffle(_as_dataset(data), shuffle, seed).batch(batch_size, drop_remainder=drop_remainder)

    def encode(batch):
        names = ["text", "text_pair"] if "text_pair" in batch else ["text"]
        x = pack_segments([tokenizer.tokenize(batch[n]) for n in names], sequence_length, tokenizer.cls_id,
                          tokenizer.sep_id, tokenizer.pad_id, truncate)
        return x, batch["label"]

    return ds.map(encode, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def token_classification_dataset(data, tokenizer, sequence_length=128, batch_size=32, shuffle=False, seed=None,
                                 drop_remainder=False, ignore_label=IGNORE_LABEL):
    """Word-labelled (NER) batches with labels aligned to word pieces.

    Args:
        data: ReadResult of `read_conll`, or a Dataset of {"tokens": string (words,), "tags": int32 (words,)}.
        tokenizer: a Tokenizer with cls/sep/pad/unk ids.
        sequence_length, batch_size: ints. shuffle: bool. seed: optional int. drop_remainder: bool.
        ignore_label: int label of non-first pieces, [CLS]/[SEP] and padding (use
            `SparseCategoricalCrossentropy(ignore_class=-100)`, or the zero sample weights).

    Returns:
        Dataset of `(x, y, sample_weight)`: x = {"token_ids", "segment_ids", "padding_mask"} int32
        `(B, sequence_length)`, y = labels int32 `(B, sequence_length)` (the word's tag on its first piece,
        `ignore_label` elsewhere), sample_weight float32: 1.0 where y != ignore_label. Words past the
        truncation point are dropped.
    """
    ds = _maybe_shuffle(_as_dataset(data), shuffle, seed).ragged_batch(batch_size, drop_remainder=drop_remainder)

    def encode(batch):
        check = tf.debugging.assert_equal(batch["tokens"].row_lengths(), batch["tags"].row_lengths(),
                                          message="token_classification_dataset: tokens and tags differ in length")
        with tf.control_dependencies([check]):
            batch = {k: tf.identity(v) for k, v in batch.items()}
        ids, labels = align_word_labels(tokenizer.tokenize(batch["tokens"]), batch["tags"], tokenizer.unk_id,
                                        ignore_label)
        x, (labels,) = pack_segments([ids], sequence_length, tokenizer.cls_id, tokenizer.sep_id,
                                     tokenizer.pad_id, aligned=[([labels], ignore_label)])
        return x, labels, tf.cast(tf.not_equal(labels, ignore_label), tf.float32)

    return ds.map(encode, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def length_bucketed(dataset, boundaries, batch_size, sequence_length):
    """Re-batches `(x, y[, w])` batches so each batch holds examples of similar length, cut to its bucket.

    Sentence datasets are mostly short (SST-2: 13 word pieces on average, padded to 64), so a model step on
    full-length rows is mostly padding. Examples go into buckets by their real length (`padding_mask`); each
    batch comes from one bucket and every `(B, sequence_length)` tensor is cut to that bucket's length, so a
    step sees only a few distinct shapes (one XLA program each). Used for training batches only: the order of
    examples changes.

    Example (a `model.fit` input; the Trainer does this for `data.length_buckets`):
    >>> tok = tfm.data.WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "film"])
    >>> texts = tf.data.Dataset.from_tensor_slices({"text": ["good", "good film film film"] * 4, "label": [0, 1] * 4})
    >>> ds = length_bucketed(classification_dataset(texts, tok, sequence_length=16, batch_size=4), [4, 8], 4, 16)
    >>> sorted(x["token_ids"].shape[1] for x, y in ds)
    [4, 8]

    Args:
        dataset: batches whose `x` has `padding_mask` `(B, sequence_length)`.
        boundaries: increasing ints < sequence_length, the bucket lengths below the full length.
        batch_size: int, examples per batch (the same in every bucket; remainders are dropped).
        sequence_length: int, the padded length of the input batches.
    """
    lengths = sorted(set(int(b) for b in boundaries if 0 < int(b) < sequence_length)) + [sequence_length]
    table = tf.constant(lengths, tf.int32)

    def real_length(*example):
        return tf.reduce_sum(tf.cast(example[0]["padding_mask"], tf.int32))

    def cut(*batch):
        longest = tf.reduce_max(tf.reduce_sum(tf.cast(batch[0]["padding_mask"], tf.int32), axis=1))
        length = tf.gather(table, tf.searchsorted(table, longest[tf.newaxis], side="left"))[0]
        trim = lambda t: t[:, :length] if t.shape.rank == 2 and t.shape[1] == sequence_length else t  # noqa: E731
        return tf.nest.map_structure(trim, batch)

    ds = dataset.unbatch().bucket_by_sequence_length(
        real_length, bucket_boundaries=[b + 1 for b in lengths[:-1]], bucket_batch_sizes=[batch_size] * len(lengths),
        drop_remainder=True)
    return ds.map(cut, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
