"""One training run from config to summary: build the ``Trainer``, fit it, release it.

``reslab train``, ``reslab build`` and ``analyze compare`` all start runs here, so a stop (Ctrl-C, SIGTERM)
reads the same everywhere: one ``RunStopped`` that names the run folder and what was saved.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data import DataBundle
from .config import Config
from .engine import Trainer
from .hooks import Hook
from .rundir import RunStopped, Terminated


def run_training(config: Config, hooks: Sequence[Hook] = (), *, data: DataBundle | None = None,
                 run_dir: str | Path | None = None, resume: bool = False,
                 overwrite: bool = False) -> tuple[Trainer, dict[str, Any]]:
    """Build a ``Trainer`` (arguments as there), fit it and release it; returns it (model, run folder) and the
    summary. Ctrl-C or SIGTERM during ``fit`` come out as ``RunStopped``, which says what was saved."""
    trainer = Trainer(config, hooks, data=data, run_dir=run_dir, resume=resume, overwrite=overwrite)
    try:
        return trainer, trainer.fit()
    except KeyboardInterrupt as stop:
        raise RunStopped(trainer.run_dir, trainer.epochs_saved, isinstance(stop, Terminated)) from None
    finally:
        trainer.close()


__all__ = ["run_training"]
