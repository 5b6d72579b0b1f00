"""TensorBoard for a run (an optional package): the writer, and the hyper-parameters with the final metrics.

Every point's x is the global step: the per-step loss needs it, and epoch metrics sit at their epoch's last step.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from .config import Config, ConfigError


def open_writer(setting: bool | None, run_dir: Path, purge_step: int | None) -> Any:
    """A SummaryWriter into ``run_dir/tensorboard`` as ``output.tensorboard`` asks (None: if installed)."""
    installed = importlib.util.find_spec("tensorboard") is not None
    if setting is None:
        setting = installed
    if not setting:
        return None
    if not installed:
        raise ConfigError(
            "output.tensorboard: true, but the tensorboard package is not installed; install it "
            "(pip install 'reslab[tensorboard]') or set output.tensorboard: false"
        )
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge_step)


def flat_hparams(config: Config) -> dict[str, bool | int | float | str]:
    """The config as flat ``section.key`` values of the types TensorBoard accepts (others as text)."""
    out: dict[str, bool | int | float | str] = {}

    def walk(d: dict[str, Any], prefix: str) -> None:
        for key, value in d.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = value if isinstance(value, bool | int | float | str) else str(value)

    walk(config.to_dict(), "")
    return out


def log_hparams(writer: Any, config: Config, summary: dict[str, Any], step: int) -> None:
    """Write the config beside the test and best val accuracy into the run's own event file (if any)."""
    if writer is None:
        return
    from torch.utils.tensorboard.summary import hparams

    metrics = {
        f"hparam/{k}": float(summary[k])
        for k in ("test_accuracy", "test_loss", "best_val_accuracy")
        if summary.get(k) is not None
    }
    # SummaryWriter.add_hparams would open a sub-folder per call; the run's own writer keeps one run.
    for item in hparams(flat_hparams(config), metrics):
        writer._get_file_writer().add_summary(item)
    for key, value in metrics.items():
        writer.add_scalar(key, value, step)
    writer.flush()
