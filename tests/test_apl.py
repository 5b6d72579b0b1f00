"""Linearisation curves compared at equal average path length: interpolation, common grid, paired verdicts;
and the APL of hand-countable networks after linearising whole layers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.fx
from torch.fx.passes.shape_prop import ShapeProp

from reslab.analysis import LinearizableNet
from reslab.analysis.apl import accuracy_at, common_grid, compare_at_equal_apl, graph_apl
from reslab.analysis.errors import AnalysisError
from reslab.analysis.paired import HOLDS, INCONCLUSIVE
from reslab.build import build
from reslab.zoo import make_spec


def test_accuracy_at_interpolates_inside_and_refuses_to_extrapolate():
    curve = [(10.0, 0.9), (0.0, 0.1), (4.0, 0.5), (4.0, 0.7)]  # unordered; two points share APL 4
    assert accuracy_at(curve, 4.0) == pytest.approx(0.6)
    assert accuracy_at(curve, 2.0) == pytest.approx(0.35)  # halfway between 0.1 and 0.6
    assert accuracy_at(curve, 7.0) == pytest.approx(0.75)  # halfway between 0.6 and 0.9
    assert accuracy_at(curve, 0.0) == pytest.approx(0.1) and accuracy_at(curve, 10.0) == pytest.approx(0.9)
    assert math.isnan(accuracy_at(curve, 10.5)) and math.isnan(accuracy_at(curve, -0.1))
    assert accuracy_at([(3.0, 0.4)], 3.0) == 0.4
    with pytest.raises(AnalysisError, match="no points"):
        accuracy_at([], 1.0)


def test_common_grid_is_the_overlap_of_all_curves():
    assert common_grid([[(0.0, 0.1), (10.0, 0.9)], [(2.0, 0.3), (12.0, 0.8)]], 5) == [2.0, 4.0, 6.0, 8.0, 10.0]
    assert common_grid([[(0.0, 0.1), (1.0, 0.2)], [(2.0, 0.3), (3.0, 0.4)]], 3) == []
    assert common_grid([[(1.0, 0.5), (3.0, 0.6)]], 1) == [2.0]


def test_compare_at_equal_apl_reads_both_curves_at_the_same_depth():
    # Mode a reaches a lower APL than mode b at every unit count, but at equal APL it is 0.1 better for
    # every seed: the comparison must see that, whatever the unit counts were.
    a = [[(0.0, 0.2 + s), (4.0, 0.6 + s), (8.0, 0.9 + s)] for s in (0.0, 0.01, 0.02)]
    b = [[(0.0, 0.1 + s), (8.0, 0.8 + s), (10.0, 0.85 + s)] for s in (0.0, 0.01, 0.02)]
    points = compare_at_equal_apl(a, b, points=3)
    assert [p.apl for p in points] == [0.0, 4.0, 8.0]
    assert points[1].a == pytest.approx((0.6, 0.61, 0.62)) and points[1].b == pytest.approx((0.45, 0.46, 0.47))
    assert all(p.diff.verdict == HOLDS for p in points)
    noisy = compare_at_equal_apl([[(0, 0.5), (8, 0.9)], [(0, 0.3), (8, 0.5)]], [[(0, 0.4), (8, 0.6)]] * 2, 2)
    assert [p.diff.verdict for p in noisy] == [INCONCLUSIVE, INCONCLUSIVE]  # +0.1 and -0.1: inside the noise
    with pytest.raises(AnalysisError, match="one curve per seed"):
        compare_at_equal_apl(a, b[:2])


def test_apl_counts_nonlinear_layers_on_the_average_path():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    # resnet8: stem ReLU + 3 blocks x (branch ReLU, ReLU after the sum) = 7 layers on the plain twin's one path.
    plain = LinearizableNet(build(make_spec("plain_resnet8", num_classes=10)), "layer", x)
    assert len(plain.sites) == 7 and plain.average_path_length() == 7.0
    # The residual net: a path takes the branch (1 nonlinearity) or the skip (0) with probability 1/2, then the
    # ReLU after the sum: +1.5 per block. Blocks 2 and 3 double the width with a zero-padded shortcut: in the
    # new half of the channels no path comes through the skip, so the path takes the branch: +1.75 there.
    residual = LinearizableNet(build(make_spec("resnet8", num_classes=10)), "layer", x)
    assert residual.average_path_length() == pytest.approx(1 + 1.5 + 2 * 1.75)
    # Linearising a branch layer removes a whole nonlinearity from the plain path but only half of one from
    # the residual paths (half of them skip it), three quarters in a widening block.
    for net in (plain, residual):
        dict((s.name, u) for s, u in net.units())["layer1.0.act1"].linear.fill_(True)
    assert plain.average_path_length() == 6.0
    assert residual.average_path_length() == pytest.approx(6.0 - 0.5)
    dict((s.name, u) for s, u in residual.units())["layer2.0.act1"].linear.fill_(True)
    assert residual.average_path_length() == pytest.approx(6.0 - 0.5 - 0.75)


def test_apl_of_a_pyramidnet_keeps_paths_out_of_padded_channels():
    # pyramidnet8_a12: stem without ReLU; one pre-activation-style block per stage (BN-conv-BN-ReLU-conv-BN),
    # widths 16 -> 20 -> 24 -> 28, every shortcut zero-padded; the head's BN-ReLU sits after the last sum.
    # Block b: the branch adds 1; of its w_b output channels, w_{b-1} get (d + d + 1) / 2 = d + 1/2 and the
    # 4 new ones d + 1, so the mean grows by 1/2 + 4 / (2 w_b).
    net = LinearizableNet(build(make_spec("pyramidnet8_a12", num_classes=10)), "layer", torch.randn(2, 3, 16, 16))
    expected = sum(0.5 + 4 / (2 * w) for w in (20, 24, 28)) + 1
    assert net.average_path_length() == pytest.approx(expected)


def test_graph_apl_counts_channel_by_channel_through_concatenation():
    class Toy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.u1, self.b = torch.nn.Conv2d(3, 4, 1), torch.nn.ReLU(), torch.nn.Conv2d(7, 2, 1)

        def forward(self, x):
            return self.b(torch.cat([self.u1(self.a(x)), x], dim=1))

    traced = torch.fx.symbolic_trace(Toy())
    ShapeProp(traced).propagate(torch.randn(1, 3, 4, 4))
    # The last conv picks one of 7 channels: 4 behind the unit, 3 straight from the input.
    assert graph_apl(traced, {"u1": torch.ones(4)}) == pytest.approx(4 / 7)
    assert graph_apl(traced, {"u1": torch.tensor([1.0, 0.0, 1.0, 0.0])}) == pytest.approx(2 / 7)
    assert graph_apl(traced, {"u1": torch.zeros(1)}) == 0.0  # one entry for the whole layer
