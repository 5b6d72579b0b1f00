"""``reslab analyze``: the depth studies from the command line.

    reslab analyze lesion CHECKPOINT [--data NAME]      delete blocks at test time
    reslab analyze paths CHECKPOINT                     path lengths, gradient and output per length
    reslab analyze linearize CHECKPOINT                 partial linearisation, channel- vs layer-wise
    reslab analyze compare --config C --seeds 0 1 2     train a net and its plain twin, run all, one report

A checkpoint's data defaults to the ``config.yaml`` of the run it came from (``--config`` and ``--set``
override it, ``--data`` names another dataset), as in ``reslab eval``. Each command writes the study's JSON,
its plots and ``report.md`` to ``--out`` (default: ``analysis_<study>`` beside the checkpoint).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import AnalysisError

SINGLE_STUDIES = ("lesion", "paths", "linearize")


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="dataset name (default: the run's config.yaml beside the checkpoint)")
    p.add_argument("--config", type=Path, help="config whose data section (and seed) to use")
    p.add_argument("--set", "-s", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. data.data_dir=... (repeatable)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", help="output folder")


def _add_study_options(p: argparse.ArgumentParser, studies: tuple[str, ...]) -> None:
    p.add_argument("--images", type=int, default=1000, help="test images scored per lesion/linearisation")
    p.add_argument("--batch-size", type=int, default=250)
    if "lesion" in studies:
        p.add_argument("--samples", type=int, default=10, help="random block sets per k")
        p.add_argument("--ks", type=int, nargs="+", help="how many blocks to delete (default: 1..pool size)")
        p.add_argument("--pool", choices=["shape_preserving", "lesionable"], default="shape_preserving",
                       help="blocks the random sets are drawn from")
    if "paths" in studies:
        p.add_argument("--path-images", type=int, default=32, help="test images for the path-length splits")
        p.add_argument("--path-samples", type=int, default=8, help="sampled paths per length (gradient)")
    if "linearize" in studies:
        p.add_argument("--fractions", type=float, nargs="+", default=[0.5, 0.25, 0.1, 0.05, 0.0],
                       help="fractions of nonlinear units to keep")
        p.add_argument("--train-images", type=int, default=2000, help="training images for linearisation")
        p.add_argument("--penalty-epochs", type=int, default=2)
        p.add_argument("--finetune-epochs", type=int, default=1)
        p.add_argument("--penalty", type=float, default=1e-3, help="sparsity penalty per nonlinear channel")
        p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate of the weights")
        p.add_argument("--slope-lr", type=float, default=0.02, help="Adam learning rate of the slopes")


def study_options(args: argparse.Namespace):
    from .linearize import LinearizeConfig
    from .studies import StudyOptions

    kwargs = {"images": args.images, "batch_size": args.batch_size}
    if hasattr(args, "samples"):
        kwargs.update(lesion_samples=args.samples, lesion_ks=args.ks, lesion_pool=args.pool)
    if hasattr(args, "path_images"):
        kwargs.update(path_images=args.path_images, path_samples=args.path_samples)
    if hasattr(args, "fractions"):
        kwargs.update(fractions=args.fractions, train_images=args.train_images,
                      linearize=LinearizeConfig(args.penalty_epochs, args.finetune_epochs, args.penalty,
                                                args.lr, slope_lr=args.slope_lr))
    return StudyOptions(**kwargs)


def _checkpoint_config(checkpoint: Path, args: argparse.Namespace):
    """The config a checkpoint was trained with (data settings and seed), with the command's overrides."""
    from ..train.config import checkpoint_config

    return checkpoint_config(checkpoint, args.config, args.data, args.set or ())


def cmd_single(args: argparse.Namespace) -> int:
    from ..data import load_data
    from ..train.checkpoint import load_model
    from ..train.distributed import resolve_device
    from .effective_depth import DepthSnapshot
    from .report import write_report
    from .studies import check_fits, run_studies

    study = args.study
    checkpoint = Path(args.checkpoint)
    options = study_options(args)
    config = _checkpoint_config(checkpoint, args)
    device = resolve_device(args.device or config.train.device)
    model = load_model(checkpoint, device)
    data = load_data(config.data, seed=config.seed)
    check_fits(model, data, str(checkpoint))
    history, accuracy = [], None
    run_dir = checkpoint.parent
    tracked = run_dir / "effective_depth.json"  # written by training with an `analysis` config section
    if study == "paths" and tracked.is_file():
        history = [DepthSnapshot.from_dict(s) for s in json.loads(tracked.read_text())]
    if (run_dir / "summary.json").is_file():
        accuracy = json.loads((run_dir / "summary.json").read_text()).get("test_accuracy")
    result = run_studies(model, data, [study], options, seed=config.seed, test_accuracy=accuracy,
                         history=history)
    out_dir = Path(args.out) if args.out else run_dir / f"analysis_{study}"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{study}.json").write_text(json.dumps({"checkpoint": str(checkpoint), "data": data.name,
                                                       "options": options.to_dict(),
                                                       "result": result.to_dict()}, indent=1) + "\n")
    scored = min(options.images, len(data.test))
    title = f"{study} study of {model.spec.name} on {data.name}"
    report = write_report(out_dir, {model.spec.name: [result]}, title,
                          [f"Checkpoint: {checkpoint}; {scored} test images scored."])
    print(_headline(result))
    print(f"report: {report}")
    return 0


def _headline(result) -> str:
    name = result.model
    if result.lesion is not None:
        les = result.lesion
        single = [s.accuracy for s in les.single if s.accuracy is not None]
        return (f"{name}: accuracy {100 * les.baseline:.2f} % intact, {100 * min(single):.2f} % after the "
                f"most harmful single-block deletion ({len(single)} blocks lesioned)")
    if result.gradient is not None:
        return (f"{name}: mean path length of the output {result.output.mean_length:.2f} of "
                f"{result.num_blocks} blocks; 90 % explained by paths up to length "
                f"{result.output.depth_explaining(0.9)}")
    lin = result.linearize
    last = min(lin.points, key=lambda p: (p.remaining_fraction, p.mode))
    return (f"{name}: accuracy {100 * lin.baseline_accuracy:.2f} % with every ReLU; "
            f"{100 * last.accuracy:.2f} % with {100 * last.remaining_fraction:.1f} % nonlinear units kept "
            f"({last.mode}-wise)")


def cmd_compare(args: argparse.Namespace) -> int:
    from ..train.config import load_config
    from .compare import compare

    overrides = list(args.set or [])
    if args.data is not None:
        overrides.append(f"data.name={args.data}")
    config = load_config(args.config, overrides)
    out_dir = Path(args.out) if args.out else Path("runs") / f"compare_{config.data.name}_{config.model.name}"
    report = compare(config, args.seeds, out_dir, studies=args.studies, options=study_options(args),
                     probe_images=args.probe_images, reuse=not args.no_reuse)
    print(f"report: {report}")
    return 0


def _guarded(command):
    """Study errors are the user's input: one line, no traceback (the CLI's own errors are caught there)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except AnalysisError as err:
            print(f"reslab analyze {args.study}: error: {err}", file=sys.stderr)
            return 1

    return run


def register(subparsers) -> None:
    """Add ``reslab analyze`` to the ``reslab`` command's subparsers."""
    analyze = subparsers.add_parser("analyze", help="depth studies: lesion, paths, linearize, compare",
                                    description=__doc__.split("\n\n")[1],
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    studies = analyze.add_subparsers(dest="study", required=True)
    for study, text in (("lesion", "delete blocks at test time (Veit et al. 2016)"),
                        ("paths", "path-length distribution, gradient and output per path length"),
                        ("linearize", "partial linearisation, channel-wise vs layer-wise (2022, 2025)")):
        p = studies.add_parser(study, help=text, description=text)
        p.add_argument("checkpoint", help="a checkpoint or model file (.safetensors)")
        _add_data_options(p)
        _add_study_options(p, (study,))
        p.set_defaults(func=_guarded(cmd_single))
    p = studies.add_parser("compare", help="train a network and its plain twin, run every study, one report",
                           description="Train the config's model and its plain twin with the same recipe for "
                           "each seed, run the studies on both, and write one report.")
    p.add_argument("--config", "-c", type=Path, help="training config (YAML); default: built-in defaults")
    p.add_argument("--set", "-s", action="append", metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--data", help="dataset name (data.name), as in reslab train --set data.name=...")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--studies", nargs="+", choices=SINGLE_STUDIES, default=list(SINGLE_STUDIES))
    p.add_argument("--probe-images", type=int, default=32, help="images for effective depth in training")
    p.add_argument("--no-reuse", action="store_true", help="retrain and remeasure even if results exist")
    p.add_argument("--out", help="output folder (default: runs/compare_<data>_<model>)")
    _add_study_options(p, SINGLE_STUDIES)
    p.set_defaults(func=_guarded(cmd_compare))
