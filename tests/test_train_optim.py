"""Optimizers and schedules: the learning rate at every step, warm-up, parameter groups, restoring."""

from __future__ import annotations

import math

import pytest
import torch
from builder_nets import SPECS, images, randomised

import reslab
from reslab.edit import compose, cut_channels, identity_map, insert_block
from reslab.train.config import OptimConfig, ScheduleConfig
from reslab.train.optim import (
    carry_optimizer_state,
    make_optimizer,
    make_scheduler,
    param_groups,
    restore_scheduler,
    scheduler_position,
)


def lrs(schedule: ScheduleConfig, steps_per_epoch: int, epochs: int, base_lr: float = 0.1) -> list[float]:
    """The learning rate used by each optimizer step of a run, read from a real optimizer."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=base_lr)
    scheduler = make_scheduler(opt, schedule, base_lr, steps_per_epoch, epochs)
    out = []
    for _ in range(steps_per_epoch * epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return out


def test_constant():
    assert lrs(ScheduleConfig(name="constant"), 3, 2) == [0.1] * 6


def test_step_decays_every_step_size_epochs_at_the_epoch_boundary():
    values = lrs(ScheduleConfig(name="step", step_size=2, gamma=0.5), steps_per_epoch=3, epochs=5)
    expected = [0.1] * 6 + [0.05] * 6 + [0.025] * 3
    assert values == pytest.approx(expected)


def test_multistep_drops_at_each_milestone():
    values = lrs(ScheduleConfig(name="multistep", milestones=[1, 3], gamma=0.1), steps_per_epoch=2, epochs=4)
    assert values == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.01, 0.01, 0.001, 0.001])


def test_cosine_goes_from_lr_to_min_lr_per_step():
    values = lrs(ScheduleConfig(name="cosine", min_lr=0.001), steps_per_epoch=5, epochs=2)
    assert values[0] == pytest.approx(0.1)
    assert values[-1] == pytest.approx(0.001)
    middle = 0.001 + (0.1 - 0.001) * 0.5 * (1 + math.cos(math.pi * 4 / 9))
    assert values[4] == pytest.approx(middle)
    assert all(a > b for a, b in zip(values, values[1:], strict=False))  # decays within epochs too


def test_linear_warmup_then_cosine():
    values = lrs(ScheduleConfig(name="cosine", warmup_epochs=1), steps_per_epoch=4, epochs=3)
    assert values[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    # The cosine part starts at the peak right after warm-up and spans the remaining 8 steps.
    assert values[4] == pytest.approx(0.1)
    assert values[5] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi / 7)))
    assert values[-1] == pytest.approx(0.0, abs=1e-12)


def test_warmup_ramps_to_the_multistep_value():
    values = lrs(ScheduleConfig(name="multistep", milestones=[1], warmup_epochs=0.5), steps_per_epoch=4, epochs=2)
    assert values == pytest.approx([0.05, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01])


def test_restored_scheduler_continues_at_the_same_step():
    cfg = ScheduleConfig(name="cosine", warmup_epochs=1)
    model = reslab.create_model("resnet8")
    opt = make_optimizer(model, OptimConfig())
    scheduler = make_scheduler(opt, cfg, 0.1, 5, 4)
    for _ in range(7):
        opt.step()
        scheduler.step()
    position = scheduler_position(scheduler)
    fresh_opt = make_optimizer(model, OptimConfig())
    fresh = make_scheduler(fresh_opt, cfg, 0.1, 5, 4)
    restore_scheduler(fresh, position)
    assert fresh.last_epoch == 7
    assert [g["lr"] for g in fresh_opt.param_groups] == [g["lr"] for g in opt.param_groups]
    opt.step(), scheduler.step(), fresh_opt.step(), fresh.step()
    assert fresh_opt.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_a_restarted_schedule_runs_again_over_the_remaining_epochs():
    cfg = ScheduleConfig(name="cosine")
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1)
    scheduler = make_scheduler(opt, cfg, 0.1, 5, 10)
    for _ in range(30):  # six epochs on the original schedule
        opt.step()
        scheduler.step()
    assert opt.param_groups[0]["lr"] < 0.05
    restarted = make_scheduler(opt, cfg, 0.1, 5, 10, start_epoch=6)
    restore_scheduler(restarted, scheduler_position(scheduler))
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        restarted.step()
    assert seen == pytest.approx(lrs(cfg, 5, 4))  # the 4-epoch cosine, from the base rate down


def test_no_decay_groups_hold_norm_parameters_and_biases():
    model = reslab.create_model("resnet8")
    decay, no_decay = param_groups(model, 5e-4, no_decay_bn_bias=True)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    not_decayed = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert "conv1.weight" in decayed and "fc.weight" in decayed and "layer1.0.conv2.weight" in decayed
    assert {"bn1.weight", "bn1.bias", "fc.bias", "layer2.0.bn2.weight"} <= not_decayed
    assert all(".bn" in n or n.startswith("bn") or n.endswith("bias") for n in not_decayed)
    assert decayed | not_decayed == set(names.values()) and not decayed & not_decayed
    (everything,) = param_groups(model, 5e-4, no_decay_bn_bias=False)
    assert len(everything["params"]) == len(names) and everything["weight_decay"] == 5e-4


def test_no_decay_leaves_bn_untouched_by_weight_decay():
    """With a zero gradient, only weight decay moves a parameter: BN scales must stay put."""
    model = reslab.create_model("resnet8")
    opt = make_optimizer(model, OptimConfig(lr=0.5, weight_decay=0.1, momentum=0.0))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    conv_before, bn_before = model.conv1.weight.clone(), model.bn1.weight.clone()
    opt.step()
    assert torch.allclose(model.conv1.weight, conv_before * (1 - 0.5 * 0.1))
    assert torch.equal(model.bn1.weight, bn_before)


def test_optimizer_choices():
    model = reslab.create_model("resnet8")
    sgd = make_optimizer(model, OptimConfig(name="sgd", momentum=0.9, nesterov=True))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    adamw = make_optimizer(model, OptimConfig(name="adamw", lr=1e-3, betas=[0.8, 0.99]))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.8, 0.99)


def trained_optimizer(model: torch.nn.Module, make, x: torch.Tensor) -> torch.optim.Optimizer:
    opt = make(model.parameters())
    model.train()
    for _ in range(2):
        opt.zero_grad()
        model(x).logsumexp(1).mean().backward()
        opt.step()
    return opt


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_optimizer_state_is_carried_across_an_edit(optimizer: str) -> None:
    """Surviving parameters keep their momentum (cut like the parameter), new ones start empty, and the
    optimizer steps on with the carried state."""
    model, x = randomised(SPECS["basic"]()), images(8)
    make = {"sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
            "adam": lambda p: torch.optim.Adam(p, lr=1e-3)}[optimizer]
    opt = trained_optimizer(model, make, x)
    first = cut_channels(model, {"stem": [0, 2, 4, 6, 8, 10, 12, 14]})
    edit = insert_block(first.model, 2, 1)
    new_opt = make(edit.model.parameters())
    carry_optimizer_state(opt, model, new_opt, edit.model, compose(first.weights, edit.weights))

    old, new = dict(model.named_parameters()), dict(edit.model.named_parameters())
    buffer = "momentum_buffer" if optimizer == "sgd" else "exp_avg"
    carried = new_opt.state[new["layer1.0.conv1.weight"]]
    torch.testing.assert_close(carried[buffer], opt.state[old["layer1.0.conv1.weight"]][buffer][:, ::2])
    assert new["layer3.1.conv1.weight"] not in new_opt.state  # the inserted block starts fresh
    # Renamed (moved one place on) but not cut: its state moves with it.
    torch.testing.assert_close(new_opt.state[new["layer3.2.bn1.weight"]][buffer],
                               opt.state[old["layer3.1.bn1.weight"]][buffer])
    assert carried[buffer].data_ptr() != opt.state[old["layer1.0.conv1.weight"]][buffer].data_ptr()
    if optimizer == "adam":
        assert carried["step"] == opt.state[old["layer1.0.conv1.weight"]]["step"]
    edit.model.train()
    new_opt.zero_grad()
    edit.model(x).logsumexp(1).mean().backward()
    new_opt.step()


def test_same_names_carry_the_momentum_exactly() -> None:
    model, x = randomised(SPECS["basic"]()), images(8)
    make = lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)  # noqa: E731
    opt = trained_optimizer(model, make, x)
    twin = reslab.build(model.spec)
    fresh = make(twin.parameters())
    carry_optimizer_state(opt, model, fresh, twin, identity_map(model))
    pairs = zip(model.parameters(), twin.parameters(), strict=True)
    assert all(torch.equal(opt.state[a]["momentum_buffer"], fresh.state[b]["momentum_buffer"]) for a, b in pairs)
