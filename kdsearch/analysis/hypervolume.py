"""Hypervolume of an accuracy-vs-cost front, on linear or log10 params."""

from __future__ import annotations

import math
from collections.abc import Sequence


def hypervolume_2d(points: Sequence[tuple[float, float]], ref_cost: float) -> float:
    """Share of the box [0, ref_cost] x [0, 1] that (cost, accuracy) points dominate: 1.0 = a free, perfect model."""
    pts = sorted((c, a) for c, a in points if c < ref_cost)
    area, best = 0.0, 0.0
    for i, (c, a) in enumerate(pts):
        best = max(best, a)
        area += ((pts[i + 1][0] if i + 1 < len(pts) else ref_cost) - c) * best
    return area / ref_cost


LOW_PARAMS = 100.0  # log-params hypervolume: a student this small (or smaller) counts as free


def hypervolume_log(points: Sequence[tuple[float, float]], ref_params: float, low_params: float = LOW_PARAMS) -> float:
    """Hypervolume of (params, accuracy) points on log10 params, normalized to [0, 1]: log10 params
    mapped from [log10 low_params, log10 ref_params] to [0, 1] (clipped), reference point (1, 0).

    On linear params a front barely moves once one good small student exists (halving 2,000
    params to 1,000 is invisible next to a 460,000-param teacher); on log params each halving
    of a student's size counts the same, which is how a front of small students is judged.
    """
    lo, hi = math.log10(low_params), math.log10(max(ref_params, low_params * 10))

    def x(p: float) -> float:
        return min(max((math.log10(max(p, 1e-9)) - lo) / (hi - lo), 0.0), 1.0)

    return hypervolume_2d([(x(c), a) for c, a in points], 1.0)
