"""The training loop in one process: repeatability, hooks, model replacement, non-finite loss, settings."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

import reslab
from reslab.edit import identity_map
from reslab.train import (
    Hook,
    NonFiniteLoss,
    RunStopped,
    Trainer,
    TrainingError,
    load_checkpoint,
    load_config,
    run_training,
)
from reslab.train.precision import cpu_has_native_bf16, resolve_precision


def tiny(*overrides: str):
    """resnet8 on 300 digits (4 steps per epoch): a run takes about a second."""
    return load_config(
        None,
        [
            "train.epochs=2",
            "train.batch_size=64",
            "data.train_per_class=30",
            "train.progress=none",
            "output.tensorboard=false",
            "optim.lr=0.05",
            *overrides,
        ],
    )


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_fixed_seed_gives_bitwise_identical_runs(tmp_path):
    # Stochastic depth and dropout draw from the RNG in every step: the seed must fix those draws too.
    settings = ["model.drop_path=stochastic_depth", "model.final_survival=0.5", "data.augment.crop_padding=1"]
    weights = []
    for i, seed in enumerate([0, 0, 1]):
        trainer = Trainer(tiny(*settings, f"seed={seed}"), run_dir=tmp_path / f"run{i}")
        trainer.fit()
        weights.append(trainer.model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not torch.equal(weights[0]["fc.weight"], weights[2]["fc.weight"])


class NaNAtStep(Hook):
    """Adds a NaN to the loss of one global step (1-based)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def extra_loss(self, trainer):
        if trainer.global_step + 1 == self.step:
            return torch.tensor(float("nan"))
        return None


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = Trainer(tiny("train.epochs=3"), [NaNAtStep(6)], run_dir=tmp_path / "run")
    assert trainer.steps_per_epoch == 4
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss \(nan\) at epoch 2, global step 6") as info:
        trainer.fit()
    assert "last good checkpoint is" in str(info.value) and "after 1 epoch" in str(info.value)
    ckpt = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert ckpt.epoch == 1 and ckpt.global_step == 4
    assert all(torch.isfinite(t).all() for t in ckpt.model_state.values() if t.is_floating_point())
    assert [m["epoch"] for m in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [0]
    events = read_jsonl(tmp_path / "run" / "events.jsonl")
    assert events[-1]["kind"] == "non_finite_loss" and events[-1]["step"] == 6
    assert not (tmp_path / "run" / "summary.json").exists()


def test_non_finite_loss_before_any_checkpoint_says_so(tmp_path):
    with pytest.raises(NonFiniteLoss, match="at epoch 1, global step 2: .*no checkpoint had been written yet"):
        Trainer(tiny(), [NaNAtStep(2)], run_dir=tmp_path / "run").fit()


def deeper(model):
    """``model`` with one more block in stage 0 (a zero-initialised copy of the last one) and its weights."""
    spec = model.spec
    first = list(spec.stages[0])
    new = reslab.build(dataclasses.replace(spec, stages=[first + [first[-1]], *spec.stages[1:]]))
    new.load_state_dict(model.state_dict(), strict=False)
    new.layer1[len(first)].zero_init_()
    return new


class Recorder(Hook):
    """Records calls, adds a metric and a summary key, keeps state, and deepens the model after epoch 0."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.epochs_seen = 0
        self.momentum_before = None

    def on_train_start(self, trainer):
        self.calls.append("train_start")

    def on_epoch_start(self, trainer, epoch):
        self.calls.append(f"epoch_start {epoch}")

    def extra_loss(self, trainer):
        self.calls.append("extra_loss")
        return 1e-4 * trainer.model.fc.weight.square().sum()

    def after_backward(self, trainer):
        assert trainer.model.fc.weight.grad is not None
        self.calls.append("after_backward")

    def on_step_end(self, trainer, step):
        self.calls.append(f"step_end {step}")

    def on_epoch_end(self, trainer, epoch, metrics):
        self.calls.append(f"epoch_end {epoch}")
        self.epochs_seen += 1
        metrics["recorder_epochs"] = self.epochs_seen
        if epoch == 0:
            old = {n: trainer.optimizer.state[p] for n, p in trainer.model.named_parameters()}
            self.momentum_before = old["layer2.0.conv1.weight"]["momentum_buffer"].clone()
            self.lr_before = trainer.optimizer.param_groups[0]["lr"]
            self.step_before = trainer.scheduler.last_epoch
            trainer.set_model(deeper(trainer.model), identity_map(trainer.model))

    def on_train_end(self, trainer, summary):
        self.calls.append("train_end")
        summary["recorder_epochs"] = self.epochs_seen

    def state_dict(self):
        return {"epochs_seen": self.epochs_seen}

    def load_state_dict(self, state):
        self.epochs_seen = state["epochs_seen"]


def test_hooks_are_called_in_order_and_can_replace_the_model(tmp_path):
    hook = Recorder()
    run = tmp_path / "run"
    trainer = Trainer(tiny(), [hook], run_dir=run)
    summary = trainer.fit()
    step = ["extra_loss", "after_backward"]
    assert hook.calls[:4] == ["train_start", "epoch_start 0", *step]
    assert hook.calls[4] == "step_end 1"
    assert hook.calls.index("epoch_end 0") < hook.calls.index("epoch_start 1")
    assert hook.calls[-2:] == ["epoch_end 1", "train_end"]
    assert hook.calls.count("extra_loss") == 8

    # set_model: new architecture, optimizer state carried by name, scheduler at the same step.
    assert trainer.model.spec.blocks_per_stage == [2, 1, 1]
    new_param = dict(trainer.model.named_parameters())["layer2.0.conv1.weight"]
    assert hook.step_before == 4
    assert trainer.scheduler.last_epoch == 8 and trainer.global_step == 8
    assert trainer.optimizer.state[new_param]["momentum_buffer"].shape == hook.momentum_before.shape
    assert len(trainer.optimizer.param_groups[0]["params"]) == len(
        [
            n
            for n, _ in trainer.model.named_parameters()
            if n.endswith("conv1.weight") or n.endswith("conv2.weight") or n == "fc.weight"
        ]
    )

    metrics = read_jsonl(run / "metrics.jsonl")
    assert [m["recorder_epochs"] for m in metrics] == [1, 2]
    assert summary["recorder_epochs"] == 2 and json.loads((run / "summary.json").read_text())["recorder_epochs"] == 2
    assert summary["blocks_per_stage"] == [2, 1, 1]
    events = read_jsonl(run / "events.jsonl")
    assert events[0]["kind"] == "model_replaced" and events[0]["epoch"] == 0 and events[0]["blocks"] == [2, 1, 1]
    ckpt = load_checkpoint(run / "last.safetensors")
    assert ckpt.spec.blocks_per_stage == [2, 1, 1]
    assert ckpt.hooks == [{"hook": "Recorder", "state": {"epochs_seen": 2}}]

    # A resumed (here: extended) run rebuilds the edited architecture and the hook's state.
    resumed_hook = Recorder()
    resumed = Trainer(tiny("train.epochs=3"), [resumed_hook], run_dir=run, resume=True)
    assert resumed.model.spec.blocks_per_stage == [2, 1, 1] and resumed.epoch == 2
    assert resumed_hook.epochs_seen == 2
    resumed.fit()
    assert [m["epoch"] for m in read_jsonl(run / "metrics.jsonl")] == [0, 1, 2]


def test_momentum_is_carried_exactly_by_set_model(tmp_path):
    trainer = Trainer(tiny("train.epochs=1"), run_dir=tmp_path / "run")
    trainer.fit()
    old = {n: trainer.optimizer.state[p] for n, p in trainer.model.named_parameters()}
    expected = old["layer3.0.conv2.weight"]["momentum_buffer"].clone()
    trainer.set_model(deeper(trainer.model), identity_map(trainer.model))
    new = dict(trainer.model.named_parameters())
    assert torch.equal(trainer.optimizer.state[new["layer3.0.conv2.weight"]]["momentum_buffer"], expected)
    assert new["layer1.1.conv1.weight"] not in trainer.optimizer.state  # the new block starts fresh
    with pytest.raises(TypeError, match="needs a reslab network"):
        trainer.set_model(torch.nn.Linear(2, 2))


def test_fast_path_settings_train(tmp_path):
    """bf16 autocast + channels_last, AdamW, warm-up, clipping and label smoothing together still learn."""
    config = tiny(
        "train.epochs=3",
        "train.precision=bf16",
        "train.channels_last=true",
        "optim.name=adamw",
        "optim.lr=3e-3",
        "optim.weight_decay=0.05",
        "train.grad_clip=1.0",
        "train.label_smoothing=0.1",
        "schedule.warmup_epochs=1",
    )
    trainer = Trainer(config, run_dir=tmp_path / "run")
    assert trainer.precision == "bf16" and trainer.channels_last
    assert trainer.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    summary = trainer.fit()
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert summary["test_accuracy"] > 0.5  # chance is 0.1
    assert summary["precision"] == "bf16" and summary["channels_last"] is True


def test_auto_precision_follows_the_hardware():
    expected = "bf16" if cpu_has_native_bf16() else "fp32"
    assert resolve_precision("auto", torch.device("cpu")) == expected
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"


def test_without_val_split_there_is_no_best_checkpoint(tmp_path):
    summary = Trainer(tiny("train.epochs=1", "data.val_fraction=0"), run_dir=tmp_path / "run").fit()
    assert summary["best_val_accuracy"] is None
    assert not (tmp_path / "run" / "best.safetensors").exists() and (tmp_path / "run" / "last.safetensors").exists()
    assert "val_acc" not in read_jsonl(tmp_path / "run" / "metrics.jsonl")[0]


def test_run_folder_conflicts_are_refused(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny("train.epochs=1"), run_dir=run).fit()
    with pytest.raises(TrainingError, match="already holds a run; resume it with --resume"):
        Trainer(tiny("train.epochs=1"), run_dir=run)
    # A lower lr is a remedy --resume accepts; a higher one changes the run.
    with pytest.raises(TrainingError, match=r"--resume: optim\.lr is 0\.5 but the run .* used 0\.05"):
        Trainer(tiny("train.epochs=1", "optim.lr=0.5"), run_dir=run, resume=True)
    fresh = Trainer(tiny("train.epochs=1"), run_dir=run, overwrite=True)
    assert fresh.epoch == 0 and not (run / "metrics.jsonl").exists()


def test_batch_larger_than_the_data_is_a_config_error(tmp_path):
    from reslab.train import ConfigError

    with pytest.raises(ConfigError, match=r"train\.batch_size: 4096 is larger than the 300 training images"):
        Trainer(tiny("train.batch_size=4096"), run_dir=tmp_path / "run")


def test_summary_costs_match_the_profile(tmp_path):
    summary = Trainer(tiny("train.epochs=1"), run_dir=tmp_path / "run").fit()
    from reslab.profile import profile

    model = reslab.create_model("resnet8", num_classes=10, in_chans=1)
    cost = profile(model, (1, 8, 8))
    assert (summary["params"], summary["macs"]) == (cost.params, cost.macs)
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and summary["test_images"] > 0
    assert summary["train_images_per_s"] > 0 and not math.isnan(summary["wall_time_s"])


def test_init_from_copies_matching_weights_and_records_it(tmp_path):
    source = Trainer(tiny("train.epochs=1"), run_dir=tmp_path / "source")
    source.fit()
    config = tiny("train.epochs=1", f"model.init_from={tmp_path / 'source' / 'model.safetensors'}", "seed=9")
    target = Trainer(config, run_dir=tmp_path / "target")
    for name, value in source.model.state_dict().items():
        assert torch.equal(target.model.state_dict()[name], value), name
    target.fit()
    (event,) = read_jsonl(tmp_path / "target" / "events.jsonl")
    assert event["kind"] == "init_from" and event["skipped"] == []


def test_a_spec_file_is_fitted_to_the_data(tmp_path):
    spec = reslab.model_spec("plain_resnet14")  # 3 channels, 10 classes
    spec.with_classes(4).save(tmp_path / "net.yaml")
    trainer = Trainer(
        tiny("model.name=null", f"model.spec={tmp_path / 'net.yaml'}", "model.drop_path=stochastic_depth"),
        run_dir=tmp_path / "run",
    )
    got = trainer.model.spec
    assert got.name == "plain_resnet14" and got.in_chans == 1 and got.num_classes == 10
    assert [b.shortcut for _, _, b in got.blocks()] == ["none"] * 6
    assert trainer.config.run_name == "digits_net"


class RestartAt(Hook):
    """Restarts the schedule at the end of one epoch; optionally stops the run (as a crash would) later."""

    def __init__(self, epoch: int, crash_at: int | None = None) -> None:
        self.epoch, self.crash_at = epoch, crash_at

    def on_epoch_start(self, trainer, epoch):
        if epoch == self.crash_at:
            raise KeyboardInterrupt

    def on_epoch_end(self, trainer, epoch, metrics):
        if epoch == self.epoch:
            trainer.restart_schedule()


def test_restart_schedule_starts_the_lr_again_and_survives_a_resume(tmp_path):
    overrides = ["train.epochs=5", "train.batch_size=256", "schedule.name=cosine", "optim.lr=0.1",
                 "train.progress=none", "output.tensorboard=false", "output.checkpoint_every=1",
                 "data.train_per_class=60"]
    config = load_config(None, overrides)

    def lrs(run_dir):
        return [json.loads(line)["lr"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    straight = Trainer(config, [RestartAt(1)], run_dir=tmp_path / "straight")
    straight.fit()
    crashed = Trainer(config, [RestartAt(1, crash_at=3)], run_dir=tmp_path / "crashed")
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    resumed = Trainer(config, [RestartAt(1)], run_dir=tmp_path / "crashed", resume=True)
    resumed.fit()
    first = lrs(tmp_path / "straight")
    # Epochs 0-1 follow the 5-epoch cosine; epochs 2-4 a fresh 3-epoch cosine from the base rate (each epoch
    # logs the lr of its first step).
    assert first[0] == first[2] == pytest.approx(0.1) and first[1] < first[0] and 0 < first[4] < first[3] < first[2]
    assert lrs(tmp_path / "crashed")[-3:] == pytest.approx(first[-3:], rel=1e-12)
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, msg=name)


class DroppedBlockWatch(Hook):
    """Records, per step, whether the last block's branch was dropped and whether the optimizer moved it."""

    def __init__(self) -> None:
        self.steps: list[tuple[bool, bool]] = []

    def after_backward(self, trainer):
        weight = trainer.model.blocks()[-1].conv2.weight
        assert weight.grad is not None, "a dropped branch must get a zero gradient, not None"
        self.dropped = bool((weight.grad == 0).all())
        self.before = weight.detach().clone()

    def on_step_end(self, trainer, step):
        weight = trainer.model.blocks()[-1].conv2.weight
        self.steps.append((self.dropped, not torch.equal(weight.detach(), self.before)))


def test_a_dropped_branch_still_gets_weight_decay_and_momentum(tmp_path):
    watch = DroppedBlockWatch()
    config = tiny("model.drop_path=stochastic_depth", "model.final_survival=0.5", "optim.weight_decay=0.01",
                  "train.precision=fp32", "model.zero_init_residual=false", "schedule.name=constant")
    Trainer(config, [watch], run_dir=tmp_path / "run").fit()
    dropped = [moved for was_dropped, moved in watch.steps if was_dropped]
    kept = [moved for was_dropped, moved in watch.steps if not was_dropped]
    assert dropped and kept, watch.steps  # survival 0.5 over 8 steps: both cases occur with this seed
    assert all(dropped) and all(kept)


def test_test_time_flip_scores_an_image_and_its_mirror_alike(tmp_path):
    """train.test_flip averages each image's logits with its mirror's: the prediction becomes mirror-invariant
    (a plain forward is not), and the run's evaluation and ``predict`` both use it."""
    from reslab.train.inference import eval_logits, predict

    trainer = Trainer(tiny("train.epochs=1", "train.test_flip=true"), run_dir=tmp_path / "run")
    summary = trainer.fit()
    model = trainer.model.eval()
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(eval_logits(model, x, flip=True), eval_logits(model, x.flip(3), flip=True))
        assert not torch.allclose(model(x), model(x.flip(3)), atol=1e-3)
    preds, labels = predict(model, trainer.data.test, batch_size=64, device=torch.device("cpu"), flip=True)
    assert summary["test_accuracy"] == pytest.approx(float((preds == labels).double().mean()))


def test_run_training_fits_releases_and_reports_a_stop(tmp_path):
    """The one build-fit-close path (reslab train, reslab build, analyze compare): a stop says what was
    saved, and the released folder resumes to the end."""
    run = tmp_path / "run"
    with pytest.raises(RunStopped) as stop:
        run_training(tiny("train.epochs=3"), [RestartAt(9, crash_at=2)], run_dir=run)
    assert (stop.value.run_dir, stop.value.epochs_saved, stop.value.terminated) == (run, 2, False)
    trainer, summary = run_training(tiny("train.epochs=3"), [RestartAt(9)], run_dir=run, resume=True)
    assert trainer.epoch == 3 and summary["report"] == str(run / "report.md") and (run / "summary.json").is_file()
    assert [m["epoch"] for m in read_jsonl(run / "metrics.jsonl")] == [0, 1, 2]


def test_test_every_scores_the_test_split_during_training_only_as_a_curve(tmp_path):
    """output.test_every: test accuracy in metrics.jsonl every N epochs (not on the last, which the summary
    scores), while the best checkpoint still follows val accuracy alone."""
    summary = Trainer(tiny("train.epochs=4", "output.test_every=2"), run_dir=tmp_path / "run").fit()
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [m["epoch"] for m in metrics if "test_acc" in m] == [1]
    assert 0.1 < metrics[1]["test_acc"] <= 1 and "test_loss" in metrics[1]
    assert summary["best_epoch"] == max(range(4), key=lambda e: (metrics[e]["val_acc"], -e))


def test_compile_trains_with_static_shapes_and_evaluates_through_the_compiled_module(tmp_path, monkeypatch):
    """train.compile wraps the model once with dynamic=False; evaluation (with the test-time flip) goes through
    the compiled module and scores what the bare model scores. aot_eager keeps the test fast."""
    from reslab.train.inference import predict

    real_compile, calls = torch.compile, []

    def compile_fast(module, **options):
        calls.append(options)
        return real_compile(module, backend="aot_eager", dynamic=options.get("dynamic"))

    monkeypatch.setattr(torch, "compile", compile_fast)
    trainer = Trainer(tiny("train.epochs=1", "train.compile=true", "train.test_flip=true"), run_dir=tmp_path / "r")
    summary = trainer.fit()
    assert calls == [{"dynamic": False}]
    preds, labels = predict(trainer.model, trainer.data.test, batch_size=64, device=torch.device("cpu"), flip=True)
    assert summary["test_accuracy"] == pytest.approx(float((preds == labels).double().mean()), abs=1e-9)
