"""Kill campaign: SIGKILL ``reslab train`` at random moments, resume, and compare the end bit for bit.

One uninterrupted run of a small digits training is the reference. Each trial starts the same run in its own
folder and kills it with SIGKILL, either after a random delay or the moment a checkpoint's temporary file
appears (a kill inside the checkpoint write); some trials kill the resuming process too (double kills). After
every kill the folder must hold a loadable ``last`` checkpoint (or none yet). The run is then resumed with
``reslab train --resume`` until it finishes, and its final weights must equal the reference's exactly, its
metrics must list every epoch once, and no temporary file may be left.

    python benchmarks/kill_campaign.py                       # 25 trials
    python benchmarks/kill_campaign.py --trials 5 --seed 1 --out /tmp/kills

Both the reference and the trials run with OMP_NUM_THREADS=1, so their float reductions are identical.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from reslab.io import CheckpointError, load_state
from reslab.train import load_checkpoint

CONFIG = """\
name: run
seed: 5
data: {name: digits, image_size: 16, train_per_class: 60, augment: {crop_padding: 1}}
model: {name: resnet8, drop_path: stochastic_depth, final_survival: 0.7}
optim: {lr: 0.05}
schedule: {name: cosine, warmup_epochs: 1}
train: {epochs: 8, batch_size: 32, progress: plain}
output: {tensorboard: false}
"""


def start(config: Path, out: Path, resume: bool, log: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "reslab", "train", "--config", str(config), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "a") as f:
        return subprocess.Popen(args + (["--resume"] if resume else []), stdout=f, stderr=subprocess.STDOUT, env=env)


def kill(proc: subprocess.Popen, run: Path, mode: str, delay: float) -> str:
    """Kill ``proc`` the ``mode`` way; returns where the kill landed."""
    deadline = time.monotonic() + delay
    while proc.poll() is None:
        if mode == "checkpoint" and any(run.glob(".*.safetensors.*.tmp")):
            break
        if mode == "random" and time.monotonic() >= deadline:
            break
        time.sleep(0.0005 if mode == "checkpoint" else 0.005)
    if proc.poll() is not None:
        return "finished first"
    writing = any(run.glob(".*.tmp"))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return "inside a write" if writing else "between writes"


def checkpoint_ok(run: Path) -> bool:
    if not (run / "last.safetensors").exists():
        return True
    try:
        load_checkpoint(run / "last.safetensors")
    except CheckpointError:
        return False
    return True


def trial(index: int, rng: random.Random, config: Path, root: Path, reference: dict, span: float) -> dict:
    out = root / f"trial{index:03d}"
    run = out / "run"
    log = out.with_suffix(".log")
    out.mkdir(parents=True)
    kills = 2 if rng.random() < 0.25 else 1
    landed, corrupt = [], 0
    for k in range(kills):
        mode = "checkpoint" if rng.random() < 0.4 else "random"
        proc = start(config, out, resume=k > 0, log=log)
        landed.append(f"{mode}: {kill(proc, run, mode, rng.uniform(0.5, span))}")
        corrupt += not checkpoint_ok(run)
    proc = start(config, out, resume=True, log=log)
    code = proc.wait()
    result = {"trial": index, "kills": landed, "corrupt_checkpoints": corrupt, "exit": code}
    if code != 0:
        return {**result, "identical": False, "why": log.read_text()[-500:]}
    final, _ = load_state(run / "model.safetensors")
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    identical = final.keys() == reference.keys() and all(torch.equal(final[k], reference[k]) for k in reference)
    return {**result, "identical": identical, "epochs_once": epochs == sorted(set(epochs)) == list(range(8)),
            "tmp_left": [p.name for p in run.glob(".*.tmp")]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="kill_campaign_"))
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yaml"
    config.write_text(CONFIG)
    began = time.monotonic()
    proc = start(config, root / "reference", resume=False, log=root / "reference.log")
    if proc.wait() != 0:
        sys.exit(f"the reference run failed; see {root / 'reference.log'}")
    span = time.monotonic() - began  # kills land anywhere from start-up to the end of a run
    reference, _ = load_state(root / "reference" / "run" / "model.safetensors")
    rng = random.Random(args.seed)
    results = []
    for i in range(args.trials):
        results.append(trial(i, rng, config, root, reference, span))
        print(json.dumps(results[-1]), flush=True)
    kills = [k for r in results for k in r["kills"]]
    summary = {
        "trials": len(results),
        "kills": len(kills),
        "kills_inside_a_write": sum("inside a write" in k for k in kills),
        "runs_finished_before_the_kill": sum("finished first" in k for k in kills),
        "corrupt_checkpoints": sum(r["corrupt_checkpoints"] for r in results),
        "bit_identical": sum(r["identical"] for r in results),
        "epochs_logged_once": sum(r.get("epochs_once", False) for r in results),
        "tmp_files_left": sum(len(r.get("tmp_left", [])) for r in results),
        "reference_run_s": round(span, 1),
    }
    (root / "summary.json").write_text(json.dumps({"summary": summary, "trials": results}, indent=1) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
