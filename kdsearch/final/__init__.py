"""Final training: retrain chosen students at full budget, with their teacher and without."""

from typing import Any

from .arms import DEFAULT_GRID, DISTILL_ONLY, MODES, LrPolicy, final_table, headline

__all__ = ["train_final", "chosen_trial", "LrPolicy", "DEFAULT_GRID", "DISTILL_ONLY", "MODES", "headline",
           "final_table"]


def __getattr__(name: str) -> Any:
    """train_final and chosen_trial on first use: reports read results (final.arms) without importing the
    machinery that trains them."""
    if name in ("train_final", "chosen_trial"):
        from . import train  # on first use: importing the package for final.arms stays as light as arms
        globals()[name] = value = getattr(train, name)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
