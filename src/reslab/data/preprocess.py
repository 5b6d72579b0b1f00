"""The preprocessing contract: what a saved model needs to know to be used on new images.

Training runs store it in their model files and checkpoints (``reslab.io.PREPROCESS_KEY``): the input size
and channels, the normalisation, the class names and the resize policy. ``reslab predict`` and ``reslab eval``
read it back, so a model file is usable on its own. Images are decoded with torchvision.io in the model's
channel mode (grey images become RGB for a colour model and the other way round) and resized as the training
data were (shorter side to the input size, then a centre crop), so any image size works.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor
from torchvision.io import ImageReadMode

from .augment import BatchTransform
from .config import AugmentConfig
from .decode import read_image, resize_transform
from .errors import DataError

if TYPE_CHECKING:
    from .load import DataBundle

RESIZE_POLICIES = ("shorter_side_center_crop",)


@dataclass(frozen=True)
class Preprocess:
    """``input_size`` is (channels, height, width); ``mean``/``std`` per channel on the 0..1 scale."""

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    resize: str = "shorter_side_center_crop"

    def __post_init__(self) -> None:
        c, h, w = self.input_size
        if c not in (1, 3) or h < 1 or w != h:
            raise DataError(f"preprocess.input_size: must be (1 or 3, side, side), got {self.input_size}")
        if len(self.mean) != c or len(self.std) != c or min(self.std) <= 0:
            raise DataError(f"preprocess: mean and std need {c} value(s) (std > 0), got {self.mean}, {self.std}")
        if self.resize not in RESIZE_POLICIES:
            raise DataError(f"preprocess.resize: must be one of {', '.join(RESIZE_POLICIES)}, got {self.resize!r}")

    @classmethod
    def from_bundle(cls, data: DataBundle) -> Preprocess:
        return cls((data.in_chans, data.image_size, data.image_size), tuple(data.mean), tuple(data.std),
                   tuple(str(n) for n in data.class_names))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "preprocess") -> Preprocess:
        try:
            return cls(tuple(int(x) for x in d["input_size"]), tuple(float(x) for x in d["mean"]),
                       tuple(float(x) for x in d["std"]), tuple(str(n) for n in d["class_names"]),
                       str(d.get("resize", "shorter_side_center_crop")))
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{where}: not a valid preprocessing record ({err!r})") from None

    @property
    def channels(self) -> int:
        return self.input_size[0]

    def read(self, path: str) -> Tensor:
        """One image file as the model's uint8 (C, H, W) input; unreadable files raise ``DataError``."""
        try:
            image = read_image(path, ImageReadMode.GRAY if self.channels == 1 else ImageReadMode.RGB)
        except (RuntimeError, OSError, ValueError) as err:
            raise DataError(f"cannot decode image {path}: {err}") from None
        if image.dim() == 4:  # animated GIF: the first frame, as in training
            image = image[0]
        return resize_transform(self.input_size[1])(image)

    def normalise(self, images: Tensor) -> Tensor:
        """uint8 (N, C, H, W) -> the float batch the model was trained on."""
        return BatchTransform(self.mean, self.std, AugmentConfig()).normalise(images)


__all__ = ["RESIZE_POLICIES", "Preprocess"]
