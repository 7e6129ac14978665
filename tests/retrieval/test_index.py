"""tfm.retrieval.index: exact search against a brute-force numpy reference, chunk / shard invariance, quantized
storage bounds, round trips, bad input, the `tfm index` commands and a real-model check with all-MiniLM-L6-v2."""

import json
import os
import warnings

import keras
import numpy as np
import pytest

import tfm
import tfm.cli
from tfm.errors import InputError
from tfm.retrieval import Index, SearchResult, merge_results, shard_range
from tfm.retrieval.commands import load_embedder

WORDS = ("the cat dog sat ran on mat log a red blue fish swam in sea bird flew over tree green small big house "
         "car drove road fast slow").split()


def brute_force(vectors, queries, k):
    """Reference: float64 score matrix rounded to float32, stable argsort (ties -> lower row)."""
    scores = (queries.astype("float64") @ vectors.astype("float64").T).astype("float32")
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), order


def random_corpus(n=300, h=24, q=9, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h)).astype("float32")
    if n >= 60:
        x[50:60] = x[40:50]  # exact duplicates: ties must go to the lower row
    return x, rng.standard_normal((q, h)).astype("float32")


def tiny_embedder(seed=0, num_layers=2, vocabulary=WORDS, sequence_length=32):
    keras.utils.set_random_seed(seed)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *vocabulary]
    backbone = tfm.models.BertBackbone.from_preset("bert_tiny", vocabulary_size=len(vocab), num_layers=num_layers)
    return tfm.tasks.TextEmbedder(backbone, tokenizer=tfm.data.WordPieceTokenizer(vocab),
                                  sequence_length=sequence_length)


TEXTS = ["the cat sat on the mat", "a dog ran on the road", "the fish swam in the sea", "a bird flew over the tree",
         "the red car drove fast", "a small green house", "the big blue fish", "the dog sat on a log"]


def test_search_equals_brute_force_and_ties_go_to_the_lower_row():
    x, q = random_corpus()
    result = Index.from_vectors(x).search(q, k=12)
    scores, rows = brute_force(x, q, 12)
    np.testing.assert_array_equal(result.rows, rows)
    np.testing.assert_allclose(result.scores, scores, rtol=0, atol=1e-6)
    assert result.scores.dtype == np.float32 and result.rows.dtype == np.int64 and result.rows.shape == (9, 12)
    assert result.ids == [[str(r) for r in row] for row in rows]
    # A query equal to a duplicated row: its copy at row 40 wins over row 50 (same score).
    top = Index.from_vectors(x).search(x[[50]], k=2)
    assert top.rows.tolist() == [[40, 50]] and top.scores[0, 0] == top.scores[0, 1]


def test_results_do_not_depend_on_the_chunk_size():
    x, q = random_corpus(n=301)
    index = Index.from_vectors(x)
    base = index.search(q, k=10, chunk_size=len(x))
    for chunk in (1, 7, 64, 1000):
        other = index.search(q, k=10, chunk_size=chunk)
        np.testing.assert_array_equal(other.rows, base.rows)
        np.testing.assert_array_equal(other.scores, base.scores)  # bit for bit


def test_float16_and_int8_scores_stay_within_the_derived_bounds():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 48)).astype("float32")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[::20] + 0.05 * rng.standard_normal((20, 48)).astype("float32")  # near copies of rows 0, 20, ...
    exact = (q.astype("float64") @ x.astype("float64").T)
    h = x.shape[1]
    bounds = {  # per (query, row); + 1e-6 for the float32 rounding of both scores
        "float16": np.linalg.norm(q, axis=1)[:, None] * (2.0 ** -11 * np.linalg.norm(x, axis=1) + 2.0 ** -25 *
                                                          np.sqrt(h))[None] + 1e-6,
        "int8": np.abs(q).sum(axis=1)[:, None] * (np.abs(x).max(axis=1) / 254)[None] + 1e-6,
    }
    for dtype, bound in bounds.items():
        index = Index.from_vectors(x, dtype=dtype)
        result = index.search(q, k=len(x))
        error = np.abs(result.scores - np.take_along_axis(exact, result.rows, 1))
        assert (error <= np.take_along_axis(bound, result.rows, 1)).all(), (dtype, error.max())
        assert error.max() > 0  # it is quantized
        np.testing.assert_array_equal(result.rows[:, 0], np.arange(0, 400, 20))  # top-1 unchanged
    assert Index.from_vectors(x, dtype="int8")._vectors.dtype == np.int8
    step = np.abs(x).max(axis=1, keepdims=True) / 127
    assert (np.abs(Index.from_vectors(x, dtype="int8").vectors() - x) <= step / 2 * 1.0001).all()


def test_shards_merge_to_the_single_index_result():
    x, q = random_corpus(n=103)
    q = np.concatenate([q, x[[52, 41]]])  # exact ties across shards (rows 40-49 = rows 50-59)
    texts = [f"passage {i}" for i in range(len(x))]
    whole = Index.from_vectors(x, texts=texts).search(q, k=15)
    assert whole.rows[-2:, :2].tolist() == [[42, 52], [41, 51]]
    bounds = [(0, 9), (9, 45), (45, 103)]  # uneven
    shards = [Index.from_vectors(x[a:b], texts=texts[a:b], row_offset=a) for a, b in bounds]
    merged = merge_results([s.search(q, k=15, chunk_size=5) for s in shards], k=15)
    for field in SearchResult._fields:
        assert np.array_equal(getattr(merged, field), getattr(whole, field)), field
    local = [Index.from_vectors(x[a:b], texts=texts[a:b], ids=[str(i) for i in range(a, b)]) for a, b in bounds]
    by_offset = merge_results([s.search(q, k=15) for s in local], k=15, offsets=[a for a, _ in bounds])
    assert by_offset.rows.tolist() == whole.rows.tolist() and by_offset.ids == whole.ids
    assert [shard_range(103, 3, i) for i in range(3)] == [(0, 34), (34, 68), (68, 103)]


def test_save_load_round_trip(tmp_path):
    x, q = random_corpus(n=50)
    extra = [{"answer": f"a{i}"} for i in range(50)]
    for dtype in ("float32", "float16", "int8"):
        index = Index.from_vectors(x, texts=[f"t{i}\tü" for i in range(50)], extra=extra, dtype=dtype,
                                   directory=tmp_path / dtype)
        loaded = Index.load(tmp_path / dtype)
        assert isinstance(loaded._vectors, np.memmap) and loaded.dtype == dtype and loaded.size == 50
        assert loaded.records == index.records and loaded.records[3] == {"id": "3", "text": "t3\tü", "answer": "a3"}
        a, b = index.search(q, k=5), loaded.search(q, k=5, chunk_size=3)
        np.testing.assert_array_equal(a.scores, b.scores)
        assert a.rows.tolist() == b.rows.tolist() and a.texts == b.texts
        loaded.save(tmp_path / dtype)  # over its own memory-mapped files
        assert Index.load(tmp_path / dtype).search(q, k=5).rows.tolist() == a.rows.tolist()
    assert sorted(os.listdir(tmp_path / "int8")) == ["index.json", "records.jsonl", "scales.npy", "vectors.npy"]
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}: no index.json"):
        Index.load(tmp_path)


def test_k_larger_than_the_index_empty_queries_and_bad_arrays():
    x, q = random_corpus(n=5)
    index = Index.from_vectors(x)
    assert index.search(q, k=50).rows.shape == (9, 5)
    empty = index.search(np.zeros((0, 24), "float32"), k=3)
    assert empty.scores.shape == (0, 3) and empty.ids == []
    assert index.search([], k=3).rows.shape == (0, 3)
    with pytest.raises(InputError, match=r"shape \(Q, 24\), got \(2, 3\)"):
        index.search(np.zeros((2, 3)), k=1)
    with pytest.raises(InputError, match="wrap it in a list"):
        index.search("one string", k=1)
    with pytest.raises(InputError, match=r"duplicate id '7' at rows 0 and 2"):
        Index.from_vectors(x[:3], ids=["7", "8", "7"])


def test_read_corpus_formats_and_bad_lines(tmp_path):
    (tmp_path / "c.txt").write_text("first passage\n\nsecond\n   \nthird\n", encoding="utf-8")
    with pytest.warns(UserWarning, match=r"c\.txt: skipped 2 empty line\(s\): line 2, 4"):
        corpus = Index.read_corpus(tmp_path / "c.txt")
    assert (corpus.texts, corpus.ids, corpus.skipped) == (["first passage", "second", "third"], ["1", "3", "5"],
                                                          [2, 4])
    (tmp_path / "c.tsv").write_text("id\ttext\tanswer\nq1\tHow?\tLike this.\nq2\t\tnone\nq3\tWhy\tBecause\n")
    with pytest.warns(UserWarning, match="line 3"):
        texts, ids, extra = Index.read_corpus(tmp_path / "c.tsv")
    assert (texts, ids, extra) == (["How?", "Why"], ["q1", "q3"], [{"answer": "Like this."}, {"answer": "Because"}])
    (tmp_path / "c.jsonl").write_text('{"id": 5, "text": "five", "answer": "x"}\n{"text": "no id"}\n')
    assert tuple(Index.read_corpus(tmp_path / "c.jsonl")) == (["five", "no id"], ["5", "2"], [{"answer": "x"}, {}])
    bad = {"dup.tsv": ("id\ttext\na\tx\nb\ty\na\tz\n", r"dup\.tsv: duplicate id 'a' on lines 2 and 4"),
           "cols.tsv": ("id\ttext\na\tx\tq\n", r"cols\.tsv:2: 3 tab-separated field\(s\), the header has 2"),
           "head.tsv": ("id\tbody\na\tx\n", r"head\.tsv:1: no column 'text' in the header \['id', 'body'\]"),
           "bad.jsonl": ('{"text": "a"}\n{"text": \n', r"bad\.jsonl:2: not valid JSON"),
           "num.jsonl": ('{"text": 3}\n', r"num\.jsonl:1: 'text' is int, not a string")}
    for name, (content, message) in bad.items():
        (tmp_path / name).write_text(content)
        with pytest.raises(InputError, match=message):
            Index.read_corpus(tmp_path / name)
    (tmp_path / "latin1.txt").write_bytes(b"ok\ncaf\xe9\n")
    with pytest.raises(InputError, match=r"latin1\.txt:2: not UTF-8 \(byte 0xe9"):
        Index.read_corpus(tmp_path / "latin1.txt")
    with pytest.raises(InputError, match="cannot tell the corpus format"):
        Index.read_corpus(tmp_path / "c.csv")


def test_build_with_a_tiny_embedder_search_and_refuse_other_embedders(tmp_path):
    embedder = tiny_embedder()
    with pytest.warns(UserWarning, match=r"skipped 1 empty text\(s\): ids 2"):
        index = Index.build(embedder, TEXTS[:2] + [" "] + TEXTS[2:], batch_size=3, directory=tmp_path / "i",
                            progress=True)
    assert index.size == len(TEXTS) and index.metadata["skipped_empty"] == 1 and index.ids[2] == "3"
    expected = embedder.embed(TEXTS)
    np.testing.assert_allclose(index.vectors(), expected, atol=1e-6)
    queries = ["the cat sat on a mat", "fish in the sea"]
    result = Index.load(tmp_path / "i").search(queries, k=3, embedder=embedder)
    reference = embedder.embed(queries) @ expected.T
    np.testing.assert_allclose(result.scores, np.sort(reference, axis=1)[:, ::-1][:, :3], atol=1e-6)
    assert result.rows[:, 0].tolist() == np.argmax(reference, axis=1).tolist()
    meta = json.loads((tmp_path / "i" / "index.json").read_text())
    assert meta["embedder"]["backbone_config"]["num_layers"] == 2 and len(meta["embedder"]["probe"]) == 128
    loaded = Index.load(tmp_path / "i")
    others = {"other weights": tiny_embedder(seed=1), "num_layers 2 vs 1": tiny_embedder(num_layers=1),
              "another tokenizer vocabulary": tiny_embedder(vocabulary=WORDS[::-1])}
    for reason, other in others.items():
        with pytest.raises(InputError, match="built by TextEmbedder\\(BertBackbone: num_layers 2") as error:
            loaded.search(queries, k=1, embedder=other)
        assert reason in str(error.value) and str(tmp_path / "i") in str(error.value)
    with pytest.raises(InputError, match="text queries need embedder="):
        loaded.search(queries, k=1)


def test_long_queries_are_truncated_with_one_warning():
    embedder = tiny_embedder(sequence_length=8)  # 6 tokens + [CLS] + [SEP]
    index = Index.build(embedder, TEXTS)
    long_query = "the cat sat on the mat a dog ran on the road"
    with pytest.warns(UserWarning, match=r"1 of 2 queries are longer than the embedder's sequence_length=8 tokens"):
        result = index.search([long_query, "the cat"], k=2, embedder=embedder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the first 6 tokens: no truncation, no warning
        cut = index.search(["the cat sat on the mat"], k=2, embedder=embedder)
    np.testing.assert_array_equal(result.scores[:1], cut.scores)
    assert result.rows[:1].tolist() == cut.rows.tolist()


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return load_embedder(str(minilm_dir))


SENTENCES = {
    "How do I reset my password?": "I forgot my login password, how can I change it?",
    "Where is my package?": "My order has not arrived yet, can I track the delivery?",
    "Can I get a refund for a broken item?": "The product came damaged and I want my money back.",
    "What are your opening hours?": "When is the store open during the week?",
    "How do I cancel my subscription?": "I want to stop my monthly plan.",
    "Do you ship to other countries?": "Is international delivery available?",
    "The cat is sleeping on the sofa.": "A kitten naps on the couch.",
    "It is raining heavily in the city today.": "There is a downpour downtown this afternoon.",
    "The stock market fell sharply this morning.": "Share prices dropped a lot early today.",
    "She plays the violin in an orchestra.": "The woman is a violinist in a symphony.",
    "He is cooking pasta for dinner.": "The man prepares spaghetti for the evening meal.",
    "The train to Paris was delayed by an hour.": "Our Paris-bound train arrived sixty minutes late.",
    "Photosynthesis turns sunlight into chemical energy.": "Plants convert light to energy.",
    "The football match ended in a draw.": "The soccer game finished with a tied score.",
    "My laptop battery drains very quickly.": "The notebook's battery runs out fast.",
    "Children are playing in the park.": "Kids have fun at the playground.",
    "The museum displays ancient Egyptian art.": "Old artifacts from Egypt are exhibited at the gallery.",
    "I need to renew my passport.": "My travel document expires and must be replaced.",
    "The bakery sells fresh bread every morning.": "Each day the baker offers newly baked loaves.",
    "The volcano erupted last night.": "Lava poured out of the mountain overnight.",
}


def test_real_minilm_paraphrases_find_their_source(minilm, minilm_dir):
    assert minilm._tfm_source == str(minilm_dir) and minilm.output_shape == (None, 384)
    corpus, queries = list(SENTENCES), list(SENTENCES.values())
    index = Index.build(minilm, corpus, batch_size=8)
    result = index.search(queries, k=3, embedder=minilm)
    assert result.rows[:, 0].tolist() == list(range(20))
    expected = np.take_along_axis(minilm.embed(queries) @ minilm.embed(corpus).T, result.rows, 1)
    np.testing.assert_allclose(result.scores, expected, atol=1e-6)
    int8 = Index.build(minilm, corpus, dtype="int8").search(queries, k=1, embedder=minilm)
    assert int8.rows[:, 0].tolist() == list(range(20))


def test_cli_build_and_search(tmp_path, monkeypatch, capsys, minilm, minilm_dir):
    loaded = []
    monkeypatch.setattr("tfm.retrieval.commands.load_embedder", lambda source: loaded.append(source) or minilm)
    rows = [f"faq{i}\t{q}\t{a}" for i, (q, a) in enumerate(list(SENTENCES.items())[:6])]
    (tmp_path / "faq.tsv").write_text("id\ttext\tanswer\n" + "\n".join(rows[:3] + [""] + rows[3:]) + "\n")
    argv = ["index", "build", str(tmp_path / "faq.tsv"), "--embedder", str(minilm_dir), "--output",
            str(tmp_path / "idx"), "--dtype", "float16", "--quiet"]
    with pytest.warns(UserWarning, match="line 5"):
        assert tfm.cli.main(argv) == 0
    assert "indexed 6 passages (384-d float16)" in capsys.readouterr().out
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["embedder_source"] == os.path.abspath(minilm_dir) and meta["skipped_empty"] == 1
    assert tfm.cli.main(argv) == 2 and "--overwrite" in capsys.readouterr().err
    assert tfm.cli.main(["index", "search", str(tmp_path / "idx"), "I forgot my password", "-k", "2", "--json"]) == 0
    hit = json.loads(capsys.readouterr().out)["results"][0]
    assert (hit["id"], hit["answer"], hit["rank"]) == ("faq0", SENTENCES["How do I reset my password?"], 1)
    assert loaded[-1] == meta["embedder_source"]  # the recorded embedder by default
    assert tfm.cli.main(["index", "search", str(tmp_path), "hi"]) == 2
    assert f"tfm index: error: {tmp_path}: no index.json" in capsys.readouterr().err
