"""Evidence for transfer learning (issue 16): does fine-tuning a pretrained ResNet beat training from scratch
when only a few images per class are labelled?

On the CIFAR-10 image folder this script

1. pretrains ResNet-20 (CIFAR-style, 0.27 M parameters) on classes 0-4 (airplane, automobile, bird, cat, deer:
   all 25,000 training images), 18 epochs, SGD (lr 0.1, 1 warm-up epoch) + cosine, with ``reslab train``;
2. for 10, 50 and 250 training images per class of classes 5-9 (dog, frog, horse, ship, truck) and seeds
   0, 1, 2 trains two ResNet-20s with the same budget (epochs, batch size, learning rate and schedule):
   * ``finetune``: ``model.init_from`` the pretrained model file (a new classifier, since the classes differ),
     ``train.freeze: backbone`` for the first half of the epochs, then everything at
     ``optim.backbone_lr_mult: 0.1``;
   * ``scratch``: the same network from a random initialisation;
3. reports the test accuracy on all 5,000 test images of classes 5-9 (mean +- std over the seeds) and the
   wall times, as a markdown table (``--report``, written to ``<work>/transfer_table.md``).

    .venv/bin/python benchmarks/transfer_evidence.py             # everything (about 1 h on 2 shared CPU cores)
    .venv/bin/python benchmarks/transfer_evidence.py --methods scratch   # needs no pretraining: run it alongside
    .venv/bin/python benchmarks/transfer_evidence.py --jobs 1 --sizes 10 --seeds 0   # one cell of the table

Every run is a ``reslab train`` process (one CPU thread) whose folder lands in ``--work`` (default
``runs/transfer``); a finished run (its ``summary.json`` exists) is not run again and an interrupted pretraining
resumes from its last checkpoint. CIFAR-10 is unpacked from ``../shared/data`` into the work folder.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cifar_folder import unpack_cifar

REPO = Path(__file__).resolve().parents[1]
SOURCE_CLASSES = ("airplane", "automobile", "bird", "cat", "deer")  # CIFAR-10 classes 0-4
TARGET_CLASSES = ("dog", "frog", "horse", "ship", "truck")  # classes 5-9
PRETRAIN = ["model.name=resnet20", "train.epochs=18", "schedule.warmup_epochs=1", "data.val_fraction=0"]
# Per images-per-class: (batch size, epochs); the same for both methods. Small sets get more epochs.
BUDGET = {10: (16, 60), 50: (32, 40), 250: (64, 30)}
METHODS = ("finetune", "scratch")


def class_subset(cifar: Path, folder: Path, classes: tuple[str, ...]) -> Path:
    """An image folder holding only ``classes`` (links to the unpacked CIFAR-10 class folders)."""
    for part in ("train", "test"):
        (folder / part).mkdir(parents=True, exist_ok=True)
        for name in classes:
            link = folder / part / name
            if not link.exists():
                link.symlink_to((cifar / part / name).resolve())
    return folder


def reslab_train(name: str, out: Path, settings: list[str], log: Path) -> dict:
    """One ``reslab train`` run in ``out/name`` (resumed when it has a checkpoint); its summary."""
    run = out / name
    if not (run / "summary.json").is_file():
        resume = ["--resume", str(run)] if (run / "last.safetensors").is_file() else ["--overwrite"]
        command = [sys.executable, "-m", "reslab", "train", "--out", str(out), "--set", f"name={name}",
                   *(x for s in settings for x in ("--set", s)), *resume]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
        with open(log, "w") as out:
            done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        if done.returncode:
            sys.exit(f"{name} failed; see {log}")
    return json.loads((run / "summary.json").read_text())


def finetune_settings(method: str, per_class: int, seed: int, target: Path, pretrained: Path) -> list[str]:
    batch, epochs = BUDGET[per_class]
    common = [
        f"seed={seed}", "data.name=imagefolder", f"data.data_dir={target}", "data.val_fraction=0",
        f"data.train_per_class={per_class}", "model.name=resnet20", f"train.epochs={epochs}",
        f"train.batch_size={batch}", "optim.lr=0.05", "schedule.name=cosine", "train.progress=plain",
        "data.num_workers=0", "output.tensorboard=false", "output.keep_best=false", "output.checkpoint_every=10",
    ]
    if method == "scratch":
        return common
    return [*common, f"model.init_from={pretrained}", "train.freeze=backbone", f"train.unfreeze_epoch={epochs // 2}",
            "optim.backbone_lr_mult=0.1"]


def table(rows: dict[tuple[str, int], list[dict]], pretrain: dict, cpu: str) -> str:
    def cell(runs: list[dict]) -> str:
        accs = [100 * r["test_accuracy"] for r in runs]
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        return f"{statistics.mean(accs):.2f} ± {spread:.2f} (n={len(accs)})"

    def wall(runs: list[dict]) -> str:
        return f"{statistics.mean(r['wall_time_s'] for r in runs):.0f} s"

    lines = [
        f"Pretraining: ResNet-20 on classes 0-4 ({pretrain['epochs']} epochs): test accuracy "
        f"{100 * pretrain['test_accuracy']:.2f} % on their 5,000 test images, wall time "
        f"{pretrain['wall_time_s'] / 60:.1f} min ({cpu}, one thread, bf16 autocast, channels_last).",
        "",
        "| images per class | fine-tuned: test acc. % | from scratch: test acc. % | difference (points) | "
        "wall time per run (fine-tune / scratch) |",
        "|---|---|---|---|---|",
    ]
    for per_class in sorted({k[1] for k in rows}):
        ft, sc = rows.get(("finetune", per_class), []), rows.get(("scratch", per_class), [])
        if not ft or not sc:
            continue
        diff = statistics.mean(r["test_accuracy"] for r in ft) - statistics.mean(r["test_accuracy"] for r in sc)
        lines.append(f"| {per_class} | {cell(ft)} | {cell(sc)} | {100 * diff:+.2f} | {wall(ft)} / {wall(sc)} |")
    return "\n".join(lines) + "\n"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "transfer")
    parser.add_argument("--sizes", type=int, nargs="+", default=sorted(BUDGET), choices=sorted(BUDGET))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                        help="scratch alone needs no pretraining (it can run while the pretraining does)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one CPU thread each)")
    parser.add_argument("--report", action="store_true", help="only tabulate the finished runs")
    args = parser.parse_args()
    work = args.work.resolve()
    cifar = unpack_cifar(work / "cifar")
    source = class_subset(cifar, work / "src5", SOURCE_CLASSES)
    target = class_subset(cifar, work / "tgt5", TARGET_CLASSES)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pretrain_settings = ["data.name=imagefolder", f"data.data_dir={source}", "train.progress=plain",
                         "data.num_workers=0", *PRETRAIN]
    runs = [(m, n, s) for n in args.sizes for s in args.seeds for m in args.methods]
    rows: dict[tuple[str, int], list[dict]] = {}
    pretrained = work / "pretrain_src5" / "model.safetensors"
    if not args.report:
        if "finetune" in args.methods:
            reslab_train("pretrain_src5", work, pretrain_settings, logs / "pretrain.log")
        # The first run decodes the target folder into its cache; the others then read the cache.
        first, *rest = sorted(runs, key=lambda r: -r[1])

        def go(run: tuple[str, int, int]) -> tuple[tuple[str, int, int], dict]:
            method, n, seed = run
            name = f"{method}_n{n}_s{seed}"
            settings = finetune_settings(method, n, seed, target, pretrained)
            return run, reslab_train(name, work / "ft", settings, logs / f"{name}.log")

        results = [go(first)]
        with ThreadPoolExecutor(args.jobs) as pool:
            results += list(pool.map(go, rest))
    else:
        results = []
        for method, n, seed in runs:
            summary = work / "ft" / f"{method}_n{n}_s{seed}" / "summary.json"
            if summary.is_file():
                results.append(((method, n, seed), json.loads(summary.read_text())))
    for (method, n, _), summary in results:
        rows.setdefault((method, n), []).append(summary)
    if not (work / "pretrain_src5" / "summary.json").is_file():
        return
    pretrain = json.loads((work / "pretrain_src5" / "summary.json").read_text())
    text = table(rows, pretrain, cpu_name())
    (work / "transfer_table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
