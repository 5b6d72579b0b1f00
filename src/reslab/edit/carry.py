"""Weight carry: the one place that copies tensors from one network into another with a map.

A ``WeightMap`` says, for every state-dict key of a new network, which key of the old one it came from and
which positions of each leading dimension it kept (``Carry``; ``None``: newly initialised). ``carry_weights``
copies along such a map into a module; ``transplant`` builds a spec and carries into it (every structural
edit of ``reslab.edit.surgery`` is one). Maps compose over several edits in a row; the trainer carries the
optimizer's per-parameter state along the same map (``reslab.train.optim.carry_optimizer_state``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..build import ResNet, build
from ..spec import NetSpec
from .channels import block_prefix, split_block_key


class SurgeryError(ValueError):
    """A structural edit cannot be made; the message names the block, group or channel at fault."""


Index = tuple[torch.Tensor | None, ...]  # per leading dimension: the kept positions, or None for all


@dataclass(frozen=True)
class Carry:
    """Where a tensor of the new network comes from: a key of the old state dict, and the kept positions."""

    source: str
    index: Index = ()


WeightMap = dict[str, Carry | None]
KeyMap = Callable[[str], Carry | None]  # a new key -> where it comes from (None: keep the new tensor)


@dataclass
class Edit:
    """The edited network (built from its new spec) and where each of its tensors came from."""

    model: ResNet
    weights: WeightMap


def take(tensor: torch.Tensor, index: Index) -> torch.Tensor:
    """``tensor`` restricted to the kept positions of each leading dimension (a position may repeat: a
    channel copied by ``widen_channels``)."""
    for dim, positions in enumerate(index):
        if positions is not None:
            tensor = tensor.index_select(dim, positions.to(tensor.device))
    return tensor


def compose(first: WeightMap, second: WeightMap) -> WeightMap:
    """The map of two edits in a row: ``first`` maps B's keys to A's, ``second`` C's to B's; result C -> A."""
    out: WeightMap = {}
    for key, carry in second.items():
        before = None if carry is None else first.get(carry.source)
        if carry is None or before is None:
            out[key] = None
            continue
        dims = max(len(before.index), len(carry.index))
        index = []
        for d in range(dims):
            a = before.index[d] if d < len(before.index) else None
            b = carry.index[d] if d < len(carry.index) else None
            index.append(b if a is None else (a if b is None else a[b]))
        out[key] = Carry(before.source, tuple(index))
    return out


def identity_map(model: nn.Module) -> WeightMap:
    return {key: Carry(key) for key in model.state_dict()}


def carry_weights(target: nn.Module, source: Mapping[str, torch.Tensor], mapping: KeyMap = Carry,
                  skip_mismatch: bool = False) -> WeightMap:
    """Copy into ``target``, in place, every tensor ``mapping(key)`` names in ``source`` (cut by its index);
    return the map of what was carried.

    By default (``mapping`` = same name, strict) a tensor whose source is missing or does not fit is an
    error naming both keys. ``skip_mismatch=True`` leaves such a tensor as it is and maps it to ``None``
    instead (loading a fine-tuning start whose head or widths differ). Everything is checked before the
    first copy, so an error leaves ``target`` as it was.
    """
    weights: WeightMap = {}
    copies = []
    for key, own in target.state_dict().items():
        carry = mapping(key)
        if carry is not None and carry.source not in source:
            if not skip_mismatch:
                raise SurgeryError(f"carrying into {key!r}: the source has no {carry.source!r}")
            carry = None
        if carry is not None:
            value = take(source[carry.source], carry.index)
            if value.shape == own.shape:
                copies.append((own, value))
            elif not skip_mismatch:
                raise SurgeryError(f"carrying {carry.source!r} into {key!r}: shape {tuple(value.shape)} "
                                   f"does not fit {tuple(own.shape)} (spec and weights disagree)")
            else:
                carry = None
        weights[key] = carry
    with torch.no_grad():
        for own, value in copies:
            own.copy_(value)
    return weights


def transplant(old: ResNet, spec: NetSpec, mapping: KeyMap) -> Edit:
    """Build ``spec`` on ``old``'s device and dtype and copy every tensor ``mapping`` names from ``old``."""
    reference = next(old.parameters())
    new = build(spec).to(device=reference.device, dtype=reference.dtype)
    new.train(old.training)
    return Edit(new, carry_weights(new, old.state_dict(), mapping))


BlockMove = Mapping[tuple[int, int], tuple[int, int] | None]


def renumbered(source_of_block: BlockMove) -> KeyMap:
    """A mapping for edits that only add, remove or move whole blocks: ``source_of_block`` gives each new
    block's old position (``None``: a new block); keys outside the blocks keep their names."""

    def mapping(key: str) -> Carry | None:
        parts = split_block_key(key)
        if parts is None:
            return Carry(key)
        stage, index, rest = parts
        source = source_of_block[(stage, index)]
        return None if source is None else Carry(f"{block_prefix(*source)}.{rest}")

    return mapping
