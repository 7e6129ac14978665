"""The shared helpers must fail on the defects they exist to catch (a helper that cannot fail checks nothing)."""

import keras
import numpy as np
import pytest
from keras import ops

from tests.helpers import assert_output_dtypes, run_backbone_test, run_layer_test, run_task_test
from tfm.models.backbone import Backbone
from tfm.tasks.task import Task


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


@keras.saving.register_keras_serializable(package="tfm_tests")
class TinyClassifier(Task):
    """Dense logits on the pooled output, with one of three defects: `"mixed_logits"` (the head follows the mixed
    policy), `"loss"` (loss_sums disagrees with the compiled loss), `"dead"` (a weight the loss never reaches)."""

    TASK_ARGS = ("num_classes", "defect")

    def __init__(self, backbone, num_classes, defect=None, **kwargs):
        inputs = dict(backbone.input)
        pooled = backbone(inputs)["pooled_output"]
        head_dtype = backbone.dtype_policy if defect == "mixed_logits" else "float32"
        logits = keras.layers.Dense(num_classes, dtype=head_dtype, name="logits")(pooled)
        if defect == "dead":
            # Zero-initialised, so AdamW's weight decay (applied to kernels) cannot move it either.
            dead = keras.layers.Dense(num_classes, kernel_initializer="zeros", dtype="float32", name="dead")(pooled)
            logits = keras.layers.Add(dtype="float32")([logits, ops.multiply(dead, 0.0)])
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.backbone, self.num_classes, self.defect = backbone, num_classes, defect

    def loss_sums(self, y, y_pred, sample_weight=None):
        loss, weight = super().loss_sums(y, y_pred, sample_weight)
        return (loss * 1.01 if self.defect == "loss" else loss), weight


def _run_tiny_task(defect=None, **kwargs):
    backbone = TinyBackbone(vocabulary_size=7, hidden_dim=4)
    return run_task_test(TinyClassifier, {"backbone": backbone, "num_classes": 3, "defect": defect}, INPUTS,
                         np.array([0, 2, 1], "int32"), (3, 3), **kwargs)


def test_task_helper_passes_a_correct_task():
    _run_tiny_task(expected_head_params=4 * 3 + 3)


@pytest.mark.parametrize("defect,kwargs,message", [
    (None, {"expected_head_params": 4 * 3}, None),  # the head has a bias too
    ("mixed_logits", {}, r"\{0: 'bfloat16'\} != \{0: 'float32'\}"),
    ("loss", {}, "Not equal to tolerance rtol=1e-05"),
    ("dead", {}, r"unchanged by the fit step: \['dead/kernel', 'dead/bias'\]"),
])
def test_task_helper_fails_on_a_defective_task(defect, kwargs, message):
    with pytest.raises(AssertionError, match=message):
        _run_tiny_task(defect, **kwargs)
    # The global policy is restored even when a mixed-precision check fails.
    assert keras.config.dtype_policy().name == "float32"


def test_task_helper_accepts_declared_untrained_weights():
    _run_tiny_task("dead", untrained_weights=("dead/kernel", "dead/bias"))
