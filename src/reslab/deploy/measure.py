"""Accuracy and latency of an eager network and of onnxruntime sessions, measured the same way.

Latencies are interleaved: each round times every engine once, in a rotating order, so a load change on a
shared machine hits all of them alike; the median over rounds is reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data import Split
from .export import onnx_session

Runner = Callable[[np.ndarray], np.ndarray]


def eager_runner(model: nn.Module) -> Runner:
    model = model.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return run


def onnx_runner(path: str | Path, threads: int | None = None) -> Runner:
    session = onnx_session(path, threads)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def accuracy(runners: Mapping[str, Runner], split: Split, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Each runner's predicted classes on the whole split (same batches for all), and ``labels``."""
    preds: dict[str, list[np.ndarray]] = {name: [] for name in runners}
    labels = []
    for images, y in split.batches(batch_size, shuffle=False, augment=False):
        x = images.numpy()
        for name, run in runners.items():
            preds[name].append(run(x).argmax(1))
        labels.append(y.numpy())
    out = {name: np.concatenate(p) for name, p in preds.items()}
    out["labels"] = np.concatenate(labels)
    return out


def latency(runners: Mapping[str, Runner], batch: np.ndarray, *, rounds: int = 20, calls: int = 1) -> dict[str, float]:
    """Median seconds per call of each runner on ``batch`` (after one warm-up call each), interleaved."""
    names = list(runners)
    for name in names:
        runners[name](batch)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            for _ in range(calls):
                runners[name](batch)
            times[name].append((time.perf_counter() - start) / calls)
    return {name: float(np.median(t)) for name, t in times.items()}


def file_size(path: str | Path) -> int:
    return Path(path).stat().st_size


__all__ = ["Runner", "accuracy", "eager_runner", "file_size", "latency", "onnx_runner"]
