"""Several workers on one study: who prepares the shared files, who is alive, what a dead one leaves.

- **One preparer.** The study schema, the teacher and the teacher-logit cache are made under
  the run folder's lock (RUN/.lock): the first worker to get it prepares them, the others wait
  and then load what it wrote (files are written atomically, so a half-written one is never
  read).
- **Liveness.** Each worker holds RUN/.workers/<host>-<pid>.lock for as long as it runs and
  records itself on every trial it starts (user attribute `worker`). A lock that can be taken
  belongs to a dead worker: on one machine a killed worker is recognized at once, whatever the
  storage. Trials of workers on other machines are judged by their heartbeat (user attribute
  `heartbeat`, refreshed by a thread while the trial runs): one silent for longer than the
  grace period is dead. This works on every storage (Optuna's own heartbeats need an RDB one).
- **Recovery.** A dead worker's RUNNING trial is marked FAIL with the reason and its
  parameters are queued again, so the study still reaches its total; but only `retries` times
  (`[study] retries`, 1 by default): a student that kills its process every time (a crashing
  native kernel) stays failed, and its reason says so, instead of killing every rerun.
- **Supervision.** Trials run in worker processes supervised by the `kdsearch run` process
  (kdsearch.search.supervise): the supervisor names the signal that killed a worker on its trial, so
  other workers leave a dead worker's trial to its supervisor while that one is alive.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
from filelock import FileLock, Timeout
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from ..runs.layout import lock_file
from ..runs.trial_attrs import ENQUEUED
from ..runs.trial_attrs import ERROR as ERROR_ATTR, HEARTBEAT as HEARTBEAT_ATTR, RETRY_OF as RETRY_ATTR, STOPPED
from ..runs.trial_attrs import SUPERVISOR as SUPERVISOR_ATTR, WORKER as WORKER_ATTR


CARRY_ON_RETRY = (ENQUEUED,)  # user attributes a retry keeps (a known student from --enqueue has no params)
HEARTBEAT_S = 30.0  # how often a running trial says it is alive
GRACE_S = 180.0  # silence after which a trial of a worker on another machine counts as dead
_supervisor: str | None = None  # set in a supervised worker process: its supervisor's worker id


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def set_supervisor(worker: str | None) -> None:
    """Record, on every trial this process starts, the process that supervises it."""
    global _supervisor
    _supervisor = worker


def worker_file(run_dir: Path, worker: str, suffix: str) -> Path:
    """RUN/.workers/<host>-<pid><suffix>: a file of one worker (or supervisor) process, named safely."""
    return Path(run_dir) / ".workers" / (worker.replace(":", "-").replace("/", "_") + suffix)


def _alive_lock(run_dir: Path, worker: str) -> Path:
    return worker_file(run_dir, worker, ".lock")


@contextlib.contextmanager
def run_lock(run_dir: Path, console: Console, what: str) -> Iterator[None]:
    """Hold the run folder's lock while doing `what`; say so when another worker holds it."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_file(run_dir))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        console.print(f"waiting for another worker to finish {what} ...", highlight=False)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def alive(run_dir: Path) -> Iterator[str]:
    """This worker's liveness lock, held for the block; yields the worker id."""
    me = worker_id()
    path = _alive_lock(run_dir, me)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path)
    lock.acquire()
    try:
        yield me
    finally:
        lock.release()
        path.unlink(missing_ok=True)


def is_alive(run_dir: Path | None, worker: str | None) -> bool | None:
    """True or False for a worker of this machine (by its liveness lock); None when unknown here."""
    if not worker or run_dir is None or worker.rsplit(":", 1)[0] != socket.gethostname():
        return None
    if worker == worker_id():
        return True
    path = _alive_lock(run_dir, worker)
    if not path.exists():
        return False
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def recover_dead_trials(study: optuna.Study, run_dir: Path | None, grace_s: float = GRACE_S,
                        retries: int = 1) -> list[int]:
    """Fail the RUNNING trials of dead workers (reason stored) and queue their parameters again
    (at most `retries` times per parameters). A dead worker's trial whose supervisor is alive is
    left to that supervisor, which knows how the worker died."""
    recovered = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get(WORKER_ATTR)
        state = is_alive(run_dir, worker)
        if state is None:
            beat = t.user_attrs.get(HEARTBEAT_ATTR) or (t.datetime_start.timestamp() if t.datetime_start else time.time())
            state = time.time() - beat < grace_s
        if state or is_alive(run_dir, t.user_attrs.get(SUPERVISOR_ATTR)):
            continue
        if fail_dead_trial(study, t, f"worker {worker or '?'} stopped (killed or lost)", retries) is not None:
            recovered.append(t.number)
    return recovered


def fail_dead_trial(study: optuna.Study, trial: FrozenTrial, reason: str, retries: int) -> str | None:
    """Mark the RUNNING trial of a dead process FAIL with `reason`, and queue its parameters again
    unless they were retried `retries` times already (a retry records the first trial's number in
    `retry_of`). Returns the error stored, or None when another process failed the trial first."""
    origin = trial.user_attrs.get(RETRY_ATTR, trial.number)
    made = sum(t.user_attrs.get(RETRY_ATTR) == origin for t in study.get_trials(deepcopy=False))
    carry = {k: trial.user_attrs[k] for k in CARRY_ON_RETRY if k in trial.user_attrs}
    # (a promoted student's rung trial is not queued as a search trial: `kdsearch run` promotes it again)
    again = bool(trial.params or carry) and made < retries and "rung" not in trial.user_attrs
    if again:
        error = f"{reason}; its parameters are queued again (retry {made + 1} of {retries})"
    elif made:
        error = (f"{reason}; not retried: the same parameters already died in trial "
                 f"{', '.join(str(t.number) for t in _attempts(study, origin) if t.number != trial.number)} "
                 f"(retries = {retries})")
    else:
        error = f"{reason}; not retried (retries = {retries})"
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, ERROR_ATTR, error)
        storage.set_trial_user_attr(trial._trial_id, STOPPED, True)
        if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
            return None
    except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
        return None  # another worker recovered it first
    if again:
        study.enqueue_trial(trial.params, user_attrs={RETRY_ATTR: origin, **carry})
    return error


def _attempts(study: optuna.Study, origin: int) -> list[FrozenTrial]:
    """The trial numbered `origin` and its retries."""
    return [t for t in study.get_trials(deepcopy=False) if t.number == origin or t.user_attrs.get(RETRY_ATTR) == origin]


@contextlib.contextmanager
def heartbeat(trial: optuna.Trial, interval: float = HEARTBEAT_S) -> Iterator[None]:
    """Refresh the trial's `heartbeat` attribute from a thread while the block runs."""
    stop = threading.Event()
    storage, trial_id = trial.study._storage, trial._trial_id

    def beat() -> None:
        while not stop.wait(interval):
            try:
                storage.set_trial_user_attr(trial_id, HEARTBEAT_ATTR, time.time())
            except Exception:  # noqa: BLE001  (a finished trial or a storage hiccup: the next beat retries)
                pass

    trial.set_user_attr(WORKER_ATTR, worker_id())
    if _supervisor:
        trial.set_user_attr(SUPERVISOR_ATTR, _supervisor)
    trial.set_user_attr(HEARTBEAT_ATTR, time.time())
    thread = threading.Thread(target=beat, name="kdsearch-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
