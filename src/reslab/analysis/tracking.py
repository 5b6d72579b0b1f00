"""Effective depth tracked during training, as a hook of the training engine.

``reslab train`` adds it when the config has an ``analysis`` section::

    analysis:
      track_depth: true   # measure after every `every` epochs (and once before training)
      probe_images: 32    # fixed images from the val split (test when there is none)
      every: 1

Each measurement (``effective_depth.measure_depth``) adds ``depth_mean_path``, ``depth_90`` and
``depth_branch_ratio`` to the epoch's metrics (so they reach metrics.jsonl and TensorBoard); the whole history
goes to ``effective_depth.json`` and ``effective_depth.png`` in the run folder and into every checkpoint, so a
resumed run keeps it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..schema import at_least, option
from ..train.hooks import Hook
from .effective_depth import DepthSnapshot, measure_depth
from .errors import AnalysisError

if TYPE_CHECKING:
    from ..train.config import Config
    from ..train.engine import Trainer

PROBE_SEED = 4242  # the probe images do not move with the run's seed, so runs are measured alike


@dataclass
class TrackingConfig:
    """The ``analysis`` section of a training config."""

    track_depth: bool = option(True, doc="measure the effective depth while training")
    probe_images: int = option(32, at_least(1), "fixed images from the val split (test when there is none)")
    every: int = option(1, at_least(1), "measure after every N epochs (and before the first, after the last)")


SECTION = TrackingConfig  # read by reslab.train.plugins


class EffectiveDepthHook(Hook):
    """Measure branch/shortcut norms and the output's split over path lengths during training."""

    def __init__(self, probe_images: int = 32, every: int = 1) -> None:
        if probe_images < 1 or every < 1:
            raise AnalysisError(f"probe_images and every must be >= 1, got {probe_images}, {every}")
        self.probe_images, self.every = probe_images, every
        self.history: list[DepthSnapshot] = []
        self.probe: torch.Tensor | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        split = trainer.data.val if trainer.data.val is not None else trainer.data.test
        batches = split.batches(self.probe_images, shuffle=True, augment=False, seed=PROBE_SEED,
                                device=trainer.device)
        self.probe = next(iter(batches))[0]
        if not self.history:
            self.history.append(measure_depth(trainer.model, self.probe, trainer.epoch))

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        done = epoch + 1
        if done % self.every and done != trainer.config.train.epochs:
            return
        snapshot = measure_depth(trainer.model, self.probe, done)
        self.history.append(snapshot)
        metrics.update(summarise(snapshot))

    def on_train_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        summary["effective_depth"] = summarise(self.history[-1])
        if trainer.is_main:
            from .report import plot_depth_history

            (trainer.run_dir / "effective_depth.json").write_text(
                json.dumps([s.to_dict() for s in self.history], indent=1) + "\n")
            plot_depth_history({trainer.model.spec.name: [self.history]},
                               trainer.run_dir / "effective_depth.png")

    def state_dict(self) -> dict[str, Any]:
        return {"history": [s.to_dict() for s in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [DepthSnapshot.from_dict(s) for s in state.get("history", [])]


def summarise(snapshot: DepthSnapshot) -> dict[str, float]:
    """The scalar view of a snapshot logged with each epoch."""
    paths = snapshot.paths
    out = {"depth_mean_path": paths.mean_length, "depth_90": float(paths.depth_explaining(0.9))}
    ratios = [b.ratio for b in snapshot.blocks if not math.isnan(b.ratio)]
    if ratios:  # a plain net has no shortcut to compare with
        out["depth_branch_ratio"] = sum(ratios) / len(ratios)
    return out


def make_hook(settings: TrackingConfig, config: Config) -> list[Hook]:
    """The hooks an ``analysis`` config section asks for (``reslab.train.plugins`` calls this)."""
    return [EffectiveDepthHook(settings.probe_images, settings.every)] if settings.track_depth else []
