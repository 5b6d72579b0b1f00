"""Evidence for ResBuilder (issues 5 and 19): does it find a network as accurate as fixed ResNets at half the cost?

On MNIST and on a class-balanced subset of the CIFAR-10 image folder (or the whole training sets), with
ResBuilder's one default configuration (the ``resbuilder`` section left empty), this script trains for each
seed

* ResBuilder (``reslab build``), starting from ResNet-8 (one block per stage),
* fixed CIFAR-style ResNet-8, -14, -20 and -32 (``reslab train``): ResNet-20 is the target's baseline, and
  together they trace the accuracy-against-MACs curve of plain depth choices (ResNet-56 on request),
* at the first scale, a hand-made fixed network under half ResNet-20's MACs (``narrow_early``: blocks 2/2/3,
  widths 8/24/64, narrow where the resolution is high), which shows whether the target can be met at all,

all with the same data subset (it depends on the seed only), recipe and number of epochs, then writes a
table of test accuracy, parameters, MACs and wall time, a plot of accuracy against MACs, and two verdicts:
the target (ResBuilder's mean accuracy at most 0.3 points below ResNet-20's, at no more than half its MACs)
and, seed by seed, ResBuilder against the fixed-depth curve read at the MACs it found.

    .venv/bin/python benchmarks/resbuilder_evidence.py                # 120 per class: about 30 min on 2 cores
    .venv/bin/python benchmarks/resbuilder_evidence.py --scale 5k     # 500 per class (CIFAR-10's 5,000 images)
    .venv/bin/python benchmarks/resbuilder_evidence.py --scale all    # the whole training sets, 12 epochs
    .venv/bin/python benchmarks/resbuilder_evidence.py --scale tiny   # a few minutes: checks that it all runs
    .venv/bin/python benchmarks/resbuilder_evidence.py --retrain      # also retrain each found spec afresh
    # more seeds for the two networks the verdict compares, then one report of every finished run:
    .venv/bin/python benchmarks/resbuilder_evidence.py --seeds 6 7 --methods resbuilder resnet20 --retrain
    .venv/bin/python benchmarks/resbuilder_evidence.py --retrain --all-finished
    # a ResBuilder variant on other seeds, without the fixed networks (judged against them only if present):
    .venv/bin/python benchmarks/resbuilder_evidence.py --seeds 3 4 --methods resbuilder --retrain \
        --set expand_widths=true --set width_lasso=0.08 --work runs/probe_expand

Runs go two at a time (``--jobs``), one CPU thread each, longest first; every run is a ``reslab`` process
whose folder lands in ``--work`` (default ``runs/resbuilder_evidence``), and a finished run (its
``summary.json`` exists) is not run again and an unfinished one continues from its last checkpoint, so an
interrupted evidence run resumes. Wall times are those of runs sharing the machine with one other run.
CIFAR-10 is unpacked from ``../shared/data`` into the work folder (never into the repository) and decoded
once (the decode is cached next to the images).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import matplotlib
from cifar_folder import unpack_cifar

import reslab
from reslab.analysis.frontier import curve_accuracy
from reslab.analysis.paired import paired
from reslab.builder.schedule import run_epochs
from reslab.spec import NetSpec
from reslab.train.config import config_from_dict

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
BASELINE = "resnet20"  # the target's baseline: within 0.3 points of it at no more than half its MACs
FIXED = ("resnet8", "resnet14", "resnet20", "resnet32", "resnet56")  # fixed depths, cheapest first: the curve
HAND = "narrow_early"  # a hand-made network under half ResNet-20's MACs: can the target be met at all?
METHODS = ("resbuilder", *FIXED, HAND)
# Relative cost of one training image-epoch, to start the longest runs first.
COST = {"resnet56": 10.0, "resnet32": 5.0, "resnet20": 3.0, "resnet14": 2.2, "resnet8": 1.2, "resbuilder": 2.0,
        "retrain": 1.5, HAND: 1.5}
ACCURACY_MARGIN = 0.003  # 0.3 points
MACS_FRACTION = 0.5

# ``full`` (the first evidence, 120 images per class) is sized so that it takes about half an hour on 2 CPU
# cores (bf16 autocast on a CPU with bf16 units; fp32 elsewhere, about 1.5x longer). ``5k`` and ``all`` are
# the larger data sizes a default must also hold on (500 images per class; the whole training sets, with a
# shorter schedule, the same for every network). Test sets are whole (at most 1,000 per class), so the
# accuracies' sampling error stays near 0.5 points.
SCALES = {
    "full": {"seeds": [0, 1, 2], "epochs": 30, "train_per_class": 120, "test_per_class": 1000, "batch_size": 64,
             "methods": list(METHODS)},
    "5k": {"seeds": [0, 1, 2], "epochs": 30, "train_per_class": 500, "test_per_class": 1000, "batch_size": 64,
           "methods": ["resbuilder", "resnet8", "resnet14", "resnet20", "resnet32"]},
    "all": {"seeds": [0, 1, 2], "epochs": 12, "train_per_class": None, "test_per_class": 1000, "batch_size": 64,
            "methods": ["resbuilder", "resnet8", "resnet14", "resnet20", "resnet32"]},
    "tiny": {"seeds": [0], "epochs": 8, "train_per_class": 10, "test_per_class": 10, "batch_size": 32,
             "methods": list(METHODS)},
}


@dataclass(frozen=True)
class Run:
    dataset: str
    method: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.dataset}_{self.method}_s{self.seed}"


def narrow_early_spec(in_chans: int) -> NetSpec:
    """ResNet-20's layout with blocks 2/2/3 and widths 8/24/64: the stem and first stage at half width, where
    each channel costs the most MACs (32x32 pixels), the last stage at full width (8x8). 0.49x ResNet-20's
    MACs on 32x32 and 28x28 inputs. Found by hand on this benchmark's seeds; a fixed point, not a search."""
    base = reslab.make_spec("resnet20").with_in_chans(in_chans)
    stages, channels = [], 8
    for template, width, blocks in zip(base.stages, (8, 24, 64), (2, 2, 3), strict=True):
        stage = []
        for index in range(blocks):
            block = template[min(index, 1)]  # the first block carries the stride and the shortcut
            stage.append(replace(block, in_chans=channels, widths=(width,), out_chans=width))
            channels = width
        stages.append(stage)
    return replace(base, name=HAND, stem=replace(base.stem, out_chans=8), stages=stages,
                   head=replace(base.head, in_chans=channels))


def overrides(run: Run, scale: dict, data_dirs: dict[str, Path], work: Path,
              resbuilder: Sequence[str] = ()) -> list[str]:
    """The ``--set`` list of a run: one recipe for every method, so only the architecture differs
    (``resbuilder``: settings of a ResBuilder variant, ``KEY=VALUE``, for its runs only)."""
    data = (["data.name=mnist", f"data.data_dir={data_dirs['mnist']}"] if run.dataset == "mnist"
            else ["data.name=imagefolder", f"data.data_dir={data_dirs['cifar10']}"])
    if run.method == "retrain":  # the spec ResBuilder found, trained from scratch
        found = work / "runs" / Run(run.dataset, "resbuilder", run.seed).name / "found_spec.json"
        model = ["model.name=null", f"model.spec={found}"]
    elif run.method == HAND:
        path = work / "specs" / f"{HAND}_{run.dataset}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        narrow_early_spec(1 if run.dataset == "mnist" else 3).save(path)
        model = ["model.name=null", f"model.spec={path}"]
    else:
        model = [f"model.name={'resnet8' if run.method == 'resbuilder' else run.method}"]
    epochs = resbuilder_epochs(scale["epochs"], resbuilder) if run.method == "resbuilder" else scale["epochs"]
    variant = [f"resbuilder.{item}" for item in resbuilder] if run.method == "resbuilder" else []
    return [
        *variant, f"name={run.name}", f"seed={run.seed}", *data, *model,
        f"data.train_per_class={scale['train_per_class'] or 'null'}", f"data.test_per_class={scale['test_per_class']}",
        "data.val_fraction=0.1", f"train.epochs={epochs}", f"train.batch_size={scale['batch_size']}",
        "train.precision=auto", "train.progress=plain", "optim.lr=0.05", "optim.weight_decay=5e-4",
        "schedule.name=cosine", "output.tensorboard=false", "output.keep_best=false",
        f"output.checkpoint_every={max(1, epochs // 5)}",
    ]


def resbuilder_epochs(epochs: int, resbuilder: Sequence[str] = ()) -> int:
    """ResBuilder's run length: its search, then ``epochs`` of training for the network it found, as long as
    every fixed network trains (``reslab.builder.run_epochs``; docs/resbuilder.md, "Larger training
    sets"). ``resbuilder``: the variant's ``KEY=VALUE`` settings, read as the run will read them."""
    config = config_from_dict({"resbuilder": {}}, [f"resbuilder.{item}" for item in resbuilder], "--set")
    return run_epochs(epochs, config.plugins["resbuilder"].search_fraction)


def execute(run: Run, args: list[str], work: Path) -> dict:
    """Run one ``reslab`` process (resuming its folder if a checkpoint is there); return its summary."""
    folder = work / "runs" / run.name
    summary = folder / "summary.json"
    if not summary.is_file():
        # A ResBuilder run resumes like any other: its folder's config holds the resbuilder section, and its
        # checkpoint the found-so-far spec and the search's state.
        resume = (folder / "last.safetensors").is_file()
        command = "build" if run.method == "resbuilder" and not resume else "train"
        cmd = [sys.executable, "-m", "reslab", command, "--out", str(work / "runs")]
        if resume:
            cmd += ["--resume", str(folder)]
        elif folder.exists():
            cmd += ["--overwrite"]
        for item in args:
            cmd += ["--set", item]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        log = work / "logs" / f"{run.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with open(log, "w") as out:
            done = subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise RuntimeError(f"{run.name} failed (exit {done.returncode}); see {log}")
        print(f"  {run.name}: done in {time.perf_counter() - start:.0f} s", flush=True)
    return json.loads(summary.read_text())


def finished(work: Path, datasets: Sequence[str]) -> dict[Run, dict]:
    """Every run in ``work`` with a summary, for ``datasets`` (names are ``<dataset>_<method>_s<seed>``)."""
    found = {}
    for summary in sorted((work / "runs").glob("*/summary.json")):
        dataset, _, rest = summary.parent.name.partition("_")
        method, _, seed = rest.rpartition("_s")
        if dataset in datasets and method in (*METHODS, "retrain") and seed.isdigit():
            found[Run(dataset, method, int(seed))] = json.loads(summary.read_text())
    return found


def mean(values: list[float]) -> float:
    return statistics.fmean(values)


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(results: dict[Run, dict], dataset: str, method: str) -> dict | None:
    by_seed = {r.seed: s for r, s in results.items() if r.dataset == dataset and r.method == method}
    rows = list(by_seed.values())
    if not rows:
        return None
    acc = [s["test_accuracy"] for s in rows]
    return {"runs": len(rows), "accuracy": mean(acc), "accuracy_std": spread(acc),
            "params": mean([s["params"] for s in rows]), "macs": mean([s["macs"] for s in rows]),
            "wall_time_s": mean([s["wall_time_s"] for s in rows]),
            "by_seed": {seed: s["test_accuracy"] for seed, s in by_seed.items()},
            "macs_by_seed": {seed: s["macs"] for seed, s in by_seed.items()},
            "blocks_per_stage": [s["blocks_per_stage"] for s in rows]}


def against(entry: dict, best: dict) -> dict:
    """How ``entry`` (an aggregate row) fares against the target set by ``best``, the baseline's row."""
    accuracy_ok = entry["accuracy"] >= best["accuracy"] - ACCURACY_MARGIN
    macs_ok = entry["macs"] <= MACS_FRACTION * best["macs"]
    return {"accuracy_gap_points": 100 * (entry["accuracy"] - best["accuracy"]),
            "macs_ratio": entry["macs"] / best["macs"], "params_ratio": entry["params"] / best["params"],
            "accuracy_ok": accuracy_ok, "macs_ok": macs_ok, "met": accuracy_ok and macs_ok}


JUDGED = ("resbuilder", "retrain")  # the network at the end of ResBuilder's run, and its spec from scratch


def verdict(table: dict[str, dict], method: str = "resbuilder") -> dict | None:
    """Judge ``method``'s row two ways (``None`` when the table lacks it or the baseline):

    * the target: within 0.3 points of ResNet-20 at no more than half its MACs;
    * where that misses, against the fixed-depth curve: seed by seed, the row's accuracy minus the curve of
      that seed's fixed networks read at the MACs it has (``reslab.analysis.curve_accuracy``), judged by the
      paired rule (``reslab.analysis.paired``). A network cheaper than every fixed one has no curve to be
      read against and is compared with the cheapest fixed network instead.
    """
    if method not in table or BASELINE not in table:
        return None
    best, found = table[BASELINE], table[method]
    seeds = sorted(found["by_seed"])
    # Seed by seed on the same data subset: the spread of the subsets cancels, what is left is the method's.
    common = [s for s in seeds if s in best["by_seed"]]
    paired_baseline = paired([100 * found["by_seed"][s] for s in common],
                             [100 * best["by_seed"][s] for s in common]) if common else None
    fixed = [m for m in FIXED if m in table]
    ours, curve, cheaper_than_all = [], [], 0
    for seed in seeds:
        points = [(table[m]["macs"], 100 * table[m]["by_seed"][seed]) for m in fixed if seed in table[m]["by_seed"]]
        if len(points) < 2:
            continue
        macs = found["macs_by_seed"][seed]
        at = curve_accuracy(points, macs)
        if at is None and macs < min(points)[0]:
            at, cheaper_than_all = min(points)[1], cheaper_than_all + 1
        if at is not None:
            ours.append(100 * found["by_seed"][seed])
            curve.append(at)
    return {"baseline": BASELINE, **against(found, best),
            "paired": None if paired_baseline is None else asdict(paired_baseline),
            "curve": None if not curve else {
                "fixed": fixed, "paired": asdict(paired(ours, curve)),
                "seeds_cheaper_than_every_fixed": cheaper_than_all}}


def seed_by_seed(p: dict) -> str:
    """``+1.00, -0.50; mean +0.25 ± 1.50 (2 SE): inconclusive`` for an ``asdict(Paired)``."""
    spread = "n/a" if p["se"] != p["se"] else f"{2 * p['se']:.2f}"  # nan with one seed
    return (f"{', '.join(f'{d:+.2f}' for d in p['diffs'])}; mean {p['mean']:+.2f} ± {spread} points (2 SE, "
            f"{len(p['diffs'])} seeds): **{p['verdict']}**")


def plot(results: dict[Run, dict], tables: dict[str, dict], path: Path) -> None:
    datasets = list(tables)
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4.2), dpi=100, squeeze=False)
    colours = {"resbuilder": "tab:green", "resnet8": "tab:cyan", "resnet14": "tab:purple", "resnet20": "tab:blue",
               "resnet32": "tab:brown", "resnet56": "tab:red", "retrain": "tab:olive", HAND: "tab:orange"}
    for ax, dataset in zip(axes[0], datasets, strict=True):
        table = tables[dataset]
        for method, colour in colours.items():
            runs = [(s["macs"] / 1e6, 100 * s["test_accuracy"]) for r, s in results.items()
                    if r.dataset == dataset and r.method == method]
            if not runs:
                continue
            ax.scatter(*zip(*runs, strict=True), color=colour, alpha=0.45, s=18)
            agg = table[method]
            ax.errorbar(agg["macs"] / 1e6, 100 * agg["accuracy"], yerr=100 * agg["accuracy_std"], fmt="o",
                        color=colour, markersize=8, capsize=3, label=method)
        fixed = sorted((table[m]["macs"] / 1e6, 100 * table[m]["accuracy"]) for m in FIXED if m in table)
        if fixed:
            ax.plot(*zip(*fixed, strict=True), color="grey", lw=0.8, alpha=0.7)  # the fixed-depth curve
        if BASELINE in table:
            best = table[BASELINE]
            # The target: at most half the best baseline's MACs, at most 0.3 points below its accuracy.
            ax.axvline(MACS_FRACTION * best["macs"] / 1e6, color="grey", ls="--", lw=0.8)
            ax.axhline(100 * (best["accuracy"] - ACCURACY_MARGIN), color="grey", ls=":", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("MMACs per image (log)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(dataset)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def report(results: dict[Run, dict], scale: dict, work: Path, total_s: float, resbuilder: Sequence[str]) -> str:
    tables = {}
    for dataset in sorted({r.dataset for r in results}):
        table = {m: aggregate(results, dataset, m) for m in (*METHODS, "retrain")}
        table = {m: t for m, t in table.items() if t is not None}
        table["verdicts"] = {m: verdict(table, m) for m in JUDGED}
        tables[dataset] = table
    plot(results, tables, work / "accuracy_vs_macs.png")
    settings = "the settings " + ", ".join(resbuilder) if resbuilder else "its default configuration"
    lines = [
        "# ResBuilder evidence", "",
        f"Seeds {sorted({r.seed for r in results})}; {scale['epochs']} epochs for every fixed network and for "
        f"the network ResBuilder finds (its run: {resbuilder_epochs(scale['epochs'], resbuilder)} epochs, the "
        f"search first); "
        f"{scale['train_per_class'] or 'all'} training and "
        f"{scale['test_per_class']} test images per class (10 % of the training ones held out for "
        f"validation); SGD lr 0.05, batch {scale['batch_size']}, cosine; ResBuilder from ResNet-8 with "
        f"{settings}. This invocation took {total_s / 60:.1f} min (runs already done are "
        f"reused); the runs' own wall times add up to {sum(s['wall_time_s'] for s in results.values()) / 60:.1f} "
        f"min of one core each.", "",
        "![accuracy vs MACs](accuracy_vs_macs.png)", "",
    ]
    for dataset, table in tables.items():
        lines += [f"## {dataset}", "",
                  "| method | runs | test accuracy (%) | params | MMACs | wall time (s) | blocks per stage |",
                  "|---|---|---|---|---|---|---|"]
        for method, t in table.items():
            if method == "verdicts":
                continue
            lines.append(f"| {method} | {t['runs']} | {100 * t['accuracy']:.2f} ± {100 * t['accuracy_std']:.2f} "
                         f"| {t['params'] / 1e3:.1f} k | {t['macs'] / 1e6:.2f} | {t['wall_time_s']:.0f} "
                         f"| {t['blocks_per_stage']} |")
        for method in JUDGED:
            v = table["verdicts"].get(method)
            if v is None:
                continue
            what = "ResBuilder (its run)" if method == "resbuilder" else "The found spec retrained from scratch"
            lines += ["", f"{what} against {BASELINE}: accuracy {v['accuracy_gap_points']:+.2f} points (target "
                      f">= -0.30: {'met' if v['accuracy_ok'] else 'NOT met'}), MACs x{v['macs_ratio']:.2f} (target "
                      f"<= 0.50: {'met' if v['macs_ok'] else 'NOT met'}), params x{v['params_ratio']:.2f}. "
                      f"**Target {'met' if v['met'] else 'not met'}.**"]
            if v["paired"] is not None:
                lines.append(f"Seed by seed, beats {BASELINE}: {seed_by_seed(v['paired'])}.")
            if v["curve"] is not None:
                c = v["curve"]
                cheap = (f" ({c['seeds_cheaper_than_every_fixed']} of the seeds below every fixed network's MACs, "
                         f"compared with the cheapest, {c['fixed'][0]})" if c["seeds_cheaper_than_every_fixed"]
                         else "")
                lines.append(f"Above the fixed-depth curve ({', '.join(c['fixed'])}, straight in log MACs) at its "
                             f"MACs{cheap}, seed by seed: {seed_by_seed(c['paired'])}.")
        if HAND in table and BASELINE in table:
            hand = against(table[HAND], table[BASELINE])
            lines += ["", f"The hand-made {HAND} (fixed): {hand['accuracy_gap_points']:+.2f} points at MACs "
                      f"x{hand['macs_ratio']:.2f}: target {'met' if hand['met'] else 'not met'} by a fixed "
                      f"architecture."]
        lines.append("")
    (work / "evidence.json").write_text(json.dumps(
        {"scale": scale, "tables": tables,
         "runs": {r.name: {k: s[k] for k in ("test_accuracy", "params", "macs", "wall_time_s",
                                              "blocks_per_stage")} for r, s in results.items()}},
        indent=1) + "\n")
    text = "\n".join(lines)
    (work / "evidence.md").write_text(text)
    return text


def per_class(text: str) -> int:
    """``--train-per-class``: a positive count, or ``all`` (0 here) for the whole training set."""
    if text == "all":
        return 0
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: give a positive count of images per class, or all")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--datasets", nargs="+", choices=["mnist", "cifar10"], default=["mnist", "cifar10"])
    parser.add_argument("--seeds", type=int, nargs="+", help="override the scale's seeds")
    parser.add_argument("--epochs", type=int, help="override the scale's epochs (the same for every method)")
    parser.add_argument("--train-per-class", type=per_class,
                        help="override the scale's training images per class (the larger calibration subset: 500)")
    parser.add_argument("--test-per-class", type=int, help="override the scale's test images per class")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one CPU thread each)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "resbuilder_evidence")
    parser.add_argument("--cifar-dir", type=Path, help="where to unpack CIFAR-10 (default: <work>/data)")
    parser.add_argument("--methods", nargs="+", choices=METHODS,
                        help="which networks to train (default: all)")
    parser.add_argument("--set", dest="resbuilder", action="append", default=[], metavar="KEY=VALUE",
                        help="a ResBuilder setting for a variant (repeatable; the evidence uses none)")
    parser.add_argument("--all-finished", action="store_true",
                        help="report every finished run in --work (other seeds, other methods), not only these")
    parser.add_argument("--retrain", action="store_true",
                        help="also train each found spec from scratch (architecture vs training history)")
    args = parser.parse_args()
    scale = dict(SCALES[args.scale])
    for key in ("seeds", "epochs", "test_per_class", "methods"):
        if getattr(args, key):
            scale[key] = getattr(args, key)
    if args.train_per_class is not None:
        scale["train_per_class"] = args.train_per_class or None  # 0: "all"
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    data_dirs = {"mnist": SHARED}
    if "cifar10" in args.datasets:
        data_dirs["cifar10"] = unpack_cifar((args.cifar_dir or work / "data" / "cifar10-jpg").resolve())

    start = time.perf_counter()
    runs = sorted((Run(d, m, s) for d in args.datasets for m in scale["methods"] for s in scale["seeds"]),
                  key=lambda r: -COST[r.method])
    print(f"resbuilder_evidence: {len(runs)} runs, {args.jobs} at a time; logs in {work / 'logs'}", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        summaries = list(pool.map(
            lambda r: execute(r, overrides(r, scale, data_dirs, work, args.resbuilder), work), runs))
    results = dict(zip(runs, summaries, strict=True))
    if args.retrain:
        again = [Run(r.dataset, "retrain", r.seed) for r in runs if r.method == "resbuilder"]
        with ThreadPoolExecutor(args.jobs) as pool:
            summaries = list(pool.map(lambda r: execute(r, overrides(r, scale, data_dirs, work), work), again))
        results.update(zip(again, summaries, strict=True))
    if args.all_finished:
        results.update(finished(work, args.datasets))
    print(report(results, scale, work, time.perf_counter() - start, args.resbuilder))
    print(f"\nwritten: {work / 'evidence.md'}, {work / 'evidence.json'}, {work / 'accuracy_vs_macs.png'}")


if __name__ == "__main__":
    main()
