"""Checkpoints: exact round trip of model, optimizer and RNG state; atomic writes; clear errors."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import reslab
import reslab.io
from reslab.io import CheckpointError
from reslab.train.checkpoint import (
    capture_rng,
    load_checkpoint,
    load_model,
    restore_rng,
    save_checkpoint,
    transfer_weights,
)
from reslab.train.config import OptimConfig
from reslab.train.optim import make_optimizer


def trained(opt_name: str = "sgd", steps: int = 3):
    torch.manual_seed(0)
    model = reslab.create_model("resnet8", num_classes=4, in_chans=1)
    opt = make_optimizer(model, OptimConfig(name=opt_name, lr=0.01))
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 4, (8,))
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, opt


@pytest.mark.parametrize("opt_name", ["sgd", "adamw"])
def test_round_trip_restores_model_and_optimizer_exactly(tmp_path, opt_name):
    model, opt = trained(opt_name)
    path = tmp_path / "last.safetensors"
    save_checkpoint(
        path,
        model=model,
        optimizer=opt,
        scheduler_state={"last_epoch": 3},
        epoch=2,
        global_step=3,
        hooks=[{"hook": "H", "state": {"n": 1}}],
        extra={"best_val_accuracy": 0.5},
    )
    ckpt = load_checkpoint(path)
    assert (ckpt.epoch, ckpt.global_step) == (2, 3)
    assert ckpt.scheduler_state == {"last_epoch": 3} and ckpt.extra["best_val_accuracy"] == 0.5
    assert ckpt.hooks == [{"hook": "H", "state": {"n": 1}}]
    assert ckpt.spec == model.spec
    rebuilt = ckpt.build_model()
    for (name, a), b in zip(model.state_dict().items(), rebuilt.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    fresh_opt = make_optimizer(rebuilt, OptimConfig(name=opt_name, lr=0.01))
    fresh_opt.load_state_dict(ckpt.optimizer_state)
    saved, loaded = opt.state_dict(), fresh_opt.state_dict()
    assert saved["param_groups"] == loaded["param_groups"]
    for index, entry in saved["state"].items():
        for key, value in entry.items():
            other = loaded["state"][index][key]
            assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other
    # The next step of both optimizers gives the same weights.
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 4, (4,))
    for m, o in ((model, opt), (rebuilt, fresh_opt)):
        o.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        o.step()
    assert torch.equal(model.fc.weight, rebuilt.fc.weight)


def test_rng_states_continue_the_same_streams():
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    state = capture_rng(cuda=False)
    first = (torch.rand(3), np.random.rand(3), random.random(), torch.randn(2))
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    restore_rng(*state)
    again = (torch.rand(3), np.random.rand(3), random.random(), torch.randn(2))
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2] == again[2] and torch.equal(first[3], again[3])


def test_rng_state_survives_the_file(tmp_path):
    model, opt = trained()
    torch.manual_seed(5)
    save_checkpoint(tmp_path / "c.safetensors", model=model, rng=capture_rng(cuda=False))
    expected = torch.rand(4)
    ckpt = load_checkpoint(tmp_path / "c.safetensors")
    restore_rng(ckpt.rng["tensors"], ckpt.rng["scalars"])
    assert torch.equal(torch.rand(4), expected)


def test_crash_while_writing_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    model, opt = trained(steps=1)
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, model=model, optimizer=opt, epoch=1)
    before = path.read_bytes()

    def crash_midway(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 100)  # a partial file, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(reslab.io, "save_file", crash_midway)
    model2, opt2 = trained(steps=2)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model=model2, optimizer=opt2, epoch=2)
    assert path.read_bytes() == before
    assert load_checkpoint(path).epoch == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]  # no temporary file left behind


def test_truncated_or_foreign_files_give_a_clear_error(tmp_path):
    model, opt = trained(steps=1)
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, model=model, optimizer=opt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"last\.safetensors: not a readable safetensors file"):
        load_checkpoint(path)
    path.write_text("not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"last\.safetensors"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_model_files_load_like_checkpoints(tmp_path):
    model, _ = trained(steps=1)
    reslab.io.save(model, tmp_path / "model.safetensors")
    save_checkpoint(tmp_path / "ckpt.safetensors", model=model)
    x = torch.randn(2, 1, 8, 8)
    expected = model.eval()(x)
    for name in ("model.safetensors", "ckpt.safetensors"):
        loaded = load_model(tmp_path / name)
        assert not loaded.training and torch.equal(loaded(x), expected)
    assert load_checkpoint(tmp_path / "model.safetensors").optimizer_state is None


def test_transfer_weights_skips_a_new_head():
    source, _ = trained(steps=1)
    target = reslab.create_model("resnet8", num_classes=7, in_chans=1)
    done = transfer_weights(target, source.state_dict(), "source.safetensors")
    assert done.kept == ["fc.bias", "fc.weight"] and done.head_replaced == (4, 7)
    assert "new classifier (4 classes in the file, 7 here)" in done.describe()
    assert torch.equal(target.layer3[0].conv2.weight, source.layer3[0].conv2.weight)
    other = reslab.create_model("resnet18", num_classes=7, in_chans=3)
    with pytest.raises(CheckpointError, match="no weight matches"):
        transfer_weights(other, {"x": torch.zeros(1)}, "source.safetensors", strict=False)
