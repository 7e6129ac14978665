"""The retrieval SavedModel (`tfm.export.retrieval`), served by a process that imports only tensorflow +
tensorflow_text (`tests/export/standalone_runner.py`), against `Index.search`, `RetrieveThenRead` and
`FaqAnswerer` in this process."""

import shutil

import numpy as np
import pytest

from tests.helpers import run_standalone
from tests.retrieval.test_grounded import FAQ, IDS, PASSAGES, QUESTIONS, READER, tiny_models
from tfm.export import read_metadata
from tfm.export.retrieval import export_retrieval
from tfm.retrieval.grounded import FaqAnswerer, RetrieveThenRead
from tfm.retrieval.index import Index

FAQ_QUESTIONS = ["I forgot my password", "when will my parcel arrive?", "do you take credit cards?",
                 "how do I cancel?", "what is the capital of Peru?", "tell me a joke", ""]
INVALID = b"caf\xc3\xa9 \xff\xfe broken \xc3"
BAD = [INVALID, ("Paris Müller 北京 🙂 shipping " * 2000)[:20_000], "", "English, 中文, العربية 🙂"]
K_READ, K_FAQ = 3, 4


def _strings(values):
    return np.array([v if isinstance(v, bytes) else v.encode("utf-8") for v in values], dtype=object)


def _threshold(scores):
    """The midpoint of the widest gap between sorted scores in the middle half: some questions answer, some
    do not, and none sits within float rounding of the threshold."""
    s = np.sort(np.asarray(scores, np.float64))
    lo, hi = len(s) // 4, max(len(s) * 3 // 4, len(s) // 4 + 1)
    gap = lo + int(np.argmax(np.diff(s)[lo:hi]))
    assert s[gap + 1] - s[gap] > 1e-3
    return float(s[gap] + s[gap + 1]) / 2


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("retrieval_exports")
    tok, embedder, reader = tiny_models()
    passages = Index.build(embedder, PASSAGES, ids=IDS)
    # The FAQ vectors are stored as int8: the export holds them dequantized.
    faq = Index.build(embedder, [q for _, q, _ in FAQ], ids=[i for i, _, _ in FAQ],
                      extra=[{"answer": a} for _, _, a in FAQ], dtype="int8")
    threshold = _threshold(faq.search(FAQ_QUESTIONS, k=1, embedder=embedder).scores[:, 0])
    built = {"reader": export_retrieval(passages, embedder, root / "build" / "reader", reader=reader,
                                        reader_tokenizer=tok, k=K_READ,
                                        **RetrieveThenRead(passages, embedder, reader, tok, **READER).reader_options()),
             "faq": export_retrieval(faq, embedder, root / "build" / "faq", k=K_FAQ, threshold=threshold)}
    dirs = {}
    for name, path in built.items():  # move the exports: nothing may point back at the build location
        shutil.move(str(path.parent), str(root / "served" / name))
        dirs[name] = str(root / "served" / name / path.name)
    requests = [
        ("reader", "search", {"query": _strings(QUESTIONS)}),
        ("reader", "answer", {"question": _strings(QUESTIONS)}),
        ("reader", "embed", {"query": _strings(QUESTIONS)}),
        ("faq", "search", {"query": _strings(FAQ_QUESTIONS)}),
        ("faq", "answer", {"question": _strings(FAQ_QUESTIONS)}),
        ("faq", "serving_default", {"question": _strings(FAQ_QUESTIONS)}),
        ("reader", "answer", {"question": _strings(BAD)}),
        ("faq", "answer", {"question": _strings(BAD)}),
        ("reader", "search", {"query": _strings(BAD)}),
        ("reader", "answer", {"question": _strings([])}),
        ("faq", "search", {"query": _strings([])}),
    ]
    out = run_standalone([{"dir": dirs[n], "signature": s, "inputs": i} for n, s, i in requests], root)
    for (name, signature, _), result in zip(requests, out["results"]):
        assert "error" not in result, (name, signature, result.get("error"))
    return {"tok": tok, "embedder": embedder, "reader": reader, "passages": passages, "faq": faq,
            "threshold": threshold, "dirs": dirs, "results": out["results"],
            "forbidden_modules": out["forbidden_modules"]}


def _text(values):
    return [v.decode("utf-8") for v in np.asarray(values).reshape(-1)]


def test_served_without_tfm(served):
    assert served["forbidden_modules"] == []


def test_search_equals_index_search(served):
    results = served["results"]
    for index_name, queries, k, result in (("passages", QUESTIONS, K_READ, results[0]),
                                           ("faq", FAQ_QUESTIONS, K_FAQ, results[3])):
        expected = served[index_name].search(queries, k=k, embedder=served["embedder"])
        assert result["scores"].shape == result["ids"].shape == result["texts"].shape == (len(queries), k)
        assert result["scores"].dtype == np.float32
        assert [_text(row) for row in result["ids"]] == expected.ids
        assert [_text(row) for row in result["texts"]] == expected.texts
        np.testing.assert_allclose(result["scores"], expected.scores, atol=1e-5, rtol=0)


def test_embed_equals_the_embedder(served):
    embedding = served["results"][2]["embedding"]
    assert embedding.shape == (len(QUESTIONS), 32)
    np.testing.assert_allclose(embedding, served["embedder"].embed(QUESTIONS), atol=1e-5, rtol=0)


def test_reader_answer_equals_retrieve_then_read(served):
    got = served["results"][1]
    expected = RetrieveThenRead(served["passages"], served["embedder"], served["reader"], served["tok"], k=K_READ,
                                **READER).answer(QUESTIONS)
    assert sorted(got) == ["answer", "end", "score", "source_id", "source_text", "start"]
    assert _text(got["answer"]) == [a["answer"] for a in expected]
    assert _text(got["source_id"]) == [a["source_id"] for a in expected]
    assert _text(got["source_text"]) == [a["source_text"] for a in expected]
    assert got["start"].tolist() == [a["start"] for a in expected]
    assert got["end"].tolist() == [a["end"] for a in expected]
    np.testing.assert_allclose(got["score"], [a["score"] for a in expected], atol=1e-5, rtol=0)
    assert len(set(_text(got["source_id"]))) >= 2


def test_faq_answer_equals_faq_answerer(served):
    got, default = served["results"][4], served["results"][5]
    expected = FaqAnswerer(served["faq"], served["embedder"], threshold=served["threshold"]).answer(FAQ_QUESTIONS)
    assert sorted(got) == ["answer", "answered", "score", "source_id"]
    assert got["answered"].tolist() == [a["answered"] for a in expected]
    assert 0 < sum(a["answered"] for a in expected) < len(FAQ_QUESTIONS)
    assert _text(got["answer"]) == [a["answer"] for a in expected]
    assert _text(got["source_id"]) == [a["source_id"] for a in expected]
    np.testing.assert_allclose(got["score"], [a["score"] for a in expected], atol=1e-5, rtol=0)
    assert all(np.array_equal(default[key], got[key]) for key in got)  # serving_default is answer


def test_bad_and_empty_batches(served):
    results = served["results"]
    reader_answer, faq_answer, search = results[6], results[7], results[8]
    assert reader_answer["score"].shape == faq_answer["score"].shape == (len(BAD),)
    assert search["ids"].shape == (len(BAD), K_READ) and np.isfinite(search["scores"]).all()
    for answer, start, end, text in zip(_text(reader_answer["answer"]), reader_answer["start"],
                                        reader_answer["end"], _text(reader_answer["source_text"])):
        assert text[start:end] == answer and text in PASSAGES
    assert set(_text(faq_answer["answer"])) <= {a for _, _, a in FAQ} | {""}
    empty_answer, empty_search = results[9], results[10]
    assert {k: v.shape for k, v in empty_answer.items()} == {k: (0,) for k in reader_answer}
    assert {k: v.shape for k, v in empty_search.items()} == {"ids": (0, K_FAQ), "texts": (0, K_FAQ),
                                                              "scores": (0, K_FAQ)}


def test_metadata(served):
    reader, faq = read_metadata(served["dirs"]["reader"]), read_metadata(served["dirs"]["faq"])
    assert (reader["task"], reader["mode"], reader["k"], reader["size"], reader["dim"]) == (
        "retrieval", "reader", K_READ, len(PASSAGES), 32)
    assert reader["reader"]["doc_stride"] == READER["doc_stride"] and reader["sequence_length"] == 64
    assert (faq["mode"], faq["k"], faq["threshold"], faq["index"]["dtype"]) == ("faq", K_FAQ, served["threshold"],
                                                                               "int8")
    assert sorted(faq["signatures"]) == ["answer", "embed", "search", "serving_default"]
    assert faq["signatures"]["answer"] == {"inputs": {"question": ["string", [None]]},
                                           "outputs": ["answer", "answered", "score", "source_id"]}
    assert reader["signatures"]["search"]["outputs"] == ["ids", "scores", "texts"]
