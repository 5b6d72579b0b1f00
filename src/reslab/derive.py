"""The spec of a module from its tensors: does an (edited) network still match its spec, and which spec
describes it when a pruner changed its widths or a user replaced its classifier?

``spec_mismatch`` compares every tensor name and shape of a module with those of the network its spec builds
(built on the meta device: no memory, no initialisation). ``derive_spec`` reads the widths back from the
convolutions and the classifier; the result is only trusted when it matches tensor for tensor.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from .build import build
from .spec import NetSpec, SpecError


def spec_shapes(spec: NetSpec) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor (parameters and buffers) of the network ``spec`` builds."""
    with torch.device("meta"):
        reference = build(spec)
    return {k: tuple(v.shape) for k, v in reference.state_dict().items()}


def spec_mismatch(model: nn.Module, spec: NetSpec) -> str | None:
    """``None`` when ``build(spec)`` has exactly the tensors of ``model``; else the first difference."""
    expected = spec_shapes(spec)
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in actual]
    extra = [k for k in actual if k not in expected]
    if missing or extra:
        first = f"the spec has {missing[0]!r}, the module not" if missing else f"the module has {extra[0]!r}, " \
                                                                                "the spec not"
        return f"{first}; {len(missing)} tensor(s) missing from the module, {len(extra)} not in the spec"
    for key, shape in expected.items():
        if actual[key] != shape:
            return f"{key} is {actual[key]} in the module but {shape} in the spec"
    return None


def _conv_widths(block: nn.Module) -> tuple[int, list[int]]:
    """(input channels, output channels of each branch conv in order) of a residual block."""
    convs = [m for name, m in sorted(block.named_children()) if name.startswith("conv") and isinstance(m, nn.Conv2d)]
    return convs[0].in_channels, [c.out_channels for c in convs]


def derive_spec(model: nn.Module) -> NetSpec | None:
    """``model.spec`` with the stem, block and head widths read from the module's layers; ``None`` when the
    module's layers do not fit a spec (another layer type, inconsistent widths)."""
    spec = model.spec
    try:
        stem = replace(spec.stem, in_chans=model.conv1.in_channels, out_chans=model.conv1.out_channels)
        stages = []
        for stage_spec, stage in zip(spec.stages, model.stages(), strict=True):
            blocks = []
            for block_spec, block in zip(stage_spec, stage, strict=True):
                in_chans, outs = _conv_widths(block)
                blocks.append(replace(block_spec, in_chans=in_chans, widths=tuple(outs[:-1]), out_chans=outs[-1]))
            stages.append(blocks)
        fc = model.fc
        if not isinstance(fc, nn.Linear):
            return None
        head = replace(spec.head, in_chans=fc.in_features, num_classes=fc.out_features)
        return replace(spec, stem=stem, stages=stages, head=head)
    except (SpecError, AttributeError, IndexError, ValueError):
        return None


__all__ = ["derive_spec", "spec_mismatch", "spec_shapes"]
