"""When ResBuilder edits the network, and where it inserts blocks.

The paper's pipeline is a sequence of trainings: per cycle, one training, then ``insertions_per_cycle``
times (insert a block, train, delete blocks below the threshold), then a MorphNet width step; 7 cycles.
In one continuous run each of those trainings becomes a *segment* of equal length, and the edits happen at
segment ends while the optimizer and learning-rate schedule run on. Segments are counted in optimizer steps,
not epochs: a segment must give the layer LASSO time to judge the block inserted at its start
(``judgement_steps``), which takes the same number of steps on 1,000 images as on 50,000, while an epoch of
50,000 images is 50 times longer. (Segments of whole epochs, the first form, left a 12-epoch run on a whole
training set one cycle of three insertions.) The search ends with an epoch, so fine-tuning starts with one.

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
    """Segment ends of the search phase: segment k ends after the run's ``ends[k]``-th optimizer step.

    The search is the run's first ``search_epochs`` epochs of ``steps_per_epoch`` steps; its last segment ends
    with the last of them. (``steps_per_epoch`` 0: ``ends`` count epochs, as checkpoints written before
    segments were counted in steps store them; ``ResBuilderHook`` converts those.)
    """

    search_epochs: int
    cycles: int
    segments_per_cycle: int
    ends: tuple[int, ...]
    steps_per_epoch: int = 0

    @property
    def last_search_epoch(self) -> int:
        return self.search_epochs - 1

    def segment_ending_at(self, step: int) -> int | None:
        """The segment that ends after global step ``step`` (1-based: steps done so far), if any."""
        return self.ends.index(step) if step in self.ends else None

    def in_steps(self, steps_per_epoch: int) -> Schedule:
        """This schedule with epoch-counted ends (an old checkpoint's) moved to the last step of their epochs."""
        if self.steps_per_epoch:
            return self
        return replace(self, ends=tuple((e + 1) * steps_per_epoch for e in self.ends),
                       steps_per_epoch=steps_per_epoch)

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


def judgement_steps(config: ResBuilderConfig, lr: float) -> int:
    """The optimizer steps in which the layer LASSO alone takes a new block from its starting gain to zero
    (its proximal step lowers a gain's RMS by ``lr * layer_lasso`` per step): a segment this long can judge the
    block inserted at its start, whatever the data set's size. 45 steps at lr 0.05 with the defaults."""
    shrink = lr * config.layer_lasso
    if shrink <= 0 or config.insert_gain <= 0:
        return 1  # nothing to wait for
    return math.ceil(config.insert_gain / shrink - 1e-9)


def make_schedule(config: ResBuilderConfig, epochs: int, steps_per_epoch: int, lr: float) -> Schedule:
    """Fit the configured cycles into the search phase of an ``epochs``-long run of ``steps_per_epoch`` steps
    per epoch at base learning rate ``lr``: as many cycles (up to ``config.cycles``) as the search holds with
    segments of at least ``judgement_steps``; at least one, with shorter segments if the search is short;
    an error if the search has fewer steps than one cycle has segments."""
    search = math.floor(epochs * config.search_fraction + 1e-9)  # 12 x (1/3) is 3.9999999999999996 in floats
    search_steps = search * steps_per_epoch
    per_cycle = config.insertions_per_cycle + 1
    if search_steps < per_cycle:
        raise ResBuilderConfigError(
            f"resbuilder: one cycle needs {per_cycle} segments of search (insertions_per_cycle + 1), but "
            f"train.epochs {epochs} x resbuilder.search_fraction {config.search_fraction} leaves "
            f"{search} epochs of {steps_per_epoch} steps; train for at least "
            f"{math.ceil(math.ceil(per_cycle / steps_per_epoch) / config.search_fraction - 1e-9)} epochs")
    cycles = max(1, min(config.cycles, search_steps // (per_cycle * judgement_steps(config, lr))))
    segments = cycles * per_cycle
    ends = tuple((k + 1) * search_steps // segments for k in range(segments))
    return Schedule(search, cycles, per_cycle, ends, steps_per_epoch)


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
