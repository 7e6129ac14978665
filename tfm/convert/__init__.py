"""Weights in and out: KerasHub presets, Hugging Face / sentence-transformers directories (and the Hub), Google
BERT and OpenAI GPT-2 TF checkpoints; one module per source, dispatched by `tfm.convert.presets`.

Names are imported on first use: `tfm.convert.keras_hub_weights` (what backbones' `from_preset` needs)
loads without the task modules.
"""

from tfm._lazy import lazy_exports

_EXPORTS = {"from_keras_hub": "tfm.convert.keras_hub", "to_keras_hub": "tfm.convert.keras_hub",
            "load_keras_hub_preset": "tfm.convert.keras_hub", "export_to_hf": "tfm.convert.hugging_face",
            "load_backbone": "tfm.convert.presets", "load_task": "tfm.convert.presets",
            "load_tokenizer": "tfm.convert.presets", "fetch_pypi_model": "tfm.convert.pypi_models",
            "load_hf_tokenizer": "tfm.data.hf_tokenizers", "save_hf_tokenizer": "tfm.data.hf_tokenizers"}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
