"""Knowledge distillation (Hinton et al. 2015, arXiv 1503.02531) as a training hook.

A ``distill`` section in a config (``--set distill.teacher=runs/big/model.safetensors``) trains the student on

    (1 - alpha) * CE(student, labels) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)),

T^2 keeping the soft term's gradients on the scale of the hard one's whatever T is. The teacher is any reslab
model file or checkpoint; it sees the student's (augmented) batch, in eval mode, without gradients, under the
run's autocast precision. The run's ``config.yaml`` names the teacher; ``summary.json`` adds its model, size
and the file's SHA-256.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..io import CheckpointError
from ..schema import ConfigError, at_least, in_range, option
from ..train.checkpoint import load_model
from ..train.config import Config
from ..train.engine import Trainer
from ..train.hooks import Hook
from ..train.precision import autocast_context


@dataclass
class DistillConfig:
    teacher: str | None = option(None, doc="the teacher: a reslab model file or checkpoint (required)")
    temperature: float = option(4.0, at_least(0.0, strict=True), "softmax temperature T of both networks")
    alpha: float = option(
        0.9, in_range(0.0, 1.0, high_open=False), "weight of the soft (teacher) term; 1 - alpha weighs the labels"
    )


SECTION = DistillConfig  # the ``distill`` section of a training config (reslab.train.plugins)


def distill_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch (in fp32)."""
    t = temperature
    log_p = F.log_softmax(student.float() / t, dim=1)
    log_q = F.log_softmax(teacher.float() / t, dim=1)
    return F.kl_div(log_p, log_q, reduction="batchmean", log_target=True) * (t * t)


class DistillHook(Hook):
    """Mixes the teacher's softened outputs into the loss through the engine's loss seam."""

    def __init__(self, config: DistillConfig) -> None:
        if config.teacher is None:
            raise ConfigError("distill.teacher: required (a reslab model file or checkpoint)")
        self.config = config
        self.path = Path(config.teacher)
        try:
            self.teacher = load_model(self.path)
        except CheckpointError as err:
            raise ConfigError(f"distill.teacher: {err}") from None
        self.teacher.requires_grad_(False)

    def on_train_start(self, trainer: Trainer) -> None:
        student, teacher = trainer.model.spec, self.teacher.spec
        if (teacher.num_classes, teacher.in_chans) != (student.num_classes, student.in_chans):
            raise ConfigError(
                f"distill.teacher: {self.path} holds {teacher.name} for {teacher.in_chans}-channel images and "
                f"{teacher.num_classes} classes; the student needs {student.in_chans} and {student.num_classes}"
            )
        fmt = torch.channels_last if trainer.channels_last else torch.contiguous_format
        self.teacher = self.teacher.to(trainer.device, memory_format=fmt).eval()

    def loss(self, trainer: Trainer, inputs: Tensor, targets: Tensor, logits: Tensor, loss: Tensor) -> Tensor:
        with torch.no_grad(), autocast_context(trainer.precision, trainer.device):
            teacher_logits = self.teacher(inputs)
        soft = distill_loss(logits, teacher_logits, self.config.temperature)
        hard = trainer.criterion(logits.float(), targets)
        # Replace the criterion's share only, so that terms other hooks added stay in.
        return loss + self.config.alpha * (soft - hard)

    def on_train_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        summary["distill"] = {
            **asdict(self.config),
            "teacher_model": self.teacher.spec.name,
            "teacher_params": sum(p.numel() for p in self.teacher.parameters()),
            "teacher_sha256": hashlib.sha256(self.path.read_bytes()).hexdigest(),
        }


def make_hook(settings: DistillConfig, config: Config) -> DistillHook:
    """The hook for a config's ``distill`` section (``reslab.train.plugins`` calls this)."""
    return DistillHook(settings)


__all__ = ["SECTION", "DistillConfig", "DistillHook", "distill_loss", "make_hook"]
