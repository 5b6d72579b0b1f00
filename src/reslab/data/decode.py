"""Decoding image files: once into a uint8 tensor (with the disk cache), or streamed per batch.

Both paths use the same ``ImageFiles`` dataset (torchvision.io decode + torchvision v2 resize/centre crop)
in DataLoader workers, so images look identical whichever path a folder takes. Unreadable files come back
in-band rather than as worker exceptions, so the main process raises one clean ``DataError`` naming the
file, or skips it and records it when ``skip_bad_images`` is on.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2
from tqdm import tqdm

from .augment import BatchTransform
from .errors import DataError
from .split import Split

DECODE_BATCH = 256
# Decoding more images than this shows a progress bar.
PROGRESS_FROM = 5000
# Images probed (spread over the set) to choose grey or colour decoding.
PROBES = 32

# (path, message, skippable): an unreadable file may be skipped, an image of the wrong size may not.
Problem = tuple[str, str, bool]


def read_image(path: str, mode: ImageReadMode) -> Tensor:
    """Decode one image file to uint8 (C, H, W) (or (N, C, H, W) for animated formats); 16-bit images are
    scaled to 8 bits.

    torchvision 0.29 deprecates its decoders in favour of TorchCodec (>= 0.16, same ``decode_image`` call);
    this is the one place to switch. Its per-call DeprecationWarning is silenced here so a 60k-image decode
    does not print 60k warnings.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="The image decoding and encoding", category=DeprecationWarning
        )
        image = decode_image(path, mode=mode)
    if image.dtype == torch.uint16:  # 16-bit PNGs: keep the high byte, the 8-bit image they stand for
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    elif image.dtype != torch.uint8:
        raise ValueError(f"unsupported pixel type {image.dtype}")
    return image


def resize_transform(size: int) -> v2.Transform:
    """The resize policy of image folders (``shorter_side_center_crop``): shorter side to ``size``, then a
    centre crop to ``size`` x ``size``."""
    return v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size)])


class ImageFiles(Dataset):
    """Image files decoded to uint8 (C, H, W) tensors of one common shape.

    With ``size`` every image is resized (shorter side) and centre-cropped to ``size`` x ``size``;
    without, every image must already have the shape ``native_hw``.
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: Tensor,
        mode: ImageReadMode,
        size: int | None,
        native_hw: tuple[int, int],
    ) -> None:
        self.paths = list(paths)
        self.labels = labels.tolist()
        self.mode = mode
        self.size = size
        self.native_hw = native_hw
        channels = 1 if mode == ImageReadMode.GRAY else 3
        self.shape = (channels, size, size) if size else (channels, *native_hw)
        self.resize = resize_transform(size) if size else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Tensor, int, Problem | None]:
        path = self.paths[i]
        try:
            image = read_image(path, self.mode)
        except (RuntimeError, OSError, ValueError) as e:
            return (
                torch.zeros(self.shape, dtype=torch.uint8),
                self.labels[i],
                (path, f"cannot decode image {path}: {e}", True),
            )
        if image.dim() == 4:  # animated GIF: keep the first frame
            image = image[0]
        if self.resize is not None:
            image = self.resize(image)
        elif tuple(image.shape[1:]) != self.native_hw:
            h, w = image.shape[1:]
            problem = (
                path,
                f"image {path} is {w}x{h} pixels but the dataset's first image is "
                f"{self.native_hw[1]}x{self.native_hw[0]}; set data.image_size to resize all images",
                False,
            )
            return torch.zeros(self.shape, dtype=torch.uint8), self.labels[i], problem
        return image, self.labels[i], None


def collate_decoded(
    samples: list[tuple[Tensor, int, Problem | None]],
) -> tuple[Tensor, Tensor, list[Problem]]:
    """Stack the readable images of a batch; the problems of the others are returned beside them."""
    images = torch.stack([s[0] for s in samples])
    labels = torch.tensor([s[1] for s in samples], dtype=torch.int64)
    problems = [s[2] for s in samples if s[2] is not None]
    if problems:
        keep = torch.tensor([s[2] is None for s in samples])
        images, labels = images[keep], labels[keep]
    return images, labels, problems


def record_problems(problems: list[Problem], skip_bad: bool, skipped: list[str]) -> None:
    """Raise for a problem that cannot be skipped; otherwise add the files to ``skipped`` with a warning."""
    for _, message, skippable in problems:
        if not skippable:
            raise DataError(message)
        if not skip_bad:
            raise DataError(f"{message} (set data.skip_bad_images: true to skip unreadable images)")
    new = [p for p, _, _ in problems if p not in skipped]
    if new:
        skipped += new
        warnings.warn(
            f"skipped {len(new)} unreadable image(s): {', '.join(new[:5])}{' ...' if len(new) > 5 else ''}",
            stacklevel=3,
        )


def probe_images(paths: Sequence[str], skip_bad: bool) -> tuple[ImageReadMode, tuple[int, int]]:
    """Decode mode (grey only if every probed image is grey) and the first readable image's (H, W)."""
    step = max(1, len(paths) // PROBES)
    probed = list(paths[::step][:PROBES])
    probed_set = set(probed)
    shapes = []
    # Unreadable probes (when skipped) are replaced by the next files of the set.
    for path in probed + [p for p in paths if p not in probed_set]:
        try:
            shapes.append(read_image(path, ImageReadMode.UNCHANGED).shape[-3:])
        except (RuntimeError, OSError, ValueError) as e:
            if not skip_bad:
                raise DataError(
                    f"cannot decode image {path}: {e} (set data.skip_bad_images: true to skip "
                    "unreadable images)"
                ) from e
        if len(shapes) >= len(probed):
            break
    if not shapes:
        raise DataError(f"none of the {len(paths)} images starting with {paths[0]} can be decoded")
    colour = any(s[0] >= 3 for s in shapes)
    return (ImageReadMode.RGB if colour else ImageReadMode.GRAY), (int(shapes[0][1]), int(shapes[0][2]))


def decode_all(
    files: ImageFiles, *, num_workers: int, skip_bad: bool, desc: str, progress: str = "auto"
) -> tuple[Tensor, Tensor, list[str]]:
    """Decode every file into one uint8 (N, C, H, W) tensor; returns (images, labels, skipped paths).

    ``progress`` as ``train.progress``: ``bar`` (``auto`` on a terminal) draws a bar; ``plain`` (``auto``
    in a log) prints a line before and after, with no carriage returns; ``none`` is silent.
    """
    loader = DataLoader(files, batch_size=DECODE_BATCH, num_workers=num_workers, collate_fn=collate_decoded)
    if progress == "auto":
        progress = "bar" if sys.stdout.isatty() else "plain"
    if len(files) < PROGRESS_FROM:
        progress = "none"
    if progress == "plain":
        print(f"decoding {len(files)} images of {desc} (once: they are cached)", flush=True)
    start = time.perf_counter()
    images, labels, skipped = [], [], []
    for batch_images, batch_labels, problems in tqdm(
        loader, desc=desc, leave=False, file=sys.stdout, disable=progress != "bar"
    ):
        record_problems(problems, skip_bad, skipped)
        images.append(batch_images)
        labels.append(batch_labels)
    if progress == "plain":
        print(f"decoded {len(files)} images of {desc} in {time.perf_counter() - start:.0f}s", flush=True)
    out = torch.cat(images) if images else torch.empty((0, *files.shape), dtype=torch.uint8)
    if len(out) == 0:
        raise DataError(f"no readable images among the {len(files)} files of {desc}")
    return out, torch.cat(labels), skipped


def sample_images(files: ImageFiles, count: int, *, num_workers: int, skip_bad: bool) -> Tensor:
    """``count`` images spread evenly over ``files`` (for normalisation statistics of a streamed set)."""
    picks = torch.linspace(0, len(files) - 1, min(count, len(files))).round().long().unique().tolist()
    loader = DataLoader(
        torch.utils.data.Subset(files, picks),
        batch_size=DECODE_BATCH,
        num_workers=num_workers,
        collate_fn=collate_decoded,
    )
    batches = []
    for images, _, problems in loader:
        record_problems(problems, skip_bad, [])
        batches.append(images)
    return torch.cat(batches)


class StreamSplit(Split):
    """A split decoded batch by batch in DataLoader workers; for folders too large to hold in memory.

    Batches follow the same (seed, epoch) order and DDP shards as in-memory splits. A batch whose images
    were all unreadable (and skipped) is left out.
    """

    def __init__(
        self,
        name: str,
        files: ImageFiles,
        num_classes: int,
        transform: BatchTransform,
        *,
        num_workers: int,
        skip_bad: bool,
    ) -> None:
        super().__init__(name, torch.tensor(files.labels, dtype=torch.int64), num_classes, transform)
        self.files = files
        self.num_workers = num_workers
        self.skip_bad = skip_bad

    def _uint8_batches(
        self, indices: Tensor, batch_size: int, device: torch.device
    ) -> Iterator[tuple[Tensor, Tensor]]:
        if len(indices) == 0:
            return
        loader = DataLoader(
            self.files,
            batch_sampler=[b.tolist() for b in indices.split(batch_size)],
            num_workers=self.num_workers,
            collate_fn=collate_decoded,
            pin_memory=device.type == "cuda",
        )
        for images, labels, problems in loader:
            record_problems(problems, self.skip_bad, self.skipped)
            if len(images):
                yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
