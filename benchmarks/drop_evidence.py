"""Evidence for docs/regularisers.md: what do stochastic depth, separated stochastic depth and ShakeDrop do to a
small PyramidNet on real CIFAR-10 images, and how much training time does skipping dropped branches save?

Two parts:

1. Training runs through the engine (``reslab.train``): one PyramidNet trained on a class-balanced subset of
   the CIFAR-10 image folder with each drop path (none, stochastic_depth, separated, shakedrop), for several
   seeds. A seed fixes the initial weights, the subset and the batch order, so the variants of one seed differ
   only in their drop path. Writes a table (mean and spread of test accuracy, training time) and a plot.
2. A controlled timing of training steps, with and without stochastic depth, on the same weights and batch,
   interleaved so that both see the same machine load; reported as a measured time ratio beside the ratio
   that the skipped multiply-accumulates alone predict.

    .venv/bin/python benchmarks/drop_evidence.py                # full: about an hour on 2 CPU cores
    .venv/bin/python benchmarks/drop_evidence.py --scale tiny   # a few minutes: checks that it all runs

Work goes to ``--work`` (default ``runs/drop_evidence``): one run folder per variant and seed, then
``results.json``, ``table.md`` and ``drop_evidence.png``. Finished runs are reused, so an interrupted run
resumes. CIFAR-10 is unpacked from ``../shared/data/cifar10-jpg/cifar10-jpg.tar.gz`` into the work folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from cifar_folder import unpack_cifar
from torch.utils.flop_counter import FlopCounterMode

from reslab.build import build
from reslab.data import load_data
from reslab.train.config import load_config
from reslab.train.engine import Trainer
from reslab.zoo import make_spec

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("none", "stochastic_depth", "separated", "shakedrop")
LABELS = {"none": "PyramidNet", "stochastic_depth": "PyramidDrop (stochastic depth)",
          "separated": "PyramidSepDrop (separated)", "shakedrop": "ShakeDrop"}

# Sized so that the full run takes about an hour on 2 CPU cores: 4 variants x 3 seeds x one short schedule,
# then about two minutes of step timing.
SCALES = {
    "full": {"model": "pyramidnet20_a24", "seeds": [0, 1, 2], "train_per_class": 500, "test_per_class": 500,
             "epochs": 10, "timing_rounds": 8, "timing_steps": 3},
    "tiny": {"model": "pyramidnet20_a24", "seeds": [0], "train_per_class": 20, "test_per_class": 10,
             "epochs": 1, "timing_rounds": 2, "timing_steps": 1},
}
FINAL_SURVIVAL = 0.5  # p_L of all three papers
BATCH_SIZE = 128


def run_config(scale: dict, data_dir: Path, variant: str, seed: int):
    """The engine config of one run: the papers' optimiser and schedule shape on a short CPU budget."""
    epochs = scale["epochs"]
    milestones = sorted({max(1, epochs // 2), max(1, 3 * epochs // 4)})
    return load_config(overrides=[
        f"name={variant}_seed{seed}", f"seed={seed}",
        "data.name=imagefolder", f"data.data_dir={data_dir}", "data.val_fraction=0",
        f"data.train_per_class={scale['train_per_class']}", f"data.test_per_class={scale['test_per_class']}",
        f"model.name={scale['model']}", f"model.drop_path={variant}", f"model.final_survival={FINAL_SURVIVAL}",
        "optim.lr=0.1", "optim.weight_decay=1e-4", "optim.nesterov=true",
        "schedule.name=multistep", f"schedule.milestones=[{','.join(map(str, milestones))}]",
        f"train.epochs={epochs}", f"train.batch_size={BATCH_SIZE}", "train.precision=fp32",
        "train.device=cpu", "train.progress=plain", "output.tensorboard=false",
    ])


def train_all(scale: dict, work: Path) -> list[dict]:
    data_dir = unpack_cifar(work / "data" / "cifar10-jpg")
    results = []
    for seed in scale["seeds"]:
        data = None  # one subset per seed, shared by its four variants
        for variant in VARIANTS:
            config = run_config(scale, data_dir, variant, seed)
            run_dir = work / "runs" / config.run_name
            summary_file = run_dir / "summary.json"
            if summary_file.is_file():
                summary = json.loads(summary_file.read_text())
            else:
                if data is None:
                    data = load_data(config.data, seed=seed)
                trainer = Trainer(config, data=data, run_dir=run_dir, overwrite=True)
                try:
                    summary = trainer.fit()
                finally:
                    trainer.close()
            metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            results.append({
                "variant": variant, "seed": seed, "test_accuracy": summary["test_accuracy"],
                "test_images": summary["test_images"],
                "train_time_s": sum(m["epoch_time_s"] for m in metrics),
                "train_images_per_s": summary["train_images_per_s"],
                "final_train_accuracy": metrics[-1]["train_acc"],
            })
            print(f"{variant:>16} seed {seed}: test accuracy {100 * summary['test_accuracy']:.2f} %, "
                  f"train {results[-1]['train_time_s']:.0f} s", flush=True)
    return results


def expected_time_ratio(model_name: str) -> float:
    """Expected (mean) fraction of a training step's multiply-accumulates left under stochastic depth: a block
    with survival p_l costs p_l of its own MACs; the stem and head always run."""
    spec = make_spec(model_name, num_classes=10, drop_path="stochastic_depth", final_survival=FINAL_SURVIVAL)
    model = build(spec).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    per_module = counter.get_flop_counts()
    total = counter.get_total_flops()
    kept = total
    for s, b, block in spec.blocks():
        name = f"{type(model).__name__}.layer{s + 1}.{b}"
        block_flops = sum(per_module.get(name, {}).values())
        kept -= (1 - block.survival) * block_flops
    return kept / total


def time_skipping(scale: dict) -> dict:
    """Median time of a training step (forward, backward, SGD step) with and without stochastic depth.

    Same weights, same batch, same thread count; the two are timed in alternating rounds so that a change in
    machine load hits both. Each round runs ``timing_steps`` steps of each model.
    """
    torch.manual_seed(0)
    plain = build(make_spec(scale["model"], num_classes=10)).train()
    dropped = build(make_spec(scale["model"], num_classes=10, drop_path="stochastic_depth",
                              final_survival=FINAL_SURVIVAL)).train()
    dropped.load_state_dict(plain.state_dict())
    x = torch.randn(BATCH_SIZE, 3, 32, 32)
    y = torch.randint(0, 10, (BATCH_SIZE,))
    times: dict[str, list[float]] = {"none": [], "stochastic_depth": []}
    models = {"none": plain, "stochastic_depth": dropped}
    optimisers = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, m in models.items()}

    def step(kind: str) -> None:
        optimisers[kind].zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(models[kind](x), y).backward()
        optimisers[kind].step()

    for kind in models:  # warm-up: allocator and oneDNN primitive caches
        step(kind)
    for _ in range(scale["timing_rounds"]):
        for kind in models:
            for _ in range(scale["timing_steps"]):
                start = time.perf_counter()
                step(kind)
                times[kind].append(time.perf_counter() - start)
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {
        "model": scale["model"], "batch_size": BATCH_SIZE, "steps_each": len(times["none"]),
        "threads": torch.get_num_threads(),
        "median_step_s": medians,
        "measured_ratio": medians["stochastic_depth"] / medians["none"],
        "expected_ratio_from_macs": expected_time_ratio(scale["model"]),
    }


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(results: list[dict]) -> list[dict]:
    rows = []
    base = [r["train_time_s"] for r in results if r["variant"] == "none"]
    for variant in VARIANTS:
        runs = [r for r in results if r["variant"] == variant]
        acc = [100 * r["test_accuracy"] for r in runs]
        times = [r["train_time_s"] for r in runs]
        rows.append({
            "variant": variant, "label": LABELS[variant], "seeds": len(runs),
            "test_acc_mean": statistics.mean(acc), "test_acc_std": spread(acc),
            "test_acc_min": min(acc), "test_acc_max": max(acc),
            "train_acc_mean": statistics.mean(100 * r["final_train_accuracy"] for r in runs),
            "train_time_mean_s": statistics.mean(times), "train_time_std_s": spread(times),
            "time_vs_none": statistics.mean(times) / statistics.mean(base),
        })
    return rows


def markdown(rows: list[dict], timing: dict, scale: dict, test_images: int) -> str:
    lines = [
        f"{scale['model']} on the CIFAR-10 image folder: {10 * scale['train_per_class']} training images, "
        f"{test_images} test images, {scale['epochs']} epochs, batch {BATCH_SIZE}, p_L = {FINAL_SURVIVAL}, "
        f"seeds {scale['seeds']} (mean, sample standard deviation and range over seeds).",
        "",
        "| drop path | test accuracy % (mean ± std) | range | final train accuracy % | train time s "
        "(mean ± std) | time vs none |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['test_acc_mean']:.2f} ± {r['test_acc_std']:.2f} | "
            f"{r['test_acc_min']:.2f}–{r['test_acc_max']:.2f} | {r['train_acc_mean']:.2f} | "
            f"{r['train_time_mean_s']:.0f} ± {r['train_time_std_s']:.0f} | {r['time_vs_none']:.2f} |"
        )
    t = timing
    lines += [
        "",
        f"Step timing ({t['model']}, batch {t['batch_size']}, {t['threads']} threads, {t['steps_each']} "
        f"interleaved steps each): median {t['median_step_s']['none']:.3f} s without and "
        f"{t['median_step_s']['stochastic_depth']:.3f} s with stochastic depth, a measured time ratio of "
        f"{t['measured_ratio']:.2f} (saving {100 * (1 - t['measured_ratio']):.0f} %); the skipped "
        f"multiply-accumulates alone predict {t['expected_ratio_from_macs']:.2f}.",
    ]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_time) = plt.subplots(1, 2, figsize=(11, 4))
    xs = range(len(rows))
    names = [r["label"].replace(" (", "\n(") for r in rows]
    ax_acc.bar(xs, [r["test_acc_mean"] for r in rows], yerr=[r["test_acc_std"] for r in rows], capsize=4,
               color="#9ecae1")
    for i, r in enumerate(rows):
        seeds = [100 * x["test_accuracy"] for x in results if x["variant"] == r["variant"]]
        ax_acc.scatter([i] * len(seeds), seeds, color="#08519c", zorder=3, s=14)
    low = min(100 * x["test_accuracy"] for x in results)
    high = max(100 * x["test_accuracy"] for x in results)
    ax_acc.set_ylim(max(0.0, low - 5), min(100.0, high + 3))
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.set_title("test accuracy: mean ± std, dots = seeds")
    ax_time.bar(xs, [r["train_time_mean_s"] for r in rows], yerr=[r["train_time_std_s"] for r in rows],
                capsize=4, color="#fdae6b")
    ax_time.set_ylabel("training time (s)")
    ax_time.set_title("training time per run")
    for ax in (ax_acc, ax_time):
        ax.set_xticks(list(xs), names, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "drop_evidence")
    args = parser.parse_args()
    scale = SCALES[args.scale]
    work = args.work / args.scale
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    results = train_all(scale, work)
    timing = time_skipping(scale)
    rows = summarise(results)
    test_images = results[0]["test_images"]
    table = markdown(rows, timing, scale, test_images)
    (work / "table.md").write_text(table)
    (work / "results.json").write_text(json.dumps(
        {"scale": args.scale, "settings": scale, "runs": results, "summary": rows, "timing": timing},
        indent=1) + "\n")
    plot(rows, results, work / "drop_evidence.png")
    print()
    print(table)
    print(f"wrote {work / 'table.md'}, {work / 'results.json'}, {work / 'drop_evidence.png'} "
          f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
