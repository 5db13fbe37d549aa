"""What a strategy gives the study loop: how one trial's student gets its objective values."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import optuna

Evaluate = Callable[[optuna.Trial], "tuple[float, ...]"]


@dataclass(frozen=True)
class Evaluation:
    """A strategy, prepared in this process. `evaluate(trial)` samples a student (the trial's parameters),
    records its spec and costs as user attributes, rejects it over budget (search.budgets.reject_over_budget
    raises optuna.TrialPruned), scores it, saves it as RUN/trials/<n>/ and returns the objectives' values;
    any other error fails the trial alone (search.objective)."""

    evaluate: Evaluate
    trains: bool = True  # trials train students (minutes each): estimated up front, one line per finished trial
