"""Fine-tuning: train.freeze keeps frozen weights and BN statistics fixed, unfreeze_epoch lifts it (also across
--resume, bit for bit), optim.backbone_lr_mult gives the backbone its own learning rate."""

from __future__ import annotations

import pytest
import torch

from reslab.train import Hook, Trainer, load_config
from reslab.train.config import ConfigError


def tiny(*overrides: str):
    """resnet8 on 300 digits (4 steps per epoch)."""
    return load_config(None, ["train.epochs=2", "train.batch_size=64", "data.train_per_class=30",
                              "train.progress=none", "output.tensorboard=false", "optim.lr=0.05", *overrides])


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def moved(before: dict, after: dict, prefix: str) -> list[str]:
    return [k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])]


def test_frozen_backbone_keeps_weights_and_batch_norm_statistics(tmp_path):
    trainer = Trainer(tiny("train.freeze=backbone"), run_dir=tmp_path / "run")
    before = snapshot(trainer.model)
    trainer.fit()
    after = snapshot(trainer.model)
    backbone = [k for k in before if not k.startswith("fc.")]
    assert any("running_mean" in k for k in backbone) and any("num_batches_tracked" in k for k in backbone)
    assert [k for k in backbone if not torch.equal(before[k], after[k])] == []
    assert moved(before, after, "fc.") == ["fc.weight", "fc.bias"]


def test_freezing_a_list_of_prefixes_freezes_only_those(tmp_path):
    trainer = Trainer(tiny("train.freeze=[stem, layer1]", "train.epochs=1"), run_dir=tmp_path / "run")
    before = snapshot(trainer.model)
    trainer.fit()
    after = snapshot(trainer.model)
    assert moved(before, after, "conv1.") == moved(before, after, "bn1.") == moved(before, after, "layer1.") == []
    assert "layer2.0.bn1.running_mean" in moved(before, after, "layer2.")
    assert "layer2.0.conv1.weight" in moved(before, after, "layer2.")


class StopAt(Hook):
    """Kills the run at the start of an epoch (after the previous one's checkpoint), like a crash."""

    def __init__(self, epoch: int | None) -> None:
        self.epoch = epoch

    def on_epoch_start(self, trainer, epoch):
        if epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("killed_at", [1, 3])  # before and after the unfreeze at epoch 2
def test_resume_across_the_unfreeze_gives_the_uninterrupted_weights(tmp_path, killed_at):
    settings = ("train.epochs=4", "train.freeze=backbone", "train.unfreeze_epoch=2", "optim.backbone_lr_mult=0.3",
                "seed=4")
    straight = Trainer(tiny(*settings), [StopAt(None)], run_dir=tmp_path / "straight")
    straight.fit()
    first = Trainer(tiny(*settings), [StopAt(killed_at)], run_dir=tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    resumed = Trainer(tiny(*settings), [StopAt(None)], run_dir=tmp_path / "killed", resume=True)
    assert resumed.epoch == killed_at
    resumed.fit()
    want, got = straight.model.state_dict(), resumed.model.state_dict()
    assert [k for k in want if not torch.equal(want[k], got[k])] == []
    events = (tmp_path / "killed" / "events.jsonl").read_text()
    assert events.count("unfrozen at epoch 2") == 1 and events.index("frozen until") < events.index("unfrozen")


def test_unfreezing_trains_the_backbone_with_its_own_learning_rate(tmp_path):
    trainer = Trainer(tiny("train.epochs=2", "train.freeze=backbone", "train.unfreeze_epoch=1",
                           "optim.backbone_lr_mult=0.1", "schedule.name=constant"), run_dir=tmp_path / "run")
    groups = {g["group_name"]: g for g in trainer.optimizer.param_groups}
    assert groups["backbone_decay"]["lr"] == pytest.approx(0.005) and groups["head_decay"]["lr"] == 0.05
    head = {id(p) for p in trainer.model.fc.parameters()}
    assert all(id(p) in head for g in groups.values() if g["group_name"].startswith("head") for p in g["params"])
    assert sum(len(g["params"]) for g in groups.values()) == len(list(trainer.model.parameters()))
    before = snapshot(trainer.model)
    trainer.fit()
    after = snapshot(trainer.model)
    assert "layer1.0.conv1.weight" in moved(before, after, "layer1.")
    assert "layer1.0.bn1.running_mean" in moved(before, after, "layer1.")


def test_freeze_settings_are_checked():
    with pytest.raises(ConfigError, match="train.freeze: must be none, backbone or a list"):
        tiny("train.freeze=everything")
    with pytest.raises(ConfigError, match="train.unfreeze_epoch: nothing is frozen"):
        tiny("train.unfreeze_epoch=2")
    with pytest.raises(ConfigError, match="optim.backbone_lr_mult: must be >= 0"):
        tiny("optim.backbone_lr_mult=-1")


def test_a_freeze_prefix_naming_no_module_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="train.freeze: 'layer9' names no module of resnet8"):
        Trainer(tiny("train.freeze=[layer9]"), run_dir=tmp_path / "run")
