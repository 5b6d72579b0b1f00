"""Saving and loading networks: safetensors weights with the spec in the file's metadata.

A file written by ``save`` rebuilds its network anywhere with ``load``, including networks whose widths or
depth were edited. Nothing here unpickles: safetensors holds raw tensors and a JSON header, so a crafted file
can at worst give an error. Writes go to a temporary file that is renamed into place, so an interrupted save
never destroys the previous file. Every file carries a SHA-256 checksum that loading verifies, and a stored
spec is checked against the file's tensors before the network is built (no allocation for a crafted spec).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .build import build
from .spec import NetSpec, SpecError

SPEC_KEY = "reslab.spec"
FORMAT_KEY = "reslab.format"
FORMAT = "reslab-model-1"
# sha256 over every tensor (name, dtype, shape, bytes) and the other metadata: a flipped bit is an error on load.
CHECKSUM_KEY = "reslab.checksum"
PREPROCESS_KEY = "reslab.preprocess"  # how inputs were prepared in training (reslab.preprocess.Preprocess)
# Prefixes that wrappers (DataParallel/DDP, torch.compile) and timm/Lightning exports put before the names.
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
# timm's names for tensors that torchvision (and reslab) call otherwise.
TIMM_NAMES = {"head.fc.": "fc."}


class CheckpointError(ValueError):
    """A file cannot be read as what it claims to be; the message names the file."""


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(tmp_path)`` and rename the result over ``path`` (same folder, so the rename is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_state(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    """Write tensors and string metadata as one safetensors file, atomically."""
    # safetensors refuses shared or non-contiguous storage; checkpoints want independent copies anyway.
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta = {str(k): str(v) for k, v in metadata.items() if k != CHECKSUM_KEY}
    meta[CHECKSUM_KEY] = checksum(flat, meta)
    atomic_write(path, lambda tmp: save_file(flat, tmp, metadata=meta))


def load_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file; any malformed, truncated or foreign file raises ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with safe_open(path, framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or not written by "
                              f"reslab?): {err}") from None
    stored = metadata.pop(CHECKSUM_KEY, None)  # files of earlier versions have none
    if stored is not None and stored != checksum(tensors, metadata):
        raise CheckpointError(f"{path}: checksum mismatch: the file was damaged or altered after it was written "
                              f"(restore it from a copy, or resume from another checkpoint)")
    return tensors, metadata


def checksum(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    h = hashlib.sha256()
    for key in sorted(metadata):
        h.update(f"{key}\0{metadata[key]}\0".encode())
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return "sha256:" + h.hexdigest()


def save(model: nn.Module, path: str | Path, *, preprocess: Mapping | None = None) -> None:
    """Save a reslab network (weights + spec) to a ``.safetensors`` file.

    Every tensor is checked against the spec first (``checked_spec``): a module edited without its spec is
    refused (or its spec derived, where that is exact), so the file always loads. ``preprocess`` (the
    ``Preprocess.to_dict()`` of the training data) travels in the metadata for ``reslab predict``.
    """
    inner = _unwrap(model)
    if not isinstance(getattr(inner, "spec", None), NetSpec):
        raise TypeError("reslab.save needs a network built by reslab (it has no .spec)")
    spec = checked_spec(inner)
    metadata = {SPEC_KEY: spec.to_json(indent=None), FORMAT_KEY: FORMAT}
    if preprocess is not None:
        metadata[PREPROCESS_KEY] = json.dumps(dict(preprocess))
    save_state(path, inner.state_dict(), metadata)


def checked_spec(model: nn.Module) -> NetSpec:
    """The spec that rebuilds ``model`` tensor for tensor: ``model.spec`` when it does, else one derived from
    the module's shapes (widths changed by a pruner, a replaced ``fc``), which then becomes ``model.spec``.
    A module no spec describes raises ``SpecError`` saying how to fix it."""
    from .derive import derive_spec, spec_mismatch

    problem = spec_mismatch(model, model.spec)
    if problem is None:
        return model.spec
    derived = derive_spec(model)
    if derived is not None and spec_mismatch(model, derived) is None:
        model.spec = derived
        return derived
    raise SpecError(
        f"the module no longer matches its spec ({problem}); edit networks through their spec "
        f"(model.reset_classifier(n) for a new head, reslab.edit.cut_channels to cut channels) or set "
        f"model.spec to a NetSpec that describes the module; nothing was written"
    )


def spec_from_metadata(metadata: Mapping[str, str], path: str | Path) -> NetSpec:
    if SPEC_KEY not in metadata:
        raise CheckpointError(f"{path}: no reslab spec in the file's metadata (a bare state dict? build the "
                              f"model yourself and use model.load_state_dict)")
    try:
        return NetSpec.from_json(metadata[SPEC_KEY], where=f"{path}: spec")
    except SpecError as err:
        raise CheckpointError(str(err)) from None


def load(path: str | Path, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the network stored in ``path`` and load its weights (strictly)."""
    tensors, metadata = load_state(path)
    spec = spec_from_metadata(metadata, path)
    check_weights(spec, tensors, path)  # before building: a crafted spec must not allocate its widths
    model = build(spec)
    load_weights(model, tensors, path)
    return model.to(map_location)


def check_weights(spec: NetSpec, tensors: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Check ``tensors`` against the state dict ``spec`` builds (names, shapes, finite values), without
    allocating the network: it is built on the meta device."""
    with torch.device("meta"):
        expected = build(spec).state_dict()
    _compare(expected, tensors, path)
    bad = first_non_finite(tensors)
    if bad is not None:
        raise CheckpointError(f"{path}: weight {bad!r} holds NaN or infinite values (a diverged run?); "
                              f"refusing to use it")


def first_non_finite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or inf, or None."""
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return key
    return None


def _compare(expected: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor], path: str | Path) -> None:
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        what = f"missing key {missing[0]!r}" if missing else f"unexpected key {unexpected[0]!r}"
        raise CheckpointError(f"{path}: weights do not match the spec ({what}; {len(missing)} missing, "
                              f"{len(unexpected)} unexpected)")
    for key, value in expected.items():
        if tensors[key].shape != value.shape:
            raise CheckpointError(f"{path}: weight {key!r} has shape {tuple(tensors[key].shape)}, the spec "
                                  f"needs {tuple(value.shape)}")


def load_weights(model: nn.Module, tensors: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Strictly load ``tensors`` into ``model``; a missing, extra or mis-shaped key names the file and key."""
    _compare(model.state_dict(), tensors, path)
    model.load_state_dict(tensors, strict=True)


def read_torch_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a PyTorch ``.pth``/``.pt`` file (torchvision, timm), read with ``weights_only=True``
    (no code runs). A dict nesting it under ``state_dict``/``model`` is unwrapped; names are mapped to
    torchvision's by ``torchvision_names``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for bad files; one message names the file
        raise CheckpointError(f"{path}: not a readable weights-only PyTorch file: {err}") from None
    for key in ("state_dict", "model", "model_state_dict", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: expected a state dict of tensors, but {bad[0]!r} is "
                              f"{type(state[bad[0]]).__name__}")
    return torchvision_names(state)


def torchvision_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with wrapper prefixes (``module.``, ``_orig_mod.``) dropped and timm's names mapped to
    torchvision's (``head.fc`` -> ``fc``); ResNet-family names are otherwise the same in both."""
    state = dict(state)
    for prefix in WRAPPER_PREFIXES:  # in this order: DDP wraps a compiled module, not the other way round
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    out = {}
    for key, value in state.items():
        for theirs, ours in TIMM_NAMES.items():
            if key.startswith(theirs):
                key = ours + key[len(theirs):]
        out[key] = value
    return out


def load_torchvision_weights(model: nn.Module, path: str | Path) -> None:
    """Load a torchvision ``.pth`` state dict into a reslab ImageNet ResNet (weights only, no code run).
    To start training from one (a new head, frozen layers), use ``model.init_from`` instead."""
    load_weights(model, read_torch_weights(path), path)


def read_preprocess(path: str | Path) -> dict | None:
    """The preprocessing stored in a model file or checkpoint (``None`` in files written without one)."""
    path = Path(path)
    try:
        with safe_open(path, framework="pt") as f:
            metadata = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file: {err}") from None
    if PREPROCESS_KEY not in metadata:
        return None
    try:
        return json.loads(metadata[PREPROCESS_KEY])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: the preprocessing in the metadata is corrupt ({err})") from None


def _unwrap(model: nn.Module) -> nn.Module:
    # DDP and torch.compile wrap the network; the spec lives on the inner module.
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def read_spec(path: str | Path) -> NetSpec:
    """The spec of a saved network, or of a spec file (``.json``/``.yaml``)."""
    path = Path(path)
    if path.suffix in (".json", ".yaml", ".yml"):
        return NetSpec.load(path)
    try:
        with safe_open(path, framework="pt") as f:
            metadata = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file: {err}") from None
    return spec_from_metadata(metadata, path)


__all__ = ["CheckpointError", "atomic_write", "check_weights", "checked_spec", "checksum", "first_non_finite", "load",
           "load_state", "load_torchvision_weights", "load_weights", "read_preprocess", "read_spec",
           "read_torch_weights", "save", "save_state", "torchvision_names"]
