"""Finding the images of an image-folder dataset (``root/<class>/*.jpg``, Animals-10, the CIFAR-10 JPEGs).

``data_dir`` either holds ``train/`` (with optional ``val/`` and ``test/``) each with one folder per class,
or the class folders directly. Classes are the sorted folder names of the training part; the other parts
may lack a class but may not add one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from torch import Tensor

from .errors import DataError

# The formats torchvision.io.decode_image reads.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp")
SPLIT_FOLDERS = ("train", "val", "test")


@dataclass
class FolderPart:
    """The image files of one part (``train``, ``val``, ``test``, or ``all`` for a flat folder)."""

    name: str
    root: Path  # the dataset's folder (``data_dir``)
    folder: Path  # this part's folder: ``root/<name>``, or ``root`` itself for ``all``
    files: list[str]  # relative to ``folder``
    labels: Tensor

    @cached_property
    def paths(self) -> list[str]:
        return [os.path.join(self.folder, f) for f in self.files]


@dataclass
class FolderLayout:
    root: Path
    class_names: list[str]
    parts: dict[str, FolderPart]


def _visible_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _refuse_loop(class_dir: Path) -> None:
    """A class folder that links to its own folder or above it would hold every class's images."""
    target = class_dir.resolve()
    if class_dir.parent.resolve().is_relative_to(target):
        raise DataError(
            f"class folder {class_dir} is a symlink to {target}, which contains it (a loop); "
            f"replace it with a real folder of that class's images"
        )


def _class_files(class_dir: Path) -> list[str]:
    """Image files under ``class_dir`` (nested folders included), sorted, relative to its parent."""
    found = []
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, class_dir.parent)
        found += [
            os.path.join(rel, f)
            for f in sorted(filenames)
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
        ]
    return found


def _scan_part(name: str, root: Path, folder: Path, class_names: list[str]) -> FolderPart:
    files: list[str] = []
    labels: list[int] = []
    index = {c: i for i, c in enumerate(class_names)}
    for class_name in _visible_dirs(folder):
        _refuse_loop(folder / class_name)
        if class_name not in index:
            raise DataError(
                f"class folder {folder / class_name} has no counterpart in the training classes "
                f"({', '.join(class_names)})"
            )
        class_files = _class_files(folder / class_name)
        if not class_files:
            raise DataError(
                f"class folder {folder / class_name} is empty: no {'/'.join(IMAGE_EXTENSIONS)} files"
            )
        files += class_files
        labels += [index[class_name]] * len(class_files)
    return FolderPart(name, root, folder, files, torch.tensor(labels, dtype=torch.int64))


def scan_folder(root: str | Path) -> FolderLayout:
    """List the images and labels of every part of the image folder at ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"image folder {root} (data.data_dir) does not exist; expected {root}/<class>/*.jpg or "
            f"{root}/train/<class>/*.jpg (+ test/, val/); image folders are never downloaded"
        )
    top = _visible_dirs(root)
    folders = {p: root / p for p in SPLIT_FOLDERS if p in top} if "train" in top else {"all": root}
    train_folder = folders.get("train", root)
    class_names = _visible_dirs(train_folder)
    if not class_names:
        raise DataError(
            f"image folder {train_folder} has no class folders; expected {train_folder}/<class>/*.jpg"
        )
    parts = {name: _scan_part(name, root, folder, class_names) for name, folder in folders.items()}
    for part in parts.values():
        if not part.files:
            raise DataError(f"image folder {part.folder} has no class folders with images")
    return FolderLayout(root, class_names, parts)
