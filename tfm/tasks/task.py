"""Base of the task models: a functional keras.Model that owns a backbone and serializes it."""

import keras


class Task(keras.Model):
    """A backbone plus a head, built as a functional model so `fit`, `predict` and `.keras` files work.

    Subclasses call `super().__init__(inputs=..., outputs=..., **kwargs)` and then set
    `self.backbone` and their own hyperparameters listed in `TASK_ARGS`.
    """

    TASK_ARGS = ()

    def get_config(self):
        # Functional-graph configs cannot be fed back to a subclass constructor, so serialize the
        # constructor arguments instead (as KerasHub tasks do).
        config = {"name": self.name, "trainable": self.trainable}
        config["backbone"] = keras.saving.serialize_keras_object(self.backbone)
        config.update({key: getattr(self, key) for key in self.TASK_ARGS})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
