"""The papers' PyramidNet recipes in configs/ load, build the network they describe, and carry the paper's
reported error (or say that it was not verified) beside the settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from reslab.train.config import load_config
from reslab.train.model_setup import make_spec_from_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = {
    "pyramidnet110_a270_cifar10.yaml": ("none", 0.1),
    "pyramidnet110_a270_pyramiddrop_cifar10.yaml": ("stochastic_depth", 0.5),
    "pyramidnet110_a270_pyramidsepdrop_cifar10.yaml": ("separated", 0.5),
    "pyramidnet110_a270_shakedrop_cifar10.yaml": ("shakedrop", 0.5),
}


@pytest.mark.parametrize("file", sorted(RECIPES))
def test_recipe_matches_the_paper_setup(file):
    path = CONFIGS / file
    drop_path, lr = RECIPES[file]
    config = load_config(path)
    assert (config.train.epochs, config.train.batch_size) == (300, 128)
    assert config.schedule.name == "multistep" and config.schedule.milestones == [150, 225]
    assert config.optim.lr == lr and config.optim.weight_decay == 1e-4 and config.optim.nesterov
    assert config.data.augment.crop_padding == 4 and config.data.augment.hflip
    spec = make_spec_from_config(config, num_classes=10, in_chans=3)
    assert spec.name == "pyramidnet110_a270" and spec.num_blocks == 54
    blocks = [b for _, _, b in spec.blocks()]
    assert {b.drop_path for b in blocks} == {drop_path}
    if drop_path != "none":
        assert blocks[0].survival == pytest.approx(1 - 0.5 / 54) and blocks[-1].survival == 0.5
    assert "Paper's reported top-1 test error:" in path.read_text()
    if drop_path == "shakedrop":  # the pixel-level variant's figure, not a port's batch-level 16.22 %
        assert "15.78 %" in path.read_text()
