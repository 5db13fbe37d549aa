"""Early stopping of weak trials in a multi-objective study.

Optuna's `trial.report` and its pruners do not work in multi-objective studies, so each trial
keeps its per-epoch validation accuracy in the user attribute "curve" and a kdsearch pruner
decides from those curves. A pruner is anything with
`should_prune(history, curve, epoch, costs) -> bool`: the seam where size-aware pruners plug in.
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


class Pruner(Protocol):
    def should_prune(self, history: Sequence[FrozenTrial], curve: Sequence[float], epochs: int,
                     costs: dict[str, float]) -> bool:
        """Stop the trial whose validation curve so far is `curve`, given finished trials?"""


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

    def should_prune(self, history, curve, epochs, costs) -> bool:
        epoch = len(curve)
        if epoch <= self.warmup_epochs or epoch >= epochs:
            return False
        peers = [t.user_attrs[CURVE][epoch - 1] for t in history if len(t.user_attrs.get(CURVE, [])) >= epoch]
        if len(peers) < self.min_trials:
            return False
        return curve[-1] < statistics.median(peers)


def make_pruner(cfg: PrunerConfig) -> Pruner:
    if cfg.name == "none":
        return NoPruner()
    return MedianPruner(warmup_epochs=cfg.warmup_epochs, min_trials=cfg.min_trials)


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete and pruned trials: the history pruners compare against."""
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
