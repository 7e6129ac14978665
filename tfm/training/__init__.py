"""tfm.training: config dataclasses, strategies, the Trainer and `run_experiment` (what `tfm train` runs).

Names are imported on first use, so `import tfm.training` (and reading a config) does not import TensorFlow.

Example:
    >>> from tfm.training import ExperimentConfig, apply_overrides
    >>> apply_overrides(ExperimentConfig(), ["trainer.steps=20"]).trainer.steps
    20
"""

from tfm._lazy import lazy_exports

# Public name -> the module that defines it.
_EXPORTS = {
    "ExperimentConfig": "tfm.training.config",
    "TaskConfig": "tfm.training.config",
    "ModelConfig": "tfm.training.config",
    "TokenizerConfig": "tfm.training.config",
    "DataConfig": "tfm.training.config",
    "TrainerConfig": "tfm.training.config",
    "load_config": "tfm.training.config",
    "save_config": "tfm.training.config",
    "pretrain_config": "tfm.training.config",
    "apply_overrides": "tfm.training.config_core",
    "ConfigError": "tfm.training.config_core",
    "Trainer": "tfm.training.trainer",
    "NonFiniteLossError": "tfm.training.trainer",
    "create_strategy": "tfm.training.strategy",
    "WarmupDecay": "tfm.training.optimizer",
    "create_optimizer": "tfm.training.optimizer",
    "AdamW": "tfm.training.optimizer",
    "layer_decay_multipliers": "tfm.training.optimizer",
    "run_experiment": "tfm.training.experiment",
    "build_task": "tfm.training.experiment",
    "load_run": "tfm.training.run_dir",
    "Run": "tfm.training.run_dir",
    "evaluate_run": "tfm.training.evaluation",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
