"""Optimizers and learning-rate schedules.

Schedules are evaluated per optimizer step: ``lr(step) = optim.lr * lr_factor(step)``, where step counts
the optimizer steps taken so far. Epoch-based settings (warm-up length, step sizes, milestones) are turned
into steps with the number of steps per epoch, so a milestone at epoch 100 drops the rate exactly at the
first step of epoch 100, and cosine decays smoothly within epochs. The factor is a pure function of the
step, so a resumed run only needs the step count (``LambdaLR.last_epoch``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ..build import CLASSIFIER
from ..edit import SurgeryError, WeightMap, take
from .config import OptimConfig, ScheduleConfig

# Modules whose weights are scale/shift parameters, not filters: no weight decay under no_decay_bn_bias.
NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def param_groups(model: nn.Module, weight_decay: float, no_decay_bn_bias: bool) -> list[dict]:
    """Split parameters into a decayed group and a non-decayed one (normalisation parameters and biases).

    Groups are in ``model.named_parameters()`` order and named (``group_name``), so optimizer state can be
    matched to parameters by position when a checkpoint is loaded. Frozen parameters (``requires_grad``
    false) are included: optimizers skip parameters without a gradient, and they train once unfrozen.
    """
    if not no_decay_bn_bias:
        return [{"params": list(model.parameters()), "weight_decay": weight_decay, "group_name": "all"}]
    no_decay_ids = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if isinstance(module, NORM_TYPES) or name == "bias":
                no_decay_ids.add(id(param))
    decay = [p for p in model.parameters() if id(p) not in no_decay_ids]
    no_decay = [p for p in model.parameters() if id(p) in no_decay_ids]
    return [
        {"params": decay, "weight_decay": weight_decay, "group_name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "group_name": "no_decay"},
    ]


def backbone_groups(model: nn.Module, groups: list[dict], lr: float, mult: float) -> list[dict]:
    """Each group split into its classifier part and its backbone part, at ``lr * mult`` (``optim.
    backbone_lr_mult``); the schedule scales both alike. Classifier groups come first, so the first group's
    learning rate (the one logged) is the configured one."""
    head_ids = {id(p) for p in getattr(model, CLASSIFIER).parameters()}
    heads, backbones = [], []
    for group in groups:
        backbone = [p for p in group["params"] if id(p) not in head_ids]
        head = [p for p in group["params"] if id(p) in head_ids]
        heads.append({**group, "params": head, "group_name": f"head_{group['group_name']}"})
        backbones.append({**group, "params": backbone, "lr": lr * mult,
                          "group_name": f"backbone_{group['group_name']}"})
    return heads + backbones


def make_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.no_decay_bn_bias)
    if cfg.backbone_lr_mult != 1.0:
        groups = backbone_groups(model, groups, cfg.lr, cfg.backbone_lr_mult)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0
        )
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    raise ValueError(f"optim.name: unknown optimizer {cfg.name!r}")  # validated in config; a schema bug


def carry_optimizer_state(old: torch.optim.Optimizer, old_model: nn.Module, new: torch.optim.Optimizer,
                          new_model: nn.Module, weights: WeightMap) -> None:
    """Fill ``new``, a fresh optimizer over ``new_model``, with ``old``'s per-parameter state (momentum
    buffers, Adam moments and step) after an architecture edit turned ``old_model`` into ``new_model``.

    ``weights`` says where each new tensor came from (the map ``reslab.edit``'s edits return; ``identity_map``
    of the old model for "same names"). State tensors shaped like the old parameter are cut with the
    parameter's kept positions; other entries are copied. A new parameter (no source, or a source without
    state) starts empty, as in a fresh optimizer.
    """
    old_params = dict(old_model.named_parameters())
    for name, param in new_model.named_parameters():
        carry = weights.get(name)
        source = None if carry is None else old_params.get(carry.source)
        state = None if source is None else old.state.get(source)
        if not state:
            continue
        carried = {}
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.shape == source.shape:
                value = take(value, carry.index)
                if value.shape != param.shape:
                    raise SurgeryError(f"optimizer state {key!r} of {carry.source!r} does not fit the new "
                                       f"parameter {name!r}: {tuple(value.shape)} against {tuple(param.shape)}")
                value = value.to(param.device, copy=True)
            elif isinstance(value, torch.Tensor):
                value = value.clone()  # Adam's step: a scalar tensor that stays where the optimizer keeps it
            carried[key] = value
        new.state[param] = carried


def lr_factor_fn(
    cfg: ScheduleConfig, base_lr: float, steps_per_epoch: int, epochs: int
) -> Callable[[int], float]:
    """``factor(step)``: the multiplier of ``base_lr`` for the optimizer step ``step`` (0-based)."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    total = max(1, epochs * steps_per_epoch)
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    min_factor = min(cfg.min_lr / base_lr, 1.0)

    def main(step: int) -> float:
        epoch = step // steps_per_epoch
        if cfg.name == "constant":
            return 1.0
        if cfg.name == "step":
            return cfg.gamma ** (epoch // cfg.step_size)
        if cfg.name == "multistep":
            return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
        if cfg.name == "cosine":
            # Cosine over the steps after warm-up, reaching min_lr at the last step.
            progress = min(1.0, (step - warmup) / max(1, total - warmup - 1))
            return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        raise ValueError(f"schedule.name: unknown schedule {cfg.name!r}")

    def factor(step: int) -> float:
        if step < warmup:
            # Linear warm-up to the schedule's value at the end of warm-up, never starting at zero.
            return main(warmup) * (step + 1) / warmup
        return main(step)

    return factor


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: ScheduleConfig,
    base_lr: float,
    steps_per_epoch: int,
    epochs: int,
    start_epoch: int = 0,
) -> LambdaLR:
    """A per-step ``LambdaLR`` (call ``scheduler.step()`` after every optimizer step).

    With ``start_epoch`` > 0 the schedule starts (again) at that epoch and runs over the remaining
    ``epochs - start_epoch``; its steps still count from the start of training, so checkpoints hold one
    position whatever the restarts.
    """
    if start_epoch == 0:
        return LambdaLR(optimizer, lr_factor_fn(cfg, base_lr, steps_per_epoch, epochs))
    factor = lr_factor_fn(cfg, base_lr, steps_per_epoch, max(1, epochs - start_epoch))
    offset = start_epoch * steps_per_epoch
    return LambdaLR(optimizer, lambda step: factor(max(0, step - offset)))


def scheduler_position(scheduler: LambdaLR) -> dict:
    """The JSON-able part of a scheduler's state (the factor functions are rebuilt from the config)."""
    state = scheduler.state_dict()
    return {k: v for k, v in state.items() if k != "lr_lambdas"}


def restore_scheduler(scheduler: LambdaLR, position: dict) -> None:
    """Move a freshly built scheduler to ``position`` and set the optimizer's learning rates to match."""
    state = scheduler.state_dict()
    state.update(position)
    scheduler.load_state_dict(state)
    # Recomputed from this scheduler's factors (not the saved last rate), so a restarted schedule takes effect.
    lrs = [base * factor(scheduler.last_epoch) for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas,
                                                                        strict=True)]
    scheduler._last_lr = lrs
    for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr


def rescale_lr(scheduler: LambdaLR, factor: float) -> None:
    """Multiply the schedule's base learning rates by ``factor`` from the current step on (a resumed run
    given a lower ``optim.lr``)."""
    scheduler.base_lrs = [base * factor for base in scheduler.base_lrs]
    for group in scheduler.optimizer.param_groups:
        group["initial_lr"] = group["initial_lr"] * factor
    restore_scheduler(scheduler, {"last_epoch": scheduler.last_epoch})


__all__ = [
    "backbone_groups",
    "carry_optimizer_state",
    "lr_factor_fn",
    "rescale_lr",
    "make_optimizer",
    "make_scheduler",
    "param_groups",
    "restore_scheduler",
    "scheduler_position",
]
