"""The Trainer under mixed_bfloat16 and mixed_float16 against float32: a few steps of the toy masked LM."""

import keras
import numpy as np
import pytest

from tests.training.toy_training import STEPS, model_fn, toy_dataset
from tfm.training.config import TrainerConfig
from tfm.training.trainer import Trainer


def _train(tmp_path, policy):
    cfg = TrainerConfig(steps=STEPS, batch_size=8, learning_rate=1e-2, log_every=1, eval_every=1000,
                        checkpoint_every=1000, mixed_precision=policy, strategy="default")
    trainer = Trainer(cfg, str(tmp_path / policy), lambda: model_fn("mlm"), lambda b, c: toy_dataset("mlm", b, c),
                      verbose=False)
    losses, norms = [], []
    for _ in range(STEPS):
        loss, grad_norm, _ = trainer.train_step()
        losses.append(float(loss))
        norms.append(float(grad_norm))
    return trainer, np.array(losses), np.array(norms)


@pytest.fixture(scope="module")
def float32(tmp_path_factory):
    keras.config.set_dtype_policy("float32")
    return _train(tmp_path_factory.mktemp("f32"), "float32")


# Relative rounding: bf16 keeps 8 mantissa bits (2**-8 ~ 0.4% per op), fp16 11 bits (2**-11 ~ 0.05%). The loss
# is a mean over ~22 tokens, so its error averages down (measured: 1e-4 bf16, 4e-5 fp16 relative); the gradient
# norm comes out of the backward pass in the compute dtype (measured 3e-3 bf16, 3e-4 fp16).
@pytest.mark.parametrize("policy, loss_rtol, norm_rtol", [("mixed_bfloat16", 2e-3, 1e-2),
                                                          ("mixed_float16", 3e-4, 2e-3)])
def test_mixed_precision_losses_and_grad_norm_match_float32(float32, tmp_path, policy, loss_rtol, norm_rtol):
    _, f32_losses, f32_norms = float32
    trainer, losses, norms = _train(tmp_path, policy)
    # Each step moves the loss by far more than the tolerance, so a skipped or wrong update would show.
    assert np.abs(np.diff(f32_losses)).min() > 3 * loss_rtol * f32_losses[0]
    np.testing.assert_allclose(losses, f32_losses, rtol=loss_rtol)
    # The logged norm is of the unscaled gradients (fp16: not multiplied by the 2**15 loss scale).
    np.testing.assert_allclose(norms, f32_norms, rtol=norm_rtol)
    model = trainer.model
    assert {v.dtype for v in model.trainable_variables} == {"float32"}
    assert model.backbone.dtype_policy.compute_dtype == policy.split("_")[1]
    optimizer = trainer.optimizer
    if policy == "mixed_float16":
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        assert float(optimizer.dynamic_scale) == 2.0**15  # no step overflowed (none skipped, scale not halved)
    else:
        assert not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
