"""ResBuilder's two sparsity penalties and the tests that turn them into structural decisions.

**Layer LASSO (depth).** Each removable block contributes the L2 norm of its *branch gain*, the parameters
that scale the residual branch's output: the final BN's gamma and beta (for wide blocks, whose branch ends in
a conv, that conv's weight). The sum over blocks is an L1 norm of per-block group norms, a group LASSO whose
groups are the blocks, weighted by sqrt(group size) (Yuan & Lin 2006) so a block's pull is independent of its
width. The gain is what makes the branch vanish: the weights before a BN are scale-invariant, so their size
says nothing about the block's contribution. A block is removed when the mean absolute value of its gain falls
below the deletion threshold (the paper's criterion: mean absolute weight of the block).

**Width (MorphNet-style).** Every channel group of ``reslab.edit.channels`` contributes, per channel, the
L2 norm of the values of all its members (producer gammas and betas, consumer betas, conv slices), weighted by
the channel's FLOP cost: the multiply-accumulates of every conv and linear layer that reads or writes it, per
channel (Gordon et al. 2018, MorphNet). Costs are divided by their channel-weighted mean so the strength means
the same on 28x28 and 224x224 inputs. A channel is cut when every member is below the width threshold
(producers' gamma and beta; ReLU-followed BNs only a positive beta; consumer BNs the constant they emit),
relative to the group's strongest channel (see ``WidthPenalty.keep``).

**How they are applied: proximal steps.** Both penalties are applied as proximal steps after each optimizer
step (``shrink_blocks``, ``WidthPenalty.shrink``: group soft-thresholding, as in ISTA), not as loss terms.
A loss term's pull depends on the optimizer (momentum multiplies it, Adam normalises it away) and only ever
brings a group *near* zero; a proximal step moves each group straight toward zero by a set amount and sets
it exactly to zero when the data's pull is weaker, which is what the deletion and cut tests look for. The
caller (``ResBuilderHook``) passes ``learning rate x lambda`` after every optimizer step: proximal SGD on
loss + lambda * penalty, whose balance between data and penalty does not depend on the number of steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..build import ResNet
from ..edit.channels import ChannelLayout, Member, channel_layout
from ..edit.surgery import why_not_deletable
from ..layers.blocks import ResidualBlock


# -- depth ------------------------------------------------------------------------------------------------
def removable_blocks(model: ResNet) -> list[tuple[int, int]]:
    """The blocks ``(stage, index)`` the spec lets us remove (identity blocks; see ``why_not_deletable``)."""
    spec = model.spec
    return [(s, b) for s, b, _ in spec.blocks() if why_not_deletable(spec, s, b) is None]


def branch_gain(block: ResidualBlock) -> torch.Tensor:
    """The flattened parameters that scale a block's residual branch (its final BN's gamma and beta, or the
    last conv's weight for branches that end in a conv). The branch is zero when this vector is."""
    return torch.cat([p.reshape(-1) for p in _gain_parameters(block)])


def _gain_parameters(block: ResidualBlock) -> list[torch.Tensor]:
    """The parameters ``branch_gain`` flattens, in its order."""
    producer = block.branch_end()
    return [producer.weight, producer.bias] if isinstance(producer, nn.BatchNorm2d) else [producer.weight]


@torch.no_grad()
def shrink_blocks(model: ResNet, blocks: list[tuple[int, int]], amount: float) -> None:
    """Proximal step of the layer LASSO, in place: each block's gain vector g (n values) is moved toward zero
    by ``amount * sqrt(n)`` in norm, i.e. its root-mean-square value drops by ``amount``, and becomes exactly
    zero when it is smaller than that (g <- g * max(0, 1 - amount * sqrt(n) / ||g||))."""
    if amount <= 0:
        return
    stages = model.stages()
    for s, b in blocks:
        params = _gain_parameters(stages[s][b])
        norm = torch.linalg.vector_norm(torch.cat([p.reshape(-1) for p in params]))
        n = sum(p.numel() for p in params)
        factor = torch.clamp(1 - amount * math.sqrt(n) / norm.clamp_min(1e-30), min=0.0)
        for p in params:
            p.mul_(factor)


def layer_lasso(model: ResNet, blocks: list[tuple[int, int]] | None = None) -> torch.Tensor:
    """sum over removable blocks of sqrt(n_b) * ||gain_b||_2 (unscaled: the caller multiplies by lambda)."""
    blocks = removable_blocks(model) if blocks is None else blocks
    stages = model.stages()
    terms = []
    for s, b in blocks:
        gain = branch_gain(stages[s][b])
        terms.append(math.sqrt(gain.numel()) * torch.linalg.vector_norm(gain))
    if not terms:
        return next(model.parameters()).new_zeros(())
    return torch.stack(terms).sum()


@torch.no_grad()
def block_strengths(model: ResNet) -> dict[tuple[int, int], float]:
    """Mean absolute branch gain of every removable block: below the deletion threshold it is removed."""
    stages = model.stages()
    return {(s, b): branch_gain(stages[s][b]).abs().mean().item() for s, b in removable_blocks(model)}


# -- width ------------------------------------------------------------------------------------------------
def _member_columns(module: nn.Module, member: Member, width: int) -> list[torch.Tensor]:
    rows = slice(member.offset, member.offset + width)
    if member.kind == "conv":
        return [module.weight[rows].reshape(width, -1)]
    gamma, beta = module.weight[rows], module.bias[rows]
    if member.kind == "bn":
        return [gamma[:, None], beta[:, None]]
    if member.kind == "bn_relu":
        return [gamma[:, None], F.relu(beta)[:, None]]
    return [beta[:, None]]  # consumer: what it adds to a zero input in training mode


def _consumer_constant(module: nn.BatchNorm2d, member: Member, width: int) -> torch.Tensor:
    """What a BN outputs in evaluation mode for a channel that is identically zero."""
    rows = slice(member.offset, member.offset + width)
    if module.running_mean is None:
        return module.bias[rows]
    std = torch.sqrt(module.running_var[rows] + module.eps)
    return module.bias[rows] - module.weight[rows] * module.running_mean[rows] / std


def group_matrix(model: nn.Module, layout: ChannelLayout, group: str,
                 modules: dict[str, nn.Module] | None = None) -> torch.Tensor:
    """One row per channel of ``group``: the values of all its members (differentiable)."""
    modules = dict(model.named_modules()) if modules is None else modules
    width = layout.widths[group]
    columns = []
    for member in layout.members[group]:
        columns.extend(_member_columns(modules[member.module], member, width))
    return torch.cat(columns, dim=1)


def channel_costs(model: ResNet, layout: ChannelLayout, input_size: tuple[int, int, int]) -> dict[str, float]:
    """Per-channel MACs of every group: for each conv/linear layer reading or writing the group, the MACs
    one of its channels takes part in (kernel area x output pixels x channels on the other side)."""
    modules = dict(model.named_modules())
    pixels: dict[str, int] = {}
    hooks = [modules[conv.module].register_forward_hook(
        lambda m, i, out, name=conv.module: pixels.__setitem__(name, out[0, 0].numel()))
        for conv in layout.convs]
    was_training = model.training
    reference = next(model.parameters())
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_size, device=reference.device, dtype=reference.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    costs = dict.fromkeys(layout.widths, 0.0)
    for conv in layout.convs:
        module = modules[conv.module]
        if isinstance(module, nn.Linear):
            per_pair, fan_in, fan_out = 1, module.in_features, module.out_features
        else:
            per_pair = module.kernel_size[0] * module.kernel_size[1] * pixels[conv.module]
            fan_in, fan_out = module.in_channels, module.out_channels
        for group in conv.out_site or ():
            costs[group] += per_pair * fan_in
        for group in conv.in_site or ():
            costs[group] += per_pair * fan_out
    return costs


class WidthPenalty:
    """MorphNet-style FLOP-weighted group LASSO over the channel groups of one architecture.

    Build one per architecture (after every structural edit); ``penalty(model)`` is differentiable and
    unscaled; ``scores(model)`` gives each channel's liveness; ``keep(model, threshold)`` what to keep.
    """

    def __init__(self, model: ResNet, input_size: tuple[int, int, int]) -> None:
        self.layout = channel_layout(model.spec)
        self.costs = channel_costs(model, self.layout, input_size)
        channels = sum(self.layout.widths.values())
        mean_cost = sum(self.costs[g] * w for g, w in self.layout.widths.items()) / channels
        self.weights = {g: cost / mean_cost for g, cost in self.costs.items()}

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """sum over groups g of w_g * sum over channels c of ||members of g at c||_2."""
        modules = dict(model.named_modules())
        terms = [self.weights[g] * torch.linalg.vector_norm(group_matrix(model, self.layout, g, modules),
                                                            dim=1).sum()
                 for g in self.layout.widths]
        return torch.stack(terms).sum()

    @torch.no_grad()
    def shrink(self, model: nn.Module, amount: float) -> None:
        """Proximal step of the penalty, in place: every channel's row of member values is moved toward zero
        by ``amount`` times its group's cost weight in norm, and set to zero when it is shorter than that.

        Every member value of the channel is scaled by the same factor, except a non-positive shift of a
        ReLU-followed BN, which ``penalty`` does not count (the ReLU makes it silent)."""
        if amount <= 0:
            return
        modules = dict(model.named_modules())
        for group, width in self.layout.widths.items():
            norms = torch.linalg.vector_norm(group_matrix(model, self.layout, group, modules), dim=1)
            factor = torch.clamp(1 - amount * self.weights[group] / norms.clamp_min(1e-30), min=0.0)
            for member in self.layout.members[group]:
                module, rows = modules[member.module], slice(member.offset, member.offset + width)
                if member.kind == "conv":
                    weight = module.weight[rows]
                    weight.mul_(factor.view(-1, *([1] * (weight.dim() - 1))))
                    continue
                if member.kind != "consumer":
                    module.weight[rows].mul_(factor)
                shift = module.bias[rows]
                if member.kind == "bn_relu":  # the penalty ignores a non-positive shift: leave it be
                    shift.copy_(torch.where(shift > 0, shift * factor, shift))
                else:
                    shift.mul_(factor)

    @torch.no_grad()
    def scores(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Per channel, the largest magnitude among its members (0 means exactly removable)."""
        modules = dict(model.named_modules())
        out = {}
        for group, width in self.layout.widths.items():
            score = group_matrix(model, self.layout, group, modules).abs().amax(dim=1)
            for member in self.layout.members[group]:
                if member.kind == "consumer":
                    constant = _consumer_constant(modules[member.module], member, width)
                    score = torch.maximum(score, constant.abs())
            out[group] = score
        return out

    def keep(self, model: nn.Module, threshold: float) -> dict[str, list[int]]:
        """The channels to keep in every group that has some at or below ``threshold`` times the group's
        strongest channel.

        Relative, not absolute: an internal width is followed by a conv and a BN, which undo any common scale
        of its gammas and betas, so only their ratios mean something (a penalty can shrink them all at no
        cost). A channel that is exactly zero is cut at any threshold. A group always keeps at least its
        strongest channel: a zero-width tensor would disconnect the network.
        """
        keep = {}
        for group, score in self.scores(model).items():
            alive = (score > threshold * score.max()).nonzero().flatten().tolist()
            if len(alive) == len(score):
                continue
            keep[group] = alive or [int(score.argmax())]
        return keep
