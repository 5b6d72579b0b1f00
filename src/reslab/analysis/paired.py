"""Paired comparisons over seeds, with one plain verdict rule for every evidence table.

Two variants run with the same seeds differ, seed by seed, by ``d_s = a_s - b_s``. With n seeds the mean
difference has standard error ``SE = sd(d) / sqrt(n)``; the claim "a beats b" *holds* when
``mean - 2 SE > 0``, is *contradicted* when ``mean + 2 SE < 0`` and is *inconclusive* otherwise (the
difference is inside the noise). With one seed there is no spread to judge by: always inconclusive.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import AnalysisError

HOLDS, CONTRADICTED, INCONCLUSIVE = "holds", "contradicted", "inconclusive"


@dataclass(frozen=True)
class Paired:
    """The per-seed differences ``a - b`` and what they say about "a beats b"."""

    diffs: tuple[float, ...]
    mean: float
    se: float  # standard error of the mean difference (nan with one seed)
    verdict: str

    def at_most(self, limit: float) -> str:
        """The verdict on "a - b is at most ``limit``" (say, an accuracy drop within a tolerance): holds when
        even the upper end mean + 2 SE is, contradicted when even the lower end mean - 2 SE exceeds it. A real
        but small difference is thus within the limit, which the sign rule of ``verdict`` cannot say."""
        if math.isnan(self.se):
            return INCONCLUSIVE
        if self.mean + 2 * self.se <= limit:
            return HOLDS
        return CONTRADICTED if self.mean - 2 * self.se > limit else INCONCLUSIVE

    def show(self, scale: float = 1.0, unit: str = "") -> str:
        """``+1.23 ± 0.45 points``: the mean difference ± 2 SE, times ``scale``."""
        spread = "n/a" if math.isnan(self.se) else f"{2 * scale * self.se:.2f}"
        return f"{scale * self.mean:+.2f} ± {spread}{unit}"


def paired(a: Sequence[float], b: Sequence[float]) -> Paired:
    """Compare ``a`` and ``b``, two equally long lists whose i-th entries come from the same seed."""
    if len(a) != len(b) or not a:
        raise AnalysisError(f"paired: need the same seeds on both sides, got {len(a)} and {len(b)} values")
    diffs = tuple(x - y for x, y in zip(a, b, strict=True))
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return Paired(diffs, mean, math.nan, INCONCLUSIVE)
    se = statistics.stdev(diffs) / math.sqrt(len(diffs))
    verdict = HOLDS if mean - 2 * se > 0 else CONTRADICTED if mean + 2 * se < 0 else INCONCLUSIVE
    return Paired(diffs, mean, se, verdict)
