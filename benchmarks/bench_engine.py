"""Training-loop benchmarks.

1. Overhead: reslab's ``Trainer`` against a plain hand-written PyTorch loop on the same model, data batches,
   optimizer settings and precision. Both are timed over their training passes only (no evaluation), runs
   alternate to share the machine's load, and the median images/s of each gives the ratio (target >= 0.95).
2. Fast path: (a) training steps of a CIFAR ResNet on CIFAR-shaped batches in fp32 / bf16 autocast, NCHW /
   channels_last: images/s and speed-up over fp32 NCHW; (b) real short trainings (digits by default) in fp32
   NCHW and bf16 + channels_last through the ``Trainer``: images/s and test accuracy of both.

    python benchmarks/bench_engine.py                  # overhead on an MNIST subset; fast path
    python benchmarks/bench_engine.py --skip overhead --fast-steps 10
    # the full CIFAR-10 folder (make cifar10), the recipes' settings: bf16 + channels_last, compiled
    python benchmarks/bench_engine.py --skip fast-path --data imagefolder --data-dir data/cifar10-jpg \
        --train-per-class 0 --epochs 1 --precision bf16 --channels-last --compile
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

import reslab
from reslab.data import load_data
from reslab.train import Trainer, load_config
from reslab.train.precision import cpu_has_native_bf16


def make_config(args: argparse.Namespace, *extra: str):
    settings = [
        f"data.name={args.data}",
        *([f"data.data_dir={args.data_dir}", "data.download=false"] if args.data_dir else []),
        *([f"data.train_per_class={args.train_per_class}"] if args.train_per_class else []),
        f"data.test_per_class={args.test_per_class}",
        f"model.name={args.model}",
        f"train.epochs={args.epochs}",
        f"train.batch_size={args.batch_size}",
        "train.progress=none",
        "output.tensorboard=false",
        "optim.lr=0.05",
        "schedule.name=cosine",
        f"seed={args.seed}",
        *extra,
    ]
    return load_config(None, settings)


def reslab_throughput(config, out: Path) -> float:
    Trainer(config, run_dir=out, overwrite=True).fit()
    # The last epoch's training pass only, as in the plain loop (the first pays any compilation).
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return last["images_per_s"]


def plain_throughput(config, data) -> float:
    """The loop a PyTorch user writes by hand: same model, batches, SGD settings and schedule."""
    torch.manual_seed(config.seed)
    model = reslab.create_model(config.model.name, num_classes=data.num_classes, in_chans=data.in_chans)
    memory_format = torch.channels_last if config.train.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    forward = torch.compile(model, dynamic=False) if config.train.compile else model
    bf16 = config.train.precision == "bf16"
    opt = torch.optim.SGD(
        model.parameters(),
        lr=config.optim.lr,
        momentum=config.optim.momentum,
        nesterov=config.optim.nesterov,
        weight_decay=config.optim.weight_decay,
    )
    steps = config.train.epochs * data.train.num_batches(config.train.batch_size, drop_last=True)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for epoch in range(config.train.epochs):
        images, seconds = 0, 0.0  # the last epoch counts, as for the Trainer
        model.train()
        start = time.perf_counter()
        for x, y in data.train.batches(
            config.train.batch_size, shuffle=True, augment=True, epoch=epoch, seed=config.seed, drop_last=True
        ):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(forward(x.contiguous(memory_format=memory_format)).float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            scheduler.step()
            images += len(y)
        seconds += time.perf_counter() - start
    return images / seconds


def overhead(args: argparse.Namespace, out: Path) -> None:
    config = make_config(
        args,
        f"train.precision={args.precision}",
        f"train.channels_last={str(args.channels_last).lower()}",
        f"train.compile={str(args.compile).lower()}",
        "data.val_fraction=0",
    )
    data = load_data(config.data, seed=config.seed)
    setting = f"{args.precision}{' channels_last' if args.channels_last else ''}{' compiled' if args.compile else ''}"
    print(
        f"\n== 1. loop overhead: {args.model} on {args.data} ({len(data.train)} training images), {setting}, "
        f"batch {args.batch_size}, {args.epochs} epoch(s), {args.repeats} alternating repeats"
    )
    plain, ours = [], []
    for r in range(args.repeats):
        plain.append(plain_throughput(config, data))
        ours.append(reslab_throughput(config, out / "overhead"))
        print(f"  repeat {r + 1}: plain loop {plain[-1]:8.1f} img/s   reslab Trainer {ours[-1]:8.1f} img/s")
    p, o = statistics.median(plain), statistics.median(ours)
    print(f"  median: plain {p:.1f} img/s, reslab {o:.1f} img/s -> ratio reslab/plain = {o / p:.3f} (target >= 0.95)")


SETTINGS = {
    "fp32 NCHW": ["train.precision=fp32", "train.channels_last=false"],
    "fp32 channels_last": ["train.precision=fp32", "train.channels_last=true"],
    "bf16 NCHW": ["train.precision=bf16", "train.channels_last=false"],
    "bf16 + channels_last": ["train.precision=bf16", "train.channels_last=true"],
}


def step_throughput(model_name: str, precision: str, channels_last: bool, batch: int, steps: int) -> float:
    """Training steps on CIFAR-shaped batches (3x32x32, 10 classes): the setting of the fast-path claim."""
    torch.manual_seed(0)
    model = reslab.create_model(model_name, num_classes=10)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up (oneDNN picks its kernels)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def fast_path(args: argparse.Namespace, out: Path) -> None:
    print(
        f"\n== 2. fast path (CPU: {torch.backends.cpu.get_cpu_capability()}, native bf16 units: "
        f"{cpu_has_native_bf16()}, {torch.get_num_threads()} threads)"
    )
    print(
        f"  a) {args.fast_model} training steps on CIFAR-shaped batches of {args.batch_size}, "
        f"{args.fast_steps} steps each"
    )
    rates = {}
    for label, extra in SETTINGS.items():
        precision = "bf16" if "train.precision=bf16" in extra else "fp32"
        rates[label] = step_throughput(
            args.fast_model, precision, "train.channels_last=true" in extra, args.batch_size, args.fast_steps
        )
        print(f"     {label:24s} {rates[label]:8.1f} img/s  {rates[label] / rates['fp32 NCHW']:6.2f}x", flush=True)
    print(
        f"  b) real training, {args.fast_train_model} on {args.fast_data}, {args.fast_epochs} epochs, "
        "test accuracy of each"
    )
    print(f"     {'setting':24s} {'img/s':>8s} {'speed-up':>9s} {'test acc':>9s}")
    base = None
    for label in ("fp32 NCHW", "bf16 + channels_last"):
        config = load_config(
            None,
            [
                f"data.name={args.fast_data}",
                f"model.name={args.fast_train_model}",
                f"train.epochs={args.fast_epochs}",
                "train.batch_size=64",
                "train.progress=none",
                "output.tensorboard=false",
                f"seed={args.seed}",
                *SETTINGS[label],
            ],
        )
        summary = Trainer(config, run_dir=out / label.replace(" ", "_").replace("+", ""), overwrite=True).fit()
        rate = summary["train_images_per_s"]
        base = base or rate
        print(f"     {label:24s} {rate:8.1f} {rate / base:8.2f}x {100 * summary['test_accuracy']:8.2f}%", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--data-dir", help="data.data_dir (an image folder, for --data imagefolder)")
    parser.add_argument("--train-per-class", type=int, default=150, help="0: the whole training split")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="overhead comparison")
    parser.add_argument("--channels-last", action="store_true", help="overhead comparison")
    parser.add_argument("--compile", action="store_true", help="overhead comparison: torch.compile both loops")
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast-model", default="resnet20", help="model of the CIFAR-shaped step timing")
    parser.add_argument("--fast-steps", type=int, default=5)
    parser.add_argument("--fast-data", default="digits", help="dataset of the fast-path accuracy comparison")
    parser.add_argument("--fast-train-model", default="resnet20")
    parser.add_argument("--fast-epochs", type=int, default=8)
    parser.add_argument("--skip", choices=["overhead", "fast-path"], action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if "overhead" not in args.skip:
            overhead(args, Path(tmp))
        if "fast-path" not in args.skip:
            fast_path(args, Path(tmp))


if __name__ == "__main__":
    main()
