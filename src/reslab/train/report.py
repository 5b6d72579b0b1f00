"""Run reports: loss/accuracy/learning-rate plots and a Markdown summary; the confusion-matrix plot of eval.

Plots use matplotlib's Agg backend (files only, no display needed).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import torch  # noqa: E402

from ..io import atomic_write  # noqa: E402


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The complete JSON lines of a file (a line cut short by a crash is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _curve(ax, metrics: Sequence[Mapping[str, Any]], key: str, label: str) -> bool:
    points = [(m["epoch"] + 1, m[key]) for m in metrics if m.get(key) is not None]  # 1 = the first epoch
    if points:
        ax.plot(*zip(*points, strict=True), marker="o" if len(points) < 30 else None, label=label)
    return bool(points)


def plot_metrics(metrics: Sequence[Mapping[str, Any]], out_dir: str | Path) -> dict[str, Path]:
    """loss.png, accuracy.png and lr.png from the per-epoch metrics; returns {name: path}."""
    out_dir = Path(out_dir)
    plots = {}
    for name, keys, ylabel in (
        ("loss", [("train_loss", "train"), ("val_loss", "val")], "cross-entropy loss"),
        ("accuracy", [("train_acc", "train"), ("val_acc", "val")], "accuracy"),
        ("lr", [("lr", "learning rate (first step of the epoch)")], "learning rate"),
    ):
        fig, ax = plt.subplots(figsize=(5, 3.4), dpi=100)
        drawn = [_curve(ax, metrics, key, label) for key, label in keys]
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if sum(drawn) > 1:
            ax.legend()
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        atomic_write(path, lambda tmp, fig=fig: fig.savefig(tmp, format="png"))
        plt.close(fig)
        plots[name] = path
    return plots


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_report(
    run_dir: str | Path,
    summary: Mapping[str, Any],
    metrics: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Write ``report.md`` (summary table, plots, per-epoch table, events) and its PNGs into ``run_dir``."""
    run_dir = Path(run_dir)
    plots = plot_metrics(metrics, run_dir)
    lines = [f"# Run `{summary.get('name', run_dir.name)}`", ""]
    headline = (
        f"Test accuracy **{100 * summary['test_accuracy']:.2f} %** after {summary.get('epochs')} epochs"
        if summary.get("test_accuracy") is not None
        else "No test evaluation."
    )
    lines += [headline, "", "| | |", "|---|---|"]
    lines += [
        f"| {key} | {_fmt(value)} |" for key, value in summary.items() if not isinstance(value, dict | list)
    ]
    lines += ["", "## Curves", ""]
    lines += [f"![{name}]({path.name})" for name, path in plots.items()]
    columns = [
        "epoch",
        "lr",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "images_per_s",
        "epoch_time_s",
    ]
    extra_cols = sorted({k for m in metrics for k in m} - set(columns) - {"time_s"})
    columns += extra_cols
    lines += ["", "## Epochs", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for m in metrics:
        shown = {**m, "epoch": m["epoch"] + 1}  # people count epochs from 1; the jsonl files from 0
        lines.append("| " + " | ".join(_fmt(shown.get(c, "")) for c in columns) + " |")
    if events:
        lines += ["", "## Events", ""]
        for e in events:
            info = ", ".join(f"{k}={_fmt(v)}" for k, v in e.items() if k not in ("kind", "epoch"))
            epoch = e["epoch"] + 1 if isinstance(e.get("epoch"), int) else e.get("epoch")
            lines.append(f"- epoch {epoch}: **{e.get('kind')}** {info}")
    path = run_dir / "report.md"
    atomic_write(path, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
    return path


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(true class, predicted class) counts."""
    flat = labels.to(torch.int64) * num_classes + predictions.to(torch.int64)
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def plot_confusion(
    matrix: torch.Tensor, class_names: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """A row-normalised confusion matrix (rows: true class) with the counts written in small sets."""
    n = len(class_names)
    rates = matrix.double() / matrix.sum(1, keepdim=True).clamp(min=1)
    size = min(12.0, 2.5 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    image = ax.imshow(rates.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = range(n)
    ax.set_xticks(ticks, class_names, rotation=90 if n > 10 else 45, ha="right" if n <= 10 else "center")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(
                        j,
                        i,
                        str(int(matrix[i, j])),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black",
                    )
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


__all__ = ["confusion_matrix", "plot_confusion", "plot_metrics", "read_jsonl", "write_report"]
