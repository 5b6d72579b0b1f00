"""Channel groups: which channels of a network must be cut together, and what decides that one is dead.

Every channel of every activation tensor belongs to exactly one *group*; cutting channel ``c`` of a group
removes it from every tensor the group appears in. Groups follow from the spec alone:

* **internal** groups are the inner widths of one block (``widths[k]``): the output of its k-th conv, which
  only the next conv of the same block reads.
* **stream** groups are the channels between blocks. An identity shortcut adds a block's output to its input
  channel by channel, so both are the *same* channels: one group runs through every identity block of a
  stage. A zero-padded shortcut (``pad_avgpool``/``pad_subsample``) passes its input channels on and appends
  new ones, so its output is the input's groups followed by one new group (PyramidNet's stream is a
  concatenation of one group per block). A projection (or a plain block with no shortcut) mixes all
  channels, so its output starts a fresh group; the stem starts the first one.

A tensor between blocks is therefore a concatenation of groups (a *site*, a tuple of group names); the
channels of a group keep their order inside every site, which is what keeps zero padding aligned after cuts.

Whether a channel is dead is decided by its *members*, the parameters that write or re-bias it:

* producers: the normalisation that ends each branch writing the channel (or the last conv, for the wide
  blocks whose branch ends in a conv), a projection's BN (or conv), the stem's BN (or conv); and for internal
  channels the BN before their ReLU.
* consumers that add a constant: pre-activation BNs on a block's input and the final BN of pre-activation
  networks. A dead (all-zero) channel still leaves a BN as ``beta - gamma * mean / std``, so these count too.

A channel is removable exactly when all producers are zero and every consumer BN emits zero for it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..layers.blocks import BLOCKS, IN, INTERNAL, OUT, BlockLayout, ResidualBlock
from ..spec import NetSpec

# What each block kind's layers read and write is declared by the block class (``reslab.layers.blocks``).
BLOCK_LAYOUTS: dict[str, BlockLayout] = {kind: cls.layout for kind, cls in BLOCKS.items()}

# The network's own layers around the blocks (``reslab.build.ResNet``, torchvision's names).
STEM_CONV, STEM_BN, HEAD_BN, CLASSIFIER = "conv1", "bn1", "final_bn", "fc"

# How a member's values enter the dead-channel test (and the width penalty):
#   bn         gamma and beta must both vanish (the channel is summed before any ReLU)
#   bn_relu    gamma must vanish and beta must not be positive (a ReLU follows, so a negative constant is 0)
#   conv       the conv's output-channel slice must vanish (branches that end without a BN)
#   consumer   a BN reading the channel must emit 0 for a zero input: beta in training mode, and
#              beta - gamma * running_mean / sqrt(running_var + eps) in evaluation mode
MEMBER_KINDS = ("bn", "bn_relu", "conv", "consumer")


@dataclass(frozen=True)
class Member:
    """A module whose channels ``[offset, offset + width)`` belong to a group (width = the group's)."""

    module: str
    offset: int
    kind: str


@dataclass(frozen=True)
class Conv:
    """A conv (or the classifier) and the sites of its output and input channels (``None``: not cuttable,
    e.g. the image channels or the classes)."""

    module: str
    out_site: tuple[str, ...] | None
    in_site: tuple[str, ...] | None


@dataclass
class ChannelLayout:
    """The channel groups of a spec, where they appear, and the modules that decide and index them."""

    spec: NetSpec
    widths: dict[str, int] = field(default_factory=dict)  # group -> channels, in forward order
    stream: set[str] = field(default_factory=set)  # the stream groups (the others are internal)
    stem_site: tuple[str, ...] = ()
    block_sites: dict[tuple[int, int], dict[str, tuple[str, ...]]] = field(default_factory=dict)
    head_site: tuple[str, ...] = ()
    members: dict[str, list[Member]] = field(default_factory=dict)
    convs: list[Conv] = field(default_factory=list)
    # Every layer whose leading tensor dimensions index channels: the site of each (None: not cuttable).
    indexed: dict[str, tuple[tuple[str, ...] | None, ...]] = field(default_factory=dict)

    def site_width(self, site: Iterable[str]) -> int:
        return sum(self.widths[g] for g in site)

    def offsets(self, site: Sequence[str]) -> dict[str, int]:
        """Where each group of a site starts in the site's tensor."""
        out, start = {}, 0
        for g in site:
            out[g] = start
            start += self.widths[g]
        return out

    def _new_group(self, name: str, width: int, stream: bool) -> str:
        self.widths[name] = width
        self.members[name] = []
        if stream:
            self.stream.add(name)
        return name

    def _add_members(self, site: Sequence[str], module: str, kind: str) -> None:
        for g, offset in self.offsets(site).items():
            self.members[g].append(Member(module, offset, kind))


def block_prefix(stage: int, index: int) -> str:
    """The module path of a block in a built ``ResNet`` (torchvision's ``layer{s+1}.{b}``)."""
    return f"layer{stage + 1}.{index}"


_BLOCK_KEY = re.compile(r"layer(\d+)\.(\d+)\.(.+)")


def split_block_key(key: str) -> tuple[int, int, str] | None:
    """``(stage, index, rest)`` of a state-dict key inside a block (``block_prefix``); None outside blocks."""
    match = _BLOCK_KEY.fullmatch(key)
    return None if match is None else (int(match[1]) - 1, int(match[2]), match[3])


def channel_layout(spec: NetSpec) -> ChannelLayout:
    """Group the channels of ``spec`` (see the module docstring for the rules)."""
    layout = ChannelLayout(spec)
    stem = spec.stem
    site: tuple[str, ...] = (layout._new_group("stem", stem.out_chans, stream=True),)
    layout.stem_site = site
    if stem.norm:
        layout._add_members(site, STEM_BN, "bn_relu" if stem.act else "bn")
        layout.indexed[STEM_BN] = (site,)
    else:
        layout._add_members(site, STEM_CONV, "conv")
    layout.convs.append(Conv(STEM_CONV, site, None))
    layout.indexed[STEM_CONV] = (site, None)

    for s, b, blk in spec.blocks():
        prefix = block_prefix(s, b)
        block_layout = BLOCK_LAYOUTS[blk.kind]
        in_site = site
        if blk.shortcut == "identity":
            out_site = in_site
        elif blk.shortcut in ("pad_avgpool", "pad_subsample") and blk.out_chans > blk.in_chans:
            out_site = in_site + (layout._new_group(f"{prefix}.out", blk.out_chans - blk.in_chans, True),)
        elif blk.shortcut in ("pad_avgpool", "pad_subsample"):
            out_site = in_site  # stride-2 subsampling without new channels
        else:  # projection or no shortcut: every output channel is new
            out_site = (layout._new_group(f"{prefix}.out", blk.out_chans, True),)
        sites = {IN: in_site, OUT: out_site}
        for k, width in enumerate(blk.widths):
            name = layout._new_group(f"{prefix}.w{k}", width, stream=False)
            sites[INTERNAL[k]] = (name,)
            layout._add_members(sites[INTERNAL[k]], f"{prefix}.{block_layout.internal_bns[k]}", "bn_relu")
        layout.block_sites[(s, b)] = sites

        # The branch writes every output channel (on pad shortcuts it adds to the passed-on input ones).
        producer_kind = "conv" if len(dict(block_layout.modules)[block_layout.out_producer]) == 2 else "bn"
        layout._add_members(out_site, f"{prefix}.{block_layout.out_producer}", producer_kind)
        if blk.shortcut == "projection":
            conv, bn = (f"{prefix}.{name}" for name in ResidualBlock.projection)
            if blk.preact:  # pre-activation projections are a bare conv (WRN reference code)
                layout._add_members(out_site, conv, "conv")
            else:
                layout._add_members(out_site, bn, "bn")
                layout.indexed[bn] = (out_site,)
            layout.convs.append(Conv(conv, out_site, in_site))
            layout.indexed[conv] = (out_site, in_site)
        if block_layout.in_bn is not None:
            layout._add_members(in_site, f"{prefix}.{block_layout.in_bn}", "consumer")
        for module, dims in block_layout.modules:
            layout.indexed[f"{prefix}.{module}"] = tuple(sites[d] for d in dims)
            if len(dims) == 2:  # a conv: output and input channels
                layout.convs.append(Conv(f"{prefix}.{module}", sites[dims[0]], sites[dims[1]]))
        site = out_site

    layout.head_site = site
    if spec.head.norm:
        layout._add_members(site, HEAD_BN, "consumer")
        layout.indexed[HEAD_BN] = (site,)
    layout.convs.append(Conv(CLASSIFIER, None, site))
    layout.indexed[CLASSIFIER] = (None, site)
    return layout


def site_indices(layout: ChannelLayout, site: Sequence[str], keep: Mapping[str, Sequence[int]]) -> list[int]:
    """The positions, in a site's tensor, of the channels that ``keep`` keeps (groups absent: all kept)."""
    out: list[int] = []
    for g, offset in layout.offsets(site).items():
        kept = keep[g] if g in keep else range(layout.widths[g])
        out.extend(offset + int(c) for c in kept)
    return out
