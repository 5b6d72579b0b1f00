"""Data settings: which dataset, where it lives, how it is split, subset and augmented.

Both sections are declared like every config section (``reslab.schema``: ``option(default, check, doc)``) and
check their fields on construction too, so a typo in a YAML config or a bad value in code fails at once with
the key's path (``data.augment.hflipp``) instead of being silently ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..schema import ConfigError, at_least, check_fields, choice, in_range, option

DATASETS = ("digits", "mnist", "fashion_mnist", "emnist", "cifar10", "cifar100", "imagefolder")
# Larger sides are a typo, not a dataset: 4096^2 RGB images are 50 MB each.
MAX_IMAGE_SIZE = 4096
EMNIST_SPLITS = ("byclass", "bymerge", "balanced", "letters", "digits", "mnist")


def _folder(value: Any) -> str | None:
    return None if value else "a folder path"


@dataclass
class AugmentConfig:
    """Training-time augmentations, applied to whole batches on the batch's device."""

    crop_padding: int = option(
        0, at_least(0), "random crop of the original size from the image zero-padded by this many pixels; 0: off"
    )
    hflip: bool = option(False, doc="random horizontal flip with probability 1/2 (never for digits)")
    cutout: int = option(0, at_least(0), "zero (set to the mean) one random square of this side; 0: off")

    def __post_init__(self) -> None:
        check_fields(self, "data.augment")

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.hflip or self.cutout > 0


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

    name: str = option("digits", choice(*DATASETS), "the dataset")
    data_dir: str = option("../shared/data", _folder, "root of the datasets (imagefolder: the image folder)")
    download: bool = option(False, doc="let torchvision download a missing dataset (needs a network)")
    emnist_split: str = option("balanced", choice(*EMNIST_SPLITS), "emnist: which split")
    val_fraction: float = option(0.1, in_range(0.0, 1.0), "share of train carved off as val when there is none")
    train_per_class: int | None = option(None, at_least(1), "a class-balanced subset of train; null: all")
    test_per_class: int | None = option(None, at_least(1), "a class-balanced subset of test; null: all")
    image_size: int | None = option(
        None, in_range(1, MAX_IMAGE_SIZE, high_open=False), "resize to this side; null: the dataset's own"
    )
    augment: AugmentConfig | None = option(None, doc="null: the dataset's usual (crop + flip for photos); {}: none")
    skip_bad_images: bool = option(False, doc="imagefolder: skip undecodable files instead of failing")
    in_memory: bool | None = option(None, doc="imagefolder: decode into memory; null: when it fits the budget")
    num_workers: int = option(2, at_least(0), "imagefolder: DataLoader workers when streaming")
    test_fraction: float = option(
        0.2, in_range(0.0, 1.0, low_open=True), "share of a flat image folder held out as test"
    )

    def __post_init__(self) -> None:
        if isinstance(self.data_dir, os.PathLike):
            self.data_dir = os.fspath(self.data_dir)
        check_fields(self, "data")
        if self.in_memory is False and self.name != "imagefolder":
            raise ConfigError(f"data.in_memory: false only applies to name: imagefolder; {self.name} is always "
                              f"held in memory")
        if self.augment is None:
            self.augment = default_augment(self.name)
