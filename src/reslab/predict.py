"""``reslab predict``: class predictions for image files with a saved model and the preprocessing it stores.

Paths may be files or folders (searched recursively for the image types torchvision decodes). Every file gives
one row: its top-k classes and probabilities, or the reason it could not be read, so one bad file never stops
the others. Rows go to the console and, optionally, to a CSV or JSON file.
"""

from __future__ import annotations

import csv
import io as text_io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .data import DataError
from .data.folder import IMAGE_EXTENSIONS
from .data.preprocess import Preprocess
from .io import CheckpointError, atomic_write, read_preprocess
from .train.checkpoint import load_model

BATCH = 64


@dataclass
class Prediction:
    path: str
    classes: list[str] = field(default_factory=list)  # best first
    probs: list[float] = field(default_factory=list)
    error: str | None = None


def image_files(paths: Iterable[str | Path]) -> list[str]:
    """The files named, and the image files under the folders named (recursively, sorted)."""
    out: list[str] = []
    for path in map(str, paths):
        if not os.path.isdir(path):
            out.append(path)  # a named file is tried whatever its extension; a missing one gets its row
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            out += [os.path.join(dirpath, f) for f in sorted(filenames)
                    if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
    return out


def load_for_prediction(model_path: str | Path) -> tuple[torch.nn.Module, Preprocess]:
    """The network in a model file or checkpoint and its preprocessing record."""
    record = read_preprocess(model_path)
    if record is None:
        raise CheckpointError(
            f"{model_path}: no preprocessing record (input size, normalisation, class names) in the file; it was "
            f"written by an older reslab or by reslab.save without preprocess=. Evaluate it with reslab eval, or "
            f"save it again with reslab.save(model, path, preprocess=...)"
        )
    preprocess = Preprocess.from_dict(record, f"{model_path}: preprocess")
    model = load_model(model_path)
    if model.spec.num_classes != len(preprocess.class_names) or model.spec.in_chans != preprocess.channels:
        raise CheckpointError(f"{model_path}: the preprocessing record ({len(preprocess.class_names)} classes, "
                              f"{preprocess.channels} channels) does not fit the network")
    return model, preprocess


@torch.no_grad()
def predict_files(model: torch.nn.Module, preprocess: Preprocess, files: Sequence[str],
                  topk: int = 1) -> list[Prediction]:
    """One ``Prediction`` per file, in order."""
    model.eval()
    k = max(1, min(topk, len(preprocess.class_names)))
    rows = [Prediction(path) for path in files]
    good: list[tuple[int, torch.Tensor]] = []
    for i, path in enumerate(files):
        try:
            good.append((i, preprocess.read(path)))
        except DataError as err:
            rows[i].error = str(err)
    for start in range(0, len(good), BATCH):
        chunk = good[start:start + BATCH]
        probs = torch.softmax(model(preprocess.normalise(torch.stack([x for _, x in chunk]))).float(), 1)
        values, indices = probs.topk(k, dim=1)
        for (i, _), v, idx in zip(chunk, values.tolist(), indices.tolist(), strict=True):
            rows[i].classes = [preprocess.class_names[j] for j in idx]
            rows[i].probs = v
    return rows


def write_predictions(rows: Sequence[Prediction], path: str | Path) -> None:
    """``.json``: a list of records; anything else: CSV (path, class_1, prob_1, ..., error)."""
    path = Path(path)
    if path.suffix == ".json":
        text = json.dumps([asdict(r) for r in rows], indent=1) + "\n"
    else:
        k = max((len(r.classes) for r in rows), default=1)
        buffer = text_io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["path", *[x for i in range(1, k + 1) for x in (f"class_{i}", f"prob_{i}")], "error"])
        for r in rows:
            pairs = [x for c, p in zip(r.classes, r.probs, strict=True) for x in (c, f"{p:.6f}")]
            writer.writerow([r.path, *pairs, *[""] * (2 * k - len(pairs)), r.error or ""])
        text = buffer.getvalue()
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def describe(row: Prediction) -> str:
    if row.error is not None:
        return f"{row.path}: error: {row.error}"
    return f"{row.path}: " + ", ".join(f"{c} {p:.3f}" for c, p in zip(row.classes, row.probs, strict=True))


__all__ = ["Prediction", "describe", "image_files", "load_for_prediction", "predict_files", "write_predictions"]
