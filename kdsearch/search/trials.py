"""The trial loop, in this process or in a supervised worker process."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from ..config import StudyConfig
from ..errors import KDSearchError
from ..progress import progress_bar
from ..runs.trial_attrs import rejected, repeated
from .callbacks import TrialFeed
from .estimate import estimate_search
from .evaluation import Evaluation, prepare_evaluation
from .inputs import TrialContext, prepare_inputs
from .objective import Surplus, objective
from .pruners import check_curve
from .study import counts, n_finished, open_study
from .workers import ERROR_ATTR, alive, recover_dead_trials


MAX_CONSECUTIVE_FAILURES = 5  # then the study stops with the last error: something systematic is wrong
MAX_REJECTIONS_PER_TRIAL = 50  # over-budget students resampled per trial before the study gives up


def child_trials(cfg: StudyConfig, console: Console, deadline: float | None, estimate: bool,
                 stop_path: Path | None = None, workers: int = 1) -> None:
    """The work of one supervised worker process: open the study, load the inputs its supervisor
    prepared (data, teacher and teacher-logit cache, from the run folder's caches), run trials
    (none starts once `stop_path` exists: a callback of the supervisor's stopped the study)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = open_study(cfg)
    ctx = prepare_inputs(cfg, Console(quiet=True))
    with alive(cfg.run_path):
        evaluation = prepare_evaluation(ctx, console)  # (one-shot: the first worker trains the supernets, the rest load)
        done = n_finished(study)
        if estimate and evaluation.trains and done < cfg.trials:
            estimate_search(ctx, cfg.trials - done, console, study, workers)
        with progress_bar(console) as progress:
            ctx.progress = progress
            run_trials(study, ctx, progress, progress.add_task("trials", total=cfg.trials, completed=done), deadline,
                       stop=(lambda: stop_path.exists()) if stop_path is not None else None, evaluation=evaluation)


def run_trials(study: optuna.Study, ctx: TrialContext, progress: Progress, overall,
               deadline: float | None = None, feed: TrialFeed | None = None,
               stop: Callable[[], bool] | None = None, *, evaluation: Evaluation) -> None:
    """Start trials one at a time while finished plus running ones (every worker's) fall short of the
    target; fail a trial on any error and go on, but stop after MAX_CONSECUTIVE_FAILURES in a row.
    No trial starts after `deadline` (time.time(); default: --timeout from now), once `stop()` is true,
    or once a callback of `feed` (in this process: --in-process) stopped the study. `evaluation`: the study's
    strategy, prepared (search.evaluation.prepare_evaluation)."""
    cfg = ctx.cfg
    if deadline is None and cfg.timeout:
        deadline = time.time() + cfg.timeout
    failures: list[str] = []
    untrained = {"over_budget": 0, "since": 0, "repeats": 0}  # rejected over budget (since the last line), repeats

    def tick(study: optuna.Study, trial: FrozenTrial) -> None:
        progress.update(overall, completed=n_finished(study))
        if feed is not None:
            feed.poll(study)
        error = trial.user_attrs.get(ERROR_ATTR)
        if error and error.startswith(Surplus.__name__):
            return
        if repeated(trial):  # (one-shot) a subnet scored before, not scored again
            untrained["repeats"] += 1
            return
        if rejected(trial):  # over budget, untrained
            untrained["over_budget"] += 1
            untrained["since"] += 1
            return  # counted and reported, not listed: a tight budget may reject many samples
        if not (evaluation.trains or error):
            return  # seconds a trial (one-shot: thousands of subnets): the bar says it, not a line each
        acc = (check_curve(trial) or [float("nan")])[-1]  # at its last check (mid-epoch when pruned there)
        line = (f"trial {trial.number:3d} {trial.state.name.lower():8s} val {acc:.2%} "
                f"{trial.user_attrs.get('params', 0):>9,} params  {trial.user_attrs.get('arch', '')}")
        if untrained["since"]:
            line += f"  ({untrained['since']} over-budget student(s) resampled first)"
            untrained["since"] = 0
        progress.console.print(line + (f"  [red]{escape(error)}[/]" if error else ""), highlight=False)
        failures[:] = failures + [error] if trial.state == TrialState.FAIL else []

    while deadline is None or time.time() < deadline:
        if feed is not None and feed.stopped:
            progress.console.print("a callback stopped the study: no new trial starts", highlight=False)
            return
        if stop is not None and stop():  # (the supervisor says so)
            return
        recover_dead_trials(study, cfg.run_path, retries=cfg.retries)
        trials = study.get_trials(deepcopy=False)
        finished = sum(counts(t) for t in trials)
        if finished >= cfg.trials:
            if untrained["over_budget"]:
                progress.console.print(f"{untrained['over_budget']} over-budget student(s) were rejected untrained and "
                                       "resampled (recorded as constraints for the sampler)", highlight=False)
            if untrained["repeats"]:
                progress.console.print(f"{untrained['repeats']} subnet(s) proposed again were not scored again",
                                       highlight=False)
            return
        if finished + sum(t.state == TrialState.RUNNING for t in trials) >= cfg.trials:
            time.sleep(1.0)  # the other workers' running trials make up the total, unless one fails
            continue
        study.optimize(lambda t: objective(t, ctx, evaluation.evaluate), n_trials=1, catch=(Exception,),
                       callbacks=[tick])
        if untrained["repeats"] > MAX_REJECTIONS_PER_TRIAL * cfg.trials:
            raise KDSearchError(f"stopped: the sampler proposed {untrained['repeats']} subnets scored before; the "
                                "space may hold fewer subnets within the budgets than --trials")
        if untrained["over_budget"] > MAX_REJECTIONS_PER_TRIAL * cfg.trials:
            raise KDSearchError(f"stopped: {untrained['over_budget']} sampled students were over budget; the space "
                                "rarely meets it (narrow [space] toward smaller students)")
        if len(failures) >= MAX_CONSECUTIVE_FAILURES:
            raise KDSearchError(f"stopped: the last {len(failures)} trials failed (last error: {failures[-1]}); "
                                "finished trials are kept")
