import numpy as np

from tests.helpers import assert_allclose_structure
import keras
from tfm.models import BertBackbone, GptBackbone
from tfm.tasks import CausalLM, MaskedLM

BERT = {"vocabulary_size": 30, "num_layers": 1, "num_heads": 2, "hidden_dim": 8, "intermediate_dim": 16, "max_sequence_length": 12}


def test_masked_lm_structure_and_save_load(tmp_path):
    backbone = BertBackbone(**BERT)
    model = MaskedLM(backbone)
    # Head adds dense 8x8+8, LayerNorm 16, output bias 30 on top of the backbone; embeddings stay tied.
    assert model.count_params() == backbone.count_params() + 72 + 16 + 30
    x = {
        "token_ids": np.arange(20).reshape(2, 10).astype("int32") % 30,
        "segment_ids": np.zeros((2, 10), "int32"),
        "padding_mask": np.ones((2, 10), "int32"),
        "mask_positions": np.array([[0, 3, 9], [1, 1, 2]], "int32"),
    }
    logits = model(x)
    assert tuple(logits.shape) == (2, 3, 30) and logits.dtype == "float32"
    model.save(tmp_path / "mlm.keras")
    restored = keras.saving.load_model(tmp_path / "mlm.keras")
    assert type(restored) is MaskedLM and type(restored.backbone) is BertBackbone
    assert_allclose_structure(restored(x), logits, atol=0, rtol=0)


def test_causal_lm_cache_logits_match_full_forward(tmp_path):
    backbone = GptBackbone(vocabulary_size=30, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=12, dropout=0.0)
    model = CausalLM(backbone)
    assert model.count_params() == backbone.count_params()  # the output projection is the tied embedding
    ids = np.arange(14).reshape(2, 7).astype("int32") % 30
    full = np.asarray(model({"token_ids": ids, "padding_mask": np.ones_like(ids)}))
    logits, hidden, cache = model.call_with_cache(ids, backbone.init_cache(2, 12), 0)
    np.testing.assert_allclose(np.asarray(logits), full, atol=1e-5)
    model.save(tmp_path / "clm.keras")
    restored = keras.saving.load_model(tmp_path / "clm.keras")
    np.testing.assert_array_equal(np.asarray(restored({"token_ids": ids, "padding_mask": np.ones_like(ids)})), full)
