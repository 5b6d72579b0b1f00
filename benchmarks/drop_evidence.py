"""Evidence for docs/regularisers.md: do stochastic depth (PyramidDrop), separated stochastic depth
(PyramidSepDrop) and ShakeDrop help a PyramidNet where regularisers are meant to help, when it overfits? And
how much training time does skipping dropped branches save?

Two parts:

1. Training runs through the engine (``reslab.train``): one PyramidNet trained on a fixed class-balanced subset
   of the CIFAR-10 image folder with each drop path (none, stochastic_depth, separated, shakedrop), for 3
   seeds. A seed fixes the initial weights, the batch order and the augmentation, so the variants of one seed
   differ only in their drop path. Writes a table (test accuracy mean ± std, final train accuracy, wall
   time), the paired per-seed differences for the papers' orderings with a verdict each
   (``reslab.analysis.paired``: holds when mean - 2 SE > 0, contradicted when mean + 2 SE < 0, else
   inconclusive) and a plot.
2. A controlled timing of training steps, with and without stochastic depth, on the same weights and batch,
   interleaved so that both see the same machine load; reported as a measured time ratio beside the ratio
   that the skipped multiply-accumulates alone predict.

Designs (``--scale``):

* ``overfit`` (default): PyramidNet-20 with alpha = 48 (the papers' family and widening rate, 0.31 M
  parameters; PyramidNet-110 runs 5x slower per image, which the budget below does not allow), 2,000
  training images (200 per class, crop + flip), all 10,000 test images, 120 epochs of batch 128, SGD with
  Nesterov momentum, lr 0.1 divided by 10 at 50 % and 75 % of the epochs, weight decay 1e-4, p_L = 0.5
  (linear decay), bf16 autocast and channels-last. 120 epochs on 2,000 images is meant to take the
  unregularised network to >= 99 % training accuracy; the table says whether it did, and if not, the run does
  not test the papers' claim (raise ``--epochs``).
* ``underfit``: the previous design (PyramidNet-20 alpha 24, 10 epochs, fp32), where every network underfit.
* ``tiny``: a few minutes, checks that it all runs.

Budget of ``overfit`` (measured 2026-12-03 on the Xeon with AMX-BF16, 1 torch thread, bf16 + channels-last,
eager, batch 128, while two other training processes shared the 2 cores): 360 images/s without a drop path, 440
with stochastic depth, 330 with ShakeDrop; evaluation at 930 images/s. One run is 0.24 M training image passes,
12 to 15 minutes with the test curve (4 x 10,000 images; measured 2026-12-07); 12 runs with ``--jobs 2`` (two
1-thread runs side by side) take about 1.4 hours on 2 cores. (A first version of this design, 5,000 images and
200 epochs, 1.0 M passes a run and about 4.7 hours in all, did not fit a working session and was not run to the
end: its first baseline was at 99.9 % training accuracy by epoch 115.) The design trains eager: ``--compile``
(``train.compile``) computes dropped branches (no skip saving, see docs/regularisers.md), and in a short check
through the engine (PyramidNet-20 alpha 48, 1,000 images, 3 epochs, 1 thread, same load) it gained nothing for
stochastic depth (about 360 against 380 images/s eager after the first epoch) and made ShakeDrop 5x slower
(about 60 against 300 images/s).

    .venv/bin/python benchmarks/drop_evidence.py --jobs 2              # overfit design, about 1.4 h
    .venv/bin/python benchmarks/drop_evidence.py --scale tiny --jobs 2 # a few minutes

Work goes to ``--work`` (default ``runs/drop_evidence``)/<scale>: one run folder per variant and seed, then
``results.json``, ``table.md`` and ``drop_evidence.png``. Finished runs are reused and an interrupted run
resumes from its last epoch checkpoint. CIFAR-10 is unpacked from
``../shared/data/cifar10-jpg/cifar10-jpg.tar.gz`` into the work folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch
from cifar_folder import unpack_cifar
from torch.utils.flop_counter import FlopCounterMode

from reslab.analysis.paired import paired
from reslab.build import build
from reslab.data import load_data
from reslab.train.config import load_config
from reslab.train.engine import Trainer
from reslab.zoo import make_spec

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("none", "stochastic_depth", "separated", "shakedrop")
LABELS = {"none": "PyramidNet", "stochastic_depth": "PyramidDrop (stochastic depth)",
          "separated": "PyramidSepDrop (separated)", "shakedrop": "ShakeDrop"}
# The papers' orderings, as (a, b, claim): "a beats b". PyramidSepDrop >= PyramidDrop is a "not worse" claim,
# tested here with the same rule (its "holds" is the stronger "better").
CLAIMS = (
    ("stochastic_depth", "none", "PyramidDrop > PyramidNet"),
    ("separated", "none", "PyramidSepDrop > PyramidNet"),
    ("separated", "stochastic_depth", "PyramidSepDrop >= PyramidDrop"),
    ("shakedrop", "none", "ShakeDrop > PyramidNet"),
    ("shakedrop", "stochastic_depth", "ShakeDrop > PyramidDrop"),
    ("shakedrop", "separated", "ShakeDrop > PyramidSepDrop"),
)
OVERFIT_TRAIN_ACCURACY = 0.99  # the baseline's final train accuracy that puts a design in the overfitting regime

# subset_seed: the seed that draws the class-balanced subsets, the same for every run (None: each run's own
# seed, as the underfit design did). test_points: also score the test split this many times during training
# (a curve that shows the overfitting; never used to pick a model; 0: none).
SCALES = {
    "overfit": {"model": "pyramidnet20_a48", "seeds": [0, 1, 2], "train_per_class": 200, "test_per_class": None,
                "epochs": 120, "precision": "bf16", "subset_seed": 0, "test_points": 4, "timing_rounds": 8,
                "timing_steps": 3},
    "underfit": {"model": "pyramidnet20_a24", "seeds": [0, 1, 2], "train_per_class": 500, "test_per_class": 500,
                 "epochs": 10, "precision": "fp32", "subset_seed": None, "test_points": 0, "timing_rounds": 8,
                 "timing_steps": 3},
    "tiny": {"model": "pyramidnet20_a24", "seeds": [0, 1], "train_per_class": 20, "test_per_class": 10,
             "epochs": 2, "precision": "bf16", "subset_seed": 0, "test_points": 2, "timing_rounds": 2,
             "timing_steps": 1},
}
FINAL_SURVIVAL = 0.5  # p_L of all three papers
BATCH_SIZE = 128


def run_config(scale: dict, data_dir: Path, variant: str, seed: int, compile_model: bool = False):
    """The engine config of one run: the papers' optimiser and schedule shape."""
    epochs = scale["epochs"]
    milestones = sorted({max(1, epochs // 2), max(1, 3 * epochs // 4)})
    test = [] if scale["test_per_class"] is None else [f"data.test_per_class={scale['test_per_class']}"]
    if scale["test_points"]:
        test.append(f"output.test_every={max(1, epochs // scale['test_points'])}")
    return load_config(overrides=[
        f"name={variant}_seed{seed}", f"seed={seed}",
        "data.name=imagefolder", f"data.data_dir={data_dir}", "data.val_fraction=0",
        f"data.train_per_class={scale['train_per_class']}", *test,
        f"model.name={scale['model']}", f"model.drop_path={variant}", f"model.final_survival={FINAL_SURVIVAL}",
        "optim.lr=0.1", "optim.weight_decay=1e-4", "optim.nesterov=true",
        "schedule.name=multistep", f"schedule.milestones=[{','.join(map(str, milestones))}]",
        f"train.epochs={epochs}", f"train.batch_size={BATCH_SIZE}", f"train.precision={scale['precision']}",
        "train.channels_last=true", f"train.compile={str(compile_model).lower()}",
        "train.device=cpu", "train.progress=none", "output.tensorboard=false", "output.keep_best=false",
    ])


def train_one(scale: dict, work: Path, data_dir: Path, variant: str, seed: int, compile_model: bool) -> dict:
    """One (variant, seed) run on one torch thread; a finished run is read back, a broken one resumed."""
    torch.set_num_threads(1)
    config = run_config(scale, data_dir, variant, seed, compile_model)
    run_dir = work / "runs" / config.run_name
    summary_file = run_dir / "summary.json"
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
    else:
        resume = (run_dir / "last.safetensors").is_file()
        subset_seed = seed if scale["subset_seed"] is None else scale["subset_seed"]
        data = load_data(config.data, seed=subset_seed, progress="none")
        trainer = Trainer(config, data=data, run_dir=run_dir, resume=resume, overwrite=not resume)
        try:
            summary = trainer.fit()
        finally:
            trainer.close()
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    images_per_epoch = summary["steps"] // summary["epochs"] * BATCH_SIZE
    return {
        "variant": variant, "seed": seed, "test_accuracy": summary["test_accuracy"],
        "test_images": summary["test_images"],
        # Training steps only; the wall time also holds the test curve's evaluations and the checkpoints.
        "train_time_s": sum(images_per_epoch / m["images_per_s"] for m in metrics),
        "wall_time_s": sum(m["epoch_time_s"] for m in metrics),
        "train_images_per_s": summary["train_images_per_s"],
        "final_train_accuracy": metrics[-1]["train_acc"],
        "test_curve": [[m["epoch"] + 1, m["test_acc"]] for m in metrics if "test_acc" in m]
        + [[summary["epochs"], summary["test_accuracy"]]],
    }


def train_all(scale: dict, work: Path, jobs: int, compile_model: bool) -> list[dict]:
    data_dir = unpack_cifar(work.parent / "data" / "cifar10-jpg")
    todo = [(variant, seed) for seed in scale["seeds"] for variant in VARIANTS]
    results = []
    # Spawned workers: each run is its own process with one torch thread, so --jobs 2 fills two cores.
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(train_one, scale, work, data_dir, v, s, compile_model) for v, s in todo]
        for future in futures:
            r = future.result()
            results.append(r)
            print(f"{r['variant']:>16} seed {r['seed']}: test accuracy {100 * r['test_accuracy']:.2f} %, "
                  f"final train accuracy {100 * r['final_train_accuracy']:.2f} %, train {r['train_time_s']:.0f} s",
                  flush=True)
            if r["variant"] == "none" and r["final_train_accuracy"] < OVERFIT_TRAIN_ACCURACY:
                # Said as soon as the first baseline ends, so a long campaign can be stopped and lengthened.
                print(f"warning: the unregularised network ended below {100 * OVERFIT_TRAIN_ACCURACY:.0f} % train "
                      f"accuracy: this design is not in the overfitting regime (raise --epochs)", flush=True)
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
            "train_acc_min": min(100 * r["final_train_accuracy"] for r in runs),
            "train_time_mean_s": statistics.mean(times), "train_time_std_s": spread(times),
            "wall_time_mean_s": statistics.mean(r["wall_time_s"] for r in runs),
            "time_vs_none": statistics.mean(times) / statistics.mean(base),
        })
    return rows


def claims(results: list[dict]) -> list[dict]:
    """The papers' orderings as paired per-seed differences of test accuracy (percentage points)."""
    acc = {(r["variant"], r["seed"]): 100 * r["test_accuracy"] for r in results}
    seeds = sorted({r["seed"] for r in results})
    out = []
    for a, b, claim in CLAIMS:
        p = paired([acc[a, s] for s in seeds], [acc[b, s] for s in seeds])
        out.append({"claim": claim, "a": a, "b": b, "diffs": list(p.diffs), "mean": p.mean, "se": p.se,
                    "shown": p.show(unit=" points"), "verdict": p.verdict})
    return out


def markdown(rows: list[dict], verdicts: list[dict], timing: dict, scale: dict, test_images: int) -> str:
    base = next(r for r in rows if r["variant"] == "none")
    overfits = base["train_acc_min"] >= 100 * OVERFIT_TRAIN_ACCURACY
    lines = [
        f"{scale['model']} on the CIFAR-10 image folder: {10 * scale['train_per_class']} training images, "
        f"{test_images} test images, {scale['epochs']} epochs, batch {BATCH_SIZE}, p_L = {FINAL_SURVIVAL}, "
        f"{scale['precision']}, seeds {scale['seeds']} (mean, sample standard deviation and range over seeds).",
        "",
        "| drop path | test accuracy % (mean ± std) | range | final train accuracy % | train time s "
        "(mean ± std) | time vs none | wall time s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['test_acc_mean']:.2f} ± {r['test_acc_std']:.2f} | "
            f"{r['test_acc_min']:.2f}–{r['test_acc_max']:.2f} | {r['train_acc_mean']:.2f} | "
            f"{r['train_time_mean_s']:.0f} ± {r['train_time_std_s']:.0f} | {r['time_vs_none']:.2f} | "
            f"{r['wall_time_mean_s']:.0f} |"
        )
    lines += [
        "",
        "Train time: the training steps alone; wall time adds the test curve's evaluations and the checkpoints. "
        "Final train accuracy: the last epoch's, measured while training (augmentation and drops active).",
        "",
        f"Overfitting regime: the unregularised network's final train accuracy is {base['train_acc_min']:.2f} % "
        f"at least (test {base['test_acc_mean']:.2f} %): "
        + ("at or above 99 %, so the design tests the papers' claims." if overfits else
           "below 99 %, so this design does NOT test the papers' claims (train longer)."),
        "",
        "Paired per-seed differences of test accuracy (a − b, percentage points; mean ± 2 SE over seeds). "
        "Verdict: holds when mean − 2 SE > 0, contradicted when mean + 2 SE < 0, else inconclusive.",
        "",
        "| claim | per-seed differences | mean ± 2 SE | verdict |",
        "|---|---|---|---|",
    ]
    for v in verdicts:
        diffs = ", ".join(f"{d:+.2f}" for d in v["diffs"])
        verdict = v["verdict"] if overfits else f"{v['verdict']} (not in the overfitting regime)"
        lines.append(f"| {v['claim']} | {diffs} | {v['shown']} | {verdict} |")
    t = timing
    lines += [
        "",
        f"Step timing ({t['model']}, batch {t['batch_size']}, fp32, {t['threads']} thread(s), {t['steps_each']} "
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

    fig, (ax_acc, ax_time, ax_curve) = plt.subplots(1, 3, figsize=(16, 4))
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
    for r in rows:
        curves = [x["test_curve"] for x in results if x["variant"] == r["variant"]]
        epochs = [e for e, _ in curves[0]]
        mean = [100 * statistics.mean(c[i][1] for c in curves) for i in range(len(epochs))]
        ax_curve.plot(epochs, mean, marker=".", label=r["label"])
    ax_curve.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy during training (mean of seeds)")
    ax_curve.grid(alpha=0.3)
    ax_curve.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="overfit")
    parser.add_argument("--epochs", type=int, help="override the design's epochs (milestones follow)")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side, one torch thread each")
    parser.add_argument("--compile", action="store_true", help="train.compile (slower here, see the docstring)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "drop_evidence")
    args = parser.parse_args()
    scale = dict(SCALES[args.scale])
    name = args.scale
    if args.epochs is not None:
        scale["epochs"] = args.epochs
        name = f"{args.scale}_e{args.epochs}"
    work = args.work / name
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    results = train_all(scale, work, args.jobs, args.compile)
    torch.set_num_threads(1)
    timing = time_skipping(scale)
    rows = summarise(results)
    verdicts = claims(results)
    test_images = results[0]["test_images"]
    table = markdown(rows, verdicts, timing, scale, test_images)
    (work / "table.md").write_text(table)
    (work / "results.json").write_text(json.dumps(
        {"scale": args.scale, "settings": scale, "compile": args.compile, "runs": results, "summary": rows,
         "claims": verdicts, "timing": timing}, indent=1) + "\n")
    plot(rows, results, work / "drop_evidence.png")
    print()
    print(table)
    print(f"wrote {work / 'table.md'}, {work / 'results.json'}, {work / 'drop_evidence.png'} "
          f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
