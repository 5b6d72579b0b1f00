"""The training loop: ``Trainer(config, hooks).fit()``.

One loop serves one process or many (``torchrun``; see ``distributed``), CPU or CUDA, fp32 or mixed
precision. Every epoch: train on the rank's shard, average BN statistics across ranks, evaluate on val,
call the hooks, log a metrics line, write checkpoints. At the end: test accuracy, ``summary.json``, the
final model and ``report.md``. Only rank 0 writes files.

People read epochs from 1 (console, report.md); the API and files count from 0 (``Trainer.epoch``, hooks,
``metrics.jsonl``, events); checkpoints store ``epochs_done``. Evaluation always runs in fp32 (CPU-independent).

Repeatability: a fixed seed fixes the initialisation, the data order and augmentations (pure functions of
(seed, epoch) in ``reslab.data``) and every RNG draw in the model (dropout, drop-path), whose generator
states are saved in each checkpoint; a run resumed from ``last`` therefore replays the remaining epochs
exactly as the uninterrupted run does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..build import build
from ..data import DataBundle, Split, load_data
from ..data.preprocess import Preprocess
from ..edit import WeightMap
from ..spec import NetSpec
from . import distributed as dist_utils
from . import rundir
from .config import Config, ConfigError
from .finetune import FineTune
from .hooks import Hook
from .inference import eval_logits
from .model_setup import init_weights, make_spec_from_config
from .optim import carry_optimizer_state, make_optimizer, make_scheduler, restore_scheduler, scheduler_position
from .precision import autocast_context, resolve_precision, seed_everything
from .progress import Progress
from .run_files import RunFiles
from .rundir import BEST, LAST, NonFiniteLoss
from .tblog import open_writer


class Trainer(RunFiles):
    """Sets up everything for ``config`` on construction; ``fit()`` trains and returns the summary.

    ``data`` replaces ``load_data(config.data)`` (tests, notebooks); ``run_dir`` replaces
    ``config.output.out_dir / config.run_name``. ``resume`` continues from the run folder's ``last``
    checkpoint (or starts afresh if none was written yet); ``overwrite`` replaces an existing run.
    """

    def __init__(
        self,
        config: Config,
        hooks: Sequence[Hook] = (),
        *,
        data: DataBundle | None = None,
        run_dir: str | Path | None = None,
        resume: bool = False,
        overwrite: bool = False,
    ) -> None:
        self.config = config
        self.hooks = list(hooks)
        cfg = config.train
        info, self.device, self._owns_process_group = dist_utils.setup(cfg.device)
        self.rank, self.world_size, self.is_main = info.rank, info.world_size, info.is_main
        self.run_dir = Path(run_dir) if run_dir is not None else config.run_dir
        self.precision = resolve_precision(cfg.precision, self.device)
        self.channels_last = cfg.channels_last
        if cfg.batch_size % self.world_size:
            raise ConfigError(
                f"train.batch_size: {cfg.batch_size} is not divisible by the {self.world_size} "
                f"processes (it is the global batch)"
            )
        self.local_batch = cfg.batch_size // self.world_size
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)

        self._run: rundir.OpenedRun | None = None  # the locked run folder (rank 0)
        try:
            self._set_up(self._prepare_run_dir(resume, overwrite), data)
        except BaseException:
            self.release()  # a run that cannot start leaves its folder unlocked
            raise

    def _set_up(self, checkpoint, data: DataBundle | None) -> None:
        config, cfg = self.config, self.config.train
        seed_everything(config.seed)
        progress = cfg.progress if self.is_main else "none"
        self.data = data if data is not None else load_data(config.data, seed=config.seed, progress=progress)
        self.steps_per_epoch = self.data.train.num_batches(
            self.local_batch, drop_last=cfg.drop_last, world_size=self.world_size
        )
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"train.batch_size: {cfg.batch_size} is larger than the {len(self.data.train)} "
                f"training images (with train.drop_last: true no step is left)"
            )

        self.epoch = 0  # index of the epoch being (or about to be) trained
        self.global_step = 0
        self.best_val_accuracy: float | None = None
        self.best_epoch: int | None = None
        self._elapsed_before = 0.0  # wall time of the run's earlier processes (resumed runs)
        self._train_images, self._train_time = 0, 0.0
        self._last_saved_epochs = 0  # epochs_done of the newest 'last' checkpoint
        self._events: list[dict[str, Any]] = []
        self._writer = None
        self._forward_train: nn.Module | None = None

        spec = (
            checkpoint.spec
            if checkpoint is not None
            else make_spec_from_config(config, self.data.num_classes, self.data.in_chans)
        )
        model = build(spec)
        self.finetune = FineTune(cfg.freeze, cfg.unfreeze_epoch)
        try:
            self.finetune.check(model)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if checkpoint is None:
            loaded = init_weights(model, config.model, self.data.class_names, verbose=self.is_main)
            if loaded is not None:
                self._pending_events.append(("init_from", loaded))
        self.model = model.to(self.device, memory_format=self._memory_format)
        self.preprocess = Preprocess.from_bundle(self.data).to_dict()  # stored with the weights, for predict
        self.optimizer = make_optimizer(self.model, config.optim)
        self.schedule_start_epoch = 0  # moved by restart_schedule
        self.scheduler = self._new_scheduler()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        if checkpoint is not None:
            self._restore(checkpoint)
        self._wrap()
        self.progress = Progress(cfg.progress, enabled=self.is_main)

    # -- set-up --------------------------------------------------------------------------------------------
    @property
    def _memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def _zero_missing_grads(self) -> None:
        """A dropped branch's parameters get zero gradients, not none, so that weight decay and momentum still
        move them in that step, as in Huang et al.'s and Yamada et al.'s code; the branch itself is not computed."""
        for p in self.model.parameters():
            if p.requires_grad and p.grad is None:
                p.grad = torch.zeros_like(p)

    def _wrap(self) -> None:
        """The module the training step calls: the bare model, wrapped in DDP and/or torch.compile."""
        cfg = self.config.train
        module: nn.Module = self.model
        if self.world_size > 1:
            if cfg.sync_bn:
                if self.device.type != "cuda":
                    raise ConfigError(
                        "train.sync_bn: SyncBatchNorm runs on CUDA only; set it to false on CPU"
                    )
                # Conversion creates new modules: copy the converted model back so checkpoints see it.
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
                module = self.model
            find_unused = cfg.find_unused_parameters
            if find_unused is None:
                # A dropped branch (stochastic depth) or a frozen layer leaves its parameters without gradients.
                find_unused = self.finetune.active or any(b.drop_path != "none" for _, _, b in self.model.spec.blocks())
            module = dist_utils.wrap_ddp(module, self.device, find_unused)
        if cfg.compile:
            # Static shapes: a fixed batch compiles once; automatic dynamic shapes gave slower CPU kernels.
            module = torch.compile(module, dynamic=False)
        self._forward_train = module


    def _new_scheduler(self):
        return make_scheduler(
            self.optimizer,
            self.config.schedule,
            self.config.optim.lr,
            self.steps_per_epoch,
            self.config.train.epochs,
            self.schedule_start_epoch,
        )

    # -- API for hooks -----------------------------------------------------------------------------------
    def restart_schedule(self) -> None:
        """Start the learning-rate schedule again with the next epoch, over the epochs that remain (e.g. to
        fine-tune a network whose architecture a hook has just fixed). Call it from ``on_epoch_end``; a
        resumed run keeps the restart."""
        position = scheduler_position(self.scheduler)
        self.schedule_start_epoch = self.epoch + 1
        self.scheduler = self._new_scheduler()
        restore_scheduler(self.scheduler, position)
        self.event("schedule_restarted", start_epoch=self.schedule_start_epoch)

    def set_model(self, new_model: nn.Module, weights: WeightMap | None = None) -> None:
        """Replace the network (e.g. after an architecture edit) and rebuild everything attached to it.

        The optimizer is rebuilt with the same hyper-parameters; ``weights``, where each new tensor came
        from (the map of ``reslab.edit``'s edits), carries the surviving parameters' state across
        (``optim.carry_optimizer_state``), ``None`` starts it fresh. The scheduler continues at the same
        step; DDP and torch.compile are re-applied.
        """
        if not isinstance(getattr(new_model, "spec", None), NetSpec):
            raise TypeError("set_model needs a reslab network with a .spec (built by reslab.build)")
        position = scheduler_position(self.scheduler)
        old_model, old_optimizer = self.model, self.optimizer
        self.model = new_model.to(self.device, memory_format=self._memory_format)
        self.optimizer = make_optimizer(self.model, self.config.optim)
        if weights is not None:
            carry_optimizer_state(old_optimizer, old_model, self.optimizer, self.model, weights)
        self.scheduler = self._new_scheduler()
        restore_scheduler(self.scheduler, position)
        self._wrap()
        self._zero_missing_grads()  # also when replaced in the middle of an epoch
        self.event(
            "model_replaced",
            model=self.model.spec.name,
            blocks=self.model.spec.blocks_per_stage,
            params=sum(p.numel() for p in self.model.parameters()),
        )

    def event(self, kind: str, **info: Any) -> None:
        """Record a structural (or any other) event in ``events.jsonl`` with the current epoch and step."""
        record = {"kind": kind, "epoch": self.epoch, "global_step": self.global_step, **info}
        self._events.append(record)
        if self.is_main:
            rundir.append_jsonl(self.run_dir / "events.jsonl", record)

    @torch.no_grad()
    def evaluate(self, split: Split) -> dict[str, float]:
        """Mean cross-entropy and accuracy of the current model on ``split`` (all ranks together)."""
        model = self.model if self.world_size > 1 or not self.config.train.compile else self._forward_train
        was_training = self.model.training
        self.model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        for x, y in self._batches(split, self.config.train.eval_batch_size, train=False):
            # fp32: a reported accuracy must not depend on the CPU's bf16 units
            logits = eval_logits(model, x, flip=self.config.train.test_flip)
            sums[0] += F.cross_entropy(logits, y, reduction="sum")  # eval_logits gives fp32
            sums[1] += (logits.argmax(1) == y).sum()
            sums[2] += len(y)
        dist_utils.all_reduce_sum(sums)
        self.model.train(was_training)
        loss, correct, count = sums.tolist()
        return {"loss": loss / max(count, 1), "accuracy": correct / max(count, 1), "count": int(count)}

    # -- the loop ----------------------------------------------------------------------------------------
    def _batches(self, split: Split, batch_size: int, *, train: bool) -> Iterator[tuple[Tensor, Tensor]]:
        cfg = self.config
        # Training shards are padded to equal sizes (DDP steps in lockstep); eval shards are exact.
        batches = split.batches(
            batch_size,
            shuffle=train,
            augment=train,
            epoch=self.epoch,
            seed=cfg.seed,
            drop_last=train and cfg.train.drop_last,
            rank=self.rank,
            world_size=self.world_size,
            device=self.device,
            pad=train,
        )
        for x, y in batches:
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs, evaluate on test, write the run's files; return the summary."""
        start = time.perf_counter()
        self._start_time = start
        try:
            if self.is_main:
                # On resume, drop the points the killed process logged after its last checkpoint.
                self._writer = open_writer(
                    self.config.output.tensorboard, self.run_dir, self.global_step + 1 if self.epoch else None
                )
            for kind, info in self._pending_events:
                self.event(kind, **info)
            self._pending_events = []
            self._log_start()
            for hook in self.hooks:
                hook.on_train_start(self)
            while self.epoch < self.config.train.epochs:
                self._run_epoch()
            return self._finish()
        finally:
            self.progress.close()
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            self.release()

    def _log_start(self) -> None:
        spec = self.model.spec
        where = f"{self.world_size} processes, " if self.world_size > 1 else ""
        state = f" (resuming after epoch {self.epoch})" if self.epoch else ""
        self.progress.log(
            f"training {spec.name} on {self.data.name} ({len(self.data.train)} images, "
            f"{self.data.num_classes} classes) for {self.config.train.epochs} epochs on "
            f"{where}{self.device} {self.precision}"
            f"{' channels_last' if self.channels_last else ''}{state}; run folder {self.run_dir}"
        )

    def _elapsed(self) -> float:
        return self._elapsed_before + time.perf_counter() - self._start_time

    def _run_epoch(self) -> None:
        cfg = self.config
        epoch = self.epoch
        for hook in self.hooks:
            hook.on_epoch_start(self, epoch)
        lr = self.optimizer.param_groups[0]["lr"]  # the epoch's first step's (the scheduler steps per step)
        epoch_start = time.perf_counter()
        train_loss, train_acc, images = self._train_epoch()
        train_time = time.perf_counter() - epoch_start
        self._train_images += images
        self._train_time += train_time
        dist_utils.average_buffers(self.model)
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": train_loss,
            "train_acc": train_acc,
        }
        if self.data.val is not None:
            val = self.evaluate(self.data.val)
            metrics.update(val_loss=val["loss"], val_acc=val["accuracy"])
        every = cfg.output.test_every
        if every and (epoch + 1) % every == 0 and epoch + 1 < cfg.train.epochs:  # the last is scored anyway
            test = self.evaluate(self.data.test)
            metrics.update(test_loss=test["loss"], test_acc=test["accuracy"])
        metrics.update(
            images_per_s=images / max(train_time, 1e-9), epoch_time_s=time.perf_counter() - epoch_start
        )
        for hook in self.hooks:
            hook.on_epoch_end(self, epoch, metrics)
        metrics["time_s"] = self._elapsed()
        improved = metrics.get("val_acc") is not None and (
            self.best_val_accuracy is None or metrics["val_acc"] > self.best_val_accuracy
        )
        if improved:
            self.best_val_accuracy, self.best_epoch = metrics["val_acc"], epoch
        self._log_metrics(metrics)
        self.epoch += 1
        last_epoch = self.epoch == cfg.train.epochs
        save_last = self.epoch % cfg.output.checkpoint_every == 0 or last_epoch
        if save_last or (improved and cfg.output.keep_best):
            self._check_state_finite()
        if improved and cfg.output.keep_best:
            self._save(self.run_dir / BEST)
        if save_last:
            self._save(self.run_dir / LAST)
            self._last_saved_epochs = self.epoch

    def _train_epoch(self) -> tuple[float, float, int]:
        """One pass over the rank's shard; returns (mean loss, accuracy, images) over all ranks."""
        self._forward_train.train()
        changed = self.finetune.apply(self.model, self.epoch)  # frozen batch norms back to eval mode
        if changed:
            self.event("freeze", state=changed)
            self.progress.log(changed)
        cfg = self.config.train
        self.progress.start_epoch(self.epoch, cfg.epochs, self.steps_per_epoch)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen, step_in_epoch, pending = 0, 0, None
        self._zero_missing_grads()
        for x, y in self._batches(self.data.train, self.local_batch, train=True):
            with autocast_context(self.precision, self.device):
                logits = self._forward_train(x)  # a hook may have replaced the model at the last step
            loss = self.criterion(logits.float(), y)
            total = loss
            for hook in self.hooks:
                changed = hook.loss(self, x, y, logits, total)
                total = total if changed is None else changed
            self.optimizer.zero_grad(set_to_none=False)
            self.scaler.scale(total).backward()
            # Check the previous step's loss now: reading this step's would wait for the GPU to finish it.
            if pending is not None:
                self._check_finite(*pending, seen=seen, correct=correct, done=step_in_epoch)
            if self.scaler.is_enabled():
                self.scaler.unscale_(self.optimizer)
            for hook in self.hooks:
                hook.after_backward(self)
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.global_step += 1
            step_in_epoch += 1
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            pending = (total.detach(), self.global_step)
            for hook in self.hooks:
                hook.on_step_end(self, self.global_step)
        if pending is not None:
            self._check_finite(*pending, seen=seen, correct=correct, done=step_in_epoch)
        sums = torch.stack(
            [
                loss_sum,
                correct.to(torch.float64),
                torch.tensor(float(seen), dtype=torch.float64, device=self.device),
            ]
        )
        loss_total, correct_total, count = dist_utils.all_reduce_sum(sums).tolist()
        return loss_total / max(count, 1), correct_total / max(count, 1), int(count)

    def _check_finite(self, loss: Tensor, step: int, *, seen: int, correct: Tensor, done: int) -> None:
        """Stop on a non-finite loss (of global step ``step``); else show progress (``done`` steps)."""
        value = loss.item()
        if not np.isfinite(value):
            self.event("non_finite_loss", loss=value, step=step)
            raise NonFiniteLoss(
                f"non-finite loss ({value}) at epoch {self.epoch + 1}, global step {step}: {self._stopped()}"
            )
        if self.progress.mode != "none":
            self.progress.update(done, value, correct.item() / max(seen, 1), seen)
        if self._writer is not None:
            self._writer.add_scalar("train_loss_step", value, step)


    def close(self) -> None:
        """Unlock the run folder and leave the process group this trainer joined (torchrun runs)."""
        self.release()
        if self._owns_process_group:
            dist_utils.cleanup()


__all__ = ["Trainer"]
