import numpy as np
import pytest

from tests.helpers import run_backbone_test
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


def test_bert_base_matches_published_parameter_count():
    # Devlin et al. 2019: BERT-base ~110M with the 30,522-token uncased vocabulary (exactly 109,482,240).
    model = BertBackbone.from_preset("bert_base")
    assert model.count_params() == 109_482_240
    assert bert_param_count(30522, 12, 768, 3072, 512) == 109_482_240


@pytest.mark.parametrize(
    "name,layers,hidden,params",
    [("bert_tiny", 2, 128, 4_385_920), ("bert_mini", 4, 256, 11_170_560), ("bert_small", 4, 512, 28_763_648),
     ("bert_medium", 8, 512, 41_373_184), ("bert_large", 24, 1024, 335_141_888)],
)
def test_preset_shapes(name, layers, hidden, params):
    cfg = BERT_PRESETS[name]
    assert (cfg["num_layers"], cfg["hidden_dim"], cfg["intermediate_dim"]) == (layers, hidden, 4 * hidden)
    assert bert_param_count(30522, layers, hidden, 4 * hidden, 512) == params
    if hidden <= 256:  # build only the small ones in tests
        assert BertBackbone.from_preset(name).count_params() == params


def test_from_preset_errors_name_the_valid_choices():
    with pytest.raises(ValueError, match=r"Unknown BertBackbone preset 'bert_huge'.*bert_base"):
        BertBackbone.from_preset("bert_huge")
    with pytest.raises(ValueError, match=r"Unknown overrides \['hidden_size'\]"):
        BertBackbone.from_preset("bert_tiny", hidden_size=64)
    assert BertBackbone.from_preset("bert_tiny", vocabulary_size=100).token_embedding.embeddings.shape == (100, 128)
