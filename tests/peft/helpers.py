"""Tiny models and inputs for the PEFT tests."""

import numpy as np

import tfm

BATCH = {"token_ids": np.array([[2, 7, 9, 11, 3, 0, 0], [2, 5, 6, 8, 12, 14, 3], [2, 4, 3, 0, 0, 0, 0]], "int32"),
         "segment_ids": np.array([[0] * 7, [0, 0, 0, 1, 1, 1, 1], [0] * 7], "int32"),
         "padding_mask": np.array([[1, 1, 1, 1, 1, 0, 0], [1] * 7, [1, 1, 1, 0, 0, 0, 0]], "int32")}
METHODS = {  # method -> apply() keywords for a tiny model
    "lora": {"rank": 2, "alpha": 4, "targets": ["query", "value", "output"]},
    "adalora": {"rank": 3, "target_rank": 1, "alpha": 4, "targets": ["key", "intermediate"], "total_step": 10},
    "houlsby": {"bottleneck_dim": 4},
    "pfeiffer": {"bottleneck_dim": 4},
    "prompt": {"num_virtual_tokens": 3},
    "prefix": {"num_virtual_tokens": 3},
}


def tiny_bert(**overrides):
    return tfm.models.BertBackbone(**{"vocabulary_size": 20, "num_layers": 2, "num_heads": 2, "hidden_dim": 8,
                                      "intermediate_dim": 16, "dropout": 0.0, "max_sequence_length": 16,
                                      **overrides})


def classifier(pooling="pooler", **overrides):
    return tfm.tasks.TextClassifier(tiny_bert(**overrides), num_classes=3, pooling=pooling, dropout=0.0)


def spread(task, name="default", std=0.5, seed=0):
    """Gives the adapter's trainable weights random values (std `std`), so its effect is not zero."""
    rng = np.random.default_rng(seed)
    for v in tfm.peft.core.adapter_variables(task, name, trainable_only=True):
        v.assign(rng.normal(0.0, std, v.shape).astype("float32"))
    return task
