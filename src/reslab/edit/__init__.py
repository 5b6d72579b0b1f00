"""Spec surgery with weight carry: the layer under ResBuilder (``reslab.builder``) and the analyses.

* ``channels``: which channels must be cut together, and which parameters decide that a channel is dead
  (from the layouts the block classes declare in ``reslab.layers.blocks``).
* ``carry``: the one weight carry: copy tensors from one network into another along a map (the optimizer
  state follows the same map in ``reslab.train.optim``).
* ``surgery``: structural edits (insert / delete blocks, cut / widen channels) built on both.
"""

from .carry import (
    Carry,
    Edit,
    SurgeryError,
    WeightMap,
    carry_weights,
    compose,
    identity_map,
    take,
    transplant,
)
from .channels import ChannelLayout, block_prefix, channel_layout
from .surgery import (
    copies_for,
    cut_channels,
    delete_block,
    delete_blocks,
    drop_blocks,
    expanded_widths,
    insert_block,
    new_block_spec,
    set_branch_gain,
    why_not_deletable,
    widen_channels,
)

__all__ = [
    "Carry", "ChannelLayout", "Edit", "SurgeryError", "WeightMap", "block_prefix", "carry_weights", "channel_layout",
    "compose", "copies_for", "cut_channels", "delete_block", "delete_blocks", "drop_blocks", "expanded_widths",
    "identity_map", "insert_block", "new_block_spec", "set_branch_gain", "take", "transplant", "why_not_deletable",
    "widen_channels",
]
