"""Sentence embeddings from a BERT backbone: pooled final hidden states, optionally L2-normalized."""

import keras
import numpy as np
from keras import ops

from tfm.tasks.contrastive import MultipleNegativesRankingLoss, contrastive_losses, in_batch_accuracy
from tfm.tasks.task import Task

POOLINGS = ("mean", "cls", "max")


def _is_integer(y):
    dtype = y.dtype if hasattr(y, "dtype") else np.asarray(y).dtype
    return "int" in keras.backend.standardize_dtype(dtype)


@keras.saving.register_keras_serializable(package="tfm")
class EmbeddingPooling(keras.Layer):
    """`(sequence_output (B, T, H), padding_mask (B, T))` -> float32 `(B, H)` sentence vectors.

    Always computes in float32: under a mixed policy the sums over many tokens and the norm stay accurate, and
    the embedding that a cosine loss or a vector index sees is float32.

    Args:
        pooling: `"mean"` (masked mean over the real tokens, [CLS]/[SEP] included, as sentence-transformers),
            `"cls"` (the hidden state at position 0) or `"max"` (per-feature max over the real tokens).
        normalize: bool, L2-normalize each vector (`x / max(||x||, 1e-12)`, as `torch.nn.functional.normalize`).
    """

    def __init__(self, pooling="mean", normalize=True, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r} is not supported; use one of {POOLINGS}")
        self.pooling = pooling
        self.normalize = bool(normalize)

    def call(self, sequence_output, padding_mask):
        h = ops.cast(sequence_output, "float32")
        mask = ops.cast(ops.expand_dims(padding_mask, -1), "float32")  # (B, T, 1)
        if self.pooling == "cls":
            pooled = h[:, 0, :]
        elif self.pooling == "mean":
            # The 1e-9 floor (sentence-transformers') makes an all-padding row 0 instead of NaN.
            pooled = ops.sum(h * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1e-9)
        else:
            # Padding gets the lowest float32, so it can never win; a row with no real token pools to 0.
            lowest = float(np.finfo("float32").min)
            pooled = ops.max(ops.where(mask > 0, h, lowest), axis=1)
            pooled = ops.where(ops.sum(mask, axis=1) > 0, pooled, 0.0)
        if self.normalize:
            pooled = ops.normalize(pooled, axis=-1, epsilon=1e-12)
        return pooled

    def compute_output_shape(self, sequence_output_shape, padding_mask_shape=None):
        return (sequence_output_shape[0], sequence_output_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)  # always float32, set by __init__
        config.update({"pooling": self.pooling, "normalize": self.normalize})
        return config


@keras.saving.register_keras_serializable(package="tfm")
class TextEmbedder(Task):
    """Sentence embeddings (KerasHub style): backbone inputs -> float32 `(B, hidden_dim)` vectors.

    No head weights: the vector is a pooling of the backbone's `sequence_output` (see `EmbeddingPooling`), so a
    sentence-transformers checkpoint (e.g. all-MiniLM-L6-v2: mean pooling, normalized) reproduces its
    embeddings with its BERT weights alone. `embed` tokenizes raw texts with the `tokenizer` attribute, which
    is not part of `get_config` (a loader sets it, or pass `tokenizer=`).

    Two training objectives, chosen by the labels:
    - in-batch contrastive (`compile(loss="contrastive")`, and what `tfm train` runs): inputs `(B, k, T)`,
      each example's anchor, positive (and hard negative) side by side, which embed to `(B, k, H)`; labels
      int zeros `(B,)` (`tfm.data.contrastive_dataset` builds both); see `tfm.tasks.contrastive`
      (sentence-transformers' MultipleNegativesRankingLoss, negatives gathered across replicas).
    - cosine to target vectors (`loss="auto"`, `fit(x, target_embeddings)`, e.g. to distill a teacher's
      embeddings; the loss is -cos, in [-1, 1]).
    `loss_sums` (the Trainer's loss) takes the contrastive one for integer labels, the cosine one for float
    target vectors. There are no default metrics.

    Args:
        backbone: a `tfm.models.BertBackbone` (anything with `sequence_output` and a `padding_mask` input).
        pooling: `"mean"`, `"cls"` or `"max"`.
        normalize: bool, L2-normalize the vectors (then a dot product is the cosine similarity).
        tokenizer: optional `tfm.data` Tokenizer (with cls/sep/pad ids) for `embed`.
        sequence_length: int, most tokens per text in `embed` (including [CLS]/[SEP]).
        scale: float, the contrastive loss's cosine multiplier (sentence-transformers' 20).
        symmetric: bool, the contrastive loss also ranks anchors for each positive (averaged).

    Example:
    >>> embedder = TextEmbedder(tfm.models.BertBackbone.from_preset("bert_tiny", vocabulary_size=100))
    >>> embedder.output_shape
    (None, 128)
    >>> embedder.tokenizer = tfm.data.WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world"])
    >>> vectors = embedder.embed(["hello world", "hello"])
    >>> vectors.shape, vectors.dtype, np.round(np.linalg.norm(vectors, axis=-1), 5).tolist()
    ((2, 128), dtype('float32'), [1.0, 1.0])
    """

    OUTPUTS_LOGITS = False  # its outputs are embeddings (R-Drop reads class logits)
    TASK_ARGS = ("pooling", "normalize", "sequence_length", "scale", "symmetric")
    DEFAULT_LEARNING_RATE = 2e-5  # sentence-transformers' fine-tuning default
    # The contrastive loss all-gathers candidates across replicas: a collective XLA cannot compile per replica.
    GATHERS_ACROSS_REPLICAS = True

    def __init__(self, backbone, pooling="mean", normalize=True, tokenizer=None, sequence_length=128, scale=20.0,
                 symmetric=False, **kwargs):
        inputs = dict(backbone.input)
        if "padding_mask" not in inputs:
            raise ValueError(f"TextEmbedder needs a backbone with a 'padding_mask' input, got inputs {sorted(inputs)}")
        sequence = backbone(inputs)["sequence_output"]
        outputs = EmbeddingPooling(pooling, normalize, name="pooling")(sequence, inputs["padding_mask"])
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.pooling = pooling
        self.normalize = bool(normalize)
        self.sequence_length = int(sequence_length)
        self.scale = float(scale)
        self.symmetric = bool(symmetric)
        self.tokenizer = tokenizer

    def compile(self, optimizer="auto", loss="auto", weighted_metrics="auto", **kwargs):
        """`Task.compile` with the embedder's two losses by name, no metrics.

        Args:
            optimizer: `"auto"` for AdamW at `DEFAULT_LEARNING_RATE`, or any Keras optimizer.
            loss: `"contrastive"` for `MultipleNegativesRankingLoss(self.scale, self.symmetric)` on
                `contrastive_dataset` batches; `"auto"` for `keras.losses.CosineSimilarity()`: the mean over
                the batch of `-cos(embedding, target)` (targets `(B, hidden_dim)` need not be normalized).
            weighted_metrics: `"auto"` for none.
        """
        if loss == "contrastive":
            loss = MultipleNegativesRankingLoss(self.scale, self.symmetric)
        elif loss == "auto":
            loss = keras.losses.CosineSimilarity()
        if weighted_metrics == "auto":
            weighted_metrics = None
        super().compile(optimizer=optimizer, loss=loss, weighted_metrics=weighted_metrics, **kwargs)

    def loss_sums(self, y, y_pred, sample_weight=None):
        """`(sum of weighted per-example losses, sum of weights)` for the Trainer.

        Args:
            y: int `(B,)` (contrastive: `y_pred` is `(B, k, hidden_dim)`, zero-weight examples also leave
                the softmaxes; the values are not read) or float target vectors `(B, hidden_dim)` (-cos).
            y_pred: float32 embeddings.
            sample_weight: optional float `(B,)`.
        """
        labels = _is_integer(y)
        batch = ops.shape(y)[0]
        weight = ops.ones((batch,), "float32")
        if sample_weight is not None:
            weight = weight * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        if labels:
            losses = contrastive_losses(y_pred, self.scale, self.symmetric, weight)
        else:
            losses = keras.losses.cosine_similarity(ops.cast(y, "float32"), ops.cast(y_pred, "float32"))
        return ops.sum(losses * weight), ops.sum(weight)

    def metric_sums(self, y, y_pred, sample_weight=None):
        """Evaluation sums: `loss` and `weight`, and for contrastive batches `accuracy` (the anchor's nearest
        candidate in its batch is its positive)."""
        loss, weight = self.loss_sums(y, y_pred, sample_weight)
        sums = {"loss": loss, "weight": weight}
        if _is_integer(y):
            w = ops.ones((ops.shape(y)[0],), "float32") if sample_weight is None else ops.reshape(
                ops.cast(sample_weight, "float32"), (-1,))
            sums["accuracy"] = ops.sum(in_batch_accuracy(y_pred, w) * w)
        return sums

    def metrics_from_sums(self, sums):
        """`{"loss": mean loss[, "accuracy": in-batch top-1]}` from (globally reduced) `metric_sums`."""
        weight = max(float(sums["weight"]), 1e-12)
        return {key: float(sums[key]) / weight for key in ("loss", "accuracy") if key in sums}

    def call(self, inputs, training=None, mask=None):
        """`(B, T)` inputs -> `(B, H)` vectors; `(B, k, T)` (contrastive batches) -> `(B, k, H)`, every text
        embedded on its own."""
        ids = inputs["token_ids"]
        if len(ids.shape) != 3:
            return super().call(inputs, training=training, mask=mask)
        texts = ids.shape[1]
        flat = {name: ops.reshape(value, (-1, ops.shape(value)[-1])) for name, value in inputs.items()}
        vectors = super().call(flat, training=training)
        return ops.reshape(vectors, (-1, texts, ops.shape(vectors)[-1]))

    def reset_compiled_functions(self):
        super().reset_compiled_functions()
        self._embed_function = None

    def _pack(self, ids):
        """Model inputs for ragged token ids `(B, None)`: `[CLS] tokens [SEP]`, truncated to `sequence_length`,
        right-padded to the longest row (not to `sequence_length`: batches of short texts run short)."""
        from tfm.data.preprocessing import pack_segments

        longest = int(ids.row_lengths().numpy().max())
        # pack_segments needs room for one token; a batch of empty texts gets one padding column.
        length = max(3, min(self.sequence_length, longest + 2))
        t = self.tokenizer
        return pack_segments([ids], length, t.cls_id, t.sep_id, t.pad_id)

    def embed(self, texts, batch_size=32):
        """Embed raw texts with `self.tokenizer`.

        Texts are sorted by length before batching (as sentence-transformers does), so each batch pads to
        about its own length; the rows come back in the input order.

        Args:
            texts: list of str (or bytes), or a `tf.data.Dataset` of strings.
            batch_size: int, texts per model call.

        Returns:
            numpy float32 `(len(texts), hidden_dim)`.
        """
        import tensorflow as tf

        from tfm.data.tokenizer_base import strings_from

        if self.tokenizer is None:
            raise ValueError("TextEmbedder.embed needs a tokenizer: pass TextEmbedder(..., tokenizer=tok) or set "
                             "`embedder.tokenizer = tok` (a tfm.data Tokenizer), or load the model with "
                             "from_preset, which sets it")
        if isinstance(texts, (str, bytes)):
            raise TypeError("embed takes a list of texts, got a single string: wrap it in a list")
        missing = [n for n in ("cls_id", "sep_id", "pad_id") if getattr(self.tokenizer, n, None) is None]
        if missing:
            raise ValueError(f"the tokenizer {self.tokenizer!r} has no {missing}: embed packs [CLS] text [SEP]")
        limit = getattr(self.backbone, "max_sequence_length", None)
        if limit is not None and self.sequence_length > limit:
            raise ValueError(f"sequence_length={self.sequence_length} exceeds the backbone's max_sequence_length "
                             f"{limit}: set embedder.sequence_length <= {limit}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        texts = strings_from(texts)
        hidden = self.output_shape[-1]
        out = np.zeros((len(texts), hidden), "float32")
        if not texts:
            return out
        ids = self.tokenizer.tokenize(texts)
        order = np.argsort(-ids.row_lengths().numpy(), kind="stable")
        if getattr(self, "_embed_function", None) is None:  # one trace serves every padded length
            self._embed_function = tf.function(lambda x: self(x, training=False), reduce_retracing=True)
        for start in range(0, len(texts), int(batch_size)):
            rows = order[start:start + int(batch_size)]
            x = self._pack(tf.gather(ids, rows))
            out[rows] = np.asarray(self._embed_function(x), "float32")
        return out
