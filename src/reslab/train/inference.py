"""Predictions of a whole split (evaluation commands, distillation checks): one process, in split order."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data import Split
from .precision import autocast_context


def eval_logits(model: nn.Module, x: Tensor, *, flip: bool = False) -> Tensor:
    """fp32 logits of a batch; with ``flip``, averaged with those of its horizontal mirror (test-time flip,
    which suits data whose training augmentation flips too)."""
    logits = model(x).float()
    if flip:
        logits = (logits + model(x.flip(3)).float()) / 2
    return logits


@torch.no_grad()
def predict(
    model: nn.Module,
    split: Split,
    *,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
    flip: bool = False,
) -> tuple[Tensor, Tensor]:
    """(predicted classes, true labels) of a whole split, on the CPU, in split order (one process)."""
    model.eval()
    preds, labels = [], []
    for x, y in split.batches(batch_size, shuffle=False, augment=False, device=device):
        with autocast_context(precision, device):
            logits = eval_logits(model, x, flip=flip)
        preds.append(logits.argmax(1).cpu())
        labels.append(y.cpu())
    return torch.cat(preds), torch.cat(labels)


__all__ = ["eval_logits", "predict"]
