"""Comparing linearisation curves at equal average path length (APL), as Mehmeti-Göpel & Disselhoff
(arXiv 2211.17180) compare channel-wise and layer-wise linearisation.

A linearisation study gives, per mode and seed, points (APL, accuracy): the network at several counts of
nonlinear units. The two modes reach different APLs at equal unit counts, so each curve is read as accuracy
against APL, interpolated linearly between its points (never extrapolated), on an APL grid that every curve
covers; the two modes are then compared seed by seed at each grid point (``reslab.analysis.paired``).
The APL itself is ``LinearizableNet.average_path_length``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import AnalysisError
from .paired import Paired, paired

Curve = Sequence[tuple[float, float]]  # (apl, accuracy) points, in any order


def accuracy_at(curve: Curve, apl: float) -> float:
    """The curve's accuracy at ``apl``, linear between neighbouring points; nan outside the curve's range.

    Points at the same APL are averaged first (several unit counts can share one APL, e.g. all 0)."""
    if not curve:
        raise AnalysisError("accuracy_at: the curve has no points")
    by_apl: dict[float, list[float]] = {}
    for x, y in curve:
        by_apl.setdefault(float(x), []).append(float(y))
    xs = sorted(by_apl)
    ys = [sum(by_apl[x]) / len(by_apl[x]) for x in xs]
    if not xs[0] <= apl <= xs[-1]:
        return math.nan
    i = bisect.bisect_left(xs, apl)
    if xs[i] == apl:
        return ys[i]
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (apl - x0) / (x1 - x0)


def common_grid(curves: Sequence[Curve], points: int) -> list[float]:
    """``points`` evenly spaced APLs inside the range that every curve covers ([] when they do not overlap)."""
    if points < 1:
        raise AnalysisError(f"common_grid: points must be >= 1, got {points}")
    low = max(min(x for x, _ in c) for c in curves)
    high = min(max(x for x, _ in c) for c in curves)
    if low > high:
        return []
    if points == 1 or low == high:
        return [(low + high) / 2]
    return [low + (high - low) * i / (points - 1) for i in range(points)]


@dataclass(frozen=True)
class EqualAplPoint:
    apl: float
    a: tuple[float, ...]  # per-seed accuracy of the first mode at this APL
    b: tuple[float, ...]
    diff: Paired  # a - b, seed by seed


def compare_at_equal_apl(a: Sequence[Curve], b: Sequence[Curve], points: int = 5) -> list[EqualAplPoint]:
    """Curves ``a`` and ``b`` (one per seed, in the same seed order) compared on their common APL grid."""
    if len(a) != len(b) or not a:
        raise AnalysisError(f"compare_at_equal_apl: need one curve per seed on both sides, got {len(a)} and "
                            f"{len(b)}")
    out = []
    for apl in common_grid([*a, *b], points):
        acc_a = tuple(accuracy_at(c, apl) for c in a)
        acc_b = tuple(accuracy_at(c, apl) for c in b)
        out.append(EqualAplPoint(apl, acc_a, acc_b, paired(acc_a, acc_b)))
    return out
