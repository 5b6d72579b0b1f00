"""Model cost: parameters, multiply-accumulates and activation memory.

MACs come from ``torch.utils.flop_counter``, which counts FLOPs of convolutions and matrix products as
2 x MACs; we report both and label the units. Batch norm, ReLU and pooling are not counted (as in the
papers' tables).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Profile:
    params: int
    macs: int  # multiply-accumulates of one forward pass of one image
    flops: int  # = 2 x macs (torch.utils.flop_counter's unit)
    activation_bytes: int  # sum of every leaf module's output for one image, in the parameters' dtype
    input_size: tuple[int, int, int]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def profile(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32)) -> Profile:
    """Measure one forward pass of a single ``input_size`` (C, H, W) image, in eval mode."""
    param = next(model.parameters())
    x = torch.zeros(1, *input_size, device=param.device, dtype=param.dtype)
    activation_bytes = 0

    def count_output(module: nn.Module, inputs: tuple, output: object) -> None:
        nonlocal activation_bytes
        if isinstance(output, torch.Tensor):
            activation_bytes += output.numel() * output.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count_output) for m in leaves]
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    flops = counter.get_total_flops()
    return Profile(count_params(model), flops // 2, flops, activation_bytes, tuple(input_size))


def human(n: float, unit: str = "") -> str:
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= factor:
            return f"{n / factor:.2f} {prefix}{unit}".rstrip()
    return f"{n:.0f} {unit}".rstrip()


def models_table(pattern: str | None = None, input_size: tuple[int, int, int] | None = None,
                 num_classes: int | None = None, *, measure: bool = False) -> str:
    """A text table of zoo models: each one's natural input and classes (224 px / 1000 classes for ImageNet
    ResNets, 32 px / 10 for the CIFAR families) or ``input_size`` / ``num_classes``; with ``measure``, also
    its parameters, MACs and activation memory (builds and runs every model: seconds each)."""
    from .zoo import create_model, list_models, model_spec, natural_input

    names = list_models(pattern)
    if not names:
        raise KeyError(f"no registered model matches {pattern!r}")
    rows = [("model", "input", "classes") + (("params", "MACs", "FLOPs (2xMACs)", "activations") if measure else ())]
    for name in names:
        spec = model_spec(name)
        size = input_size or natural_input(spec)
        classes = num_classes or spec.num_classes
        row = (name, "x".join(map(str, size)), str(classes))
        if measure:
            p = profile(create_model(name, in_chans=size[0], num_classes=classes), size)
            row += (human(p.params), human(p.macs), human(p.flops), human(p.activation_bytes, "B"))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    note = "one image; MACs of convolutions and linear layers" if measure else "--profile adds params and MACs"
    return "\n".join(lines) + f"\n({note})"
