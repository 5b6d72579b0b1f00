"""Shortcut paths of residual blocks: identity, 1x1 projection, and zero-padded identity."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .norm import NormLayer


class ZeroPadShortcut(nn.Module):
    """Identity shortcut that subsamples spatially and appends zero channels (no parameters).

    ``pool="avg"`` is PyramidNet's 2x2 average pooling on stride 2; ``pool="subsample"`` is He et al.'s
    option A (take every second pixel). ``ceil_mode`` keeps the size equal to a strided 3x3 conv on odd inputs.
    """

    def __init__(self, in_chans: int, out_chans: int, stride: int, pool: str) -> None:
        super().__init__()
        self.in_chans, self.out_chans, self.stride, self.pool = in_chans, out_chans, stride, pool

    def forward(self, x: torch.Tensor, out_chans: int | None = None) -> torch.Tensor:
        """``x`` subsampled and zero-padded to ``out_chans`` channels (the block's branch width, which the block
        passes: after a structured pruner cut channels, neither count is the built one)."""
        if self.stride == 2:
            x = F.avg_pool2d(x, 2, ceil_mode=True) if self.pool == "avg" else x[:, :, ::2, ::2]
        # No branch on the count: torch.fx (the depth analyses) traces the shape symbolically.
        return F.pad(x, (0, 0, 0, 0, 0, (self.out_chans if out_chans is None else out_chans) - x.shape[1]))

    def extra_repr(self) -> str:
        return f"{self.in_chans}->{self.out_chans}, stride={self.stride}, pool={self.pool}"


def make_shortcut(kind: str, in_chans: int, out_chans: int, stride: int, norm: bool = True,
                  norm_layer: NormLayer = nn.BatchNorm2d) -> nn.Module | None:
    """Build a shortcut module; ``None`` means the block has no shortcut (plain network).

    A projection is ``Sequential(conv1x1, bn)`` so its keys are torchvision's ``downsample.0/1``;
    pre-activation blocks (``norm=False``) use the bare conv, as in the WRN reference code.
    """
    if kind == "none":
        return None
    if kind == "identity":
        return nn.Identity()
    if kind == "projection":
        conv = nn.Conv2d(in_chans, out_chans, 1, stride=stride, bias=False)
        return nn.Sequential(conv, norm_layer(out_chans)) if norm else nn.Sequential(conv)
    if kind in ("pad_avgpool", "pad_subsample"):
        return ZeroPadShortcut(in_chans, out_chans, stride, "avg" if kind == "pad_avgpool" else "subsample")
    raise ValueError(f"unknown shortcut kind {kind!r}")
