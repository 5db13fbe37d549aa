"""The Pareto front that report, pick, train and results all use, and trials as points."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from ..runs.trial_attrs import LATENCY_MS, PARAMS, is_reference, rejected, repeated, rung_of


T = TypeVar("T")


def feasible(trial: FrozenTrial) -> bool:
    """Within every budget (constraints set through trial.set_constraint are <= 0)."""
    return all(v <= 0 for v in trial.constraints.values())


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The search's non-dominated, feasible complete trials, most accurate first: Optuna's own front among
    the trials that are not enqueued hand-written references (those are there to be compared with), read at
    the highest rung (search.promote): once students were promoted, the front is theirs at the longest budget,
    never a mix of accuracies from different budgets."""
    searched = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if feasible(t) and not is_reference(t.user_attrs)]
    top = max((rung_rank(t) for t in searched), default=None)
    front = non_dominated([t for t in searched if rung_rank(t) == top], study.directions)
    return sorted(front, key=lambda t: (-t.values[0], t.user_attrs.get("params", 0)))


def rung_rank(trial: FrozenTrial) -> tuple[int, int]:
    """Orders budgets: the search's short trials (0, 0) below any rung, rungs by epochs then images (0: all)."""
    rung = rung_of(trial)
    return (rung["epochs"], rung["images"] or 2**62) if rung else (0, 0)


def non_dominated(trials: Sequence[FrozenTrial], directions: Sequence[optuna.study.StudyDirection]) -> list[FrozenTrial]:
    """The trials no other trial dominates (at least as good in every objective, better in one), as
    Study.best_trials computes them, for any subset of a study's trials."""
    if not trials:
        return []
    sign = np.array([1.0 if d == optuna.study.StudyDirection.MINIMIZE else -1.0 for d in directions])
    loss = np.array([t.values for t in trials], dtype=float) * sign
    return [t for t, row in zip(trials, loss)
            if not np.any(np.all(loss <= row, axis=1) & np.any(loss < row, axis=1))]


@dataclass
class Point:
    """One trial as the figures and tables see it."""

    number: int
    state: str  # complete, pruned, rejected (over budget, never trained), failed, running
    accuracy: float | None  # final validation accuracy, or the last one before pruning
    attrs: dict[str, Any]
    feasible: bool
    pareto: bool = False
    test_accuracy: float | None = None
    curve: list[float] = field(default_factory=list)

    def cost(self, name: str) -> float | None:
        value = self.attrs.get(name)
        return float(value) if value is not None else None


TRIAL_STATES = ("complete", "pruned", "rejected", "repeated", "failed", "running")  # trial_state's, in report order


def trial_state(t: FrozenTrial) -> str:
    if t.state == TrialState.COMPLETE:
        return "complete"
    if t.state == TrialState.PRUNED:
        return "rejected" if rejected(t) else "repeated" if repeated(t) else "pruned"
    return "failed" if t.state == TrialState.FAIL else "running"


def trial_points(study: optuna.Study, test_accuracy: dict[int, float] | None = None) -> list[Point]:
    """Every trial in number order, Pareto members marked."""
    front = {t.number for t in pareto_trials(study)}
    out = []
    for t in study.get_trials(deepcopy=False):
        curve = list(t.user_attrs.get("curve", []))
        state = trial_state(t)
        acc = t.values[0] if state == "complete" and t.values else (curve[-1] if curve else None)
        out.append(Point(number=t.number, state=state, accuracy=acc, attrs=t.user_attrs, feasible=feasible(t),
                         pareto=t.number in front, test_accuracy=(test_accuracy or {}).get(t.number), curve=curve))
    return out


def cost_names(study: optuna.Study) -> list[str]:
    """The cost objectives' attribute names (params, latency_ms or macs), in study order."""
    names = study.metric_names or ["val_accuracy", PARAMS, LATENCY_MS][: len(study.directions)]
    return list(names[1:])


def step_front(items: Iterable[T], cost: Callable[[T], float | None], accuracy: Callable[[T], float],
               number: Callable[[T], int]) -> list[T]:
    """The accuracy-vs-one-cost front: the items that no other beats on both (higher accuracy at no
    higher cost), cheapest first. Items whose cost is unknown (None) or not finite are left out; at
    equal cost the more accurate, then the lower-numbered item comes first."""
    known = [t for t in items if (c := cost(t)) is not None and math.isfinite(c)]
    front, best = [], -math.inf
    for t in sorted(known, key=lambda t: (cost(t), -accuracy(t), number(t))):
        if accuracy(t) > best:
            front.append(t)
            best = accuracy(t)
    return front


def front_2d(points: Sequence[Point], cost: str) -> list[Point]:
    """Complete, feasible trials that no other one beats on both accuracy and `cost`: the step line."""
    return step_front((p for p in points if p.state == "complete" and p.feasible), lambda p: p.cost(cost),
                      lambda p: p.accuracy, lambda p: p.number)
