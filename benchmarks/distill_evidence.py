"""Evidence for knowledge distillation (issue 17): does a ResNet-56 teacher help small students?

On a fixed class-balanced subset of the CIFAR-10 image folder (the first ``--per-class`` training images of
each class, so every run sees the same images; all 10,000 test images), this script trains

* the teacher, ResNet-56, once (or takes ``--teacher``),
* for each seed, each student (ResNet-20, and a network ResBuilder found: docs/deploy/resbuilder_found_spec.json)
  without and with distillation (``distill.teacher``, T = 4, alpha = 0.9), same recipe and epochs,

then prints a table of test accuracy, mean ± std over the seeds, and the KD - no-KD difference per student.

    .venv/bin/python benchmarks/distill_evidence.py --work runs/distill --epochs 10 --seeds 0 1 2

Runs go one at a time, one CPU thread each; a finished run (its ``summary.json`` exists) is not run again,
so an interrupted evidence run resumes, and ``--table`` only reports what has finished.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from cifar_folder import unpack_cifar

REPO = Path(__file__).resolve().parents[1]
FOUND_SPEC = REPO / "docs" / "deploy" / "resbuilder_found_spec.json"
STUDENTS = {"resnet20": ["--set", "model.name=resnet20"],
            "resbuilder_found": ["--set", f"model.spec={FOUND_SPEC}"]}


def subset_folder(full: Path, dest: Path, per_class: int) -> Path:
    """``dest/train/<class>`` links to the first ``per_class`` images (by name) of each class; ``dest/test``
    links to the whole test folder."""
    if not (dest / ".done").is_file():
        for cls in sorted(p.name for p in (full / "train").iterdir() if p.is_dir()):
            (dest / "train" / cls).mkdir(parents=True, exist_ok=True)
            for f in sorted((full / "train" / cls).iterdir())[:per_class]:
                link = dest / "train" / cls / f.name
                if not link.exists():
                    link.symlink_to(f)
        if not (dest / "test").exists():
            (dest / "test").symlink_to(full / "test")
        (dest / ".done").write_text("ok\n")
    return dest


def run(work: Path, name: str, args: list[str]) -> dict:
    summary = work / name / "summary.json"
    if not summary.is_file():
        cmd = [sys.executable, "-m", "reslab", "train", "--out", str(work), "--set", f"name={name}",
               "--set", "train.progress=plain", "--set", "output.tensorboard=false", "--overwrite", *args]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(summary.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "distill_evidence")
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=10, help="student epochs")
    parser.add_argument("--teacher-epochs", type=int, default=30)
    parser.add_argument("--teacher", type=Path, help="an already trained teacher model file")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS))
    parser.add_argument("--table", action="store_true", help="only report the finished runs")
    args = parser.parse_args()
    work = args.work.resolve()
    data = subset_folder(unpack_cifar(work / "cifar10"), work / f"cifar10_{args.per_class}", args.per_class)
    common = ["--set", "data.name=imagefolder", "--set", f"data.data_dir={data}", "--set", "data.val_fraction=0",
              "--set", "train.batch_size=128", "--set", "optim.lr=0.1", "--set", "schedule.warmup_epochs=1",
              "--set", "output.keep_best=false"]
    teacher = args.teacher
    if teacher is None:
        run(work, "teacher_resnet56", [*common, "--set", "model.name=resnet56",
                                       "--set", f"train.epochs={args.teacher_epochs}"])
        teacher = work / "teacher_resnet56" / "model.safetensors"
    results: dict[tuple[str, bool], list[float]] = {}
    for seed in args.seeds:
        for student in args.students:
            for kd in (False, True):
                name = f"{student}_{'kd' if kd else 'ce'}_e{args.epochs}_s{seed}"
                if args.table and not (work / name / "summary.json").is_file():
                    continue
                extra = ["--set", f"distill.teacher={teacher}"] if kd else []
                summary = run(work, name, [*common, *STUDENTS[student], "--set", f"seed={seed}",
                                           "--set", f"train.epochs={args.epochs}", *extra])
                results.setdefault((student, kd), []).append(100 * summary["test_accuracy"])
    teacher_summary = teacher.parent / "summary.json"
    if teacher_summary.is_file():
        print(f"teacher {teacher}: {100 * json.loads(teacher_summary.read_text())['test_accuracy']:.2f} %")
    print("| student | no KD (% test) | KD (% test) | KD - no KD | seeds |\n|---|---|---|---|---|")
    for student in args.students:
        ce, kd = results.get((student, False), []), results.get((student, True), [])
        n = min(len(ce), len(kd))
        if n == 0:
            continue

        def show(v: list[float]) -> str:
            return f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}"

        diff = [k - c for c, k in zip(ce[:n], kd[:n])]
        print(f"| {student} | {show(ce[:n])} | {show(kd[:n])} | {show(diff)} | {n} |")


if __name__ == "__main__":
    main()
