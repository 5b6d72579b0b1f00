"""Plots and the Markdown report of the depth studies.

Results come grouped by label (``{"residual": [run per seed], "plain": [...]}``, or one model's name with one
run); every number is shown as mean ± sample standard deviation over the runs of its group (over seeds), and
with a single run the spread of the lesion study is over its sampled block sets instead. Plots use
matplotlib's Agg backend (files only).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .effective_depth import DepthSnapshot  # noqa: E402
from .studies import RunStudies  # noqa: E402

Groups = Mapping[str, Sequence[RunStudies]]
MODE_STYLE = {"channel": "-", "layer": "--"}

LESION_TEXT = (
    "Blocks with a shortcut are lesioned by zeroing their residual branch (identity blocks are then removed "
    "exactly; downsampling blocks keep only their shortcut); plain blocks are bypassed where their input and "
    "output shapes agree and cannot be lesioned otherwise."
)
PATHS_TEXT = (
    "A path's length is the number of residual branches it passes. Gradient shares are Veit's: the mean "
    "gradient norm through one sampled path of each length times the number of such paths. Output shares "
    "split the logits' input-dependent part J x0 exactly over path lengths."
)
LINEARIZE_TEXT = (
    "ReLUs become leaky units with learnable slopes pushed towards linear by a sparsity penalty; the units "
    "closest to linear are then fixed at exactly linear and the rest of the network fine-tuned. Channel mode "
    "is linearised down to the count of nonlinear channels layer mode reached (it can end with fewer). The "
    "right plot reads accuracy against the average path length, the axis on which the 2022 paper compares "
    "the two granularities."
)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(values: Sequence[float], percent: bool = False, digits: int = 2) -> str:
    """``mean ± std`` of a run-per-seed list (``-`` when nothing was measured)."""
    m, s = mean_std(values)
    if math.isnan(m):
        return "-"
    scale, unit = (100.0, " %") if percent else (1.0, "")
    spread = f" ± {scale * s:.{digits}f}" if len(values) > 1 else ""
    return f"{scale * m:.{digits}f}{spread}{unit}"


def _colors(labels: Sequence[str]) -> dict[str, str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {label: cycle[i % len(cycle)] for i, label in enumerate(labels)}


def _errorbar(ax, x, runs_values: Sequence[Sequence[float]], **kwargs) -> None:
    """Mean and spread over runs at every x (runs as rows)."""
    columns = list(zip(*runs_values, strict=True))
    stats = [mean_std(list(c)) for c in columns]
    ax.errorbar(x, [m for m, _ in stats], yerr=[s for _, s in stats], capsize=3, marker="o", markersize=3,
                **kwargs)


# -- lesion ------------------------------------------------------------------------------------------------
def _nan(v: float | None) -> float:
    return math.nan if v is None else v


def plot_lesion(groups: Groups, path: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    colors = _colors(list(groups))
    for label, runs in groups.items():
        runs = [r for r in runs if r.lesion is not None]
        if not runs:
            continue
        color = colors[label]
        blocks = list(range(1, runs[0].lesion.num_blocks + 1))
        _errorbar(left, blocks, [[100 * _nan(s.accuracy) for s in r.lesion.single] for r in runs],
                  color=color, label=f"{label}: one block deleted")
        left.axhline(100 * mean_std([r.lesion.baseline for r in runs])[0], color=color, linestyle=":",
                     label=f"{label}: intact")
        ks = sorted(runs[0].lesion.random)
        if ks:
            per_run = [[statistics.fmean(r.lesion.random[k]) * 100 for k in ks] for r in runs]
            if len(runs) == 1:  # one run: show the spread over the sampled block sets
                sets = runs[0].lesion.random
                spread = [100 * (statistics.stdev(sets[k]) if len(sets[k]) > 1 else 0.0) for k in ks]
                right.errorbar(ks, per_run[0], yerr=spread, capsize=3, marker="o", markersize=3, color=color,
                               label=label)
            else:
                _errorbar(right, ks, per_run, color=color, label=label)
    left.set(xlabel="deleted block (forward order)", ylabel="test accuracy (%)",
             title="Deleting single blocks at test time")
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set(xlabel="number of random blocks deleted (k)", ylabel="test accuracy (%)",
              title="Deleting k random shape-preserving blocks")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- paths -------------------------------------------------------------------------------------------------
def plot_paths(groups: Groups, path: Path) -> Path:
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    (dist_ax, grad_ax), (share_ax, out_ax) = axes
    colors = _colors(list(groups))
    width = 0.8 / len(groups)
    for i, (label, runs) in enumerate(groups.items()):
        color = colors[label]
        counts = runs[0].path_counts
        if counts is not None:
            total = sum(counts)
            lengths = [k for k, c in enumerate(counts) if c]
            offset = (i - (len(groups) - 1) / 2) * width  # bars of the groups side by side
            dist_ax.bar([k + offset for k in lengths], [counts[k] / total for k in lengths], width=width,
                        color=color, label=label)
        with_grad = [r for r in runs if r.gradient is not None]
        if with_grad:
            lengths = with_grad[0].gradient.lengths
            _errorbar(grad_ax, lengths, [r.gradient.mean_magnitude for r in with_grad], color=color,
                      label=label)
            _errorbar(share_ax, lengths, [r.gradient.total_magnitude for r in with_grad], color=color,
                      label=label)
        with_out = [r for r in runs if r.output is not None]
        if with_out:
            _errorbar(out_ax, with_out[0].output.lengths, [r.output.share for r in with_out], color=color,
                      label=label)
    dist_ax.set(xlabel="path length (residual branches on the path)", ylabel="fraction of paths",
                title="Distribution of path lengths")
    grad_ax.set(xlabel="path length", ylabel="gradient norm at the first block (per path)", yscale="log",
                title="Gradient through one path of each length")
    share_ax.set(xlabel="path length", ylabel="share of the total gradient",
                 title="Which path lengths carry the gradient")
    out_ax.set(xlabel="path length", ylabel="share of the output (|c_k| / sum |c_j|)",
               title="Which path lengths make the output")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- linearisation -----------------------------------------------------------------------------------------
def _linearize_curves(runs: Sequence[RunStudies]) -> dict[str, tuple[list[float], list[list[float]],
                                                                      list[list[float]]]]:
    """mode -> (remaining fraction per target, accuracy per run per target, APL per run per target)."""
    out = {}
    results = [r.linearize for r in runs if r.linearize is not None]
    if not results:
        return out
    for mode in MODE_STYLE:
        targets = sorted({p.target_fraction for p in results[0].points if p.mode == mode}, reverse=True)
        points = [{p.target_fraction: p for p in res.points if p.mode == mode} for res in results]
        remaining = [statistics.fmean(pts[t].remaining_fraction for pts in points) for t in targets]
        accs = [[100 * pts[t].accuracy for t in targets] for pts in points]
        apls = [[pts[t].apl for t in targets] for pts in points]
        out[mode] = (remaining, accs, apls)
    return out


def plot_linearize(groups: Groups, path: Path) -> Path:
    """Accuracy against the fraction of nonlinear units kept, and against the average path length (the axis
    on which the 2022 paper compares the two modes; x is the mean APL over seeds at each target)."""
    fig, (acc_ax, apl_ax) = plt.subplots(1, 2, figsize=(12, 4.2))
    colors = _colors(list(groups))
    for label, runs in groups.items():
        results = [r.linearize for r in runs if r.linearize is not None]
        if not results:
            continue
        for mode, (remaining, accs, apls) in _linearize_curves(runs).items():
            style = dict(color=colors[label], linestyle=MODE_STYLE[mode], label=f"{label}, {mode}-wise")
            _errorbar(acc_ax, remaining, accs, **style)
            _errorbar(apl_ax, [statistics.fmean(a) for a in zip(*apls, strict=True)], accs, **style)
        baseline = 100 * mean_std([r.baseline_accuracy for r in results])[0]
        acc_ax.scatter([1.0], [baseline], color=colors[label], marker="*", s=80, zorder=3,
                       label=f"{label}, trained (all ReLU)")
        apl_ax.scatter([mean_std([r.baseline_apl for r in results])[0]], [baseline], color=colors[label],
                       marker="*", s=80, zorder=3)
    acc_ax.set(xlabel="fraction of nonlinear units kept", ylabel="test accuracy (%)",
               title="Partial linearisation: channel-wise (variable depth) vs layer-wise (fixed depth)")
    apl_ax.set(xlabel="average path length (nonlinearities on the average path)", ylabel="test accuracy (%)",
               title="Accuracy against average path length (normalised APL, 2022 paper)")
    acc_ax.invert_xaxis()
    for ax in (acc_ax, apl_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    acc_ax.title.set_fontsize(9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- effective depth during training -----------------------------------------------------------------------
def plot_depth_history(groups: Mapping[str, Sequence[Sequence[DepthSnapshot]]], path: Path) -> Path:
    """Mean path length and 90 % depth of the output over epochs per group; per-block branch/shortcut ratios
    of the first run that has shortcuts."""
    fig, (mean_ax, d90_ax, ratio_ax) = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = _colors(list(groups))
    ratio_run = None
    for label, histories in groups.items():
        histories = [h for h in histories if h]
        if not histories:
            continue
        epochs = [s.epoch for s in histories[0]]
        usable = [h for h in histories if [s.epoch for s in h] == epochs]
        _errorbar(mean_ax, epochs, [[s.paths.mean_length for s in h] for h in usable], color=colors[label],
                  label=label)
        _errorbar(d90_ax, epochs, [[s.paths.depth_explaining(0.9) for s in h] for h in usable],
                  color=colors[label], label=label)
        if ratio_run is None and any(not math.isnan(b.ratio) for b in histories[0][-1].blocks):
            ratio_run = (label, histories[0])
    if ratio_run is not None:
        label, history = ratio_run
        positions = [b.position for b in history[-1].blocks]
        cmap = plt.get_cmap("viridis")
        for i, position in enumerate(positions):
            points = [(s.epoch, b.ratio) for s in history for b in s.blocks if b.position == position]
            ratio_ax.plot(*zip(*points, strict=True), color=cmap(i / max(1, len(positions) - 1)),
                          label=f"block {i + 1}" if len(positions) <= 12 else None)
        ratio_ax.set_title(f"||branch|| / ||shortcut|| per block ({label}, first run; dark = early)",
                           fontsize=9)
        if len(positions) <= 12:
            ratio_ax.legend(fontsize=7, ncol=2)
    mean_ax.set(xlabel="epochs trained", ylabel="mean path length of the output",
                title="Effective depth: mean path length")
    d90_ax.set(xlabel="epochs trained", ylabel="shortest length explaining 90 %",
               title="Paths up to this length explain 90 % of J x0")
    ratio_ax.set(xlabel="epochs trained", ylabel="branch / shortcut norm")
    for ax in (mean_ax, d90_ax, ratio_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    mean_ax.legend(fontsize=8)
    d90_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- Markdown ----------------------------------------------------------------------------------------------
def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _row(name: str, groups: Groups, value: Callable[[RunStudies], float | None], percent: bool = False,
         digits: int = 2) -> list[str]:
    cells = []
    for runs in groups.values():
        values = [v for v in (value(r) for r in runs) if v is not None]
        cells.append(fmt(values, percent, digits) if values else "-")
    return [name, *cells]


def _mean_single(r: RunStudies) -> float | None:
    if r.lesion is None:
        return None
    pool = set(r.lesion.pool)
    accs = [s.accuracy for s in r.lesion.single if s.position in pool and s.accuracy is not None]
    return statistics.fmean(accs) if accs else None


def _worst_single(r: RunStudies) -> float | None:
    if r.lesion is None:
        return None
    accs = [s.accuracy for s in r.lesion.single if s.accuracy is not None]
    return min(accs) if accs else None


def _random_k(k: int) -> Callable[[RunStudies], float | None]:
    def value(r: RunStudies) -> float | None:
        if r.lesion is None or k not in r.lesion.random:
            return None
        return statistics.fmean(r.lesion.random[k])

    return value


def _gradient_mean_length(r: RunStudies) -> float | None:
    if r.gradient is None:
        return None
    return sum(k * s for k, s in zip(r.gradient.lengths, r.gradient.total_magnitude, strict=True))


def _linearize_value(mode: str, fraction: float, key: str) -> Callable[[RunStudies], float | None]:
    def value(r: RunStudies) -> float | None:
        if r.linearize is None:
            return None
        for p in r.linearize.points:
            if p.mode == mode and p.target_fraction == fraction:
                return getattr(p, key)
        return None

    return value


def write_report(out_dir: str | Path, groups: Groups, title: str, notes: Sequence[str] = ()) -> Path:
    """Plots for every study present and ``report.md`` with the numbers; returns the report's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = list(groups)
    seeds = max(len(runs) for runs in groups.values())
    lines = [f"# {title}", ""]
    lines += [*notes, ""] if notes else []
    lines.append(f"Numbers are mean ± standard deviation over {seeds} run(s) per column "
                 f"(seeds {sorted({r.seed for runs in groups.values() for r in runs})}).")
    lines.append("")
    header = ["", *labels]
    rows = [_row("test accuracy (whole test split)", groups, lambda r: r.test_accuracy, percent=True),
            ["models", *[", ".join(sorted({r.model for r in runs})) for runs in groups.values()]],
            _row("blocks", groups, lambda r: r.num_blocks, digits=0)]
    lines += ["## Summary", "", *_table(header, rows)]
    any_run = [r for runs in groups.values() for r in runs]

    if any(r.lesion is not None for r in any_run):
        plot_lesion(groups, out_dir / "lesion.png")
        ks = sorted({k for r in any_run if r.lesion is not None for k in r.lesion.random})
        rows = [_row("accuracy, intact (scored subset)", groups, lambda r: r.lesion and r.lesion.baseline,
                     True),
                _row("accuracy after deleting one shape-preserving block (mean over blocks)", groups,
                     _mean_single, True),
                _row("accuracy after the most harmful single deletion", groups, _worst_single, True)]
        rows += [_row(f"accuracy after deleting {k} random block(s)", groups, _random_k(k), True) for k in ks]
        lines += ["## Lesion study (Veit et al. 2016)", "", LESION_TEXT, "", "![lesion](lesion.png)", "",
                  *_table(header, rows)]

    if any(r.gradient is not None for r in any_run):
        plot_paths(groups, out_dir / "paths.png")
        rows = [_row("mean path length weighted by gradient share", groups, _gradient_mean_length),
                _row("mean path length of the output split", groups,
                     lambda r: r.output and r.output.mean_length),
                _row("shortest length explaining 90 % of J x0", groups,
                     lambda r: r.output and r.output.depth_explaining(0.9), digits=1),
                _row("mean branch / shortcut norm ratio", groups,
                     lambda r: _mean_ratio(r.norms) if r.norms else None)]
        lines += ["## Paths: lengths, gradient and output", "", PATHS_TEXT, "", "![paths](paths.png)", "",
                  *_table(header, rows)]

    if any(r.linearize is not None for r in any_run):
        plot_linearize(groups, out_dir / "linearize.png")
        fractions = sorted({p.target_fraction for r in any_run if r.linearize for p in r.linearize.points},
                           reverse=True)
        rows = [_row("trained network (all ReLU): accuracy", groups,
                     lambda r: r.linearize and r.linearize.baseline_accuracy, True)]
        rows += [_row(f"{mode}-wise, right after the penalty phase: accuracy", groups,
                      lambda r, mode=mode: r.linearize and r.linearize.penalised_accuracy.get(mode), True)
                 for mode in MODE_STYLE]
        for f in fractions:
            for mode in MODE_STYLE:
                rows.append(_row(f"{mode}-wise, {100 * f:g} % nonlinear units kept: accuracy", groups,
                                 _linearize_value(mode, f, "accuracy"), True))
                rows.append(_row(f"{mode}-wise, {100 * f:g} % kept: average path length", groups,
                                 _linearize_value(mode, f, "apl")))
        rows.append(_row("trained network (all ReLU): average path length", groups,
                         lambda r: r.linearize and r.linearize.baseline_apl))
        lines += ["## Partial linearisation (Mehmeti-Göpel et al. 2022, 2025)", "", LINEARIZE_TEXT, "",
                  "![linearize](linearize.png)", "", *_table(header, rows)]

    histories = {label: [r.history for r in runs if r.history] for label, runs in groups.items()}
    if any(histories.values()):
        plot_depth_history(histories, out_dir / "effective_depth.png")
        rows = [_row("final mean path length of the output", groups,
                     lambda r: r.history[-1].paths.mean_length if r.history else None),
                _row("before training", groups,
                     lambda r: r.history[0].paths.mean_length if r.history else None)]
        lines += ["## Effective depth during training", "", "![effective depth](effective_depth.png)", "",
                  *_table(header, rows)]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def _mean_ratio(norms) -> float | None:
    ratios = [n.ratio for n in norms if not math.isnan(n.ratio)]
    return statistics.fmean(ratios) if ratios else None
