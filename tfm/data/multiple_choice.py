"""Multiple-choice data (SWAG, HellaSwag, RACE, ARC style): a JSONL reader and the batches `MultipleChoice` takes.

Elements are `{"context": tf.string, "choices": tf.string (C,), "label": tf.int32}`; every choice is packed
with the context as its own `[CLS] context [SEP] choice [SEP]` sequence.
"""

import tensorflow as tf

from tfm.data.pipelines import AUTOTUNE, _as_dataset, _maybe_shuffle
from tfm.data.preprocessing import pack_segments
from tfm.data.readers import ReadResult, _jsonl_records, _Problems


def read_multiple_choice(path, context_field="context", choices_field="choices", label_field="label",
                         question_field=None, on_error="raise"):
    """Read a JSONL multiple-choice file: one `{"context": str, "choices": [str, ...], "label": int}` per line.

    Args:
        path: .jsonl file.
        context_field, choices_field, label_field: str keys of the context, the list of choices and the
            index of the right choice.
        question_field: optional str key of a question (RACE) or a shared lead-in (SWAG's `sent2`); it is
            prepended to every choice, as BERT's RACE/SWAG recipes pack `[CLS] context [SEP] question choice [SEP]`.
        on_error: "raise" (`InputError("path:line: ...")`, a ValueError) or "skip" (counted by reason in `skipped`) for
            bad JSON, invalid UTF-8, missing or mistyped fields ("missing_field"), empty/non-string choices
            ("bad_choices"), a label that is not an int in `[0, C)` ("bad_label"), and a record whose
            number of choices differs from the first record's ("wrong_choice_count"). Records with an empty
            context are always skipped ("empty_text").

    Returns:
        ReadResult whose dataset yields `{"context": tf.string, "choices": tf.string (C,), "label": tf.int32}`
        (C is static); `labels` is None.

    Example:
        >>> # {"context": "she opened the hood", "choices": ["then examined the engine", "then ate it"], "label": 0}
        >>> result = read_multiple_choice("swag_like.jsonl")  # doctest: +SKIP
    """
    problems = _Problems(path, on_error)
    contexts, choices, labels = [], [], []
    num_choices, first_line = None, None
    for line_no, record in _jsonl_records(path, problems):
        context, options, label = (record.get(f) for f in (context_field, choices_field, label_field))
        missing = [f for f in (context_field, choices_field, label_field, question_field)
                   if f is not None and f not in record]
        if missing:
            problems.bad(line_no, "missing_field", f"missing field(s) {missing}; record has {sorted(record)}")
            continue
        question = record[question_field] if question_field is not None else ""
        if not isinstance(context, str) or not isinstance(question, str):
            problems.bad(line_no, "missing_field", f"{context_field!r}"
                         + (f" and {question_field!r} must be strings" if question_field else " must be a string"))
            continue
        if not isinstance(options, list) or not options or not all(isinstance(c, str) and c.strip() for c in options):
            problems.bad(line_no, "bad_choices", f"{choices_field!r} must be a non-empty list of non-empty strings, "
                         f"got {str(options)[:80]}")
            continue
        # bool is an int in Python; true/false is not a choice index.
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(options):
            problems.bad(line_no, "bad_label", f"{label_field!r} must be an int in [0, {len(options)}), got {label!r}")
            continue
        if num_choices is not None and len(options) != num_choices:
            problems.bad(line_no, "wrong_choice_count", f"{len(options)} choices, but {path}:{first_line} set "
                         f"{num_choices}; every record needs the same number (it is part of the model's input shape)")
            continue
        if not context.strip():
            problems.skip("empty_text")
            continue
        num_choices, first_line = len(options), first_line or line_no
        contexts.append(context)
        choices.append([f"{question.strip()} {c}" if question.strip() else c for c in options])
        labels.append(label)
    features = {
        "context": tf.constant(contexts, tf.string, shape=[len(contexts)]),
        "choices": tf.constant(choices, tf.string, shape=[len(choices), num_choices or 0]),
        "label": tf.constant(labels, tf.int32, shape=[len(labels)]),
    }
    return ReadResult(tf.data.Dataset.from_tensor_slices(features), len(contexts), problems.skipped)


def multiple_choice_dataset(data, tokenizer, sequence_length=128, batch_size=32, truncate="round_robin",
                            shuffle=False, seed=None, drop_remainder=False):
    """Multiple-choice batches in the layout of `tfm.tasks.MultipleChoice`.

    Args:
        data: ReadResult of `read_multiple_choice` / `load_tfds("swag"|"hellaswag", ...)`, or a Dataset of
            `{"context", "choices" (C,), "label"}`.
        tokenizer: a Tokenizer with cls/sep/pad ids.
        sequence_length, batch_size: ints.
        truncate: "round_robin" (a short choice keeps all its tokens, the context gets the rest) or
            "longest_first".
        shuffle: bool (buffer 10k). seed: optional int. drop_remainder: bool.

    Returns:
        Dataset of `(x, y)`: x = {"token_ids", "segment_ids", "padding_mask"} int32 `(B, C, sequence_length)`,
        each choice packed as `[CLS] context [SEP] choice [SEP]`; y = label int32 `(B,)`.
    """
    ds = _maybe_shuffle(_as_dataset(data), shuffle, seed).batch(batch_size, drop_remainder=drop_remainder)
    num_choices = ds.element_spec["choices"].shape[-1]  # static from the readers; None for a ragged source

    def encode(batch):
        choices = batch["choices"]  # (B, C)
        count = num_choices if num_choices is not None else tf.shape(choices)[1]
        contexts = tf.repeat(batch["context"], count)  # (B * C,): each context once per choice
        flat = tf.reshape(choices, [-1])
        packed = pack_segments([tokenizer.tokenize(contexts), tokenizer.tokenize(flat)], sequence_length,
                               tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id, truncate)
        batch_size_ = choices.shape[0]  # static under drop_remainder=True
        x = {}
        for name, tensor in packed.items():
            tensor = tf.reshape(tensor, [-1, count, sequence_length])  # (B, C, T)
            tensor.set_shape([batch_size_, num_choices, sequence_length])
            x[name] = tensor
        return x, batch["label"]

    return ds.map(encode, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
