"""ResBuilder in the training engine: edits swap the trainer's model with optimizer state carried, and a
whole ``reslab build`` run on digits inserts, deletes, reports and saves a spec that trains again."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from reslab.build import build as reslab_build
from reslab.builder import FOUND_SPEC, ResBuilderConfig, ResBuilderConfigError, ResBuilderHook, make_hook, make_schedule
from reslab.cli import main
from reslab.edit import channel_layout
from reslab.io import load
from reslab.profile import profile
from reslab.spec import NetSpec
from reslab.train.config import load_config
from reslab.train.engine import Trainer
from reslab.train.hooks import Hook

QUIET = ["train.progress=none", "output.tensorboard=false", "output.keep_best=false"]
# A class-balanced fifth of digits: a few steps per epoch are enough to exercise every mechanism.
SMALL = ["data.train_per_class=40", "train.batch_size=64"]


def digits_trainer(tmp_path: Path, hook: ResBuilderHook, *overrides: str) -> Trainer:
    config = load_config(None, [*QUIET, "train.epochs=12", *overrides])
    return Trainer(config, [hook], run_dir=tmp_path / "run")


def test_make_hook_reads_the_section() -> None:
    config = load_config(None, ["seed=3", "resbuilder.cycles=2"])
    hook = make_hook(config.plugins["resbuilder"], config)
    assert hook.config == ResBuilderConfig(cycles=2) and hook.seed == 3


def test_an_edit_swaps_the_model_and_carries_momentum(tmp_path: Path) -> None:
    hook = ResBuilderHook()
    trainer = digits_trainer(tmp_path, hook)
    hook.on_train_start(trainer)
    x, y = next(iter(trainer.data.train.batches(32, shuffle=False, augment=False)))
    trainer.model.train()
    torch.nn.functional.cross_entropy(trainer.model(x), y).backward()
    trainer.optimizer.step()
    old_model, old_optimizer = trainer.model, trainer.optimizer
    old_momentum = old_optimizer.state[old_model.layer1[0].conv1.weight]["momentum_buffer"]

    hook.apply(trainer, [("cut", {"stem": list(range(0, 16, 2))}), ("insert", (1, 1))], accuracy=0.5)

    spec = trainer.model.spec
    assert trainer.model is not old_model and trainer.optimizer is not old_optimizer
    assert spec.name == "resbuilder_resnet8"
    assert (spec.stem.out_chans, spec.blocks_per_stage) == (8, [1, 2, 1])
    assert spec.stages[1][1].widths == (16,)  # half its neighbour's inner width (insert_width 0.5)
    carried = trainer.optimizer.state[trainer.model.layer1[0].conv1.weight]["momentum_buffer"]
    torch.testing.assert_close(carried, old_momentum[:, ::2])
    assert trainer.model.layer2[1].conv1.weight not in trainer.optimizer.state  # the new block starts fresh
    assert [e["kind"] for e in hook.events] == ["narrowed", "inserted"]
    assert hook.events[0]["groups"] == {"stem": [16, 8]}
    assert hook.events[1]["macs_after"] > hook.events[1]["macs_before"]
    assert hook.accuracy_before_insert == 0.5
    # The hook's state is JSON (it goes into every checkpoint) and restores itself.
    restored = ResBuilderHook()
    restored.load_state_dict(json.loads(json.dumps(hook.state_dict())))
    assert restored.state_dict() == hook.state_dict()


def test_a_plan_deletes_what_fell_below_the_threshold(tmp_path: Path) -> None:
    hook = ResBuilderHook(ResBuilderConfig(delete_threshold=1e-3))
    trainer = digits_trainer(tmp_path, hook)
    hook.on_train_start(trainer)
    with torch.no_grad():
        trainer.model.layer1[0].bn2.weight.fill_(1e-4)
        trainer.model.layer1[0].bn2.bias.zero_()
    plan = hook.plan(trainer.model, segment=1, accuracy=0.9)  # segment 1: delete, then insert
    assert plan[0] == ("delete", [(0, 0)])
    assert plan[1][0] == "insert"
    # An insertion that just raised accuracy by more than 1.5 points spares the next deletion, if the rise
    # is above the noise of the images it was measured on (2 standard errors: 3.6 points on 1,000 at 88 %).
    hook.accuracy_before_insert = 0.85
    assert [op for op, _ in hook.plan(trainer.model, segment=1, accuracy=0.9)] == ["insert"]
    assert [op for op, _ in hook.plan(trainer.model, segment=1, accuracy=0.9, samples=1000)] == ["insert"]
    assert [op for op, _ in hook.plan(trainer.model, segment=1, accuracy=0.9, samples=200)] == ["delete", "insert"]
    hook.accuracy_before_insert = 0.89  # 1 point: not a rise that counts, on any number of images
    assert [op for op, _ in hook.plan(trainer.model, segment=1, accuracy=0.9)] == ["delete", "insert"]


def test_no_accuracy_rise_spares_the_last_deletion_of_the_search(tmp_path: Path) -> None:
    """The search's last deletion ends it: a block the layer LASSO silenced does not go into fine-tuning
    (no penalty there) because the insertion before it happened to raise accuracy."""
    hook = ResBuilderHook()
    trainer = digits_trainer(tmp_path, hook)
    hook.on_train_start(trainer)
    with torch.no_grad():
        trainer.model.layer1[0].bn2.weight.zero_()
        trainer.model.layer1[0].bn2.bias.zero_()
    hook.accuracy_before_insert = 0.5
    last = len(hook.schedule.ends) - 1
    assert hook.schedule.actions(last - 1) == ("delete", "insert")
    assert [op for op, _ in hook.plan(trainer.model, last - 1, accuracy=0.9)] == ["insert"]
    assert hook.plan(trainer.model, last, accuracy=0.9)[0] == ("delete", [(0, 0)])


@pytest.mark.parametrize(("rise", "deleted"), [(0.08, True), (0.25, False)])
def test_the_rise_is_judged_against_the_noise_of_the_validation_split(tmp_path: Path, rise: float,
                                                                      deleted: bool) -> None:
    """At a segment end the hook measures the rise on the validation split it has (143 digits images: the
    bound is 12 points at 50 %): 8 points is noise and the deletion goes ahead, 25 points spare it."""
    hook = ResBuilderHook()
    trainer = digits_trainer(tmp_path, hook)
    hook.on_train_start(trainer)
    assert len(trainer.data.val) == 143
    with torch.no_grad():
        trainer.model.layer1[0].bn2.weight.zero_()
        trainer.model.layer1[0].bn2.bias.zero_()
    measured = []

    def evaluate(split):  # the network scores 50 % + rise on the split the segment's end measures
        measured.append(len(split))
        return {"loss": 1.0, "accuracy": 0.5 + rise, "count": len(split)}

    trainer.evaluate = evaluate
    hook.accuracy_before_insert = 0.5
    hook.end_segment(trainer, 1)  # segment 1: delete, then insert
    assert measured == [143]
    assert ("deleted" in [e["kind"] for e in hook.events]) is deleted


def test_segments_end_inside_epochs_and_the_next_step_trains_the_new_network(tmp_path: Path) -> None:
    """The hook edits at the step that ends a segment, mid-epoch; the engine's next step trains the network
    it swapped in (parameters, optimizer and all)."""
    hook = ResBuilderHook(ResBuilderConfig(search_fraction=0.5, insertions_per_cycle=1))
    trainer = digits_trainer(tmp_path, hook, *SMALL, "train.batch_size=16", "train.epochs=2")
    hook.on_train_start(trainer)
    steps = trainer.steps_per_epoch
    assert hook.schedule.ends == (steps // 2, steps)  # the first segment ends in the middle of epoch 0
    seen = []

    class Watch(Hook):
        def on_step_end(self, trainer, step: int) -> None:
            seen.append((step, trainer.model.spec.blocks_per_stage, id(trainer.model)))

    trainer.hooks.append(Watch())
    trainer.fit()
    inserted = [e for e in hook.events if e["kind"] == "inserted"]
    assert len(inserted) == 1 and inserted[0]["epoch"] == 0
    # The watcher runs after ResBuilder's hook: at the segment's last step it already sees the new network.
    before = [s for s in seen if s[0] < steps // 2]
    after = [s for s in seen if steps // 2 <= s[0] < steps]
    assert {s[1] == [1, 1, 1] for s in before} == {True}
    assert len({s[2] for s in after}) == 1 and sum(after[0][1]) == 4  # one network, with the new block


@pytest.mark.parametrize("expand", [True, False])
def test_a_width_step_cuts_dead_channels_and_gives_their_macs_back(tmp_path: Path, expand: bool) -> None:
    hook = ResBuilderHook(ResBuilderConfig(expand_widths=expand))
    trainer = digits_trainer(tmp_path, hook)
    hook.on_train_start(trainer)
    model = trainer.model
    modules = dict(model.named_modules())
    with torch.no_grad():  # every other channel of the stem's stream dead: whatever writes it writes zero
        for member in channel_layout(model.spec).members["stem"]:
            rows = slice(member.offset, member.offset + 16, 2)
            modules[member.module].weight[rows] = 0.0
            modules[member.module].bias[rows] = 0.0
    x = next(iter(trainer.data.train.batches(16, shuffle=False, augment=False)))[0]
    model.eval()
    with torch.no_grad():
        before = model(x)
    budget = profile(model, hook.input_size).macs
    segment = hook.schedule.segments_per_cycle - 1  # a cycle's last segment ends with the width step
    plan = hook.plan(model, segment, accuracy=None)
    assert plan[0] == ("cut", {"stem": list(range(1, 16, 2))})
    if not expand:
        assert len(plan) == 1
        return
    operation, copies = plan[1]
    assert operation == "widen" and len(plan) == 2
    assert len(copies["stem"]) > 0 and set(copies["stem"]) <= set(range(8))
    hook.apply(trainer, plan, accuracy=None)
    assert [e["kind"] for e in hook.events] == ["narrowed", "widened"]
    cut_macs = hook.events[0]["macs_after"]
    assert cut_macs < hook.events[1]["macs_after"] == profile(trainer.model, hook.input_size).macs <= budget
    trainer.model.eval()
    with torch.no_grad():  # dead channels out, copies in (their readers' weights shared out): the same function
        torch.testing.assert_close(trainer.model(x), before, atol=1e-5, rtol=1e-5)


def test_each_step_is_the_proximal_step_at_the_learning_rate_of_the_moment(tmp_path: Path) -> None:
    """Without data, every search step at learning rate lr lowers a block's RMS gain by lr * layer_lasso
    (proximal SGD on loss + lambda * LASSO), however many steps a segment has; fine-tuning applies none."""
    rms = {}
    for batch_size in (64, 16):  # 4 and 15 steps per epoch
        hook = ResBuilderHook(ResBuilderConfig(layer_lasso=0.3, width_lasso=0.0))
        trainer = digits_trainer(tmp_path / str(batch_size), hook, *SMALL, f"train.batch_size={batch_size}",
                                 "schedule.name=constant", "schedule.warmup_epochs=0", "train.epochs=16",
                                 "optim.lr=0.05")
        hook.on_train_start(trainer)
        hook.schedule = replace(hook.schedule, ends=(10_000,))  # no segment ends (and edits) in these steps
        block = trainer.model.layer1[0].bn2
        with torch.no_grad():
            block.weight.fill_(1.0)
            block.bias.zero_()

        def gain_rms(bn: torch.nn.BatchNorm2d = block) -> float:
            return torch.cat([bn.weight, bn.bias]).norm().item() / (2 * bn.weight.numel()) ** 0.5

        trainer.epoch = 0
        for step in range(10):
            hook.on_step_end(trainer, step + 1)
        assert gain_rms() == pytest.approx(1 / 2**0.5 - 10 * 0.05 * 0.3, rel=1e-5)
        trainer.optimizer.param_groups[0]["lr"] = 0.02  # a scheduled learning rate scales the step
        before = gain_rms()
        hook.on_step_end(trainer, 11)
        assert before - gain_rms() == pytest.approx(0.02 * 0.3, rel=1e-4)
        trainer.epoch = hook.schedule.last_search_epoch + 1
        hook.on_step_end(trainer, 12)
        assert gain_rms() == pytest.approx(before - 0.02 * 0.3, rel=1e-4)
        rms[batch_size] = gain_rms()
    assert rms[64] == pytest.approx(rms[16], rel=1e-6)  # the segment's length plays no part


@pytest.mark.parametrize(("power", "loss", "scale"), [(0.0, 0.1, 1.0), (0.5, 0.1, (0.1 / math.log(10)) ** 0.5),
                                                     (0.5, 5.0, 1.0)])
def test_the_layer_lasso_follows_the_training_loss(tmp_path: Path, power: float, loss: float,
                                                    scale: float) -> None:
    """With ``layer_lasso_loss_power`` p the proximal step is lambda * (L / ln K) ** p (L the last epoch's
    training loss, K classes, at most lambda); it is measured on a block's gain after one step."""
    hook = ResBuilderHook(ResBuilderConfig(layer_lasso=0.3, width_lasso=0.0, layer_lasso_loss_power=power))
    trainer = digits_trainer(tmp_path, hook, *SMALL, "optim.lr=0.05")
    hook.on_train_start(trainer)
    trainer.epoch = 0
    hook.on_epoch_end(trainer, 0, {"train_loss": loss})
    assert hook.loss_scale == pytest.approx(scale)
    assert hook.state_dict()["loss_scale"] == pytest.approx(scale)  # a resumed run keeps it
    bn = trainer.model.layer1[0].bn2
    with torch.no_grad():
        bn.weight.fill_(1.0)
        bn.bias.zero_()
    trainer.optimizer.param_groups[0]["lr"] = 0.05
    hook.on_step_end(trainer, 1)
    rms = torch.cat([bn.weight, bn.bias]).norm().item() / (2 * bn.weight.numel()) ** 0.5
    assert rms == pytest.approx(1 / 2**0.5 - 0.05 * 0.3 * scale, rel=1e-5)


@pytest.mark.parametrize("fraction", [0.0, 0.5])
def test_fine_tuning_starts_from_searched_weights_mixed_with_a_fresh_draw(tmp_path: Path, fraction: float) -> None:
    hook = ResBuilderHook(ResBuilderConfig(finetune_reinit=fraction), seed=7)
    trainer = digits_trainer(tmp_path, hook, *SMALL)
    hook.on_train_start(trainer)
    x, y = next(iter(trainer.data.train.batches(32, shuffle=False, augment=False)))
    trainer.model.train()
    torch.nn.functional.cross_entropy(trainer.model(x), y).backward()
    trainer.optimizer.step()
    searched = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    last = hook.schedule.last_search_epoch
    trainer.epoch = last
    hook.on_epoch_end(trainer, last, {"val_acc": 0.5})
    after = trainer.model.state_dict()
    assert trainer.model.spec == NetSpec.from_dict(hook.start_spec)  # a fresh network: nothing to cut yet
    if fraction == 0.0:
        for name, value in searched.items():
            torch.testing.assert_close(after[name], value)
        return
    torch.manual_seed(7)
    fresh = reslab_build(trainer.model.spec).state_dict()
    for name, value in searched.items():
        if value.is_floating_point():
            torch.testing.assert_close(after[name], 0.5 * value + 0.5 * fresh[name])
        else:
            assert torch.equal(after[name], value)  # BN's batch counters are not mixed
    assert not trainer.optimizer.state  # the momentum belonged to the weights before the mix
    events = [json.loads(line) for line in (trainer.run_dir / "events.jsonl").read_text().splitlines()]
    assert {"kind": "shrink_perturb", "fraction": 0.5}.items() <= events[-1].items()


def test_reslab_build_on_digits(tmp_path: Path) -> None:
    # Four search epochs of a few steps give an inserted block no time to grow or decay on its own, so the
    # deletion threshold is raised to see the deletion happen; everything else is the default configuration.
    args = ["build", "--data", "digits", "--out", str(tmp_path)]
    for override in [*QUIET, *SMALL, "train.epochs=12", "resbuilder.delete_threshold=0.05"]:
        args += ["--set", override]
    assert main(args) == 0
    run = tmp_path / "digits_resbuilder"
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    kinds = [e["kind"] for e in events]
    assert "inserted" in kinds and "deleted" in kinds
    # Fine-tuning (epochs 4 to 11) starts the learning-rate schedule again.
    assert [e["start_epoch"] for e in events if e["kind"] == "schedule_restarted"] == [4]
    lrs = [json.loads(line)["lr"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert lrs[4] > lrs[3]
    summary = json.loads((run / "summary.json").read_text())
    history = json.loads((run / "resbuilder.json").read_text())["history"]
    assert len(summary["macs_history"]) == len(history) == 12
    assert summary["macs_history"][-1] == summary["macs"] == history[-1]["macs"]
    assert summary["params"] == history[-1]["params"]
    # The layer LASSO's strength follows the training loss: full at the start, lower as the loss falls.
    losses = [json.loads(line)["train_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    config = ResBuilderConfig()
    assert history[0]["layer_lasso"] == config.layer_lasso
    assert history[3]["layer_lasso"] == pytest.approx(
        config.layer_lasso * (losses[2] / math.log(10)) ** config.layer_lasso_loss_power)
    assert history[3]["layer_lasso"] < history[1]["layer_lasso"] < config.layer_lasso
    # Each epoch's row holds the architecture its last event left (edits happen inside epochs).
    for e in events:
        if e["kind"] in ("inserted", "deleted", "narrowed", "widened"):
            later = [x for x in events if x["epoch"] == e["epoch"] and "blocks_per_stage" in x][-1]
            assert history[e["epoch"]]["blocks_per_stage"] == later["blocks_per_stage"]
    # The found spec is saved, matches the trained network and loads with it.
    found = NetSpec.load(run / FOUND_SPEC)
    model = load(run / "model.safetensors")
    assert model.spec == found
    assert summary["blocks_per_stage"] == found.blocks_per_stage
    report = (run / "report.md").read_text()
    assert "[resbuilder.md](resbuilder.md)" in report and "inserted" in report
    page = (run / "resbuilder.md").read_text()
    assert "## Structural events" in page and (run / "resbuilder.png").stat().st_size > 0
    # The architecture alone trains again from scratch.
    retrain = ["train", "--out", str(tmp_path), "--set", "name=retrain", "--set", "model.name=null",
               "--set", f"model.spec={run / FOUND_SPEC}"]
    for override in [*QUIET, *SMALL, "train.epochs=1"]:
        retrain += ["--set", override]
    assert main(retrain) == 0
    again = json.loads((tmp_path / "retrain" / "summary.json").read_text())
    assert (again["blocks_per_stage"], again["params"]) == (found.blocks_per_stage, summary["params"])


@pytest.mark.slow
def test_two_processes_agree_on_every_edit(tmp_path: Path) -> None:
    """Under torchrun rank 0 decides and broadcasts; if the ranks' networks differed DDP would fail. The width
    step is made to fire (a strong width penalty) with MorphNet's expand, whose copies share out their readers'
    weights in random proportions: every rank must draw the same."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "reslab", "build", "--data", "digits", "--out", str(tmp_path)]
    overrides = ["train.epochs=12", "train.device=cpu", "output.checkpoint_every=12",
                 "resbuilder.delete_threshold=0.05", "resbuilder.width_lasso=0.3", "resbuilder.expand_widths=true"]
    for override in [*QUIET, *SMALL, *overrides]:
        command += ["--set", override]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "digits_resbuilder"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2
    kinds = [json.loads(line)["kind"] for line in (run / "events.jsonl").read_text().splitlines()]
    assert "inserted" in kinds and "narrowed" in kinds and "widened" in kinds
    assert load(run / "model.safetensors").spec == NetSpec.load(run / FOUND_SPEC)


def test_a_resume_with_more_epochs_keeps_the_stored_schedule(tmp_path: Path) -> None:
    """The schedule is part of the hook's checkpointed state: extending a finished 6-epoch run (search in
    epochs 0-1) to 10 epochs fine-tunes on, where re-deriving it from train.epochs would search again until
    epoch 3. The kept schedule is announced in events.jsonl."""
    args = ["build", "--data", "digits", "--out", str(tmp_path)]
    for override in [*QUIET, *SMALL, "train.epochs=6", "resbuilder.insertions_per_cycle=1"]:
        args += ["--set", override]
    assert main(args) == 0
    run = tmp_path / "digits_resbuilder"
    assert main(["train", "--resume", str(run), "--set", "train.epochs=10"]) == 0
    state = json.loads((run / "resbuilder.json").read_text())
    assert [row["phase"] for row in state["history"]] == ["search"] * 2 + ["finetune"] * 8
    assert all(e["epoch"] < 2 for e in state["events"])  # no edit after the stored search
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    kept = [e for e in events if e["kind"] == "resbuilder_schedule_kept"]
    # Its two segments end with the search's two epochs of 6 steps.
    assert len(kept) == 1 and kept[0]["segment_ends"] == [6, 12] and kept[0]["train_epochs"] == 10


def test_a_resume_that_would_end_inside_the_stored_search_is_refused(tmp_path: Path) -> None:
    hook = ResBuilderHook()
    hook.load_state_dict({"schedule": asdict(make_schedule(hook.config, 24, 6, 0.1))})  # search ends with epoch 7
    trainer = digits_trainer(tmp_path, hook, "train.epochs=6")
    with pytest.raises(ResBuilderConfigError, match="train.epochs: 6 would end this run inside ResBuilder's "
                                                    "search.*resume with train.epochs > 7"):
        hook.on_train_start(trainer)
    same = ResBuilderHook()
    same.load_state_dict(hook.state_dict())
    assert same.schedule == make_schedule(hook.config, 24, 6, 0.1)  # the state round-trips
