"""The ``reslab`` command: ``train``, ``eval``, ``predict``, ``models``, and ``analyze``/``build``/``export``/
``quantize`` from their packages.

The depth analyses, ResBuilder and distillation plug into ``reslab train`` through config sections
(``reslab.train.plugins.extra_hooks``); the engine itself never imports them. Their own commands are added
by their ``register(subparsers)``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

# Only argparse and the commands' parsers load here: each command imports what it needs (torch included)
# when it runs, so `reslab --help` and a mistyped command answer at once.
from .analysis.cli import register as register_analyze
from .argtypes import parse_input_size
from .builder.cli import register as register_build
from .deploy.cli import register as register_deploy

if TYPE_CHECKING:
    from .train.config import Config


def user_errors() -> tuple[type[Exception], ...]:
    """Errors that are the user's input, shown as one line without a traceback."""
    from .data import DataError
    from .deploy.errors import DeployError
    from .io import CheckpointError
    from .spec import SpecError
    from .train.config import ConfigError
    from .train.rundir import TrainingError

    return (ConfigError, DataError, SpecError, CheckpointError, TrainingError, DeployError)


class Interrupted(KeyboardInterrupt):
    """``reslab train`` stopped by Ctrl-C or SIGTERM, with how to continue from what the run folder holds."""

    def __init__(self, stop) -> None:
        done = stop.epochs_saved
        kept = (
            f"its checkpoint after epoch {done} is kept (the partial epoch is not saved); continue with "
            f"reslab train --resume {stop.run_dir}"
            if done
            else "no checkpoint had been written yet"
        )
        super().__init__(f"{'SIGTERM' if stop.terminated else 'interrupted'}: {kept}")
        self.signal_exit = 143 if stop.terminated else 130


# -- train -----------------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from .train.config import config_from_dict, describe_schema, load_config
    from .train.plugins import extra_hooks
    from .train.run import run_training
    from .train.rundir import RunStopped, saved_config, sigterm_as_interrupt

    if args.help_config:
        print(describe_schema())
        return 0
    overrides = list(args.set or [])
    if args.out is not None:
        overrides.append(f"output.out_dir={args.out}")
    run_dir = None
    if isinstance(args.resume, str) and args.config is None:
        run_dir = Path(args.resume)
        # The run's own config (its checkpoint's copy first: config.yaml may be damaged) is the base.
        config = config_from_dict(saved_config(run_dir), overrides, where=f"{run_dir} with --set")
    else:
        run_dir = Path(args.resume) if isinstance(args.resume, str) else None
        config = load_config(args.config, overrides)
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    with sigterm_as_interrupt():
        try:
            trainer, summary = run_training(
                config, extra_hooks(config), run_dir=run_dir, resume=bool(args.resume), overwrite=args.overwrite
            )
        except RunStopped as stop:
            raise Interrupted(stop) from None
    if trainer.is_main:
        print(f"summary: {trainer.run_dir / 'summary.json'}")
        print(f"report: {summary['report']}")
    return 0


# -- eval ------------------------------------------------------------------------------------------------


def contract_data(preprocess, data, config: Config):
    """``data`` prepared as the model's preprocessing record says: resized to its input size, normalised with
    its mean/std; its classes must be the model's, in the same order."""
    from dataclasses import replace

    from .data import AugmentConfig, BatchTransform, load_data
    from .train.config import ConfigError

    names = [str(c) for c in data.class_names]
    if names != list(preprocess.class_names):
        raise ConfigError(
            f"data: the model was trained on the classes {', '.join(preprocess.class_names)}; {data.name} has "
            f"{', '.join(names)} (same names, same order needed)"
        )
    size = preprocess.input_size[1]
    if data.image_size != size:
        data = load_data(replace(config.data, image_size=size), seed=config.seed)
    transform = BatchTransform(preprocess.mean, preprocess.std, AugmentConfig())
    for split in (data.train, data.val, data.test):
        if split is not None:
            split.transform = transform
    return data


def cmd_eval(args: argparse.Namespace) -> int:
    from .data import load_data
    from .data.preprocess import Preprocess
    from .io import read_preprocess
    from .train.checkpoint import load_model
    from .train.config import ConfigError, checkpoint_config
    from .train.distributed import resolve_device
    from .train.inference import predict
    from .train.report import confusion_matrix, plot_confusion

    checkpoint = Path(args.checkpoint)
    # The data settings default to those of the run the checkpoint came from (same val split, subsets).
    config = checkpoint_config(checkpoint, args.config, args.data, args.set or ())
    device = resolve_device(args.device or config.train.device)
    precision = "fp32"  # as in training's evaluation: the accuracy must not depend on the CPU's bf16 units
    model = load_model(checkpoint, device)
    data = load_data(config.data, seed=config.seed)
    record = read_preprocess(checkpoint)
    if record is not None:  # the model's own preprocessing: its input size, normalisation and class order
        data = contract_data(Preprocess.from_dict(record, f"{checkpoint}: preprocess"), data, config)
    spec = model.spec
    if spec.num_classes != data.num_classes or spec.in_chans != data.in_chans:
        raise ConfigError(
            f"data.name: {checkpoint} holds a model for {spec.in_chans}-channel images and "
            f"{spec.num_classes} classes, but {data.name} has {data.in_chans} channel(s) and "
            f"{data.num_classes} classes"
        )
    split = getattr(data, args.split)
    if split is None:
        raise ConfigError(
            f"--split {args.split}: {data.name} has no {args.split} split (data.val_fraction is 0?)"
        )
    batch_size = args.batch_size or config.train.eval_batch_size
    preds, labels = predict(
        model, split, batch_size=batch_size, device=device, precision=precision, flip=config.train.test_flip
    )
    matrix = confusion_matrix(preds, labels, data.num_classes)
    per_class = (matrix.diag().double() / matrix.sum(1).clamp(min=1)).tolist()
    accuracy = float((preds == labels).double().mean())
    out_dir = Path(args.out) if args.out else checkpoint.parent / f"eval_{data.name}_{args.split}"
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = plot_confusion(
        matrix,
        data.class_names,
        out_dir / "confusion.png",
        title=f"{spec.name} on {data.name} {args.split} ({100 * accuracy:.2f} %)",
    )
    result = {
        "checkpoint": str(checkpoint),
        "model": spec.name,
        "data": data.name,
        "split": args.split,
        "images": len(labels),
        "accuracy": accuracy,
        "per_class_accuracy": dict(zip(data.class_names, per_class, strict=True)),
        "confusion_matrix": matrix.tolist(),
        "precision": precision,
        "test_flip": config.train.test_flip,
    }
    (out_dir / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
    width = max(len(str(n)) for n in data.class_names)
    print(f"{spec.name} on {data.name} {args.split}: accuracy {100 * accuracy:.2f} % ({len(labels)} images)")
    for name, acc, total in zip(data.class_names, per_class, matrix.sum(1).tolist(), strict=True):
        print(f"  {str(name).ljust(width)}  {100 * acc:6.2f} %  ({total} images)")
    print(f"confusion matrix: {plot}")
    print(f"results: {out_dir / 'eval.json'}")
    return 0


# -- predict ---------------------------------------------------------------------------------------------


def cmd_predict(args: argparse.Namespace) -> int:
    from .data import DataError
    from .data.folder import IMAGE_EXTENSIONS
    from .predict import describe, image_files, load_for_prediction, predict_files, write_predictions
    from .train.config import ConfigError

    if args.topk < 1:
        raise ConfigError(f"--topk: must be >= 1, got {args.topk}")
    model, preprocess = load_for_prediction(args.model)
    files = image_files(args.paths)
    if not files:
        raise DataError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {', '.join(args.paths)}")
    rows = predict_files(model, preprocess, files, args.topk)
    for row in rows:
        print(describe(row))
    if args.out:
        write_predictions(rows, args.out)
        print(f"predictions: {args.out}")
    bad = sum(r.error is not None for r in rows)
    if bad:
        print(f"{bad} of {len(rows)} file(s) could not be read", file=sys.stderr)
    return 0


# -- models ----------------------------------------------------------------------------------------------


def cmd_models(args: argparse.Namespace) -> int:
    from .profile import models_table

    try:
        print(models_table(args.pattern, args.input_size, args.num_classes, measure=args.profile))
    except KeyError as err:
        print(f"reslab models: {err.args[0]}", file=sys.stderr)
        return 1
    return 0


# -- entry point -----------------------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reslab", description="Residual networks for image classification.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train",
        help="train a network (default: a small ResNet on digits, ~1 minute)",
        description="Train from a YAML config; without one, the defaults train resnet8 on "
        "sklearn's digits. The run folder is <output.out_dir>/<name>.",
    )
    train.add_argument(
        "--config", "-c", type=Path, help="YAML config (see configs/); default: built-in defaults"
    )
    train.add_argument(
        "--set",
        "-s",
        action="append",
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set optim.lr=0.05 --set train.epochs=3 (repeatable)",
    )
    train.add_argument("--out", help="output folder for runs (output.out_dir)")
    train.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="RUN_DIR",
        help="continue the run from its 'last' checkpoint (its folder, or the config's run)",
    )
    train.add_argument("--overwrite", action="store_true", help="replace an existing run of the same name")
    train.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    train.add_argument("--help-config", action="store_true", help="list every config key and exit")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="accuracy, per-class accuracy and confusion matrix of a saved model")
    ev.add_argument(
        "checkpoint", help="a checkpoint (last/best.safetensors) or model file (model.safetensors)"
    )
    ev.add_argument("--data", help="dataset name (default: the run's config.yaml beside the checkpoint)")
    ev.add_argument("--config", type=Path, help="config whose data section to use")
    ev.add_argument(
        "--set", "-s", action="append", metavar="KEY=VALUE", help="override, e.g. data.data_dir=..."
    )
    ev.add_argument("--split", choices=["test", "val", "train"], default="test")
    ev.add_argument("--batch-size", type=int)
    ev.add_argument("--device", choices=["auto", "cpu", "cuda"])
    ev.add_argument("--out", help="folder for eval.json and confusion.png")
    ev.set_defaults(func=cmd_eval)

    pr = sub.add_parser(
        "predict",
        help="classify image files with a saved model (its stored preprocessing: size, channels, normalisation)",
    )
    pr.add_argument("model", help="a model file (model.safetensors) or checkpoint written by reslab train")
    pr.add_argument("paths", nargs="+", help="image files and folders (searched recursively)")
    pr.add_argument("--topk", type=int, default=1, help="how many classes per image (default 1)")
    pr.add_argument("--out", help="also write the predictions to this .csv or .json file")
    pr.set_defaults(func=cmd_predict)

    models = sub.add_parser("models", help="list zoo models (--profile: parameters and MACs)")
    models.add_argument("pattern", nargs="?", help="shell pattern, e.g. 'resnet*' or 'wrn*'")
    models.add_argument(
        "--profile", action="store_true", help="build and measure each model: parameters, MACs, activations"
    )
    models.add_argument(
        "--input-size", type=parse_input_size, metavar="C,H,W",
        help="input to profile at (default: each family's own: 224 px for ImageNet ResNets, 32 px for CIFAR ones)",
    )
    models.add_argument("--num-classes", type=int, help="classes (default: 1000 for ImageNet ResNets, else 10)")
    models.set_defaults(func=cmd_models)

    register_analyze(sub)  # reslab analyze lesion|paths|linearize|compare
    register_build(sub)  # reslab build: ResBuilder
    register_deploy(sub)  # reslab export|quantize
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except Exception as err:
        if isinstance(err, user_errors()):
            print(f"reslab {args.command}: error: {err}", file=sys.stderr)
            return 1
        if isinstance(err, OSError):  # a full disk, a read-only folder: the operation and the path
            where = f"{err.filename}: " if err.filename else ""
            print(f"reslab {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
            return 1
        raise
    except Interrupted as stop:
        print(f"reslab {args.command}: {stop}", file=sys.stderr)
        return stop.signal_exit
    except KeyboardInterrupt as stop:
        from .train.rundir import RunStopped, Terminated

        terminated = stop.terminated if isinstance(stop, RunStopped) else isinstance(stop, Terminated)
        print(f"reslab {args.command}: {'SIGTERM' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130


if __name__ == "__main__":
    sys.exit(main())
