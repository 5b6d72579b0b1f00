"""``reslab build``: ``reslab train`` with ResBuilder switched on.

``reslab build --data cifar10 --set train.epochs=40`` trains the config's start network (by default the
zoo's ``resnet8``: one block per stage) while ResBuilder inserts, deletes and narrows it, with the default
ResBuilder settings unless the config's ``resbuilder`` section or ``--set resbuilder.KEY=VALUE`` change
them. The run folder is ``<output.out_dir>/<data>_resbuilder`` unless ``name`` is set.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_build(args: argparse.Namespace) -> int:
    from ..train.config import load_config
    from ..train.engine import run_training
    from ..train.plugins import extra_hooks
    from .config import ResBuilderConfig

    overrides = list(args.set or [])
    if args.data is not None:
        overrides.append(f"data.name={args.data}")
    if args.out is not None:
        overrides.append(f"output.out_dir={args.out}")
    config = load_config(args.config, overrides)
    if "resbuilder" not in config.plugins:
        config = config.replace(plugins={**config.plugins, "resbuilder": ResBuilderConfig()})
    if config.name is None:
        config = config.replace(name=f"{config.data.name}_resbuilder")
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
