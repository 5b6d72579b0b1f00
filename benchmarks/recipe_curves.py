"""Test accuracy against wall-clock time for finished (or running) runs: the curve docs/performance.md shows,
and each run's time to given accuracies.

Reads each run folder's metrics.jsonl (``test_acc`` from ``output.test_every``, ``time_s`` the run's elapsed
time across resumed parts) and, when the run has finished, summary.json's final test accuracy.

    python benchmarks/recipe_curves.py runs/cifar10_resnet20 runs/cifar10_resnet20_fast \\
        --targets 0.90 0.91 --out docs/performance/cifar10_curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def curve(run: Path) -> tuple[list[float], list[float], list[int], dict | None]:
    """(elapsed hours, test accuracy, epoch) of every scored epoch, and the summary when the run finished."""
    hours, accs, epochs = [], [], []
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        raise SystemExit(f"{metrics}: missing (is {run} a reslab run folder?)")
    lines = metrics.read_text().splitlines()
    for line in lines:
        m = json.loads(line)
        if "test_acc" in m:
            hours.append(m["time_s"] / 3600)
            accs.append(m["test_acc"])
            epochs.append(m["epoch"] + 1)
    summary_file = run / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
    if summary is not None:
        hours.append(summary["wall_time_s"] / 3600)
        accs.append(summary["test_accuracy"])
        epochs.append(summary["epochs"])
    return hours, accs, epochs or [len(lines)], summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--targets", type=float, nargs="*", default=[0.90, 0.91])
    parser.add_argument("--out", type=Path, help="PNG of the curves")
    args = parser.parse_args()
    # Wall-clock time is what a user waits; epochs compare the recipes where a run was slowed by other
    # processes sharing the machine (its hours then say more about the machine than about the recipe).
    fig, (ax, by_epoch) = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for run in args.runs:
        hours, accs, epochs, summary = curve(run)
        state = f"finished, {100 * summary['test_accuracy']:.2f} %" if summary else f"unfinished at epoch {epochs[-1]}"
        print(f"{run.name}: {len(accs)} test scores, {state}")
        for target in args.targets:
            hit = next((i for i, a in enumerate(accs) if a >= target), None)
            when = f"{hours[hit]:.2f} h (epoch {epochs[hit]})" if hit is not None else "not reached"
            print(f"  time to {100 * target:.0f} %: {when}")
        ax.plot(hours, [100 * a for a in accs], marker=".", label=f"{run.name} ({state})")
        by_epoch.plot(epochs, [100 * a for a in accs], marker=".")
    for axis in (ax, by_epoch):
        for target in args.targets:
            axis.axhline(100 * target, color="grey", lw=0.6, ls=":")
        axis.grid(alpha=0.3)
    ax.set_xlabel("wall-clock hours (training and test scoring)")
    by_epoch.set_xlabel("epoch")
    ax.set_ylabel("test accuracy %")
    ax.set_ylim(60, 95)
    ax.legend(fontsize=8)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=120, bbox_inches="tight")
        print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
