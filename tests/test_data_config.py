"""DataConfig / AugmentConfig: defaults, per-dataset augmentation, and one clear error per bad key (read from a
file or built in code)."""

from __future__ import annotations

import dataclasses

import pytest

from reslab.data import AugmentConfig, DataConfig
from reslab.schema import ConfigError, read_section


def from_dict(raw, where: str = "data") -> DataConfig:
    return read_section(DataConfig, raw, where)


def test_defaults_are_the_file_free_digits_set():
    cfg = DataConfig()
    assert cfg.name == "digits" and cfg.val_fraction == 0.1 and not cfg.download
    assert cfg.augment == AugmentConfig()  # digits are never flipped or shifted by default


@pytest.mark.parametrize(
    ("name", "crop", "flip"),
    [
        ("cifar10", 4, True),
        ("cifar100", 4, True),
        ("imagefolder", 4, True),
        ("mnist", 0, False),
        ("emnist", 0, False),
        ("fashion_mnist", 0, False),
    ],
)
def test_unset_augment_takes_the_datasets_usual_one(name, crop, flip):
    aug = DataConfig(name=name).augment
    assert (aug.crop_padding, aug.hflip, aug.cutout) == (crop, flip, 0)


def test_explicit_empty_augment_turns_augmentation_off():
    cfg = from_dict({"name": "cifar10", "augment": {}})
    assert not cfg.augment.active


def test_from_dict_reads_nested_augment_and_round_trips():
    d = {
        "name": "cifar10",
        "data_dir": "/data",
        "train_per_class": 50,
        "augment": {"cutout": 8, "hflip": False},
    }
    cfg = from_dict(d)
    assert cfg.augment == AugmentConfig(crop_padding=0, hflip=False, cutout=8)
    assert cfg.train_per_class == 50
    assert from_dict(dataclasses.asdict(cfg)) == cfg


def test_unknown_key_names_the_key_and_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"run\.data\.val_frac: unknown key \(allowed: name, data_dir"):
        from_dict({"val_frac": 0.2}, where="run.data")


def test_unknown_augment_key_names_its_full_path():
    with pytest.raises(ConfigError, match=r"data\.augment\.hflipp: unknown key"):
        from_dict({"augment": {"hflipp": True}})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("name", "imagenet", r"data\.name: must be one of digits, mnist.*; got 'imagenet'"),
        ("emnist_split", "bymerged", r"data\.emnist_split: must be one of byclass"),
        ("val_fraction", 1.0, r"data\.val_fraction: must be in \[0\.0, 1\.0\); got 1\.0"),
        ("val_fraction", "lots", r"data\.val_fraction: expected a number, got str 'lots'"),
        ("test_fraction", 0, r"data\.test_fraction: must be in \(0\.0, 1\.0\); got 0\.0"),
        ("train_per_class", 0, r"data\.train_per_class: must be >= 1; got 0"),
        ("image_size", 3.5, r"data\.image_size: expected an integer, got float 3\.5"),
        ("image_size", 5000, r"data\.image_size: must be in \[1, 4096\]; got 5000"),
        ("download", "yes", r"data\.download: expected true or false, got str 'yes'"),
        ("num_workers", -1, r"data\.num_workers: must be >= 0; got -1"),
        ("in_memory", "auto", r"data\.in_memory: expected true or false, got str 'auto'"),
        ("data_dir", "", r"data\.data_dir: must be a folder path; got ''"),
    ],
)
def test_bad_values_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=rf"^{message}"):
        from_dict({key: value})
    with pytest.raises(ConfigError, match=rf"^{message}"):
        DataConfig(**{key: value})


def test_bad_augment_values_name_the_key():
    with pytest.raises(ConfigError, match=r"data\.augment\.crop_padding: must be >= 0; got -4"):
        from_dict({"augment": {"crop_padding": -4}})
    with pytest.raises(ConfigError, match=r"data\.augment\.hflip: expected true or false, got int 1"):
        AugmentConfig(hflip=1)


def test_in_memory_false_is_only_for_image_folders():
    with pytest.raises(ConfigError, match="data.in_memory: false only applies to name: imagefolder"):
        DataConfig(name="mnist", in_memory=False)
    assert DataConfig(name="imagefolder", in_memory=False).in_memory is False


def test_non_mapping_is_rejected():
    with pytest.raises(ConfigError, match="data: must be a mapping of settings"):
        from_dict(["mnist"])
