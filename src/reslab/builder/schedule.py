"""When ResBuilder edits the network, and where it inserts blocks.

The paper's pipeline is a sequence of trainings: per cycle, one training, then ``insertions_per_cycle``
times (insert a block, train, delete blocks below the threshold), then a MorphNet width step; 7 cycles.
In one continuous run each of those trainings becomes a *segment* of equal length, and the edits happen at
segment ends (epoch boundaries) while the optimizer and learning-rate schedule run on.

Insertion ("random in"): a stage is drawn uniformly, then a position uniformly among the places between
its blocks where a stride-1 identity block fits (the paper's ``equal_blockwise``: equal probability per
stage, not per position, so short stages are not starved), redrawing up to ``insert_attempts`` times to
avoid an architecture that was already trained. Deletion ("greedy out"): every block below the threshold.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass, replace

from ..edit.surgery import new_block_spec
from ..spec import NetSpec
from .config import ResBuilderConfig, ResBuilderConfigError

DELETE, NARROW, INSERT = "delete", "narrow", "insert"


@dataclass(frozen=True)
class Schedule:
    """Segment ends of the search phase; ``ends[k]`` is the epoch (0-based) at whose end segment k ends."""

    search_epochs: int
    cycles: int
    segments_per_cycle: int
    ends: tuple[int, ...]

    @property
    def last_search_epoch(self) -> int:
        return self.ends[-1]

    def segment_ending_at(self, epoch: int) -> int | None:
        return self.ends.index(epoch) if epoch in self.ends else None

    def actions(self, segment: int) -> tuple[str, ...]:
        """What happens at the end of ``segment``, in order.

        Deletion follows every training except the very first (nothing was inserted yet, as in the paper);
        the width step ends each cycle; a block is inserted before every segment but a cycle's first.
        """
        position = segment % self.segments_per_cycle
        actions = []
        if segment > 0:
            actions.append(DELETE)
        if position == self.segments_per_cycle - 1:
            actions.append(NARROW)
        else:
            actions.append(INSERT)
        return tuple(actions)


def make_schedule(config: ResBuilderConfig, epochs: int) -> Schedule:
    """Fit the configured cycles into the search phase of an ``epochs``-long run (fewer cycles if the phase
    has fewer epochs than segments; an error if it cannot hold one cycle)."""
    search = math.floor(epochs * config.search_fraction + 1e-9)  # 12 x (1/3) is 3.9999999999999996 in floats
    per_cycle = config.insertions_per_cycle + 1
    cycles = min(config.cycles, search // per_cycle)
    if cycles < 1:
        raise ResBuilderConfigError(
            f"resbuilder: one cycle needs {per_cycle} epochs of search (insertions_per_cycle + 1), but "
            f"train.epochs {epochs} x resbuilder.search_fraction {config.search_fraction} leaves {search}; "
            f"train for at least {math.ceil(per_cycle / config.search_fraction - 1e-9)} epochs")
    segments = cycles * per_cycle
    ends = tuple((k + 1) * search // segments - 1 for k in range(segments))
    return Schedule(search, cycles, per_cycle, ends)


def run_epochs(found_epochs: int, search_fraction: float) -> int:
    """The length of a ResBuilder run whose found network trains for ``found_epochs`` after the search: the
    paper trains its final architecture with the full recipe, so a found network is compared with fixed ones
    trained as long (``search_fraction`` 1/3: 1.5x the epochs)."""
    if search_fraction >= 1:
        return found_epochs  # all search: the searched network is the result
    return round(found_epochs / (1 - search_fraction))


def insertion_points(spec: NetSpec, stage: int) -> list[int]:
    """Where in ``stage`` a new identity block may go: after any of its blocks, and before its first block
    unless that one changes the tensor's shape (the new block would then sit in the previous stage)."""
    blocks = spec.stages[stage]
    starts_with_identity = not blocks or (blocks[0].stride == 1 and blocks[0].in_chans == blocks[0].out_chans)
    return list(range(0 if starts_with_identity else 1, len(blocks) + 1))


def signature(spec: NetSpec) -> str:
    """A short digest of the architecture (not the name, not the weights), to recognise a repeat."""
    layout = [[(b.kind, b.in_chans, list(b.widths), b.out_chans, b.stride, b.shortcut) for b in stage]
              for stage in spec.stages]
    text = json.dumps([spec.stem.out_chans, layout, spec.head.in_chans])
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def with_block(spec: NetSpec, stage: int, index: int, width: float = 1.0) -> NetSpec:
    """``spec`` with ResBuilder's new block at ``(stage, index)`` (the spec side of ``insert_block``)."""
    stages = [list(s) for s in spec.stages]
    stages[stage].insert(index, new_block_spec(spec, stage, index, width))
    return replace(spec, stages=stages)


def choose_insertion(spec: NetSpec, rng: random.Random, attempts: int, seen: set[str],
                     width: float = 1.0) -> tuple[int, int]:
    """Draw a stage uniformly, then a position in it; redraw (up to ``attempts`` draws in all) while the
    result is an architecture in ``seen``. The last draw stands if every one was seen."""
    choice = (0, 0)
    for _ in range(attempts):
        stage = rng.randrange(len(spec.stages))
        choice = (stage, rng.choice(insertion_points(spec, stage)))
        if signature(with_block(spec, *choice, width)) not in seen:
            break
    return choice
