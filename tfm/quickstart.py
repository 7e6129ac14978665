"""`make quickstart`: builds a small BERT and GPT, runs a forward pass, prints parameter counts.

(The pretraining job replaces this once the training driver lands.)
"""

import numpy as np


def run_quickstart():
    """Builds bert_tiny and a 2-layer GPT, runs each on a batch, prints shapes and parameter counts."""
    import tfm

    bert = tfm.models.BertBackbone.from_preset("bert_tiny")
    ids = np.random.default_rng(0).integers(5, bert.vocabulary_size, (2, 16)).astype("int32")
    out = bert({"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids)})
    print(f"bert_tiny: {bert.count_params():,} parameters; sequence_output {tuple(out['sequence_output'].shape)}")
    gpt = tfm.models.GptBackbone.from_preset("gpt2_small", num_layers=2)
    hidden = gpt({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    print(f"gpt2_small (2 layers): {gpt.count_params():,} parameters; sequence_output {tuple(hidden.shape)}")
    return 0
