"""The shared helpers must fail on the defects they exist to catch (a helper that cannot fail checks nothing)."""

import keras
import numpy as np
import pytest
from keras import ops

from tests.helpers import assert_output_dtypes, run_backbone_test, run_layer_test
from tfm.models.backbone import Backbone


@keras.saving.register_keras_serializable(package="tfm_tests")
class CastOutput(keras.layers.Layer):
    """Casts its input to float32 when `broken`, ignoring the dtype policy (the defect under test)."""

    def __init__(self, broken=False, **kwargs):
        super().__init__(**kwargs)
        self.broken = broken

    def call(self, x):
        return ops.cast(x, "float32") if self.broken else ops.cast(x, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "broken": self.broken}


@keras.saving.register_keras_serializable(package="tfm_tests")
class TinyBackbone(Backbone):
    """Embedding -> Dense -> {"sequence_output", "pooled_output"}; `broken` casts the pooled output to float32."""

    HYPERPARAMETERS = ("vocabulary_size", "hidden_dim", "broken")

    def __init__(self, vocabulary_size, hidden_dim, broken=False, dtype=None, **kwargs):
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        x = keras.layers.Embedding(vocabulary_size, hidden_dim, dtype=dtype, name="embedding")(token_ids)
        x = keras.layers.Dense(hidden_dim, dtype=dtype, name="dense")(x)
        pooled = CastOutput(broken, dtype=dtype, name="cast")(x[:, 0])
        super().__init__(inputs={"token_ids": token_ids}, outputs={"sequence_output": x, "pooled_output": pooled},
                         dtype=dtype, **kwargs)
        self.vocabulary_size, self.hidden_dim, self.broken = vocabulary_size, hidden_dim, broken


INPUTS = {"token_ids": np.arange(18, dtype="int32").reshape(3, 6) % 7}
SHAPES = {"sequence_output": (3, 6, 4), "pooled_output": (3, 4)}
PARAMS = 7 * 4 + 4 * 4 + 4


def test_backbone_helper_passes_a_correct_model():
    run_backbone_test(TinyBackbone, {"vocabulary_size": 7, "hidden_dim": 4}, INPUTS, SHAPES, PARAMS)


def test_backbone_helper_fails_on_a_model_that_ignores_its_policy():
    with pytest.raises(AssertionError, match=r"'pooled_output': 'float32'.*'pooled_output': 'bfloat16'"):
        run_backbone_test(TinyBackbone, {"vocabulary_size": 7, "hidden_dim": 4, "broken": True}, INPUTS, SHAPES,
                          PARAMS)
    # Declaring the output as float32 by contract accepts it; then a compute-dtype output there fails.
    run_backbone_test(TinyBackbone, {"vocabulary_size": 7, "hidden_dim": 4, "broken": True}, INPUTS, SHAPES,
                      PARAMS, float32_outputs=("pooled_output",))
    with pytest.raises(AssertionError, match="'pooled_output': 'float32'"):
        run_backbone_test(TinyBackbone, {"vocabulary_size": 7, "hidden_dim": 4}, INPUTS, SHAPES, PARAMS,
                          float32_outputs=("pooled_output",))


@pytest.mark.parametrize("compute", ["bfloat16", "float16"])
def test_output_dtypes_are_checked_per_output_for_each_compute_dtype(compute):
    half, full = np.zeros(2, compute), np.zeros(2, "float32")
    assert_output_dtypes({"a": ops.convert_to_tensor(half)}, compute)
    with pytest.raises(AssertionError, match=rf"\{{'a': 'float32'\}} != \{{'a': '{compute}'\}}"):
        assert_output_dtypes({"a": ops.convert_to_tensor(full)}, compute)
    with pytest.raises(AssertionError, match=r"\[1\] are not outputs"):
        assert_output_dtypes(ops.convert_to_tensor(half), compute, float32_outputs=(1,))


def test_layer_helper_fails_on_a_layer_that_ignores_its_policy():
    x = np.ones((2, 3), "float32")
    run_layer_test(CastOutput, {}, x, (2, 3), expected_num_trainable_weights=0)
    with pytest.raises(AssertionError, match=r"\{0: 'float32'\} != \{0: 'bfloat16'\}"):
        run_layer_test(CastOutput, {"broken": True}, x, (2, 3), expected_num_trainable_weights=0)
