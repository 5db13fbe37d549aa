"""Optuna callbacks `(study, frozen_trial) -> None` of a run, called in the process that started it.

The trials run in worker processes (search.supervise), which a callback defined in a notebook or a
script cannot reach, and where its side effects (a list it fills, a tracker's open connection) would
stay. So the process that called `kdsearch.run` watches the study instead: every trial that this
run's workers finish (complete, pruned or failed, as study.optimize passes them) is handed to each
callback once, in the order the trials finished, shortly after. Trials of other machines' workers on
a shared storage, and trials finished before this run, are not. A callback may call `study.stop()`,
as inside study.optimize: no new trial starts, the running ones finish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import KDSearchError
from .workers import SUPERVISOR_ATTR, WORKER_ATTR, worker_file, worker_id


Callback = Callable[[optuna.Study, FrozenTrial], None]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class TrialFeed:
    """Hands each trial this process's workers finish to the callbacks, once (call `poll` often)."""

    def __init__(self, callbacks: Iterable[Callback], study: optuna.Study):
        self.callbacks = list(callbacks)
        self.me = worker_id()  # this process: the supervisor of its workers, or the in-process worker
        self.seen = {t.number for t in study.get_trials(deepcopy=False, states=FINISHED)}
        self.stopped = False  # a callback called study.stop()

    def poll(self, study: optuna.Study) -> None:
        """Call the callbacks on every trial finished since the last poll (this run's trials only)."""
        if not self.callbacks:
            return
        new = [t for t in study.get_trials(deepcopy=False, states=FINISHED) if t.number not in self.seen]
        self.seen |= {t.number for t in new}
        mine = [t for t in new if self.me in (t.user_attrs.get(SUPERVISOR_ATTR), t.user_attrs.get(WORKER_ATTR))]
        for trial in sorted(mine, key=lambda t: (t.datetime_complete or datetime.max, t.number)):
            self.stopped |= call_callbacks(self.callbacks, study, trial)


def check_callbacks(callbacks: Iterable[Callback] | None) -> list[Callback]:
    """The callbacks as a list; anything not callable is one line, before any work."""
    out = list(callbacks or [])
    for callback in out:
        if not callable(callback):
            raise KDSearchError(f"callbacks: {callback!r} is not callable (give functions (study, trial) -> None)")
    return out


def call_callbacks(callbacks: list[Callback], study: optuna.Study, trial: FrozenTrial) -> bool:
    """Call each callback; True when one called study.stop(). Optuna allows stop() only inside optimize, which
    it tells by two private attributes: they are set for the call (and restored), where this Optuna has them."""
    local = getattr(study, "_thread_local", None)
    if local is None or not hasattr(study, "_stop_flag"):
        for callback in callbacks:
            callback(study, trial)
        return False
    before = (getattr(local, "in_optimize_loop", False), study._stop_flag)
    local.in_optimize_loop, study._stop_flag = True, False
    try:
        for callback in callbacks:
            callback(study, trial)
        return bool(study._stop_flag)
    finally:
        local.in_optimize_loop, study._stop_flag = before


def stop_file(run_dir: Path, supervisor: str) -> Path:
    """The file a supervisor writes when a callback stopped the study: its workers start no new trial."""
    return worker_file(run_dir, supervisor, ".stop")
