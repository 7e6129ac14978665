"""Tiny tokenizers and task models for the export tests (vocabularies < 300, hidden 32, one layer)."""

import numpy as np

import tfm
from tfm.data import BytePairTokenizer, SentencePieceTokenizer, WordPieceTokenizer

CORPUS = [
    "John Smith flew from Paris to Berlin on Monday.",
    "Maria Garcia works for the United Nations in Geneva.",
    "The film was a gorgeous, witty ride; the actors were great fun.",
    "A dull and lifeless movie with a bad script.",
    "Where did Ada Lovelace live? She lived in London with her family.",
    "北京 和 上海 是 中国 的 城市。",
    "Müller and Öztürk met at the café near the station.",
    "Questions about history, science and art are answered in the context.",
]
LABEL_NAMES = ["negative", "neutral", "positive"]
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
SEQUENCE_LENGTH = 32


def wordpiece():
    return WordPieceTokenizer.train(CORPUS * 5, vocabulary_size=300)


def sentencepiece():
    return SentencePieceTokenizer.train(CORPUS * 5, vocabulary_size=120)


def byte_pair():
    """GPT-2 style byte-level BPE: all 256 byte symbols (any input tokenizes) plus a few merges."""
    from keras_hub.src.tokenizers.byte_pair_tokenizer import bytes_to_unicode

    _, symbols = bytes_to_unicode()
    merges = ["t h", "th e", "\u0120 th", "\u0120th e", "i n", "\u0120 a", "e r", "o n", "\u0120 f", "i l"]
    vocab = {"<|endoftext|>": 0}
    for token in list(symbols) + [m.replace(" ", "") for m in merges]:
        vocab.setdefault(token, len(vocab))
    return BytePairTokenizer(vocab, merges)


def bert(tokenizer):
    return tfm.models.BertBackbone.from_preset(
        "bert_tiny", num_layers=1, num_heads=2, hidden_dim=32, intermediate_dim=64,
        vocabulary_size=tokenizer.vocabulary_size, max_sequence_length=64)


def gpt(tokenizer):
    return tfm.models.GptBackbone.from_preset(
        "gpt2_small", num_layers=1, num_heads=2, hidden_dim=32, intermediate_dim=64,
        vocabulary_size=tokenizer.vocabulary_size, max_sequence_length=64)


def spread_head(task, layer_name, seed=0):
    """Random head weights of std 1: an untrained head then predicts varied labels / spans, not one."""
    layer = task.get_layer(layer_name)
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(0.0, 1.0, w.shape).astype("float32") for w in layer.get_weights()])
    return task


def with_adapter(task, seed=1, std=0.5, **peft):
    """`task` with a PEFT method applied (`tfm.peft.apply(task, **peft)`) and its trainable weights spread
    (std `std`), so the served answers depend on the adapter."""
    tfm.peft.apply(task, **peft)
    rng = np.random.default_rng(seed)
    for variable in tfm.peft.core.adapter_variables(task, "default", trainable_only=True):
        variable.assign(rng.normal(0.0, std, variable.shape).astype("float32"))
    return task


def quantized(task, mode, seed=2):
    """`task` with spread weights (std 0.3, so int8 rounding shows in its answers), quantized to `mode`."""
    rng = np.random.default_rng(seed)
    for w in task.weights:
        w.assign(rng.normal(0.0, 0.3, w.shape).astype("float32"))
    return tfm.compression.quantize(task, mode)
