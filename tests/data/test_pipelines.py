import numpy as np
import tensorflow as tf

from tests.data_paths import shared_data
from tfm.data import classification_dataset, mlm_dataset, pack_segments, read_classification


def test_sst2_dev_classification_batches(wordpiece):
    data = read_classification(shared_data("sst2", "dev.tsv"))
    ds = classification_dataset(data, wordpiece, sequence_length=32, batch_size=100)
    x_spec, y_spec = ds.element_spec
    assert {k: (v.shape.as_list(), v.dtype) for k, v in x_spec.items()} == {
        "token_ids": ([None, 32], tf.int32), "segment_ids": ([None, 32], tf.int32),
        "padding_mask": ([None, 32], tf.int32)}
    assert (y_spec.shape.as_list(), y_spec.dtype) == ([None], tf.int32)
    texts = [t.decode() for t in data.dataset.map(lambda e: e["text"]).as_numpy_iterator()]
    expected = pack_segments([wordpiece.tokenize(texts)], 32, 2, 3, 0)["token_ids"].numpy()
    got = np.concatenate([x["token_ids"].numpy() for x, _ in ds])
    labels = np.concatenate([y.numpy() for _, y in ds])
    np.testing.assert_array_equal(got, expected)
    assert got.shape == (872, 32) and labels.sum() == 444  # 444 positive dev sentences


def test_text_pair_batches(tmp_path, wordpiece):
    (tmp_path / "p.tsv").write_text("a\tb\tlabel\nthe film\told movie\tyes\nwitty\tboring script\tno\n")
    data = read_classification(tmp_path / "p.tsv", text_column="a", text_pair_column="b")
    x, y = next(iter(classification_dataset(data, wordpiece, sequence_length=8, batch_size=2)))
    ids = [wordpiece.token_to_id(t) for t in ["the", "film", "old", "movie", "witty", "boring", "script"]]
    the, film, old, movie, witty, boring, script = ids
    assert x["token_ids"].numpy().tolist() == [[2, the, film, 3, old, movie, 3, 0],
                                               [2, witty, 3, boring, script, 3, 0, 0]]
    assert x["segment_ids"].numpy().tolist() == [[0, 0, 0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1, 0, 0]]
    assert y.numpy().tolist() == [1, 0]  # labels sorted: no=0, yes=1


def test_one_tokenizer_feeds_several_whole_word_pipelines(wordpiece, english_dev):
    totals = []
    for seed in (1, 2):  # each builds its own graph with the same tokenizer object
        ds = mlm_dataset(english_dev[:64], wordpiece, sequence_length=32, batch_size=32, whole_word_masking=True, seed=seed)
        totals.append(sum(int(x["padding_mask"].numpy().sum()) for x, _, _ in ds))
    assert totals[0] == totals[1] == sum(min(len(r) + 2, 32) for r in wordpiece.tokenize(english_dev[:64]).to_list())
