"""Bad input through every signature of every export (empty, 100,000 characters, invalid UTF-8, mixed
scripts; batches of 1 and 256), answered by the standalone process: no error, one answer per row, valid
UTF-8 strings, offsets that slice the (cleaned) input, truncation as documented."""

import numpy as np

from tests.export import conftest


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
