"""Named specs: the model zoo.

Each family is a function that returns a ``NetSpec``; a name such as ``resnet56``, ``wrn28_10`` or
``pyramidnet272_a200_bottleneck`` is parsed into a call. Registered names (``list_models``) are the common
configurations; any valid depth/width of a family works too. ``plain_<name>`` is the no-shortcut twin.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Sequence
from dataclasses import replace

from torch import nn

from .build import build
from .layers.norm import norm_name
from .spec import BlockSpec, HeadSpec, NetSpec, SpecError, StemSpec

IMAGENET_LAYOUTS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


# Bounds on the numbers in a zoo name, far above the papers' (resnet1202, wrn28_10, pyramidnet272_a200):
# a typo such as wrn16_100000 is an error, not a request for terabytes.
MAX_DEPTH, MAX_WIDEN, MAX_ALPHA = 2000, 32, 2000


def _bounded(value: int, limit: int, what: str) -> None:
    if value > limit:
        raise SpecError(f"{what} must be at most {limit}, got {value}")


def imagenet_resnet(depth: int, width_factor: int = 1, num_classes: int = 1000, in_chans: int = 3,
                    replace_stride_with_dilation: Sequence[bool] = (False, False, False)) -> NetSpec:
    """torchvision's ResNet-18..152 and Wide ResNet-50-2/101-2 (bottleneck width x ``width_factor``);
    ``replace_stride_with_dilation`` (stages 2-4) dilates instead of striding, as torchvision does."""
    if depth not in IMAGENET_LAYOUTS:
        raise SpecError(f"ImageNet ResNet depth must be one of {sorted(IMAGENET_LAYOUTS)}, got {depth}")
    kind, layout = IMAGENET_LAYOUTS[depth]
    _bounded(width_factor, 8, "ImageNet ResNet width factor")
    if width_factor != 1 and kind != "bottleneck":
        raise SpecError(f"a width factor needs bottleneck blocks (depth >= 50), got depth {depth}")
    dilate = [False, *map(bool, replace_stride_with_dilation)]
    if len(dilate) != 4:
        raise SpecError(f"replace_stride_with_dilation: needs 3 booleans (stages 2-4), got "
                        f"{list(replace_stride_with_dilation)}")
    if kind == "basic" and any(dilate):
        raise SpecError("replace_stride_with_dilation: dilation needs bottleneck blocks (depth >= 50), as in "
                        "torchvision")
    chans, stages, dilation = 64, [], 1
    for s, n in enumerate(layout):
        planes = 64 * 2**s
        stage = []
        previous = dilation
        stride = 2 if s > 0 else 1
        if dilate[s]:
            dilation, stride = dilation * stride, 1
        for b in range(n):
            if kind == "basic":
                widths, out = (planes,), planes
            else:
                mid = planes * width_factor
                widths, out = (mid, mid), planes * 4
            block_stride = stride if b == 0 else 1
            shortcut = "projection" if (block_stride != 1 or chans != out) else "identity"
            # torchvision: the first block of a stage keeps the previous dilation, the others take the new one
            stage.append(BlockSpec(kind, chans, widths, out, block_stride, shortcut,
                                   dilation=previous if b == 0 else dilation))
            chans = out
        stages.append(stage)
    name = f"resnet{depth}" if width_factor == 1 else f"wide_resnet{depth}_{width_factor}"
    return NetSpec(name, StemSpec("conv7_maxpool", in_chans, 64), stages, HeadSpec(chans, num_classes))


def cifar_resnet(depth: int, shortcut: str = "A", num_classes: int = 10, in_chans: int = 3,
                 base_width: int = 16) -> NetSpec:
    """He et al. 2015's CIFAR ResNet: depth 6n+2, widths 16/32/64, option A (zero-padded, subsampled)
    or option B (1x1 projection) shortcuts where the shape changes."""
    _bounded(depth, MAX_DEPTH, "CIFAR ResNet depth")
    if depth < 8 or (depth - 2) % 6:
        raise SpecError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, ...), got {depth}")
    if shortcut not in ("A", "B"):
        raise SpecError(f"shortcut option must be 'A' (zero-padded) or 'B' (projection), got {shortcut!r}")
    n = (depth - 2) // 6
    chans, stages = base_width, []
    for s in range(3):
        width = base_width * 2**s
        stage = []
        for b in range(n):
            stride = 2 if (s > 0 and b == 0) else 1
            if stride == 1 and chans == width:
                sc = "identity"
            else:
                sc = "pad_subsample" if shortcut == "A" else "projection"
            stage.append(BlockSpec("basic", chans, (width,), width, stride, sc))
            chans = width
        stages.append(stage)
    name = f"resnet{depth}" + ("" if shortcut == "A" else "_b")
    return NetSpec(name, StemSpec("conv3", in_chans, base_width), stages, HeadSpec(chans, num_classes))


def wide_resnet(depth: int, k: int, num_classes: int = 10, in_chans: int = 3, dropout: float = 0.0) -> NetSpec:
    """Zagoruyko & Komodakis 2016's WRN-d-k for CIFAR: pre-activation wide blocks, widths 16k/32k/64k."""
    _bounded(depth, MAX_DEPTH, "WRN depth")
    _bounded(k, MAX_WIDEN, "WRN widening factor k")
    if depth < 10 or (depth - 4) % 6:
        raise SpecError(f"WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth}")
    if k < 1:
        raise SpecError(f"WRN widening factor k must be >= 1, got {k}")
    n = (depth - 4) // 6
    chans, stages = 16, []
    for s in range(3):
        width = 16 * k * 2**s
        stage = []
        for b in range(n):
            stride = 2 if (s > 0 and b == 0) else 1
            sc = "identity" if (stride == 1 and chans == width) else "projection"
            stage.append(BlockSpec("wide_basic", chans, (width,), width, stride, sc, dropout=dropout))
            chans = width
        stages.append(stage)
    stem = StemSpec("conv3", in_chans, 16, norm=False, act=False)
    return NetSpec(f"wrn{depth}_{k}", stem, stages, HeadSpec(chans, num_classes, norm=True))


def pyramidnet(depth: int, alpha: int, bottleneck: bool = False, num_classes: int = 10,
               in_chans: int = 3) -> NetSpec:
    """Han et al. 2017's PyramidNet: the width grows by alpha/N at every one of the N blocks (additive
    widening), zero-padded identity shortcuts, 2x2 average pooling on the shortcut where the stride is 2."""
    per_block = 9 if bottleneck else 6
    _bounded(depth, MAX_DEPTH, "PyramidNet depth")
    _bounded(alpha, MAX_ALPHA, "PyramidNet alpha")
    if depth < per_block + 2 or (depth - 2) % per_block:
        raise SpecError(f"PyramidNet depth must be {per_block}n+2 for "
                        f"{'bottleneck' if bottleneck else 'basic'} blocks, got {depth}")
    n = (depth - 2) // per_block
    add_rate = alpha / (3 * n)
    width, chans, stages = 16.0, 16, []
    for s in range(3):
        stage = []
        for b in range(n):
            stride = 2 if (s > 0 and b == 0) else 1
            width += add_rate
            # Rounded half up, as the authors' Torch code and its PyTorch port do: summing alpha/N in floating
            # point lands just under whole widths, which flooring would cut by one channel (63 instead of 64).
            planes = math.floor(width + 0.5)
            if bottleneck:
                blk = BlockSpec("pyramid_bottleneck", chans, (planes, planes), planes * 4, stride)
            else:
                blk = BlockSpec("pyramid_basic", chans, (planes,), planes, stride)
            sc = "identity" if (stride == 1 and blk.out_chans == chans) else "pad_avgpool"
            stage.append(replace(blk, shortcut=sc))
            chans = blk.out_chans
        stages.append(stage)
    name = f"pyramidnet{depth}_a{alpha}" + ("_bottleneck" if bottleneck else "")
    stem = StemSpec("conv3", in_chans, 16, norm=True, act=False)
    return NetSpec(name, stem, stages, HeadSpec(chans, num_classes, norm=True))


# Registered configurations (the papers' tables); any other valid depth/width is parsed on demand.
REGISTERED = (
    [f"resnet{d}" for d in (18, 34, 50, 101, 152)]
    + ["wide_resnet50_2", "wide_resnet101_2"]
    + [f"resnet{d}" for d in (8, 14, 20, 32, 44, 56, 110, 1202)]
    + ["resnet20_b", "resnet56_b", "resnet110_b"]
    + [f"wrn{d}_{k}" for d, k in ((16, 4), (16, 8), (22, 8), (28, 10), (40, 4), (16, 1), (10, 2))]
    + ["pyramidnet20_a48", "pyramidnet110_a48", "pyramidnet110_a84", "pyramidnet110_a270",
       "pyramidnet164_a48_bottleneck", "pyramidnet200_a240_bottleneck", "pyramidnet272_a200_bottleneck",
       "pyramidnet29_a48_bottleneck"]
)

_PATTERNS = [
    (re.compile(r"resnet(\d+)"), lambda m: imagenet_resnet(int(m[1])) if int(m[1]) in IMAGENET_LAYOUTS
     else cifar_resnet(int(m[1]))),
    (re.compile(r"resnet(\d+)_b"), lambda m: cifar_resnet(int(m[1]), shortcut="B")),
    (re.compile(r"wide_resnet(\d+)_(\d+)"), lambda m: imagenet_resnet(int(m[1]), width_factor=int(m[2]))),
    (re.compile(r"wrn(\d+)_(\d+)"), lambda m: wide_resnet(int(m[1]), int(m[2]))),
    (re.compile(r"pyramidnet(\d+)_a(\d+)(_bottleneck)?"),
     lambda m: pyramidnet(int(m[1]), int(m[2]), bottleneck=bool(m[3]))),
]


def model_spec(name: str) -> NetSpec:
    """The spec a zoo name stands for (default classes: 1000 for ImageNet models, 10 for CIFAR ones)."""
    base = name[len("plain_"):] if name.startswith("plain_") else name
    for pattern, make in _PATTERNS:
        match = pattern.fullmatch(base)
        if match:
            spec = make(match)
            return spec.plain() if base != name else spec
    raise KeyError(f"unknown model {name!r}; reslab.list_models() lists the registered names "
                   f"(families: resnetN, resnetN_b, wide_resnetN_K, wrnD_K, pyramidnetD_aA[_bottleneck], "
                   f"each also as plain_<name>)")


def natural_input(spec: NetSpec) -> tuple[int, int, int]:
    """(C, H, W) of the images a zoo family was designed for: 224 px after an ImageNet stem, else 32 px (CIFAR)."""
    side = 224 if spec.stem.kind == "conv7_maxpool" else 32
    return (spec.in_chans, side, side)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names (and their plain twins), optionally filtered by a shell-style pattern."""
    names = REGISTERED + [f"plain_{n}" for n in REGISTERED]
    return sorted(n for n in names if pattern is None or fnmatch.fnmatch(n, pattern))


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int = 3,
    shortcut: str | None = None,
    drop_path: str | None = None,
    final_survival: float = 0.5,
    dropout: float | None = None,
    zero_init_residual: bool = False,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    as_dict: bool = False,
    norm_layer: str | type = "batch",
    replace_stride_with_dilation: Sequence[bool] | None = None,
) -> nn.Module:
    """Build a zoo model by name, the single entry point (as in timm).

    ``shortcut`` replaces every shape-changing shortcut (``projection``, ``pad_avgpool``, ``pad_subsample``);
    ``drop_path`` (``stochastic_depth``, ``separated``, ``shakedrop``) sets linearly decaying survival
    probabilities ending at ``final_survival``; ``dropout`` sets the in-block dropout of every block.
    ``features_only`` builds a ``FeatureNet`` (``out_indices``; ``as_dict`` for torchvision's detection models).
    ``norm_layer`` (``"frozen_batch"`` or ``torchvision.ops.FrozenBatchNorm2d``) and
    ``replace_stride_with_dilation`` (ImageNet ResNets) are torchvision's options, recorded in the spec.
    """
    spec = make_spec(name, num_classes=num_classes, in_chans=in_chans, shortcut=shortcut, drop_path=drop_path,
                     final_survival=final_survival, dropout=dropout, norm_layer=norm_layer,
                     replace_stride_with_dilation=replace_stride_with_dilation)
    model = build(spec, features_only=features_only, out_indices=out_indices, as_dict=as_dict)
    if zero_init_residual:
        model.zero_init_residual()
    return model


def make_spec(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int = 3,
    shortcut: str | None = None,
    drop_path: str | None = None,
    final_survival: float = 0.5,
    dropout: float | None = None,
    norm_layer: str | type = "batch",
    replace_stride_with_dilation: Sequence[bool] | None = None,
) -> NetSpec:
    """The spec ``create_model`` builds: the zoo spec with the overrides applied."""
    if replace_stride_with_dilation is not None:
        base = name[len("plain_"):] if name.startswith("plain_") else name
        match = re.fullmatch(r"(?:wide_)?resnet(\d+)(?:_(\d+))?", base)
        if not match or int(match[1]) not in IMAGENET_LAYOUTS:
            raise SpecError(f"replace_stride_with_dilation: only for the ImageNet ResNets, not {name!r}")
        spec = imagenet_resnet(int(match[1]), int(match[2] or 1),
                               replace_stride_with_dilation=replace_stride_with_dilation)
        spec = replace(spec, name=model_spec(name).name)
        spec = spec.plain() if base != name else spec
    else:
        spec = model_spec(name)
    spec = spec.with_norm(norm_name(norm_layer))
    if num_classes is not None:
        spec = spec.with_classes(num_classes)
    if in_chans != spec.in_chans:
        spec = spec.with_in_chans(in_chans)
    if shortcut is not None:
        spec = spec.with_shortcut(shortcut)
    if drop_path is not None:
        spec = spec.with_drop_path(drop_path, final_survival)
    if dropout is not None:
        spec = spec.with_dropout(dropout)
    return spec
