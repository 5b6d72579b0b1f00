"""On-disk cache of decoded image folders, so 60k JPEGs are decoded once, not on every run.

The cache file holds plain tensors and strings (``torch.save``; read back with ``weights_only=True``, which
cannot run code) and is keyed by the file list with sizes and modification times plus the decode settings:
any added, removed or rewritten image gives a new key. It is written under the user's cache folder,
``$RESLAB_CACHE`` (default ``$XDG_CACHE_HOME/reslab``, else ``~/.cache/reslab``), never into the dataset's
folder, which may be shared or read-only.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .folder import FolderPart

CACHE_FORMAT = 1
PREFIX = "decoded_"


def cache_dir() -> Path:
    """Where reslab keeps caches: ``$RESLAB_CACHE``, else ``$XDG_CACHE_HOME/reslab``, else ``~/.cache/reslab``."""
    if os.environ.get("RESLAB_CACHE"):
        return Path(os.environ["RESLAB_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "reslab"


def cache_key(part: FolderPart, settings: dict[str, Any]) -> str:
    """A digest of the part's files (name, label, size, mtime) and the decode ``settings``."""
    h = hashlib.sha256(repr((CACHE_FORMAT, sorted(settings.items()))).encode())
    for rel, label in zip(part.files, part.labels.tolist(), strict=True):
        try:
            st = os.stat(os.path.join(part.folder, rel))
            h.update(f"{rel}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:  # e.g. a dangling symlink: decoding reports (or skips) it
            h.update(f"{rel}\0{label}\0missing\n".encode())
    return h.hexdigest()[:24]


def _candidates(part: FolderPart, key: str) -> list[Path]:
    # The absolute location is part of the name, as many dataset folders share the cache folder.
    where = hashlib.sha256(str(part.root.resolve()).encode()).hexdigest()[:12]
    return [cache_dir() / f"{PREFIX}{where}_{part.name}_{key}.pt"]


def load_cached(
    part: FolderPart, key: str, shape: tuple[int, int, int], num_classes: int
) -> dict[str, Any] | None:
    """The cached decode of ``part`` (images, labels, skipped) or None when there is no usable one.

    The file is checked like any input: uint8 images of ``shape``, one per file not skipped, the labels
    of those files (each in [0, num_classes)); a cache that fails is decoded again, with a warning.
    """
    for path in _candidates(part, key):
        if not path.is_file():
            continue
        try:
            payload = torch.load(path, weights_only=True)
            images, labels, skipped = payload["images"], payload["labels"], payload["skipped"]
            _check(images, labels, skipped, part, shape, num_classes)
            return {"images": images, "labels": labels, "skipped": list(skipped), "path": path}
        except Exception as e:  # a damaged or altered cache: decode again instead
            warnings.warn(f"ignoring unreadable decode cache {path}: {e}", stacklevel=2)
    return None


def _check(images: Any, labels: Any, skipped: Any, part: FolderPart, shape: tuple[int, ...], classes: int) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or tuple(images.shape[1:]) != shape:
        raise ValueError(f"images must be uint8 of shape (N, {', '.join(map(str, shape))})")
    if not isinstance(skipped, list) or not all(isinstance(p, str) for p in skipped):
        raise ValueError("the skipped files must be a list of paths")
    if not set(skipped) <= set(part.files):
        raise ValueError("it skips files the folder does not have")
    kept = [i for i, f in enumerate(part.files) if f not in set(skipped)]
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.shape != (len(kept),):
        raise ValueError(f"expected {len(kept)} int64 labels")
    if len(images) != len(kept):
        raise ValueError(f"{len(images)} images for {len(kept)} files")
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < classes:
        raise ValueError(f"labels outside [0, {classes})")
    if not torch.equal(labels, part.labels[kept]):
        raise ValueError("the labels differ from the class folders'")


def _write(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a shared dataset folder wants it readable
        os.replace(tmp, path)  # atomic: readers never see a half-written cache
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for stale in path.parent.glob(f"{path.name.rsplit('_', 1)[0]}_*.pt"):
        if stale != path:
            stale.unlink(missing_ok=True)


def store(
    part: FolderPart, key: str, images: torch.Tensor, labels: torch.Tensor, skipped: Sequence[str]
) -> Path | None:
    """Save a decoded part; returns where, or None (with a warning) when no location is writable."""
    payload = {"images": images, "labels": labels, "skipped": list(skipped)}
    errors = []
    for path in _candidates(part, key):
        if path.parent.is_dir() and not os.access(path.parent, os.W_OK):
            errors.append(f"{path.parent} is not writable")
            continue
        try:
            _write(path, payload)
            return path
        except OSError as e:
            errors.append(f"{path}: {e}")
    warnings.warn(f"could not cache the decoded images of {part.folder}: {'; '.join(errors)}", stacklevel=2)
    return None
