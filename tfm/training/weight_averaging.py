"""The Trainer's weight averaging (`trainer.ema_momentum`): Keras' optimizer EMA, read out for evaluation and
export without disturbing the raw weights that training goes on from."""

import contextlib


class WeightAveraging:
    """Mixed into `Trainer`: needs `self.optimizer`, `self.model`, `self.strategy`, `self.step` and `self.config`."""

    def _ema_optimizer(self):
        """The optimizer holding weight averages (`trainer.ema_momentum`) not yet written into the model, or None."""
        optimizer = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        if not optimizer.use_ema or int(self.step.numpy()) >= self.config.steps:
            return None  # no averaging, or the finished run's weights already are the averages
        return optimizer

    def _finalize_weights(self):
        """Writes the moving averages into the model's weights for good, as Keras' `fit` does at its end."""
        optimizer = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        if optimizer.use_ema:
            with self.strategy.scope():
                optimizer.finalize_variable_values(self.model.trainable_variables)

    @contextlib.contextmanager
    def _averaged_weights(self):
        """Inside the block the model holds the moving averages; after it, the raw weights training goes on from."""
        optimizer = self._ema_optimizer()
        if optimizer is None:
            yield
            return
        variables = self.model.trainable_variables
        raw = [v.numpy() for v in variables]
        with self.strategy.scope():
            optimizer.finalize_variable_values(variables)
        try:
            yield
        finally:
            with self.strategy.scope():
                for variable, value in zip(variables, raw):
                    variable.assign(value)
