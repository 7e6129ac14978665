"""TensorFlow Datasets by name, mapped onto the element structures of the file readers.

Online users get the real sets (`tfds.load` downloads and prepares them once); tests run offline with
`tfds.testing.mock_data`.
"""

import tensorflow as tf

from tfm.data.readers import LabelVocabulary, ReadResult
from tfm.data.squad import SquadExample

# name → (kind, field mapping); kinds share the structures of read_classification / read_conll /
# read_text_corpus / read_squad / read_multiple_choice ("choices").
TFDS_SOURCES = {
    "glue/sst2": ("classification", {"text": "sentence", "label": "label"}),
    "imdb_reviews": ("classification", {"text": "text", "label": "label"}),
    "conll2003": ("conll", {"tokens": "tokens", "tags": "ner"}),
    "wikipedia": ("text", {"text": "text"}),
    "squad": ("squad", {}),
    # Multiple choice ({"context", "choices" (4,), "label"}). SWAG is not a tfds builder: it comes through
    # tfds' Hugging Face bridge (needs `pip install datasets`); context = sent1, choice = "sent2 ending<k>"
    # (the startphrase split at sent1|sent2, as BERT's SWAG recipe packs it).
    "swag": ("choices", {"tfds_name": "huggingface:swag/regular", "context": "sent1", "lead": "sent2",
                         "choices": [f"ending{k}" for k in range(4)]}),
    "hellaswag": ("choices", {"context": "context", "choices": "endings"}),
}


def _source(name):
    base = name.split(":")[0]
    for known, spec in TFDS_SOURCES.items():
        if base == known or base.startswith(known + "/"):  # e.g. "wikipedia/20230601.en", "squad/v2.0"
            return spec
    raise ValueError(f"no tfm mapping for tfds dataset {name!r}; known: {sorted(TFDS_SOURCES)}")


def load_tfds(name, split, data_dir=None, download=True):
    """Load a tfds dataset in tfm's reader structure.

    Args:
        name: "glue/sst2", "imdb_reviews", "conll2003", "wikipedia/<date>.<lang>", "squad[/v2.0]", "swag"
            or "hellaswag".
        split: tfds split, e.g. "train", "validation[:10%]".
        data_dir: optional tfds data directory.
        download: bool, let tfds download and prepare when missing.

    Returns:
        ReadResult (classification: {"text", "label"}; conll2003: {"tokens", "tags"} with the NER label
        names; wikipedia: tf.string documents; swag/hellaswag: {"context", "choices" (4,), "label"}, label -1
        on unlabelled test splits), or for squad a list of SquadExample.
    """
    import tensorflow_datasets as tfds

    kind, fields = _source(name)
    ds, info = tfds.load(fields.get("tfds_name", name), split=split, data_dir=data_dir, download=download,
                         with_info=True)
    if kind == "choices":
        ds = ds.map(lambda x: multiple_choice_element(x, fields))
        labels = None
    elif kind == "squad":
        return [_squad_example(x) for x in tfds.as_numpy(ds)]
    elif kind == "text":
        ds = ds.map(lambda x: x[fields["text"]])
        labels = None
    elif kind == "classification":
        ds = ds.map(lambda x: {"text": x[fields["text"]], "label": tf.cast(x[fields["label"]], tf.int32)})
        labels = LabelVocabulary(info.features[fields["label"]].names)
    else:
        ds = ds.map(lambda x: {"tokens": x[fields["tokens"]], "tags": tf.cast(x[fields["tags"]], tf.int32)})
        labels = LabelVocabulary(info.features[fields["tags"]].feature.names)
    count = info.splits[split].num_examples if split in info.splits else int(ds.cardinality())
    return ReadResult(ds, int(count), {}, labels)


def multiple_choice_element(record, fields):
    """A tfds swag/hellaswag record as `{"context", "choices" (4,), "label"}` (the read_multiple_choice structure).

    Args:
        record: dict of tensors from tfds.
        fields: the TFDS_SOURCES mapping: "context", "choices" (one list field or a list of per-choice
            fields), optional "lead" (text prepended to every choice).
    """
    names = fields["choices"]
    choices = tf.stack([record[n] for n in names]) if isinstance(names, list) else record[names]
    choices = tf.ensure_shape(choices, [4])  # static C: MultipleChoice's input shape needs it
    if "lead" in fields:
        choices = tf.strings.strip(tf.strings.join([tf.fill([4], record[fields["lead"]]), choices], " "))
    return {"context": record[fields["context"]], "choices": choices, "label": tf.cast(record["label"], tf.int32)}


def _squad_example(x):
    decode = lambda b: b.decode("utf-8")  # noqa: E731
    starts = [int(s) for s in x["answers"]["answer_start"]]
    texts = [decode(t) for t in x["answers"]["text"]]
    impossible = bool(x.get("is_impossible", False)) or not texts
    return SquadExample(decode(x["id"]), decode(x["question"]), decode(x["context"]),
                        [] if impossible else list(zip(texts, starts)), impossible)
