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
        st = os.stat(os.path.join(part.folder, rel))
        h.update(f"{rel}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _candidates(part: FolderPart, key: str) -> list[Path]:
    # The absolute location is part of the name, as many dataset folders share the cache folder.
    where = hashlib.sha256(str(part.root.resolve()).encode()).hexdigest()[:12]
    return [cache_dir() / f"{PREFIX}{where}_{part.name}_{key}.pt"]


def load_cached(part: FolderPart, key: str) -> dict[str, Any] | None:
    """The cached decode of ``part`` (images, labels, skipped) or None when there is no usable one."""
    for path in _candidates(part, key):
        if not path.is_file():
            continue
        try:
            payload = torch.load(path, weights_only=True)
            images, labels, skipped = payload["images"], payload["labels"], payload["skipped"]
            if images.dtype != torch.uint8 or images.dim() != 4 or len(images) != len(labels):
                raise ValueError("inconsistent tensors")
            return {"images": images, "labels": labels, "skipped": list(skipped), "path": path}
        except Exception as e:  # our own file, damaged (e.g. by a full disk): decode again instead
            warnings.warn(f"ignoring unreadable decode cache {path}: {e}", stacklevel=2)
    return None


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
