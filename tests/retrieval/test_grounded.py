"""Grounded answers: RetrieveThenRead against a brute-force reference, FaqAnswerer on a real FAQ with MiniLM."""

import keras
import numpy as np
import pytest

import tfm
from tests.export import builders
from tfm.data import WordPieceTokenizer
from tfm.data.squad import SquadExample, squad_features
from tfm.errors import InputError
from tfm.retrieval.grounded import DEFAULT_FAQ_THRESHOLD, FaqAnswerer, RetrieveThenRead, best_over_passages
from tfm.retrieval.index import Index

PASSAGES = [
    "Ada Lovelace lived in London with her family and wrote the first program.",
    "John Smith flew from Paris to Berlin on Monday.",
    "Maria Garcia works for the United Nations in Geneva.",
    "The café near the station serves coffee from seven in the morning until late at night, every day "
    "of the week; on Sundays it opens at nine. Müller and Öztürk met there.",
    "Returns are accepted within thirty days when the item is unused.",
    "Standard shipping takes three to five business days.",
]
IDS = ["ada", "john", "maria", "cafe", "returns", "shipping"]
QUESTIONS = ["Where did Ada Lovelace live?", "When does the café open on Sundays?", "Who works in Geneva?",
             "How long does shipping take?", "", "北京?"]
READER = {"sequence_length": 32, "doc_stride": 8, "max_query_length": 8, "max_answer_length": 6}


def tiny_models(seed=0):
    """(tokenizer, embedder, reader): one-layer BERTs of width 32; the reader's head spread (std 1) so its
    spans differ per passage."""
    keras.utils.set_random_seed(seed)
    tok = WordPieceTokenizer.train((PASSAGES + QUESTIONS + [q for _, q, _ in FAQ]) * 5, vocabulary_size=150)
    embedder = tfm.tasks.TextEmbedder(builders.bert(tok), tokenizer=tok, sequence_length=64)
    reader = builders.spread_head(tfm.tasks.SpanQA(builders.bert(tok)), "span_logits", seed=seed)
    return tok, embedder, reader


@pytest.fixture(scope="module")
def tiny():
    tok, embedder, reader = tiny_models()
    return tok, embedder, reader, Index.build(embedder, PASSAGES, ids=IDS)


def reference_read(question, passage, reader, tok, sequence_length, doc_stride, max_query_length,
                   max_answer_length):
    """Every window of (question, passage) through `reader`, every context span scored by a Python loop:
    list of (score, text, start char, end char) per window, and the window null scores."""
    f = squad_features([SquadExample("q", question, passage, [])], tok, sequence_length, doc_stride, max_query_length)
    out = reader(f.features, training=False)
    s, e = np.asarray(out["start_logits"]), np.asarray(out["end_logits"])
    spans, nulls = [], []
    for w in range(len(f)):
        nulls.append(s[w, 0] + e[w, 0])
        context = np.flatnonzero(f.token_offsets[w, :, 0] >= 0).tolist()
        for a in context:
            for b in context:
                if a <= b < a + max_answer_length:
                    spans.append((s[w, a] + e[w, b], f.answer_text(w, a, b), f.token_offsets[w, a, 0],
                                  f.token_offsets[w, b, 1]))
    return spans, nulls


def reference_answer(question, embedder, reader, tok, k):
    """Top-k by a NumPy dot product, then the first best span over the passages' windows."""
    sims = embedder.embed(PASSAGES) @ embedder.embed([question])[0]
    best, nulls = None, []
    for j in np.argsort(-sims, kind="stable")[:k]:
        spans, window_nulls = reference_read(question, PASSAGES[j], reader, tok, **READER)
        nulls += window_nulls
        for score, text, begin, end in spans:
            if best is None or score > best[0]:  # strict: the first maximum wins
                best = (score, text, IDS[j], PASSAGES[j], begin, end)
    return best, min(nulls)


@pytest.mark.parametrize("k", [3, 6])  # 6: every passage, the café one too (read in several windows)
def test_retrieve_then_read_equals_brute_force_reference(tiny, k):
    tok, embedder, reader, index = tiny
    rtr = RetrieveThenRead(index, embedder, reader, tok, k=k, **READER)
    got = rtr.answer(QUESTIONS)
    assert len(got) == len(QUESTIONS)
    windows = len(squad_features([SquadExample("q", QUESTIONS[1], PASSAGES[3], [])], tok, 32, 8, 8))
    assert windows >= 3
    sources = set()
    for question, answer in zip(QUESTIONS, got):
        (score, text, source, passage, begin, end), _ = reference_answer(question, embedder, reader, tok, k)
        assert (answer["answer"], answer["source_id"], answer["source_text"]) == (text, source, passage)
        assert abs(answer["score"] - score) < 1e-5
        assert (answer["start"], answer["end"]) == (begin, end)
        assert answer["source_text"][answer["start"]:answer["end"]] == answer["answer"] != ""
        assert len(answer["passages"]) == k and answer["source_id"] in answer["passages"]
        sources.add(source)
    assert len(sources) >= 2  # the winning passage is not always the same one


def test_no_answer_reader_answers_empty_with_the_smallest_null_score(tiny):
    tok, embedder, reader, index = tiny
    rtr = RetrieveThenRead(index, embedder, reader, tok, k=2, allow_no_answer=True, no_answer_threshold=-1e9,
                           **READER)
    for question, answer in zip(QUESTIONS[:3], rtr.answer(QUESTIONS[:3])):
        _, min_null = reference_answer(question, embedder, reader, tok, 2)
        assert (answer["answer"], answer["source_id"], answer["source_text"]) == ("", "", "")
        assert (answer["start"], answer["end"]) == (-1, -1)
        assert abs(answer["score"] - min_null) < 1e-5


def test_best_over_passages_takes_the_first_best_answered_passage():
    found = np.array([[True, True, True], [False, True, True], [False, False, False]])
    scores = np.array([[1.0, 3.0, 3.0], [9.0, 2.0, 5.0], [4.0, -1.0, 2.0]], np.float32)
    best, answered, score = best_over_passages(found, scores)
    assert best.tolist() == [1, 2, 0] and answered.tolist() == [True, True, False]
    assert score.tolist() == [3.0, 5.0, -1.0]


def test_grounded_bad_input(tiny):
    tok, embedder, reader, index = tiny
    with pytest.raises(InputError, match="list of questions"):
        RetrieveThenRead(index, embedder, reader, tok, **READER).answer("Where?")
    assert RetrieveThenRead(index, embedder, reader, tok, k=50, **READER).k == len(PASSAGES)
    with pytest.raises(InputError, match="k must be >= 1"):
        RetrieveThenRead(index, embedder, reader, tok, k=0)
    with pytest.raises(InputError, match=r"record 0 \(id 'ada'\) has no string 'answer' field"):
        FaqAnswerer(index, embedder)


# A hand-written customer-service FAQ: (id, stored question, answer).
FAQ = [
    ("password", "How do I reset my password?",
     "Click 'Forgot password' on the sign-in page and follow the link we email you."),
    ("tracking", "How can I track my order?", "Open 'My orders' and click the tracking number of the shipment."),
    ("returns", "What is your return policy?", "Unused items can be returned within 30 days for a full refund."),
    ("shipping", "How long does shipping take?", "Standard shipping takes 3 to 5 business days."),
    ("address", "Can I change my delivery address?", "Yes, until the order ships: edit it under 'My orders'."),
    ("payment", "Which payment methods do you accept?", "We accept Visa, Mastercard, PayPal and bank transfer."),
    ("cancel", "How do I cancel my subscription?", "Go to Account > Subscription and click 'Cancel subscription'."),
    ("support", "How do I contact customer support?", "Chat with us in the app or email support@example.com."),
]
# (reworded question, expected id, cosine similarity measured with all-MiniLM-L6-v2)
PARAPHRASES = [
    ("I forgot my password, what should I do?", "password", 0.8287),
    ("how do I see where my order is?", "tracking", 0.7640),
    ("can I send back something I bought and get my money back?", "returns", 0.4262),
    ("I would like a refund", "returns", 0.4693),
    ("when will my parcel arrive?", "shipping", 0.6471),
    ("I moved, how do I update the shipping address on my order?", "address", 0.6676),
    ("what cards can I pay with?", "payment", 0.5223),
    ("I want to stop my monthly plan", "cancel", 0.5406),
    ("how can I reach your support team?", "support", 0.6175),
]
OFF_TOPIC = [("what is the capital of Peru?", 0.1530), ("recommend a good pizza recipe", 0.1020),
             ("what will the weather be tomorrow?", 0.2169), ("who won the football world cup in 2018?", 0.1414)]


def test_faq_answers_paraphrases_and_refuses_off_topic_questions(minilm_dir):
    embedder = tfm.tasks.TextEmbedder.from_preset(minilm_dir)
    index = Index.build(embedder, [q for _, q, _ in FAQ], ids=[i for i, _, _ in FAQ],
                        extra=[{"answer": a} for _, _, a in FAQ])
    faq = FaqAnswerer(index, embedder)
    assert faq.threshold == DEFAULT_FAQ_THRESHOLD == 0.35
    answers = {i: a for i, _, a in FAQ}
    questions = {i: q for i, q, _ in FAQ}
    got = faq.answer([q for q, _, _ in PARAPHRASES] + [q for q, _ in OFF_TOPIC])
    for (question, expected, similarity), answer in zip(PARAPHRASES, got):
        assert (answer["source_id"], answer["answered"]) == (expected, True), question
        assert (answer["answer"], answer["matched_question"]) == (answers[expected], questions[expected])
        assert abs(answer["score"] - similarity) < 2e-3, (question, answer["score"])
        assert answer["score"] > DEFAULT_FAQ_THRESHOLD + 0.07  # the closest call is 0.426
    for (question, similarity), answer in zip(OFF_TOPIC, got[len(PARAPHRASES):]):
        assert (answer["answer"], answer["answered"]) == ("", False), question
        assert abs(answer["score"] - similarity) < 2e-3, (question, answer["score"])
        assert answer["score"] < DEFAULT_FAQ_THRESHOLD - 0.13  # the closest call is 0.217
    strict = FaqAnswerer(index, embedder, threshold=0.7).answer([PARAPHRASES[0][0], PARAPHRASES[1][0]])
    assert [a["answered"] for a in strict] == [True, True]
    strict = FaqAnswerer(index, embedder, threshold=0.8).answer([PARAPHRASES[0][0], PARAPHRASES[1][0]])
    assert [(a["answered"], a["answer"], a["source_id"]) for a in strict] == [
        (True, answers["password"], "password"), (False, "", "tracking")]
