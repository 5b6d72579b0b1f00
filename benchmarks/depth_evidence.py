"""Evidence for docs/depth.md: what does the shortcut buy, on MNIST and on the CIFAR-10 image folder?

For each dataset, ``reslab.analysis.compare`` trains ResNet-20 and its plain twin with one recipe for three
seeds, runs the lesion, path and linearisation studies on each and tracks effective depth while training;
then this script checks the papers' claims against the numbers and prints a verdict per claim.

    .venv/bin/python benchmarks/depth_evidence.py               # full: about an hour on 2 CPU cores
    .venv/bin/python benchmarks/depth_evidence.py --scale tiny  # a few minutes, checks that it all runs
    .venv/bin/python benchmarks/depth_evidence.py --publish     # also copy reports and plots to docs/depth/

Work goes to ``--work`` (default ``runs/depth_evidence``); an interrupted run resumes from its finished runs
and studies. CIFAR-10 is unpacked from ``../shared/data/cifar10-jpg/cifar10-jpg.tar.gz`` into the work folder
(never into the repository) and decoded once (the decode is cached next to the images).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from cifar_folder import unpack_cifar

from reslab.analysis import LinearizeConfig, StudyOptions, compare
from reslab.train.config import load_config

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"

# Sized so that the full run takes about an hour on 2 idle CPU cores: 2 datasets x 3 seeds x 2 twins of
# ResNet-20, about 360k training image passes in all (see planned_passes) at 100-150 images/s.
SCALES = {
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
                                path_images=8, path_samples=2, fractions=[0.5, 0.0], train_images=128,
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
        fractions = sorted({p["target_fraction"] for p in runs[0]["linearize"]["points"]}, reverse=True)
        for f in fractions:
            def acc(run: dict, mode: str, f: float = f) -> float:
                return next(p["accuracy"] for p in run["linearize"]["points"]
                            if p["mode"] == mode and p["target_fraction"] == f)

            diff = [acc(r, "channel") - acc(r, "layer") for r in runs]
            dm, ds = mean_sd(diff)
            verdict = "agrees" if dm - ds > 0 else ("disagrees" if dm + ds < 0 else "inconclusive")
            if f == 0.0:
                verdict = "n/a (both are the fully linear network)"
            out.append((f"Mehmeti-Göpel & Wand 2025: channel-wise (variable-depth) linearisation beats "
                        f"layer-wise (fixed-depth) at equal nonlinear units ({label}, {100 * f:g} % kept)",
                        f"channel − layer accuracy: {show(diff, unit=' points')}", verdict))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=list(SCALES), default="full")
    parser.add_argument("--datasets", nargs="+", choices=["mnist", "cifar10"], default=["mnist", "cifar10"])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "depth_evidence")
    parser.add_argument("--publish", action="store_true", help="copy reports and plots to docs/depth/")
    args = parser.parse_args()
    scale = SCALES[args.scale]
    work = args.work / args.scale
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{(time.perf_counter() - start) / 60:6.1f} min] {message}", flush=True)

    log(f"scale {args.scale}: {planned_passes(scale, args.datasets)} training image passes planned "
        f"(plus evaluation); work folder {work}")
    verdicts = {}
    for dataset in args.datasets:
        config = load_config(None, training_overrides(dataset, scale, work))
        out_dir = work / dataset
        report = compare(config, scale["seeds"], out_dir, options=scale["options"], log=log)
        results = json.loads((out_dir / "compare.json").read_text())
        verdicts[dataset] = claims(results)
        log(f"{dataset}: report {report}")
        if args.publish:
            target = REPO / "docs" / "depth" / dataset
            target.mkdir(parents=True, exist_ok=True)
            # The raw compare.json (about 150 kB per dataset) stays in the work folder.
            for name in ("report.md", "lesion.png", "paths.png", "linearize.png", "effective_depth.png"):
                shutil.copy2(out_dir / name, target / name)
    minutes = (time.perf_counter() - start) / 60
    lines = ["# Depth evidence: the papers' claims against the measurements", "",
             f"Scale `{args.scale}`, seeds {scale['seeds']}, {minutes:.1f} min.", ""]
    for dataset, rows in verdicts.items():
        lines += [f"## {dataset}", "", "| claim | measured (mean ± sd over seeds) | verdict |",
                  "|---|---|---|"]
        lines += [f"| {c} | {m} | {v} |" for c, m, v in rows] + [""]
    text = "\n".join(lines) + "\n"
    print(text)
    (work / "claims.md").write_text(text)
    if args.publish:
        (REPO / "docs" / "depth" / "claims.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
