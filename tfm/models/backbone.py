"""What BERT and GPT backbones share: config round trip, presets and KerasHub preset directories."""

import os

import keras


class Backbone(keras.Model):
    """Base of tfm's functional backbones.

    Subclasses build a functional graph in `__init__`, list their hyperparameters in
    `HYPERPARAMETERS` (the KerasHub vocabulary) and their named sizes in `PRESETS`.
    """

    HYPERPARAMETERS = ()
    PRESETS = {}
    KERAS_HUB_CLASS = None  # the KerasHub backbone class this one converts from (`from_preset(DIR)`)

    def get_config(self):
        # Not chained to keras.Model: a functional model's config is a layer graph, which the
        # subclass constructor cannot take. The hyperparameters rebuild the same graph.
        config = {"name": self.name, "trainable": self.trainable}
        config["dtype"] = keras.dtype_policies.serialize(self.dtype_policy)
        config.update({key: getattr(self, key) for key in self.HYPERPARAMETERS})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)

    @classmethod
    def presets(cls):
        """Names of the built-in size presets."""
        return sorted(cls.PRESETS)

    @classmethod
    def from_preset(cls, preset, **overrides):
        """Builds a randomly initialised backbone of a named size, or loads a KerasHub preset directory.

        Args:
            preset: str, a name from `presets()` (e.g. `"bert_mini"`), or a local directory written by
                KerasHub's `save_to_preset` (its config and weights are loaded and converted).
            **overrides: hyperparameters replacing the preset's (e.g. `vocabulary_size=8000`).
        """
        if os.path.isdir(preset):
            from tfm.convert.keras_hub_weights import backbone_from_keras_hub_preset

            if overrides:
                raise ValueError(f"Overrides {sorted(overrides)} cannot be applied to pretrained weights in {preset}.")
            return backbone_from_keras_hub_preset(preset, cls)
        if preset not in cls.PRESETS:
            raise ValueError(
                f"Unknown {cls.__name__} preset {preset!r}. Valid presets: {cls.presets()}, "
                f"or a local KerasHub preset directory."
            )
        unknown = set(overrides) - set(cls.HYPERPARAMETERS) - {"dtype", "name"}
        if unknown:
            raise ValueError(f"Unknown overrides {sorted(unknown)}; valid keys: {list(cls.HYPERPARAMETERS)}.")
        return cls(**{**cls.PRESETS[preset], **overrides})
