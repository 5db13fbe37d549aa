"""How a sampled student gets its accuracy ([study] strategy): the seam between the study loop and a student.

The study loop (search.trials, in this process or in supervised workers), the budgets, the pruners' records,
promotion and every reader after the search are the same for every strategy. A strategy is a module here
with `prepare(ctx, console) -> Evaluation`: what it needs once per process (nothing for "pertrial"; the
trained supernets for "oneshot", trained by the first process and loaded by the others), then a function of
one trial (base.Evaluation). A new strategy is a module and an entry in STRATEGIES, TRIALS and DRY_RUN (its name
also in config.schema.STRATEGIES, which checks study files).
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console

from ...config import StudyConfig
from ..estimate import estimate_search
from ..inputs import TrialContext
from . import oneshot, pertrial
from .base import Evaluate, Evaluation

STRATEGIES: dict[str, Callable[[TrialContext, Console], Evaluation]] = {
    "pertrial": pertrial.prepare,  # each student trained from scratch
    "oneshot": oneshot.prepare,  # subnets of supernets trained once, scored with inherited weights
}
TRIALS = {"pertrial": "{epochs} epochs each", "oneshot": "each a subnet of supernets trained {epochs} epochs"}  # in words
# what --dry-run prints of the trials to come: (ctx, trials, console, study)
DRY_RUN: dict[str, Callable[..., object]] = {"pertrial": estimate_search, "oneshot": oneshot.describe}


def trials_text(cfg: StudyConfig) -> str:
    """What one trial of the study is, in words."""
    return TRIALS[cfg.strategy].format(epochs=cfg.epochs)


def prepare_evaluation(ctx: TrialContext, console: Console) -> Evaluation:
    """The study's strategy, prepared in this process."""
    return STRATEGIES[ctx.cfg.strategy](ctx, console)


__all__ = ["DRY_RUN", "STRATEGIES", "Evaluate", "Evaluation", "prepare_evaluation", "trials_text"]
