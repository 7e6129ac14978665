"""`trainer.clip_norm`: the Trainer clips the token-weighted mean gradient by its global norm, the norm it logs.

After one AdamW step the first moments are m = (1 - beta_1) * g, so they show the gradient the optimizer got:
clipped to norm c, every moment is the unclipped one times c / ||g||; below the threshold, they are equal.
"""

import numpy as np
import pytest

from tests.training.toy_training import model_fn, toy_dataset
from tfm.training.config import TrainerConfig
from tfm.training.trainer import Trainer


def _one_step(tmp_path, name, clip_norm):
    cfg = TrainerConfig(steps=4, batch_size=8, learning_rate=1e-2, log_every=1, eval_every=100, checkpoint_every=100,
                        strategy="default", clip_norm=clip_norm, jit_compile=False)
    trainer = Trainer(cfg, str(tmp_path / name), lambda: model_fn("mlm"), lambda b, c: toy_dataset("mlm", b, c),
                      verbose=False)
    _, grad_norm, _ = trainer.train_step()
    moments = np.concatenate([m.numpy().ravel() for m in trainer.optimizer._momentums])
    return float(grad_norm), moments / (1 - cfg.adam_beta_1)  # the gradient the optimizer applied


def test_clip_norm_scales_the_applied_gradient_to_the_threshold_and_logs_the_unclipped_norm(tmp_path):
    norm, unclipped = _one_step(tmp_path, "none", None)
    assert norm == pytest.approx(np.linalg.norm(unclipped), rel=1e-5)  # the logged norm is the gradient's
    clip = norm / 4
    clipped_norm, clipped = _one_step(tmp_path, "clipped", clip)
    assert clipped_norm == pytest.approx(norm, rel=1e-6)  # logged before clipping
    np.testing.assert_allclose(clipped, unclipped * (clip / norm), rtol=1e-5, atol=1e-9)
    assert np.linalg.norm(clipped) == pytest.approx(clip, rel=1e-5)
    _, loose = _one_step(tmp_path, "loose", norm * 10)  # above the norm: nothing changes
    np.testing.assert_allclose(loose, unclipped, rtol=1e-6, atol=1e-9)
