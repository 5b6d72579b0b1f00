"""What a person reads: one epoch numbering, the lr each epoch used, the run's ETA, TensorBoard's per-step
loss and hparams, the report path once, evaluation that does not depend on the CPU, quiet decode logs."""

from __future__ import annotations

import json
import re
import sys
import types

import pytest
import torch

from reslab import cli
from reslab.train import Trainer, load_config
from reslab.train.progress import Progress, format_seconds, run_eta

TINY = ["--set", "train.batch_size=64", "--set", "data.train_per_class=30", "--set", "train.progress=plain"]


def run_cli(argv: list[str]) -> tuple[int, str]:
    lines: list[str] = []
    capture = pytest.MonkeyPatch()
    capture.setattr(sys, "stdout", types.SimpleNamespace(write=lines.append, flush=lambda: None, isatty=lambda: False))
    try:
        code = cli.main(argv)
    finally:
        capture.undo()
    return code, "".join(lines)


@pytest.fixture(scope="module")
def step_run(tmp_path_factory):
    """Two epochs of a multistep schedule that divides the lr by 10 after the first epoch, then a resume."""
    out = tmp_path_factory.mktemp("runs")
    schedule = ["--set", "schedule.name=multistep", "--set", "schedule.milestones=[1]", "--set", "optim.lr=0.1"]
    code, first = run_cli(["train", *TINY, *schedule, "--set", "train.epochs=2", "--out", str(out)])
    assert code == 0
    run = out / "digits_resnet8"
    code, resumed = run_cli(["train", "--resume", str(run), "--set", "train.epochs=3", "--set", "train.progress=plain"])
    assert code == 0
    return run, first, resumed


def test_logged_lr_is_the_lr_the_epoch_trained_with(step_run):
    run, _, _ = step_run
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # Epoch 0 trains at 0.1 (the milestone divides the lr after it); epochs 1 and 2 at 0.01.
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert [r["lr"] for r in rows] == pytest.approx([0.1, 0.01, 0.01])


def test_console_and_report_count_epochs_from_one(step_run):
    run, first, resumed = step_run
    # The bar's lines, the epoch's summary line and the resume message use the same numbers.
    assert re.search(r"^epoch 1/2 step \d+/\d+ ", first, re.M)
    assert re.findall(r"^epoch (\d)/2 lr ", first, re.M) == ["1", "2"]
    assert "epoch 0" not in first and "epoch 0" not in resumed
    assert "(resuming after epoch 2)" in resumed
    assert re.findall(r"^epoch (\d)/3 lr ", resumed, re.M) == ["3"]
    report = (run / "report.md").read_text()
    table = [line.split("|")[1].strip() for line in report.splitlines() if re.match(r"\| \d+ \|", line)]
    assert table == ["1", "2", "3"]
    assert "- epoch 3: **resumed** global_step=8, from_epochs_done=2" in report
    # The files count from 0, as documented: the resumed event happened at epoch index 2.
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [(e["kind"], e["epoch"]) for e in events] == [("resumed", 2)]


def test_report_path_printed_once_and_run_eta_shown(step_run):
    run, first, _ = step_run
    assert first.count("report:") == 1 and f"report: {run / 'report.md'}" in first
    assert re.search(r"epoch eta \d+s .* run eta \d+", first)


def test_tensorboard_gets_per_step_loss_and_hparams(step_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _, _ = step_run
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("train_loss_step")]
    summary = json.loads((run / "summary.json").read_text())
    assert steps == list(range(1, summary["steps"] + 1))
    assert acc.Scalars("lr")[0].value == pytest.approx(0.1)
    assert acc.Scalars("hparam/test_accuracy")[-1].value == pytest.approx(summary["test_accuracy"])
    plugin = acc.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in plugin and "_hparams_/session_start_info" in plugin
    assert b"optim.lr" in plugin["_hparams_/session_start_info"]


def test_run_eta_counts_the_epochs_still_to_come():
    assert run_eta(elapsed=10.0, steps_done=5, steps_left=15) == pytest.approx(30.0)
    assert [format_seconds(s) for s in (42, 185, 7620)] == ["42s", "3m05s", "2h07m"]
    lines: list[str] = []
    progress = Progress("plain")
    progress.mode = "plain"
    import builtins

    real_print = builtins.print
    builtins.print = lambda *a, **k: lines.append(" ".join(map(str, a)))
    try:
        progress.start_epoch(0, 3, 8)
        for step in range(1, 9):
            progress.update(step, 1.0, 0.5, 64 * step)
    finally:
        builtins.print = real_print
    assert lines and all("run eta" in line for line in lines)


def test_evaluation_is_fp32_whatever_the_training_precision(tmp_path):
    if not torch.cpu._is_avx512_bf16_supported() and not torch.cpu._is_amx_tile_supported():
        pytest.skip("this CPU has no bf16 units: precision auto trains in fp32 here")
    config = load_config(
        None,
        [
            "train.epochs=1",
            "data.train_per_class=30",
            "train.progress=none",
            "output.tensorboard=false",
            f"output.out_dir={tmp_path}",
        ],
    )
    trainer = Trainer(config)
    assert trainer.precision == "bf16"  # training uses the fast path
    calls = []
    real = torch.autocast.__enter__
    torch.autocast.__enter__ = lambda self: calls.append(self.fast_dtype) or real(self)
    try:
        result = trainer.evaluate(trainer.data.test)
    finally:
        torch.autocast.__enter__ = real
    assert calls == []
    model = trainer.model.eval()
    with torch.no_grad():
        x, y = next(trainer.data.test.batches(len(trainer.data.test), shuffle=False, augment=False))
        fp32 = (model(x).argmax(1) == y).double().mean().item()
    assert result["accuracy"] == fp32


@pytest.mark.parametrize("progress", ["plain", "none", "auto"])
def test_decode_progress_obeys_train_progress_and_writes_no_carriage_returns(
    progress, tmp_path, write_image, monkeypatch, capsys
):
    import reslab.data.decode as decode_module
    from reslab.data import DataConfig, load_data

    for label, name in enumerate(("cat", "dog")):
        for i in range(6):
            image = torch.full((3, 8, 8), 40 * label + i, dtype=torch.uint8)
            write_image(tmp_path / "train" / name / f"{i}.png", image)
            write_image(tmp_path / "test" / name / f"{i}.png", image)
    monkeypatch.setattr(decode_module, "PROGRESS_FROM", 1)  # a bar for these 12 images, as for 60k
    load_data(DataConfig(name="imagefolder", data_dir=str(tmp_path), num_workers=0), progress=progress)
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "\r" not in out  # pytest's stdout is not a terminal: auto means plain
    if progress == "none":
        assert out == ""
    else:
        assert re.search(r"^decoding 12 images of .*train", out, re.M) and re.search(r"^decoded 12 images", out, re.M)


def test_tensorboard_is_optional(tmp_path, monkeypatch, capsys):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real_find_spec(name, *a)
    )
    args = ["train", *TINY, "--set", "train.epochs=1", "--set", "train.progress=none", "--out", str(tmp_path)]
    # Without the package the default run trains and writes everything else.
    assert cli.main(args) == 0
    assert (tmp_path / "digits_resnet8" / "report.md").is_file() and not (
        tmp_path / "digits_resnet8" / "tensorboard"
    ).exists()
    # Asking for it without the package is one clear error naming the key.
    assert cli.main([*args, "--overwrite", "--set", "output.tensorboard=true"]) == 1
    assert "output.tensorboard: true, but the tensorboard package is not installed" in capsys.readouterr().err
