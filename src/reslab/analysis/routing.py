"""Per-block control over how a residual block joins its branch and its shortcut.

Every block of ``reslab.layers.blocks`` computes ``combine(branch_fn, skip)``: the branch lazily, the shortcut
output (``None`` for a plain block), then the sum, the drop-path regulariser and the ReLU after the sum of
post-activation blocks. The analyses need to intercept exactly that point (zero a branch, stop gradients on
one route, record norms, relabel forward-mode tangents), so they override ``combine`` on block *instances*
for the length of a ``with`` statement. The block classes are untouched, and the original ``combine`` is
still what finishes the computation, so every block kind, shortcut and regulariser is handled the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial

import torch
from torch import nn

from ..build import ResNet
from ..layers.blocks import ResidualBlock
from .errors import AnalysisError

Position = tuple[int, int]  # (stage, index within the stage), as NetSpec.blocks() yields them
BranchFn = Callable[[], torch.Tensor]
# An override receives the block, the lazy branch and the shortcut output, and returns the block's output.
CombineOverride = Callable[[ResidualBlock, BranchFn, "torch.Tensor | None"], torch.Tensor]


def positions(model: ResNet) -> list[Position]:
    """Every block's ``(stage, index)`` in forward order."""
    return [(s, b) for s, b, _ in model.spec.blocks()]


def block_at(model: ResNet, position: Position) -> ResidualBlock:
    """The block at ``(stage, index)``; a position outside the network raises a ``ValueError`` naming it."""
    stage, index = position
    stages = model.stages()
    if not (0 <= stage < len(stages) and 0 <= index < len(stages[stage])):
        raise AnalysisError(f"block {position} does not exist in {model.spec.name} (blocks per stage: "
                            f"{model.spec.blocks_per_stage})")
    return stages[stage][index]


def original_combine(block: ResidualBlock, branch_fn: BranchFn, skip: torch.Tensor | None) -> torch.Tensor:
    """The block's own ``combine``, whatever override is installed on the instance."""
    return type(block).combine(block, branch_fn, skip)


@contextmanager
def override_attribute(module: nn.Module, name: str, value: object) -> Iterator[None]:
    """Set an instance attribute for the length of the ``with`` block, then restore what was there."""
    missing = object()
    previous = module.__dict__.get(name, missing)
    object.__setattr__(module, name, value)
    try:
        yield
    finally:
        if previous is missing:
            del module.__dict__[name]
        else:
            object.__setattr__(module, name, previous)


@contextmanager
def override_combine(overrides: Mapping[ResidualBlock, CombineOverride]) -> Iterator[None]:
    """Replace ``combine`` of the given blocks while the ``with`` block runs (restored even on error)."""
    entered: list[Iterator[None]] = []
    try:
        for block, fn in overrides.items():
            ctx = override_attribute(block, "combine", partial(fn, block))
            ctx.__enter__()
            entered.append(ctx)
        yield
    finally:
        for ctx in reversed(entered):
            ctx.__exit__(None, None, None)


def run_trunk(model: ResNet, x0: torch.Tensor) -> torch.Tensor:
    """The network from the first block's input (the stem's output) to the logits."""
    h = x0
    for stage in model.stages():
        h = stage(h)
    return model.forward_head(model.finish_features(h))
