"""Every dataset the Trainer feeds has a static batch dimension (TPU): train batches drop the remainder, eval
batches are padded with zero-weight rows (and whole zero-weight batches up to a multiple of the replicas), and
the metric sums over the padded eval data equal those over the unpadded data."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tests.training.test_finetune import _config, _squad_file
from tfm.recipes import corpus_texts, get_recipe
from tfm import data as tfm_data
from tfm.training import task_data
from tfm.data.wordpiece import RESERVED_TOKENS
from tfm.training.experiment import build_task, dataset_fns

BATCH = 4
WORDS = "the cat dog sat ran on under mat rug big small red green house tree".split()


def _sentences(n, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, int(rng.integers(3, 9)))) for _ in range(n)]


def _task(tmp_path, kind):
    """`(cfg, train TaskData, eval TaskData, number of eval rows)` for a tiny hand-written dataset of `kind`."""
    gpt = {"family": "gpt", "preset": "gpt2_small"}
    if kind in ("masked_lm", "masked_lm_nsp", "causal_lm"):
        corpus = tmp_path / "corpus.txt"
        corpus.write_text("\n".join(_sentences(22)) + "\n")
        task = {"name": "masked_lm", "next_sentence": kind == "masked_lm_nsp", "max_predictions": 4}
        task = {"name": "causal_lm"} if kind == "causal_lm" else task
        cfg = _config(tmp_path, task, [corpus], [corpus], model=gpt if kind == "causal_lm" else None,
                      data={"sequence_length": 12, "tokenizer": {"vocabulary_size": 80}})
        return cfg, None, None
    if kind == "text_classifier":
        path = tmp_path / "cls.tsv"
        path.write_text("label\tsentence\n" + "".join(f"{i % 2}\t{s}\n" for i, s in enumerate(_sentences(11))))
        data = {"format": "tsv"}
    elif kind == "token_classifier":
        path = tmp_path / "ner.txt"
        path.write_text("".join("".join(f"{w} {'B-X' if w in ('cat', 'dog') else 'O'}\n" for w in s.split()) + "\n"
                                for s in _sentences(9)))
        data = {"format": "conll"}
    elif kind == "span_qa":
        path = _squad_file(tmp_path / "qa.json")
        kind = {"name": "span_qa", "doc_stride": 8, "max_query_length": 8}
        data = {"format": "squad"}
    else:
        path = tmp_path / "mc.jsonl"
        path.write_text("".join(json.dumps({"context": s, "choices": ["a cat", "a dog", "a rug"], "label": i % 3}) + "\n"
                                for i, s in enumerate(_sentences(7))))
        data = {"format": "jsonl"}
    cfg = _config(tmp_path, kind, [path], [path], data={**data, "sequence_length": 24, "tokenizer": {"vocabulary_size": 120}})
    split = get_recipe(cfg.task.name).read_split(cfg, cfg.data.train, "train")
    return cfg, split, split


def _unpadded_eval(cfg, tokenizer, eval_data):
    """The eval batches as they were before padding (the short last batch kept)."""
    t, seq = cfg.task, cfg.data.sequence_length
    if t.name == "masked_lm":
        texts = corpus_texts(cfg, cfg.data.eval).dataset
        return tfm_data.mlm_dataset(texts, tokenizer, seq, BATCH, max_predictions=t.max_predictions,
                                    mask_rate=t.mask_rate, whole_word_masking=t.whole_word_masking,
                                    next_sentence=t.next_sentence, seed=cfg.trainer.seed)
    if t.name == "causal_lm":
        return tfm_data.clm_dataset(corpus_texts(cfg, cfg.data.eval).dataset, tokenizer, seq, BATCH,
                                    drop_remainder=False)
    return get_recipe(cfg.task.name).labelled_dataset(cfg, tokenizer, eval_data, BATCH, False)


def _batch_dims(dataset):
    return {spec.shape[0] for spec in tf.nest.flatten(dataset.element_spec)}


def _metric_sums(model, dataset):
    totals = {}
    for batch in dataset:
        x, y, w = (tuple(batch) + (None,))[:3]
        for key, value in model.metric_sums(y, model(x, training=False), w).items():
            totals[key] = totals.get(key, 0.0) + float(value)
    return totals


def _weights(dataset):
    """Per-batch total sample weight (the first weight tensor of each batch)."""
    return [float(tf.reduce_sum(tf.nest.flatten(batch[2])[0])) for batch in dataset]


@pytest.mark.parametrize("kind", ["masked_lm", "causal_lm", "text_classifier", "span_qa"] + [
    pytest.param(k, marks=pytest.mark.slow) for k in ("masked_lm_nsp", "token_classifier", "multiple_choice")])
def test_trainer_datasets_have_static_batches_and_padding_leaves_metric_sums_unchanged(tmp_path, kind):
    cfg, train_data, eval_data = _task(tmp_path, kind)
    # A fixed vocabulary (words outside it are [UNK]): no tokenizer training in this test.
    tokenizer = tfm_data.WordPieceTokenizer(list(RESERVED_TOKENS) + WORDS + ["a", "b"])
    train_fn, eval_fn = dataset_fns(cfg, tokenizer, train_data, eval_data)
    two_replicas = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=2)
    evals = {}
    assert _batch_dims(train_fn(BATCH, None)) == {BATCH}
    for name, ctx in (("one", None), ("two", two_replicas)):
        dataset = eval_fn(BATCH, ctx)
        assert _batch_dims(dataset) == {BATCH}
        evals[name] = list(dataset)  # iterated once: an NSP dataset draws new random pairs on each pass
    padded, unpadded = evals["one"], list(_unpadded_eval(cfg, tokenizer, eval_data))
    sizes = [int(tf.shape(tf.nest.flatten(b[0])[0])[0]) for b in unpadded]
    assert sizes[-1] < BATCH  # the data leaves a short last batch, which padding fills
    # Every padded row has weight zero: same number of batches, same weight per batch.
    real = [float(tf.reduce_sum(tf.nest.flatten(b[2])[0])) if len(b) == 3 else float(n) for b, n in zip(unpadded, sizes)]
    assert _weights(padded) == real
    # Two replicas fed by one pipeline: the batch count rounds up to even with all-zero batches.
    paired = _weights(evals["two"])
    assert len(paired) == len(real) + len(real) % 2 and paired[: len(real)] == real and sum(paired) == sum(real)

    task_kwargs = {}
    if kind in ("text_classifier", "token_classifier"):
        task_kwargs["label_names"] = list(train_data.result.labels.names)
    model = build_task(cfg, tokenizer, **task_kwargs, num_choices=3)
    expected, actual = _metric_sums(model, unpadded), _metric_sums(model, padded)
    assert sorted(actual) == sorted(expected)
    for key in expected:
        if "loss" in key:
            assert actual[key] == pytest.approx(expected[key], rel=1e-6), key
        else:  # weights and hit counts are integers: exactly equal
            assert actual[key] == expected[key], key


def test_static_batches_fills_from_own_rows_with_zero_weight():
    x = {"ids": tf.constant([[1, 2], [3, 4], [5, 6]])}
    ds = tf.data.Dataset.from_tensor_slices((x, tf.constant([7, 8, 9]))).batch(2)
    batches = list(task_data.static_batches(ds, 2, replicas=3))
    assert [b[0]["ids"].numpy().tolist() for b in batches] == [[[1, 2], [3, 4]], [[5, 6], [5, 6]], [[1, 2], [3, 4]]]
    assert [b[1].numpy().tolist() for b in batches] == [[7, 8], [9, 9], [7, 8]]
    assert [b[2].numpy().tolist() for b in batches] == [[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]]


def test_length_buckets_cut_each_batch_to_its_bucket_and_keep_every_example():
    lengths = [3, 14, 5, 9, 2, 16, 7, 4, 12, 6, 3, 15, 8, 2, 10, 5]
    mask = np.array([[1] * n + [0] * (16 - n) for n in lengths], np.int32)
    ids = mask * (np.arange(16)[None, :] + 100 * np.arange(len(lengths))[:, None])  # row r holds 100r + position
    tags = np.where(mask == 1, 7, -100).astype(np.int32)
    ds = tf.data.Dataset.from_tensor_slices(({"token_ids": ids, "padding_mask": mask}, tags,
                                             np.arange(len(lengths), dtype=np.int32))).batch(4)
    batches = list(task_data.length_bucketed(ds, [4, 8], batch_size=2, sequence_length=16).as_numpy_iterator())
    rows = []
    for x, y, row in batches:
        width = x["token_ids"].shape[1]
        assert width in (4, 8, 16) and y.shape == (2, width) and x["padding_mask"].shape == (2, width)
        real = x["padding_mask"].sum(axis=1)
        assert real.max() <= width and (width == 4 or real.max() > {8: 4, 16: 8}[width])  # the smallest bucket
        for r, n, token_ids in zip(row, real, x["token_ids"]):
            assert n == lengths[r] and token_ids[:n].tolist() == list(range(100 * r, 100 * r + n))
        rows += row.tolist()
    # Buckets of 5 (<= 4), 5 (5..8) and 6 (9..16) examples: full batches of 2 only (one example left over in each
    # of the first two), none doubled.
    assert len(rows) == len(set(rows)) == 14
