"""The engine hook that runs ResBuilder: penalties in every step of the search, edits at segment ends.

``reslab train`` builds it from a config's ``resbuilder`` section (``make_hook``); ``reslab build`` is the
same with the section added. At each segment end (see ``schedule``) rank 0 plans the edits on its copy of
the network, every rank applies the same plan (so all processes hold identical networks), and the trainer
swaps the network in with its optimizer state carried over (``Trainer.set_model`` re-wraps DDP and
torch.compile). When the search ends, fine-tuning restarts the schedule from shrink-and-perturb weights
(``shrink_and_perturb``). The history of the architecture and the schedule are kept in the hook's state, so
a resumed run keeps them: resuming with another ``train.epochs`` (to extend a run) does not move the search.
The stored schedule stands and an event ``resbuilder_schedule_kept`` says so; a ``train.epochs`` that would
end the run before the stored search ends is refused.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from dataclasses import asdict, replace
from typing import Any

import torch

from ..build import ResNet, build
from ..edit import (
    Edit,
    block_prefix,
    channel_layout,
    compose,
    copies_for,
    cut_channels,
    delete_blocks,
    expanded_widths,
    identity_map,
    insert_block,
    widen_channels,
)
from ..profile import profile
from ..spec import NetSpec
from ..train.config import Config
from ..train.distributed import broadcast_object
from ..train.hooks import Hook
from .config import ResBuilderConfig, ResBuilderConfigError
from .penalties import WidthPenalty, block_strengths, removable_blocks, shrink_blocks
from .report import write_report
from .schedule import DELETE, INSERT, NARROW, Schedule, choose_insertion, make_schedule, signature

FOUND_SPEC = "found_spec.json"


class ResBuilderHook(Hook):
    """Grows and shrinks ``trainer.model`` on the schedule of ``config`` (see ``reslab.builder``)."""

    def __init__(self, config: ResBuilderConfig | None = None, seed: int = 0) -> None:
        self.config = config or ResBuilderConfig()
        self.seed = seed
        self.schedule: Schedule | None = None
        self.history: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.seen: list[str] = []
        self.start_spec: dict[str, Any] | None = None
        self.accuracy_before_insert: float | None = None
        self.input_size: tuple[int, int, int] | None = None  # (C, H, W) of the data, for the FLOP costs
        self._penalty_spec: NetSpec | None = None
        self._width: WidthPenalty | None = None
        self._blocks: list[tuple[int, int]] = []
        self.loss_scale = 1.0  # the layer LASSO's factor from the training loss (layer_lasso_loss_power)

    # -- engine hooks ------------------------------------------------------------------------------------
    def on_train_start(self, trainer) -> None:
        epochs, steps, lr = trainer.config.train.epochs, trainer.steps_per_epoch, trainer.config.optim.lr
        if self.schedule is None:  # a new run (or a checkpoint from before schedules were stored)
            self.schedule = make_schedule(self.config, epochs, steps, lr)
        else:
            self.schedule = self.schedule.in_steps(steps)
            self._check_resumed_schedule(trainer, epochs)
        self.input_size = (trainer.data.in_chans, trainer.data.image_size, trainer.data.image_size)
        if self.start_spec is None:  # not resumed
            self.start_spec = trainer.model.spec.to_dict()
            self.seen.append(signature(trainer.model.spec))

    def _check_resumed_schedule(self, trainer, epochs: int) -> None:
        """A resumed run keeps the schedule it started with, whatever ``train.epochs`` says now."""
        last = self.schedule.last_search_epoch
        if epochs <= last:
            raise ResBuilderConfigError(
                f"train.epochs: {epochs} would end this run inside ResBuilder's search, which was scheduled "
                f"when the run started to end with epoch {last + 1}; resume with train.epochs > {last}")
        try:
            derived = make_schedule(self.config, epochs, trainer.steps_per_epoch, trainer.config.optim.lr)
        except ResBuilderConfigError:
            derived = None
        if derived != self.schedule:
            trainer.event("resbuilder_schedule_kept", segment_ends=list(self.schedule.ends),
                          search_epochs=self.schedule.search_epochs, train_epochs=epochs)

    @property
    def layer_strength(self) -> float:
        """The layer LASSO's lambda of the moment: the configured one scaled by the training loss."""
        return self.config.layer_lasso * self.loss_scale

    def searching(self, trainer) -> bool:
        return self.schedule is not None and trainer.epoch <= self.schedule.last_search_epoch

    def on_step_end(self, trainer, step: int) -> None:
        """The penalties' proximal steps (see ``penalties``); none while fine-tuning.

        Each optimizer step at learning rate ``lr`` is followed by the proximal step of ``lambda * penalty``
        with step size ``lr`` (proximal SGD, the exact form of "loss + lambda * LASSO"). The balance between
        a group's data gradient and the penalty is then the same whatever the number of steps: a group
        survives when the data pulls on it harder than ``lambda`` (a per-segment strength, tried first, let
        4x more steps per segment outvote the penalty 4x and the network grew without bound). The layer
        LASSO's lambda is scaled by the last epoch's training loss (``layer_lasso_loss_power``).
        """
        if not self.searching(trainer):
            return  # fine-tuning: the found architecture trains without penalties
        model = trainer.model
        if self._penalty_spec is not model.spec:  # a new architecture: new groups and FLOP weights
            self._width = WidthPenalty(model, self.input_size)
            self._blocks = removable_blocks(model)
            self._penalty_spec = model.spec
        lr = trainer.optimizer.param_groups[0]["lr"]
        shrink_blocks(model, self._blocks, self.layer_strength * lr)
        self._width.shrink(model, self.config.width_lasso * lr)
        segment = self.schedule.segment_ending_at(step)
        if segment is not None:
            self.end_segment(trainer, segment)

    def end_segment(self, trainer, segment: int) -> None:
        """Judge and edit at the end of ``segment``: validation accuracy for the paper's momentum rule (none
        without a validation split), then the plan rank 0 makes, applied by every rank."""
        accuracy, samples = None, None
        if trainer.data.val is not None:
            val = trainer.evaluate(trainer.data.val)  # every rank takes part
            accuracy, samples = val["accuracy"], val["count"]
        plan = self.plan(trainer.model, segment, accuracy, samples) if trainer.is_main else None
        plan = broadcast_object(plan)  # rank 0 decides; every rank applies the same edits
        self.apply(trainer, plan, accuracy)

    def on_epoch_end(self, trainer, epoch: int, metrics: dict[str, Any]) -> None:
        model = trainer.model
        cost = profile(model, self.input_size)
        self.history.append({
            "epoch": epoch, "phase": "search" if self.searching(trainer) else "finetune",
            "blocks_per_stage": model.spec.blocks_per_stage, "stage_channels": model.spec.stage_channels(),
            "widths": [[list(b.widths) for b in stage] for stage in model.spec.stages],
            "params": cost.params, "macs": cost.macs,
            "train_acc": metrics.get("train_acc"), "val_acc": metrics.get("val_acc"),
            "layer_lasso": self.layer_strength,  # the strength this epoch ran with
        })
        metrics.update(blocks=model.spec.num_blocks, params=cost.params, macs=cost.macs)
        loss, power = metrics.get("train_loss"), self.config.layer_lasso_loss_power
        if power and loss is not None:
            self.loss_scale = min(1.0, loss / math.log(max(model.spec.num_classes, 2))) ** power
        if epoch == self.schedule.last_search_epoch and epoch + 1 < trainer.config.train.epochs:
            if self.config.finetune_restart:
                trainer.restart_schedule()  # the found network fine-tunes on a fresh schedule
            if self.config.finetune_reinit > 0:
                self.shrink_and_perturb(trainer)

    def shrink_and_perturb(self, trainer) -> None:
        """Start fine-tuning from ``(1 - r) * searched + r * fresh`` weights (``r = finetune_reinit``; BN
        statistics too), ``fresh`` a new initialisation of the found network: Ash & Adams' (NeurIPS 2020)
        shrink-and-perturb against the warm-start gap. The optimizer starts afresh; its momentum belonged to
        the weights before the mix."""
        r = self.config.finetune_reinit
        searched = trainer.model
        with torch.random.fork_rng(devices=[]):  # every rank draws the same; the run's own RNG is untouched
            torch.manual_seed(self.seed)
            model = build(searched.spec)
        with torch.no_grad():
            mixed = model.state_dict()  # shares storage with the parameters and buffers
            for name, value in searched.state_dict().items():
                if value.is_floating_point():
                    mixed[name].mul_(r).add_(value.to(mixed[name].device), alpha=1 - r)
                else:
                    mixed[name].copy_(value)
        trainer.set_model(model)
        trainer.event("shrink_perturb", fraction=r)

    def on_train_end(self, trainer, summary: dict[str, Any]) -> None:
        summary["macs_history"] = [row["macs"] for row in self.history]
        summary["params_history"] = [row["params"] for row in self.history]
        summary["resbuilder"] = {
            "start": NetSpec.from_dict(self.start_spec).blocks_per_stage, "found_spec": FOUND_SPEC,
            "events": {kind: sum(e["kind"] == kind for e in self.events)
                       for kind in ("inserted", "deleted", "narrowed", "widened")},
            "config": asdict(self.config),
        }
        if not trainer.is_main:
            return
        run_dir = trainer.run_dir
        found = trainer.model.spec
        found.save(run_dir / FOUND_SPEC)
        (run_dir / "resbuilder.json").write_text(json.dumps(
            {"config": asdict(self.config), "start_spec": self.start_spec, "found_spec": found.to_dict(),
             "history": self.history, "events": self.events}, indent=1) + "\n")
        report = write_report(run_dir, self.history, self.events, NetSpec.from_dict(self.start_spec), found,
                              summary, FOUND_SPEC)
        summary["resbuilder_report"] = f"[{report.name}]({report.name})"

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "events": self.events, "seen": self.seen,
                "start_spec": self.start_spec, "accuracy_before_insert": self.accuracy_before_insert,
                "loss_scale": self.loss_scale,
                "schedule": None if self.schedule is None else asdict(self.schedule)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))
        self.events = list(state.get("events", []))
        self.seen = list(state.get("seen", []))
        self.start_spec = state.get("start_spec")
        self.accuracy_before_insert = state.get("accuracy_before_insert")
        self.loss_scale = state.get("loss_scale", 1.0)
        schedule = state.get("schedule")
        self.schedule = None if schedule is None else Schedule(**{**schedule, "ends": tuple(schedule["ends"])})

    # -- decisions and edits -------------------------------------------------------------------------------
    def plan(self, model: ResNet, segment: int, accuracy: float | None,
             samples: int | None = None) -> list[tuple[str, Any]]:
        """The edits at the end of ``segment``, as ``(operation, argument)`` pairs applied in order.

        ``accuracy`` is measured on ``samples`` images (None: count the rise it shows as exact). Each
        decision is taken on the network the previous ones leave (a deleted block's channels are no longer
        counted when widths are judged).
        """
        cfg, plan = self.config, []
        last = segment == len(self.schedule.ends) - 1

        def add(operation: str, argument: Any) -> None:
            nonlocal model
            plan.append((operation, argument))
            model = self._edit(model, operation, argument).model

        for action in self.schedule.actions(segment):
            if action == DELETE:
                doomed = [b for b, strength in block_strengths(model).items() if strength < cfg.delete_threshold]
                # The last deletion ends the search: what the LASSO silenced must not go into fine-tuning
                # (no penalty there) because the insertion before it happened to raise accuracy.
                if doomed and (last or not self.insertion_paid(accuracy, samples)):
                    add("delete", doomed)
            elif action == NARROW:
                keep = WidthPenalty(model, self.input_size).keep(model, cfg.width_threshold)
                if keep:
                    uncut = model
                    add("cut", keep)
                    copies = self._expansion(uncut, model) if cfg.expand_widths else None
                    if copies:
                        add("widen", copies)
            elif action == INSERT:
                rng = random.Random(f"resbuilder:{self.seed}:{segment}")
                add("insert", choose_insertion(model.spec, rng, cfg.insert_attempts, set(self.seen),
                                               cfg.insert_width))
        return plan

    def insertion_paid(self, accuracy: float | None, samples: int | None) -> bool:
        """Whether the last insertion raised accuracy by more than ``skip_delete_gain`` (the paper's "layer
        LASSO momentum": then no block is judged yet) and by more than the noise of ``samples`` images.

        The noise bound is two standard errors of the difference of two accuracies near ``p`` measured on
        ``samples`` images each, 2 * sqrt(2 p (1 - p) / samples): on 5,000 images at 90 % it is 1.2 points,
        below the paper's 1.5, which then decides alone; on 130 images at 35 % it is 12 points. Without it a
        rise of 1.5 points (two of 130 images) spared deletions at random: in 8 of 10 evidence and
        calibration runs the search's last deletion was skipped so, and blocks inserted in its last cycle
        went into fine-tuning unjudged.
        """
        before = self.accuracy_before_insert
        if accuracy is None or before is None:
            return False
        rise = accuracy - before
        if samples:
            p = (accuracy + before) / 2
            if rise <= 2 * math.sqrt(2 * p * (1 - p) / samples):
                return False
        return rise > self.config.skip_delete_gain

    def _expansion(self, uncut: ResNet, cut: ResNet) -> dict[str, list[int]]:
        """MorphNet's expand step after a cut: the channels to copy so that the MACs the cut freed go back to
        every width by one factor. The width step then moves channels to where they cost least per unit of
        use, and leaves the budget to the depth search."""
        widths = expanded_widths(cut, profile(uncut, self.input_size).macs, self.input_size)
        if not widths:
            return {}
        return copies_for(widths, channel_layout(cut.spec), WidthPenalty(cut, self.input_size).scores(cut))

    def _edit(self, model: ResNet, operation: str, argument: Any) -> Edit:
        if operation == "delete":
            return delete_blocks(model, [tuple(b) for b in argument])
        if operation == "cut":
            return cut_channels(model, argument)
        if operation == "widen":
            return widen_channels(model, argument, seed=self.seed)
        return insert_block(model, *argument, gain=self.config.insert_gain, width=self.config.insert_width)

    def apply(self, trainer, plan: list[tuple[str, Any]], accuracy: float | None) -> None:
        """Make the planned edits, record them, and hand the result to the trainer."""
        old = trainer.model
        model, weights = old, identity_map(old)
        inserted = False
        for operation, argument in plan:
            before = model
            strengths = block_strengths(model) if operation == "delete" else {}
            edit = self._edit(model, operation, argument)
            model, weights = edit.model, compose(weights, edit.weights)
            self._record(trainer, operation, argument, before, model, strengths)
            inserted |= operation == "insert"
        # The accuracy an inserted block must beat to be spared the next deletion (the paper's momentum).
        self.accuracy_before_insert = accuracy if inserted else None
        if model is old:
            return
        if not model.spec.name.startswith("resbuilder_"):  # no longer the start network: say so
            model.spec = replace(model.spec, name=f"resbuilder_{model.spec.name}")
        self.seen.append(signature(model.spec))
        trainer.set_model(model, weights)

    def _record(self, trainer, operation: str, argument: Any, before: ResNet, after: ResNet,
                strengths: Mapping[tuple[int, int], float]) -> None:
        cost_before, cost_after = profile(before, self.input_size), profile(after, self.input_size)
        if operation == "delete":
            blocks = [tuple(b) for b in argument]
            kind, info = "deleted", {"blocks": [block_prefix(*b) for b in blocks],
                                     "strengths": [strengths[b] for b in blocks]}
        elif operation in ("cut", "widen"):
            old, new = channel_layout(before.spec).widths, channel_layout(after.spec).widths
            kind = "narrowed" if operation == "cut" else "widened"
            info = {"groups": {g: [old[g], new[g]] for g in argument}}
        else:
            stage, index = argument
            kind, info = "inserted", {"block": block_prefix(stage, index), "stage": stage, "index": index,
                                      "widths": list(after.spec.stages[stage][index].widths)}
        record = {"kind": kind, "epoch": trainer.epoch, **info,
                  "blocks_per_stage": after.spec.blocks_per_stage,
                  "params_before": cost_before.params, "params_after": cost_after.params,
                  "macs_before": cost_before.macs, "macs_after": cost_after.macs}
        self.events.append(record)
        trainer.event(kind, **{k: v for k, v in record.items() if k not in ("kind", "epoch")})


def make_hook(settings: ResBuilderConfig, config: Config) -> ResBuilderHook:
    """The hook for a config's ``resbuilder`` section (``reslab.train.plugins`` calls this)."""
    return ResBuilderHook(settings, seed=config.seed)


__all__ = ["FOUND_SPEC", "ResBuilderHook", "make_hook"]
