import keras_hub
import numpy as np
import pytest

from tests.helpers import randomize_weights
from tfm.convert import from_keras_hub, to_keras_hub
from tfm.models import BertBackbone, GptBackbone
from tfm.tasks import CausalLM, MaskedLM

SHAPES = [  # (layers, heads, hidden, intermediate): odd head counts and widths included
    (1, 1, 8, 16),
    (2, 3, 12, 20),
    (3, 5, 20, 7),
]


def _bert_inputs(vocab):
    rng = np.random.default_rng(0)
    return {
        "token_ids": rng.integers(0, vocab, (3, 9)).astype("int32"),
        "segment_ids": rng.integers(0, 2, (3, 9)).astype("int32"),
        "padding_mask": np.array([[1] * 9, [1] * 6 + [0] * 3, [1] * 2 + [0] * 7], "int32"),
    }


def _max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


@pytest.mark.parametrize("layers,heads,hidden,intermediate", SHAPES)
def test_bert_parity_both_directions(layers, heads, hidden, intermediate):
    kh = keras_hub.models.BertBackbone(
        vocabulary_size=37, num_layers=layers, num_heads=heads, hidden_dim=hidden,
        intermediate_dim=intermediate, max_sequence_length=12, num_segments=3,
    )
    randomize_weights(kh, seed=layers)
    ours = from_keras_hub(kh)
    assert isinstance(ours, BertBackbone) and ours.activation == "gelu_approximate"
    assert ours.count_params() == kh.count_params()
    x = _bert_inputs(37)
    expected, got = kh(x), ours(x)
    for key in ("sequence_output", "pooled_output"):
        assert _max_diff(got[key], expected[key]) < 1e-5

    randomize_weights(ours, seed=10 + layers)
    back = to_keras_hub(ours)
    assert isinstance(back, keras_hub.models.BertBackbone)
    for key in ("sequence_output", "pooled_output"):
        assert _max_diff(back(x)[key], ours(x)[key]) < 1e-5


@pytest.mark.parametrize("layers,heads,hidden,intermediate", SHAPES)
def test_gpt2_parity_both_directions(layers, heads, hidden, intermediate):
    kh = keras_hub.models.GPT2Backbone(
        vocabulary_size=41, num_layers=layers, num_heads=heads, hidden_dim=hidden,
        intermediate_dim=intermediate, max_sequence_length=12,
    )
    randomize_weights(kh, seed=layers)
    ours = from_keras_hub(kh)
    assert isinstance(ours, GptBackbone) and ours.count_params() == kh.count_params()
    x = {k: v for k, v in _bert_inputs(41).items() if k != "segment_ids"}
    assert _max_diff(ours(x), kh(x)) < 1e-5
    randomize_weights(ours, seed=20 + layers)
    back = to_keras_hub(ours)
    assert _max_diff(back(x), ours(x)) < 1e-5


def test_masked_lm_and_causal_lm_parity():
    kh_bert = keras_hub.models.BertBackbone(vocabulary_size=37, num_layers=2, num_heads=3, hidden_dim=12, intermediate_dim=20)
    kh_mlm = keras_hub.models.BertMaskedLM(kh_bert)
    randomize_weights(kh_mlm, seed=5)
    mlm = from_keras_hub(kh_mlm)
    assert isinstance(mlm, MaskedLM) and mlm.count_params() == kh_mlm.count_params()
    x = dict(_bert_inputs(37), mask_positions=np.array([[1, 4], [0, 5], [1, 1]], "int32"))
    assert _max_diff(mlm(x), kh_mlm(x)) < 1e-5
    randomize_weights(mlm, seed=6)
    back = to_keras_hub(mlm)
    assert isinstance(back, keras_hub.models.BertMaskedLM) and _max_diff(back(x), mlm(x)) < 1e-5

    kh_gpt = keras_hub.models.GPT2Backbone(vocabulary_size=41, num_layers=2, num_heads=3, hidden_dim=12, intermediate_dim=20, max_sequence_length=12)
    kh_clm = keras_hub.models.GPT2CausalLM(kh_gpt)
    randomize_weights(kh_clm, seed=7)
    clm = from_keras_hub(kh_clm)
    assert isinstance(clm, CausalLM)
    gx = {k: v for k, v in _bert_inputs(41).items() if k != "segment_ids"}
    assert _max_diff(clm(gx), kh_clm(gx)) < 1e-5
    back = to_keras_hub(clm)
    assert isinstance(back, keras_hub.models.GPT2CausalLM) and _max_diff(back(gx), clm(gx)) < 1e-5


def test_exact_gelu_bert_needs_explicit_approximation():
    ours = BertBackbone(vocabulary_size=20, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16)
    with pytest.raises(ValueError, match="allow_gelu_approximation=True"):
        to_keras_hub(ours)
    x = {k: v[:, :6] % 20 for k, v in _bert_inputs(20).items()}
    approx = to_keras_hub(ours, allow_gelu_approximation=True)
    # Same weights, tanh vs erf GELU: close but not identical.
    assert 0 < _max_diff(approx(x)["sequence_output"], ours(x)["sequence_output"]) < 1e-2


def test_from_preset_accepts_a_keras_hub_preset_directory(tmp_path):
    kh = keras_hub.models.BertBackbone(vocabulary_size=37, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16)
    randomize_weights(kh, seed=9)
    kh.save_to_preset(str(tmp_path / "preset"))
    ours = BertBackbone.from_preset(str(tmp_path / "preset"))
    x = {k: v % 37 for k, v in _bert_inputs(37).items()}
    assert _max_diff(ours(x)["sequence_output"], kh(x)["sequence_output"]) < 1e-5
    with pytest.raises(ValueError, match="holds a BertBackbone, not a GptBackbone"):
        GptBackbone.from_preset(str(tmp_path / "preset"))


def test_from_keras_hub_rejects_other_models():
    with pytest.raises(TypeError, match="from_keras_hub supports"):
        from_keras_hub(object())
