"""``reslab build``: ``reslab train`` with ResBuilder switched on.

``reslab build --data cifar10 --set train.epochs=45`` trains the config's start network (by default the
zoo's ``resnet8``: one block per stage) while ResBuilder inserts, deletes and narrows it, with the default
ResBuilder settings unless the config's ``resbuilder`` section or ``--set resbuilder.KEY=VALUE`` change
them. The run folder is ``<output.out_dir>/<data>_resbuilder`` unless ``name`` is set. Where neither the
config file nor ``--set`` gives ``train.epochs``, the run is long enough for the search and then the
default number of epochs for the network it finds (``schedule.run_epochs``: 15 for the default 10).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..train.config import Config


def build_config(config_path: Path | None, overrides: list[str]) -> Config:
    """The training config of ``reslab build``: ``reslab train``'s, with the ``resbuilder`` section added if
    it is missing, a run name, and (unless the file or ``--set`` gives ``train.epochs``) a run long enough for
    the search and then the default epochs for the network it finds."""
    from ..train.config import TrainConfig, config_from_dict, parse_override, read_yaml, source_label
    from .config import ResBuilderConfig
    from .schedule import run_epochs

    raw = read_yaml(config_path) if config_path is not None else {}
    config = config_from_dict(raw, overrides, source_label(config_path, overrides))
    if "resbuilder" not in config.plugins:
        config = config.replace(plugins={**config.plugins, "resbuilder": ResBuilderConfig()})
    if config.name is None:
        config = config.replace(name=f"{config.data.name}_resbuilder")
    set_keys = [parse_override(o)[0] for o in overrides]
    epochs_given = "epochs" in (raw.get("train") or {}) or ["train", "epochs"] in set_keys
    if not epochs_given:
        epochs = run_epochs(TrainConfig().epochs, config.plugins["resbuilder"].search_fraction)
        config = config.replace(train=replace(config.train, epochs=epochs))
    return config


def cmd_build(args: argparse.Namespace) -> int:
    from ..train.plugins import extra_hooks
    from ..train.run import run_training

    overrides = list(args.set or [])
    if args.data is not None:
        overrides.append(f"data.name={args.data}")
    if args.out is not None:
        overrides.append(f"output.out_dir={args.out}")
    config = build_config(args.config, overrides)
    trainer, summary = run_training(config, extra_hooks(config), overwrite=args.overwrite)
    if trainer.is_main:
        print(f"found spec: {trainer.run_dir / 'found_spec.json'}")
        print(f"report: {summary['report']} (architecture history: {trainer.run_dir / 'resbuilder.md'})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``build`` command to the ``reslab`` parser."""
    build = subparsers.add_parser(
        "build",
        help="learn a residual network's depth and widths while it trains (ResBuilder)",
        description="Train with ResBuilder (Burghoff et al. 2023): blocks are inserted and deleted and "
        "channels cut during training, then the found architecture is fine-tuned. Settings: the config's "
        "resbuilder section or --set resbuilder.KEY=VALUE (reslab train --help-config lists them).",
    )
    build.add_argument("--data", help="dataset name (data.name), e.g. digits, mnist, cifar10")
    build.add_argument("--config", "-c", type=Path, help="YAML config (see configs/resbuilder*.yaml)")
    build.add_argument("--set", "-s", action="append", metavar="KEY=VALUE",
                       help="override a config key, e.g. --set train.epochs=40 (repeatable)")
    build.add_argument("--out", help="output folder for runs (output.out_dir)")
    build.add_argument("--overwrite", action="store_true", help="replace an existing run of the same name")
    build.set_defaults(func=cmd_build)
