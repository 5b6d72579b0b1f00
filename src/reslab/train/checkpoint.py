"""Training checkpoints: one safetensors file holding everything a run needs to continue bit for bit.

Tensors: the model's state dict (``model.<key>``), the optimizer's per-parameter state (``optim.<index>.
<key>``, index = position in the optimizer's parameter order), the torch RNG states (``rng.torch_cpu``,
``rng.cuda.<device>``) and numpy's Mersenne-Twister key (``rng.numpy_key``). Metadata (strings): the spec
as JSON (the same key as ``reslab.io.save``, so a checkpoint states its architecture, also after edits),
and the rest of the training state as JSON: epoch, step, optimizer hyper-parameters, scheduler position,
gradient-scaler state, the python/numpy RNG scalars, hook states and the engine's bookkeeping.

Nothing is unpickled on load and files are written atomically (``reslab.io.save_state``), so a crash while
writing leaves the previous checkpoint intact. Loading checks the training state's fields (``check_state``)
and the weights against the spec, finite, before anything is built.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..build import CLASSIFIER, build
from ..edit import carry_weights
from ..io import (
    FORMAT_KEY,
    PREPROCESS_KEY,
    SPEC_KEY,
    CheckpointError,
    check_weights,
    checked_spec,
    load_state,
    load_weights,
    read_preprocess,
    read_torch_weights,
    save_state,
    spec_from_metadata,
    torchvision_names,
)
from ..spec import NetSpec

CHECKPOINT_FORMAT = "reslab-checkpoint-1"
STATE_KEY = "reslab.train_state"
MODEL_PREFIX, OPTIM_PREFIX, RNG_PREFIX = "model.", "optim.", "rng."


@dataclass
class Checkpoint:
    """A loaded checkpoint. ``optimizer_state`` is in ``torch.optim.Optimizer.load_state_dict`` form."""

    path: Path
    spec: NetSpec
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None = None
    scheduler_state: dict[str, Any] | None = None
    scaler_state: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None
    epoch: int = 0
    global_step: int = 0
    hooks: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def build_model(self) -> nn.Module:
        """The network, rebuilt from the stored spec, with the stored weights."""
        model = build(self.spec)
        load_weights(model, self.model_state, self.path)
        return model


# -- RNG ---------------------------------------------------------------------------------------------------


def capture_rng(cuda: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every RNG a training step may draw from: python, numpy, torch CPU and (if used) CUDA."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if cuda and torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = state
    kind, key, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy_key"] = torch.from_numpy(key.astype(np.int64))
    version, py_state, gauss_next = random.getstate()
    scalars = {
        "python": [version, list(py_state), gauss_next],
        "numpy": [kind, int(pos), int(has_gauss), float(cached)],
    }
    return tensors, scalars


def restore_rng(tensors: Mapping[str, torch.Tensor], scalars: Mapping[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda_states = [
        tensors[k]
        for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k.split(".")[1]))
    ]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
    kind, pos, has_gauss, cached = scalars["numpy"]
    np.random.set_state((kind, tensors["numpy_key"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, py_state, gauss_next = scalars["python"]
    random.setstate((version, tuple(py_state), gauss_next))


# -- optimizer state ---------------------------------------------------------------------------------------


def flatten_optimizer(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (by name) and a JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]
    ]
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer(tensors: Mapping[str, torch.Tensor], rest: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        index, _, key = name.partition(".")
        state.setdefault(int(index), {})[key] = value
    for index, entry in rest["scalars"].items():
        state.setdefault(int(index), {}).update(entry)
    groups = []
    for g in rest["param_groups"]:
        g = dict(g)
        if "betas" in g:  # torch checks ``betas`` as a tuple in some optimizers
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


# -- files -------------------------------------------------------------------------------------------------


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler_state: Mapping[str, Any] | None = None,
    scaler_state: Mapping[str, Any] | None = None,
    epoch: int = 0,
    global_step: int = 0,
    rng: tuple[Mapping[str, torch.Tensor], Mapping[str, Any]] | None = None,
    hooks: list[dict[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
    preprocess: Mapping[str, Any] | None = None,
) -> None:
    """Write a checkpoint of ``model`` (a reslab network with ``.spec``) and the training state;
    ``preprocess`` is stored as in model files (``reslab.io.save``)."""
    if not isinstance(getattr(model, "spec", None), NetSpec):
        raise TypeError("save_checkpoint needs the bare reslab network (unwrap DDP / torch.compile first)")
    spec = checked_spec(model)
    tensors = {MODEL_PREFIX + k: v for k, v in model.state_dict().items()}
    state: dict[str, Any] = {
        "epoch": epoch,
        "global_step": global_step,
        "scheduler": dict(scheduler_state) if scheduler_state else None,
        "scaler": dict(scaler_state) if scaler_state else None,
        "hooks": hooks or [],
        "extra": dict(extra or {}),
    }
    if optimizer is not None:
        opt_tensors, state["optimizer"] = flatten_optimizer(optimizer.state_dict())
        tensors.update({OPTIM_PREFIX + k: v for k, v in opt_tensors.items()})
    if rng is not None:
        rng_tensors, state["rng"] = rng
        tensors.update({RNG_PREFIX + k: v for k, v in rng_tensors.items()})
    try:
        state_json = json.dumps(state, allow_nan=True)
    except TypeError as err:
        raise TypeError(f"checkpoint state is not JSON-able (a hook's state_dict?): {err}") from None
    metadata = {SPEC_KEY: spec.to_json(indent=None), FORMAT_KEY: CHECKPOINT_FORMAT, STATE_KEY: state_json}
    if preprocess is not None:
        metadata[PREPROCESS_KEY] = json.dumps(dict(preprocess))
    save_state(path, tensors, metadata)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a training checkpoint; a model file from ``reslab.io.save`` loads too (weights only)."""
    path = Path(path)
    tensors, metadata = load_state(path)
    spec = spec_from_metadata(metadata, path)
    if metadata.get(FORMAT_KEY) != CHECKPOINT_FORMAT:
        check_weights(spec, tensors, path)
        return Checkpoint(path, spec, tensors)  # a plain model file: the whole file is the state dict
    try:
        state = json.loads(metadata[STATE_KEY])
    except (KeyError, json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(
            f"{path}: the training state in the metadata is missing or corrupt ({err})"
        ) from None
    check_state(state, path)

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    check_weights(spec, part(MODEL_PREFIX), path)

    optimizer_state = None
    if "optimizer" in state:
        optimizer_state = unflatten_optimizer(part(OPTIM_PREFIX), state["optimizer"])
    rng = {"tensors": part(RNG_PREFIX), "scalars": state["rng"]} if "rng" in state else None
    return Checkpoint(
        path,
        spec,
        part(MODEL_PREFIX),
        optimizer_state,
        state.get("scheduler"),
        state.get("scaler"),
        rng,
        state["epoch"],
        state["global_step"],
        list(state.get("hooks", [])),
        dict(state.get("extra", {})),
    )


# Far beyond any real run; a larger counter is damage, not progress.
MAX_EPOCHS, MAX_STEPS = 10**6, 10**12
# The type each field of the training state must have (None: may be absent or null).
STATE_FIELDS: dict[str, tuple[type, ...]] = {
    "scheduler": (dict, type(None)),
    "scaler": (dict, type(None)),
    "hooks": (list,),
    "extra": (dict,),
    "optimizer": (dict,),
    "rng": (dict,),
}


def check_state(state: Any, path: Path) -> None:
    """The training state's fields have their types and counters in range; raise naming the field."""

    def bad(key: str, expected: str, value: Any) -> CheckpointError:
        return CheckpointError(f"{path}: training state field {key!r} must be {expected}, got {value!r:.80} "
                               f"(the file is damaged or was altered)")

    if not isinstance(state, dict):
        raise bad("(top level)", "a mapping", state)
    for key, limit in (("epoch", MAX_EPOCHS), ("global_step", MAX_STEPS)):
        value = state.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
            raise bad(key, f"an integer in [0, {limit}]", value)
    for key, types in STATE_FIELDS.items():
        if key in state and not isinstance(state[key], types):
            raise bad(key, " or ".join("null" if t is type(None) else t.__name__ for t in types), state[key])
    optimizer = state.get("optimizer", {"param_groups": [], "scalars": {}})
    if not isinstance(optimizer.get("param_groups"), list) or not isinstance(optimizer.get("scalars"), dict):
        raise bad("optimizer", "param_groups (a list) and scalars (a mapping)", optimizer)
    rng = state.get("rng", {"python": [0, [], None], "numpy": [0, 0, 0, 0]})
    if not (isinstance(rng.get("python"), list) and len(rng["python"]) == 3
            and isinstance(rng.get("numpy"), list) and len(rng["numpy"]) == 4):
        raise bad("rng", "python and numpy generator states", rng)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """The network stored in a checkpoint or a model file, in eval mode."""
    return load_checkpoint(path).build_model().to(map_location).eval()


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights in any file a run can start from: a reslab model file or checkpoint, a bare
    ``.safetensors`` state dict, or a torchvision/timm ``.pth`` (read weights-only), with names mapped to
    torchvision's (``reslab.io.torchvision_names``)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return read_torch_weights(path)
    tensors, metadata = load_state(path)
    if SPEC_KEY in metadata:
        return load_checkpoint(path).model_state
    return torchvision_names(tensors)


HEAD_PREFIX = CLASSIFIER + "."  # the classifier's tensors; everything else is the backbone
STEM_CONV = "conv1.weight"


@dataclass
class Transfer:
    """What ``transfer_weights`` copied: tensor names loaded, the model's tensors left at their
    initialisation, and the class counts of a replaced classifier (file's, model's)."""

    path: Path
    loaded: list[str]
    kept: list[str]
    head_replaced: tuple[int, int] | None = None
    grey_stem: bool = False  # an RGB stem summed over its input channels for a one-channel model
    ignored: int = 0  # the file's tensors with no place in the model (init_strict: false)

    def describe(self) -> str:
        total = len(self.loaded) + len(self.kept)
        text = f"init_from {self.path}: loaded {len(self.loaded)} of {total} tensors"
        if self.head_replaced is not None:
            theirs, ours = self.head_replaced
            why = f"{theirs} classes in the file, {ours} here" if theirs != ours else "the file's classes are others"
            text += f"; new classifier ({why})"
        if self.grey_stem:
            text += "; RGB stem summed over its channels for grey input"
        backbone_kept = [k for k in self.kept if not k.startswith(HEAD_PREFIX)]
        if backbone_kept:
            text += f"; {len(backbone_kept)} backbone tensor(s) left at their initialisation (init_strict: false)"
        if self.ignored:
            text += f"; {self.ignored} of the file's tensors have no place in this model (ignored)"
        return text


def weights_classes(path: str | Path) -> list[str] | None:
    """The class names a reslab file was trained on (its preprocessing record), if it says."""
    if Path(path).suffix != ".safetensors":
        return None
    record = read_preprocess(path)
    return None if record is None else [str(c) for c in record.get("class_names", [])] or None


def transfer_weights(model: nn.Module, source: Mapping[str, torch.Tensor], path: str | Path, *,
                     strict: bool = True, new_head: bool = False) -> Transfer:
    """Copy ``source`` into ``model`` to start a run from it (fine-tuning).

    The classifier (``fc``) is copied when its shape matches and replaced (kept at the model's
    initialisation) when the class count differs. Every backbone tensor must load (``strict``): a missing,
    mis-shaped or unexpected one is an error naming the counts and the first offenders. With
    ``strict=False`` whatever matches by name and shape is copied (nothing matching is still an error).
    ``new_head``: never copy the classifier (the file's classes are others, though as many).
    """
    path = Path(path)
    own = model.state_dict()
    source = {k: v for k, v in source.items() if not (new_head and k.startswith(HEAD_PREFIX))}
    stem, adapted = STEM_CONV, False
    if stem in source and stem in own and source[stem].shape[1] == 3 and own[stem].shape[1] == 1 \
            and source[stem].shape[2:] == own[stem].shape[2:]:
        source[stem] = source[stem].sum(1, keepdim=True)  # an RGB stem for grey images, as timm adapts it
        adapted = True
    fits = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    if strict:
        backbone = [k for k in own if not k.startswith(HEAD_PREFIX)]
        missing = [k for k in backbone if k not in source]
        shaped = [k for k in backbone if k in source and source[k].shape != own[k].shape]
        extra = [k for k in source if k not in own and not k.startswith(HEAD_PREFIX)]
        if missing or shaped or extra:
            first = [f"{k!r} missing from the file" for k in missing[:2]]
            first += [f"{k!r} is {tuple(source[k].shape)} in the file, {tuple(own[k].shape)} here" for k in shaped[:2]]
            first += [f"{k!r} in the file has no place here" for k in extra[:2]]
            raise CheckpointError(
                f"{path}: {len(missing) + len(shaped)} of the model's {len(backbone)} backbone tensors do not "
                f"load ({len(missing)} missing, {len(shaped)} with another shape) and {len(extra)} of the "
                f"file's have no place in it; first: {'; '.join(first[:3])}. Is model.name the file's "
                f"architecture? Set model.init_strict: false to load only what matches"
            )
    if not fits:
        raise CheckpointError(f"{path}: no weight matches the model by name and shape (another family?)")
    carry_weights(model, fits, skip_mismatch=True)  # the one weight carry (reslab.edit); the rest stay as built
    head_replaced = None
    weight = HEAD_PREFIX + "weight"
    if weight not in fits and weight in own and (new_head or weight in source):
        head_replaced = (int(source[weight].shape[0]) if weight in source else own[weight].shape[0],
                         int(own[weight].shape[0]))
    ignored = sum(k not in own for k in source)
    return Transfer(path, sorted(fits), sorted(set(own) - set(fits)), head_replaced, adapted, ignored)


__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "capture_rng",
    "load_checkpoint",
    "load_model",
    "read_weights",
    "weights_classes",
    "restore_rng",
    "save_checkpoint",
    "Transfer",
    "transfer_weights",
]
