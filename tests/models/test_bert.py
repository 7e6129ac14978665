import numpy as np
import pytest

from tests.helpers import abstract_param_count, keras_hub_preset_params, run_backbone_test
from tfm.models import BERT_PRESETS, BertBackbone

TINY = {"vocabulary_size": 50, "num_layers": 2, "num_heads": 3, "hidden_dim": 12, "intermediate_dim": 20, "max_sequence_length": 16}


def _inputs(batch=3, length=8):
    rng = np.random.default_rng(0)
    return {
        "token_ids": rng.integers(0, 50, (batch, length)).astype("int32"),
        "segment_ids": rng.integers(0, 2, (batch, length)).astype("int32"),
        "padding_mask": np.array([[1] * length, [1] * 5 + [0] * (length - 5), [1] * 2 + [0] * (length - 2)], "int32"),
    }


def bert_param_count(v, l, h, i, p, s=2):
    embeddings = (v + p + s) * h + 2 * h
    block = (h * 3 * h + 3 * h) + (h * h + h) + (h * i + i) + (i * h + h) + 4 * h
    return embeddings + l * block + (h * h + h)


def test_bert_backbone():
    # 50+16+2=68 rows x 12 + LN 24 = 840; block 1184; pooler 156 -> 840 + 2*1184 + 156
    expected = 840 + 2 * 1184 + 156
    assert bert_param_count(50, 2, 12, 20, 16) == expected
    run_backbone_test(
        BertBackbone,
        TINY,
        _inputs(),
        {"sequence_output": (3, 8, 12), "pooled_output": (3, 12)},
        expected_num_params=expected,
    )


def test_padding_does_not_leak_into_real_tokens():
    model = BertBackbone(**TINY, dropout=0.0)
    x = _inputs()
    out = np.asarray(model(x)["sequence_output"])
    x2 = dict(x, token_ids=x["token_ids"].copy())
    x2["token_ids"][1, 5:] = 7  # only padded positions change
    np.testing.assert_allclose(np.asarray(model(x2)["sequence_output"])[1, :5], out[1, :5], atol=1e-5)


# KerasHub's published uncased English presets (Google's checkpoints) and their metadata `params`.
@pytest.mark.parametrize(
    "name,keras_hub_name,params",
    [("bert_tiny", "bert_tiny_en_uncased", 4_385_920), ("bert_small", "bert_small_en_uncased", 28_763_648),
     ("bert_medium", "bert_medium_en_uncased", 41_373_184), ("bert_base", "bert_base_en_uncased", 109_482_240),
     ("bert_large", "bert_large_en_uncased", 335_141_888)],
)
def test_presets_match_published_parameter_counts(name, keras_hub_name, params):
    assert keras_hub_preset_params("bert", keras_hub_name) == params
    assert abstract_param_count(lambda: BertBackbone.from_preset(name)) == params


def test_bert_mini_matches_keras_hub_of_the_same_sizes():
    import keras_hub

    c = {k: v for k, v in BERT_PRESETS["bert_mini"].items() if k != "dropout"}
    assert (c["num_layers"], c["hidden_dim"], c["intermediate_dim"]) == (4, 256, 1024)
    reference = abstract_param_count(lambda: keras_hub.models.BertBackbone(**c))
    assert reference == bert_param_count(30522, 4, 256, 1024, 512) == 11_170_560
    assert BertBackbone.from_preset("bert_mini").count_params() == reference  # built for real: small


def test_from_preset_errors_name_the_valid_choices():
    with pytest.raises(ValueError, match=r"Unknown BertBackbone preset 'bert_huge'.*bert_base"):
        BertBackbone.from_preset("bert_huge")
    with pytest.raises(ValueError, match=r"Unknown overrides \['hidden_size'\]"):
        BertBackbone.from_preset("bert_tiny", hidden_size=64)
    assert BertBackbone.from_preset("bert_tiny", vocabulary_size=100).token_embedding.embeddings.shape == (100, 128)
