"""SavedModels that take raw text: a fresh process with only tensorflow + tensorflow_text answers as the
live models do (see conftest.py for the exports and requests); bad input through every signature of every export
(empty, 100,000 characters, invalid UTF-8, mixed scripts; batches of 1 and 256): no error, one answer per row,
valid UTF-8 strings, offsets that slice the (cleaned) input, truncation as documented; and `tfm predict`'s
`Predictor` on the same exports. Every test of the `served` exports lives in this file, so the exports are built
once per test run (pytest-xdist's loadfile keeps a file on one worker)."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

import tfm
from tests.export import builders, conftest, references
from tfm.export import export_saved_model, latest_version_dir, read_metadata
from tfm.export.latency import measure_latency
from tfm.export.predict import Predictor, format_prediction

L = builders.SEQUENCE_LENGTH


def _texts(values):
    return [v.decode("utf-8") for v in np.asarray(values).reshape(-1)]


def _ok(result):
    assert "error" not in result, result.get("error")
    return result


def test_standalone_process_imports_neither_tfm_nor_keras_hub(served):
    assert served.forbidden_modules == []
    layout = served.dirs["classifier"]
    assert layout.name == "1" and (layout / "saved_model.pb").exists() and (layout / "variables").is_dir()
    # The tokenizer's files and the export description travel inside the export.
    assets = sorted(p.name for p in (layout / "assets").iterdir())
    assert {"vocab.txt", "tokenizer.json", "id_to_token.txt", "tfm_export.json"} <= set(assets)


def test_text_classifier_matches_live_model(served):
    task, tokenizer, _ = served.models["classifier"]
    out = _ok(served.answer("classifier"))
    expected = references.classify(task, tokenizer, conftest.TEXTS, L)
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)
    np.testing.assert_array_equal(out["label"], expected.argmax(-1))
    assert _texts(out["label_name"]) == [builders.LABEL_NAMES[i] for i in expected.argmax(-1)]
    # The embed signature: mean of the final hidden states over real tokens.
    embedding = _ok(served.answer("classifier", 1))["embedding"]
    np.testing.assert_allclose(embedding, references.embed(task, tokenizer, conftest.TEXTS, L), atol=1e-5)
    assert embedding.shape == (len(conftest.TEXTS), 32)


def test_text_pair_classifier_matches_live_model(served):
    task, tokenizer, _ = served.models["pair_classifier"]
    out = _ok(served.answer("pair_classifier"))
    expected = references.classify(task, tokenizer, conftest.TEXTS, L, pairs=conftest.TEXTS[::-1])
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)
    assert _texts(out["label_name"]) == [str(i) for i in expected.argmax(-1)]  # default names


@pytest.mark.parametrize("name", ["tagger", "tagger_crf"])
def test_token_classifier_entities_match_live_model_and_slice_the_text(served, name):
    task, tokenizer, _ = served.models[name]
    out = _ok(served.answer(name))
    expected = references.entities(task, tokenizer, conftest.TEXTS, L, builders.TAGS)
    assert sum(len(e) for e in expected) >= 10 and any(" " in e[0] for row in expected for e in row)
    if task.crf:  # the learned transitions change what is found
        assert expected != references.entities(task, tokenizer, conftest.TEXTS, L, builders.TAGS, use_crf=False)
    for n, text in enumerate(conftest.TEXTS):
        count = int(out["num_entities"][n])
        got = list(zip(_texts(out["entity_text"][n][:count]), _texts(out["entity_type"][n][:count]),
                       out["entity_start"][n][:count].tolist(), out["entity_end"][n][:count].tolist()))
        assert got == [e[:4] for e in expected[n]], text
        np.testing.assert_allclose(out["entity_score"][n][:count], [e[4] for e in expected[n]], atol=1e-5)
        assert all(text[s:e] == t for t, _, s, e in got)  # character offsets of the input
        assert (out["entity_start"][n][count:] == -1).all() and (out["entity_type"][n][count:] == b"").all()


def test_span_qa_answers_with_doc_stride_match_span_predictions(served):
    task, tokenizer, options = served.models["qa"]
    out = _ok(served.answer("qa"))
    expected, scores, windows = references.answers(task, tokenizer, conftest.QUESTIONS, conftest.CONTEXTS, L,
                                                   options["doc_stride"], options["max_query_length"])
    assert windows[3] >= 3 and windows[4] >= 3  # the long contexts are windowed
    assert _texts(out["answer"]) == expected
    for n, context in enumerate(conftest.CONTEXTS):
        start, end = int(out["start"][n]), int(out["end"][n])
        if expected[n]:
            assert context[start:end] == expected[n]
            np.testing.assert_allclose(out["score"][n], scores[n], atol=1e-4)
        else:
            assert (start, end) == (-1, -1) and context == ""


def test_masked_lm_fill_mask_matches_live_model(served):
    task, tokenizer, _ = served.models["mlm"]
    out = _ok(served.answer("mlm"))
    expected = references.fill_mask(task, tokenizer, conftest.MASKED, L, top_k=3)
    assert out["num_masks"].tolist() == [1, 2, 0, 0, 1, 1]  # the last text's second mask is truncated away
    for n, masks in enumerate(expected):
        for m, candidates in enumerate(masks):
            assert _texts(out["tokens"][n][m]) == [t for t, _ in candidates]
            np.testing.assert_allclose(out["scores"][n][m], [p for _, p in candidates], atol=1e-5)
        assert (out["token_ids"][n][len(masks):] == -1).all()


def test_multiple_choice_matches_live_model(served):
    task, tokenizer, _ = served.models["mc"]
    out = _ok(served.answer("mc"))
    expected = references.choose(task, tokenizer, conftest.MC_CONTEXTS, conftest.MC_CHOICES, L)
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)
    np.testing.assert_array_equal(out["choice"], expected.argmax(-1))


def test_causal_lm_greedy_matches_generate_and_sampling_is_seeded(served):
    task, tokenizer, options = served.models["clm"]
    greedy, same_a, same_b, other_seed, top1, top3 = (_ok(a) for a in served.answers["clm"])
    ids, texts = references.generate(task, tokenizer, conftest.PROMPTS, L - conftest.MAX_NEW, conftest.MAX_NEW)
    assert [row[:n].tolist() for row, n in zip(greedy["token_ids"], greedy["num_tokens"])] == ids
    assert greedy["text"].tolist() == tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8").numpy().tolist()
    assert max(len(i) for i in ids) == conftest.MAX_NEW
    # Same seed, same text (across calls); another seed, other text; top_k=1 sampling is greedy.
    np.testing.assert_array_equal(same_a["token_ids"], same_b["token_ids"])
    assert (same_a["token_ids"] != other_seed["token_ids"]).any()
    np.testing.assert_array_equal(top1["token_ids"], greedy["token_ids"])
    assert (top3["token_ids"] != greedy["token_ids"]).any()


def test_peft_adapters_export_and_match_their_live_models(served):
    """A prompt-tuned classifier and a prefix-tuned GPT (KV-cached generation) served from their SavedModels."""
    import tfm

    task, tokenizer, _ = served.models["classifier_prompt"]
    out = _ok(served.answer("classifier_prompt"))
    expected = references.classify(task, tokenizer, conftest.TEXTS, L)
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)
    tfm.peft.set_adapter(task, None)
    bare = references.classify(task, tokenizer, conftest.TEXTS, L)
    tfm.peft.set_adapter(task, "default")
    assert np.abs(bare - expected).max() > 0.01, np.abs(bare - expected).max()  # the adapter is what answers

    task, tokenizer, _ = served.models["clm_prefix"]
    greedy = _ok(served.answer("clm_prefix"))
    ids, _ = references.generate(task, tokenizer, conftest.PROMPTS, L - conftest.MAX_NEW, conftest.MAX_NEW)
    assert [row[:n].tolist() for row, n in zip(greedy["token_ids"], greedy["num_tokens"])] == ids
    tfm.peft.set_adapter(task, None)
    bare_ids, _ = references.generate(task, tokenizer, conftest.PROMPTS, L - conftest.MAX_NEW, conftest.MAX_NEW)
    tfm.peft.set_adapter(task, "default")
    assert bare_ids != ids


def test_int8_models_export_and_match_their_live_models(served):
    """W8A8 and weight-only int8 models serve from SavedModels made of TensorFlow's own ops (no tfm op)."""
    task, tokenizer, _ = served.models["classifier_int8"]
    out = _ok(served.answer("classifier_int8"))
    np.testing.assert_allclose(out["probabilities"], references.classify(task, tokenizer, conftest.TEXTS, L),
                               atol=1e-5)
    task, tokenizer, _ = served.models["clm_int8"]
    greedy = _ok(served.answer("clm_int8"))
    ids, _ = references.generate(task, tokenizer, conftest.PROMPTS, L - conftest.MAX_NEW, conftest.MAX_NEW)
    assert [row[:n].tolist() for row, n in zip(greedy["token_ids"], greedy["num_tokens"])] == ids
    assert b"TfmInt8MatMul" not in (served.dirs["clm_int8"] / "saved_model.pb").read_bytes()
    variables = str(served.dirs["clm_int8"] / "variables" / "variables")
    dtypes = tf.train.load_checkpoint(variables).get_variable_to_dtype_map().values()
    assert sum(dtype == tf.int8 for dtype in dtypes) == 5  # 4 projections of the one block + the token embedding


def test_saved_model_cli_lists_the_signatures(served):
    cli = Path(sys.executable).with_name("saved_model_cli")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    expected = {"qa": ({"serving_default", "embed"}, ["question", "context"], ["answer", "score", "start", "end"]),
                "clm": ({"serving_default"}, ["prompt", "max_new_tokens", "temperature", "top_k", "top_p", "seed"],
                        ["text", "token_ids", "num_tokens"])}
    for name, (signatures, inputs, outputs) in expected.items():
        shown = subprocess.run([str(cli), "show", "--dir", str(served.dirs[name]), "--all"], capture_output=True,
                               text=True, env=env, timeout=300)
        assert shown.returncode == 0, shown.stderr[-2000:]
        listed = {line.split("'")[1] for line in shown.stdout.splitlines() if line.startswith("signature_def[")}
        assert listed == signatures | {"__saved_model_init_op"}
        for key in inputs:
            assert f"inputs['{key}']" in shown.stdout
        for key in outputs:
            assert f"outputs['{key}']" in shown.stdout
        assert read_metadata(served.dirs[name])["signatures"].keys() == signatures


def test_versions_increase_and_regression_predictions(tmp_path):
    tokenizer = builders.wordpiece()
    task = tfm.tasks.TextClassifier(builders.bert(tokenizer), 1, regression=True)
    first = export_saved_model(task, tokenizer, tmp_path, sequence_length=16)
    second = export_saved_model(task, tokenizer, tmp_path, sequence_length=16)
    assert (first.name, second.name) == ("1", "2") and latest_version_dir(tmp_path) == second
    assert not list(tmp_path.glob(".tmp-*"))
    with pytest.raises(FileExistsError):
        export_saved_model(task, tokenizer, tmp_path, sequence_length=16, version=1)
    metadata = json.loads((second / "assets" / "tfm_export.json").read_text())
    assert (metadata["task"], metadata["regression"], metadata["sequence_length"]) == ("text_classifier", True, 16)
    out = tf.saved_model.load(str(second)).signatures["serving_default"](text=tf.constant(conftest.TEXTS))
    assert set(out) == {"predictions"}
    expected = task(references.classifier_inputs(tokenizer, conftest.TEXTS, 16)).numpy()
    np.testing.assert_allclose(out["predictions"], expected, atol=1e-5)


def test_export_rejects_what_it_cannot_serve(tmp_path):
    wordpiece, byte_pair = builders.wordpiece(), builders.byte_pair()
    tagger = tfm.tasks.TokenClassifier(builders.bert(wordpiece), 3)
    with pytest.raises(ValueError, match="needs label_names"):
        export_saved_model(tagger, wordpiece, tmp_path, sequence_length=16)
    with pytest.raises(ValueError, match="is not 'O' or"):
        export_saved_model(tagger, wordpiece, tmp_path, sequence_length=16, label_names=["O", "PER", "LOC"])
    with pytest.raises(ValueError, match="exceeds the backbone"):
        export_saved_model(tagger, wordpiece, tmp_path, sequence_length=65, label_names=["O", "B-X", "I-X"])
    with pytest.raises(ValueError, match="no mask token"):
        export_saved_model(tfm.tasks.MaskedLM(builders.bert(byte_pair)), byte_pair, tmp_path, sequence_length=16)
    assert not list(tmp_path.iterdir())  # nothing half-written


# ------------------------------------------------------------------------------------- bad input
def _cleaned(value):
    raw = value if isinstance(value, bytes) else value.encode("utf-8")
    return raw.decode("utf-8", "replace")


def test_every_signature_answers_every_bad_batch(served):
    seen = set()
    for name, signature, batch_name, feed, result in served.bad:
        assert "error" not in result, (name, signature, batch_name, result.get("error"))
        rows = len(conftest.BAD_BATCHES[batch_name])
        for key, value in result.items():
            assert value.shape[0] == rows, (name, signature, key, value.shape)
            if value.dtype == object:  # every string output is valid UTF-8
                for item in value.reshape(-1):
                    try:
                        item.decode("utf-8")
                    except UnicodeDecodeError as error:
                        raise AssertionError((name, signature, batch_name, key, item)) from error
            elif value.dtype.kind == "f":
                assert np.isfinite(value).all(), (name, signature, key)
        seen.add((name, signature))
    assert len(seen) == 16  # 9 exports (2 with PEFT adapters); every encoder also has `embed`


def _bad(served, name, batch_name="bad"):
    return next(r for n, s, b, _, r in served.bad if n == name and s == "serving_default" and b == batch_name)


def test_offsets_slice_the_cleaned_input_and_long_text_is_truncated(served):
    texts = [_cleaned(t) for t in conftest.BAD_BATCHES["bad"]]
    tags = _bad(served, "tagger")
    for n, text in enumerate(texts):
        count = tags["num_entities"][n]
        for value, start, end in zip(tags["entity_text"][n][:count], tags["entity_start"][n][:count],
                                     tags["entity_end"][n][:count]):
            assert text[start:end] == value.decode("utf-8")
    assert tags["num_entities"][0] == 0
    # Only the first sequence_length - 2 tokens of the 100,000 characters are tagged.
    assert 0 < tags["entity_end"][1].max() < 200
    qa = _bad(served, "qa")
    for n, text in enumerate(texts):
        if qa["start"][n] >= 0:
            assert text[qa["start"][n]:qa["end"][n]] == qa["answer"][n].decode("utf-8")
    assert (qa["start"][0], qa["answer"][0]) == (-1, b"")  # empty context: no answer
    # max_windows=16 windows of doc_stride 8 tokens: the answer lies in the first ~150 tokens.
    assert 0 <= qa["start"][1] < 1000
    invalid = _cleaned(conftest.INVALID)
    assert "\ufffd" in invalid and "broken" in invalid


def test_generation_handles_bad_prompts(served):
    out = _bad(served, "clm")
    assert out["num_tokens"].max() <= conftest.MAX_NEW and out["token_ids"].shape == (4, conftest.MAX_NEW)
    many = _bad(served, "clm", "many")
    # Duplicate prompts in one batch get the same greedy continuation.
    np.testing.assert_array_equal(many["token_ids"][0], many["token_ids"][len(conftest.TEXTS) + 1])


# ------------------------------------------------------------------------------------- tfm predict
def test_predictor_reads_every_task_export(served):
    """`Predictor` (behind `tfm predict`) gives the standalone process's answers, trimmed of padding."""
    qa = Predictor(served.dirs["qa"])
    rows = [f"{q}\t{c}" for q, c in zip(conftest.QUESTIONS, conftest.CONTEXTS)]
    got = qa.predict(rows)
    assert [g["answer"] for g in got] == [a.decode() for a in served.answer("qa")["answer"]]
    with pytest.raises(ValueError, match=r"input 1: expected 2 tab-separated fields \(question, context\)"):
        qa.predict(["no tab"])
    assert qa.predict(["just text"], signature="embed")[0]["embedding"].__len__() == 32

    tags = Predictor(served.dirs["tagger"]).predict(conftest.TEXTS[:2])
    count = served.answer("tagger")["num_entities"][0]
    assert len(tags[0]["entity_text"]) == count and len(tags[0]["entity_score"]) == count
    line = format_prediction("token_classifier", tags[0])
    assert line.count("[") == count and tags[0]["entity_text"][0] in line

    mc = Predictor(served.dirs["mc"]).predict(["\t".join([c, *choices])
                                               for c, choices in zip(conftest.MC_CONTEXTS, conftest.MC_CHOICES)])
    assert [m["choice"] for m in mc] == served.answer("mc")["choice"].tolist()

    masks = Predictor(served.dirs["mlm"]).predict(conftest.MASKED[:3])
    assert [len(m["tokens"]) for m in masks] == [1, 2, 0] and all(len(t) == 3 for t in masks[1]["tokens"])
    assert format_prediction("masked_lm", masks[2]) == "(no mask token)"

    clm = Predictor(served.dirs["clm"])
    greedy = clm.predict(conftest.PROMPTS)
    expected = served.answer("clm")
    assert [g["num_tokens"] for g in greedy] == expected["num_tokens"].tolist()
    assert [g["token_ids"] for g in greedy] == [r[:n].tolist() for r, n in zip(expected["token_ids"],
                                                                               expected["num_tokens"])]
    sampled = clm.predict(conftest.PROMPTS, temperature=1.0, top_k=1, max_new_tokens=3)
    assert [s["token_ids"] for s in sampled] == [g["token_ids"][:3] for g in greedy]


def test_measure_latency_times_every_request(served, monkeypatch):
    # A fake clock: timed call i takes i + 1 ms, so the statistics are known numbers, and every read is counted.
    reads = []

    def perf_counter():
        reads.append(None)
        call, stop = divmod(len(reads) - 1, 2)
        return 10.0 * call + stop * (call + 1) / 1000.0

    monkeypatch.setattr("tfm.export.latency.time", SimpleNamespace(perf_counter=perf_counter))
    result = measure_latency(served.dirs["classifier"], conftest.TEXTS, iterations=7, warmup=1)
    assert len(reads) == 2 * 7  # a start and a stop around each of the 7 timed calls, none for the warm-up
    # Times 1..7 ms: median 4, mean 4, 99th percentile (linear) 6 + 0.94 x (7 - 6).
    assert result == {"p50_ms": pytest.approx(4.0), "p99_ms": pytest.approx(6.94), "mean_ms": pytest.approx(4.0),
                      "iterations": 7, "format": "saved_model"}
