"""Statistics for comparing training runs over seeds: mean, spread, paired t-intervals.

Distilled and baseline students of one seed share their initialization, batch order and
views, so their test accuracies are paired: the per-seed difference removes the seed's own
luck, and a t-interval on those differences says whether the teacher's effect stands out from
seed noise.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Interval:
    mean: float
    low: float  # nan with fewer than two values
    high: float
    n: int
    level: float = 0.95

    @property
    def spans_zero(self) -> bool:
        """True when the interval holds 0 (or cannot be computed): no effect shown."""
        return not excludes_zero(self.low, self.high)

    def to_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n, "level": self.level}


def excludes_zero(low: float, high: float) -> bool:
    """Whether the interval [low, high] lies wholly above or below 0: an effect shown (never for nan ends).
    The one test of "the interval excludes zero" that train, results and their tables use."""
    return low > 0 or high < 0


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (nan for the sd of one value)."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def t_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Student-t confidence interval for the mean of `values` (e.g. per-seed paired differences)."""
    mean, sd = mean_sd(values)
    n = len(values)
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, level)
    from scipy.stats import t  # here: scipy.stats takes over a second to import, and workers import this module

    half = float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, level)


def paired_differences(a: dict[int, float], b: dict[int, float]) -> list[float]:
    """a[seed] - b[seed] for the seeds both have, in seed order."""
    return [a[s] - b[s] for s in sorted(a.keys() & b.keys())]
