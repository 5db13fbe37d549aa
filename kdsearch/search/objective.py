"""The objective: one trial, isolated. How its student gets its accuracy is the strategy's (search.evaluation);
here any error fails the trial alone, with its reason stored, and a heartbeat says it is alive."""

from __future__ import annotations

import optuna
import torch
from optuna.trial import TrialState

from ..training.distill import NonFiniteLoss, predict
from .evaluation.base import Evaluate
from .inputs import TrialContext
from .study import counts
from .workers import ERROR_ATTR, heartbeat


class Surplus(RuntimeError):
    """Another worker's running trials already make up the total: this one is not needed."""


def objective(trial: optuna.Trial, ctx: TrialContext, evaluate: Evaluate) -> tuple[float, ...]:
    """One trial, isolated: any error fails it with the reason stored (user attribute `error`) and
    the study goes on; a heartbeat says it is alive while it trains. `evaluate`: the study's strategy, prepared
    (search.evaluation.prepare_evaluation)."""
    try:
        with heartbeat(trial):
            if surplus(trial.study, trial.number, ctx.cfg.trials):
                raise Surplus("not needed: running and finished trials already make up the total")
            return evaluate(trial)
    except optuna.TrialPruned:
        raise
    except KeyboardInterrupt:  # Optuna fails the trial; `kdsearch status` should say why, not "no reason recorded"
        trial.set_user_attr(ERROR_ATTR, "interrupted while it trained (Ctrl-C or a stop signal): not retried; "
                                        "`kdsearch run` on the run folder goes on with new trials")
        raise
    except Exception as exc:
        if isinstance(exc, torch.OutOfMemoryError) and torch.cuda.is_available():
            torch.cuda.empty_cache()  # the trial's tensors are gone with its frames: give their memory back
        reason = str(exc).strip()
        if isinstance(exc, NonFiniteLoss) and not teacher_logits_finite(ctx):
            reason = (f"training loss became nan because teacher {ctx.teacher.name}'s logits are not finite "
                      "(not the student's lr): retrain the teacher")
        trial.set_user_attr(ERROR_ATTR, f"{type(exc).__name__}: {reason}"[:500])
        raise


def teacher_logits_finite(ctx: TrialContext) -> bool:
    """Whether the teacher's logits (cached, or online on a batch of training images) are finite:
    a non-finite distillation loss is the teacher's doing when they are not (checked once)."""
    if ctx.teacher_finite is None:
        if ctx.cache is not None:
            ctx.teacher_finite = bool(torch.isfinite(ctx.cache.logits).all())
        else:
            ctx.teacher_finite = bool(torch.isfinite(predict(ctx.teacher.model, ctx.x_train[:256], 256)).all())
    return ctx.teacher_finite


def surplus(study: optuna.Study, number: int, target: int) -> bool:
    """True when finished trials plus the running ones numbered before `number` reach the target
    (two workers that both saw room for one more trial: the later-numbered one stands down)."""
    trials = study.get_trials(deepcopy=False)
    earlier = sum(t.state == TrialState.RUNNING and t.number < number for t in trials)
    return sum(counts(t) for t in trials) + earlier >= target
