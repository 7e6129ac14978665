"""Weight import/export with other libraries (KerasHub now; HF, Google BERT, GPT-2 later)."""

from tfm.convert.keras_hub import from_keras_hub, load_keras_hub_preset, to_keras_hub

__all__ = ["from_keras_hub", "load_keras_hub_preset", "to_keras_hub"]
