"""Knowledge distillation: a student task learns a trained teacher's soft targets (Hinton et al. 2015), optionally
its hidden states (TinyBERT, Jiao et al. 2020) and its last-layer attention distributions (MiniLM, Wang et al.
2020), on top of the labels.

One loss (`Distillation`) serves both ways of training: the `tfm train` Trainer (a config's `distill:` section,
`tfm.compression.distill_run`) and `model.fit` through `Distiller`. The student can start from a subset of the
teacher's layers (`student_from_teacher`, DistilBERT's initialization).

>>> backbone = tfm.models.BertBackbone.from_preset("bert_tiny", vocabulary_size=100, num_layers=4)
>>> teacher = tfm.tasks.TextClassifier(backbone, num_classes=2)
>>> student = student_from_teacher(teacher, layers=[1, 3])
>>> student.backbone.num_layers, len(student.weights) < len(teacher.weights)
(2, True)
>>> distiller = Distiller(teacher, student, temperature=2.0)
>>> distiller.compile()
"""

import contextlib

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfm.tasks.losses import label_weights

_EPSILON = 1e-9


class Taps:
    """What one forward pass recorded: each block's output and (float32) attention probabilities, in call order."""

    def __init__(self):
        self.hidden_states = []
        self.attention_probs = []


@contextlib.contextmanager
def recording(task, attention=False):
    """Records the forward passes of `task` run inside the block into the yielded `Taps`."""
    taps = Taps()
    blocks = task.backbone.transformer_layers
    for block in blocks:
        block.taps = taps
        if attention:
            block.self_attention.taps = taps
    try:
        yield taps
    finally:
        for block in blocks:
            block.taps = None
            block.self_attention.taps = None


def soft_target_loss(teacher_logits, student_logits, temperature):
    """`T^2 KL(softmax(teacher / T) || softmax(student / T))` per position (over the last axis)."""
    t = ops.cast(teacher_logits, "float32") / temperature
    s = ops.cast(student_logits, "float32") / temperature
    log_t, log_s = ops.log_softmax(t, axis=-1), ops.log_softmax(s, axis=-1)
    return temperature ** 2 * ops.sum(ops.exp(log_t) * (log_t - log_s), axis=-1)


def _token_mask(x, like):
    if isinstance(x, dict) and "padding_mask" in x:
        return ops.cast(x["padding_mask"], "float32")
    return ops.ones(ops.shape(like)[:2], "float32")


def hidden_state_loss(student_states, teacher_states, layer_map, mask):
    """The hidden-state MSE summed over the `[student, teacher]` layer pairs, each a mean over real tokens."""
    total = 0.0
    count = ops.maximum(ops.sum(mask), 1.0)
    for s, t in layer_map:
        diff = ops.cast(student_states[s], "float32") - ops.cast(teacher_states[t], "float32")
        total = total + ops.sum(ops.mean(ops.square(diff), axis=-1) * mask) / count
    return total


def attention_loss(student_probs, teacher_probs, mask):
    """MiniLM's attention transfer: KL(teacher || student) of the attention distributions `(B, heads, T, T)`,
    averaged over heads and real query positions."""
    t, s = ops.cast(teacher_probs, "float32"), ops.cast(student_probs, "float32")
    kl = ops.sum(t * (ops.log(t + _EPSILON) - ops.log(s + _EPSILON)), axis=-1)  # (B, heads, T)
    heads = ops.cast(ops.shape(kl)[1], "float32")
    return ops.sum(kl * mask[:, None, :]) / (ops.maximum(ops.sum(mask), 1.0) * heads)


class Distillation:
    """The distillation objective of a student task, as loss *sums* (see `Task.loss_sums`).

    `student_loss_weight * CE(labels) + (1 - student_loss_weight) * (T^2 KL + hidden_state_weight * hidden MSE +
    attention_weight * attention KL)`; the KL terms are weighted per position like the label loss.

    Args:
        teacher: the teacher task (frozen, run in inference mode), or None when every batch brings the teacher's
            logits (`y = {"labels": ..., "teacher_logits": ...}`: `TeacherCache`).
        temperature: float, softmax temperature of the soft targets.
        student_loss_weight: float in [0, 1], weight of the label loss.
        hidden_state_weight: float, weight of the hidden-state MSE (needs equal widths).
        hidden_state_layers: `[student layer, teacher layer]` pairs for the MSE (0-based).
        attention_weight: float, weight of the last-layer attention KL (needs equal head counts).
    """

    def __init__(self, teacher=None, temperature=2.0, student_loss_weight=0.5, hidden_state_weight=0.0,
                 hidden_state_layers=None, attention_weight=0.0):
        if teacher is None and (hidden_state_weight or attention_weight):
            raise ValueError("hidden-state and attention losses need the teacher model, not cached logits")
        self.teacher = teacher
        if teacher is not None:
            teacher.trainable = False
        self.temperature = float(temperature)
        self.student_loss_weight = float(student_loss_weight)
        self.hidden_state_weight = float(hidden_state_weight)
        self.hidden_state_layers = [list(p) for p in hidden_state_layers or ()]
        self.attention_weight = float(attention_weight)

    def check(self, student, teacher=None):
        """Raises ValueError naming what does not fit between `student` and the teacher (default: its own)."""
        teacher = teacher or self.teacher
        s, t = student.backbone, teacher.backbone
        if s.vocabulary_size != t.vocabulary_size:
            raise ValueError(f"the student's vocabulary ({s.vocabulary_size} tokens) differs from the teacher's "
                             f"({t.vocabulary_size}): both must read the same token ids (the teacher's tokenizer)")
        if student.output_shape[-1] != teacher.output_shape[-1]:
            raise ValueError(f"the student predicts {student.output_shape[-1]} classes, the teacher "
                             f"{teacher.output_shape[-1]}")
        if self.hidden_state_weight:
            if s.hidden_dim != t.hidden_dim:
                raise ValueError(f"hidden_state_weight needs equal widths: student {s.hidden_dim}, teacher "
                                 f"{t.hidden_dim}")
            for i, j in self.hidden_state_layers:
                if i >= s.num_layers or j >= t.num_layers:
                    raise ValueError(f"hidden_state_layers pair [{i}, {j}] is out of range: the student has "
                                     f"{s.num_layers} layers, the teacher {t.num_layers}")
        if self.attention_weight and s.num_heads != t.num_heads:
            raise ValueError(f"attention_weight needs equal head counts: student {s.num_heads}, teacher {t.num_heads}")

    def _features(self):
        return bool(self.hidden_state_weight or self.attention_weight)

    def loss_sums(self, student, x, y, sample_weight=None, training=True):
        """`(loss sum, weight sum, student logits)` of one batch; `y` is labels or `{"labels", "teacher_logits"}`."""
        labels, teacher_logits = (y["labels"], y["teacher_logits"]) if isinstance(y, dict) else (y, None)
        attention = bool(self.attention_weight)
        with recording(student, attention) if self._features() else contextlib.nullcontext() as student_taps:
            logits = student(x, training=training)
        teacher_taps = None
        if teacher_logits is None:
            with recording(self.teacher, attention) if self._features() else contextlib.nullcontext() as teacher_taps:
                teacher_logits = self.teacher(x, training=False)
        teacher_logits = ops.stop_gradient(ops.cast(teacher_logits, "float32"))
        label_sum, weight_sum = student.loss_sums(labels, logits, sample_weight)
        weight = label_weights(labels, sample_weight)
        soft_sum = ops.sum(soft_target_loss(teacher_logits, logits, self.temperature) * weight)
        total = self.student_loss_weight * label_sum + (1.0 - self.student_loss_weight) * soft_sum
        if self._features():
            mask = _token_mask(x, teacher_taps.hidden_states[-1])
            extra = 0.0
            if self.hidden_state_weight:
                extra = extra + self.hidden_state_weight * hidden_state_loss(
                    student_taps.hidden_states, [ops.stop_gradient(h) for h in teacher_taps.hidden_states],
                    self.hidden_state_layers, mask)
            if self.attention_weight:
                extra = extra + self.attention_weight * attention_loss(
                    student_taps.attention_probs[-1], ops.stop_gradient(teacher_taps.attention_probs[-1]), mask)
            # A per-batch mean: weighted so that the division by the (global) weight sum gives it back.
            total = total + (1.0 - self.student_loss_weight) * extra * ops.stop_gradient(weight_sum)
        return total, weight_sum, logits


def student_from_teacher(teacher, layers, dropout=None):
    """A new task like `teacher` keeping only the teacher `layers` (0-based), initialized from them, the embeddings,
    the pooler and the task head (DistilBERT's initialization from every other teacher layer).

    Args:
        teacher: a float, unadapted tfm task (its class and task arguments are reused).
        layers: increasing teacher layer numbers.
        dropout: optional float, the student backbone's dropout (default: the teacher's).
    """
    if getattr(teacher, "quantization", None) or getattr(teacher, "peft_adapters", None):
        raise ValueError("student_from_teacher needs a float teacher without PEFT adapters (merge or drop them)")
    count = teacher.backbone.num_layers
    if not layers or sorted(set(layers)) != list(layers) or layers[0] < 0 or layers[-1] >= count:
        raise ValueError(f"layers must be increasing teacher layer numbers in [0, {count}), got {list(layers)}")
    config = {**teacher.backbone.get_config(), "num_layers": len(layers)}
    config.pop("name", None)
    if dropout is not None:
        config["dropout"] = dropout
    backbone = type(teacher.backbone).from_config(config)
    student = type(teacher)(backbone, **{key: getattr(teacher, key) for key in teacher.TASK_ARGS})
    source_of = {f"transformer_layer_{i}": f"transformer_layer_{j}" for i, j in enumerate(layers)}
    for layer in backbone.layers:
        if layer.weights:
            layer.set_weights(teacher.backbone.get_layer(source_of.get(layer.name, layer.name)).get_weights())
    for layer in student.layers:
        if layer is not backbone and layer.weights:
            layer.set_weights(teacher.get_layer(layer.name).get_weights())
    return student


def principal_embeddings(embeddings, width):
    """The rows of `embeddings` `(V, D)` projected onto their top `width` principal directions `(V, width)`."""
    embeddings = np.asarray(embeddings, np.float64)
    if width > embeddings.shape[1]:
        raise ValueError(f"a student {width} wide cannot take the principal directions of {embeddings.shape[1]}-wide "
                         f"teacher embeddings")
    centered = embeddings - embeddings.mean(0)
    _, _, directions = np.linalg.svd(centered, full_matrices=False)
    return (centered @ directions[:width].T).astype(np.float32)


def row_keys(x):
    """One string per example: its real (unpadded) token ids, so a key does not depend on the batch's padding."""
    ids = x["token_ids"] if isinstance(x, dict) else x
    batch = tf.shape(ids)[0]
    flat = tf.reshape(ids, [batch, -1])
    if isinstance(x, dict) and "padding_mask" in x:
        flat = tf.ragged.boolean_mask(flat, tf.reshape(tf.cast(x["padding_mask"], tf.bool), [batch, -1]))
    return tf.strings.reduce_join(tf.strings.as_string(flat), axis=-1, separator=" ")


class TeacherCache:
    """The teacher's logits for every training example, computed once, looked up by token ids in the input pipeline.

    Valid for labelled tasks, whose inputs are the same every epoch (not for masked / causal LM batches, whose
    masks and windows change). Identical inputs share one entry (their logits are identical too).
    """

    def __init__(self, keys, logits):
        keys = np.asarray(keys)
        _, first = np.unique(keys, return_index=True)
        self.keys, self.logits = keys[first], np.asarray(logits, np.float32)[first]
        self._table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(self.keys), tf.range(len(first), dtype=tf.int64)), -1)
        self._logits = tf.constant(self.logits)

    @classmethod
    def build(cls, teacher, batches, batch_size=64, multiple=8):
        """Runs `teacher` over the examples of `batches` (`(x, ...)` of one pass, padded to one length).

        Examples run sorted by length, each batch cut to its longest example (rounded up to `multiple`, so a few
        shapes compile): sentence datasets are mostly padding at the full length.
        """
        forward = tf.function(lambda x: teacher(x, training=False), jit_compile=True)
        xs = [batch[0] for batch in batches]
        if isinstance(xs[0], dict):
            x = {key: np.concatenate([np.asarray(b[key]) for b in xs]) for key in xs[0]}
        else:
            x = {"token_ids": np.concatenate([np.asarray(b) for b in xs])}
        full = x["token_ids"].shape[-1]
        mask = x.get("padding_mask", np.ones_like(x["token_ids"]))
        lengths = mask.reshape(len(mask), -1, full).sum(-1).max(-1)  # the longest choice of multiple-choice rows
        order = np.argsort(lengths, kind="stable")
        keys, logits = [], []
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            length = min(full, -(-int(lengths[rows].max()) // multiple) * multiple)
            part = {key: value[rows][..., :length] for key, value in x.items()}
            part = part if isinstance(xs[0], dict) else part["token_ids"]
            out = np.asarray(forward(part), np.float32)
            if out.ndim == 3:  # logits per position: back to the full length
                out = np.pad(out, ((0, 0), (0, full - out.shape[1]), (0, 0)))
            keys.append(row_keys(part).numpy())
            logits.append(out)
        return cls(np.concatenate(keys), np.concatenate(logits))

    def attach(self, *batch):
        """A batch `(x, y[, w])` with `y = {"labels": y, "teacher_logits": ...}` (a tf.data map function)."""
        x, y = batch[0], batch[1]
        index = self._table.lookup(row_keys(x))
        check = tf.debugging.assert_non_negative(index, message="an example the teacher cache does not hold")
        with tf.control_dependencies([check]):
            teacher = tf.gather(self._logits, index)
        if len(self.logits.shape) == 3:  # token logits: cut to this batch's length
            teacher = teacher[:, :tf.shape(y)[1]]
        return (x, {"labels": y, "teacher_logits": teacher}) + tuple(batch[2:])

    def attach_to(self, dataset_fn):
        """`dataset_fn` (`(batch_size, input_context) -> dataset`) whose batches carry the teacher's logits."""
        return lambda batch_size, ctx: dataset_fn(batch_size, ctx).map(self.attach, num_parallel_calls=tf.data.AUTOTUNE)


def masked_augmentation(mask_id, special_ids, fraction, rate, seed=None):
    """A tf.data map over `(x, y[, w])` batches: in `fraction` of the rows, each real token that is not special
    becomes `mask_id` with probability `rate` (Tang et al. 2019's masking augmentation for distillation)."""
    special = tf.constant(sorted(i for i in special_ids if i is not None), tf.int32)

    def augment(*batch):
        x = dict(batch[0])
        ids = x["token_ids"]
        rows = tf.random.uniform(tf.shape(ids)[:1], seed=seed) < fraction
        tokens = tf.random.uniform(tf.shape(ids), seed=None if seed is None else seed + 1) < rate
        real = tf.cast(x["padding_mask"], tf.bool) & ~tf.reduce_any(ids[..., None] == special, axis=-1)
        x["token_ids"] = tf.where(rows[:, None] & tokens & real, tf.constant(mask_id, ids.dtype), ids)
        return (x,) + tuple(batch[1:])

    return augment


class Distiller(keras.Model):
    """`model.fit` for distillation: trains `student` against `teacher` (frozen), with Keras' `Distiller` names.

    Calling it runs the student; `distiller.student` is the trained model to save or export. Batches are
    `(x, labels[, sample_weight])` as the student's own; the loss is `Distillation`'s, divided by the batch's label
    weight (the Trainer's token-weighted mean).

    Args:
        teacher, student: tfm tasks reading the same token ids with the same number of classes.
        temperature, student_loss_weight, hidden_state_weight, hidden_state_layers, attention_weight: as
            `Distillation` (`hidden_state_layers` default: uniform, student layer i <- teacher (i + 1) * Lt / Ls - 1).
    """

    def __init__(self, teacher, student, temperature=2.0, student_loss_weight=0.5, hidden_state_weight=0.0,
                 hidden_state_layers=None, attention_weight=0.0, name="distiller", **kwargs):
        super().__init__(name=name, **kwargs)
        if hidden_state_weight and not hidden_state_layers:
            from tfm.compression.config import uniform_layer_map

            hidden_state_layers = uniform_layer_map(teacher.backbone.num_layers, student.backbone.num_layers)
        self.teacher, self.student = teacher, student
        self.distillation = Distillation(teacher, temperature, student_loss_weight, hidden_state_weight,
                                         hidden_state_layers, attention_weight)
        self.distillation.check(student)

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def compile(self, optimizer="auto", weighted_metrics="auto", jit_compile=True, **kwargs):
        """As `Task.compile` (AdamW at the student's default learning rate, accuracy); the loss is the distiller's."""
        if optimizer == "auto":
            from tfm.training.optimizer import NO_WEIGHT_DECAY

            optimizer = keras.optimizers.AdamW(self.student.DEFAULT_LEARNING_RATE, weight_decay=0.01)
            optimizer.exclude_from_weight_decay(var_names=NO_WEIGHT_DECAY)
        if weighted_metrics == "auto":
            weighted_metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        super().compile(optimizer=optimizer, weighted_metrics=weighted_metrics, jit_compile=jit_compile, **kwargs)

    def _step(self, data, training):
        from keras.src.losses.loss import scale_loss_for_distribution, unscale_loss_for_distribution

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        total, weight, logits = self.distillation.loss_sums(self.student, x, y, sample_weight, training=training)
        loss = scale_loss_for_distribution(total / ops.maximum(weight, 1e-12))
        self._loss_tracker.update_state(unscale_loss_for_distribution(loss), sample_weight=ops.shape(logits)[0])
        labels = y["labels"] if isinstance(y, dict) else y
        return loss, labels, logits, sample_weight

    def train_step(self, data):
        with tf.GradientTape() as tape:
            loss, labels, logits, sample_weight = self._step(data, training=True)
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_weights  # the student's: the teacher is frozen
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        return self.compute_metrics(None, labels, logits, sample_weight=sample_weight)

    def test_step(self, data):
        _, labels, logits, sample_weight = self._step(data, training=False)
        return self.compute_metrics(None, labels, logits, sample_weight=sample_weight)
