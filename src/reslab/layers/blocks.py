"""Residual blocks, one class per block kind of the spec.

Attribute names follow torchvision (``conv1``, ``bn1``, ..., ``downsample``) so that ImageNet ResNets
exchange state dicts with torchvision. Every block splits into a residual branch and a shortcut; the sum
goes through the block's drop-path regulariser, if any, so that a dropped branch is never computed.

Each block class declares its ``layout``: which of its layers read and write which channels. It is the one
place that names a block's layers for the code that edits or penalises them (``reslab.edit``, ResBuilder's
penalties), so a new block kind is a class here and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..spec import BlockSpec
from .drop import make_drop
from .norm import NormLayer
from .shortcuts import ZeroPadShortcut, make_shortcut

# Channel sets of a block: its input, its output, and its internal widths (``spec.widths[k]``).
IN, OUT = "in", "out"
INTERNAL = ("w0", "w1")


@dataclass(frozen=True)
class BlockLayout:
    """How a block kind's parameterised layers index its channel sets.

    ``modules`` maps a layer's name inside the block to the channel set of each leading tensor dimension
    (conv weights: output then input channels; BN: its channels). ``internal_bns[k]`` normalises internal
    width k and is always followed by a ReLU. ``out_producer`` ends the residual branch (a BN, or a conv for
    branches that end in one); ``in_bn`` is the pre-activation BN on the block's input, if any.
    """

    modules: tuple[tuple[str, tuple[str, ...]], ...]
    internal_bns: tuple[str, ...]
    out_producer: str
    in_bn: str | None = None


def conv3x3(in_chans: int, out_chans: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chans, out_chans, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def conv1x1(in_chans: int, out_chans: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chans, out_chans, 1, stride=stride, bias=False)


class ResidualBlock(nn.Module):
    """Shared wiring: ``out = act(drop(branch, shortcut))``. Subclasses define ``branch``."""

    post_act = True
    layout: BlockLayout  # declared by every block kind
    # A projection shortcut's conv and BN (``make_shortcut``'s Sequential; pre-activation blocks have no BN).
    projection = ("downsample.0", "downsample.1")

    def __init__(self, spec: BlockSpec, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        self.spec = spec
        self.downsample = make_shortcut(spec.shortcut, spec.in_chans, spec.out_chans, spec.stride,
                                        norm=not spec.preact, norm_layer=norm_layer)
        self.drop = make_drop(spec)
        self.relu = nn.ReLU(inplace=True)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def branch_end(self) -> nn.BatchNorm2d | nn.Conv2d:
        """The layer that ends the residual branch (``layout.out_producer``): its scale is the branch's."""
        return getattr(self, self.layout.out_producer)

    def zero_init_(self) -> None:
        """Make the branch output zero, so the block starts as its shortcut (torchvision's
        ``zero_init_residual``; ResBuilder's near-identity insertion): the ending BN's scale, or the ending
        conv's weight for branches that end in a conv."""
        nn.init.zeros_(self.branch_end().weight)

    def out_width(self) -> int:
        """Channels of the branch output, read from the module (a pruner may have cut them)."""
        return self.branch_end().weight.shape[0]

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.downsample, ZeroPadShortcut):
            return self.downsample(x, self.out_width())
        return self.downsample(x)

    def combine(self, branch_fn: Callable[[], torch.Tensor], skip: torch.Tensor | None) -> torch.Tensor:
        if skip is not None and self.drop is None:
            out = branch_fn() + skip
            return self.relu(out) if self.post_act else out  # in place: the sum is a fresh tensor
        # Out of place otherwise: a dropped branch returns the shortcut (maybe the block's own input), and
        # analyses may hand in a branch output that autograd forbids modifying.
        out = branch_fn() if skip is None else self.drop(branch_fn, skip)
        return torch.relu(out) if self.post_act else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = None if self.downsample is None else self.shortcut(x)
        return self.combine(lambda: self.branch(x), skip)


class BasicBlock(ResidualBlock):
    """conv3x3-BN-ReLU-conv3x3-BN, sum, ReLU (He et al. 2016; torchvision's BasicBlock)."""

    layout = BlockLayout((("conv1", ("w0", IN)), ("bn1", ("w0",)), ("conv2", (OUT, "w0")), ("bn2", (OUT,))),
                         internal_bns=("bn1",), out_producer="bn2")

    def __init__(self, spec: BlockSpec, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__(spec, norm_layer)
        (mid,) = spec.widths
        self.conv1 = conv3x3(spec.in_chans, mid, spec.stride)
        self.bn1 = norm_layer(mid)
        self.conv2 = conv3x3(mid, spec.out_chans)
        self.bn2 = norm_layer(spec.out_chans)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))


class Bottleneck(ResidualBlock):
    """1x1-3x3-1x1 bottleneck with the stride on the 3x3 conv (torchvision's "ResNet v1.5")."""

    layout = BlockLayout((("conv1", ("w0", IN)), ("bn1", ("w0",)), ("conv2", ("w1", "w0")), ("bn2", ("w1",)),
                          ("conv3", (OUT, "w1")), ("bn3", (OUT,))),
                         internal_bns=("bn1", "bn2"), out_producer="bn3")

    def __init__(self, spec: BlockSpec, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__(spec, norm_layer)
        w1, w2 = spec.widths
        self.conv1 = conv1x1(spec.in_chans, w1)
        self.bn1 = norm_layer(w1)
        self.conv2 = conv3x3(w1, w2, spec.stride, spec.dilation)
        self.bn2 = norm_layer(w2)
        self.conv3 = conv1x1(w2, spec.out_chans)
        self.bn3 = norm_layer(spec.out_chans)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


class WideBasic(ResidualBlock):
    """Pre-activation wide block (Zagoruyko & Komodakis 2016): BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3.

    As in the reference code, a projection shortcut takes the pre-activated input, so BN1 runs once.
    The branch ends in a conv, not a BN, so zero-initialising it zeroes ``conv2``.
    """

    post_act = False
    layout = BlockLayout((("bn1", (IN,)), ("conv1", ("w0", IN)), ("bn2", ("w0",)), ("conv2", (OUT, "w0"))),
                         internal_bns=("bn2",), out_producer="conv2", in_bn="bn1")

    def __init__(self, spec: BlockSpec, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__(spec, norm_layer)
        (mid,) = spec.widths
        self.bn1 = norm_layer(spec.in_chans)
        self.conv1 = conv3x3(spec.in_chans, mid, spec.stride)
        self.bn2 = norm_layer(mid)
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()
        self.conv2 = conv3x3(mid, spec.out_chans)

    def branch_from_preact(self, pre: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.dropout(self.relu(self.bn2(self.conv1(pre)))))

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch_from_preact(self.relu(self.bn1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ReLU must not be in-place here: x itself is the identity shortcut.
        pre = torch.relu(self.bn1(x))
        if self.downsample is None:
            skip = None
        elif isinstance(self.downsample, nn.Sequential):  # projection of the pre-activated input
            skip = self.downsample(pre)
        else:
            skip = self.shortcut(x)
        return self.combine(lambda: self.branch_from_preact(pre), skip)


class PyramidBasic(ResidualBlock):
    """PyramidNet basic block (Han et al. 2017): BN-conv3x3-BN-ReLU-conv3x3-BN, no ReLU after the sum."""

    post_act = False
    layout = BlockLayout((("bn1", (IN,)), ("conv1", ("w0", IN)), ("bn2", ("w0",)), ("conv2", (OUT, "w0")),
                          ("bn3", (OUT,))),
                         internal_bns=("bn2",), out_producer="bn3", in_bn="bn1")

    def __init__(self, spec: BlockSpec, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__(spec, norm_layer)
        (mid,) = spec.widths
        self.bn1 = norm_layer(spec.in_chans)
        self.conv1 = conv3x3(spec.in_chans, mid, spec.stride)
        self.bn2 = norm_layer(mid)
        self.conv2 = conv3x3(mid, spec.out_chans)
        self.bn3 = norm_layer(spec.out_chans)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.bn1(x))
        return self.bn3(self.conv2(self.relu(self.bn2(out))))


class PyramidBottleneck(ResidualBlock):
    """PyramidNet bottleneck: BN-1x1-BN-ReLU-3x3-BN-ReLU-1x1-BN, no ReLU after the sum."""

    post_act = False
    layout = BlockLayout((("bn1", (IN,)), ("conv1", ("w0", IN)), ("bn2", ("w0",)), ("conv2", ("w1", "w0")),
                          ("bn3", ("w1",)), ("conv3", (OUT, "w1")), ("bn4", (OUT,))),
                         internal_bns=("bn2", "bn3"), out_producer="bn4", in_bn="bn1")

    def __init__(self, spec: BlockSpec, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__(spec, norm_layer)
        w1, w2 = spec.widths
        self.bn1 = norm_layer(spec.in_chans)
        self.conv1 = conv1x1(spec.in_chans, w1)
        self.bn2 = norm_layer(w1)
        self.conv2 = conv3x3(w1, w2, spec.stride)
        self.bn3 = norm_layer(w2)
        self.conv3 = conv1x1(w2, spec.out_chans)
        self.bn4 = norm_layer(spec.out_chans)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.bn1(x))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return self.bn4(out)


BLOCKS: dict[str, type[ResidualBlock]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
    "wide_basic": WideBasic,
    "pyramid_basic": PyramidBasic,
    "pyramid_bottleneck": PyramidBottleneck,
}


def make_block(spec: BlockSpec, norm_layer: NormLayer = nn.BatchNorm2d) -> ResidualBlock:
    return BLOCKS[spec.kind](spec, norm_layer)
