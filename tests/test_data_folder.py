"""Image folders (PNG and JPEG written here, and the real CIFAR-10 JPEGs): layouts, decoding, the disk
cache, streaming, and one clear error naming the file or folder for every bad input."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

import reslab.data.cache as cache_module
import reslab.data.decode as decode_module
import reslab.data.load as load_module
from reslab.data import AugmentConfig, DataConfig, DataError, load_data

CLASSES = ("cat", "dog", "owl")


def pattern(label: int, i: int, size: tuple[int, int] = (12, 12), channels: int = 3) -> torch.Tensor:
    """A distinct uint8 image per (label, i)."""
    g = torch.Generator().manual_seed(1000 * label + i)
    return torch.randint(0, 256, (channels, *size), generator=g, dtype=torch.uint8)


def pil_decode(path) -> torch.Tensor:
    """The RGB pixels Pillow (an independent decoder) reads from ``path``, as uint8 (3, H, W)."""
    with Image.open(path) as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)


def make_folder(root, write_image, counts, ext=".png", size=(12, 12), channels=3):
    """``counts`` maps part ("train", "test", "val" or "" for a flat folder) to images per class."""
    for part, n in counts.items():
        for label, name in enumerate(CLASSES):
            for i in range(n):
                write_image(root / part / name / f"{i:03d}{ext}", pattern(label, i, size, channels))
    return root


def cfg(root, **kw) -> DataConfig:
    kw.setdefault("num_workers", 0)
    return DataConfig(name="imagefolder", data_dir=str(root), **kw)


def test_train_test_layout_decodes_png_exactly(tmp_path, write_image):
    make_folder(tmp_path, write_image, {"train": 6, "test": 2})
    bundle = load_data(cfg(tmp_path, val_fraction=0))
    assert bundle.class_names == list(CLASSES) and bundle.num_classes == 3
    assert (len(bundle.train), bundle.val, len(bundle.test)) == (18, None, 6)
    assert (bundle.in_chans, bundle.image_size) == (3, 12) and not bundle.streaming
    assert bundle.train.labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    assert torch.equal(bundle.train.images[7], pattern(1, 1))  # dog/001.png
    assert torch.equal(bundle.test.images[5], pattern(2, 1))


def test_val_folder_is_used_when_present(tmp_path, write_image):
    make_folder(tmp_path, write_image, {"train": 4, "val": 2, "test": 1})
    bundle = load_data(cfg(tmp_path, val_fraction=0.5))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (12, 6, 3)
    assert torch.equal(bundle.val.images[0], pattern(0, 0))


def test_flat_folder_carves_a_fixed_test_split_and_a_seeded_val_split(tmp_path, write_image):
    make_folder(tmp_path, write_image, {"": 10}, ext=".jpg")
    a = load_data(cfg(tmp_path, test_fraction=0.2, val_fraction=0.25), seed=0)
    b = load_data(cfg(tmp_path, test_fraction=0.2, val_fraction=0.25), seed=1)
    assert (len(a.train), len(a.val), len(a.test)) == (18, 6, 6)
    assert torch.bincount(a.test.labels).tolist() == [2, 2, 2]
    assert torch.equal(a.test.images, b.test.images)  # the test split never moves with the seed
    assert not torch.equal(a.val.images, b.val.images)
    # JPEG pixels are what a standard decoder reads from the file.
    decoded = pil_decode(tmp_path / "cat" / "000.jpg")
    everything = torch.cat([a.train.images, a.val.images, a.test.images])
    assert any(torch.equal(decoded, img) for img in everything)


def test_grey_images_give_one_channel_and_mixed_sets_give_three(tmp_path, write_image):
    grey = make_folder(tmp_path / "grey", write_image, {"train": 2, "test": 1}, channels=1)
    assert load_data(cfg(grey)).in_chans == 1
    mixed = make_folder(tmp_path / "mixed", write_image, {"train": 2, "test": 1}, channels=1)
    write_image(mixed / "train" / "owl" / "colour.png", pattern(9, 9))
    bundle = load_data(cfg(mixed))
    assert bundle.in_chans == 3 and bundle.train.images.shape[1] == 3


def test_image_size_resizes_and_centre_crops(tmp_path, write_image):
    make_folder(tmp_path, write_image, {"train": 3, "test": 1}, size=(20, 30))
    bundle = load_data(cfg(tmp_path, image_size=10))
    assert bundle.image_size == 10 and bundle.train.images.shape[1:] == (3, 10, 10)


def test_non_square_images_without_image_size_are_refused(tmp_path, write_image):
    make_folder(tmp_path, write_image, {"train": 2, "test": 1}, size=(20, 30))
    with pytest.raises(DataError, match=r"are 30x20 pixels .*not square; set data.image_size"):
        load_data(cfg(tmp_path))


def test_an_image_of_another_size_is_named(tmp_path, write_image):
    make_folder(tmp_path, write_image, {"train": 2, "test": 1})
    odd = write_image(tmp_path / "train" / "dog" / "big.png", pattern(0, 0, (16, 16)))
    with pytest.raises(DataError, match=rf"image {odd} is 16x16 pixels but the dataset's first image is 12x12"):
        load_data(cfg(tmp_path))


def test_empty_class_folder_is_named(tmp_path, write_image):
    make_folder(tmp_path, write_image, {"train": 2, "test": 1})
    (tmp_path / "train" / "emu").mkdir()
    (tmp_path / "train" / "emu" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=rf"class folder {tmp_path / 'train' / 'emu'} is empty"):
        load_data(cfg(tmp_path))


def test_test_class_missing_from_train_is_named(tmp_path, write_image):
    make_folder(tmp_path, write_image, {"train": 2, "test": 1})
    write_image(tmp_path / "test" / "yak" / "0.png", pattern(0, 0))
    with pytest.raises(DataError, match=r"class folder .*test/yak has no counterpart in the training classes"):
        load_data(cfg(tmp_path))


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(DataError, match=rf"image folder {tmp_path / 'nope'} \(data.data_dir\) does not exist"):
        load_data(cfg(tmp_path / "nope"))


def corrupt(root, write_image):
    make_folder(root, write_image, {"train": 4, "test": 1})
    bad = root / "train" / "dog" / "002.png"
    bad.write_bytes(bad.read_bytes()[:40])  # header only: truncated image data
    return bad


def test_unreadable_image_is_named(tmp_path, write_image):
    bad = corrupt(tmp_path, write_image)
    with pytest.raises(DataError, match=rf"cannot decode image {bad}.*skip_bad_images: true"):
        load_data(cfg(tmp_path))


def test_skip_bad_images_leaves_them_out_and_lists_them(tmp_path, write_image):
    bad = corrupt(tmp_path, write_image)
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        bundle = load_data(cfg(tmp_path, skip_bad_images=True, val_fraction=0))
    assert bundle.skipped == [str(bad)] and bundle.train.skipped == [str(bad)]
    assert len(bundle.train) == 11 and torch.bincount(bundle.train.labels).tolist() == [4, 3, 4]
    # The cache remembers the bad file: without skipping, a cached load still refuses it.
    with pytest.raises(DataError, match=rf"cannot decode image {bad}"):
        load_data(cfg(tmp_path))


def test_decode_cache_is_written_reused_and_invalidated(tmp_path, write_image, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("RESLAB_CACHE", str(cache))
    make_folder(tmp_path, write_image, {"train": 3, "test": 1})
    first = load_data(cfg(tmp_path))
    caches = sorted(p.name for p in cache.glob("decoded_*.pt"))
    assert [n.split("_")[2] for n in caches] == ["test", "train"]
    # The dataset's folder is left as it was: nothing hidden is written beside the images.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "test", "train"]

    real_decode = load_module.decode_all
    monkeypatch.setattr(load_module, "decode_all", lambda *a, **k: pytest.fail("decoded despite a current cache"))
    second = load_data(cfg(tmp_path))
    assert torch.equal(first.train.images, second.train.images)

    # Rewriting an image (new content, new mtime) must invalidate the train cache, and only that one.
    monkeypatch.setattr(load_module, "decode_all", real_decode)
    path = tmp_path / "train" / "owl" / "001.png"
    write_image(path, pattern(7, 7))
    os.utime(path, ns=(time.time_ns() + 10**9,) * 2)
    third = load_data(cfg(tmp_path, val_fraction=0))
    assert torch.equal(third.train.images[-2], pattern(7, 7))
    after = sorted(p.name for p in cache.glob("decoded_*.pt"))
    assert len(after) == 2 and after[0] == caches[0] and after[1] != caches[1]  # stale train cache removed


def test_cache_folder_defaults_to_the_user_cache_and_follows_reslab_cache(tmp_path, write_image, monkeypatch):
    monkeypatch.delenv("RESLAB_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_module.cache_dir() == tmp_path / "home" / ".cache" / "reslab"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_module.cache_dir() == tmp_path / "xdg" / "reslab"
    # Two dataset folders with the same layout share the cache folder without overwriting each other.
    monkeypatch.setenv("RESLAB_CACHE", str(tmp_path / "cache"))
    one = make_folder(tmp_path / "one", write_image, {"train": 2, "test": 1})
    two = make_folder(tmp_path / "two", write_image, {"train": 2, "test": 1})
    load_data(cfg(one))
    load_data(cfg(two))
    assert len(list((tmp_path / "cache").glob("decoded_*.pt"))) == 4
    monkeypatch.setattr(load_module, "decode_all", lambda *a, **k: pytest.fail("cache not used"))
    assert len(load_data(cfg(one, val_fraction=0)).train) == 6


def batches_of(split, **kw):
    return [(x.clone(), y.clone()) for x, y in split.batches(5, shuffle=True, seed=4, epoch=1, **kw)]


@pytest.mark.parametrize("num_workers", [0, 1])
def test_streaming_gives_the_same_batches_as_memory(tmp_path, write_image, num_workers):
    make_folder(tmp_path, write_image, {"train": 7, "test": 2}, ext=".jpg")
    augment = AugmentConfig(crop_padding=2, hflip=True)
    held = load_data(cfg(tmp_path, in_memory=True, augment=augment, num_workers=num_workers))
    streamed = load_data(cfg(tmp_path, in_memory=False, augment=augment, num_workers=num_workers))
    assert streamed.streaming and type(streamed.train).__name__ == "StreamSplit"
    assert streamed.mean == pytest.approx(held.mean) and streamed.std == pytest.approx(held.std)
    for kw in ({"augment": True}, {"augment": False, "rank": 1, "world_size": 2}):
        a, b = batches_of(held.train, **kw), batches_of(streamed.train, **kw)
        assert len(a) == len(b) == held.train.num_batches(5, world_size=kw.get("world_size", 1))
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert torch.equal(ya, yb) and torch.allclose(xa, xb)


def test_streaming_skips_or_names_bad_images(tmp_path, write_image, monkeypatch):
    bad = corrupt(tmp_path, write_image)
    # Probing one image and sampling two (first and last file) for the statistics, the bad file is met only
    # when a batch reaches it.
    monkeypatch.setattr(decode_module, "PROBES", 1)
    monkeypatch.setattr(load_module, "STATS_SAMPLE", 2)
    streamed = load_data(cfg(tmp_path, in_memory=False, skip_bad_images=True, val_fraction=0))
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        sizes = [len(y) for _, y in streamed.train.batches(4, shuffle=False, augment=False)]
    assert sizes == [4, 3, 4] and streamed.skipped == [str(bad)]
    strict = load_data(cfg(tmp_path, in_memory=False, val_fraction=0))
    with pytest.raises(DataError, match=rf"cannot decode image {bad}"):
        list(strict.train.batches(4, shuffle=False, augment=False))
    # Probes and a statistics sample that cover the bad file report it at load time already.
    monkeypatch.setattr(decode_module, "PROBES", 32)
    monkeypatch.setattr(load_module, "STATS_SAMPLE", 512)
    with pytest.raises(DataError, match=rf"cannot decode image {bad}"):
        load_data(cfg(tmp_path, in_memory=False, val_fraction=0))


def test_auto_mode_streams_what_exceeds_the_memory_budget(tmp_path, write_image, monkeypatch):
    make_folder(tmp_path, write_image, {"train": 2, "test": 1})
    assert not load_data(cfg(tmp_path)).streaming
    monkeypatch.setattr(load_module, "IN_MEMORY_BUDGET_BYTES", 9 * 3 * 12 * 12 - 1)
    assert load_data(cfg(tmp_path)).streaming


@pytest.mark.xdist_group("cifar10_jpg")
def test_real_cifar10_slice(cifar10_jpg_slice):
    bundle = load_data(cfg(cifar10_jpg_slice, val_fraction=0.1))
    assert bundle.class_names == [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (4500, 500, 1000)
    assert (bundle.in_chans, bundle.image_size) == (3, 32)
    assert torch.bincount(bundle.test.labels).tolist() == [100] * 10
    first = pil_decode(cifar10_jpg_slice / "test" / "airplane" / "0000.jpg")
    assert torch.equal(bundle.test.images[0], first)
    # Natural-image statistics, not noise: CIFAR-10's published means are about (0.49, 0.48, 0.45).
    assert bundle.mean == pytest.approx((0.49, 0.48, 0.45), abs=0.03)
    x, y = next(bundle.train.batches(64, shuffle=True, augment=True))
    assert x.shape == (64, 3, 32, 32) and y.max() < 10


@pytest.mark.xdist_group("cifar10_jpg")
def test_real_cifar10_decodes_once_then_loads_from_cache(cifar10_jpg_slice, monkeypatch, tmp_path):
    monkeypatch.setenv("RESLAB_CACHE", str(tmp_path))
    bundle = load_data(cfg(cifar10_jpg_slice))
    assert len(list(tmp_path.glob("decoded_*.pt"))) == 2
    monkeypatch.setattr(load_module, "decode_all", lambda *a, **k: pytest.fail("decoded despite a current cache"))
    again = load_data(cfg(cifar10_jpg_slice))
    assert torch.equal(again.test.images, bundle.test.images)
    assert torch.equal(again.train.images, bundle.train.images) and torch.equal(again.val.labels, bundle.val.labels)


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.update(labels=torch.full_like(p["labels"], 99)),  # issue 20.8: IndexError mid-training
        lambda p: p.update(labels=p["labels"].flip(0)),  # in range, but not the folders' labels
        lambda p: p.update(images=p["images"][:-1]),
        lambda p: p.update(images=p["images"][:, :, :4]),
        lambda p: p.update(skipped=["../../etc/passwd"]),
    ],
    ids=["labels_99", "labels_shuffled", "one_image_short", "wrong_shape", "foreign_skipped"],
)
def test_a_damaged_decode_cache_is_decoded_again(tmp_path, write_image, damage, monkeypatch):
    monkeypatch.setenv("RESLAB_CACHE", str(tmp_path / "cache"))
    make_folder(tmp_path, write_image, {"train": 3, "test": 1})
    first = load_data(cfg(tmp_path))
    (path,) = (tmp_path / "cache").glob("decoded_*_train_*.pt")
    payload = torch.load(path, weights_only=True)
    damage(payload)
    torch.save(payload, path)
    with pytest.warns(UserWarning, match="ignoring unreadable decode cache"):
        again = load_data(cfg(tmp_path))
    assert torch.equal(again.train.images, first.train.images) and torch.equal(again.train.labels, first.train.labels)
