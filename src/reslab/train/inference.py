"""Predictions of a whole split (evaluation commands, distillation checks): one process, in split order."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data import Split
from .precision import autocast_context


@torch.no_grad()
def predict(
    model: nn.Module, split: Split, *, batch_size: int, device: torch.device, precision: str = "fp32"
) -> tuple[Tensor, Tensor]:
    """(predicted classes, true labels) of a whole split, on the CPU, in split order (one process)."""
    model.eval()
    preds, labels = [], []
    for x, y in split.batches(batch_size, shuffle=False, augment=False, device=device):
        with autocast_context(precision, device):
            logits = model(x)
        preds.append(logits.argmax(1).cpu())
        labels.append(y.cpu())
    return torch.cat(preds), torch.cat(labels)


__all__ = ["predict"]
