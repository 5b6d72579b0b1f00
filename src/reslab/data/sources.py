"""The named datasets, read from torchvision's on-disk layouts into uint8 tensors.

torchvision's dataset classes supply the layouts (folder and file names) and the downloads; the files
themselves are parsed here, strictly (``idx``) and without unpickling arbitrary objects (``cifar_pickle``),
so a damaged or crafted file gives a ``DataError`` naming it.
"""

from __future__ import annotations

import string
import tarfile
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import torch
import torchvision.datasets as tvd
from torch import Tensor
from torchvision.datasets.utils import download_url

from .cifar_pickle import read_batch, read_label_names
from .config import DataConfig
from .errors import DataError
from .idx import read_idx_pair
from .sampling import seeded_generator, stratified_split

# The digits test split never depends on the run's seed, so test scores stay comparable across runs.
DIGITS_TEST_SEED = 20240
DIGITS_TEST_FRACTION = 0.2


@dataclass
class TensorData:
    """A dataset held as uint8 (N, C, H, W) tensors with int64 labels; ``val`` only if the set ships one."""

    train: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    class_names: list[str]
    val: tuple[Tensor, Tensor] | None = None


def check_labels(labels: Tensor, low: int, num_classes: int, source: Path | str) -> None:
    """Labels must lie in [low, low + num_classes); the error names ``source`` and the first bad entry."""
    bad = ((labels < low) | (labels >= low + num_classes)).nonzero()
    if len(bad):
        i = int(bad[0])
        raise DataError(
            f"label {int(labels[i])} at index {i} of {source} is out of range "
            f"[{low}, {low + num_classes - 1}] for {num_classes} classes"
        )


def _missing(title: str, expected: Path, data_dir: str) -> DataError:
    return DataError(
        f"{title} not found: expected {expected} (torchvision's layout under data.data_dir="
        f"{data_dir}); set data.download: true to fetch it when online"
    )


def _download(title: str, fetch) -> None:
    try:
        fetch()
    except (OSError, RuntimeError, URLError) as e:
        raise DataError(f"downloading {title} failed: {e}") from e


def extract_tar(archive: Path, target: Path) -> None:
    """Extract a downloaded archive only if every member stays inside ``target`` as a plain file or folder
    (tarfile's ``data`` filter: no absolute paths, ``..``, links out or device files); else nothing is written."""
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                tarfile.data_filter(member, str(target))
            tar.extractall(target, members=members, filter="data")
    except tarfile.FilterError as e:
        raise DataError(f"archive {archive}: refusing to extract it, a member is unsafe: {e}") from None
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"archive {archive} cannot be extracted: {e}") from None


def load_digits() -> TensorData:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16 scaled to 0..255), split 80/20."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.from_numpy(bunch.images * (255.0 / 16.0)).round().to(torch.uint8).unsqueeze(1)
    labels = torch.from_numpy(bunch.target).long()
    train, test = stratified_split(labels, 10, DIGITS_TEST_FRACTION, seeded_generator(DIGITS_TEST_SEED))
    return TensorData(
        (images[train], labels[train]), (images[test], labels[test]), [str(d) for d in range(10)]
    )


def _find(raw: Path, name: str, title: str, data_dir: str) -> Path:
    """``raw/name``, or its ``.gz`` beside it or in ``raw/gzip/`` (EMNIST's archive layout)."""
    for candidate in (raw / name, raw / f"{name}.gz", raw / "gzip" / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise _missing(title, raw / name, data_dir)


def load_mnist_like(cfg: DataConfig) -> TensorData:
    """MNIST or Fashion-MNIST from ``<data_dir>/<MNIST|FashionMNIST>/raw/*-idx?-ubyte[.gz]``."""
    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST}[cfg.name]
    raw = Path(cfg.data_dir) / cls.__name__ / "raw"
    names = [Path(url).stem for url, _ in cls.resources]  # the four file names without .gz
    if cfg.download and not all((raw / n).is_file() or (raw / f"{n}.gz").is_file() for n in names):
        _download(cls.__name__, lambda: cls(cfg.data_dir, train=True, download=True))
    parts = []
    for prefix in ("train", "t10k"):
        images_path = _find(raw, f"{prefix}-images-idx3-ubyte", cls.__name__, cfg.data_dir)
        labels_path = _find(raw, f"{prefix}-labels-idx1-ubyte", cls.__name__, cfg.data_dir)
        images, labels = read_idx_pair(images_path, labels_path)
        check_labels(labels, 0, len(cls.classes), labels_path)
        parts.append((images.unsqueeze(1), labels))
    return TensorData(parts[0], parts[1], list(cls.classes))


def load_emnist(cfg: DataConfig) -> TensorData:
    """EMNIST split ``cfg.emnist_split`` from ``<data_dir>/EMNIST/raw/emnist-<split>-*-ubyte[.gz]``.

    The files store each image transposed (column-major); images come back upright. ``letters`` labels
    1..26 are shifted to 0..25 (torchvision keeps an unused class 0 ``N/A``).
    """
    split = cfg.emnist_split
    raw = Path(cfg.data_dir) / "EMNIST" / "raw"
    title = f"EMNIST ({split})"
    names = [
        f"emnist-{split}-{p}-{kind}-ubyte"
        for p in ("train", "test")
        for kind in ("images-idx3", "labels-idx1")
    ]
    if cfg.download and not all(
        any(c.is_file() for c in (raw / n, raw / f"{n}.gz", raw / "gzip" / f"{n}.gz")) for n in names
    ):
        _download(title, lambda: tvd.EMNIST(cfg.data_dir, split=split, train=True, download=True))
    if split == "letters":
        class_names, low = list(string.ascii_lowercase), 1
    else:
        class_names, low = list(tvd.EMNIST.classes_split_dict[split]), 0
    parts = []
    for part in ("train", "test"):
        images_path = _find(raw, f"emnist-{split}-{part}-images-idx3-ubyte", title, cfg.data_dir)
        labels_path = _find(raw, f"emnist-{split}-{part}-labels-idx1-ubyte", title, cfg.data_dir)
        images, labels = read_idx_pair(images_path, labels_path)
        check_labels(labels, low, len(class_names), labels_path)
        parts.append((images.transpose(1, 2).contiguous().unsqueeze(1), labels - low))
    return TensorData(parts[0], parts[1], class_names)


def load_cifar(cfg: DataConfig) -> TensorData:
    """CIFAR-10/100 from torchvision's python batches (``cifar-10-batches-py``, ``cifar-100-python``)."""
    cls = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[cfg.name]
    label_key = "labels" if cfg.name == "cifar10" else "fine_labels"
    folder = Path(cfg.data_dir) / cls.base_folder
    needed = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    if cfg.download and not all((folder / n).is_file() for n in needed):
        # torchvision's own loader would unpickle the files; only its checked download is used here.
        _download(cls.__name__, lambda: download_url(cls.url, cfg.data_dir, cls.filename, cls.tgz_md5))
        extract_tar(Path(cfg.data_dir) / cls.filename, Path(cfg.data_dir))
    for name in needed:
        if not (folder / name).is_file():
            raise _missing(cls.__name__.replace("CIFAR", "CIFAR-"), folder / name, cfg.data_dir)
    class_names = read_label_names(folder / cls.meta["filename"], cls.meta["key"])
    parts = []
    for file_list in (cls.train_list, cls.test_list):
        images, labels = [], []
        for name, _ in file_list:
            batch_images, batch_labels = read_batch(folder / name, label_key)
            batch_labels = torch.from_numpy(batch_labels)
            check_labels(batch_labels, 0, len(class_names), folder / name)
            images.append(torch.from_numpy(batch_images))
            labels.append(batch_labels)
        parts.append((torch.cat(images), torch.cat(labels)))
    return TensorData(parts[0], parts[1], class_names)


def load_named(cfg: DataConfig) -> TensorData:
    """The dataset ``cfg.name`` (anything but ``imagefolder``) as tensors."""
    if cfg.name == "digits":
        return load_digits()
    if cfg.name in ("mnist", "fashion_mnist"):
        return load_mnist_like(cfg)
    if cfg.name == "emnist":
        return load_emnist(cfg)
    return load_cifar(cfg)
