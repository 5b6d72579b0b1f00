"""Lesion study (Veit, Wilber & Belongie 2016, "Residual networks behave like ensembles of relatively shallow
networks"): delete blocks of a trained network at test time and watch the accuracy.

What "deleting block b" means here, for every kind of block reslab builds:

* A block with a shortcut (identity, projection or zero-padded): its residual branch is replaced by zeros and
  everything else stays, so the block computes ``shortcut(x)`` followed by the block's own post-sum ReLU, if
  it has one ("zero_branch"). For an identity block whose input is non-negative (or that has no ReLU after
  the sum) this is exactly the network with the block removed from its spec; ``remove_blocks`` builds that
  network and the tests check the two agree. For a downsampling block it keeps only the shortcut (the
  zero-padded / subsampled input, or the 1x1 projection), since the spec has no block that could take over
  its stride.
* A plain block (no shortcut; Veit's VGG comparison) that keeps the tensor's shape is bypassed: its output is
  its input ("bypass"), which again equals removing it from the spec. A plain block that changes the shape
  (stride 2 or a new width) has no input-shaped replacement and cannot be lesioned (kind ``None``).

The lesion is a runtime mask (``lesioned``), so hundreds of lesions need no rebuilding; ``remove_blocks`` is
the spec edit with weight carry that it must agree with.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..build import ResNet
from ..edit import drop_blocks, why_not_deletable
from ..layers.blocks import ResidualBlock
from ..spec import BlockSpec, NetSpec
from .errors import AnalysisError
from .evaluate import Batch, accuracy
from .routing import Position, block_at, original_combine, override_attribute, override_combine

ZERO_BRANCH = "zero_branch"
BYPASS = "bypass"


def shape_preserving(block: BlockSpec) -> bool:
    return block.stride == 1 and block.in_chans == block.out_chans


def lesion_kind(block: BlockSpec) -> str | None:
    """How a block is lesioned: ``"zero_branch"``, ``"bypass"``, or ``None`` when it cannot be."""
    if block.shortcut != "none":
        return ZERO_BRANCH
    return BYPASS if shape_preserving(block) else None


POOLS = ("shape_preserving", "lesionable")


def lesion_pool(spec: NetSpec, pool: str = "shape_preserving") -> list[Position]:
    """The blocks random multi-block lesions draw from.

    ``shape_preserving`` (the default): the blocks that keep the tensor's shape. They are the same positions
    in a residual net and in its plain twin, so the two are lesioned on equal terms. ``lesionable``: every
    block that can be lesioned, which adds the downsampling blocks of a residual net (needed for PyramidNets,
    whose every block widens).
    """
    if pool not in POOLS:
        raise AnalysisError(f"lesion pool must be one of {POOLS}, got {pool!r}")
    if pool == "lesionable":
        return [(s, b) for s, b, blk in spec.blocks() if lesion_kind(blk) is not None]
    return [(s, b) for s, b, blk in spec.blocks() if shape_preserving(blk)]


def _zero_branch(block: ResidualBlock, branch_fn, skip: torch.Tensor | None) -> torch.Tensor:
    # The block's own combine with a zero branch: drop-path scaling and the post-sum ReLU act as in the
    # unlesioned block, and the branch itself is never computed.
    return original_combine(block, lambda: torch.zeros_like(skip), skip)


def _bypass(x: torch.Tensor) -> torch.Tensor:
    return x


@contextmanager
def lesioned(model: ResNet, blocks: Iterable[Position]) -> Iterator[ResNet]:
    """Run ``model`` with the given blocks lesioned (see the module docstring) inside the ``with`` block."""
    blocks = sorted(set(blocks))
    overrides = {}
    with ExitStack() as stack:
        for position in blocks:
            block = block_at(model, position)
            kind = lesion_kind(block.spec)
            if kind is None:
                raise AnalysisError(f"block {position} of {model.spec.name} is plain and changes the shape "
                                    f"({block.spec.in_chans}->{block.spec.out_chans} channels, stride "
                                    f"{block.spec.stride}); nothing input-shaped can replace it")
            if kind == ZERO_BRANCH:
                overrides[block] = _zero_branch
            else:
                stack.enter_context(override_attribute(block, "forward", _bypass))
        stack.enter_context(override_combine(overrides))
        yield model


# -- the spec edit the runtime lesion must agree with --------------------------------------------------------
def why_not_removable(spec: NetSpec, position: Position) -> str | None:
    """Why removing the block from the spec would not equal lesioning it, or ``None`` when it would."""
    stage, index = position
    block = spec.stages[stage][index]
    if block.shortcut == "none":
        return None if shape_preserving(block) else "it is a plain block that changes the tensor's shape"
    return why_not_deletable(spec, stage, index)


def remove_blocks(model: ResNet, blocks: Iterable[Position]) -> ResNet:
    """A new network whose spec lacks the given blocks, carrying every other weight over from ``model``."""
    spec = model.spec
    doomed = set(blocks)
    for position in sorted(doomed):
        block_at(model, position)  # range check with a clear message
        reason = why_not_removable(spec, position)
        if reason is not None:
            raise AnalysisError(f"block {position} of {spec.name} cannot be removed from the spec: {reason}")
    return drop_blocks(model, doomed, name=f"{spec.name}-lesioned").model


# -- the study -----------------------------------------------------------------------------------------------
@dataclass
class SingleLesion:
    position: Position
    kind: str | None  # None: the block cannot be lesioned (plain and shape-changing)
    accuracy: float | None


@dataclass
class LesionResult:
    """Accuracy of one trained network under single-block and random k-block lesions."""

    model: str
    num_blocks: int
    baseline: float
    single: list[SingleLesion]
    pool: list[Position]
    random: dict[int, list[float]] = field(default_factory=dict)  # k -> accuracy of each sampled set

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["random"] = {str(k): v for k, v in self.random.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LesionResult:
        single = [SingleLesion(tuple(s["position"]), s["kind"], s["accuracy"]) for s in d["single"]]
        return cls(d["model"], d["num_blocks"], d["baseline"], single, [tuple(p) for p in d["pool"]],
                   {int(k): v for k, v in d["random"].items()})


def lesion_sets(pool: Sequence[Position], k: int, samples: int,
                rng: random.Random) -> list[tuple[Position, ...]]:
    """``samples`` random k-subsets of ``pool``, or every subset when there are no more than that."""
    if math.comb(len(pool), k) <= samples:
        return list(itertools.combinations(pool, k))
    return [tuple(sorted(rng.sample(list(pool), k))) for _ in range(samples)]


def lesion_study(model: ResNet, batches: Sequence[Batch], ks: Iterable[int] | None = None, samples: int = 10,
                 seed: int = 0, pool: str = "shape_preserving") -> LesionResult:
    """Single-block lesions of every block, then ``samples`` random sets of k blocks from ``lesion_pool(spec,
    pool)`` for each k in ``ks`` (default: 1 up to the pool size)."""
    spec = model.spec
    pool_name, pool = pool, lesion_pool(spec, pool)
    ks = list(range(1, len(pool) + 1)) if ks is None else sorted(set(ks))
    for k in ks:
        if not 1 <= k <= len(pool):
            raise AnalysisError(f"lesion: k={k} is outside 1..{len(pool)} (the size of the {pool_name!r} "
                                f"pool of {spec.name})")
    result = LesionResult(spec.name, spec.num_blocks, accuracy(model, batches), [], pool)
    for s, b, block in spec.blocks():
        kind = lesion_kind(block)
        acc = None
        if kind is not None:
            with lesioned(model, [(s, b)]):
                acc = accuracy(model, batches)
        result.single.append(SingleLesion((s, b), kind, acc))
    rng = random.Random(seed)
    for k in ks:
        accs = []
        for chosen in lesion_sets(pool, k, samples, rng):
            with lesioned(model, chosen):
                accs.append(accuracy(model, batches))
        result.random[k] = accs
    return result
