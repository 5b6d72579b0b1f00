"""ResBuilder (Burghoff et al., arXiv 2308.08504): learn a residual network's depth and widths in training.

* ``config``: the one default configuration.
* ``channels``: which channels must be cut together, and which parameters decide that a channel is dead.
* ``surgery``: structural edits (insert / delete blocks, cut / widen channels) that carry weights and optimizer state.
* ``penalties``: the layer LASSO (depth) and the FLOP-weighted group LASSO on BN scales (width).
* ``schedule``: when the edits happen, and where blocks are inserted.
* ``hook``: the training-engine hook (``make_hook`` serves ``reslab train`` configs with a ``resbuilder``
  section); ``report``: the architecture history; ``cli``: the ``reslab build`` command.
"""

from .channels import ChannelLayout, channel_layout
from .config import ResBuilderConfig, ResBuilderConfigError
from .hook import FOUND_SPEC, ResBuilderHook, make_hook
from .penalties import WidthPenalty, block_strengths, branch_gain, layer_lasso, removable_blocks, shrink_blocks
from .schedule import Schedule, choose_insertion, insertion_points, make_schedule
from .surgery import (
    Carry,
    Edit,
    SurgeryError,
    carry_optimizer_state,
    compose,
    copies_for,
    cut_channels,
    delete_block,
    delete_blocks,
    expanded_widths,
    insert_block,
    load_carried_state,
    new_block_spec,
    why_not_deletable,
    widen_channels,
)

__all__ = [
    "FOUND_SPEC", "Carry", "ChannelLayout", "Edit", "ResBuilderConfig", "ResBuilderConfigError",
    "ResBuilderHook", "Schedule", "SurgeryError", "WidthPenalty", "block_strengths", "branch_gain",
    "carry_optimizer_state", "channel_layout", "choose_insertion", "compose", "copies_for", "cut_channels",
    "delete_block", "delete_blocks", "expanded_widths", "insert_block", "insertion_points", "layer_lasso",
    "load_carried_state", "make_hook", "make_schedule", "new_block_spec", "removable_blocks", "shrink_blocks",
    "why_not_deletable", "widen_channels",
]
