"""The normalisation layer a spec names (``NetSpec.norm``)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision.ops import FrozenBatchNorm2d

NormLayer = Callable[[int], nn.Module]

NORM_LAYERS: dict[str, NormLayer] = {"batch": nn.BatchNorm2d, "frozen_batch": FrozenBatchNorm2d}


def norm_name(layer: str | type) -> str:
    """The spec's name for a norm layer given as a name or, as torchvision takes it, a class."""
    for name, cls in NORM_LAYERS.items():
        if layer == name or layer is cls:
            return name
    raise ValueError(f"norm_layer: must be one of {', '.join(NORM_LAYERS)} (or nn.BatchNorm2d, "
                     f"torchvision.ops.FrozenBatchNorm2d), got {layer!r}")
