"""The verdict rule of the evidence tables: paired per-seed differences, mean ± 2 standard errors."""

from __future__ import annotations

import math

import pytest

from reslab.analysis.errors import AnalysisError
from reslab.analysis.paired import CONTRADICTED, HOLDS, INCONCLUSIVE, paired


def test_paired_differences_and_standard_error():
    p = paired([71.0, 72.0, 73.5], [70.0, 70.0, 70.5])
    assert p.diffs == (1.0, 2.0, 3.0)
    assert p.mean == pytest.approx(2.0)
    assert p.se == pytest.approx(1.0 / math.sqrt(3))  # sd of (1, 2, 3) is 1
    assert p.verdict == HOLDS  # 2 - 2 * 0.577 > 0
    assert p.show(unit=" points") == "+2.00 ± 1.15 points"


def test_paired_verdicts_follow_the_sign_and_the_noise():
    assert paired([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]).verdict == CONTRADICTED  # -1, -2, -3
    # A large mean with a larger spread stays inside the noise: +5 mean, SE 5.
    assert paired([10.0, 0.0, 20.0], [0.0, 5.0, 10.0]).verdict == INCONCLUSIVE
    # Pairing removes what the seeds share: both sides swing by 10 points from seed to seed (far more than
    # the gap), but seed by seed the difference is about +0.5.
    assert paired([50.5, 60.6, 70.4], [50.0, 60.0, 70.0]).verdict == HOLDS


def test_paired_one_seed_is_inconclusive_and_mismatched_seeds_are_an_error():
    one = paired([80.0], [70.0])
    assert one.verdict == INCONCLUSIVE and math.isnan(one.se) and one.show() == "+10.00 ± n/a"
    with pytest.raises(AnalysisError, match="same seeds"):
        paired([1.0, 2.0], [1.0])


def test_a_difference_at_most_a_limit_is_judged_by_both_ends_of_its_interval():
    # Drops of 0.1-0.3 points: real (every seed lost accuracy) but well inside a 1-point tolerance.
    small = paired([98.3, 98.4, 98.2], [98.1, 98.1, 98.1])
    assert small.verdict == HOLDS and small.at_most(1.0) == HOLDS
    large = paired([98.0, 98.2, 98.1], [96.0, 96.1, 96.3])  # about 2 points lost on every seed
    assert large.at_most(1.0) == CONTRADICTED
    noisy = paired([98.0, 98.0, 98.0], [97.9, 96.0, 97.4])  # mean drop 0.9, spread too wide to say
    assert noisy.at_most(1.0) == INCONCLUSIVE
    assert paired([98.0], [97.0]).at_most(1.0) == INCONCLUSIVE  # one seed: no spread to judge by
