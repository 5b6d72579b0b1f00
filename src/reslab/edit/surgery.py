"""Structural edits that carry weights: insert a block, delete blocks, cut channels, widen channels.

Each edit takes a built network, edits its spec, builds the new network with ``reslab.build`` and copies
every surviving tensor (parameters and BN statistics) across (``reslab.edit.carry``), so ``model.spec``
always describes the module exactly. It returns an ``Edit``: the new model and a ``WeightMap`` saying, for
every state-dict key of the new model, which key of the old one it came from and which channels it kept
(``None``: newly initialised). The trainer carries the optimizer's per-parameter state along the same map.

Exactness: deleting a block whose branch output is zero, cutting channels that are dead in the sense of
``reslab.edit.channels``, or widening (copies of channels whose readers share the source's weights)
leaves the network's outputs unchanged (in both train and eval mode).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace

import torch
from torch import nn

from ..build import ResNet, build
from ..layers.blocks import IN, INTERNAL, OUT, ResidualBlock
from ..profile import profile
from ..spec import BlockSpec, NetSpec
from .carry import Carry, Edit, Index, SurgeryError, renumbered, transplant
from .channels import ChannelLayout, block_prefix, channel_layout, site_indices


# -- depth: insert and delete ------------------------------------------------------------------------------
def channels_at(spec: NetSpec, stage: int, index: int) -> int:
    """The channel count of the tensor just before block ``index`` of ``stage`` (or after its last block)."""
    if index > 0:
        return spec.stages[stage][index - 1].out_chans
    for prev in reversed(spec.stages[:stage]):
        if prev:
            return prev[-1].out_chans
    return spec.stem.out_chans


def new_block_spec(spec: NetSpec, stage: int, index: int, width: float = 1.0) -> BlockSpec:
    """The block ResBuilder inserts at ``(stage, index)``: an identity block of the kind of its neighbour.

    The template is the block just before the insertion point (else the one after it, else the nearest block
    of an earlier stage); its internal widths are copied, scaled by the channel ratio when the template maps
    a different number of channels (a downsampling or widening block), and by ``width`` (at least one
    channel each).
    """
    _check_stage(spec, stage)
    blocks = spec.stages[stage]
    if not 0 <= index <= len(blocks):
        raise SurgeryError(f"insert: index {index} is out of range for stage {stage} (0..{len(blocks)})")
    if index > 0:
        template = blocks[index - 1]
    elif blocks:
        template = blocks[0]
    else:
        others = [b for s, _, b in spec.blocks() if s < stage] or [b for _, _, b in spec.blocks()]
        if not others:
            raise SurgeryError("insert: the network has no block whose kind a new block could copy")
        template = others[-1]
    chans = channels_at(spec, stage, index)
    widths = tuple(max(1, round(width * w * chans / template.out_chans)) for w in template.widths)
    return replace(template, in_chans=chans, widths=widths, out_chans=chans, stride=1, shortcut="identity")


def insert_block(model: ResNet, stage: int, index: int, gain: float = 0.0, width: float = 1.0) -> Edit:
    """Insert a new identity block before block ``index`` of ``stage`` (``index == len(stage)``: at the end).

    The branch's last scale (its final BN's gamma; for wide blocks, the last conv) is set to ``gain``, so with
    ``gain = 0`` the network computes exactly what it did before and the new block grows from the identity.
    ``width`` scales its internal widths (``new_block_spec``).
    """
    spec = model.spec
    block = new_block_spec(spec, stage, index, width)
    stages = [list(s) for s in spec.stages]
    stages[stage].insert(index, block)
    new_spec = replace(spec, stages=stages)
    source = {(s, b): (s, b) for s, b, _ in new_spec.blocks()}
    for b in range(index, len(stages[stage])):
        source[(stage, b)] = (stage, b - 1) if b > index else None
    edit = transplant(model, new_spec, renumbered(source))
    set_branch_gain(edit.model.stages()[stage][index], gain)
    return edit


def set_branch_gain(block: ResidualBlock, gain: float) -> None:
    """Scale a block's residual branch to ``gain`` at its last layer (gain 0: the block is its shortcut)."""
    producer = block.branch_end()
    with torch.no_grad():
        if isinstance(producer, nn.BatchNorm2d):
            producer.weight.fill_(gain)
            producer.bias.zero_()
        else:
            producer.weight.mul_(gain)


def why_not_deletable(spec: NetSpec, stage: int, index: int) -> str | None:
    """Why block ``(stage, index)`` cannot be removed, or ``None`` if it can.

    Only an identity block becomes the identity when its branch vanishes (a downsampling or widening block
    changes the tensor's shape, and the spec has nowhere to move its stride). A post-activation block also
    applies a ReLU after its sum, which is the identity only if its input is already non-negative.
    """
    block = spec.stages[stage][index]
    if block.shortcut != "identity":
        return f"it has a {block.shortcut!r} shortcut (only identity blocks can become the identity)"
    if not block.preact:
        previous = spec.stages[stage][index - 1] if index > 0 else None
        for earlier in reversed(spec.stages[:stage] if previous is None else ()):
            if earlier:
                previous = earlier[-1]
                break
        nonnegative = (not previous.preact) if previous is not None else spec.stem.act
        if not nonnegative:
            return "its ReLU after the sum would be lost (its input can be negative)"
    return None


def delete_blocks(model: ResNet, blocks: Iterable[tuple[int, int]]) -> Edit:
    """Remove blocks (given as ``(stage, index)`` of the current spec) and carry every other weight over."""
    spec = model.spec
    blocks = list(blocks)
    for stage, index in blocks:
        _check_block(spec, stage, index)
        reason = why_not_deletable(spec, stage, index)
        if reason is not None:
            raise SurgeryError(f"delete: block {block_prefix(stage, index)} cannot be removed: {reason}")
    return drop_blocks(model, blocks)


def drop_blocks(model: ResNet, blocks: Iterable[tuple[int, int]], name: str | None = None) -> Edit:
    """The network without ``blocks`` (``(stage, index)`` of the current spec, which must exist), every other
    weight carried over, named ``name`` (default: unchanged). No check that this keeps the function: callers
    judge that (``why_not_deletable``; the lesion study's plain blocks)."""
    spec = model.spec
    doomed = set(blocks)
    stages, source = [], {}
    for s, stage_blocks in enumerate(spec.stages):
        kept = [b for b in range(len(stage_blocks)) if (s, b) not in doomed]
        for new_index, old_index in enumerate(kept):
            source[(s, new_index)] = (s, old_index)
        stages.append([stage_blocks[b] for b in kept])
    new_spec = replace(spec, stages=stages, name=spec.name if name is None else name)
    return transplant(model, new_spec, renumbered(source))


def delete_block(model: ResNet, stage: int, index: int) -> Edit:
    return delete_blocks(model, [(stage, index)])


# -- width: cut and widen channels -------------------------------------------------------------------------
def cut_channels(model: ResNet, keep: Mapping[str, Sequence[int]],
                 layout: ChannelLayout | None = None) -> Edit:
    """Keep only the listed channels of each named group (see ``reslab.edit.channels``); groups not named
    keep all their channels. Residual-coupled channels are cut together because they are one group."""
    layout = _layout_for(model, layout, "cut")
    kept = {group: _checked_keep(layout, group, channels) for group, channels in keep.items()}
    return _channel_edit(model, layout, lambda site: site_indices(layout, site, kept))


def widen_channels(model: ResNet, copies: Mapping[str, Sequence[int]], layout: ChannelLayout | None = None,
                   seed: int = 0) -> Edit:
    """Append to each named group a copy of each listed channel (a channel may be listed more than once), in
    every tensor the group appears in; the outputs do not change (Net2Net's function-preserving widening).

    A copy takes every value its source has where the channel is written or normalised (conv rows, BN scales,
    shifts and running statistics) and the optimizer state with them; where the channel is read (every
    conv's and the classifier's input slice) the source's weights are shared out among the source and its
    copies, element by element in random proportions (drawn from ``seed``) that add up to one. The sum the
    next layer computes is unchanged, while the unequal shares give the copies different gradients, so they
    grow apart instead of staying twins. New channels that start at zero could never do that: a zero channel
    passes no gradient through the ReLUs that follow it. (The readers' optimizer state is copied whole, not
    shared out: the weight map says where a value came from, not how it was scaled; momentum makes that a
    transient of a few steps.)
    """
    layout = _layout_for(model, layout, "widen")
    chosen = {group: _checked_channels(layout, "widen", group, sources)
              for group, sources in copies.items() if len(sources)}

    def positions(site: Sequence[str]) -> list[int]:
        out: list[int] = []
        for group, offset in layout.offsets(site).items():
            out.extend(offset + c for c in range(layout.widths[group]))
            out.extend(offset + c for c in chosen.get(group, ()))
        return out

    edit = _channel_edit(model, layout, positions)
    new_layout = channel_layout(edit.model.spec)
    modules = dict(edit.model.named_modules())
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for conv in new_layout.convs:
            offsets = new_layout.offsets(conv.in_site or ())
            weight = modules[conv.module].weight
            for group in (g for g in conv.in_site or () if g in chosen):
                start, width = offsets[group], layout.widths[group]
                for source in sorted(set(chosen[group])):
                    twins = [start + source] + [start + width + k for k, c in enumerate(chosen[group])
                                                if c == source]
                    shares = torch.rand((len(twins), weight.shape[0], *weight.shape[2:]), generator=generator)
                    shares = (shares + 0.5) / (shares + 0.5).sum(dim=0)  # positive, at most 3:1, sum to 1
                    original = weight[:, start + source].clone()
                    for twin, share in zip(twins, shares, strict=True):
                        weight[:, twin] = original * share.to(weight.device, weight.dtype)
    return edit


def copies_for(widths: Mapping[str, int], layout: ChannelLayout,
               strength: Mapping[str, torch.Tensor] | None = None) -> dict[str, list[int]]:
    """The channels to copy so that each group reaches ``widths[group]``: its channels in order of
    ``strength`` (strongest first; else in order), round and round as often as needed."""
    out = {}
    for group, width in widths.items():
        have = layout.widths[group]
        if width <= have:
            continue
        order = (list(range(have)) if strength is None
                 else torch.argsort(strength[group], descending=True, stable=True).tolist())
        out[group] = [order[k % have] for k in range(width - have)]
    return out


def _layout_for(model: ResNet, layout: ChannelLayout | None, operation: str) -> ChannelLayout:
    layout = channel_layout(model.spec) if layout is None else layout
    if layout.spec != model.spec:
        raise SurgeryError(f"{operation}: the channel layout was computed for a different spec")
    return layout


def resized_spec(layout: ChannelLayout, widths: Mapping[str, int]) -> NetSpec:
    """The spec of ``layout`` with each named group at ``widths[group]`` channels (others unchanged)."""
    return _respec(layout, lambda site: sum(widths.get(g, layout.widths[g]) for g in site))


def expanded_widths(model: ResNet, budget_macs: float, input_size: tuple[int, int, int]) -> dict[str, int]:
    """MorphNet's expand step: every group's width times one factor (at least 1), the largest factor whose
    network costs at most ``budget_macs`` per ``input_size`` image (rounded; groups only grow)."""
    layout = channel_layout(model.spec)

    def widths(factor: float) -> dict[str, int]:
        return {g: max(w, round(w * factor)) for g, w in layout.widths.items()}

    def macs(factor: float) -> int:
        return profile(build(resized_spec(layout, widths(factor))), input_size).macs

    low, high = 1.0, 2.0
    while macs(high) <= budget_macs and high < 64:
        low, high = high, 2 * high
    for _ in range(12):  # the factor to 1/4096 of the bracket: finer than one channel in 4,000
        middle = (low + high) / 2
        low, high = (middle, high) if macs(middle) <= budget_macs else (low, middle)
    return {g: w for g, w in widths(low).items() if w > layout.widths[g]}


def _respec(layout: ChannelLayout, width: Callable[[Sequence[str]], int]) -> NetSpec:
    """``layout.spec`` with every block's, the stem's and the head's channel counts given by ``width(site)``."""
    spec = layout.spec
    stages = []
    for s, stage_blocks in enumerate(spec.stages):
        new_blocks = []
        for b, blk in enumerate(stage_blocks):
            sites = layout.block_sites[(s, b)]
            widths = tuple(width(sites[INTERNAL[k]]) for k in range(len(blk.widths)))
            new_blocks.append(replace(blk, in_chans=width(sites[IN]), widths=widths,
                                      out_chans=width(sites[OUT])))
        stages.append(new_blocks)
    return replace(spec, stem=replace(spec.stem, out_chans=width(layout.stem_site)), stages=stages,
                   head=replace(spec.head, in_chans=width(layout.head_site)))


def _channel_edit(model: ResNet, layout: ChannelLayout, positions: Callable[[Sequence[str]], list[int]]) -> Edit:
    """Rebuild ``model`` with every channel site re-indexed by ``positions(site)`` (the old positions it
    keeps, in order; a repeated one is a copy) and carry every tensor across with that index."""
    new_spec = _respec(layout, lambda site: len(positions(site)))

    def index(site: Sequence[str] | None) -> torch.Tensor | None:
        chosen = None if site is None else positions(site)
        if chosen is None or chosen == list(range(layout.site_width(site))):
            return None  # unchanged here
        return torch.tensor(chosen, dtype=torch.long)

    module_index: dict[str, Index] = {module: tuple(index(site) for site in sites)
                                      for module, sites in layout.indexed.items()}

    def mapping(key: str) -> Carry:
        module, _, name = key.rpartition(".")
        dims = module_index.get(module)
        if dims is None or name == "num_batches_tracked":
            return Carry(key)
        # A weight is indexed on every leading dimension; biases and BN statistics on the output channels.
        return Carry(key, dims if name == "weight" else dims[:1])

    return transplant(model, new_spec, mapping)


def _checked_keep(layout: ChannelLayout, group: str, channels: Sequence[int]) -> list[int]:
    chosen = sorted(_checked_channels(layout, "cut", group, channels))
    if not chosen:
        raise SurgeryError(f"cut: group {group!r} would keep no channel (keep at least one)")
    if len(set(chosen)) != len(chosen):
        raise SurgeryError(f"cut: group {group!r} lists a channel twice")
    return chosen


def _checked_channels(layout: ChannelLayout, operation: str, group: str, channels: Sequence[int]) -> list[int]:
    """``channels`` as ints, after checking that ``group`` exists and has each of them."""
    if group not in layout.widths:
        raise SurgeryError(f"{operation}: unknown channel group {group!r} (groups: {', '.join(layout.widths)})")
    width = layout.widths[group]
    chosen = [int(c) for c in channels]
    bad = [c for c in chosen if not 0 <= c < width]
    if bad:
        raise SurgeryError(f"{operation}: group {group!r} has {width} channels, channel {bad[0]} does not exist")
    return chosen


def _check_stage(spec: NetSpec, stage: int) -> None:
    if not 0 <= stage < len(spec.stages):
        raise SurgeryError(f"stage {stage} does not exist ({spec.name} has {len(spec.stages)} stages)")


def _check_block(spec: NetSpec, stage: int, index: int) -> None:
    _check_stage(spec, stage)
    if not 0 <= index < len(spec.stages[stage]):
        raise SurgeryError(f"block {index} of stage {stage} does not exist (the stage has "
                           f"{len(spec.stages[stage])} blocks)")
