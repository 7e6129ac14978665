"""Serving modules: a task model plus its tokenizer behind string-in `tf.function` signatures.

Each module's `signatures()` returns `{name: concrete function}` for `tf.saved_model.save`. Every input
is a `tf.string` tensor of shape `[None]` (one text per row) unless noted; inputs are cleaned to valid
UTF-8 first (invalid bytes -> U+FFFD) and texts longer than the model window are truncated: the first
`sequence_length - 2` tokens are kept (pairs: round-robin between the two texts, as in training).
"""

import tensorflow as tf

from tfm.export.text_ops import clean_text

STRINGS = tf.TensorSpec([None], tf.string)


class ServingModule(tf.Module):
    """Base: holds the Keras task, the in-graph tokenizer and the window length.

    Args:
        task: the trained `tfm.tasks` model.
        tokenizer: a `tfm.export.text_ops.GraphTokenizer`.
        sequence_length: int, tokens per model input (including [CLS]/[SEP]).
    """

    task_name = None

    def __init__(self, task, tokenizer, sequence_length):
        super().__init__(name=f"{self.task_name}_serving")
        backbone_max = getattr(task.backbone, "max_sequence_length", sequence_length)
        if sequence_length > backbone_max:
            raise ValueError(f"sequence_length={sequence_length} exceeds the backbone's max_sequence_length "
                             f"{backbone_max}")
        self.model = task
        self.tokenizer = tokenizer
        self.sequence_length = int(sequence_length)

    def signatures(self):
        """`{signature name: concrete function}`; `serving_default` is the task's main function."""
        raise NotImplementedError

    def metadata(self):
        """JSON-able description written to `assets/tfm_export.json` (what `tfm predict` reads)."""
        return {"task": self.task_name, "sequence_length": self.sequence_length}

    def _encode(self, *texts):
        """Cleaned, tokenized and packed model inputs `{token_ids, segment_ids, padding_mask}` `(B, L)`."""
        return self.tokenizer.pack([self.tokenizer.tokenize(clean_text(t)) for t in texts], self.sequence_length)


class EncoderModule(ServingModule):
    """Adds the `embed` signature shared by every BERT-style task.

    The embedding is the mean of the backbone's final hidden states over the real tokens ([CLS] and
    [SEP] included, padding excluded), not the pooled [CLS] output: the pooler is trained only by a
    classification head, so after MLM pre-training (no NSP in tfm) it is still random. Not normalized.
    """

    def embed(self, text):
        x = self._encode(text)
        sequence = self.model.backbone(x, training=False)["sequence_output"]
        sequence = tf.cast(sequence, tf.float32)
        mask = tf.cast(x["padding_mask"], tf.float32)[..., None]  # (B, L, 1)
        return {"embedding": tf.reduce_sum(sequence * mask, axis=1) / tf.reduce_sum(mask, axis=1)}

    def signatures(self):
        return {"embed": tf.function(self.embed, input_signature=[STRINGS]).get_concrete_function()}


class TextEmbedderModule(ServingModule):
    """`text` -> `embedding` float32 `(B, hidden_dim)`: the TextEmbedder's own pooling and normalization (so a
    dot product of two rows is their cosine similarity when the task normalizes)."""

    task_name = "text_embedder"

    def embed(self, text):
        return {"embedding": tf.cast(self.model(self._encode(text), training=False), tf.float32)}

    def signatures(self):
        embed = tf.function(self.embed, input_signature=[STRINGS]).get_concrete_function()
        return {"serving_default": embed, "embed": embed}

    def metadata(self):
        return {**super().metadata(), "inputs": ["text"], "pooling": self.model.pooling,
                "normalize": self.model.normalize}


class TextClassifierModule(EncoderModule):
    """`text` (and `text_pair`) -> `label`, `label_name`, `probabilities` (or `predictions` for regression).

    Args:
        label_names: list of str per class; default "0", "1", ...
        text_pair: bool, the model was trained on pairs: the signature takes `text` and `text_pair`.
    """

    task_name = "text_classifier"

    def __init__(self, task, tokenizer, sequence_length, label_names=None, text_pair=False):
        super().__init__(task, tokenizer, sequence_length)
        self.regression = bool(task.regression)
        names = [str(i) for i in range(task.num_classes)] if label_names is None else list(label_names)
        if len(names) != task.num_classes:
            raise ValueError(f"{len(names)} label names for a model with {task.num_classes} classes")
        self.label_names = names
        self.text_pair = bool(text_pair)

    def classify(self, text, text_pair=None):
        texts = (text,) if text_pair is None else (text, text_pair)
        outputs = tf.cast(self.model(self._encode(*texts), training=False), tf.float32)
        if self.regression:
            return {"predictions": outputs}
        label = tf.argmax(outputs, axis=-1, output_type=tf.int32)
        return {"label": label, "label_name": tf.gather(tf.constant(self.label_names), label),
                "probabilities": tf.nn.softmax(outputs, axis=-1)}

    def signatures(self):
        if self.text_pair:
            serve = tf.function(lambda text, text_pair: self.classify(text, text_pair),
                                input_signature=[STRINGS, STRINGS])
        else:
            serve = tf.function(lambda text: self.classify(text), input_signature=[STRINGS])
        return {"serving_default": serve.get_concrete_function(), **super().signatures()}

    def metadata(self):
        inputs = ["text", "text_pair"] if self.text_pair else ["text"]
        return {**super().metadata(), "inputs": inputs, "label_names": self.label_names,
                "regression": self.regression}


class MaskedLMModule(EncoderModule):
    """Fill-mask: `text` with one or more literal mask tokens ("[MASK]") -> the `num_candidates` best tokens at each.

    Outputs, with M = the most masks of any row in the batch (at least 1): `tokens` string `(B, M, k)`,
    `token_ids` int32 `(B, M, k)` (-1 in unused slots), `scores` float32 `(B, M, k)` softmax
    probabilities (0 in unused slots), `num_masks` int32 `(B,)`. Masks beyond the truncation point
    are not counted.

    Args:
        num_candidates: int, candidates per mask (`top_k` of Hugging Face's fill-mask pipeline; named apart
            from the sampling `top_k` of generation).
    """

    task_name = "masked_lm"

    def __init__(self, task, tokenizer, sequence_length, num_candidates=5):
        super().__init__(task, tokenizer, sequence_length)
        if tokenizer.mask_id is None:
            raise ValueError("the tokenizer has no mask token; a fill-mask export needs one")
        self.num_candidates = min(int(num_candidates), task.backbone.vocabulary_size)

    def fill_mask(self, text):
        ids = self.tokenizer.tokenize_with_masks(clean_text(text))
        x = self.tokenizer.pack([ids], self.sequence_length)
        is_mask = tf.equal(x["token_ids"], self.tokenizer.mask_id)  # (B, L)
        positions = tf.ragged.boolean_mask(tf.broadcast_to(tf.range(self.sequence_length), tf.shape(is_mask)),
                                           is_mask)
        num_masks = tf.cast(positions.row_lengths(), tf.int32)  # (B,)
        width = tf.maximum(tf.reduce_max(tf.concat([num_masks, [0]], 0)), 1)
        mask_positions = positions.to_tensor(0, shape=tf.stack([tf.shape(is_mask)[0], width]))  # (B, M)
        logits = self.model({**x, "mask_positions": mask_positions}, training=False)  # (B, M, V)
        if isinstance(logits, dict):  # MaskedLM(next_sentence=True) also returns NSP logits
            logits = logits["mask_ids"]
        scores, token_ids = tf.math.top_k(tf.nn.softmax(tf.cast(logits, tf.float32)), k=self.num_candidates)
        used = (tf.range(width)[None, :] < num_masks[:, None])[..., None]  # (B, M, 1)
        token_ids = tf.where(used, token_ids, -1)
        return {"tokens": self.tokenizer.id_to_token(token_ids), "token_ids": token_ids,
                "scores": tf.where(used, scores, 0.0), "num_masks": num_masks}

    def signatures(self):
        serve = tf.function(self.fill_mask, input_signature=[STRINGS])
        return {"serving_default": serve.get_concrete_function(), **super().signatures()}

    def metadata(self):
        return {**super().metadata(), "inputs": ["text"], "mask_token": self.tokenizer.mask_token,
                "num_candidates": self.num_candidates}


class MultipleChoiceModule(EncoderModule):
    """`context` `(B,)` + `choices` `(B, num_choices)` -> `choice` int32 `(B,)` and `probabilities` `(B, C)`.

    Each choice is packed as `[CLS] context [SEP] choice [SEP]` (round-robin truncation).
    """

    task_name = "multiple_choice"

    def __init__(self, task, tokenizer, sequence_length):
        super().__init__(task, tokenizer, sequence_length)
        self.num_choices = int(task.num_choices)

    def choose(self, context, choices):
        c = self.num_choices
        contexts = tf.repeat(context, c)  # (B * C,), row b * C + i pairs context b with choice i
        x = self._encode(contexts, tf.reshape(choices, [-1]))
        x = {k: tf.reshape(v, [-1, c, self.sequence_length]) for k, v in x.items()}  # (B, C, L)
        logits = tf.cast(self.model(x, training=False), tf.float32)
        return {"choice": tf.argmax(logits, axis=-1, output_type=tf.int32),
                "probabilities": tf.nn.softmax(logits, axis=-1)}

    def signatures(self):
        serve = tf.function(self.choose, input_signature=[STRINGS, tf.TensorSpec([None, self.num_choices],
                                                                                 tf.string)])
        return {"serving_default": serve.get_concrete_function(), **super().signatures()}

    def metadata(self):
        return {**super().metadata(), "inputs": ["context", "choices"], "num_choices": self.num_choices}
