"""Regularisers that randomly drop or shake residual branches.

Each is a module called as ``drop(branch_fn, skip)``: ``branch_fn`` computes the residual branch lazily, so a
dropped branch costs no compute, and ``skip`` is the shortcut output (already zero-padded to the branch's
channels). Conventions, shared by all three (see ``docs/regularisers.md``):

* Scaling follows the papers, not the "inverted" variant: training uses the branch as is (or drops it),
  evaluation multiplies it by its expected training coefficient (``survival`` for stochastic depth).
* The keep/drop gate ``b_l`` is drawn once per forward pass (per mini-batch) and per block, as in Huang et al.
  2016 and the authors' Torch code. In eager mode it is drawn from torch's CPU generator, so a seeded run is
  repeatable, the engine's saved ``torch.get_rng_state()`` resumes it, and deciding whether to skip needs no
  device sync; a dropped branch is then not computed at all.
* Under ``torch.compile`` a Python-level skip would split the graph at every block, so while compiling the
  gate is drawn on the input's device as a 0/1 tensor that multiplies the branch: the same distribution, one
  graph, but the dropped branch is computed (and its batch norms update their running statistics).
* A skipped branch is not in the autograd graph: under DistributedDataParallel use
  ``find_unused_parameters=True`` whenever a block uses ``stochastic_depth`` or ``separated``. The engine keeps
  its parameters' gradients as zeros (not ``None``), so the optimizer still applies weight decay and momentum
  to a dropped block, as the papers' code does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..spec import BlockSpec

BranchFn = Callable[[], torch.Tensor]
SHAKE_LEVELS = ("batch", "image", "channel", "pixel")


def bernoulli(p: float) -> bool:
    """One Bernoulli(p) draw from torch's CPU generator: a host value, so skipping costs no device sync."""
    return bool(torch.rand(()) < p)


def bernoulli_gate(p: float, like: torch.Tensor) -> torch.Tensor:
    """One Bernoulli(p) draw as a 0-d 0/1 tensor on ``like``'s device (the graph-friendly gate)."""
    return (torch.rand((), device=like.device) < p).to(like.dtype)


class StochasticDepth(nn.Module):
    """Huang et al. 2016 ("ResDrop"): in training the branch is kept with probability ``survival`` for the
    whole batch and otherwise skipped (not computed); eval scales it by ``survival``, its expectation."""

    def __init__(self, survival: float) -> None:
        super().__init__()
        if not 0.0 < survival <= 1.0:
            raise ValueError(f"survival must be in (0, 1], got {survival!r}")
        self.survival = survival

    def forward(self, branch_fn: BranchFn, skip: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return skip + self.survival * branch_fn()
        if torch.compiler.is_compiling():
            return skip + bernoulli_gate(self.survival, skip) * branch_fn()
        if bernoulli(self.survival):
            return skip + branch_fn()
        return skip

    def extra_repr(self) -> str:
        return f"survival={self.survival}"


class SeparatedStochasticDepth(nn.Module):
    """Yamada, Iwamura & Kise 2016 (PyramidSepDrop): the branch output has more channels than the block input,
    and the skip is the input zero-padded to match. Channels ``[:split]`` (added to the input) and channels
    ``[split:]`` (filling the zero padding) are each kept with probability ``survival``, by two independent
    per-batch draws, in that order. Eval scales both parts by ``survival``, which is their expectation.

    Only when both parts are dropped is the branch skipped; when one is kept the whole branch is computed and
    the dropped part zeroed (its last conv's share of the compute is not saved).
    """

    def __init__(self, survival: float, split: int) -> None:
        super().__init__()
        if not 0.0 < survival <= 1.0:
            raise ValueError(f"survival must be in (0, 1], got {survival!r}")
        if split < 1:
            raise ValueError(f"split must be a positive channel index, got {split!r}")
        self.survival = survival
        self.split = split

    def forward(self, branch_fn: BranchFn, skip: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return skip + self.survival * branch_fn()
        if torch.compiler.is_compiling():
            return skip + self._channel_gate(skip) * branch_fn()
        keep_input_part = bernoulli(self.survival)
        keep_new_part = bernoulli(self.survival)
        if not (keep_input_part or keep_new_part):
            return skip
        branch = branch_fn()
        if keep_input_part and keep_new_part:
            return skip + branch
        chans, split = branch.shape[1], self.split
        if split >= chans:
            raise ValueError(f"separated drop path: split {split} must be below the branch's {chans} "
                             f"channels")
        # Zero-padding the kept slice back to full width gives zero gradients to the dropped channels.
        if keep_input_part:
            part = F.pad(branch[:, :split], (0, 0, 0, 0, 0, chans - split))
        else:
            part = F.pad(branch[:, split:], (0, 0, 0, 0, split, 0))
        return skip + part

    def _channel_gate(self, like: torch.Tensor) -> torch.Tensor:
        """Both gates as one (1, C, 1, ...) 0/1 tensor, for the compiled path."""
        chans = like.shape[1]
        gates = [bernoulli_gate(self.survival, like).expand(n) for n in (self.split, chans - self.split)]
        return torch.cat(gates).view(1, chans, *(1,) * (like.dim() - 2))

    def extra_repr(self) -> str:
        return f"survival={self.survival}, split={self.split}"


class _Shake(torch.autograd.Function):
    """Multiply by ``alpha`` in the forward pass and by ``beta`` in the backward pass."""

    @staticmethod
    def forward(ctx, branch: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(beta)
        return branch * alpha

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (beta,) = ctx.saved_tensors
        return grad * beta, None, None


class ShakeDrop(nn.Module):
    """Yamada, Iwamura, Akiba & Kise 2018 (arXiv 1802.02375)::

        train forward:  x + (b + alpha - b * alpha) F(x)
        train backward: gradient into F(x) scaled by (b + beta - b * beta)
        test:           x + E[b + alpha - b * alpha] F(x) = x + (p + (1 - p) E[alpha]) F(x)

    with ``b ~ Bernoulli(survival)`` per block and batch (the linear-decay rule of stochastic depth) and
    ``alpha ~ U(alpha_range)``, ``beta ~ U(beta_range)`` independent. The paper's ranges are alpha in [-1, 1]
    and beta in [0, 1], drawn independently for every element (``level="pixel"``); ``image``, ``channel`` and
    ``batch`` draw one coefficient per image, per image and channel, or per batch instead. When ``b = 1`` the
    block is an ordinary residual block; the branch is always computed (alpha is almost never 0).
    """

    def __init__(self, survival: float, alpha_range: tuple[float, float] = (-1.0, 1.0),
                 beta_range: tuple[float, float] = (0.0, 1.0), level: str = "pixel") -> None:
        super().__init__()
        if not 0.0 < survival <= 1.0:
            raise ValueError(f"survival must be in (0, 1], got {survival!r}")
        for name, (lo, hi) in (("alpha_range", alpha_range), ("beta_range", beta_range)):
            if not lo <= hi:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {(lo, hi)!r}")
        if level not in SHAKE_LEVELS:
            raise ValueError(f"level must be one of {SHAKE_LEVELS}, got {level!r}")
        self.survival = survival
        self.alpha_range = (float(alpha_range[0]), float(alpha_range[1]))
        self.beta_range = (float(beta_range[0]), float(beta_range[1]))
        self.level = level

    @property
    def eval_scale(self) -> float:
        """E[b + alpha - b * alpha]: the branch's coefficient at test time."""
        mean_alpha = sum(self.alpha_range) / 2
        return self.survival + (1.0 - self.survival) * mean_alpha

    def _coefficient_shape(self, like: torch.Tensor) -> tuple[int, ...]:
        ones = (1,) * (like.dim() - 2)
        return {
            "batch": (1, 1, *ones),
            "image": (like.shape[0], 1, *ones),
            "channel": (like.shape[0], like.shape[1], *ones),
            "pixel": tuple(like.shape),
        }[self.level]

    def _uniform(self, bounds: tuple[float, float], like: torch.Tensor) -> torch.Tensor:
        lo, hi = bounds
        shape = self._coefficient_shape(like)
        return torch.rand(shape, device=like.device, dtype=like.dtype) * (hi - lo) + lo

    def forward(self, branch_fn: BranchFn, skip: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return skip + self.eval_scale * branch_fn()
        if torch.compiler.is_compiling():
            gate = bernoulli_gate(self.survival, skip)
            alpha = self._uniform(self.alpha_range, skip)
            beta = self._uniform(self.beta_range, skip)
            return skip + _Shake.apply(branch_fn(), gate + alpha - gate * alpha, gate + beta - gate * beta)
        if bernoulli(self.survival):
            return skip + branch_fn()
        alpha = self._uniform(self.alpha_range, skip)
        beta = self._uniform(self.beta_range, skip)
        return skip + _Shake.apply(branch_fn(), alpha, beta)

    def extra_repr(self) -> str:
        return (f"survival={self.survival}, alpha_range={self.alpha_range}, beta_range={self.beta_range}, "
                f"level={self.level}")


def make_drop(block: BlockSpec) -> nn.Module | None:
    """The drop-path module a block spec asks for, or ``None``.

    Plain blocks (no shortcut) have nothing to fall back on, so they get none. ``separated`` on a block whose
    branch adds no channels has a single part and is plain stochastic depth; on a projection shortcut it has
    no meaning, which ``spec.validate`` rejects.
    """
    if block.drop_path == "none" or block.shortcut == "none":
        return None
    if block.drop_path == "stochastic_depth":
        return StochasticDepth(block.survival)
    if block.drop_path == "separated":
        if block.shortcut == "projection":
            raise ValueError(f"separated drop path needs an identity or zero-padded shortcut, got projection "
                             f"({block.in_chans} -> {block.out_chans})")
        if block.out_chans == block.in_chans:
            return StochasticDepth(block.survival)
        return SeparatedStochasticDepth(block.survival, split=block.in_chans)
    if block.drop_path == "shakedrop":
        return ShakeDrop(block.survival)
    raise ValueError(f"unknown drop_path {block.drop_path!r}")
