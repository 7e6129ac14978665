"""`trainer.ema_momentum`: Polyak-averaged weights for evaluation, the last checkpoint and exports."""

import numpy as np
import pytest

from tests.training.toy_training import model_fn, toy_dataset
from tfm.errors import InputError
from tfm.training.config import TrainerConfig
from tfm.training.trainer import Trainer

MOMENTUM = 0.6  # far from 0 and 1, so averaged, raw and unaveraged-trained weights all differ visibly


def _trainer(tmp_path, name, steps=4, **overrides):
    cfg = TrainerConfig(**{"steps": steps, "batch_size": 8, "learning_rate": 1e-2, "log_every": 1, "eval_every": 2,
                           "checkpoint_every": 100, "strategy": "default", "ema_momentum": MOMENTUM, **overrides})
    return Trainer(cfg, str(tmp_path / name), lambda: model_fn("mlm"), lambda b, c: toy_dataset("mlm", b, c),
                   eval_dataset_fn=lambda b, c: toy_dataset("mlm", b, c).take(2), verbose=False)


def test_final_weights_are_the_moving_average_of_the_raw_trajectory(tmp_path):
    # The raw trajectory, one step at a time (no evaluation in between).
    stepped = _trainer(tmp_path, "stepped")
    trajectory = []
    for _ in range(4):
        stepped.train_step()
        trajectory.append([v.numpy().copy() for v in stepped.model.trainable_variables])
    # The moving average by hand: the first step starts it at the weights (Keras' convention).
    expected = [w.copy() for w in trajectory[0]]
    for weights in trajectory[1:]:
        expected = [MOMENTUM * e + (1 - MOMENTUM) * w for e, w in zip(expected, weights)]

    # The same run through train(): its evaluation at step 2 swaps the averages in and the raw weights back,
    # so training continues from the raw trajectory and ends holding the averages.
    trained = _trainer(tmp_path, "trained")
    trained.train()
    final = [v.numpy() for v in trained.model.trainable_variables]
    for got, want, raw in zip(final, expected, trajectory[-1]):
        np.testing.assert_allclose(got, want, atol=2e-6)
    gaps = [np.abs(want - raw).max() for want, raw in zip(expected, trajectory[-1])]
    assert max(gaps) > 1e-3  # the averages really are not the last raw weights


def test_evaluation_during_training_reads_the_averages_and_leaves_the_raw_weights(tmp_path):
    trainer = _trainer(tmp_path, "run", steps=10)
    for _ in range(3):
        trainer.train_step()
    raw = [v.numpy().copy() for v in trainer.model.trainable_variables]
    averages = [a.numpy().copy() for a in trainer.optimizer._model_variables_moving_average]
    with trainer._averaged_weights():
        inside = [v.numpy().copy() for v in trainer.model.trainable_variables]
        averaged_loss = trainer.evaluate()["loss"]
    after = [v.numpy() for v in trainer.model.trainable_variables]
    raw_loss = trainer.evaluate()["loss"]
    for a, b in zip(inside, averages):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(after, raw):
        np.testing.assert_array_equal(a, b)
    assert abs(averaged_loss - raw_loss) > 1e-4


def test_run_killed_after_a_checkpoint_resumes_to_the_same_averaged_weights(tmp_path):
    # Without XLA: three Trainers of a toy model spend most of their time compiling (the XLA step with averages
    # is what the test above runs).
    whole = _trainer(tmp_path, "whole", checkpoint_every=2, jit_compile=False)
    whole.train()
    killed = _trainer(tmp_path, "killed", checkpoint_every=2, jit_compile=False)
    for _ in range(2):
        killed.train_step()
    killed.save_checkpoint()  # what the loop does at step 2; the process then dies
    del killed
    resumed = _trainer(tmp_path, "killed", checkpoint_every=2, jit_compile=False)
    assert resumed.restored_from is not None and int(resumed.step.numpy()) == 2
    resumed.train()
    # The averages travel in the optimizer's checkpoint: lost ones would restart from zeros (or the weights).
    for got, want in zip(resumed.model.trainable_variables, whole.model.trainable_variables):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=2e-6)


def test_momentum_outside_zero_one_is_an_error():
    with pytest.raises(InputError, match="ema_momentum"):
        TrainerConfig(ema_momentum=1.0)
