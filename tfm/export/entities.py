"""TokenClassifier serving: raw text -> entities with types, character offsets and scores, all in-graph.

Words are the tokenizer's words (BERT pre-tokenization: whitespace and punctuation split, CJK characters
alone); as in training, a word's scores are those at its first piece. Each text's word tags are the best
well-formed BIO / IOBES sequence (`tfm.tasks.tagging.viterbi_decode`, as `tfm evaluate` decodes them; a CRF
tagger's learned transitions are added to the scheme's rules and its emissions are the scores), then
chunked into entities by `tfm.tasks.entity_chunks.chunk_spans` (seqeval's default rules), the chunk decoder that
`tfm.metrics.get_entities` / `entity_scores` run for evaluation.
"""

import tensorflow as tf

from tfm.export.serving import STRINGS, EncoderModule
from tfm.export.text_ops import byte_to_char_offsets, clean_text
from tfm.tasks.entity_chunks import chunk_boundaries, chunk_spans
from tfm.tasks.tagging import allowed_transitions, parse_tags, viterbi_decode

__all__ = ["TokenClassifierModule", "chunk_boundaries"]  # chunk_boundaries: its historical import path


class TokenClassifierModule(EncoderModule):
    """`text` -> entities per text, padded to E = the most entities of any row in the batch.

    Outputs: `entity_text` string `(B, E)` (the cleaned input's characters `entity_start:entity_end`),
    `entity_type` string `(B, E)`, `entity_start` / `entity_end` int32 `(B, E)` character offsets
    (end exclusive; -1 in unused slots), `entity_score` float32 `(B, E)` (mean over the entity's words
    of the softmax probability of their predicted tag, of the emissions for a CRF tagger; 0 in unused slots),
    `num_entities` int32 `(B,)`.
    Words after the first `sequence_length - 2` tokens are not tagged.

    Args:
        label_names: list of str tag names (`O`, `B-PER`, ...), required.
    """

    task_name = "token_classifier"

    def __init__(self, task, tokenizer, sequence_length, label_names):
        super().__init__(task, tokenizer, sequence_length)
        if label_names is None:
            raise ValueError("a token classifier export needs label_names (e.g. ['O', 'B-PER', 'I-PER'])")
        if len(label_names) != task.num_labels:
            raise ValueError(f"{len(label_names)} label names for a model with {task.num_labels} labels")
        if not tokenizer.has_offsets:
            raise ValueError(f"a {tokenizer.kind!r} tokenizer gives no offsets; use WordPiece or SentencePiece")
        self.label_names = list(label_names)
        try:
            self.prefixes, self.type_ids, self.type_names = parse_tags(self.label_names)
        except ValueError as error:
            raise ValueError(f"entity export needs BIO/IOBES tags: a tag that is not 'O' or '<B|I|E|S>-TYPE' has "
                             f"no entity meaning ({error})") from None
        self.transitions = allowed_transitions(self.label_names)

    def tag(self, text):
        text = clean_text(text)
        batch = tf.shape(text, out_type=tf.int64)[0]
        ids, begins, ends = self.tokenizer.tokenize_with_offsets(text)
        keep = self.sequence_length - 2
        ids, begins, ends = ids[:, :keep], begins[:, :keep], ends[:, :keep]
        logits = self.model(self.tokenizer.pack([ids], self.sequence_length), training=False)  # (B, L, K)
        probs = tf.nn.softmax(tf.cast(logits[:, 1:], tf.float32))  # position t + 1 holds token t
        token_probs = tf.RaggedTensor.from_tensor(probs, lengths=ids.row_lengths()).flat_values  # (F, K)

        # Words, flat over the batch: a word starts at a word-start piece (and at each row's first piece).
        first_in_row = tf.equal(tf.ragged.range(ids.row_lengths()).flat_values, 0)
        is_start = self.tokenizer.word_starts(ids).flat_values | first_in_row  # (F,)
        word_of_token = tf.cumsum(tf.cast(is_start, tf.int64)) - 1  # (F,)
        num_words = tf.reduce_sum(tf.cast(is_start, tf.int64))
        word_row = tf.boolean_mask(ids.value_rowids(), is_start)  # (W,)
        word_begin = tf.boolean_mask(begins.flat_values, is_start)
        word_end = tf.math.unsorted_segment_max(ends.flat_values, word_of_token, num_words)
        word_probs = tf.boolean_mask(token_probs, is_start)  # (W, K): the first piece decides
        transitions = self.transitions
        if getattr(self.model, "crf", False):  # emissions, and the learned scores on top of the rules
            word_scores = tf.boolean_mask(tf.RaggedTensor.from_tensor(tf.cast(logits[:, 1:], tf.float32),
                                                                      lengths=ids.row_lengths()).flat_values, is_start)
            transitions = [rule + learned for rule, learned in zip(transitions, self.model.crf_layer.scores())]
        else:
            word_scores = tf.math.log(word_probs + 1e-30)
        per_text = tf.RaggedTensor.from_value_rowids(word_scores, word_row, nrows=batch)
        tags = viterbi_decode(per_text.to_tensor(), per_text.row_lengths(), *transitions)
        word_tag = tf.RaggedTensor.from_tensor(tags, lengths=per_text.row_lengths()).flat_values  # (W,)
        word_score = tf.gather(word_probs, word_tag, batch_dims=1)

        # Entity chunks of each row's word tags: the metrics' decoder (`tfm.metrics.get_entities`).
        prefix = tf.gather(tf.constant(self.prefixes, tf.int32), word_tag)
        type_id = tf.gather(tf.constant(self.type_ids, tf.int32), word_tag)
        first, last = chunk_spans(prefix, type_id, word_row)
        cumulative = tf.cumsum(word_score)
        score = (tf.gather(cumulative, last) - tf.gather(cumulative, first) + tf.gather(word_score, first)) / (
            tf.cast(last - first + 1, tf.float32))
        entity_row = tf.gather(word_row, first)
        byte_begin, byte_end = tf.gather(word_begin, first), tf.gather(word_end, last)
        entity_text = tf.strings.substr(tf.gather(text, entity_row), byte_begin, byte_end - byte_begin)
        as_rows = lambda values: tf.RaggedTensor.from_value_rowids(values, entity_row, nrows=batch)  # noqa: E731
        char_begin = byte_to_char_offsets(text, as_rows(byte_begin))
        char_end = byte_to_char_offsets(text, as_rows(byte_end))
        type_name = tf.gather(tf.constant(self.type_names + [""]), tf.gather(type_id, last))
        return {
            "entity_text": as_rows(entity_text).to_tensor(""),
            "entity_type": as_rows(type_name).to_tensor(""),
            "entity_start": char_begin.to_tensor(-1),
            "entity_end": char_end.to_tensor(-1),
            "entity_score": as_rows(score).to_tensor(0.0),
            "num_entities": tf.cast(as_rows(score).row_lengths(), tf.int32),
        }

    def signatures(self):
        serve = tf.function(self.tag, input_signature=[STRINGS])
        return {"serving_default": serve.get_concrete_function(), **super().signatures()}

    def metadata(self):
        return {**super().metadata(), "inputs": ["text"], "label_names": self.label_names,
                "entity_types": self.type_names}
