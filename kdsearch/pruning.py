"""Early stopping of weak trials in a multi-objective study.

Optuna's `trial.report` and its pruners do not work in multi-objective studies, so each trial
keeps its per-epoch validation accuracy in the user attribute "curve" and a kdsearch pruner
decides from those curves. A pruner is anything with
`should_prune(history, curve, epochs, costs) -> bool`, where `costs` (params, MACs, latency) are
known before training starts: that is what lets the Pareto pruner compare a trial only with
trials that are no larger and no slower.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from .config import PrunerConfig

CURVE = "curve"  # user attribute: validation accuracy after each epoch
PRUNED_AT = "pruned_at"  # user attribute: the epoch after which a trial was stopped


COST_ATTRS = {"params": "params", "macs": "macs", "latency": "latency_ms"}  # objective -> user attribute


class Pruner(Protocol):
    def should_prune(self, history: Sequence[FrozenTrial], curve: Sequence[float], epochs: int,
                     costs: dict[str, float]) -> bool:
        """Stop the trial whose validation curve so far is `curve` (costs known up front)?"""


def _peers(history: Sequence[FrozenTrial], epoch: int) -> list[FrozenTrial]:
    """Trials whose curve reached `epoch`."""
    return [t for t in history if len(t.user_attrs.get(CURVE, [])) >= epoch]


def _checks(epoch: int, epochs: int, warmup: int, rungs: Sequence[int]) -> bool:
    """Whether a pruner looks at this epoch: after warm-up, before the last epoch, on a rung."""
    return warmup < epoch < epochs and (not rungs or epoch in rungs)


@dataclass
class NoPruner:
    def should_prune(self, history, curve, epochs, costs) -> bool:
        return False


@dataclass
class MedianPruner:
    """Prune when accuracy is below the median of finished trials at the same epoch.

    Checks only after `warmup_epochs`, only when at least `min_trials` finished trials reached
    that epoch, and never at a trial's last epoch (stopping then would save nothing).
    """

    warmup_epochs: int = 1
    min_trials: int = 4
    rungs: Sequence[int] = ()

    def should_prune(self, history, curve, epochs, costs) -> bool:
        epoch = len(curve)
        if not _checks(epoch, epochs, self.warmup_epochs, self.rungs):
            return False
        peers = [t.user_attrs[CURVE][epoch - 1] for t in _peers(history, epoch)]
        return len(peers) >= self.min_trials and curve[-1] < statistics.median(peers)


@dataclass
class AshaPruner:
    """Successive halving on accuracy alone: at rung epochs min_epochs·eta^k keep the top 1/eta.

    A trial is pruned at a rung when fewer than 1/eta of the trials that reached it (itself
    included) are at most as good as it, once `min_trials` others reached the rung.
    """

    min_epochs: int = 1
    eta: int = 3
    min_trials: int = 4
    rungs: Sequence[int] = ()

    def rung_epochs(self, epochs: int) -> list[int]:
        if self.rungs:
            return list(self.rungs)
        out, e = [], self.min_epochs
        while e < epochs:
            out.append(e)
            e *= self.eta
        return out

    def should_prune(self, history, curve, epochs, costs) -> bool:
        epoch = len(curve)
        if not _checks(epoch, epochs, 0, self.rung_epochs(epochs)):
            return False
        peers = [t.user_attrs[CURVE][epoch - 1] for t in _peers(history, epoch)]
        if len(peers) < self.min_trials:
            return False
        keep = max(1, (len(peers) + 1) // self.eta)
        better = sum(p > curve[-1] for p in peers)
        return better >= keep


@dataclass
class ParetoPruner:
    """Size-aware pruning: stop a trial only when a cheaper trial is clearly better.

    At each checked epoch (after `warmup_epochs`, on `rungs` when given), a trial is pruned when
    another trial that is no larger and no slower (every cost in `cost_keys` <=) had, at the
    same epoch, a validation accuracy above this one's by more than `margin`. A trial with no
    cheaper competitor is never pruned, so small students are not killed for learning more
    slowly than big ones: they are only compared with students at least as small.
    """

    cost_keys: Sequence[str] = ("params", "latency")
    margin: float = 0.02
    warmup_epochs: int = 1
    rungs: Sequence[int] = ()

    def dominated_by(self, history, curve, costs) -> FrozenTrial | None:
        """The first no-larger, no-slower trial that beat `curve` at its last epoch by > margin."""
        epoch = len(curve)
        for t in _peers(history, epoch):
            cheaper = all(t.user_attrs.get(COST_ATTRS[k], float("inf")) <= costs[k] for k in self.cost_keys)
            if cheaper and t.user_attrs[CURVE][epoch - 1] > curve[-1] + self.margin:
                return t
        return None

    def should_prune(self, history, curve, epochs, costs) -> bool:
        if not _checks(len(curve), epochs, self.warmup_epochs, self.rungs):
            return False
        return self.dominated_by(history, curve, costs) is not None


def make_pruner(cfg: PrunerConfig, objectives: Sequence[str] = ("accuracy", "params", "latency")) -> Pruner:
    rungs = tuple(cfg.rungs)
    if cfg.name == "none":
        return NoPruner()
    if cfg.name == "median":
        return MedianPruner(warmup_epochs=cfg.warmup_epochs, min_trials=cfg.min_trials, rungs=rungs)
    if cfg.name == "asha":
        return AshaPruner(min_epochs=max(cfg.warmup_epochs, 1), eta=cfg.eta, min_trials=cfg.min_trials, rungs=rungs)
    return ParetoPruner(cost_keys=tuple(o for o in objectives if o != "accuracy"), margin=cfg.margin,
                        warmup_epochs=cfg.warmup_epochs, rungs=rungs)


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete and pruned trials: the history pruners compare against."""
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
