"""Weight import/export with other libraries (KerasHub now; HF, Google BERT, GPT-2 later).

Names are imported on first use: `tfm.convert.keras_hub_weights` (what backbones' `from_preset` needs)
loads without the task modules.
"""

from tfm._lazy import lazy_exports

_EXPORTS = {"from_keras_hub": "tfm.convert.keras_hub", "to_keras_hub": "tfm.convert.keras_hub",
            "load_keras_hub_preset": "tfm.convert.keras_hub"}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
