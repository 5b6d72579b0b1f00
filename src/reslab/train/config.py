"""The training configuration: one YAML file, validated against dataclasses.

Every section is a dataclass whose fields carry their allowed values; ``Config.from_dict`` checks a plain
mapping (a YAML file after ``--set`` overrides) and raises one ``ConfigError`` naming the key path at fault
(``optim.lr``, ``train.precision``) and what it accepts. Sections owned by the packages above the engine
(``resbuilder``, ``analysis``, ``distill``) are declared by those packages in the same way and checked by the
same code; ``Config.plugins`` holds them, typed (see ``reslab.train.plugins``, which finds them by name, so
the engine never imports its plug-ins).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .. import strict_yaml
from ..data import DataConfig
from ..schema import ConfigError, at_least, choice, coerce, in_range, option, read_section
from .plugins import PLUGIN_SECTIONS, section_type

# A folder name's limit on common file systems.
MAX_NAME_BYTES = 255
# Far beyond any real run (checkpoints refuse larger epoch counters as damage).
MAX_EPOCHS = 10**6

@dataclass
class ModelConfig:
    """Which network to train. ``num_classes`` and ``in_chans`` always come from the data."""

    name: str | None = option("resnet8", doc="zoo name (reslab models lists them); or give spec")
    spec: str | None = option(None, doc="path to a saved spec (.json/.yaml) instead of a zoo name")
    shortcut: str | None = option(
        None,
        choice(None, "projection", "pad_avgpool", "pad_subsample"),
        "replace every shape-changing shortcut",
    )
    drop_path: str | None = option(
        None,
        choice(None, "none", "stochastic_depth", "separated", "shakedrop"),
        "branch regulariser with linearly decaying survival",
    )
    final_survival: float = option(
        0.5,
        in_range(0.0, 1.0, low_open=True, high_open=False),
        "survival probability of the last block under drop_path",
    )
    dropout: float | None = option(None, in_range(0.0, 1.0), "dropout inside every block")
    zero_init_residual: bool = option(False, doc="start each block as its shortcut (last BN scale 0)")
    init_from: str | None = option(
        None, doc="weights that start the run: a reslab model/checkpoint, a torchvision/timm .pth or a .safetensors"
    )
    init_strict: bool = option(True, doc="init_from: every backbone tensor must load (false: load what matches)")


@dataclass
class OptimConfig:
    name: str = option("sgd", choice("sgd", "adamw"))
    lr: float = option(0.1, at_least(0.0, strict=True), "peak learning rate (after warm-up)")
    momentum: float = option(0.9, in_range(0.0, 1.0), "SGD momentum")
    nesterov: bool = option(True, doc="Nesterov momentum (SGD)")
    weight_decay: float = option(5e-4, at_least(0.0))
    no_decay_bn_bias: bool = option(True, doc="no weight decay on batch-norm parameters and biases")
    betas: list[float] = option([0.9, 0.999], doc="AdamW betas")
    eps: float = option(1e-8, at_least(0.0, strict=True), "AdamW epsilon")
    backbone_lr_mult: float = option(1.0, at_least(0.0), "learning rate of all but the classifier, x optim.lr")


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, evaluated at every optimizer step (epochs may be fractional)."""

    name: str = option("cosine", choice("constant", "step", "multistep", "cosine"))
    warmup_epochs: float = option(0.0, at_least(0.0), "linear warm-up from lr/steps to lr")
    step_size: int = option(30, at_least(1), "step: epochs between decays")
    milestones: list[int] = option([], doc="multistep: epochs at which the lr is multiplied by gamma")
    gamma: float = option(0.1, in_range(0.0, 1.0, low_open=True, high_open=False), "decay factor")
    min_lr: float = option(0.0, at_least(0.0), "cosine: the final learning rate")


@dataclass
class TrainConfig:
    epochs: int = option(10, in_range(1, MAX_EPOCHS, high_open=False))
    batch_size: int = option(128, at_least(1), "global batch (split across processes)")
    eval_batch_size: int = option(512, at_least(1))
    test_flip: bool = option(False, doc="evaluate each image and its mirror, averaging the logits")
    label_smoothing: float = option(0.0, in_range(0.0, 1.0))
    grad_clip: float | None = option(None, at_least(0.0, strict=True), "clip the gradients' global L2 norm")
    precision: str = option(
        "auto",
        choice("auto", "fp32", "bf16", "fp16"),
        "auto: bf16 where the hardware has it (CUDA, AMX/AVX512-BF16 CPUs), else fp32",
    )
    channels_last: bool = option(True, doc="NHWC memory format (1.2x faster fp32 CPU training here, and AMP)")
    compile: bool = option(False, doc="torch.compile the model")
    device: str = option("auto", choice("auto", "cpu", "cuda"), "auto: cuda when available")
    progress: str = option(
        "auto", choice("auto", "bar", "plain", "none"), "auto: a bar on a terminal, plain lines otherwise"
    )
    drop_last: bool = option(True, doc="drop each epoch's incomplete last training batch")
    find_unused_parameters: bool | None = option(None, doc="DDP; null: on for drop-path models")
    sync_bn: bool = option(False, doc="SyncBatchNorm across processes (CUDA only)")
    deterministic: bool = option(False, doc="torch.use_deterministic_algorithms (repeatable CUDA runs)")
    freeze: str | list[str] = option(
        "none", doc="none, backbone (all but the classifier) or module prefixes ([stem, layer1]); BN kept in eval"
    )
    unfreeze_epoch: int | None = option(None, at_least(1), "train.freeze ends at this epoch (0-based)")


@dataclass
class OutputConfig:
    out_dir: str = option("runs", doc="runs are written to out_dir/name")
    checkpoint_every: int = option(1, at_least(1), "write the 'last' checkpoint every N epochs")
    keep_best: bool = option(True, doc="keep a 'best' checkpoint (highest val accuracy)")
    test_every: int = option(
        0, at_least(0), "also score the test split every N epochs: a learning curve, never used to pick a model"
    )
    tensorboard: bool | None = option(
        None, doc="write TensorBoard event files; null: when the tensorboard package is installed (pip install "
        "'reslab[tensorboard]')"
    )


@dataclass
class Config:
    name: str | None = option(None, doc="run name; null: <data>_<model>")
    seed: int = option(0, doc="seeds the initialisation, data order, augmentation and dropout")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    # The plug-in sections present (``resbuilder``, ...): their packages' ``SECTION`` dataclasses.
    plugins: dict[str, Any] = field(default_factory=dict)

    @property
    def run_name(self) -> str:
        if self.name:
            return self.name
        model = self.model.name if self.model.name else Path(self.model.spec or "spec").stem
        return f"{self.data.name}_{model}"

    @property
    def run_dir(self) -> Path:
        return Path(self.output.out_dir) / self.run_name

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "seed": self.seed}
        for section in SECTIONS:
            out[section] = dataclasses.asdict(getattr(self, section))
        out.update({key: dataclasses.asdict(settings) for key, settings in self.plugins.items()})
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None, where: str = "") -> Config:
        """Validate a mapping; ``where`` (a file name) prefixes error messages."""
        try:
            return _config_from_dict({} if raw is None else raw)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}" if where else str(err)) from None

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "train": TrainConfig,
    "output": OutputConfig,
}


def _config_from_dict(raw: Mapping[str, Any]) -> Config:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"the config must be a mapping of sections, got {type(raw).__name__}")
    top_keys = ["name", "seed", *SECTIONS, *PLUGIN_SECTIONS]
    unknown = [k for k in raw if k not in top_keys]
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section (allowed: {', '.join(top_keys)})")
    name = coerce(raw.get("name"), str | None, "name")
    if name is not None and (not name or "/" in name or name in (".", "..")):
        raise ConfigError(f"name: must be a folder name (no '/'), got {name!r}")
    if name is not None and len(name.encode()) > MAX_NAME_BYTES:
        raise ConfigError(f"name: a folder name has at most {MAX_NAME_BYTES} bytes, got {len(name.encode())}")
    seed = coerce(raw.get("seed", 0), int, "seed")
    if not 0 <= seed < 2**63:
        raise ConfigError(f"seed: must be in [0, 2**63) (torch's generator takes 64-bit seeds), got {seed}")
    sections = {key: read_section(cls, raw.get(key), key) for key, cls in SECTIONS.items()}
    plugins = {key: read_section(section_type(key), raw[key], key)
               for key in PLUGIN_SECTIONS if raw.get(key) is not None}
    config = Config(name=name, seed=seed, plugins=plugins, **sections)
    _check_consistency(config)
    return config


def _check_consistency(config: Config) -> None:
    """Checks that involve more than one key."""
    model = config.model
    if (model.name is None) == (model.spec is None):
        raise ConfigError(
            "model: give exactly one of model.name (a zoo name) and model.spec (a spec file); "
            f"got name={model.name!r}, spec={model.spec!r}"
        )
    if model.name is not None:
        from ..zoo import model_spec

        try:
            model_spec(model.name)
        except (KeyError, ValueError) as err:
            message = err.args[0] if err.args else str(err)
            raise ConfigError(f"model.name: {message}") from None
    if len(config.optim.betas) != 2 or not all(0.0 <= b < 1.0 for b in config.optim.betas):
        raise ConfigError(f"optim.betas: must be two numbers in [0, 1), got {config.optim.betas!r}")
    milestones = config.schedule.milestones
    if any(m < 1 for m in milestones) or milestones != sorted(set(milestones)):
        raise ConfigError(f"schedule.milestones: must be increasing positive epochs, got {milestones!r}")
    if config.schedule.name == "multistep" and not milestones:
        raise ConfigError("schedule.milestones: the multistep schedule needs at least one milestone")
    if config.schedule.warmup_epochs >= config.train.epochs and config.schedule.warmup_epochs > 0:
        raise ConfigError(
            f"schedule.warmup_epochs: must be less than train.epochs ({config.train.epochs}), "
            f"got {config.schedule.warmup_epochs}"
        )
    freeze = config.train.freeze
    if isinstance(freeze, str) and freeze not in ("none", "backbone"):
        raise ConfigError(f"train.freeze: must be none, backbone or a list of module names, got {freeze!r}")
    if config.train.unfreeze_epoch is not None and freeze in ("none", []):
        raise ConfigError("train.unfreeze_epoch: nothing is frozen (set train.freeze: backbone or a list of modules)")
    if config.train.precision == "fp16" and config.train.device == "cpu":
        raise ConfigError(
            "train.precision: fp16 (AMP with a gradient scaler) needs CUDA; use bf16 or fp32 on the CPU"
        )


# -- files and overrides ---------------------------------------------------------------------------------


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.05"`` -> (["optim", "lr"], 0.05); the value is read as a YAML scalar or list."""
    key, sep, raw_value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. optim.lr=0.05")
    path = key.split(".")
    if any(not part for part in path):
        raise ConfigError(f"--set {text!r}: {key!r} is not a dotted key path")
    try:
        value = strict_yaml.safe_load(raw_value) if raw_value.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: cannot read the value {raw_value!r} as YAML ({err})") from None
    return path, value


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``KEY=VALUE`` applied; unknown keys are caught by validation."""
    out = copy.deepcopy(dict(raw))
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for depth, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(
                    f"--set {'.'.join(path)}: {'.'.join(path[: depth + 1])} is a value, not a section"
                )
            node = child
        node[path[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
                          f"save the config as UTF-8") from None
    try:
        raw = strict_yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping of sections, got {type(raw).__name__}")
    return raw


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """The defaults, updated by the YAML file at ``path`` (if any), then by ``--set`` overrides."""
    raw = read_yaml(path) if path is not None else {}
    return config_from_dict(raw, overrides, source_label(path, overrides))


def source_label(path: str | Path | None, overrides: Sequence[str] = ()) -> str:
    """Where a config came from, as its errors name it: the file, ``--set``, or both."""
    where = str(path) if path is not None else ""
    if overrides:
        where = f"{where} with --set" if where else "--set"
    return where


def config_from_dict(raw: Mapping[str, Any], overrides: Sequence[str] = (), where: str = "") -> Config:
    """``raw`` (a config file's mapping) with ``--set`` overrides applied, validated."""
    raw = copy.deepcopy(dict(raw))
    _spec_replaces_name(raw, set(raw.get("model", {}) or {}) if isinstance(raw.get("model"), dict) else set())
    raw = apply_overrides(raw, overrides)
    # `--set model.spec=found.json` alone means "this spec instead of the zoo name".
    set_keys = {tuple(parse_override(text)[0]) for text in overrides}
    _spec_replaces_name(raw, {p[1] for p in set_keys if len(p) == 2 and p[0] == "model"})
    return Config.from_dict(raw, where=where)


def checkpoint_config(checkpoint: str | Path, config_path: str | Path | None = None, data: str | None = None,
                      overrides: Sequence[str] = ()) -> Config:
    """The config a checkpoint was trained with (its run's ``config.yaml``, for the same data settings, val split
    and seed), or ``config_path``; ``data`` and ``overrides`` are applied on top. Plug-in sections are dropped:
    evaluating or analysing a network needs neither them nor their packages."""
    checkpoint = Path(checkpoint)
    overrides = list(overrides) + ([f"data.name={data}"] if data is not None else [])
    if config_path is None and (checkpoint.parent / "config.yaml").is_file():
        config_path = checkpoint.parent / "config.yaml"
    raw = read_yaml(config_path) if config_path is not None else {}
    raw.pop("name", None)
    for section in PLUGIN_SECTIONS:
        raw.pop(section, None)
    return Config.from_dict(apply_overrides(raw, overrides), where=str(config_path or "--set"))


def _spec_replaces_name(raw: dict[str, Any], given: set[str]) -> None:
    """A spec given without a name in the same layer (file, or --set) replaces the default/earlier name."""
    model = raw.get("model")
    if isinstance(model, dict) and "spec" in given and "name" not in given and model.get("spec") is not None:
        model["name"] = None


def describe_schema() -> str:
    """Every key of every section, plug-ins' included, with its default and description, for ``reslab train
    --help-config``."""
    def show(value: Any) -> str:  # as YAML writes it, so that a line can be pasted into a config
        return yaml.safe_dump(value, default_flow_style=True, width=1000).removesuffix("\n...\n").strip()

    lines = [f"{f.name}: {show(f.default)}  # {f.metadata['doc']}" for f in fields(Config)[:2]]  # name, seed
    sections = {**SECTIONS, **{key: section_type(key) for key in PLUGIN_SECTIONS}}
    for key, cls in sections.items():
        lines.append(f"{key}:" + ("  # a plug-in section: present only when given" if key in PLUGIN_SECTIONS else ""))
        for f in fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            doc = f.metadata.get("doc", "")
            lines.append(f"  {f.name}: {show(default)}" + (f"  # {doc}" if doc else ""))
    return "\n".join(lines)


__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "OutputConfig",
    "ScheduleConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "describe_schema",
    "load_config",
    "parse_override",
    "read_yaml",
    "source_label",
]
