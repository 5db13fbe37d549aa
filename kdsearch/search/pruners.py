"""Early stopping of weak trials in a multi-objective study.

Optuna's `trial.report` and its pruners do not work in multi-objective studies, so each trial
keeps its per-epoch validation accuracy in the user attribute "curve" and a kdsearch pruner
decides from those curves. A pruner is anything with
`should_prune(history, curve, epochs, costs) -> bool`, where `costs` (params, MACs, latency) are
known before training starts: that is what lets the Pareto pruner compare a trial only with
trials that are no larger and no slower.

With `[pruner] checks_per_epoch = k` > 1 a trial is also checked k times per epoch (short trials:
a 2-epoch trial has no epoch at a quarter of it). Pruners then see the accuracy at every check (the
attribute "checks") in place of the curve and `epochs · k` in place of `epochs`: a pruner counts in
checks, and `make_pruner` converts the settings given in epochs (warm-up, rungs >= 1) to checks.
A check costs a pass over the validation split, so a trial measures only the mid-epoch checks its
pruner `looks_at` (the others are recorded as None); the epoch's last check is always measured (it is
the curve's value). `none` looks at every check: a study run without pruning records them all, so that
`replay` can try any pruner on it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..config import PrunerConfig
from ..runs.trial_attrs import CHECKS, COST_ATTRS, CURVE, PRUNED_AT  # noqa: F401  (importable from here too)
from ..runs.trial_attrs import rung_of


def check_curve(trial: FrozenTrial) -> list[float]:
    """What pruners compare: the accuracy at each check, which is the curve unless checks_per_epoch > 1."""
    return trial.user_attrs.get(CHECKS) or trial.user_attrs.get(CURVE) or []



class Pruner(Protocol):
    def should_prune(self, history: Sequence[FrozenTrial], curve: Sequence[float], epochs: int,
                     costs: dict[str, float]) -> bool:
        """Stop the trial whose validation curve so far is `curve` (costs known up front)?"""

    def looks_at(self, epoch: int, epochs: int) -> bool:
        """Whether should_prune can stop a trial at this epoch (check): the others need not be measured.
        Optional: a pruner without it has every check measured (see `looks_at` below)."""


def looks_at(pruner: Pruner, check: int, checks: int) -> bool:
    """The pruner's looks_at, or True for a pruner without one (it may look anywhere)."""
    method = getattr(pruner, "looks_at", None)
    return True if method is None else method(check, checks)


def _peers(history: Sequence[FrozenTrial], epoch: int) -> list[FrozenTrial]:
    """Trials whose curve reached `epoch` (check) and measured it."""
    return [t for t in history if len(c := check_curve(t)) >= epoch and c[epoch - 1] is not None]


def rung_at(rung: float, epochs: int) -> int:
    """A rung as an epoch: a number below 1 is a fraction of the trial's epochs (0.25 of 12 is 3)."""
    return max(1, int(rung * epochs + 0.5)) if rung < 1 else int(rung)  # half rounds up


def _checks(epoch: int, epochs: int, warmup: int, rungs: Sequence[float]) -> bool:
    """Whether a pruner looks at this epoch: after warm-up, before the last epoch, on a rung."""
    return warmup < epoch < epochs and (not rungs or epoch in {rung_at(r, epochs) for r in rungs})


@dataclass
class NoPruner:
    def should_prune(self, history, curve, epochs, costs) -> bool:
        return False

    def looks_at(self, epoch: int, epochs: int) -> bool:
        return True  # it stops nothing, but records every check: replay tries other pruners on them


@dataclass
class MedianPruner:
    """Prune when accuracy is below the median of finished trials at the same epoch.

    Checks only after `warmup_epochs`, only when at least `min_trials` finished trials reached
    that epoch, and never at a trial's last epoch (stopping then would save nothing).
    """

    warmup_epochs: int = 1
    min_trials: int = 4
    rungs: Sequence[float] = ()

    def looks_at(self, epoch: int, epochs: int) -> bool:
        return _checks(epoch, epochs, self.warmup_epochs, self.rungs)

    def should_prune(self, history, curve, epochs, costs) -> bool:
        epoch = len(curve)
        if not self.looks_at(epoch, epochs):
            return False
        peers = [check_curve(t)[epoch - 1] for t in _peers(history, epoch)]
        return len(peers) >= self.min_trials and curve[-1] < statistics.median(peers)


def rung_epochs(min_epochs: int, eta: int, rungs: Sequence[float], epochs: int) -> list[int]:
    """Successive halving's rungs: `rungs` when given, else min_epochs·eta^k below `epochs`."""
    if rungs:
        return sorted({rung_at(r, epochs) for r in rungs})
    out, e = [], min_epochs
    while e < epochs:
        out.append(e)
        e *= eta
    return out


@dataclass
class AshaPruner:
    """Successive halving on accuracy alone: at rung epochs min_epochs·eta^k keep the top 1/eta.

    A trial is pruned at a rung when fewer than 1/eta of the trials that reached it (itself
    included) are at most as good as it, once `min_trials` others reached the rung.
    """

    min_epochs: int = 1
    eta: int = 3
    min_trials: int = 4
    rungs: Sequence[float] = ()

    def rung_epochs(self, epochs: int) -> list[int]:
        return rung_epochs(self.min_epochs, self.eta, self.rungs, epochs)

    def looks_at(self, epoch: int, epochs: int) -> bool:
        return _checks(epoch, epochs, 0, self.rung_epochs(epochs))

    def should_prune(self, history, curve, epochs, costs) -> bool:
        epoch = len(curve)
        if not self.looks_at(epoch, epochs):
            return False
        peers = [check_curve(t)[epoch - 1] for t in _peers(history, epoch)]
        if len(peers) < self.min_trials:
            return False
        keep = max(1, (len(peers) + 1) // self.eta)
        better = sum(p > curve[-1] for p in peers)
        return better >= keep


@dataclass
class ParetoPruner:
    """Size-aware pruning: a trial continues only while it earns its size.

    At each checked epoch (after `warmup_epochs`, on `rungs`: by default at a quarter and at half
    of the trial's epochs), a trial is pruned when another trial that is no larger and no slower
    (every cost in `cost_keys` <=) had, at the same epoch, a validation accuracy above this one's
    by more than `margin`. The default margin, -0.01, prunes a trial unless it is at least one
    point more accurate than every such trial: a student that is not better than a cheaper one is
    unlikely to join the front. A trial with no cheaper competitor is never pruned, so small
    students are not killed for learning more slowly than big ones: they are only compared with
    students at least as small. Two checks rather than one per epoch: each check of a noisy
    early curve is a chance to kill a future front member (BENCHMARKS.md, "Search quality per
    pruner").
    """

    cost_keys: Sequence[str] = ("params", "latency")
    margin: float = -0.01
    warmup_epochs: int = 1
    rungs: Sequence[float] = (0.25, 0.5)

    def dominated_by(self, history, curve, costs) -> FrozenTrial | None:
        """The first no-larger, no-slower trial that beat `curve` at its last epoch by > margin."""
        epoch = len(curve)
        for t in _peers(history, epoch):
            cheaper = all(t.user_attrs.get(COST_ATTRS[k], float("inf")) <= costs[k] for k in self.cost_keys)
            if cheaper and check_curve(t)[epoch - 1] > curve[-1] + self.margin:
                return t
        return None

    def looks_at(self, epoch: int, epochs: int) -> bool:
        return _checks(epoch, epochs, self.warmup_epochs, self.rungs)

    def should_prune(self, history, curve, epochs, costs) -> bool:
        if not self.looks_at(len(curve), epochs):
            return False
        return self.dominated_by(history, curve, costs) is not None


def nondominated_ranks(points: Sequence[Sequence[float]]) -> list[int]:
    """Non-dominated sorting (all objectives minimized): 0 for the Pareto front, 1 for the front of
    the rest, and so on. O(n^2) per front: rungs hold at most a few hundred trials."""
    ranks = [-1] * len(points)
    left, rank = set(range(len(points))), 0
    while left:
        front = {i for i in left if not any(_dominates(points[j], points[i]) for j in left if j != i)}
        for i in front:
            ranks[i] = rank
        left -= front
        rank += 1
    return ranks


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def crowding_distances(points: Sequence[Sequence[float]]) -> list[float]:
    """NSGA-II's crowding distance within one front: boundary points get infinity."""
    n = len(points)
    dist = [0.0] * n
    for k in range(len(points[0]) if n else 0):
        order = sorted(range(n), key=lambda i: points[i][k])
        low, high = points[order[0]][k], points[order[-1]][k]
        dist[order[0]] = dist[order[-1]] = float("inf")
        if high > low:
            for a, i, b in zip(order, order[1:], order[2:]):
                dist[i] += (points[b][k] - points[a][k]) / (high - low)
    return dist


@dataclass
class MoAshaPruner:
    """Multi-objective asynchronous successive halving (Schmucker et al. 2021, MO-ASHA).

    At rung epochs min_epochs·eta^k (or `rungs`), the trials that reached the rung are ranked by
    non-dominated sorting on (accuracy at that epoch, costs), ties within a front broken by
    NSGA-II crowding distance; a trial continues only if it is in the top 1/eta, once `min_trials`
    others reached the rung. Unlike ASHA on accuracy alone, a small student is kept when nothing
    as small is more accurate, since it sits on the rung's first front.
    """

    cost_keys: Sequence[str] = ("params", "latency")
    min_epochs: int = 1
    eta: int = 3
    min_trials: int = 4
    rungs: Sequence[float] = ()

    def looks_at(self, epoch: int, epochs: int) -> bool:
        return _checks(epoch, epochs, 0, rung_epochs(self.min_epochs, self.eta, self.rungs, epochs))

    def should_prune(self, history, curve, epochs, costs) -> bool:
        epoch = len(curve)
        if not self.looks_at(epoch, epochs):
            return False
        peers = _peers(history, epoch)
        if len(peers) < self.min_trials:
            return False
        points = [(-check_curve(t)[epoch - 1], *(t.user_attrs.get(COST_ATTRS[k], float("inf"))
                                                      for k in self.cost_keys)) for t in peers]
        points.append((-curve[-1], *(costs[k] for k in self.cost_keys)))  # this trial: the last point
        ranks = nondominated_ranks(points)
        crowd = [0.0] * len(points)
        for r in set(ranks):
            members = [i for i, x in enumerate(ranks) if x == r]
            for i, d in zip(members, crowding_distances([points[i] for i in members])):
                crowd[i] = d
        order = sorted(range(len(points)), key=lambda i: (ranks[i], -crowd[i], i != len(points) - 1))
        keep = max(1, len(points) // self.eta)
        return order.index(len(points) - 1) >= keep


def make_pruner(cfg: PrunerConfig, objectives: Sequence[str] = ("accuracy", "params", "latency")) -> Pruner:
    """The configured pruner, counting in checks: with checks_per_epoch k, epochs given in the settings
    (warmup_epochs, rungs >= 1) become k checks each; fractions of the trial stay fractions."""
    k = cfg.checks_per_epoch
    rungs = tuple(r * k if r >= 1 else r for r in cfg.rungs or ())
    warmup = round(cfg.warmup_epochs * k)
    if cfg.name == "none":
        return NoPruner()
    if cfg.name == "median":
        return MedianPruner(warmup_epochs=warmup, min_trials=cfg.min_trials, rungs=rungs)
    if cfg.name == "asha":
        return AshaPruner(min_epochs=max(warmup, 1), eta=cfg.eta, min_trials=cfg.min_trials, rungs=rungs)
    if cfg.name == "moasha":
        return MoAshaPruner(cost_keys=tuple(o for o in objectives if o != "accuracy"), min_epochs=max(warmup, 1),
                            eta=cfg.eta, min_trials=cfg.min_trials, rungs=rungs)
    return ParetoPruner(cost_keys=tuple(o for o in objectives if o != "accuracy"), margin=cfg.margin,
                        warmup_epochs=warmup, rungs=ParetoPruner.rungs if cfg.rungs is None else rungs)


def replay(trials: Sequence[FrozenTrial], pruner: Pruner, epochs: int, checks_per_epoch: int = 1) -> list[FrozenTrial]:
    """The trials of a study run without pruning, as they would have ended under `pruner`.

    A trial's training does not depend on what happened to earlier trials (its seed comes from
    the study seed and its number), so under any pruner its curve is a prefix of its unpruned
    curve. When its student does not depend on earlier results either (the random sampler,
    seeded per trial number), replaying the trials in order, each against the history replayed
    before it, gives exactly what a sequential study with that pruner would have run
    (tests/test_pruning.py checks it against live studies), at no training cost. With a model-based
    sampler (TPE) the live study would have sampled other students after the first pruned trial,
    so there the replay estimates the savings on the same students. Trials that never trained
    (rejected, failed) pass through unchanged. With `checks_per_epoch` k > 1 (a study that recorded
    all its checks: run with --pruner none; `pruner` from make_pruner with the same k) the pruner sees
    the checks it looks at, and the others are None, as in a live study.
    """
    out: list[FrozenTrial] = []
    k = checks_per_epoch
    for t in sorted(trials, key=lambda t: t.number):
        points = checks_at(t, k) if t.state == TrialState.COMPLETE else []
        if not points:
            out.append(t)
            continue
        costs = {c: t.user_attrs[a] for c, a in COST_ATTRS.items() if a in t.user_attrs}
        history = [h for h in out if h.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        stop = next((e for e in range(1, len(points) + 1)
                     if pruner.should_prune(history, points[:e], epochs * k, costs)), None)
        attrs = {a: v for a, v in t.user_attrs.items() if a != CHECKS}  # the checks this replay sees, or none
        if k > 1:  # as a live study records them: mid-epoch checks the pruner does not look at are not measured
            attrs[CHECKS] = [p if c % k == 0 or looks_at(pruner, c, epochs * k) else None
                             for c, p in enumerate(points[:stop], 1)]
        if stop is None:
            out.append(t if attrs == t.user_attrs else optuna.trial.create_trial(
                state=t.state, values=t.values, params=t.params, distributions=t.distributions, user_attrs=attrs,
                system_attrs=t.system_attrs))
        else:
            attrs |= {CURVE: list(t.user_attrs.get(CURVE, []))[:stop // k], PRUNED_AT: pruned_at(stop, k)}
            out.append(optuna.trial.create_trial(state=TrialState.PRUNED, params=t.params, distributions=t.distributions,
                                                 user_attrs=attrs, system_attrs=t.system_attrs))
    return out


def checks_at(trial: FrozenTrial, checks_per_epoch: int) -> list[float]:
    """A trial's accuracy at `checks_per_epoch` checks per epoch, from the checks it recorded (every
    2nd of 4 per epoch for 2): what a replay under fewer checks sees."""
    curve = list(trial.user_attrs.get(CURVE, []))
    if checks_per_epoch == 1:
        return curve
    recorded = list(trial.user_attrs.get(CHECKS, []))
    every, rest = divmod(len(recorded), checks_per_epoch * len(curve)) if curve else (0, 1)
    if not recorded or rest or every < 1:
        raise ValueError(f"trial {trial.number} recorded {len(recorded)} checks over {len(curve)} epochs: "
                         f"not a multiple of {checks_per_epoch} per epoch")
    points = recorded[every - 1::every]
    if None in points:
        raise ValueError(f"trial {trial.number} measured only the checks its pruner looked at: replay needs a "
                         "study run with --pruner none (it records every check)")
    return points


def pruned_at(check: int, checks_per_epoch: int) -> int | float:
    """The epoch after which a trial stopped at `check`: a whole number at an epoch's end, else a fraction."""
    epoch = check / checks_per_epoch
    return int(epoch) if epoch == int(epoch) else round(epoch, 4)


def epochs_trained(trial: FrozenTrial) -> float:
    """The epochs a trial trained: where it was pruned (mid-epoch counts), else its curve's length."""
    if trial.state == TrialState.PRUNED and PRUNED_AT in trial.user_attrs:
        return float(trial.user_attrs[PRUNED_AT])
    return float(len(trial.user_attrs.get(CURVE, [])))


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete and pruned trials of the search's own budget: the history pruners compare against (a promoted
    student's curve is of another budget)."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            if not rung_of(t)]
