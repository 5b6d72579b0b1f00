"""The loss seam (``Hook.loss``) and knowledge distillation built on it (``distill.*``)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import yaml

import reslab
from reslab import cli
from reslab.deploy.distill import DistillConfig, DistillHook, distill_loss, make_hook
from reslab.train import Hook, Trainer, load_config
from reslab.train.config import ConfigError
from reslab.train.inference import predict
from reslab.train.plugins import extra_hooks


def tiny(*overrides: str):
    """resnet8 on 600 digits: a run takes a few seconds."""
    return load_config(None, ["train.epochs=3", "train.batch_size=64", "data.train_per_class=60",
                              "train.progress=none", "output.tensorboard=false", "optim.lr=0.05", *overrides])


class AlwaysClassZero(Hook):
    """Replaces the loss by one that ignores the labels; records what the seam hands it."""

    def __init__(self) -> None:
        self.seen: list[tuple] = []

    def loss(self, trainer, inputs, targets, logits, loss):
        self.seen.append((inputs.shape, targets.shape, logits.shape, float(loss.detach())))
        return F.cross_entropy(logits.float(), torch.zeros_like(targets))


class AddsTen(Hook):
    def extra_loss(self, trainer):
        return torch.tensor(10.0)


def test_a_hook_can_replace_the_loss_and_sees_the_batch_and_logits(tmp_path):
    hook = AlwaysClassZero()
    trainer = Trainer(tiny("train.epochs=2"), [AddsTen(), hook], run_dir=tmp_path / "run")
    trainer.fit()
    inputs, targets, logits, loss = hook.seen[0]
    assert inputs == (64, 1, 8, 8) and targets == (64,) and logits == (64, 10)
    assert loss > 10  # the earlier hook's extra_loss term is in the loss it is handed
    preds, _ = predict(trainer.model, trainer.data.test, batch_size=256,
                                           device=torch.device("cpu"))
    assert (preds == 0).float().mean() > 0.95  # trained on the replaced loss, not on the labels


def test_distill_loss_is_hintons():
    torch.manual_seed(0)
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    p_t = F.softmax(t / 3, 1)
    by_hand = (p_t * (p_t.log() - F.log_softmax(s / 3, 1))).sum(1).mean() * 9
    torch.testing.assert_close(distill_loss(s, t, 3.0), by_hand)
    assert float(distill_loss(t, t, 3.0)) == pytest.approx(0.0, abs=1e-6)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A resnet8 trained on digits whose classifier rows are rolled by one: it calls a 3 a 4."""
    run = tmp_path_factory.mktemp("teacher") / "run"
    trainer = Trainer(tiny("train.epochs=4"), run_dir=run)
    trainer.fit()
    model = trainer.model
    with torch.no_grad():
        model.fc.weight.copy_(model.fc.weight.roll(1, 0))
        model.fc.bias.copy_(model.fc.bias.roll(1, 0))
    path = run.parent / "rolled.safetensors"
    reslab.save(model, path)
    return path


def test_a_student_learns_from_the_teacher_not_the_labels(teacher_file, tmp_path):
    # alpha = 1: the labels are not used, so the student must learn the teacher's (rolled) classes.
    config = tiny("train.epochs=4", f"distill.teacher={teacher_file}", "distill.alpha=1.0", "distill.temperature=2")
    hooks = extra_hooks(config)
    trainer = Trainer(config, hooks, run_dir=tmp_path / "run")
    summary = trainer.fit()
    (hook,) = hooks
    assert isinstance(hook, DistillHook) and not hook.teacher.training
    assert all(p.grad is None and not p.requires_grad for p in hook.teacher.parameters())
    device = torch.device("cpu")
    student, labels = predict(trainer.model, trainer.data.test, batch_size=256, device=device)
    teacher, _ = predict(hook.teacher, trainer.data.test, batch_size=256, device=device)
    assert (student == teacher).float().mean() > 0.6
    assert (student == labels).float().mean() < 0.2
    assert summary["distill"]["teacher"] == str(teacher_file) and summary["distill"]["alpha"] == 1.0
    assert summary["distill"]["teacher_model"] == "resnet8"
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(saved["distill"]["teacher_sha256"]) == 64
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["distill"]["teacher"] == str(teacher_file)


def test_reslab_build_distils_too(teacher_file, tmp_path, capsys):
    assert cli.main(["build", "--data", "digits", "--out", str(tmp_path), "--set", "train.epochs=8",
                     "--set", "data.train_per_class=10", "--set", "train.batch_size=50", "--set", "train.progress=none",
                     "--set", "output.tensorboard=false", "--set", f"distill.teacher={teacher_file}"]) == 0
    summary = json.loads((tmp_path / "digits_resbuilder" / "summary.json").read_text())
    assert summary["distill"]["teacher"] == str(teacher_file) and "resbuilder" in json.dumps(summary)


def test_bad_teachers_and_settings_give_one_clear_error(teacher_file, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(teacher_file.read_bytes()[:300])
    common = ["train", "--out", str(tmp_path), "--set", "train.epochs=1", "--set", "train.progress=none"]
    assert cli.main([*common, "--set", f"distill.teacher={corrupt}"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"reslab train: error: distill.teacher: {corrupt}:") and "\n" not in err
    with pytest.raises(ConfigError, match="distill.teacher: required"):
        make_hook(DistillConfig(alpha=0.5), tiny())
    assert cli.main([*common, "--set", f"distill.teacher={teacher_file}", "--set", "distill.temperature=0"]) == 1
    assert "distill.temperature: must be > 0.0" in capsys.readouterr().err
    assert cli.main([*common, "--set", f"distill.teacher={teacher_file}", "--set", "distill.tau=2"]) == 1
    assert "distill.tau: unknown key" in capsys.readouterr().err
    # a teacher for other images: 3 channels, 2 classes
    other = reslab.create_model("resnet8", num_classes=2, in_chans=3)
    reslab.save(other, tmp_path / "rgb_teacher.safetensors")
    assert cli.main([*common, "--set", f"distill.teacher={tmp_path / 'rgb_teacher.safetensors'}"]) == 1
    err = capsys.readouterr().err.strip()
    assert "distill.teacher:" in err and "3-channel images and 2 classes" in err and "\n" not in err
