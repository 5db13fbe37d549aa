"""Picking one student from a study by a rule instead of a trial number.

Every rule looks only at the study's feasible Pareto members (`report.pareto_trials`: complete
trials within every budget that no other feasible trial dominates on all objectives). Pruned,
rejected, failed, running, over-budget and dominated trials are never picked.

- `min_accuracy A` (a fraction in (0, 1]): the smallest student, by params, whose validation
  accuracy is >= A. Ties: the more accurate, then the lower trial number.
- `max_params N`, `max_macs N`, `max_latency_ms X` (any of them together): the most accurate
  student within every limit given. Ties: fewer params, then the lower trial number. With
  `min_accuracy` the limits narrow its candidates instead (the smallest student with accuracy
  >= A within the limits).
- `knee`: the knee of the validation-accuracy vs params front. Take the 2-D front of the Pareto
  members (sorted by params, each more accurate than every smaller one); put each student at
  x = log10(params), y = validation accuracy, and normalize both axes to [0, 1] over that front,
  so the smallest student sits at (0, 0) and the most accurate at (1, 1). The knee is the student
  farthest above the straight line (the chord) joining those two: the largest (y - x) / sqrt(2).
  Ties go to the more accurate one, so a front of one or two students, or one with no student
  above the chord, gives its most accurate student. `knee` takes no other rule.

A rule that no student meets raises KDSearchError (the CLI prints one line and exits 2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import optuna
from optuna.trial import FrozenTrial

from ..errors import KDSearchError
from ..runs.trial_attrs import LATENCY_MS, MACS, PARAMS
from .front import pareto_trials, step_front


LIMITS = {"max_params": PARAMS, "max_macs": MACS, "max_latency_ms": LATENCY_MS}


@dataclass(frozen=True)
class Rule:
    """A picking rule: what `kdsearch train` and `kdsearch export` take instead of --trial."""

    min_accuracy: float | None = None
    max_params: int | None = None
    max_macs: int | None = None
    max_latency_ms: float | None = None
    knee: bool = False

    def __post_init__(self) -> None:
        a = self.min_accuracy
        if a is not None and not (isinstance(a, (int, float)) and math.isfinite(a) and 0 < a <= 1):
            raise KDSearchError(f"--min-accuracy: {a!r} is not a fraction in (0, 1] (write 0.9 for 90%)")
        for name in ("max_params", "max_macs"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise KDSearchError(f"--{name.replace('_', '-')}: must be an integer >= 1, got {v!r}")
        v = self.max_latency_ms
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise KDSearchError(f"--max-latency-ms: must be a number > 0, got {v!r}")
        if self.knee and (a is not None or self.limits):
            raise KDSearchError("--knee takes no other picking rule (--min-accuracy, --max-params, --max-macs, "
                                "--max-latency-ms)")

    @property
    def limits(self) -> dict[str, float]:
        """The cost limits given, by user attribute name (params, macs, latency_ms)."""
        return {attr: getattr(self, name) for name, attr in LIMITS.items() if getattr(self, name) is not None}

    @property
    def given(self) -> bool:
        return self.knee or self.min_accuracy is not None or bool(self.limits)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass
class Pick:
    """The trial a rule chose and, in words, why."""

    trial: FrozenTrial
    reason: str

    @property
    def number(self) -> int:
        return self.trial.number

    @property
    def sentence(self) -> str:
        return f"picked trial {self.number}: {self.reason}"


# ---------------------------------------------------------------------------------------------
# Helpers


def accuracy(t: FrozenTrial) -> float:
    return float(t.values[0])


def cost(t: FrozenTrial, attr: str) -> float | None:
    v = t.user_attrs.get(attr)
    return float(v) if v is not None else None


def params(t: FrozenTrial) -> float:
    p = cost(t, "params")
    return math.inf if p is None else p


def describe(t: FrozenTrial, attrs: Sequence[str] = ()) -> str:
    """'93.98%, 3,655 params' plus the costs in `attrs` (MACs, latency) that a rule looked at."""
    parts = [f"{accuracy(t):.2%}", f"{int(params(t)):,} params" if math.isfinite(params(t)) else "params unknown"]
    if "macs" in attrs and cost(t, "macs") is not None:
        parts.append(f"{int(cost(t, 'macs')):,} MACs")
    if LATENCY_MS in attrs and cost(t, LATENCY_MS) is not None:
        parts.append(f"{cost(t, LATENCY_MS):.3g} ms")
    return ", ".join(parts)


def limits_text(limits: dict[str, float]) -> str:
    words = {"params": lambda v: f"<= {int(v):,} params", "macs": lambda v: f"<= {int(v):,} MACs",
             "latency_ms": lambda v: f"<= {v:g} ms latency"}
    return ", ".join(words[k](v) for k, v in limits.items())


def within(members: Sequence[FrozenTrial], limits: dict[str, float]) -> list[FrozenTrial]:
    """The members whose every limited cost is known and at most its limit."""
    return [t for t in members if all((c := cost(t, k)) is not None and c <= v for k, v in limits.items())]


def _members(members: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    if not members:
        raise KDSearchError("no student to pick: the study has no complete trial within its budgets yet")
    return list(members)


# ---------------------------------------------------------------------------------------------
# The rules (each over the feasible Pareto members, e.g. report.pareto_trials(study))


def smallest_above(members: Sequence[FrozenTrial], min_accuracy: float,
                   limits: dict[str, float] | None = None) -> Pick:
    """The smallest member (by params) with validation accuracy >= `min_accuracy`, within `limits`."""
    members, limits = _members(members), limits or {}
    pool = within(members, limits)
    where = f" and {limits_text(limits)}" if limits else ""
    if not pool:
        raise KDSearchError(f"no Pareto student has {limits_text(limits)}")
    ok = [t for t in pool if accuracy(t) >= min_accuracy]
    if not ok:
        best = max(pool, key=accuracy)
        raise KDSearchError(f"no Pareto student has val accuracy >= {min_accuracy:.2%}{where} "
                            f"(the most accurate{' within the limits' if limits else ''} has {accuracy(best):.2%}, "
                            f"trial {best.number})")
    t = min(ok, key=lambda t: (params(t), -accuracy(t), t.number))
    return Pick(t, f"the smallest Pareto student with val accuracy >= {min_accuracy:.2%}{where} "
                   f"({describe(t, list(limits))})")


def most_accurate_within(members: Sequence[FrozenTrial], limits: dict[str, float]) -> Pick:
    """The most accurate member within every limit (params, macs, latency_ms: user attribute names)."""
    members = _members(members)
    if not limits:
        raise KDSearchError("give at least one limit: --max-params, --max-macs or --max-latency-ms")
    ok = within(members, limits)
    if not ok:
        first = next(iter(limits))
        known = [t for t in members if cost(t, first) is not None]
        least = f" (the least has {describe(min(known, key=lambda t: cost(t, first)), [first])})" if known else ""
        raise KDSearchError(f"no Pareto student has {limits_text(limits)}{least}")
    t = max(ok, key=lambda t: (accuracy(t), -params(t), -t.number))
    return Pick(t, f"the most accurate Pareto student with {limits_text(limits)} ({describe(t, list(limits))})")


def accuracy_params_front(members: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The members no other beats on both validation accuracy and params, smallest first."""
    return step_front(members, lambda t: cost(t, "params"), accuracy, lambda t: t.number)


def knee_distances(front: Sequence[FrozenTrial]) -> list[float]:
    """Signed distance of each point of a 2-D front (smallest first) above the chord joining its ends,
    on x = log10(params) and y = val accuracy, both normalized to [0, 1] over the front."""
    if len(front) < 2:
        return [0.0] * len(front)
    xs = [math.log10(max(params(t), 1.0)) for t in front]
    ys = [accuracy(t) for t in front]
    dx, dy = xs[-1] - xs[0], ys[-1] - ys[0]
    return [((y - ys[0]) / dy - (x - xs[0]) / dx) / math.sqrt(2) for x, y in zip(xs, ys)]


def knee(members: Sequence[FrozenTrial]) -> Pick:
    """The knee of the accuracy vs log10(params) front (see the module docstring for the exact rule)."""
    front = accuracy_params_front(_members(members))
    if not front:
        raise KDSearchError("no Pareto student records its params: no knee")
    dists = knee_distances(front)
    i = max(range(len(front)), key=lambda i: (round(dists[i], 12), accuracy(front[i])))
    t = front[i]
    if len(front) == 1:
        why = f"the only student on the val accuracy vs params front ({describe(t)})"
    elif dists[i] <= 1e-12:
        why = (f"the most accurate student ({describe(t)}): none of the {len(front)} on the val accuracy vs "
               "log10(params) front lies above the line joining its ends")
    else:
        why = (f"the knee of the val accuracy vs log10(params) front of {len(front)} students ({describe(t)}): "
               f"{dists[i]:.3f} above the line from trial {front[0].number} to trial {front[-1].number}, "
               "both axes normalized to [0, 1]")
    return Pick(t, why)


def choose(study_or_members: optuna.Study | Sequence[FrozenTrial], rule: Rule) -> Pick:
    """Apply `rule` to a study's feasible Pareto members (or to the given members)."""
    members = (pareto_trials(study_or_members) if isinstance(study_or_members, optuna.Study)
               else list(study_or_members))
    if rule.knee:
        return knee(members)
    if rule.min_accuracy is not None:
        return smallest_above(members, rule.min_accuracy, rule.limits)
    if rule.limits:
        return most_accurate_within(members, rule.limits)
    raise KDSearchError("no picking rule given: --min-accuracy, --max-params, --max-macs, --max-latency-ms or --knee")
