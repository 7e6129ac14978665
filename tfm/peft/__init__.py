"""Parameter-efficient fine-tuning on tfm's own layers: LoRA, AdaLoRA, Houlsby and Pfeiffer adapters, prompt
tuning and prefix tuning, applied to a built task model by one call (`apply`) or a config's `peft:` section.

>>> clf = tfm.tasks.TextClassifier(tfm.models.BertBackbone.from_preset("bert_tiny", vocabulary_size=100), 2)
>>> clf = tfm.peft.apply(clf, method="houlsby", bottleneck_dim=8)
>>> tfm.peft.parameter_counts(clf)["peft"]  # 2 layers x 2 adapters x (2*128*8 + 8 + 128)
8736

Only the config module loads eagerly (config parsing needs no TensorFlow); the rest on first use.
"""

import importlib

from tfm.peft.config import METHODS, TARGETS, PeftConfig  # noqa: F401

_LAZY = {
    "apply": "tfm.peft.core", "set_adapter": "tfm.peft.core", "merge": "tfm.peft.core",
    "unmerge": "tfm.peft.core", "parameter_counts": "tfm.peft.core", "active_adapter": "tfm.peft.core",
    "as_config": "tfm.peft.core",
    "save_adapter": "tfm.peft.files", "load_adapter": "tfm.peft.files",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tfm.peft' has no attribute {name!r}")
