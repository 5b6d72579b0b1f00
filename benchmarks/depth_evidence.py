"""Evidence for docs/depth.md: what does the shortcut buy, on MNIST and on the CIFAR-10 image folder?

For each dataset, ``reslab.analysis.compare`` trains ResNet-20 and its plain twin with one recipe for three
seeds, runs the lesion, path and linearisation studies on each and tracks effective depth while training;
then this script checks the papers' claims against the numbers and prints a verdict per claim.

Linearisation is compared as the sources compare it (Mehmeti-Göpel & Disselhoff, arXiv 2211.17180): channel-
wise against layer-wise (a) at equal counts of nonlinear units and (b) at equal *average path length* (APL),
each seed's curve of accuracy against APL interpolated on the APL range both modes cover
(``reslab.analysis.apl``), seed by seed, for the residual network and its plain twin. Verdicts use the paired
rule of ``reslab.analysis.paired``: holds when mean - 2 SE > 0, contradicted when mean + 2 SE < 0, else
inconclusive. It also reports whether the fully nonlinear network's accuracy is recovered after the penalty
phase (right after it, and after fine-tuning with every unit kept), and plots accuracy against APL.

Scales:

* ``apl`` (default): ResNet-20 and its plain twin, MNIST 500 and CIFAR-10 1,000 training images per class
  (10 % of them val), 15 epochs, cosine lr from 0.1, 3 seeds; linearisation on 2,000 training images with 10
  penalty epochs (lambda 1e-4, ``APL_PENALTY``; weights at lr 0.001, ``APL_LR``) and 3 fine-tuning epochs per
  point, fractions 1, 0.5, 0.3, 0.2, 0.1, 0.05, 0; studies on 1,000 test images.
* ``full``: the previous design (8 epochs, 2 penalty epochs and 1 fine-tuning epoch, equal unit counts only).
* ``tiny``: a few minutes, checks that it all runs.

Budget of ``apl`` (measured 2026-12-03 on the Xeon with AMX-BF16, 1 torch thread, fp32, batch 128, while two
other training processes shared the 2 cores): training ResNet-20 or its plain twin runs at about 350
images/s, the linearisation's penalty and fine-tuning steps at about 270 images/s. ``planned_passes`` counts
1.15 M passes for MNIST (twins 0.41 M, linearisation 0.74 M) and 1.55 M for CIFAR-10 (0.81 M + 0.74 M):
about 65 and 85 minutes of training, plus the lesion and path studies, so about 1.2 and 1.6 hours on one core.
Run the two datasets side by side, one thread each, to use both cores:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/depth_evidence.py --datasets mnist &
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/depth_evidence.py --datasets cifar10
    .venv/bin/python benchmarks/depth_evidence.py --publish     # then: reuses both, writes docs/depth/apl/
    .venv/bin/python benchmarks/depth_evidence.py --scale tiny  # a few minutes, checks that it all runs

Work goes to ``--work`` (default ``runs/depth_evidence``)/<scale> (``<scale>_lr<rate>`` with ``--apl-lr``), and
``--publish`` copies each dataset's report and plots, and the verdicts, to ``docs/depth/`` under the same
name (``claims.md`` for both datasets, ``claims_<dataset>.md`` for one); an interrupted run resumes from its
finished runs and studies. CIFAR-10 is unpacked from ``../shared/data/cifar10-jpg/cifar10-jpg.tar.gz`` into
the work folder (never into the repository) and decoded once (the decode is cached next to the images).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from cifar_folder import unpack_cifar

from reslab.analysis import LinearizeConfig, StudyOptions, compare
from reslab.analysis.apl import accuracy_at, common_grid, compare_at_equal_apl
from reslab.analysis.paired import CONTRADICTED, HOLDS, paired
from reslab.train.config import load_config

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"

RECOVERY_TOLERANCE = 1.0  # accuracy points a recovered network may still be below the trained one
APL_GRID_POINTS = 5  # equal-APL comparison points, evenly spread over the range both modes cover
FRACTIONS_APL = [1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.0]
# The penalty of the equal-APL design. LinearizeConfig's 1e-3 suits its 2 penalty epochs; over 10 it pushed
# half the units to exactly linear before any was fixed (MNIST, ResNet-20, seed 0: 38-49 % still nonlinear,
# 94-95 % against the trained 98.1 %, and 1.3-2.9 points short after fine-tuning at fraction 1 over three
# seeds), so the curves started from a damaged network. At 1e-4, 72 % stay nonlinear and fraction 1 comes
# back to 98.1 % (layer) and 97.3 % (channel) after fine-tuning.
APL_PENALTY = 1e-4
# The weights' learning rate of the penalty and fine-tuning epochs. LinearizeConfig's 0.01 restarts a network
# whose schedule ended near 0 and trains it on a few thousand unaugmented images: on CIFAR-10 (ResNet-20, seed 0)
# that alone, with no penalty at all, took the fully nonlinear network from 71.3 % to 66.9 % (13 epochs on
# 2,000 images), and every twin and mode ended 3.5-5.2 points short at fraction 1 over three seeds. At 0.001,
# the scale a cosine schedule ends at, the same seed came back to 70.6-70.9 % with the penalty on.
APL_LR = 1e-3
SCALES = {
    # The equal-APL design (see the module docstring for its budget).
    "apl": {
        "seeds": [0, 1, 2],
        "train": {"mnist": {"train_per_class": 500, "epochs": 15},
                  "cifar10": {"train_per_class": 1000, "epochs": 15}},
        "test_per_class": 200,
        "options": StudyOptions(images=1000, lesion_samples=5, path_images=32, path_samples=6,
                                fractions=FRACTIONS_APL, train_images=2000,
                                linearize=LinearizeConfig(penalty_epochs=10, finetune_epochs=3,
                                                          penalty=APL_PENALTY, lr=APL_LR)),
    },
    # The previous design: about an hour on 2 idle CPU cores, about 360k training image passes in all.
    "full": {
        "seeds": [0, 1, 2],
        "train": {"mnist": {"train_per_class": 250, "epochs": 5},
                  "cifar10": {"train_per_class": 400, "epochs": 8}},
        "test_per_class": 200,
        "options": StudyOptions(images=500, lesion_samples=5, path_images=32, path_samples=6,
                                fractions=[0.5, 0.2, 0.05, 0.0], train_images=800,
                                linearize=LinearizeConfig(penalty_epochs=2, finetune_epochs=1)),
    },
    "tiny": {
        "seeds": [0, 1],
        "train": {"mnist": {"train_per_class": 20, "epochs": 1},
                  "cifar10": {"train_per_class": 20, "epochs": 1}},
        "test_per_class": 10,
        "options": StudyOptions(images=100, batch_size=100, lesion_samples=2, lesion_ks=[1, 2, 3],
                                path_images=8, path_samples=2, fractions=[1.0, 0.5, 0.0], train_images=128,
                                linearize=LinearizeConfig(penalty_epochs=1, finetune_epochs=1)),
    },
}


def planned_passes(scale: dict, datasets: list[str]) -> int:
    """Training image passes (forward + backward) of the whole run: the twins' training (90 % of the subset,
    the rest is val) and the linearisation's penalty and fine-tuning epochs, both modes."""
    options = scale["options"]
    lin = options.linearize
    per_study = 2 * options.train_images * (lin.penalty_epochs + len(options.fractions) * lin.finetune_epochs)
    total = 0
    for dataset in datasets:
        train = scale["train"][dataset]
        per_run = int(0.9 * 10 * train["train_per_class"]) * train["epochs"]
        total += 2 * len(scale["seeds"]) * (per_run + per_study)
    return total


def training_overrides(dataset: str, scale: dict, work: Path) -> list[str]:
    train = scale["train"][dataset]
    data = (["data.name=mnist", f"data.data_dir={SHARED}"] if dataset == "mnist"
            else ["data.name=imagefolder", f"data.data_dir={unpack_cifar(work / 'data' / 'cifar10-jpg')}"])
    return [*data, f"data.train_per_class={train['train_per_class']}",
            f"data.test_per_class={scale['test_per_class']}", "data.val_fraction=0.1",
            "model.name=resnet20", f"train.epochs={train['epochs']}", "train.batch_size=128",
            "train.progress=plain", "train.precision=fp32", "optim.lr=0.1", "schedule.name=cosine",
            "output.tensorboard=false"]


# -- the papers' claims, checked against the numbers ---------------------------------------------------------
def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def show(values: list[float], scale: float = 100.0, unit: str = " %") -> str:
    m, s = mean_sd(values)
    return f"{scale * m:.1f} ± {scale * s:.1f}{unit}"


def claims(results: dict[str, list[dict]]) -> list[tuple[str, str, str]]:
    """(claim, what was measured, verdict) for each claim the studies can test."""
    res, plain = results["residual"], results["plain"]
    out = []

    def single_drop(run: dict) -> float:
        les = run["lesion"]
        pool = {tuple(p) for p in les["pool"]}
        accs = [s["accuracy"] for s in les["single"] if tuple(s["position"]) in pool]
        return les["baseline"] - statistics.fmean(accs)

    r_drop, p_drop = [single_drop(r) for r in res], [single_drop(r) for r in plain]
    (rm, rs), (pm, ps) = mean_sd(r_drop), mean_sd(p_drop)
    verdict = "agrees" if rm + 2 * rs < pm - 2 * ps else ("disagrees" if rm >= pm else "inconclusive")
    out.append(("Veit 2016: deleting one shape-preserving block barely hurts a ResNet but ruins a plain net",
                f"accuracy lost: residual {show(r_drop)}, plain {show(p_drop)}", verdict))

    ks = sorted({int(k) for r in res for k in r["lesion"]["random"]})
    if len(ks) >= 3:
        curve = [statistics.fmean(statistics.fmean(r["lesion"]["random"][str(k)]) for r in res) for k in ks]
        steps = [a - b for a, b in zip(curve, curve[1:], strict=False)]
        total = curve[0] - curve[-1]
        smooth = total > 0 and max(steps) <= 0.5 * total
        out.append(("Veit 2016: a ResNet's accuracy falls smoothly as more random blocks are deleted",
                    "mean accuracy for k = " + ", ".join(f"{k}: {100 * a:.1f} %" for k, a in zip(ks, curve,
                                                                                          strict=True)),
                    "agrees" if smooth else "disagrees"))

    n = res[0]["num_blocks"]
    grad_len = [sum(k * s for k, s in zip(r["gradient"]["lengths"], r["gradient"]["total_magnitude"],
                                          strict=True)) for r in res]
    gm, gs = mean_sd(grad_len)
    out.append(("Veit 2016: the gradient comes mainly from paths shorter than the typical path (n/2)",
                f"gradient-weighted mean path length {gm:.2f} ± {gs:.2f} of {n} blocks (paths: mean {n / 2})",
                "agrees" if gm + gs < n / 2 else ("disagrees" if gm - gs > n / 2 else "inconclusive")))

    out_len = [r["output"]["mean_length"] for r in res]
    om, osd = mean_sd(out_len)
    out.append(("Effective depth: a ResNet's output is made mostly by paths much shorter than its depth",
                f"output-weighted mean path length {om:.2f} ± {osd:.2f} of {n} blocks",
                "agrees" if om + osd < n / 2 else ("disagrees" if om - osd > n / 2 else "inconclusive")))

    for label, runs in (("residual", res), ("plain", plain)):
        out += linearisation_claims(label, runs)
    return out


def _curve(run: dict, mode: str) -> list[tuple[float, float]]:
    return [(p["apl"], p["accuracy"]) for p in run["linearize"]["points"] if p["mode"] == mode]


def linearisation_claims(label: str, runs: list[dict]) -> list[tuple[str, str, str]]:
    """Channel-wise vs layer-wise linearisation of one twin: at equal unit counts (per fraction kept) and at
    equal APL (on the APL grid both modes cover), paired over seeds."""
    claim = ("Mehmeti-Göpel & Wand 2025: channel-wise (variable-depth) linearisation beats layer-wise "
             f"(fixed-depth) ({label}, {{}})")
    out = []
    fractions = sorted({p["target_fraction"] for p in runs[0]["linearize"]["points"]}, reverse=True)
    for f in fractions:
        def acc(run: dict, mode: str, f: float = f) -> float:
            return next(p["accuracy"] for p in run["linearize"]["points"]
                        if p["mode"] == mode and p["target_fraction"] == f)

        diff = paired([100 * acc(r, "channel") for r in runs], [100 * acc(r, "layer") for r in runs])
        verdict = "n/a (both are the fully linear network)" if f == 0.0 else diff.verdict
        out.append((claim.format(f"equal units, {100 * f:g} % kept"),
                     f"channel − layer accuracy: {diff.show(unit=' points')}", verdict))
    equal = compare_at_equal_apl([_curve(r, "channel") for r in runs], [_curve(r, "layer") for r in runs],
                                 APL_GRID_POINTS)
    for point in equal:
        diff = paired([100 * a for a in point.a], [100 * b for b in point.b])
        verdict = "n/a (both are the fully linear network)" if point.apl == 0.0 else diff.verdict
        out.append((claim.format(f"equal APL {point.apl:.2f}"),
                    f"channel − layer accuracy: {diff.show(unit=' points')}", verdict))
    if not equal:
        out.append((claim.format("equal APL"), "the two modes' APL ranges do not overlap", "inconclusive"))
    return out


def recovery(results: dict[str, list[dict]]) -> list[tuple[str, str, str]]:
    """Is the fully nonlinear network's accuracy recovered after the penalty phase? Right after it, and after
    fine-tuning with every unit kept (fraction 1, when measured), against the trained network, paired over
    seeds: "recovered" when the drop is at most RECOVERY_TOLERANCE points even at its upper end (mean + 2 SE),
    "not recovered" when it exceeds the tolerance even at its lower end (mean - 2 SE), else "inconclusive".
    (A drop that is real but inside the tolerance is recovered: the tolerance says how close is close.)"""
    rows = []
    for label, runs in results.items():
        base = [100 * r["linearize"]["baseline_accuracy"] for r in runs]
        for mode in ("channel", "layer"):
            stages = {}
            penalised = [r["linearize"].get("penalised_accuracy", {}).get(mode) for r in runs]
            if None not in penalised:  # studies saved before it was recorded have none
                stages["after the penalty phase"] = [100 * a for a in penalised]
            kept = [[100 * p["accuracy"] for p in r["linearize"]["points"]
                     if p["mode"] == mode and p["target_fraction"] == 1.0] for r in runs]
            if all(kept):
                stages["fine-tuned, all units kept"] = [k[0] for k in kept]
            for stage, accs in stages.items():
                drop = paired(base, accs)
                verdict = {HOLDS: f"recovered (drop + 2 SE <= {RECOVERY_TOLERANCE:g} point)",
                           CONTRADICTED: f"not recovered (drop - 2 SE > {RECOVERY_TOLERANCE:g} point)",
                           }.get(drop.at_most(RECOVERY_TOLERANCE), "inconclusive")
                rows.append((f"{label}, {mode}-wise, {stage}",
                             f"trained {statistics.fmean(base):.2f} %, then {statistics.fmean(accs):.2f} % "
                             f"(drop {drop.show(unit=' points')})", verdict))
    return rows


def plot_apl(results: dict[str, list[dict]], path: Path) -> None:
    """Accuracy against APL: each seed's points (faint) and the seeds' mean on the common APL grid, per twin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2), squeeze=False)
    colors = {"channel": "#d62728", "layer": "#1f77b4"}
    for ax, (label, runs) in zip(axes[0], results.items(), strict=True):
        for mode, color in colors.items():
            curves = [_curve(r, mode) for r in runs]
            for c in curves:
                xs, ys = zip(*sorted(c), strict=True)
                ax.plot(xs, [100 * y for y in ys], color=color, alpha=0.25, marker=".", linewidth=0.8)
            grid = common_grid(curves, 25)
            mean = [100 * statistics.fmean(accuracy_at(c, x) for c in curves) for x in grid]
            ax.plot(grid, mean, color=color, linewidth=2, label=f"{mode}-wise (mean of seeds)")
        ax.scatter([r["linearize"]["baseline_apl"] for r in runs],
                   [100 * r["linearize"]["baseline_accuracy"] for r in runs], color="k", marker="*", s=60,
                   label="trained (all ReLU)", zorder=3)
        ax.set(xlabel="average path length (nonlinearities on the average path)", ylabel="test accuracy (%)",
               title=f"{label}: accuracy against APL")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=list(SCALES), default="apl")
    parser.add_argument("--datasets", nargs="+", choices=["mnist", "cifar10"], default=["mnist", "cifar10"])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "depth_evidence")
    parser.add_argument("--publish", action="store_true", help="copy reports and plots to docs/depth/<scale>/")
    parser.add_argument("--apl-lr", type=float, help=f"the linearisation's weights' learning rate "
                        f"(default: the scale's; apl: {APL_LR}); runs at another rate go to their own work folder")
    args = parser.parse_args()
    scale = dict(SCALES[args.scale])
    name = args.scale
    if args.apl_lr is not None:
        options = scale["options"]
        scale["options"] = dataclasses.replace(
            options, linearize=dataclasses.replace(options.linearize, lr=args.apl_lr))
        name = f"{args.scale}_lr{args.apl_lr:g}"
    work = args.work / name
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{(time.perf_counter() - start) / 60:6.1f} min] {message}", flush=True)

    log(f"scale {args.scale}: {planned_passes(scale, args.datasets)} training image passes planned "
        f"(plus evaluation); work folder {work}")
    verdicts, recovered = {}, {}
    for dataset in args.datasets:
        config = load_config(None, training_overrides(dataset, scale, work))
        out_dir = work / dataset
        report = compare(config, scale["seeds"], out_dir, options=scale["options"], log=log)
        results = json.loads((out_dir / "compare.json").read_text())
        verdicts[dataset] = claims(results)
        recovered[dataset] = recovery(results)
        plot_apl(results, out_dir / "linearize_apl.png")
        log(f"{dataset}: report {report}, accuracy against APL {out_dir / 'linearize_apl.png'}")
        if args.publish:
            target = REPO / "docs" / "depth" / name / dataset
            target.mkdir(parents=True, exist_ok=True)
            # The raw compare.json (about 150 kB per dataset) stays in the work folder.
            for file_name in ("report.md", "lesion.png", "paths.png", "linearize.png", "linearize_apl.png",
                              "effective_depth.png"):
                shutil.copy2(out_dir / file_name, target / file_name)
    minutes = (time.perf_counter() - start) / 60
    lines = ["# Depth evidence: the papers' claims against the measurements", "",
             f"Scale `{name}`, seeds {scale['seeds']}, {minutes:.1f} min.", ""]
    for dataset, rows in verdicts.items():
        lines += [f"## {dataset}", "", "Lesion and path claims: mean ± sd over seeds, with each claim's own rule; "
                  "linearisation: paired per-seed differences, mean ± 2 SE (holds when mean − 2 SE > 0, "
                  "contradicted when mean + 2 SE < 0, else inconclusive).", "",
                  "| claim | measured | verdict |", "|---|---|---|"]
        lines += [f"| {c} | {m} | {v} |" for c, m, v in rows] + [""]
        lines += [f"### {dataset}: is the fully nonlinear accuracy recovered after the penalty phase?", "",
                  "| twin, mode, stage | test accuracy (mean over seeds) | verdict |", "|---|---|---|"]
        lines += [f"| {c} | {m} | {v} |" for c, m, v in recovered[dataset]] + [""]
    text = "\n".join(lines) + "\n"
    print(text)
    both = set(args.datasets) == {"mnist", "cifar10"}
    claims_name = "claims.md" if both else f"claims_{args.datasets[0]}.md"
    (work / claims_name).write_text(text)
    if args.publish:
        (REPO / "docs" / "depth" / name / claims_name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
