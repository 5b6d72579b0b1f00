"""ResBuilder's part of a run report: the architecture's history as plots, tables and a Markdown page."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from ..profile import human  # noqa: E402
from ..spec import NetSpec  # noqa: E402

EVENT_COLOURS = {"inserted": "tab:green", "deleted": "tab:red", "narrowed": "tab:orange", "widened": "tab:cyan"}


def plot_history(history: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]],
                 path: str | Path) -> Path:
    """Four panels over epochs: blocks per stage, stage widths, parameters and MACs, accuracy.

    Dashed lines mark structural events; an edit made during epoch e shows at e + 0.5.
    """
    epochs = [row["epoch"] for row in history]
    stages = len(history[0]["blocks_per_stage"]) if history else 0
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), dpi=100)
    (depth, width), (cost, accuracy) = axes
    for s in range(stages):
        label = f"stage {s + 1}"
        depth.step(epochs, [row["blocks_per_stage"][s] for row in history], where="post", label=label)
        width.step(epochs, [row["stage_channels"][s] for row in history], where="post", label=label)
    depth.set_ylabel("blocks")
    width.set_ylabel("output channels")
    cost.step(epochs, [row["macs"] / 1e6 for row in history], where="post", color="tab:blue", label="MACs")
    cost.set_ylabel("MMACs (one image)", color="tab:blue")
    params = cost.twinx()
    params.step(epochs, [row["params"] / 1e3 for row in history], where="post", color="tab:purple",
                label="parameters")
    params.set_ylabel("k parameters", color="tab:purple")
    for key, label in (("train_acc", "train"), ("val_acc", "val")):
        points = [(row["epoch"], row[key]) for row in history if row.get(key) is not None]
        if points:
            accuracy.plot(*zip(*points, strict=True), label=label)
    accuracy.set_ylabel("accuracy")
    for ax, title in ((depth, "depth"), (width, "width"), (cost, "cost"), (accuracy, "accuracy")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        for event in events:
            ax.axvline(event["epoch"] + 0.5, color=EVENT_COLOURS.get(event["kind"], "grey"), ls="--", lw=0.8,
                       alpha=0.6)
    for ax in (depth, width, accuracy):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _describe(event: Mapping[str, Any]) -> str:
    kind = event["kind"]
    if kind == "inserted":
        return f"block {event['block']} (widths {event['widths']})"
    if kind == "deleted":
        pairs = zip(event["blocks"], event["strengths"], strict=True)
        return ", ".join(f"{b} (gain {s:.2g})" for b, s in pairs)
    if kind in ("narrowed", "widened"):
        return ", ".join(f"{g} {a}->{b}" for g, (a, b) in event["groups"].items())
    return ""


def write_report(run_dir: str | Path, history: Sequence[Mapping[str, Any]],
                 events: Sequence[Mapping[str, Any]], start: NetSpec, found: NetSpec,
                 summary: Mapping[str, Any], found_spec_file: str) -> Path:
    """Write ``resbuilder.md`` and ``resbuilder.png`` into ``run_dir``; return the Markdown file's path."""
    run_dir = Path(run_dir)
    plot = plot_history(history, events, run_dir / "resbuilder.png")
    first, last = history[0], history[-1]
    lines = [
        f"# ResBuilder: `{start.name}` -> found architecture", "",
        "| | start | found |", "|---|---|---|",
        f"| blocks per stage | {first['blocks_per_stage']} | {last['blocks_per_stage']} |",
        f"| stage channels | {first['stage_channels']} | {last['stage_channels']} |",
        f"| parameters | {human(first['params'])} | {human(last['params'])} |",
        f"| MACs (one image) | {human(first['macs'])} | {human(last['macs'])} |",
    ]
    if summary.get("test_accuracy") is not None:
        lines.append(f"| test accuracy | | {100 * summary['test_accuracy']:.2f} % |")
    lines += [
        "", f"The found spec is `{found_spec_file}`; the trained network is `model.safetensors` "
        "(`reslab.io.load`). To check that the architecture, not the training history, is what matters, "
        f"train it from scratch: `reslab train --set model.name=null --set model.spec={found_spec_file}`.",
        "", f"![architecture history]({plot.name})", "", "## Structural events", "",
    ]
    if events:
        lines += ["| epoch | event | what | params | MACs |", "|---|---|---|---|---|"]
        for e in events:
            params = f"{human(e['params_before'])} -> {human(e['params_after'])}"
            macs = f"{human(e['macs_before'])} -> {human(e['macs_after'])}"
            lines.append(f"| {e['epoch']} | {e['kind']} | {_describe(e)} | {params} | {macs} |")
    else:
        lines.append("None.")
    lines += ["", "## History", "", "| epoch | phase | blocks per stage | stage channels | params | MACs | "
              "train acc | val acc |", "|---|---|---|---|---|---|---|---|"]
    for row in history:
        accs = [f"{100 * row[k]:.2f}" if row.get(k) is not None else "" for k in ("train_acc", "val_acc")]
        lines.append(f"| {row['epoch']} | {row['phase']} | {row['blocks_per_stage']} | "
                     f"{row['stage_channels']} | {human(row['params'])} | {human(row['macs'])} | "
                     f"{accs[0]} | {accs[1]} |")
    lines += ["", "## Found spec", "", "```", found.summary(), "```", ""]
    path = run_dir / "resbuilder.md"
    path.write_text("\n".join(lines))
    return path
