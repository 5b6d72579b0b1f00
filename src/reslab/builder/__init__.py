"""ResBuilder (Burghoff et al., arXiv 2308.08504): learn a residual network's depth and widths in training.

* ``config``: the one default configuration.
* ``penalties``: the layer LASSO (depth) and the FLOP-weighted group LASSO on BN scales (width).
* ``schedule``: when the edits happen, and where blocks are inserted.
* ``hook``: the training-engine hook (``SECTION`` and ``make_hook`` serve the ``resbuilder`` section of
  ``reslab train`` configs); ``report``: the architecture history; ``cli``: the ``reslab build`` command.

The structural edits it makes (insert / delete blocks, cut / widen channels, with weight and optimizer
carry) and the channel groups live one layer down, in ``reslab.edit``.
"""

from ..lazy import lazy_exports

# Imported on first use: `reslab --help` and the other commands' parsers do not load torch.
lazy_exports(
    __name__,
    {
        ".config": ["SECTION", "ResBuilderConfig", "ResBuilderConfigError"],
        ".hook": ["FOUND_SPEC", "ResBuilderHook", "make_hook"],
        ".penalties": [
            "WidthPenalty", "block_strengths", "branch_gain", "layer_lasso", "removable_blocks", "shrink_blocks"
        ],
        ".schedule": ["Schedule", "choose_insertion", "insertion_points", "make_schedule", "run_epochs"],
    },
)

__all__ = [
    "FOUND_SPEC", "SECTION", "ResBuilderConfig", "ResBuilderConfigError", "ResBuilderHook", "Schedule", "WidthPenalty",
    "block_strengths", "branch_gain", "choose_insertion", "insertion_points", "layer_lasso", "make_hook",
    "make_schedule", "removable_blocks", "run_epochs", "shrink_blocks",
]
