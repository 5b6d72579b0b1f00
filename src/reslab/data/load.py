"""``load_data``: a ``DataConfig`` in, train/val/test splits with their normalisation out.

Every dataset goes through the same steps: read (named sets as tensors; image folders decoded into
memory with a disk cache, or streamed when too large), carve test (fixed seed) and val (the given seed)
where the set ships none, compute the normalisation from the training images, then take the class-balanced
subsets. Only the last step differs between held and streamed data: a ``TensorSplit`` or a ``StreamSplit``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from .augment import BatchTransform, channel_stats
from .cache import cache_key, load_cached, store
from .config import DataConfig
from .decode import ImageFiles, StreamSplit, decode_all, probe_images, sample_images
from .errors import DataError
from .folder import FolderLayout, scan_folder
from .sampling import balanced_subset, seeded_generator, stratified_split
from .sources import load_named
from .split import Split, TensorSplit

# An image folder whose uint8 tensor would exceed this is streamed instead of held (in_memory: null).
IN_MEMORY_BUDGET_BYTES = 2 * 1024**3
# Streamed folders estimate their normalisation from this many training images.
STATS_SAMPLE = 512
# Splits carved for testing never move with the run's seed, so test scores stay comparable across runs.
TEST_SEED = 31337
# Stream ids mixed into the run's seed, so each random choice has its own independent draw.
VAL_STREAM, TRAIN_SUBSET_STREAM, VAL_SUBSET_STREAM = 1, 2, 3

# A pool of samples: the images as a uint8 tensor, or the file paths of a streamed folder; and the labels.
Pool = tuple[Tensor | list[str], Tensor]


@dataclass
class DataBundle:
    """The splits of one dataset and what a model needs to know about it.

    ``mean``/``std`` (per channel, 0..1 scale) are what the splits normalise with, computed from the
    training images. ``skipped`` lists unreadable image files left out (``skip_bad_images``); for a streamed
    folder it grows as batches reveal them. ``streaming`` says the splits decode files batch by batch.
    """

    train: Split
    val: Split | None
    test: Split
    num_classes: int
    in_chans: int
    image_size: int
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    streaming: bool = False

    @property
    def skipped(self) -> list[str]:
        splits = [s for s in (self.train, self.val, self.test) if s is not None]
        return list(dict.fromkeys(p for s in splits for p in s.skipped))


def _take(pool: Pool, indices: Tensor) -> Pool:
    items, labels = pool
    if isinstance(items, Tensor):
        return items[indices], labels[indices]
    return [items[i] for i in indices.tolist()], labels[indices]


def _partition(
    cfg: DataConfig, seed: int, num_classes: int, train: Pool, val: Pool | None, test: Pool | None
) -> tuple[Pool, Pool | None, Pool, Pool]:
    """(train, val, test, stats pool): missing splits carved, then the per-class subsets taken."""
    if test is None:
        kept, carved = stratified_split(train[1], num_classes, cfg.test_fraction, seeded_generator(TEST_SEED))
        train, test = _take(train, kept), _take(train, carved)
    carved_val = val is None and cfg.val_fraction > 0
    if carved_val:
        kept, carved = stratified_split(
            train[1], num_classes, cfg.val_fraction, seeded_generator(seed, VAL_STREAM)
        )
        train, val = _take(train, kept), _take(train, carved)
    stats_pool = train  # before subsetting: a few images per class give noisy statistics
    if cfg.train_per_class is not None:
        k = cfg.train_per_class
        train = _take(
            train, balanced_subset(train[1], num_classes, k, seeded_generator(seed, TRAIN_SUBSET_STREAM))
        )
        if carved_val:
            # Keep val the same share of the (now smaller) pool it was carved from.
            val_k = max(1, round(k * cfg.val_fraction / (1 - cfg.val_fraction)))
            val = _take(
                val, balanced_subset(val[1], num_classes, val_k, seeded_generator(seed, VAL_SUBSET_STREAM))
            )
    if cfg.test_per_class is not None:
        test = _take(
            test, balanced_subset(test[1], num_classes, cfg.test_per_class, seeded_generator(TEST_SEED))
        )
    if val is not None and len(val[1]) == 0:
        val = None
    return train, val, test, stats_pool


def _resize(images: Tensor, size: int) -> Tensor:
    """Resize (shorter side) and centre-crop uint8 images to ``size`` x ``size``, in chunks."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    chunks = [TF.center_crop(TF.resize(c, [size], antialias=True), [size, size]) for c in images.split(4096)]
    return torch.cat(chunks)


def _tensor_bundle(
    cfg: DataConfig,
    seed: int,
    class_names: list[str],
    train: Pool,
    val: Pool | None,
    test: Pool | None,
    skipped: dict[str, list[str]],
) -> DataBundle:
    num_classes = len(class_names)
    if cfg.image_size is not None:
        train, val, test = [
            None if p is None else (_resize(p[0], cfg.image_size), p[1]) for p in (train, val, test)
        ]
    train, val, test, stats_pool = _partition(cfg, seed, num_classes, train, val, test)
    h, w = train[0].shape[-2:]
    if h != w:
        raise DataError(
            f"{cfg.name} images are {w}x{h} pixels, not square; set data.image_size to resize them"
        )
    mean, std = channel_stats(stats_pool[0])
    transform = BatchTransform(mean, std, cfg.augment)

    def split(name: str, pool: Pool) -> TensorSplit:
        return TensorSplit(name, pool[0], pool[1], num_classes, transform, skipped.get(name, ()))

    return DataBundle(
        train=split("train", train),
        val=None if val is None else split("val", val),
        test=split("test", test),
        num_classes=num_classes,
        in_chans=train[0].shape[1],
        image_size=int(h),
        class_names=list(class_names),
        mean=mean,
        std=std,
        name=cfg.name,
    )


def _decode_folder(
    cfg: DataConfig, layout: FolderLayout, files_of: dict[str, ImageFiles], progress: str
) -> tuple[dict[str, Pool], dict[str, list[str]]]:
    """Every part of the folder as a uint8 tensor, from the disk cache when it is current."""
    pools, skipped = {}, {}
    for name, part in layout.parts.items():
        files = files_of[name]
        key = cache_key(part, {"mode": files.mode.name, "size": files.size, "native_hw": files.native_hw})
        cached = load_cached(part, key, files.shape, len(layout.class_names))
        if cached is not None:
            images, labels = cached["images"], cached["labels"]
            part_skipped = [os.path.join(part.folder, f) for f in cached["skipped"]]
            if part_skipped and not cfg.skip_bad_images:
                raise DataError(
                    f"cannot decode image {part_skipped[0]} (found by an earlier run); set "
                    "data.skip_bad_images: true to skip unreadable images"
                )
        else:
            images, labels, part_skipped = decode_all(
                files,
                num_workers=cfg.num_workers,
                skip_bad=cfg.skip_bad_images,
                desc=str(part.folder),
                progress=progress,
            )
            store(part, key, images, labels, [os.path.relpath(p, part.folder) for p in part_skipped])
        pools[name] = (images, labels)
        # A flat folder's unreadable files are reported on train, the split carved first.
        skipped["train" if name == "all" else name] = part_skipped
    return pools, skipped


def _load_folder(cfg: DataConfig, seed: int, progress: str) -> DataBundle:
    layout = scan_folder(cfg.data_dir)
    train_part = layout.parts.get("train", layout.parts.get("all"))
    mode, native_hw = probe_images(train_part.paths, cfg.skip_bad_images)
    if cfg.image_size is None and native_hw[0] != native_hw[1]:
        raise DataError(
            f"images of {layout.root} are {native_hw[1]}x{native_hw[0]} pixels (first: "
            f"{train_part.paths[0]}), not square; set data.image_size to resize them"
        )
    files_of = {
        name: ImageFiles(part.paths, part.labels, mode, cfg.image_size, native_hw)
        for name, part in layout.parts.items()
    }
    shape = files_of[train_part.name].shape
    total = sum(len(f) for f in files_of.values())
    in_memory = (
        cfg.in_memory if cfg.in_memory is not None else total * math.prod(shape) <= IN_MEMORY_BUDGET_BYTES
    )
    if in_memory:
        pools, skipped = _decode_folder(cfg, layout, files_of, progress)
        train = pools.get("train", pools.get("all"))
        return _tensor_bundle(
            cfg, seed, layout.class_names, train, pools.get("val"), pools.get("test"), skipped
        )

    num_classes = len(layout.class_names)
    paths = {
        name: (files.paths, torch.tensor(files.labels, dtype=torch.int64)) for name, files in files_of.items()
    }
    train, val, test, stats_pool = _partition(
        cfg, seed, num_classes, paths.get("train", paths.get("all")), paths.get("val"), paths.get("test")
    )

    def files(pool: Pool) -> ImageFiles:
        return ImageFiles(pool[0], pool[1], mode, cfg.image_size, native_hw)

    sample = sample_images(
        files(stats_pool), STATS_SAMPLE, num_workers=cfg.num_workers, skip_bad=cfg.skip_bad_images
    )
    mean, std = channel_stats(sample)
    transform = BatchTransform(mean, std, cfg.augment)

    def split(name: str, pool: Pool) -> StreamSplit:
        return StreamSplit(
            name,
            files(pool),
            num_classes,
            transform,
            num_workers=cfg.num_workers,
            skip_bad=cfg.skip_bad_images,
        )

    return DataBundle(
        train=split("train", train),
        val=None if val is None else split("val", val),
        test=split("test", test),
        num_classes=num_classes,
        in_chans=shape[0],
        image_size=shape[1],
        class_names=layout.class_names,
        mean=mean,
        std=std,
        name=cfg.name,
        streaming=True,
    )


def load_data(cfg: DataConfig, *, seed: int = 0, progress: str = "auto") -> DataBundle:
    """Load the dataset ``cfg`` describes.

    ``seed`` picks the carved val split and the per-class subsets (pass the same seed to get the same
    ones); test splits and the digits train/test split are fixed and never depend on it. ``progress``
    (``train.progress``'s values) shows a long first decode of an image folder.
    """
    if cfg.name == "imagefolder":
        return _load_folder(cfg, seed, progress)
    data = load_named(cfg)
    return _tensor_bundle(cfg, seed, data.class_names, data.train, data.val, data.test, {})
