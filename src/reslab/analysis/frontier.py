"""The accuracy-against-cost curve of fixed networks, read at another network's cost.

A searched network is worth something when it is more accurate than fixed choices of the same cost. The
fixed networks (ResNet-8, -14, -20, -32: the same recipe, only the depth differs) give points
``(MACs, accuracy)``; between two neighbours the curve is the straight line in log-MACs (each added block
multiplies the cost, so equal steps of depth are nearly equal steps of log cost). Outside the points' range
the curve is not extrapolated: below the cheapest fixed network there is nothing of that cost to beat, and
the caller says so instead of inventing a number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .errors import AnalysisError


def curve_accuracy(points: Sequence[tuple[float, float]], macs: float) -> float | None:
    """The fixed-network curve's accuracy at ``macs`` (``None`` outside the points' range of MACs).

    ``points`` are ``(macs, accuracy)`` pairs of fixed networks, in any order; two at equal MACs are an
    error (the curve would not be a function of cost).
    """
    if not points:
        raise AnalysisError("curve_accuracy: no fixed networks to draw the curve from")
    ordered = sorted(points)
    if any(a[0] == b[0] for a, b in zip(ordered, ordered[1:])):
        raise AnalysisError(f"curve_accuracy: two fixed networks at the same MACs: {ordered}")
    if macs <= 0 or any(m <= 0 for m, _ in ordered):
        raise AnalysisError(f"curve_accuracy: MACs must be positive, got {macs} and {[m for m, _ in ordered]}")
    if not ordered[0][0] <= macs <= ordered[-1][0]:
        return None
    for (m0, a0), (m1, a1) in zip(ordered, ordered[1:]):
        if m0 <= macs <= m1:
            t = (math.log(macs) - math.log(m0)) / (math.log(m1) - math.log(m0))
            return a0 + t * (a1 - a0)
    return ordered[0][1]  # a single point, and macs equals it
