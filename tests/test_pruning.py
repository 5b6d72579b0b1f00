"""Torch-Pruning as a client: its DependencyGraph + MagnitudePruner leave every zoo family runnable, and the
pruned network saves (its widths derived into the spec) and loads back with the same outputs."""

from __future__ import annotations

import pytest
import torch
import torch_pruning as tp

import reslab
from reslab.layers import ZeroPadShortcut

# One small network per family: option-A and option-B CIFAR ResNets, the plain twin, a Wide ResNet, both
# PyramidNets (zero-padded shortcuts, avg-pooled) and the torchvision ImageNet ResNets.
FAMILIES = ["resnet8", "resnet8_b", "plain_resnet8", "wrn10_1", "pyramidnet8_a24", "pyramidnet11_a24_bottleneck",
            "resnet18", "resnet50"]


@pytest.mark.parametrize("name", FAMILIES)
def test_magnitude_pruning_leaves_the_network_runnable_and_savable(name, tmp_path):
    torch.manual_seed(0)
    model = reslab.create_model(name, num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    before = sum(p.numel() for p in model.parameters())
    pruner = tp.pruner.MagnitudePruner(model, x, importance=tp.importance.MagnitudeImportance(p=2),
                                       pruning_ratio=0.5, ignored_layers=[model.fc])
    pruner.step()
    assert sum(p.numel() for p in model.parameters()) < 0.6 * before
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    reslab.save(model, tmp_path / "pruned.safetensors")  # the spec now states the pruned widths
    assert model.spec.stem.out_chans < reslab.model_spec(name).stem.out_chans
    loaded = reslab.load(tmp_path / "pruned.safetensors").eval()
    assert loaded.spec == model.spec
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), out, rtol=0, atol=0)


def test_zero_padding_follows_the_actual_channel_counts():
    pad = ZeroPadShortcut(16, 32, stride=2, pool="subsample")
    x = torch.randn(1, 12, 8, 8)  # a pruner cut the input to 12 channels and the branch to 20
    out = pad(x, 20)
    assert out.shape == (1, 20, 4, 4)
    assert torch.equal(out[:, :12], x[:, :, ::2, ::2]) and not out[:, 12:].any()
    assert pad(torch.randn(1, 16, 8, 8)).shape == (1, 32, 4, 4)  # unpruned: the built counts
