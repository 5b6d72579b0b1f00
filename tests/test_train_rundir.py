"""The run folder (issue 20): a resume trains the run the checkpoint belongs to, writes are atomic, one
process per folder, nothing reslab did not write is deleted, non-finite state never reaches a checkpoint,
and SIGTERM stops a run the way Ctrl-C does."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import torch

from reslab import cli
from reslab.io import save_state
from reslab.train import Hook, NonFiniteLoss, Trainer, TrainingError, load_checkpoint, load_config
from reslab.train.rundir import RunLock

TINY = ["train.batch_size=64", "data.train_per_class=30", "train.progress=none", "output.tensorboard=false"]


def tiny(*overrides: str):
    return load_config(None, [*TINY, "train.epochs=2", "optim.lr=0.05", *overrides])


def rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def interrupted_run(tmp_path, *overrides: str, stop_at: int = 1):
    """A run of 3 epochs at lr 0.05, Ctrl-C'd at the start of epoch ``stop_at`` (after the checkpoint)."""
    run = tmp_path / "r"
    config = load_config(None, [*TINY, "train.epochs=3", "optim.lr=0.05", "name=r", f"output.out_dir={tmp_path}",
                                *overrides])
    run_epoch = Trainer._run_epoch

    def stopping(trainer):
        if trainer.epoch == stop_at:
            raise KeyboardInterrupt
        run_epoch(trainer)

    with pytest.MonkeyPatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(Trainer, "_run_epoch", stopping)
        Trainer(config).fit()
    assert load_checkpoint(run / "last.safetensors").epoch == stop_at
    return run


def test_an_emptied_config_yaml_resumes_the_checkpoints_run(tmp_path):
    # Issue 20.1: an empty config.yaml used to mean "defaults": resnet8, 10 epochs, lr 0.1 on top of the run.
    run = interrupted_run(tmp_path)
    (run / "config.yaml").write_text("")
    assert cli.main(["train", "--resume", str(run)]) == 0
    config = load_config(run / "config.yaml")
    assert config.train.epochs == 3 and config.optim.lr == 0.05 and config.name == "r"
    assert json.loads((run / "summary.json").read_text())["epochs"] == 3
    assert [m["epoch"] for m in rows(run / "metrics.jsonl")] == [0, 1, 2]


def test_a_kill_while_resuming_loses_no_file(tmp_path, monkeypatch):
    # Issue 20.1: config.yaml and the logs were rewritten in place; a kill during a rewrite emptied them.
    run = interrupted_run(tmp_path, stop_at=2)
    before = {name: (run / name).read_text() for name in ("config.yaml", "metrics.jsonl", "events.jsonl")}
    real_write_text = pathlib.Path.write_text

    def killed_halfway(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise KeyboardInterrupt

    for call in range(3):  # config.yaml, then the rewrites of metrics.jsonl and events.jsonl
        def write_text(self, text, *args, calls=[], kill_at=call, **kwargs):  # noqa: B006 (counts this loop's calls)
            calls.append(self)
            if len(calls) == kill_at + 1:
                return killed_halfway(self, text, *args, **kwargs)
            return real_write_text(self, text, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "write_text", write_text)
        with pytest.raises(KeyboardInterrupt):
            Trainer(load_config(run / "config.yaml"), run_dir=run, resume=True)
        monkeypatch.undo()
        assert {name: (run / name).read_text() for name in before} == before, call
        assert not list(run.glob(".*.tmp"))
    assert Trainer(load_config(run / "config.yaml"), run_dir=run, resume=True).fit()["epochs"] == 3


def test_resume_with_fewer_epochs_than_done_is_refused(tmp_path, capsys):
    # Issue 20.7: config.yaml said 3 while summary.json said 6.
    run = interrupted_run(tmp_path, stop_at=2)
    assert cli.main(["train", "--resume", str(run), "--set", "train.epochs=1"]) == 1
    assert "train.epochs is 1 but" in capsys.readouterr().err
    assert load_config(run / "config.yaml").train.epochs == 3


class BlowUpBN(Hook):
    """Sets a BN running variance to inf at the end of epoch ``epoch``, as lr 1e6 does within a few epochs."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer, epoch, metrics):
        if epoch == self.epoch:
            trainer.model.layer1[0].bn1.running_var.fill_(float("inf"))


def test_non_finite_buffers_never_reach_a_checkpoint(tmp_path):
    # Issue 20.2: the guard checked the loss only; 'last' ended up holding inf BN running variances.
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLoss, match=r"non-finite values in 'layer1\.0\.bn1\.running_var' after epoch 2"):
        Trainer(tiny("train.epochs=3"), [BlowUpBN(1)], run_dir=run).fit()
    ckpt = load_checkpoint(run / "last.safetensors")  # refuses non-finite weights itself
    assert ckpt.epoch == 1
    assert load_checkpoint(run / "best.safetensors").epoch <= 1
    assert rows(run / "events.jsonl")[-1]["tensor"] == "layer1.0.bn1.running_var"


class NaNAtStep(Hook):
    def __init__(self, step: int) -> None:
        self.step = step

    def extra_loss(self, trainer):
        return torch.tensor(float("nan")) if trainer.global_step + 1 == self.step else None


def test_resume_accepts_the_remedies_it_advises(tmp_path):
    # Issue 20.2: the message said "lower optim.lr, set train.grad_clip or use fp32"; --resume refused all three.
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLoss, match="--resume accepts these changes"):
        Trainer(tiny("train.epochs=3"), [NaNAtStep(6)], run_dir=run).fit()
    remedied = tiny("train.epochs=3", "optim.lr=0.01", "train.grad_clip=1.0", "train.precision=fp32")
    trainer = Trainer(remedied, [NaNAtStep(0)], run_dir=run, resume=True)
    # The schedule continues at the same step with the lower peak.
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(trainer.scheduler.lr_lambdas[0](4) * 0.01)
    assert trainer.fit()["epochs"] == 3
    resumed = [e for e in rows(run / "events.jsonl") if e["kind"] == "resumed"]
    assert resumed[0]["changed"] == {
        "optim.lr": [0.05, 0.01], "train.grad_clip": [None, 1.0], "train.precision": ["auto", "fp32"]
    }
    with pytest.raises(TrainingError, match=r"optim\.momentum is 0\.5"):
        Trainer(tiny("train.epochs=4", "optim.lr=0.01", "optim.momentum=0.5"), [NaNAtStep(0)], run_dir=run,
                resume=True)


def test_one_process_per_run_folder(tmp_path):
    # Issue 20.5: two --resume of one run both ran; --overwrite of a live run deleted its files under it.
    run = tmp_path / "run"
    live = Trainer(tiny(), run_dir=run)
    for kwargs in ({"resume": True}, {"overwrite": True}):
        with pytest.raises(TrainingError, match="is in use by another reslab process"):
            Trainer(tiny(), run_dir=run, **kwargs)
    assert (run / "config.yaml").is_file()
    live.fit()  # the lock is released when the run ends
    assert Trainer(tiny("train.epochs=3"), run_dir=run, resume=True).fit()["epochs"] == 3


def test_the_lock_holds_across_processes(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from reslab.train.rundir import RunLock;"
         "lock = RunLock(Path(sys.argv[1])); print('locked', flush=True); time.sleep(60)", str(run)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(TrainingError, match=f"pid {holder.pid}"):
            RunLock(run)
    finally:
        holder.kill()
        holder.wait()
    RunLock(run).release()  # the lock died with its process


def test_files_reslab_did_not_write_are_never_deleted(tmp_path):
    # Issue 20.5: a fresh start into a folder without config.yaml deleted report.md and tensorboard/.
    run = tmp_path / "run"
    (run / "tensorboard").mkdir(parents=True)
    (run / "report.md").write_text("my notes")
    (run / "tensorboard" / "notes.txt").write_text("mine")
    with pytest.raises(TrainingError, match="holds report.md, which reslab did not write"):
        Trainer(tiny(), run_dir=run)
    assert (run / "report.md").read_text() == "my notes"
    (run / "report.md").unlink()
    Trainer(tiny("train.epochs=1", "output.tensorboard=true"), run_dir=run).fit()
    Trainer(tiny("train.epochs=1"), run_dir=run, overwrite=True)
    # --overwrite removed the run's TensorBoard events, not the file beside them.
    assert [p.name for p in (run / "tensorboard").iterdir()] == ["notes.txt"]


def test_orphaned_temporary_files_are_removed_on_resume(tmp_path):
    run = interrupted_run(tmp_path)
    orphans = [run / ".last.safetensors.abc123.tmp", run / ".config.yaml.x1.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"\0" * 1000)
    foreign = run / ".mine.tmp"
    foreign.write_text("not reslab's")
    Trainer(load_config(run / "config.yaml"), run_dir=run, resume=True)
    assert not any(p.exists() for p in orphans) and foreign.exists()


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c_and_says_what_is_kept(tmp_path):
    # Issue 20.6: SIGTERM (docker stop, SLURM preemption) ended a run with no message.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "reslab", "train", "--out", str(tmp_path), "--set", "name=t",
            *[a for s in TINY for a in ("--set", s)], "--set", "train.epochs=200"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env)
    run = tmp_path / "t"
    deadline = time.monotonic() + 300
    while not (run / "last.safetensors").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert "reslab train: SIGTERM: its checkpoint after epoch" in err and f"--resume {run}" in err
    assert not list(run.glob(".*.tmp"))
    done = load_checkpoint(run / "last.safetensors").epoch
    assert done >= 1 and [m["epoch"] for m in rows(run / "metrics.jsonl")][:done] == list(range(done))
    assert cli.main(["train", "--resume", str(run), "--set", f"train.epochs={done + 1}"]) == 0


def test_a_flipped_bit_in_a_checkpoint_is_refused(tmp_path):
    # Issue 20.7: one flipped bit loaded silently (12 % accuracy).
    run = interrupted_run(tmp_path)
    data = bytearray((run / "last.safetensors").read_bytes())
    data[-100] ^= 0x10
    (run / "last.safetensors").write_bytes(bytes(data))
    with pytest.raises(Exception, match="checksum mismatch"):
        Trainer(load_config(run / "config.yaml"), run_dir=run, resume=True)


def test_a_tampered_epoch_counter_is_refused(tmp_path):
    # Issue 20.7: an epoch counter of 10^9 or -5 was obeyed (here re-signed, as a crafted file would be).
    from reslab.io import load_state

    run = interrupted_run(tmp_path)
    tensors, meta = load_state(run / "last.safetensors")
    for epoch, message in ((10**9, "claims 1000000000 finished epochs"), (-5, "must be an integer in"),
                           ("1", "must be an integer in"), (3, "claims 3 finished epochs but its run has")):
        state = json.loads(meta["reslab.train_state"])
        state["epoch"] = epoch
        if epoch == 3:
            state["extra"]["config"]["train"]["epochs"] = 2
        save_state(run / "last.safetensors", tensors, {**meta, "reslab.train_state": json.dumps(state)})
        with pytest.raises((TrainingError, ValueError), match=message):
            Trainer(load_config(run / "config.yaml"), run_dir=run, resume=True)


def test_ctrl_c_says_which_checkpoint_is_kept(tmp_path, monkeypatch, capsys):
    run_epoch = Trainer._run_epoch

    def interrupted(trainer):
        if trainer.epoch == 2:
            raise KeyboardInterrupt
        run_epoch(trainer)

    monkeypatch.setattr(Trainer, "_run_epoch", interrupted)
    args = ["train", "--out", str(tmp_path), "--set", "name=c", *[a for s in TINY for a in ("--set", s)]]
    assert cli.main([*args, "--set", "train.epochs=3"]) == 130
    err = capsys.readouterr().err
    assert err == (f"reslab train: interrupted: its checkpoint after epoch 2 is kept (the partial epoch is not "
                   f"saved); continue with reslab train --resume {tmp_path / 'c'}\n")
    monkeypatch.undo()
    assert cli.main(["train", "--resume", str(tmp_path / "c")]) == 0
