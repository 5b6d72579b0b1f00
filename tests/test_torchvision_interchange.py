"""ImageNet ResNets are torchvision's, parameter for parameter, and paper parameter counts hold."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
import torchvision

import reslab
from reslab.io import CheckpointError, load_torchvision_weights
from reslab.profile import count_params

TORCHVISION = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2",
               "wide_resnet101_2"]


def randomise_bn_stats(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial running statistics, so that eval outputs depend on every buffer."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_state_dict_loads_strictly_and_gives_same_outputs(name):
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, name)(weights=None).eval()
    randomise_bn_stats(theirs, 1)
    ours = reslab.create_model(name).eval()
    assert count_params(ours) == count_params(theirs)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)
    # And the other way round: a reslab state dict is a torchvision state dict.
    back = getattr(torchvision.models, name)(weights=None).eval()
    back.load_state_dict(ours.state_dict(), strict=True)


def test_torchvision_pth_file_loads_weights_only(tmp_path):
    theirs = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(theirs.state_dict(), path)
    ours = reslab.create_model("resnet18").eval()
    load_torchvision_weights(ours, path)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))
    wrong = reslab.create_model("resnet34")
    with pytest.raises(CheckpointError, match=r"resnet18\.pth: weights do not match the spec \(missing key"):
        load_torchvision_weights(wrong, path)


class _Evil:
    def __reduce__(self):
        return (exec, ("raise SystemExit('code from a file ran')",))


def test_torchvision_loader_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _Evil()}, path)
    with pytest.raises(CheckpointError, match="evil.pth: not a readable weights-only PyTorch file"):
        load_torchvision_weights(reslab.create_model("resnet18"), path)


# Parameter counts from the papers' tables: He et al. 2015 (CIFAR ResNets), Zagoruyko & Komodakis 2016
# (WRN-28-10), Han et al. 2017 (PyramidNet). Tolerance 2 %.
PAPER_PARAMS = {
    "resnet20": 0.27e6,
    "resnet32": 0.46e6,
    "resnet44": 0.66e6,
    "resnet56": 0.85e6,
    "resnet110": 1.7e6,
    "resnet1202": 19.4e6,
    "wrn28_10": 36.5e6,
}


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_parameter_counts_match_the_papers(name):
    with torch.device("meta"):
        model = reslab.create_model(name)
    expected = PAPER_PARAMS[name]
    assert abs(count_params(model) - expected) / expected < 0.02, (name, count_params(model))


def pyramid_widths(depth: int, alpha: int, bottleneck: bool) -> list[int]:
    """The authors' widths in exact arithmetic: block i of N has floor(16 + i alpha / N + 1/2) channels."""
    n_total = 3 * (depth - 2) // (9 if bottleneck else 6)
    return [math.floor(16 + Fraction(i * alpha, n_total) + Fraction(1, 2)) for i in range(1, n_total + 1)]


def pyramid_params(depth: int, alpha: int, bottleneck: bool, num_classes: int = 10) -> int:
    """Parameters of the authors' PyramidNet, counted layer by layer from the widths alone."""
    total, chans = 3 * 9 * 16 + 2 * 16, 16  # stem conv + BN
    for planes in pyramid_widths(depth, alpha, bottleneck):
        if bottleneck:  # BN, 1x1, BN, 3x3, BN, 1x1 (x4), BN
            out = 4 * planes
            total += 2 * chans + chans * planes + 2 * planes + 9 * planes * planes + 2 * planes
            total += planes * out + 2 * out
        else:  # BN, 3x3, BN, 3x3, BN
            out = planes
            total += 2 * chans + 9 * chans * planes + 2 * planes + 9 * planes * planes + 2 * planes
        chans = out
    return total + 2 * chans + chans * num_classes + num_classes  # final BN + classifier


# Han et al. 2017, Table 4: final width and parameters (given to 0.1 M; the table's figures sit 0.6-4 % below
# the layer-by-layer count of the authors' own code, consistently, so they are checked at that precision).
PYRAMID_TABLE = {
    ("pyramidnet110_a48", 110, 48, False): (64, 1.7e6),
    ("pyramidnet110_a84", 110, 84, False): (100, 3.8e6),
    ("pyramidnet110_a270", 110, 270, False): (286, 28.3e6),
    ("pyramidnet164_a270_bottleneck", 164, 270, True): (286 * 4, 27.0e6),
    ("pyramidnet200_a240_bottleneck", 200, 240, True): (1024, 26.6e6),
    ("pyramidnet236_a220_bottleneck", 236, 220, True): (236 * 4, 26.8e6),
    ("pyramidnet272_a200_bottleneck", 272, 200, True): (216 * 4, 26.0e6),
}


@pytest.mark.parametrize("row", sorted(PYRAMID_TABLE), ids=lambda r: r[0])
def test_pyramidnet_widths_round_like_the_authors_code(row):
    name, depth, alpha, bottleneck = row
    final_width, paper_params = PYRAMID_TABLE[row]
    spec = reslab.make_spec(name)
    blocks = [b for stage in spec.stages for b in stage]
    assert [b.out_chans for b in blocks] == [w * (4 if bottleneck else 1)
                                             for w in pyramid_widths(depth, alpha, bottleneck)]
    assert spec.head.in_chans == final_width == 16 * (4 if bottleneck else 1) + alpha * (4 if bottleneck else 1)
    with torch.device("meta"):
        model = reslab.create_model(name)
    assert count_params(model) == pyramid_params(depth, alpha, bottleneck)
    assert 0 < (count_params(model) - paper_params) / paper_params < 0.05


def test_plain_twin_has_the_same_layers_minus_projections():
    res, plain = reslab.create_model("resnet20"), reslab.create_model("plain_resnet20")
    assert count_params(res) == count_params(plain)  # option A shortcuts have no parameters
    res_b, plain_b = reslab.create_model("resnet20_b"), reslab.create_model("plain_resnet20_b")
    assert count_params(res_b) - count_params(plain_b) == 16 * 32 + 2 * 32 + 32 * 64 + 2 * 64
