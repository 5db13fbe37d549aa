"""Table cells of the results document: percentages, shares of the teacher, an arm's accuracy, a paired gain."""

from __future__ import annotations

import math
from typing import Any

from ..analysis.stats import excludes_zero


def pct(x: float | None, digits: int = 2) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}%"


def fraction(part: float, whole: float) -> str:
    """'6.1%, 1/16': a share of the teacher's size, as a percentage and as 1/N."""
    if not part or not whole:
        return ""
    return f"{part / whole:.1%}, 1/{whole / part:.0f}" if part < whole else f"{part / whole:.1%}"


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def arm_cell(arm: dict[str, Any] | None) -> str:
    """An arm's test accuracy as a table cell: mean ± sd over seeds, in percent."""
    if not arm:
        return ""
    sd = "" if math.isnan(arm["test_sd"]) else f" ± {100 * arm['test_sd']:.2f}"
    return f"{pct(arm['test_mean'])}{sd}"


def gain_cell(g: dict[str, Any] | None, pairs: int | None = None) -> str:
    """The paired gain in points with its interval; its seed count when it differs from the row's `pairs`."""
    if not g:
        return ""
    if g["n"] < 2:
        return f"{100 * g['mean']:+.2f} (1 seed)"
    mark = "" if excludes_zero(g["low"], g["high"]) else " (spans 0)"
    over = f" over {g['n']} seeds" if pairs is not None and g["n"] != pairs else ""
    return f"{100 * g['mean']:+.2f} [{100 * g['low']:+.2f}, {100 * g['high']:+.2f}]{mark}{over}"
