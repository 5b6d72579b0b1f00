"""Reading CIFAR's python pickle batches without letting a crafted file run code.

torchvision's CIFAR classes call ``pickle.load``, which executes whatever a malicious batch file asks for.
Here the unpickler resolves only the few numpy globals a batch legitimately contains (array
reconstruction, dtypes, scalars, and ``_codecs.encode`` that protocol-2 pickles use for bytes); anything
else, such as ``os.system``, is refused before it can be called.
"""

from __future__ import annotations

import _codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError

# Taken from the running numpy rather than spelled out, so numpy 1 and 2 module paths both work.
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
_SCALAR = np.int64(0).__reduce__()[0]
_ALLOWED = {
    **{
        (module, "_reconstruct"): _RECONSTRUCT
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    },
    **{(module, "scalar"): _SCALAR for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs.encode,
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def load_pickle(path: Path) -> dict[str, Any]:
    """Unpickle one CIFAR file (a dict) with the restricted unpickler; keys come back as ``str``."""
    try:
        with open(path, "rb") as f:
            # latin1 decodes the original Python 2 pickles (their str keys and raw array bytes).
            obj = _SafeUnpickler(f, encoding="latin1").load()
    except OSError as e:
        raise DataError(f"cannot read CIFAR batch {path}: {e}") from e
    except Exception as e:  # whatever breaks inside a foreign file is reported as that file's fault
        raise DataError(
            f"CIFAR batch {path} is corrupt or not a CIFAR pickle: {type(e).__name__}: {e}"
        ) from e
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR batch {path} holds a {type(obj).__name__}, expected a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of one CIFAR batch file."""
    batch = load_pickle(path)
    for key in ("data", label_key):
        if key not in batch:
            raise DataError(f"CIFAR batch {path} has no {key!r} entry (keys: {', '.join(map(str, batch))})")
    data = batch["data"]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3 * 32 * 32
        # Zero or negative strides would let a few bytes pose as many images: only a plain buffer of
        # exactly N x 3072 bytes is a batch.
        or not data.flags.c_contiguous
        or data.strides != (3 * 32 * 32, 1)
        or data.nbytes != len(data) * 3 * 32 * 32
    ):
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise DataError(
            f"CIFAR batch {path}: 'data' must be a contiguous uint8 array of shape (N, 3072) (N x 3072 bytes), "
            f"got {dtype} {shape} with strides {getattr(data, 'strides', None)}"
        )
    try:
        labels = np.array(batch[label_key], dtype=np.int64)  # a copy: no borrowed strides
    except (TypeError, ValueError) as e:
        raise DataError(f"CIFAR batch {path}: {label_key!r} is not a list of integers: {e}") from e
    if labels.shape != (len(data),):
        raise DataError(f"CIFAR batch {path} has {len(data)} images but {labels.size} labels")
    # Arrays unpickled from a str buffer are read-only; torch wants writable memory.
    return np.require(data.reshape(-1, 3, 32, 32), requirements=["C", "W"]), labels


def read_label_names(path: Path, key: str) -> list[str]:
    """The class names stored in a CIFAR meta file under ``key``."""
    meta = load_pickle(path)
    names = meta.get(key)
    if not isinstance(names, list) or not all(isinstance(n, (str, bytes)) for n in names):
        raise DataError(f"CIFAR meta file {path} has no list of class names under {key!r}")
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]
