"""What does the shortcut buy? Train a residual network and its plain twin with one recipe, over several
seeds, run every depth study on each, and write one report.

The twin has the same layers with every shortcut removed (``NetSpec.plain``); both are trained by the
training engine from the same config (data, optimiser, schedule, epochs, batch size), differing only in
``model`` and ``name``, and both are measured with the effective-depth hook while training. Finished runs and
studies are kept under the output folder and reused when the command is repeated with the same settings, so
an interrupted comparison resumes where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..data import DataBundle, load_data
from ..io import read_spec
from ..train.checkpoint import load_model
from ..train.config import Config
from ..train.distributed import resolve_device
from ..train.run import run_training
from ..train.rundir import FINAL_MODEL
from .effective_depth import DepthSnapshot
from .errors import AnalysisError
from .report import write_report
from .studies import STUDIES, RunStudies, StudyOptions, run_studies
from .tracking import EffectiveDepthHook

VARIANTS = ("residual", "plain")


def twin_configs(config: Config, seed: int, runs_dir: Path) -> dict[str, Config]:
    """The training configs of the residual network and of its plain twin for one seed."""
    model = config.model
    if model.name is not None:
        if model.name.startswith("plain_"):
            raise AnalysisError(f"model.name: {model.name!r} is already a plain network; give the residual "
                                f"network ({model.name.removeprefix('plain_')!r}) and compare adds its twin")
        models = {"residual": model, "plain": replace(model, name=f"plain_{model.name}")}
    else:
        spec = read_spec(model.spec)
        if all(b.shortcut == "none" for _, _, b in spec.blocks()):
            raise AnalysisError(f"model.spec: {model.spec} describes a plain network; give the residual one")
        runs_dir.mkdir(parents=True, exist_ok=True)
        plain_path = runs_dir / "plain_spec.json"
        spec.plain().save(plain_path)
        models = {"residual": model, "plain": replace(model, spec=str(plain_path))}
    output = replace(config.output, out_dir=str(runs_dir))
    # The depth hook is added by compare itself; other plug-in sections (e.g. resbuilder) would make the
    # twins differ in more than their shortcuts.
    return {variant: config.replace(name=f"{variant}_seed{seed}", seed=seed, model=m, output=output,
                                    plugins={})
            for variant, m in models.items()}


def _stamp(config: Config, studies: Sequence[str], options: StudyOptions,
           probe_images: int) -> dict[str, Any]:
    return {"config": config.to_dict(), "studies": list(studies), "options": options.to_dict(),
            "probe_images": probe_images}


def _trained_run(config: Config, run_dir: Path) -> bool:
    """A finished training run of exactly this config is in ``run_dir``."""
    saved = run_dir / "config.yaml"
    if not ((run_dir / "summary.json").is_file() and (run_dir / FINAL_MODEL).is_file() and saved.is_file()):
        return False
    from ..train.config import read_yaml

    return read_yaml(saved) == json.loads(json.dumps(config.to_dict()))


def compare(config: Config, seeds: Sequence[int], out_dir: str | Path, *,
            studies: Sequence[str] = STUDIES, options: StudyOptions | None = None, probe_images: int = 32,
            reuse: bool = True, log: Callable[[str], None] = print) -> Path:
    """Train both twins for every seed, run ``studies`` on each, write ``report.md``; return its path."""
    options = options or StudyOptions()
    if not seeds:
        raise AnalysisError("compare: give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise AnalysisError(f"compare: seeds must differ, got {list(seeds)}")
    out_dir = Path(out_dir)
    runs_dir, studies_dir = out_dir / "runs", out_dir / "studies"
    studies_dir.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[RunStudies]] = {v: [] for v in VARIANTS}
    for seed in seeds:
        data: DataBundle | None = None
        for variant, cfg in twin_configs(config, seed, runs_dir).items():
            stamp = _stamp(cfg, studies, options, probe_images)
            study_file = studies_dir / f"{variant}_seed{seed}.json"
            if reuse and study_file.is_file():
                saved = json.loads(study_file.read_text())
                if saved.get("stamp") == json.loads(json.dumps(stamp)):
                    log(f"compare: reusing {study_file}")
                    groups[variant].append(RunStudies.from_dict(saved["result"]))
                    continue
            run_dir = runs_dir / cfg.run_name
            if reuse and _trained_run(cfg, run_dir):
                log(f"compare: reusing the trained {variant} network in {run_dir}")
                model = load_model(run_dir / FINAL_MODEL, resolve_device(cfg.train.device))
                summary = json.loads((run_dir / "summary.json").read_text())
                history_file = run_dir / "effective_depth.json"
                history = ([DepthSnapshot.from_dict(s) for s in json.loads(history_file.read_text())]
                           if history_file.is_file() else [])
            else:
                data = data or load_data(cfg.data, seed=seed)
                what = cfg.model.name or cfg.model.spec
                log(f"compare: training the {variant} network {what} (seed {seed})")
                hook = EffectiveDepthHook(probe_images)
                trainer, summary = run_training(cfg, [hook], data=data, run_dir=run_dir, overwrite=True)
                model, history = trainer.model, hook.history
            data = data or load_data(cfg.data, seed=seed)
            log(f"compare: {', '.join(studies)} on the {variant} network (seed {seed})")
            result = run_studies(model, data, studies, options, seed=seed, label=variant,
                                 test_accuracy=summary.get("test_accuracy"), history=history)
            study_file.write_text(json.dumps({"stamp": stamp, "result": result.to_dict()}, indent=1) + "\n")
            groups[variant].append(result)
    residual = groups["residual"][0].model
    recipe = config.train
    notes = [f"Data: {config.data.name}; the residual network {residual} and its plain twin (every shortcut "
             f"removed) trained with one recipe: {recipe.epochs} epochs, batch {recipe.batch_size}, "
             f"{config.optim.name} lr {config.optim.lr}, {config.schedule.name} schedule; "
             f"train_per_class {config.data.train_per_class}.",
             f"Study settings: {json.dumps(options.to_dict())}."]
    title = f"What does the shortcut buy? {residual} vs plain_{residual}"
    report = write_report(out_dir, groups, title, notes)
    (out_dir / "compare.json").write_text(json.dumps(
        {label: [r.to_dict() for r in runs] for label, runs in groups.items()}, indent=1) + "\n")
    return report
