"""The run folder: what reslab writes there, and the checks before a run starts or resumes in it.

One process at a time: ``open_run`` takes an exclusive lock (``flock`` on ``.reslab.lock``) that is
held until the run ends, so a second ``--resume`` or an ``--overwrite`` of a live run is refused. Files are
replaced atomically (``reslab.io.atomic_write``); the per-epoch logs are appended to, and rewritten (on
resume, without the rows of epochs that run again) atomically too. reslab deletes only its own run files
(``RUN_FILES``, TensorBoard event files, its own orphaned ``.tmp`` files), and only in a folder it knows
as a run: one with its lock file or with a config.yaml that reads as a reslab config.

On resume the checkpoint is the authority: the config stored in it is what the run was trained with;
config.yaml is a copy for people (restored when it was damaged). Only ``RESUMABLE_KEYS`` may change,
plus the remedies a non-finite stop advises (``REMEDIES``), which are recorded in the ``resumed`` event.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import atomic_write
from .config import Config, ConfigError, read_yaml
from .report import read_jsonl

LAST, BEST, FINAL_MODEL = "last.safetensors", "best.safetensors", "model.safetensors"
RUN_FILES = (
    "config.yaml",
    "metrics.jsonl",
    "events.jsonl",
    "summary.json",
    "report.md",
    "loss.png",
    "accuracy.png",
    "lr.png",
    LAST,
    BEST,
    FINAL_MODEL,
)
LOCK_FILE = ".reslab.lock"
TENSORBOARD = "tensorboard"
# Keys that may differ between a run's saved config and the config it is resumed with.
RESUMABLE_KEYS = (
    "train.epochs",
    "train.progress",
    "train.device",
    "train.compile",
    "train.eval_batch_size",
    "output.checkpoint_every",
    "output.tensorboard",
    "data.num_workers",
    "data.data_dir",
)


def _lower(before: Any, now: Any) -> bool:
    return isinstance(now, float) and isinstance(before, float) and now < before


# What a non-finite stop advises, accepted on resume in the direction that helps.
REMEDIES = {
    "optim.lr": _lower,
    "train.grad_clip": lambda before, now: now is not None,
    "train.precision": lambda before, now: now == "fp32",
}


class TrainingError(RuntimeError):
    """The run cannot go on (non-finite values, run folder conflicts); the message says what to do."""


class NonFiniteLoss(TrainingError):
    pass


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically: a kill leaves the old file or the new one, never half."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def append_jsonl(path: Path, row: Mapping[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row, default=str) + "\n")


def keep_rows_before(path: Path, epoch: int) -> None:
    """Drop the rows of epochs >= ``epoch`` (they run again after a resume), atomically."""
    rows = [r for r in read_jsonl(path) if r.get("epoch", 0) < epoch]
    write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in rows))


def flatten_dict(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in d.items():
        if isinstance(value, Mapping):
            out.update(flatten_dict(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


class RunLock:
    """An exclusive ``flock`` on the run folder's lock file, released by ``release`` or process exit."""

    def __init__(self, run_dir: Path) -> None:
        path = run_dir / LOCK_FILE
        self._file = open(path, "a+")  # noqa: SIM115 (held open for the run's lifetime)
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.seek(0)
            holder = self._file.read().strip() or "?"
            self._file.close()
            raise TrainingError(
                f"{run_dir} is in use by another reslab process (pid {holder}); wait for it to end or stop "
                f"it, then --resume (two processes in one run folder would mix their files)"
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()

    def release(self) -> None:
        if not self._file.closed:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()


@dataclass
class OpenedRun:
    """A locked run folder: the checkpoint to resume from (if any) and the keys changed on resume."""

    lock: RunLock
    resume_from: Path | None = None
    changed: dict[str, list[Any]] = field(default_factory=dict)


def checkpoint_config(path: Path) -> tuple[dict[str, Any] | None, Any]:
    """The config stored in a training checkpoint's metadata and its epoch counter (read without loading
    the tensors; (None, None) when unreadable: loading the checkpoint itself reports why)."""
    from safetensors import SafetensorError, safe_open

    from .checkpoint import STATE_KEY

    try:
        with safe_open(path, framework="pt") as f:
            state = json.loads((f.metadata() or {})[STATE_KEY])
        config, epoch = state["extra"]["config"], state["epoch"]
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RecursionError):
        return None, None
    return (config if isinstance(config, dict) else None), epoch


def saved_config(run_dir: Path) -> dict[str, Any]:
    """The config a run was trained with: from its ``last`` checkpoint, else from a complete config.yaml."""
    if (run_dir / LAST).is_file():
        config, _ = checkpoint_config(run_dir / LAST)
        if config is not None:
            return config
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise TrainingError(f"--resume {run_dir}: no config.yaml there (not a reslab run folder?)")
    raw = read_yaml(path)
    missing = [k for k in Config().to_dict() if k not in raw]
    if missing:
        state = "is empty" if not raw else f"lacks {', '.join(missing)}"
        raise TrainingError(
            f"{path} {state} (damaged by an interrupted write?) and no checkpoint holds the run's config: "
            f"restore config.yaml, or start the run again with --overwrite"
        )
    return raw


def _is_run(run_dir: Path) -> bool:
    if (run_dir / LOCK_FILE).is_file():
        return True
    try:
        Config.from_dict(read_yaml(run_dir / "config.yaml"))
    except ConfigError:
        return False
    return True


def _ours(run_dir: Path) -> list[Path]:
    """reslab's files in ``run_dir`` (the run files and TensorBoard's event files)."""
    found = [run_dir / name for name in RUN_FILES if (run_dir / name).exists()]
    tensorboard = run_dir / TENSORBOARD
    if tensorboard.is_dir():
        found += sorted(tensorboard.glob("events.out.tfevents.*"))
    return found


def remove_run_files(run_dir: Path) -> None:
    for path in _ours(run_dir):
        path.unlink()
    try:
        (run_dir / TENSORBOARD).rmdir()  # only when nothing else is left in it
    except OSError:
        pass


def remove_orphans(run_dir: Path) -> list[str]:
    """Delete the temporary files of writes a killed process left (``.<run file>.<random>.tmp``)."""
    removed = []
    for name in RUN_FILES:
        for tmp in run_dir.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp.name)
    return removed


def resume_changes(before: Mapping[str, Any], config: Config, run_dir: Path) -> dict[str, list[Any]]:
    """The keys whose value changes on resume ({key: [before, now]}); a change that is not allowed raises."""
    try:
        old = flatten_dict(Config.from_dict(before).to_dict())
    except ConfigError as err:
        raise TrainingError(f"{run_dir}: cannot read the run's config to resume it: {err}") from None
    now = flatten_dict(config.to_dict())
    changed = {}
    for key in sorted(set(old) | set(now)):
        if old.get(key) == now.get(key):
            continue
        remedy = REMEDIES.get(key)
        if key not in RESUMABLE_KEYS and not (remedy and remedy(old.get(key), now.get(key))):
            raise TrainingError(
                f"--resume: {key} is {now.get(key)!r} but the run in {run_dir} used {old.get(key)!r}; resume "
                f"with the same config (only {', '.join(RESUMABLE_KEYS)} may change, and as remedies a lower "
                f"optim.lr, a train.grad_clip or train.precision: fp32)"
            )
        changed[key] = [old.get(key), now.get(key)]
    return changed


def open_run(run_dir: Path, config: Config, *, resume: bool, overwrite: bool) -> OpenedRun:
    """Create and lock ``run_dir``, check it against the request, clear it for a fresh start and write the
    config. Raises ``TrainingError`` with the remedy when the folder cannot be used."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise TrainingError(f"cannot create the run folder {run_dir}: {why}") from None
    was_run = _is_run(run_dir)
    lock = RunLock(run_dir)
    try:
        resume_from, changed = _check(run_dir, config, resume=resume, overwrite=overwrite, was_run=was_run)
        write_text(run_dir / "config.yaml", config.to_yaml())
        (run_dir / "events.jsonl").touch()  # exists (maybe empty) in every run folder
    except BaseException:
        lock.release()
        raise
    return OpenedRun(lock, resume_from, changed)


def _check(
    run_dir: Path, config: Config, *, resume: bool, overwrite: bool, was_run: bool
) -> tuple[Path | None, dict[str, list[Any]]]:
    """(the checkpoint to resume from, the changed keys); a fresh start clears the folder."""
    remove_orphans(run_dir)
    last = run_dir / LAST
    if resume and last.is_file():
        before, epochs_done = checkpoint_config(last)
        if before is None:  # a checkpoint of an earlier version: its config.yaml is all there is
            before = saved_config(run_dir)
        changed = resume_changes(before, config, run_dir)
        check_resumable(epochs_done, config, before.get("train", {}).get("epochs"), last)
        return last, changed
    ours = _ours(run_dir)
    if ours and not was_run:
        raise TrainingError(
            f"{run_dir} holds {ours[0].name}, which reslab did not write (the folder has no reslab "
            f"config.yaml); move it away or choose another --set name=NEW_NAME (or --out DIR)"
        )
    if was_run and not resume and not overwrite and (run_dir / "config.yaml").is_file():
        raise TrainingError(
            f"{run_dir} already holds a run; resume it with --resume, replace it with --overwrite, or "
            f"start another with --set name=NEW_NAME (or --out DIR)"
        )
    if resume and (run_dir / "config.yaml").is_file():
        resume_changes(saved_config(run_dir), config, run_dir)
    # A fresh start, also of a run killed before its first checkpoint: clear what it left.
    remove_run_files(run_dir)
    return None, {}


def check_resumable(epochs_done: Any, config: Config, saved_epochs: Any, path: Path) -> None:
    """The checkpoint's epoch counter fits its own run, and the resumed run does not end before it."""
    if not isinstance(epochs_done, int):
        return  # loading the checkpoint names the damaged field
    if isinstance(saved_epochs, int) and epochs_done > saved_epochs:
        raise TrainingError(
            f"{path}: the checkpoint claims {epochs_done} finished epochs but its run has "
            f"{saved_epochs}; the file is damaged or altered"
        )
    if epochs_done > config.train.epochs:
        raise TrainingError(
            f"--resume: train.epochs is {config.train.epochs} but {path} has already trained "
            f"{epochs_done} epochs; give train.epochs >= {epochs_done}"
        )


class Terminated(KeyboardInterrupt):
    """SIGTERM (docker stop, SLURM preemption), raised where the program is, like Ctrl-C."""


class RunStopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during training, with what the run folder holds to resume from: ``epochs_saved``
    finished epochs in its ``last`` checkpoint (0: none written yet)."""

    def __init__(self, run_dir: Path, epochs_saved: int, terminated: bool) -> None:
        super().__init__("SIGTERM" if terminated else "interrupted")
        self.run_dir, self.epochs_saved, self.terminated = run_dir, epochs_saved, terminated


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM stops the run the way Ctrl-C does (atomic writes finish or roll back)."""

    def handler(signum: int, frame: Any) -> None:
        raise Terminated("SIGTERM")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


__all__ = [
    "BEST",
    "FINAL_MODEL",
    "LAST",
    "NonFiniteLoss",
    "RESUMABLE_KEYS",
    "RUN_FILES",
    "RunLock",
    "RunStopped",
    "Terminated",
    "TrainingError",
    "append_jsonl",
    "keep_rows_before",
    "open_run",
    "saved_config",
    "sigterm_as_interrupt",
    "write_text",
]
