"""What a run reads from and writes to its folder, as a part of ``Trainer``: the locked run folder, resuming
from ``last``, checkpoints (never of non-finite state), the metrics log and, at the end, the test accuracy,
``summary.json``, the final model and ``report.md``. Only rank 0 writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..io import CheckpointError, first_non_finite, load_weights
from ..io import save as save_model_file
from . import distributed as dist_utils
from . import rundir
from .checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from .config import ConfigError
from .hooks import hook_states, load_hook_states
from .optim import rescale_lr, restore_scheduler, scheduler_position
from .progress import epoch_line
from .report import read_jsonl, write_report
from .rundir import FINAL_MODEL, LAST, NonFiniteLoss, TrainingError
from .tblog import log_hparams


class RunFiles:
    """The run-folder half of ``Trainer`` (it reads the trainer's state; ``engine`` runs the loop)."""

    def _prepare_run_dir(self, resume: bool, overwrite: bool):
        """Lock and check the run folder (rank 0 decides, every rank learns the outcome); load ``last``."""
        self._pending_events: list[tuple[str, dict]] = []
        outcome: tuple[str | None, str | None, dict] = (None, None, {})
        if self.is_main:
            try:
                self._run = rundir.open_run(self.run_dir, self.config, resume=resume, overwrite=overwrite)
                resume_from = str(self._run.resume_from) if self._run.resume_from else None
                outcome = (None, resume_from, self._run.changed)
            except (TrainingError, ConfigError) as err:
                outcome = (str(err), None, {})
            except OSError as err:  # raised on rank 0 alone, the other ranks would wait for it forever
                outcome = (f"cannot prepare the run folder {self.run_dir}: {err.strerror or err}", None, {})
        problem, resume_from, self._changed = dist_utils.broadcast_object(outcome)
        if problem:
            raise TrainingError(problem)
        dist_utils.barrier()
        if resume_from is None:
            return None
        return load_checkpoint(resume_from)  # every rank reads it (multi-node resume needs a shared folder)

    def _restore(self, ckpt) -> None:
        load_weights(self.model, {k: v.to(self.device) for k, v in ckpt.model_state.items()}, ckpt.path)
        changed = self._changed
        try:
            load_hook_states(self.hooks, ckpt.hooks, str(ckpt.path))
            if ckpt.optimizer_state is not None:
                self.optimizer.load_state_dict(ckpt.optimizer_state)
            if ckpt.scheduler_state is not None:
                self.schedule_start_epoch = int(ckpt.extra.get("schedule_start_epoch", 0))
                self.scheduler = self._new_scheduler()
                restore_scheduler(self.scheduler, ckpt.scheduler_state)
            if "optim.lr" in changed:  # a lower learning rate, the remedy after a non-finite stop
                old, new = changed["optim.lr"]
                rescale_lr(self.scheduler, new / old)
            if ckpt.scaler_state and self.scaler.is_enabled():
                self.scaler.load_state_dict(ckpt.scaler_state)
            if ckpt.rng is not None:
                restore_rng(ckpt.rng["tensors"], ckpt.rng["scalars"])
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as err:
            raise CheckpointError(f"{ckpt.path}: cannot restore the training state: {err}") from None
        extra = ckpt.extra
        self.epoch = self._last_saved_epochs = ckpt.epoch
        self.global_step = ckpt.global_step
        self.best_val_accuracy = extra.get("best_val_accuracy")
        self.best_epoch = extra.get("best_epoch")
        self._elapsed_before = float(extra.get("wall_time_s", 0.0))
        self._train_images = int(extra.get("train_images", 0))
        self._train_time = float(extra.get("train_time_s", 0.0))
        if self.is_main:
            # Forget what the killed process logged after its last checkpoint: those epochs run again.
            for name in ("metrics.jsonl", "events.jsonl"):
                rundir.keep_rows_before(self.run_dir / name, ckpt.epoch)
        self._events = read_jsonl(self.run_dir / "events.jsonl") if self.is_main else []
        resumed = {"from_epochs_done": ckpt.epoch, "global_step": ckpt.global_step}
        self._pending_events.append(("resumed", {**resumed, "changed": changed} if changed else resumed))

    def _check_state_finite(self) -> None:
        """Never checkpoint NaN/inf weights or buffers (BN statistics can overflow while the loss is finite)."""
        bad = first_non_finite(self.model.state_dict())
        if bad is not None:
            self.event("non_finite_state", tensor=bad)
            raise NonFiniteLoss(
                f"non-finite values in {bad!r} after epoch {self.epoch}: no checkpoint written; "
                f"{self._stopped()}"
            )

    def _stopped(self) -> str:
        kept = (
            f"the last good checkpoint is {self.run_dir / LAST} (after {self._last_saved_epochs} "
            f"epoch(s)), use --resume after fixing the config"
            if self._last_saved_epochs
            else "no checkpoint had been written yet"
        )
        return (
            f"training stopped; {kept}. Lower optim.lr, set train.grad_clip or use train.precision: fp32 "
            f"(--resume accepts these changes)."
        )

    def _save(self, path: Path) -> None:
        if not self.is_main:
            return
        try:
            self._write_checkpoint(path)
        except OSError as err:
            raise TrainingError(
                f"cannot write the checkpoint {path}: {err.strerror or err}; the previous checkpoint is kept "
                f"(free space or fix the folder's permissions, then --resume)"
            ) from None

    def _write_checkpoint(self, path: Path) -> None:
        save_checkpoint(
            path,
            model=self.model,
            optimizer=self.optimizer,
            scheduler_state=scheduler_position(self.scheduler),
            scaler_state=self.scaler.state_dict() if self.scaler.is_enabled() else None,
            epoch=self.epoch,
            global_step=self.global_step,
            rng=capture_rng(self.device.type == "cuda"),
            hooks=hook_states(self.hooks),
            preprocess=self.preprocess,
            extra={
                "best_val_accuracy": self.best_val_accuracy,
                "best_epoch": self.best_epoch,
                "schedule_start_epoch": self.schedule_start_epoch,
                "wall_time_s": self._elapsed(),
                "train_images": self._train_images,
                "train_time_s": self._train_time,
                "config": self.config.to_dict(),
            },
        )

    def _finish(self) -> dict[str, Any]:
        from ..profile import profile

        test = self.evaluate(self.data.test)
        spec = self.model.spec
        cost = profile(self.model, (self.data.in_chans, self.data.image_size, self.data.image_size))
        summary: dict[str, Any] = {
            "name": self.run_dir.name,
            "model": spec.name,
            "data": self.data.name,
            "test_accuracy": test["accuracy"],
            "test_loss": test["loss"],
            "test_images": test["count"],
            "best_val_accuracy": self.best_val_accuracy,
            "best_epoch": self.best_epoch,
            "epochs": self.epoch,
            "steps": self.global_step,
            "params": cost.params,
            "macs": cost.macs,
            "flops": cost.flops,
            "blocks_per_stage": spec.blocks_per_stage,
            "train_images_per_s": self._train_images / max(self._train_time, 1e-9),
            "wall_time_s": self._elapsed(),
            "device": str(self.device),
            "world_size": self.world_size,
            "precision": self.precision,
            "channels_last": self.channels_last,
            "seed": self.config.seed,
        }
        for hook in self.hooks:
            hook.on_train_end(self, summary)
        log_hparams(self._writer, self.config, summary, self.global_step)
        if self.is_main:
            rundir.write_text(self.run_dir / "summary.json", json.dumps(summary, indent=1, default=str) + "\n")
            save_model_file(self.model, self.run_dir / FINAL_MODEL, preprocess=self.preprocess)
            write_report(
                self.run_dir, summary, read_jsonl(self.run_dir / "metrics.jsonl"), self._events
            )
            self.progress.log(f"test accuracy {100 * test['accuracy']:.2f} % ({test['count']} images)")
        summary["report"] = str(self.run_dir / "report.md")
        return summary

    @property
    def epochs_saved(self) -> int:
        """Finished epochs in the newest ``last`` checkpoint: where ``--resume`` continues."""
        return self._last_saved_epochs

    def release(self) -> None:
        """Unlock the run folder (the run is over: finished, stopped or abandoned)."""
        if self._run is not None:
            self._run.lock.release()

    def _log_metrics(self, metrics: dict[str, Any]) -> None:
        self.progress.end_epoch(epoch_line(metrics, self.config.train.epochs))
        if not self.is_main:
            return
        rundir.append_jsonl(self.run_dir / "metrics.jsonl", metrics)
        if self._writer is not None:
            for key, value in metrics.items():
                if isinstance(value, int | float):
                    self._writer.add_scalar(key, value + (key == "epoch"), self.global_step)  # epoch from 1
            self._writer.flush()
