"""The network spec: a residual network described as plain data.

A ``NetSpec`` says everything needed to build a network (stem, stages of blocks with their widths,
strides, shortcuts and regularisers, head). ``reslab.build`` turns it into an ``nn.Module``; ResBuilder and
pruning edit the spec and carry weights across; checkpoints store it as JSON beside the weights.

This module imports no torch code, so specs can be written, checked and diffed anywhere.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

SPEC_VERSION = 1

BLOCK_KINDS = ("basic", "bottleneck", "wide_basic", "pyramid_basic", "pyramid_bottleneck")
# How many internal widths each block kind has (basic: conv-conv; bottleneck: 1x1-3x3-1x1).
N_INTERNAL_WIDTHS = {
    "basic": 1,
    "bottleneck": 2,
    "wide_basic": 1,
    "pyramid_basic": 1,
    "pyramid_bottleneck": 2,
}
# Blocks whose branch starts with batch norm (pre-activation) and that end without a ReLU after the sum.
PREACT_KINDS = ("wide_basic", "pyramid_basic", "pyramid_bottleneck")
SHORTCUTS = ("identity", "projection", "pad_avgpool", "pad_subsample", "none")
DROP_PATHS = ("none", "stochastic_depth", "separated", "shakedrop")
STEM_KINDS = ("conv7_maxpool", "conv3")
# Bounds far above any published ResNet (widest: 2048 channels; deepest: 600 blocks), so a crafted or
# mistyped spec is an error instead of a request for terabytes.
MAX_CHANNELS = 16384
MAX_BLOCKS = 4096
MAX_CLASSES = 1_000_000
# Normalisation layers: torch's BatchNorm2d, or torchvision's FrozenBatchNorm2d (fixed statistics and affine,
# as detection backbones use).
NORMS = ("batch", "frozen_batch")


class SpecError(ValueError):
    """A spec is malformed; the message names the offending field path."""


@dataclass(frozen=True)
class StemSpec:
    """The layers before the first stage.

    ``conv7_maxpool`` is torchvision's ImageNet stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool);
    ``conv3`` is the CIFAR stem (3x3/1 conv, optionally followed by BN and ReLU).
    """

    kind: str
    in_chans: int
    out_chans: int
    norm: bool = True
    act: bool = True

    @property
    def stride(self) -> int:
        return 4 if self.kind == "conv7_maxpool" else 1


@dataclass(frozen=True)
class BlockSpec:
    """One residual block.

    ``widths`` are the internal channel counts: one for basic/wide/pyramid-basic blocks (the output of the
    first conv), two for bottlenecks (the outputs of the 1x1 and 3x3 convs). ``survival`` is the probability
    that the residual branch is kept in training under ``drop_path`` (per block, so a linear decay is
    visible here); ``dropout`` is the dropout between the two convs of a wide block.
    """

    kind: str
    in_chans: int
    widths: tuple[int, ...]
    out_chans: int
    stride: int = 1
    shortcut: str = "identity"
    drop_path: str = "none"
    survival: float = 1.0
    dropout: float = 0.0
    dilation: int = 1  # of the 3x3 conv; torchvision's replace_stride_with_dilation (bottlenecks)

    @property
    def preact(self) -> bool:
        return self.kind in PREACT_KINDS


@dataclass(frozen=True)
class HeadSpec:
    """Global average pooling and a linear classifier; ``norm`` adds the final BN-ReLU of pre-activation
    networks (WRN, PyramidNet) before pooling."""

    in_chans: int
    num_classes: int
    norm: bool = False
    dropout: float = 0.0


@dataclass(frozen=True)
class NetSpec:
    name: str
    stem: StemSpec
    stages: tuple[tuple[BlockSpec, ...], ...]
    head: HeadSpec
    version: int = field(default=SPEC_VERSION)
    norm: str = "batch"  # one of NORMS, for every normalisation layer of the network

    def __post_init__(self) -> None:
        # Accept lists (from JSON or hand-written code) but store tuples so specs are hashable and immutable.
        object.__setattr__(self, "stages", tuple(tuple(stage) for stage in self.stages))
        validate(self)

    # -- convenience views -------------------------------------------------------------------------
    @property
    def in_chans(self) -> int:
        return self.stem.in_chans

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    @property
    def blocks_per_stage(self) -> list[int]:
        return [len(stage) for stage in self.stages]

    @property
    def num_blocks(self) -> int:
        return sum(self.blocks_per_stage)

    def blocks(self) -> Iterator[tuple[int, int, BlockSpec]]:
        """Yield ``(stage_index, block_index, block)`` in forward order."""
        for s, stage in enumerate(self.stages):
            for b, block in enumerate(stage):
                yield s, b, block

    def stage_channels(self) -> list[int]:
        return [stage[-1].out_chans if stage else self._stage_input(s) for s, stage in enumerate(self.stages)]

    def stage_reductions(self) -> list[int]:
        """Total stride from the input to the output of each stage."""
        reduction, out = self.stem.stride, []
        for stage in self.stages:
            for block in stage:
                reduction *= block.stride
            out.append(reduction)
        return out

    def _stage_input(self, s: int) -> int:
        for prev in reversed(self.stages[:s]):
            if prev:
                return prev[-1].out_chans
        return self.stem.out_chans

    # -- edits (each returns a new, validated spec) --------------------------------------------------
    def replace_block(self, stage: int, index: int, block: BlockSpec) -> NetSpec:
        stages = [list(s) for s in self.stages]
        stages[stage][index] = block
        return replace(self, stages=stages)

    def with_blocks(self, fn) -> NetSpec:
        """Apply ``fn(stage_index, block_index, block) -> block`` to every block."""
        stages = [[fn(s, b, blk) for b, blk in enumerate(stage)] for s, stage in enumerate(self.stages)]
        return replace(self, stages=stages)

    def with_classes(self, num_classes: int) -> NetSpec:
        return replace(self, head=replace(self.head, num_classes=num_classes))

    def with_in_chans(self, in_chans: int) -> NetSpec:
        return replace(self, stem=replace(self.stem, in_chans=in_chans))

    def with_norm(self, norm: str) -> NetSpec:
        return replace(self, norm=norm)

    def plain(self) -> NetSpec:
        """The plain twin: the same layers with every shortcut removed."""
        name = self.name if self.name.startswith("plain_") else f"plain_{self.name}"
        return replace(self, name=name).with_blocks(lambda s, b, blk: replace(blk, shortcut="none"))

    def with_shortcut(self, shortcut: str) -> NetSpec:
        """Change every shape-changing shortcut (those that are not identities) to ``shortcut``."""
        if shortcut not in ("projection", "pad_avgpool", "pad_subsample"):
            raise SpecError(f"with_shortcut: shortcut must be projection, pad_avgpool or pad_subsample, "
                            f"got {shortcut!r}")

        def edit(s: int, b: int, blk: BlockSpec) -> BlockSpec:
            if blk.shortcut in ("identity", "none"):
                return blk
            return replace(blk, shortcut=shortcut)

        return self.with_blocks(edit)

    def with_drop_path(self, kind: str, final_survival: float = 0.5) -> NetSpec:
        """Linear-decay survival (Huang et al. 2016): block l of L survives with 1 - l/L * (1 - p_L).

        The input (l = 0) always survives and the last block survives with ``final_survival``.
        """
        if kind not in DROP_PATHS:
            raise SpecError(f"drop_path kind must be one of {DROP_PATHS}, got {kind!r}")
        if not 0.0 < final_survival <= 1.0:
            raise SpecError(f"final_survival must be in (0, 1], got {final_survival!r}")
        total = self.num_blocks
        order = {(s, b): i + 1 for i, (s, b, _) in enumerate(self.blocks())}

        def edit(s: int, b: int, blk: BlockSpec) -> BlockSpec:
            if kind == "none":
                return replace(blk, drop_path="none", survival=1.0)
            survival = 1.0 - order[(s, b)] / total * (1.0 - final_survival)
            return replace(blk, drop_path=kind, survival=round(survival, 6))

        return self.with_blocks(edit)

    def with_dropout(self, p: float) -> NetSpec:
        if not 0.0 <= p < 1.0:
            raise SpecError(f"dropout must be in [0, 1), got {p!r}")
        return self.with_blocks(lambda s, b, blk: replace(blk, dropout=p))

    # -- serialisation -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {
            "version": self.version,
            "name": self.name,
            "stem": dataclasses.asdict(self.stem),
            "stages": [[_block_to_dict(b) for b in stage] for stage in self.stages],
            "head": dataclasses.asdict(self.head),
        }
        if self.norm != "batch":  # written only when set, so specs of earlier versions read back unchanged
            out["norm"] = self.norm
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "spec") -> NetSpec:
        if not isinstance(data, Mapping):
            raise SpecError(f"{where}: expected a mapping, got {type(data).__name__}")
        _check_keys(data, {f.name for f in fields(cls)}, where, required={"name", "stem", "stages", "head"})
        version = data.get("version", SPEC_VERSION)
        if version != SPEC_VERSION:
            raise SpecError(f"{where}.version: unsupported spec version {version!r} (this reslab reads "
                            f"version {SPEC_VERSION})")
        stages_raw = data["stages"]
        if not isinstance(stages_raw, list | tuple):
            raise SpecError(f"{where}.stages: expected a list of stages, got {type(stages_raw).__name__}")
        stages = []
        for s, stage in enumerate(stages_raw):
            if not isinstance(stage, list | tuple):
                raise SpecError(f"{where}.stages[{s}]: expected a list of blocks")
            stages.append([_from_dict(BlockSpec, blk, f"{where}.stages[{s}][{b}]") for b, blk in enumerate(stage)])
        return cls(
            name=_typed(data["name"], str, f"{where}.name"),
            stem=_from_dict(StemSpec, data["stem"], f"{where}.stem"),
            stages=stages,
            head=_from_dict(HeadSpec, data["head"], f"{where}.head"),
            norm=_typed(data.get("norm", "batch"), str, f"{where}.norm"),
        )

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str, where: str = "spec") -> NetSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SpecError(f"{where}: not valid JSON ({err})") from None
        except RecursionError:
            raise SpecError(f"{where}: JSON nested too deeply to be a spec") from None
        return cls.from_dict(data, where)

    def save(self, path: str | Path) -> None:
        """Write the spec as JSON (``.json``) or YAML (``.yaml``/``.yml``)."""
        path = Path(path)
        if path.suffix in (".yaml", ".yml"):
            import yaml

            text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        else:
            text = self.to_json()
        path.write_text(text)

    @classmethod
    def load(cls, path: str | Path) -> NetSpec:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise SpecError(f"{path}: cannot read spec ({err.strerror})") from None
        except UnicodeDecodeError as err:
            raise SpecError(f"{path}: not UTF-8 text (offset {err.start})") from None
        if path.suffix in (".yaml", ".yml"):
            import yaml

            from .strict_yaml import safe_load

            try:
                data = safe_load(text)
            except yaml.YAMLError as err:
                raise SpecError(f"{path}: not valid YAML ({err})") from None
            return cls.from_dict(data, str(path))
        return cls.from_json(text, str(path))

    def summary(self) -> str:
        lines = [f"{self.name}: stem {self.stem.kind} {self.stem.in_chans}->{self.stem.out_chans}"]
        for s, stage in enumerate(self.stages):
            kinds = sorted({b.kind for b in stage})
            widths = [b.out_chans for b in stage]
            lines.append(f"  stage {s}: {len(stage)} x {'/'.join(kinds)}, out widths {widths}")
        lines.append(f"  head: {self.head.in_chans} -> {self.head.num_classes}")
        return "\n".join(lines)


def _block_to_dict(block: BlockSpec) -> dict[str, Any]:
    d = dataclasses.asdict(block)
    d["widths"] = list(block.widths)
    if block.dilation == 1:
        del d["dilation"]  # the default, left out as in specs written before dilation existed
    return d


def _typed(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    # bool is an int subclass; a width of True is a mistake.
    if isinstance(value, bool) and kind is not bool:
        raise SpecError(f"{where}: expected {getattr(kind, '__name__', kind)}, got bool {value!r}")
    if kind is float and isinstance(value, int):
        return float(value)
    if not isinstance(value, kind):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise SpecError(f"{where}: expected {name}, got {type(value).__name__} {value!r}")
    return value


def _check_keys(data: Mapping[str, Any], allowed: set[str], where: str, required: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SpecError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(data))
    if missing:
        raise SpecError(f"{where}: missing key {missing[0]!r}")


def _from_dict(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise SpecError(f"{where}: expected a mapping, got {type(data).__name__}")
    fs = {f.name: f for f in fields(cls)}
    required = {n for n, f in fs.items() if f.default is dataclasses.MISSING}
    _check_keys(data, set(fs), where, required)
    kwargs = {}
    for name, value in data.items():
        ftype = fs[name].type
        if ftype == "tuple[int, ...]":
            if not isinstance(value, list | tuple):
                raise SpecError(f"{where}.{name}: expected a list of ints, got {type(value).__name__}")
            value = tuple(_typed(v, int, f"{where}.{name}[{i}]") for i, v in enumerate(value))
        else:
            value = _typed(value, {"int": int, "float": float, "str": str, "bool": bool}[ftype], f"{where}.{name}")
        kwargs[name] = value
    return cls(**kwargs)


def validate(spec: NetSpec) -> None:
    """Check that the spec describes a network that can be built; raise ``SpecError`` naming the field."""
    stem = spec.stem
    if spec.norm not in NORMS:
        raise SpecError(f"norm: must be one of {NORMS}, got {spec.norm!r}")
    if stem.kind not in STEM_KINDS:
        raise SpecError(f"stem.kind: must be one of {STEM_KINDS}, got {stem.kind!r}")
    if stem.in_chans < 1 or stem.out_chans < 1:
        raise SpecError(f"stem: channel counts must be positive, got in {stem.in_chans}, out {stem.out_chans}")
    if max(stem.in_chans, stem.out_chans) > MAX_CHANNELS:
        raise SpecError(f"stem: at most {MAX_CHANNELS} channels, got in {stem.in_chans}, out {stem.out_chans}")
    if spec.num_blocks > MAX_BLOCKS:
        raise SpecError(f"stages: at most {MAX_BLOCKS} blocks, got {spec.num_blocks}")
    chans = stem.out_chans
    for s, b, blk in spec.blocks():
        where = f"stages[{s}][{b}]"
        if blk.kind not in BLOCK_KINDS:
            raise SpecError(f"{where}.kind: must be one of {BLOCK_KINDS}, got {blk.kind!r}")
        if blk.in_chans != chans:
            raise SpecError(f"{where}.in_chans: is {blk.in_chans} but the previous layer gives {chans}")
        if len(blk.widths) != N_INTERNAL_WIDTHS[blk.kind]:
            raise SpecError(f"{where}.widths: a {blk.kind} block has {N_INTERNAL_WIDTHS[blk.kind]} internal "
                            f"width(s), got {list(blk.widths)}")
        if min(blk.widths) < 1 or blk.out_chans < 1:
            raise SpecError(f"{where}: widths must be positive, got widths {list(blk.widths)}, "
                            f"out_chans {blk.out_chans}")
        if max(*blk.widths, blk.out_chans) > MAX_CHANNELS:
            raise SpecError(f"{where}: at most {MAX_CHANNELS} channels per layer, got widths {list(blk.widths)}, "
                            f"out_chans {blk.out_chans}")
        if blk.stride not in (1, 2):
            raise SpecError(f"{where}.stride: must be 1 or 2, got {blk.stride}")
        if blk.dilation < 1 or (blk.dilation > 1 and blk.kind != "bottleneck"):
            raise SpecError(f"{where}.dilation: must be 1, or >= 1 in a bottleneck block (as in torchvision), got "
                            f"{blk.dilation} in a {blk.kind} block")
        if blk.shortcut not in SHORTCUTS:
            raise SpecError(f"{where}.shortcut: must be one of {SHORTCUTS}, got {blk.shortcut!r}")
        if blk.shortcut == "identity" and (blk.stride != 1 or blk.in_chans != blk.out_chans):
            raise SpecError(f"{where}.shortcut: identity needs stride 1 and in_chans == out_chans "
                            f"(got stride {blk.stride}, {blk.in_chans} -> {blk.out_chans}); use projection "
                            f"or pad_avgpool/pad_subsample")
        if blk.shortcut.startswith("pad_") and blk.out_chans < blk.in_chans:
            raise SpecError(f"{where}.shortcut: a zero-padded shortcut needs out_chans >= in_chans "
                            f"(got {blk.in_chans} -> {blk.out_chans})")
        if blk.drop_path not in DROP_PATHS:
            raise SpecError(f"{where}.drop_path: must be one of {DROP_PATHS}, got {blk.drop_path!r}")
        if blk.drop_path == "separated" and blk.shortcut == "projection":
            # The split needs a skip whose extra channels are zero padding; a projection mixes all channels.
            raise SpecError(f"{where}.drop_path: 'separated' needs an identity or zero-padded shortcut, but "
                            f"this block's shortcut is a projection; use stochastic_depth, or pad_avgpool / "
                            f"pad_subsample shortcuts")
        if not 0.0 < blk.survival <= 1.0:
            raise SpecError(f"{where}.survival: must be in (0, 1], got {blk.survival}")
        if not 0.0 <= blk.dropout < 1.0:
            raise SpecError(f"{where}.dropout: must be in [0, 1), got {blk.dropout}")
        chans = blk.out_chans
    head = spec.head
    if head.in_chans != chans:
        raise SpecError(f"head.in_chans: is {head.in_chans} but the last stage gives {chans}")
    if not 1 <= head.num_classes <= MAX_CLASSES:
        raise SpecError(f"head.num_classes: must be in [1, {MAX_CLASSES}], got {head.num_classes}")
    if not 0.0 <= head.dropout < 1.0:
        raise SpecError(f"head.dropout: must be in [0, 1), got {head.dropout}")
