"""Evaluation and serving share one decoder per task: the same inputs give the same generated tokens, windows,
spans and entity chunks in the Python API (`CausalLM.generate`, `squad_features`, `span_predictions`,
`get_entities`) and in the exported graph."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (the loaded export's tokenizer ops)

import tfm
from tests.export import builders
from tests.helpers import randomize_weights
from tfm.data import SquadExample, squad_features
from tfm.data.squad import _char_index_of_bytes
from tfm.export import export_saved_model
from tfm.export.saved_model import serving_module
from tfm.metrics import get_entities
from tfm.tasks import span_predictions
from tfm.tasks.entity_chunks import chunk_spans
from tfm.tasks.tagging import parse_tags
from tfm.tasks.generation import BeamSampler, GreedySampler, RandomSampler, TopKSampler, TopPSampler

L, MAX_NEW, BEAMS = builders.SEQUENCE_LENGTH, 10, 3
PROMPTS = ["the film", "", "Paris 北京 in the", "the " * 40, "a"]
# (sampler for generate, the export's temperature, top_k, top_p) with one seed each.
SETTINGS = [
    (GreedySampler(), 0.0, 0, 1.0, 0),
    (RandomSampler(temperature=1.3), 1.3, 0, 1.0, 11),
    (TopKSampler(k=5, temperature=1.5), 1.5, 5, 1.0, 12),
    (TopPSampler(p=0.6, temperature=1.2), 1.2, 0, 0.6, 13),
    (TopPSampler(p=0.7, k=8), 1.0, 8, 0.7, 14),
]


@pytest.fixture(scope="module")
def clm(tmp_path_factory):
    tokenizer = builders.byte_pair()
    task = tfm.tasks.CausalLM(builders.gpt(tokenizer))
    randomize_weights(task, seed=3)  # peaked logits: top-k / top-p really cut
    path = export_saved_model(task, tokenizer, tmp_path_factory.mktemp("clm"), sequence_length=L,
                              max_new_tokens=MAX_NEW, num_beams=BEAMS)
    return task, tokenizer, tf.saved_model.load(str(path)), path


def _generate(task, tokenizer, sampler, seed, max_new_tokens=MAX_NEW):
    """New token ids per prompt with `CausalLM.generate`, prompts cut as the export cuts them."""
    end, keep = tokenizer.end_token_id, L - MAX_NEW
    prompts = [tokenizer.tokenize(tf.constant([p])).flat_values.numpy().tolist()[-keep:] or [end] for p in PROMPTS]
    out = task.generate(prompts, max_new_tokens=max_new_tokens, sampler=sampler, seed=seed, stop_token_ids=[end],
                        pad_token_id=tokenizer.pad_id)
    rows = []
    for r, ids in enumerate(prompts):
        new = zip(out["token_ids"][r][len(ids):], out["padding_mask"][r][len(ids):])
        rows.append([int(t) for t, m in new if m and t != end])
    return rows


def _served(out):
    return [row[:n].tolist() for row, n in zip(out["token_ids"].numpy(), out["num_tokens"].numpy())]


def test_generate_and_export_give_the_same_tokens(clm):
    task, tokenizer, exported, _ = clm
    serve = exported.signatures["serving_default"]
    prompts = tf.constant(PROMPTS)
    results = []
    for sampler, temperature, top_k, top_p, seed in SETTINGS:
        expected = _generate(task, tokenizer, sampler, seed)
        out = serve(prompt=prompts, max_new_tokens=tf.constant(MAX_NEW), temperature=tf.constant(temperature),
                    top_k=tf.constant(top_k), top_p=tf.constant(top_p), seed=tf.constant(seed, tf.int64))
        assert _served(out) == expected, sampler
        texts = tokenizer.detokenize(tf.ragged.constant(expected, tf.int32, ragged_rank=1))
        assert out["text"].numpy().tolist() == tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8").numpy().tolist()
        results.append(expected)
    assert sum(len(row) for row in results[0]) >= 3 * MAX_NEW  # real continuations, not an immediate end
    assert all(results[i] != results[0] for i in range(1, len(SETTINGS)))  # the samplers really sample
    # A request for fewer tokens equals generate with that max_new_tokens (same positions, same seeds).
    out = serve(prompt=prompts, max_new_tokens=tf.constant(4), temperature=tf.constant(1.5), top_k=tf.constant(5),
                top_p=tf.constant(1.0), seed=tf.constant(12, tf.int64))
    assert _served(out) == _generate(task, tokenizer, TopKSampler(k=5, temperature=1.5), 12, max_new_tokens=4)


def test_beam_search_signature_equals_generate_beam_search(clm):
    task, tokenizer, exported, path = clm
    beam = exported.signatures["beam_search"]
    expected = _generate(task, tokenizer, BeamSampler(num_beams=BEAMS), 0)
    out = beam(prompt=tf.constant(PROMPTS), max_new_tokens=tf.constant(MAX_NEW))
    assert _served(out) == expected
    assert expected != _generate(task, tokenizer, GreedySampler(), 0)  # beam search finds other continuations
    out = beam(prompt=tf.constant(PROMPTS), max_new_tokens=tf.constant(3))
    assert _served(out) == _generate(task, tokenizer, BeamSampler(num_beams=BEAMS), 0, max_new_tokens=3)
    metadata = tfm.export.read_metadata(path)
    assert metadata["num_beams"] == BEAMS and set(metadata["signatures"]) == {"serving_default", "beam_search"}



QUESTIONS = ["Where did John fly?", "Who works in Geneva?", "", "Where did Ada live?", "café?"]
CONTEXTS = [builders.CORPUS[0], builders.CORPUS[1] * 3, "", builders.CORPUS[4] + " Müller 北京 " * 12,
            "Müller and Öztürk met at the café near the station. " * 3]
STRIDE, MAX_QUERY = 5, 6


@pytest.fixture(scope="module")
def qa(tmp_path_factory):
    tokenizer = builders.wordpiece()
    task = builders.spread_head(tfm.tasks.SpanQA(builders.bert(tokenizer)), "span_logits", seed=4)
    examples = [SquadExample(str(i), q, c, []) for i, (q, c) in enumerate(zip(QUESTIONS, CONTEXTS))]
    features = squad_features(examples, tokenizer, L, STRIDE, MAX_QUERY)

    def module(**options):
        return serving_module(task, tokenizer, str(tmp_path_factory.mktemp("qa_assets")), L, doc_stride=STRIDE,
                              max_query_length=MAX_QUERY, max_windows=64, **options)

    return task, module, features


def test_export_windows_equal_squad_features(qa):
    _, module, features = qa
    windows = tf.function(module().windows)  # in-graph, as served
    x, example, offsets = (tf.nest.map_structure(lambda t: t.numpy(), v)
                           for v in windows(tf.constant(QUESTIONS), tf.constant(CONTEXTS)))
    for key in ("token_ids", "segment_ids", "padding_mask"):
        np.testing.assert_array_equal(x[key], features.features[key])
    np.testing.assert_array_equal(example, features.example_index)
    assert np.bincount(example).tolist()[3] >= 5  # long contexts really are windowed
    # The export's byte offsets are the features' character offsets.
    chars = offsets.copy()
    for w, n in enumerate(example):
        table = np.array(_char_index_of_bytes(CONTEXTS[n]))
        chars[w] = np.where(offsets[w] >= 0, table[np.maximum(offsets[w], 0)], -1)
    np.testing.assert_array_equal(chars, features.token_offsets)


def test_export_answers_equal_span_predictions_with_no_answer_rule(qa):
    task, module, features = qa
    logits = task(features.features)
    start, end = logits["start_logits"].numpy(), logits["end_logits"].numpy()
    # Brute force per question: best context span (length <= 30) over its windows, smallest null score.
    null = start[:, 0] + end[:, 0]
    best, min_null = [], []
    for n in range(len(QUESTIONS)):
        rows = np.flatnonzero(features.example_index == n)
        best.append(max((start[w, i] + end[w, j] for w in rows for i in range(L) for j in range(i, min(i + 30, L))
                         if features.token_offsets[w, i, 0] >= 0 and features.token_offsets[w, j, 0] >= 0),
                        default=-np.inf))
        min_null.append(null[rows].min())
    gaps = sorted(min_null[n] - best[n] for n in range(len(QUESTIONS)) if CONTEXTS[n])
    threshold = float(gaps[1] + gaps[2]) / 2  # the two largest gaps beat it: SQuAD v2 "no answer"
    out = tf.function(module(allow_no_answer=True, no_answer_threshold=threshold).answer)(
        tf.constant(QUESTIONS), tf.constant(CONTEXTS))
    expected = span_predictions(features, start, end, allow_no_answer=True, no_answer_threshold=threshold)
    answers = [a.decode() for a in out["answer"].numpy()]
    assert answers == [expected[str(i)] for i in range(len(QUESTIONS))]
    for n, answer in enumerate(answers):
        assert (answer == "") == (not CONTEXTS[n] or min_null[n] - best[n] > threshold)
        if answer:
            np.testing.assert_allclose(out["score"][n], best[n], rtol=1e-6)
            assert CONTEXTS[n][int(out["start"][n]):int(out["end"][n])] == answer
        else:
            np.testing.assert_allclose(out["score"][n], min_null[n], rtol=1e-6)
            assert (int(out["start"][n]), int(out["end"][n])) == (-1, -1)
    assert sum(a == "" for a in answers) == 3  # the empty context and the two largest gaps


def test_export_chunks_equal_get_entities_on_any_tag_sequence():
    """The export's chunk decoder in a graph (unknown lengths) against the metrics on ill-formed tags too."""
    names = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]
    prefixes, type_ids, type_names = parse_tags(names)
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, len(names), rng.integers(0, 9)).tolist() for _ in range(300)]
    chunk = tf.function(chunk_spans, input_signature=[tf.TensorSpec([None], tf.int32)] * 2
                        + [tf.TensorSpec([None], tf.int64)])
    flat = [t for row in sequences for t in row]
    rows = [r for r, row in enumerate(sequences) for _ in row]
    first, last = chunk(tf.gather(prefixes, flat), tf.gather(type_ids, flat), tf.constant(rows, tf.int64))
    served = [[] for _ in sequences]
    row_start = np.cumsum([0] + [len(row) for row in sequences])
    for f, t in zip(first.numpy(), last.numpy()):
        r = rows[t]
        served[r].append((type_names[type_ids[flat[t]]], int(f - row_start[r]), int(t - row_start[r])))
    assert served == [get_entities([names[t] for t in row]) for row in sequences]
    assert sum(map(len, served)) > 300
