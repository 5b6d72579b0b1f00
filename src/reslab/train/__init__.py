"""Training: config, loop, hooks, checkpoints, multi-process runs and reports.

``run_training(load_config("configs/digits.yaml"))`` (``Trainer(config).fit()``, then ``close()``) is what
``reslab train`` does.
"""

from .checkpoint import Checkpoint, load_checkpoint, load_model, save_checkpoint
from .config import (
    Config,
    ConfigError,
    ModelConfig,
    OptimConfig,
    OutputConfig,
    ScheduleConfig,
    TrainConfig,
    apply_overrides,
    load_config,
)
from .engine import Trainer
from .hooks import Hook
from .optim import lr_factor_fn, make_optimizer, make_scheduler, param_groups
from .plugins import PLUGIN_SECTIONS
from .run import run_training
from .rundir import NonFiniteLoss, RunStopped, TrainingError

__all__ = [
    "PLUGIN_SECTIONS",
    "Checkpoint",
    "Config",
    "ConfigError",
    "Hook",
    "ModelConfig",
    "NonFiniteLoss",
    "OptimConfig",
    "OutputConfig",
    "RunStopped",
    "ScheduleConfig",
    "TrainConfig",
    "Trainer",
    "TrainingError",
    "apply_overrides",
    "load_checkpoint",
    "load_config",
    "load_model",
    "lr_factor_fn",
    "make_optimizer",
    "make_scheduler",
    "param_groups",
    "run_training",
    "save_checkpoint",
]
