"""The fixed-network curve that a searched network is judged against (``reslab.analysis.frontier``)."""

from __future__ import annotations

import math

import pytest

from reslab.analysis.errors import AnalysisError
from reslab.analysis.frontier import curve_accuracy

# ResNet-8 / -14 / -20 on the 5,000-image CIFAR-10 subset (MMACs, accuracy %), given in shuffled order.
FIXED = [(40.6, 71.36), (12.2, 65.48), (26.4, 68.96)]


def test_the_curve_passes_through_the_fixed_networks():
    for macs, accuracy in FIXED:
        assert curve_accuracy(FIXED, macs) == pytest.approx(accuracy)


def test_between_neighbours_it_is_a_straight_line_in_log_macs():
    # Halfway between ResNet-8 and ResNet-14 in log cost, not in cost: the geometric mean of their MACs.
    middle = math.sqrt(12.2 * 26.4)
    assert curve_accuracy(FIXED, middle) == pytest.approx((65.48 + 68.96) / 2)
    # The arithmetic mean lies past the log-midpoint, so it reads higher than the linear-in-MACs average.
    assert curve_accuracy(FIXED, (12.2 + 26.4) / 2) > (65.48 + 68.96) / 2
    # Past ResNet-14 the next segment (to ResNet-20) applies.
    assert 68.96 < curve_accuracy(FIXED, 30.0) < 71.36


def test_no_extrapolation_outside_the_fixed_networks_costs():
    assert curve_accuracy(FIXED, 10.1) is None  # cheaper than ResNet-8: nothing of that cost to compare
    assert curve_accuracy(FIXED, 41.0) is None


def test_bad_points_are_named():
    with pytest.raises(AnalysisError, match="no fixed networks"):
        curve_accuracy([], 10.0)
    with pytest.raises(AnalysisError, match="same MACs"):
        curve_accuracy([(12.2, 65.0), (12.2, 66.0)], 12.2)
    with pytest.raises(AnalysisError, match="positive"):
        curve_accuracy(FIXED, 0.0)
