"""Where a CIFAR ResNet's training step spends its time on this CPU, and what makes it faster.

1. Peak: the bf16 (or fp32) GEMM rate of this machine, measured here (a 4096^3 matrix product).
2. Breakdown: torch.profiler over eager training steps (bf16 autocast + channels_last), grouped into
   convolutions, BatchNorm, ReLU, residual adds / zero-padded shortcut, layout and dtype conversions,
   optimizer and the rest, forward and backward together.
3. Variants side by side: eager and ``torch.compile`` (inductor) at several batch sizes, timed in
   interleaved rounds in one process so that a change in the machine's load hits every variant alike; the
   median images/s of each, its ratio to today's default (eager, batch 128), the training FLOP rate
   (torch.utils.flop_counter, which counts 2 x MACs; backward taken as 2x forward) and its share of the peak.
   The first compilation's time (into an empty inductor cache) is printed with the compiled breakdown: with
   the speed-up it gives the break-even point of ``train.compile``.

    python benchmarks/bench_step.py                         # resnet20, batches 128/256/512
    python benchmarks/bench_step.py --model resnet56 --batches 128 256
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable

import torch
from torch.nn import functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

import reslab
from reslab.train.precision import cpu_has_native_bf16

# Profiler op names -> the parts of the step the question is about (first match wins).
GROUPS = [
    ("convolution", ("conv", "mkldnn_convolution")),
    ("compiled fused kernels (BN, ReLU, add)", ("compiledfxgraph", "cpp_fused")),
    ("batch norm", ("batch_norm",)),
    ("relu", ("relu", "threshold", "clamp_min")),
    ("residual add / padded shortcut", ("aten::add", "constant_pad", "aten::cat", "aten::slice")),
    ("layout / dtype copies", ("copy_", "_to_copy", "contiguous", "clone")),
    ("optimizer", ("sgd", "_foreach", "aten::mul_", "aten::add_", "zero_", "fill_")),
    ("classifier / loss", ("addmm", "aten::mm", "cross_entropy", "log_softmax", "nll_loss", "mean")),
]


def gemm_peak(dtype: torch.dtype, n: int = 4096, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class StepVariant:
    """One way of running the training step: its own model copy, optimizer and fixed batch."""

    def __init__(self, model_name: str, batch: int, compiled: bool, bf16: bool) -> None:
        torch.manual_seed(0)
        self.label = f"{'compiled' if compiled else 'eager':8s} batch {batch}"
        self.batch = batch
        self.model = reslab.create_model(model_name, num_classes=10).to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model, dynamic=False) if compiled else self.model
        self.x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, 10, (batch,))
        self.bf16 = bf16
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
        self.warmup_s = _timed(lambda: (self.step(), self.step()))

    def step(self) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            loss = F.cross_entropy(self.forward(self.x).float(), self.y)
        self.optimizer.zero_grad(set_to_none=False)
        loss.backward()
        self.optimizer.step()

    def rate(self, steps: int) -> float:
        return steps * self.batch / _timed(lambda: [self.step() for _ in range(steps)])


def training_flops_per_image(model_name: str) -> float:
    model = reslab.create_model(model_name, num_classes=10)
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 32, 32))
    return 3 * counter.get_total_flops()  # forward + backward (input and weight gradients)


def breakdown(model_name: str, batch: int, bf16: bool, steps: int, compiled: bool) -> None:
    variant = StepVariant(model_name, batch, compiled=compiled, bf16=bf16)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            variant.step()
    totals: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        name = event.key.lower()
        group = next((g for g, keys in GROUPS if any(k.lower() in name for k in keys)), "other")
        totals[group] += event.self_cpu_time_total
    whole = sum(totals.values())
    kind = "a compiled" if compiled else "an eager"
    print(f"\n== 2. where {kind} step's time goes ({model_name}, batch {batch}, {steps} steps, self CPU time)")
    if compiled:  # the first compilation of this process, into an empty inductor cache unless --warm-cache
        print(f"  compilation + first two steps: {variant.warmup_s:.1f} s")
    for group, micros in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {group:32s} {micros / 1e3 / steps:8.1f} ms/step  {100 * micros / whole:5.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--images-per-round", type=int, default=2048, help="images each variant trains per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fp32", action="store_true", help="fp32 instead of bf16 autocast")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--warm-cache", action="store_true", help="keep inductor's cache of earlier runs")
    args = parser.parse_args()
    bf16 = not args.fp32
    if not args.warm_cache:  # time compilation as a first run meets it, not from an earlier run's cache
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench_step_inductor_")
    print(
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16 units {cpu_has_native_bf16()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    peak = gemm_peak(torch.bfloat16 if bf16 else torch.float32)
    print(f"== 1. {'bf16' if bf16 else 'fp32'} GEMM peak (4096^3): {peak:.0f} GFLOP/s")
    for compiled in (False,) if args.no_compile else (False, True):
        breakdown(args.model, args.batches[0], bf16, steps=10, compiled=compiled)

    variants = [StepVariant(args.model, b, False, bf16) for b in args.batches]
    if not args.no_compile:
        variants += [StepVariant(args.model, b, True, bf16) for b in args.batches]
    rates: dict[str, list[float]] = {v.label: [] for v in variants}
    for _ in range(args.rounds):
        for v in variants:
            rates[v.label].append(v.rate(max(1, args.images_per_round // v.batch)))
    flops = training_flops_per_image(args.model)
    base = statistics.median(rates[variants[0].label])
    print(
        f"\n== 3. {args.model} training step, {'bf16 autocast' if bf16 else 'fp32'} + channels_last, "
        f"{args.rounds} interleaved rounds ({flops / 1e6:.0f} MFLOP per training image)"
    )
    print(f"  {'variant':24s} {'img/s':>8s} {'vs default':>10s} {'GFLOP/s':>8s} {'of peak':>8s}")
    for v in variants:
        rate = statistics.median(rates[v.label])
        print(
            f"  {v.label:24s} {rate:8.0f} {rate / base:9.2f}x {rate * flops / 1e9:8.0f} "
            f"{100 * rate * flops / 1e9 / peak:7.1f}%"
        )


if __name__ == "__main__":
    main()
