"""Shared fixtures: where the real data lives, and writers of small files in the real on-disk formats."""

from __future__ import annotations

import gzip
import pickle
import re
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

SHARED_DATA = Path(__file__).parents[1].parent / "shared" / "data"
CIFAR10_JPG_TAR = SHARED_DATA / "cifar10-jpg" / "cifar10-jpg.tar.gz"


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reslab_cache")


@pytest.fixture(autouse=True)
def reslab_cache(_session_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Decode caches go to one folder per test session, never into the user's ~/.cache."""
    monkeypatch.setenv("RESLAB_CACHE", str(_session_cache))
    return _session_cache


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the repository (the real MNIST and CIFAR-10 files)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent on this machine")
    return SHARED_DATA


@pytest.fixture(scope="session")
def mnist_root(shared_data: Path) -> Path:
    if not (shared_data / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip(f"MNIST IDX files are absent from {shared_data}/MNIST/raw")
    return shared_data


@pytest.fixture(scope="session")
def cifar10_jpg_slice(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A realistic tenth of the CIFAR-10 JPEG folder, extracted once per session: the first 500 train and
    100 test images of every class (6,000 files), in the archive's ``train/<class>``, ``test/<class>`` layout.

    The whole folder (60k files) is left to ``benchmarks/bench_data.py``: creating and deleting 60k files
    alone takes minutes on a busy 2-core machine.
    """
    if not CIFAR10_JPG_TAR.is_file():
        pytest.skip(f"{CIFAR10_JPG_TAR} is absent on this machine")
    wanted = re.compile(r"(train/[a-z]+/0[0-4]\d\d|test/[a-z]+/00\d\d)\.jpg")
    dest = tmp_path_factory.mktemp("cifar10_jpg_slice")
    with tarfile.open(CIFAR10_JPG_TAR, "r:gz") as tar:
        tar.extractall(dest, members=[m for m in tar if wanted.fullmatch(m.name)], filter="data")
    return dest


def _write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """Write a uint8 array as an IDX file (magic 0x0000 08 <ndim>, big-endian dims), optionally gzipped."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(header + array.tobytes())
    else:
        path.write_bytes(header + array.tobytes())
    return path


@pytest.fixture
def write_idx() -> Callable[..., Path]:
    return _write_idx


def _write_cifar(
    root: Path,
    name: str,
    train: Sequence[tuple[np.ndarray, Sequence[int]]],
    test: tuple[np.ndarray, Sequence[int]],
    class_names: Sequence[str],
) -> Path:
    """Write CIFAR-10 (``cifar-10-batches-py``) or CIFAR-100 (``cifar-100-python``) pickle batches.

    ``train`` is a list of (images (N, 3, 32, 32) uint8, labels) batches: five for CIFAR-10, one for
    CIFAR-100.
    CIFAR-10 files are written like the originals' Python 2 pickles (protocol 2, bytes keys); CIFAR-100 ones
    with protocol 4 and str keys, so both encodings are exercised.
    """

    def dump(path: Path, obj: dict, protocol: int) -> None:
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=protocol)

    def batch(images: np.ndarray, labels: Sequence[int], label_key: str, as_bytes: bool) -> dict:
        entry = {"data": images.reshape(len(images), -1), label_key: list(labels), "batch_label": "synthetic"}
        return {k.encode(): v for k, v in entry.items()} if as_bytes else entry

    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for i, (images, labels) in enumerate(train, start=1):
            dump(folder / f"data_batch_{i}", batch(images, labels, "labels", True), 2)
        dump(folder / "test_batch", batch(*test, "labels", True), 2)
        dump(folder / "batches.meta", {b"label_names": [n.encode() for n in class_names]}, 2)
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        ((images, labels),) = train
        dump(folder / "train", batch(images, labels, "fine_labels", False), 4)
        dump(folder / "test", batch(*test, "fine_labels", False), 4)
        dump(folder / "meta", {"fine_label_names": list(class_names), "coarse_label_names": ["all"]}, 4)
    return folder


@pytest.fixture
def write_cifar() -> Callable[..., Path]:
    return _write_cifar


def _write_image(path: Path, image: torch.Tensor) -> Path:
    """Save a uint8 (C, H, W) tensor (C = 1 or 3) as PNG or JPEG, by the file's extension, with Pillow."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = image.permute(1, 2, 0).numpy()
    Image.fromarray(array[..., 0] if image.shape[0] == 1 else array).save(path, quality=95)
    return path


@pytest.fixture
def write_image() -> Callable[[Path, torch.Tensor], Path]:
    return _write_image
