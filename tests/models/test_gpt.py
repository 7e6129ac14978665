import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import abstract_param_count, keras_hub_preset_params, randomize_weights, run_backbone_test
from tfm.models import GPT_PRESETS, GptBackbone

TINY = {"vocabulary_size": 50, "num_layers": 2, "num_heads": 3, "hidden_dim": 12, "intermediate_dim": 20, "max_sequence_length": 16}


def gpt_param_count(v, l, h, i, p):
    block = (h * 3 * h + 3 * h) + (h * h + h) + (h * i + i) + (i * h + h) + 4 * h
    return (v + p) * h + l * block + 2 * h


def _inputs():
    rng = np.random.default_rng(1)
    return {
        "token_ids": rng.integers(0, 50, (3, 8)).astype("int32"),
        "padding_mask": np.array([[1] * 8, [1] * 6 + [0] * 2, [1] * 3 + [0] * 5], "int32"),
    }


def test_gpt_backbone():
    expected = (50 + 16) * 12 + 2 * 1184 + 24
    assert gpt_param_count(50, 2, 12, 20, 16) == expected
    run_backbone_test(GptBackbone, TINY, _inputs(), (3, 8, 12), expected_num_params=expected)


# KerasHub's published GPT-2 presets (OpenAI's checkpoints, 1024 positions, tied output) and their metadata
# `params`; the literal numbers are also in HF's model cards (124M / 355M / 774M / 1558M).
@pytest.mark.parametrize(
    "name,keras_hub_name,params",
    [("gpt2_small", "gpt2_base_en", 124_439_808), ("gpt2_medium", "gpt2_medium_en", 354_823_168),
     ("gpt2_large", "gpt2_large_en", 774_030_080), ("gpt2_xl", "gpt2_extra_large_en", 1_557_611_200)],
)
def test_gpt2_presets_match_published_parameter_counts(name, keras_hub_name, params):
    assert keras_hub_preset_params("gpt2", keras_hub_name) == params
    # Built abstractly: shapes only, so gpt2_xl costs no 6 GB of weights.
    assert abstract_param_count(lambda: GptBackbone.from_preset(name)) == params


@pytest.mark.parametrize("name", ["gpt3_small", "gpt3_medium", "gpt3_large", "gpt3_xl", "gpt3_2.7b"])
def test_gpt3_presets_match_keras_hub_gpt2_of_the_same_sizes(name):
    # Dense-attention GPT-3 is the GPT-2 architecture at other sizes, so KerasHub's GPT2Backbone is the oracle.
    import keras_hub

    c = {k: v for k, v in GPT_PRESETS[name].items() if k != "dropout"}
    reference = abstract_param_count(lambda: keras_hub.models.GPT2Backbone(**c))
    assert abstract_param_count(lambda: GptBackbone.from_preset(name)) == reference
    # Brown et al. 2020 table 2.1 rounds these to 125M and 2.7B.
    assert reference == {"gpt3_small": 125_226_240, "gpt3_2.7b": 2_651_553_280}.get(name, reference)


def test_cached_decoding_equals_full_forward_and_compiles():
    model = GptBackbone(**TINY, dropout=0.0)
    randomize_weights(model, seed=3)
    token_ids = np.random.default_rng(2).integers(0, 50, (2, 10)).astype("int32")
    full = np.asarray(model({"token_ids": token_ids, "padding_mask": np.ones_like(token_ids)}))

    @tf.function(jit_compile=True)
    def step(ids, cache, index):
        return model.call_with_cache(ids, cache, index)

    # Prefill 4 tokens at once, then one token per compiled step.
    cache = model.init_cache(2, max_length=16)
    hidden, cache = model.call_with_cache(token_ids[:, :4], cache, 0)
    outputs = [np.asarray(hidden)]
    for index in range(4, 10):
        hidden, cache = step(token_ids[:, index : index + 1], cache, tf.constant(index))
        outputs.append(np.asarray(hidden))
    np.testing.assert_allclose(np.concatenate(outputs, axis=1), full, atol=1e-5)
    assert step.experimental_get_tracing_count() == 1  # one compiled step for every position
    assert len(cache) == 2 and tuple(cache[0][0].shape) == (2, 3, 16, 4)
