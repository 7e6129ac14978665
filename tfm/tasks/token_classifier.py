"""Token classification (NER, POS) on a BERT backbone's sequence output."""

import keras
import numpy as np

from tfm.data.conll import IGNORE_LABEL
from tfm.layers.crf import CRF, compact_labelled
from tfm.tasks.tagging import allowed_transitions, viterbi_decode
from tfm.tasks.task import Task


def decode_tags(logits, labels, label_names, ignore_label=IGNORE_LABEL, constrained="auto", crf=None):
    """Per-sentence (true, predicted) tag-name sequences at labelled positions (first word pieces).

    The data pipeline labels only each word's first piece (others, [CLS], [SEP] and padding carry
    `ignore_label`), so reading those positions gives one tag per word, ready for
    `tfm.metrics.entity_scores` / `entity_classification_report` in any scheme the names use (BIO, IOBES).

    Args:
        logits: float array `(N, T, num_labels)` (or predicted ids `(N, T)`).
        labels: int array `(N, T)`, `ignore_label` where there is no word start.
        label_names: list of str, tag name of each label id.
        ignore_label: int.
        constrained: `"auto"` decodes the best well-formed tag sequence over the words
            (`tfm.tasks.tagging.viterbi_decode` on the word logits) when the names are BIO / IOBES tags,
            plain per-word argmax otherwise (e.g. POS tags); True requires the former, False forces argmax.
        crf: optional `(transitions, start, end)` learned by a CRF (`TokenClassifier.crf_scores()`): Viterbi over
            the words with these scores added to the scheme's rules (alone, where the names have no scheme).

    Returns:
        (true_tags, pred_tags): two lists of N lists of str.

    Example:
    >>> logits = np.eye(3)[[[0, 1, 2, 2]]]  # predicted ids [[0, 1, 2, 2]]
    >>> decode_tags(logits, np.array([[-100, 1, 2, -100]]), ["O", "B-PER", "I-PER"])
    ([['B-PER', 'I-PER']], [['B-PER', 'I-PER']])
    """
    logits, labels = np.asarray(logits), np.asarray(labels)
    keep = labels != ignore_label
    true_tags = [[label_names[i] for i in truth[k]] for truth, k in zip(labels, keep)]
    if logits.ndim == labels.ndim:  # already tag ids
        return true_tags, [[label_names[i] for i in guess[k]] for guess, k in zip(logits, keep)]
    rules = None
    if constrained or crf is not None:
        try:
            rules = allowed_transitions(label_names)
        except ValueError:
            if constrained not in ("auto", None, False):
                raise
    if crf is not None:
        crf = [np.asarray(part, "float32") for part in crf]
        rules = crf if rules is None or not constrained else [r + c for r, c in zip(rules, crf)]
    if rules is None:
        return true_tags, [[label_names[i] for i in guess[k]] for guess, k in zip(logits.argmax(-1), keep)]
    # Compact each row to its word starts (stable sort puts them first, in order), then decode. Logits decode
    # as log-softmax would: normalizing subtracts one constant per word, the same for every tag sequence.
    order = np.argsort(~keep, axis=1, kind="stable")
    words = np.take_along_axis(logits.astype("float32"), order[..., None], axis=1)
    lengths = keep.sum(1)
    ids = viterbi_decode(words, lengths, *rules).numpy()
    return true_tags, [[label_names[i] for i in row[:n]] for row, n in zip(ids, lengths)]


@keras.saving.register_keras_serializable(package="tfm")
class TokenClassifier(Task):
    """Per-token labels: sequence output -> dropout [-> BiLSTM -> dropout] -> dense [-> CRF], float32 `(B, T, num_labels)`.

    Train on `(x, labels, sample_weight)` from `tfm.data.token_classification_dataset`: labels of
    non-first word pieces and special tokens are -100 and are ignored by the loss and metrics.

    Args:
        backbone: a `tfm.models.BertBackbone` (anything with a `sequence_output`).
        num_labels: int, tag vocabulary size.
        dropout: float, dropout on the sequence output.
        lstm_units: optional int, units per direction of a bidirectional LSTM between the encoder and the
            classifier (the "BERT-BiLSTM" tagger). It adds an ordered, local view of the neighbours that a
            small encoder trained on little data lacks: on the Chinese NER set a 3-layer encoder goes from
            49 to 69 dev entity F1 with 128 units (configs/zh_ner.yaml). Padding is masked out of both directions.
        crf: bool, a linear-chain CRF (`tfm.layers.CRF`) over the words: the outputs are its emission scores, the
            loss is the sequence negative log-likelihood per labelled word, and `decode_tags` / the entity export
            decode with the learned transitions plus the BIO / IOBES rules.
        crf_learning_rate_multiplier: float, how much faster the CRF's scores move than the rest
            (`tfm.layers.CRF`'s `learning_rate_multiplier`).

    Example:
    >>> ner = TokenClassifier(tfm.models.BertBackbone.from_preset("bert_tiny", vocabulary_size=100), num_labels=9)
    >>> ner.output_shape
    (None, None, 9)
    """

    TASK_ARGS = ("num_labels", "dropout", "lstm_units", "crf", "crf_learning_rate_multiplier")
    decode_tags = staticmethod(decode_tags)

    def __init__(self, backbone, num_labels, dropout=0.1, lstm_units=None, crf=False, crf_learning_rate_multiplier=1.0,
                 **kwargs):
        inputs = dict(backbone.input)
        sequence = backbone(inputs)["sequence_output"]
        sequence = keras.layers.Dropout(dropout, dtype=backbone.dtype_policy, name="output_dropout")(sequence)
        if lstm_units:
            lstm = keras.layers.LSTM(lstm_units, return_sequences=True, dtype=backbone.dtype_policy)
            mask = keras.ops.cast(inputs["padding_mask"], "bool")
            sequence = keras.layers.Bidirectional(lstm, dtype=backbone.dtype_policy, name="lstm")(sequence, mask=mask)
            sequence = keras.layers.Dropout(dropout, dtype=backbone.dtype_policy, name="lstm_dropout")(sequence)
        # float32 head: logits stay float32 under mixed precision (see TextClassifier).
        logits = keras.layers.Dense(
            num_labels,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            dtype="float32",
            name="logits",
        )(sequence)
        crf_layer = CRF(num_labels, crf_learning_rate_multiplier, name="crf") if crf else None
        if crf_layer is not None:
            logits = crf_layer(logits)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.crf_layer = crf_layer
        self.backbone = backbone
        self.num_labels = num_labels
        self.dropout = dropout
        self.lstm_units = lstm_units
        self.crf = bool(crf)
        self.crf_learning_rate_multiplier = float(crf_learning_rate_multiplier)

    def compile(self, optimizer="auto", loss="auto", weighted_metrics="auto", **kwargs):
        """`Task.compile`; `"auto"` loss ignores label -100 (the weight-0 positions of the pipeline).

        Without `ignore_class`, a -100 label is out of range for the cross-entropy kernel (an error
        on CPU, NaN on GPU) even where its sample weight is 0.
        """
        if loss == "auto":
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE_LABEL)
        super().compile(optimizer=optimizer, loss=loss, weighted_metrics=weighted_metrics, **kwargs)

    def crf_scores(self):
        """The CRF's `(transitions, start, end)` as numpy arrays, for `decode_tags(crf=...)`; None without a CRF."""
        if self.crf_layer is None:
            return None
        return tuple(keras.ops.convert_to_numpy(score) for score in self.crf_layer.scores())

    def loss_sums(self, y, y_pred, sample_weight=None):
        """With a CRF: `(sum of the sentences' negative log-likelihoods, number of labelled words)`, so the mean
        is per word as the softmax loss is; labels < 0 (and weight-0 positions) are not words."""
        if self.crf_layer is None:
            return super().loss_sums(y, y_pred, sample_weight)
        keep = keras.ops.convert_to_tensor(y) >= 0
        if sample_weight is not None:
            keep = keep & (keras.ops.convert_to_tensor(sample_weight) > 0)
        emissions, tags, lengths = compact_labelled(y_pred, y, keep)
        nll = self.crf_layer.negative_log_likelihood(emissions, tags, lengths)
        return keras.ops.sum(nll), keras.ops.cast(keras.ops.sum(lengths), "float32")

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """`Task.compute_loss`; with a CRF, the mean negative log-likelihood per labelled word (`loss_sums`)."""
        if self.crf_layer is None:
            return super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        total, words = self.loss_sums(y, y_pred, sample_weight)
        loss = total / keras.ops.maximum(words, 1.0)
        if self.losses:
            loss = loss + keras.ops.sum(self.losses)
        return self._with_peft_penalty(loss, training)
