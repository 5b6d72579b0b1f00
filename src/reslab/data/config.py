"""Data settings: which dataset, where it lives, how it is split, subset and augmented.

Both dataclasses validate on construction and ``from_dict`` rejects unknown keys, so a typo in a YAML
config fails at once with the key's path (``data.augment.hflipp``) instead of being silently ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import DataError

DATASETS = ("digits", "mnist", "fashion_mnist", "emnist", "cifar10", "cifar100", "imagefolder")
# Larger sides are a typo, not a dataset: 4096^2 RGB images are 50 MB each.
MAX_IMAGE_SIZE = 4096
EMNIST_SPLITS = ("byclass", "bymerge", "balanced", "letters", "digits", "mnist")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fail(where: str, key: str, expected: str, value: Any) -> DataError:
    return DataError(f"{where}.{key} must be {expected}, got {value!r}")


def _unknown_keys(d: Mapping[str, Any], allowed: list[str], where: str) -> None:
    unknown = [k for k in d if k not in allowed]
    if unknown:
        raise DataError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(allowed)}")


@dataclass
class AugmentConfig:
    """Training-time augmentations, applied to whole batches on the batch's device.

    ``crop_padding``: random crop of the original size from the image zero-padded by this many pixels
    (4 for CIFAR); 0 = off. ``hflip``: random horizontal flip with probability 1/2 (never for digits).
    ``cutout``: zero (after normalisation, i.e. set to the mean) one random square of this side; 0 = off.
    """

    crop_padding: int = 0
    hflip: bool = False
    cutout: int = 0

    def __post_init__(self) -> None:
        _check_augment(self.__dict__, "data.augment")

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.hflip or self.cutout > 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "data.augment") -> AugmentConfig:
        if not isinstance(d, Mapping):
            raise DataError(f"{where} must be a mapping of augmentation settings, got {d!r}")
        _unknown_keys(d, [f.name for f in fields(cls)], where)
        _check_augment(d, where)
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_augment(values: Mapping[str, Any], where: str) -> None:
    for key in ("crop_padding", "cutout"):
        if key in values and not (_is_int(values[key]) and values[key] >= 0):
            raise _fail(where, key, "an integer >= 0", values[key])
    if "hflip" in values and not isinstance(values["hflip"], bool):
        raise _fail(where, "hflip", "true or false", values["hflip"])


def default_augment(name: str) -> AugmentConfig:
    """The usual training augmentation of each dataset.

    Natural photos (CIFAR, image folders) get the standard 4-pixel padded crop and horizontal flip; digits,
    letters and clothing scans get none, since flipping changes what a character is.
    """
    if name in ("cifar10", "cifar100", "imagefolder"):
        return AugmentConfig(crop_padding=4, hflip=True)
    return AugmentConfig()


@dataclass
class DataConfig:
    """Which dataset to load and how.

    ``data_dir`` is the root torchvision expects (``<data_dir>/MNIST/raw/...``,
    ``<data_dir>/cifar-10-batches-py``) or, for ``imagefolder``, the folder holding ``train/``
    (+ ``test/``, optional ``val/``) or the class folders themselves.

    ``val_fraction`` of train is carved off (stratified, seeded) when the set has no val split;
    ``test_fraction`` of a flat image folder becomes its test split (fixed seed, independent of the run).
    ``train_per_class`` keeps a class-balanced subset of train; a carved val split shrinks in proportion,
    so it stays ``val_fraction`` of the pool.

    ``augment=None`` picks the dataset's usual augmentation (``default_augment``); give
    ``AugmentConfig()`` (``augment: {}`` in YAML) for none.

    ``in_memory`` and ``num_workers`` matter for image folders only: ``None`` decodes a folder into
    memory when its uint8 tensor fits ``IN_MEMORY_BUDGET_BYTES``, otherwise it streams through
    DataLoader workers.
    """

    name: str = "digits"
    data_dir: str = "../shared/data"
    download: bool = False
    emnist_split: str = "balanced"
    val_fraction: float = 0.1
    train_per_class: int | None = None
    test_per_class: int | None = None
    image_size: int | None = None
    augment: AugmentConfig | None = None
    skip_bad_images: bool = False
    in_memory: bool | None = None
    num_workers: int = 2
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        if isinstance(self.data_dir, os.PathLike):
            self.data_dir = os.fspath(self.data_dir)
        _check_data(self.__dict__, "data")
        if self.augment is None:
            self.augment = default_augment(self.name)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "data") -> DataConfig:
        """Build from a plain mapping (a YAML section); errors name ``where.<key>``."""
        if not isinstance(d, Mapping):
            raise DataError(f"{where} must be a mapping of data settings, got {d!r}")
        _unknown_keys(d, [f.name for f in fields(cls)], where)
        values = dict(d)
        if values.get("augment") is not None:
            values["augment"] = AugmentConfig.from_dict(values["augment"], f"{where}.augment")
        _check_data(values, where)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_data(values: Mapping[str, Any], where: str) -> None:
    def get(key: str) -> Any:
        return values[key] if key in values else getattr(DataConfig, key)

    for key, choices in (("name", DATASETS), ("emnist_split", EMNIST_SPLITS)):
        if get(key) not in choices:
            raise _fail(where, key, f"one of {', '.join(choices)}", get(key))
    if not isinstance(get("data_dir"), (str, os.PathLike)) or not str(get("data_dir")) or "\0" in str(get("data_dir")):
        raise _fail(where, "data_dir", "a folder path (without NUL characters)", get("data_dir"))
    for key in ("download", "skip_bad_images"):
        if not isinstance(get(key), bool):
            raise _fail(where, key, "true or false", get(key))
    if not (_is_number(get("val_fraction")) and 0 <= get("val_fraction") < 1):
        raise _fail(where, "val_fraction", "a number in [0, 1)", get("val_fraction"))
    if not (_is_number(get("test_fraction")) and 0 < get("test_fraction") < 1):
        raise _fail(where, "test_fraction", "a number in (0, 1)", get("test_fraction"))
    for key in ("train_per_class", "test_per_class", "image_size"):
        value = get(key)
        if value is not None and not (_is_int(value) and value >= 1):
            raise _fail(where, key, "null or an integer >= 1", value)
    if get("image_size") is not None and get("image_size") > MAX_IMAGE_SIZE:
        raise _fail(where, "image_size", f"at most {MAX_IMAGE_SIZE} pixels", get("image_size"))
    if not (_is_int(get("num_workers")) and get("num_workers") >= 0):
        raise _fail(where, "num_workers", "an integer >= 0", get("num_workers"))
    if get("in_memory") not in (None, True, False):
        raise _fail(where, "in_memory", "null, true or false", get("in_memory"))
    if get("in_memory") is False and get("name") != "imagefolder":
        raise DataError(
            f"{where}.in_memory=false only applies to name=imagefolder; "
            f"{get('name')} is always held in memory"
        )
    augment = get("augment")
    if augment is not None and not isinstance(augment, AugmentConfig):
        raise _fail(where, "augment", "null or a mapping of augmentation settings", augment)
