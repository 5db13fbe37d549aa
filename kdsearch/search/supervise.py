"""Trials in supervised worker processes: a trial that kills its process fails alone, and the study goes on.

A segmentation fault or an abort in a native kernel, or the kernel's OOM killer, ends a process
without a Python exception: no `except` can fail the trial and carry on. So `kdsearch run`
prepares the study, data, teacher and teacher-logit cache (as before), then supervises: the
trials run in worker processes (forked from a preloaded fork server, search.spawn; one by default, `--workers N` for more)
that load what it prepared from the run folder's caches and run trial after trial. The
supervisor prints what they print. When one dies, it fails the trial the worker was running
with the signal named in its `error` attribute ("process killed by SIGSEGV (signal 11)"),
queues its parameters again at most `retries` times (kdsearch.search.workers.fail_dead_trial), and
starts a new worker. Only a death costs a restart: a worker lives for many trials.

Ctrl-C reaches the supervisor (the workers run in their own process group), which passes one
SIGINT on: each worker fails its running trial and exits, and the command exits 130. A second
Ctrl-C kills the workers at once (their trials are recovered by the next run). A worker whose
supervisor dies is killed with it (Linux: PR_SET_PDEATHSIG; elsewhere a watch thread).
"""

from __future__ import annotations

import ctypes
import faulthandler
import importlib
import multiprocessing
import os
import select
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState
from rich.console import Console
from rich.markup import escape

from ..config import StudyConfig, config_from_dict
from ..errors import KDSearchError
from ..models.students import registry  # registry.FAMILIES, looked up when read (the dict may be swapped)
from ..runs.log_file import run_log
from .callbacks import TrialFeed, stop_file
from .spawn import worker_context
from .study import n_finished
from .trials import child_trials
from .workers import WORKER_ATTR, fail_dead_trial, set_supervisor, worker_file, worker_id


MAX_DEATHS_IN_A_ROW = 5  # worker processes that died with no trial finished in between: something systematic
INTERRUPT_WAIT_S = 120.0  # after Ctrl-C, how long workers get to fail their trials and exit


@dataclass
class ConsoleLook:
    """How the supervisor's console renders (a worker renders the same way into a pipe)."""

    width: int
    terminal: bool
    color_system: str | None

    @classmethod
    def of(cls, console: Console) -> ConsoleLook:
        return cls(console.width, console.is_terminal, console.color_system)

    def console(self, file: Any) -> Console:
        return Console(file=file, width=self.width, force_terminal=self.terminal, force_jupyter=False,
                       color_system=self.color_system if self.terminal else None, soft_wrap=False)


class PipeFile:
    """A text file whose writes go to the supervisor, which prints them on its console."""

    encoding = "utf-8"

    def __init__(self, conn: Connection):
        self.conn = conn

    def write(self, text: str) -> int:
        if text:
            self.conn.send(("out", text))
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


@dataclass
class Job:
    """What a worker process needs (picklable: it crosses the spawn)."""

    cfg: dict[str, Any]
    index: int
    gpu: int | None
    threads: int | None
    deadline: float | None  # time.time() after which no trial starts (--timeout, counted from the supervisor's start)
    estimate: bool  # print the estimate of the remaining trials (the first worker only)
    look: ConsoleLook
    supervisor: str
    parent: int
    imports: list[str]  # modules that register student families: a spawned process knows only what it imports
    workers: int = 1  # the workers sharing the study (the estimate divides the trials left among them)


def describe_exit(code: int | None) -> str:
    """'process killed by SIGSEGV (signal 11)' or 'process exited with status 1'."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"process killed by {name} (signal {-code})"
    return f"process exited with status {code}"


def threads_each(processes: int) -> int:
    """CPU threads for each of `processes` processes that share this machine's cores."""
    return max(1, (os.cpu_count() or 1) // processes)


def family_modules() -> list[str]:
    """Modules outside kdsearch that registered student families (a worker imports them again)."""
    skip = ("__main__", "__mp_main__")
    return sorted({fn.__module__ for fn in registry.FAMILIES.values()
                   if fn.__module__ not in skip and not fn.__module__.startswith("kdsearch.")})


def crash_file(run_dir: Path, worker: str) -> Path:
    """Where a worker's faulthandler writes the Python stack of a fatal signal."""
    return worker_file(run_dir, worker, ".faults")


# ------------------------------------------------------------------------------------- the supervisor


@dataclass
class _Worker:
    job: Job
    process: multiprocessing.process.BaseProcess
    conn: Connection
    worker: str  # host:pid, as recorded on its trials
    error: str | None = None  # a KDSearchError it reported before exiting 2
    eof: bool = False


class Supervisor:
    """Start `n` worker processes on the study and keep them going until the study is done."""

    def __init__(self, cfg: StudyConfig, study: optuna.Study, n: int, console: Console, estimate: bool = True,
                 feed: TrialFeed | None = None):
        self.cfg, self.study, self.n, self.console, self.feed = cfg, study, n, console, feed
        self.context = worker_context()  # forked from a preloaded server, never importing __main__ (search.spawn)
        self.gpus = torch.cuda.device_count() if cfg.device in ("auto", "cuda") else 0
        self.threads = (cfg.threads or threads_each(n)) if n > 1 and not self.gpus else cfg.threads
        self.deadline = time.time() + cfg.timeout if cfg.timeout else None
        self.estimate = estimate
        self.errors: list[str] = []
        self.deaths, self.finished_at_death = 0, -1
        self.me, self.imports = worker_id(), family_modules()

    def start(self, index: int, estimate: bool) -> _Worker:
        job = Job(cfg=self.cfg.to_dict(), index=index, gpu=index % self.gpus if self.gpus else None,
                  threads=self.threads, deadline=self.deadline, estimate=estimate,
                  look=ConsoleLook.of(self.console), supervisor=self.me, parent=os.getpid(), imports=self.imports, workers=self.n)
        reader, writer = self.context.Pipe(duplex=False)
        process = self.context.Process(target=worker_main, args=(job, writer), name=f"kdsearch-worker-{index}")
        process.start()
        writer.close()  # the worker holds the only write end: its death is the pipe's end
        return _Worker(job, process, reader, f"{socket.gethostname()}:{process.pid}")

    def run(self) -> None:
        stop = stop_file(self.cfg.run_path, self.me)
        stop.unlink(missing_ok=True)  # one left by an earlier process of the same id
        try:
            self._run(stop)
        finally:
            stop.unlink(missing_ok=True)

    def _run(self, stop: Path) -> None:
        if self.n > 1:
            self.console.print(f"starting {self.n} workers" + (f" on {self.gpus} GPUs" if self.gpus else
                                                                f", {self.threads} CPU threads each"))
        running = [self.start(i, estimate=self.estimate and i == 0) for i in range(self.n)]
        try:
            while running:
                wait([w.conn for w in running if not w.eof] + [w.process.sentinel for w in running], timeout=5.0)
                for w in list(running):
                    self.drain(w)
                    if w.eof and w.process.exitcode is None:
                        w.process.join(timeout=5.0)  # the pipe closed as it exits
                    if w.process.exitcode is None:
                        continue
                    self.drain(w)
                    running.remove(w)
                    if w.process.exitcode == 130:
                        raise KeyboardInterrupt  # someone interrupted a worker: stop them all
                    if self.ended(w, n_finished(self.study)) and not stop.exists():
                        running.append(self.start(w.job.index, estimate=False))
                self.hand_on(stop)
            self.hand_on(stop)  # the trials finished as the last worker ended
        except BaseException:  # Ctrl-C, or a callback's exception: the workers fail their trials and exit
            self.interrupt(running)
            raise
        if self.errors:
            raise KDSearchError(self.errors[0] if len(self.errors) == 1 else
                                "; ".join(dict.fromkeys(self.errors)) + " (finished trials are kept)")

    def hand_on(self, stop: Path) -> None:
        """The callbacks see the trials finished since the last look; a stop() of theirs is passed to the workers."""
        if self.feed is None:
            return
        self.feed.poll(self.study)
        if self.feed.stopped and not stop.exists():
            stop.parent.mkdir(parents=True, exist_ok=True)
            stop.touch()
            self.console.print("a callback stopped the study: the running trials finish, no new one starts",
                               highlight=False)

    def drain(self, w: _Worker) -> None:
        """Print what the worker printed; keep the error it reported."""
        while not w.eof and w.conn.poll():
            try:
                kind, payload = w.conn.recv()
            except (EOFError, OSError):
                w.eof = True
                break
            if kind == "out" and not self.console.quiet:
                self.console.file.write(payload)
                self.console.file.flush()
            elif kind == "error":
                w.error = payload

    def ended(self, w: _Worker, finished: int) -> bool:
        """Handle a worker's end; True when another should take its place."""
        code = w.process.exitcode
        crash = crash_file(self.cfg.run_path, w.worker)
        stack = crash.read_text(errors="replace").strip() if crash.is_file() else ""
        crash.unlink(missing_ok=True)
        if code == 0:
            return False
        if code == 2 and w.error:
            self.errors.append(w.error)
            return False
        reason = describe_exit(code)
        failed = self.fail_trials(w.worker, reason, stack)
        if not failed:
            self.console.print(f"[red]a worker process ended outside any trial: {escape(reason)}[/]", highlight=False)
        if finished > self.finished_at_death:
            self.deaths = 0
        self.deaths, self.finished_at_death = self.deaths + 1, finished
        if self.deaths >= MAX_DEATHS_IN_A_ROW:
            self.errors.append(f"stopped: worker processes died {self.deaths} times in a row with no trial finished "
                               f"in between (last: {reason}); finished trials are kept")
            return False
        if finished >= self.cfg.trials or (self.deadline is not None and time.time() >= self.deadline):
            return False
        return True

    def fail_trials(self, worker: str, reason: str, stack: str) -> list[int]:
        """Fail the RUNNING trials of a dead worker with the reason (and where its Python stack was kept)."""
        numbers = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get(WORKER_ATTR) != worker:
                continue
            where = ""
            if stack:
                path = self.cfg.run_path / "crashes" / f"trial-{t.number}.txt"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(stack + "\n")
                where = f" (Python stack: {path})"
            error = fail_dead_trial(self.study, t, reason, self.cfg.retries)
            if error is None:
                continue
            numbers.append(t.number)
            self.console.print(f"trial {t.number:3d} fail     {t.user_attrs.get('params', 0):>9,} params  "
                               f"{escape(t.user_attrs.get('arch', ''))}  [red]{escape(error)}[/]{escape(where)}",
                               highlight=False)
        return numbers

    def interrupt(self, running: list[_Worker]) -> None:
        """Pass one SIGINT to each worker and wait for them to fail their trials and exit; a second
        Ctrl-C (or a worker that hangs) kills them."""
        for w in running:
            if w.process.exitcode is None:
                os.kill(w.process.pid, signal.SIGINT)
        end = time.monotonic() + INTERRUPT_WAIT_S
        try:
            while time.monotonic() < end and any(w.process.exitcode is None for w in running):
                wait([w.process.sentinel for w in running if w.process.exitcode is None], timeout=1.0)
                for w in running:
                    self.drain(w)
        except KeyboardInterrupt:
            pass
        for w in running:
            if w.process.exitcode is None:
                w.process.kill()
            w.process.join()
            self.drain(w)


def supervise(cfg: StudyConfig, study: optuna.Study, workers: int, console: Console, estimate: bool = True,
              feed: TrialFeed | None = None) -> None:
    """Run the study's remaining trials in `workers` supervised worker processes (`feed`: the caller's callbacks)."""
    Supervisor(cfg, study, workers, console, estimate, feed).run()


# ------------------------------------------------------------------------------------- a worker process


_fault_file = None  # kept open for the life of the process: faulthandler writes to it on a fatal signal


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, killed but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # (no /proc: not Linux)


def _die_with(parent: int) -> None:
    """Die with the supervisor: a worker must never outlive it (it would train on, unsupervised). A worker's
    parent process is the fork server (search.spawn), which outlives the supervisor while workers hold it open,
    so the supervisor itself is watched: the worker kills itself as soon as the supervisor has exited."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: the fork server's death
        except (OSError, AttributeError):
            pass
    if not _alive(parent):
        os._exit(1)

    def watch() -> None:
        try:  # Linux: a descriptor that becomes readable the moment the supervisor exits (before it is reaped)
            select.select([os.pidfd_open(parent)], [], [])
        except (AttributeError, OSError):  # elsewhere (or gone already): polled
            while _alive(parent):
                time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="kdsearch-parent-watch", daemon=True).start()


def worker_main(job: Job, conn: Connection) -> None:
    """A supervised worker process: load the prepared inputs, run trials until the study has enough."""
    global _fault_file
    _die_with(job.parent)
    try:
        os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the supervisor only, which passes one SIGINT on
    except OSError:
        pass
    if job.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(job.gpu)
    set_supervisor(job.supervisor)
    console = job.look.console(PipeFile(conn))
    try:
        for module in job.imports:
            importlib.import_module(module)
        cfg = config_from_dict(job.cfg)
        cfg.threads = job.threads
        path = crash_file(cfg.run_path, worker_id())
        path.parent.mkdir(parents=True, exist_ok=True)
        _fault_file = open(path, "w")  # noqa: SIM115
        faulthandler.enable(file=_fault_file)
        with run_log(cfg.run_path, console, errors=False):  # its lines in RUN/run.log too (the supervisor logs errors)
            child_trials(cfg, console, job.deadline, job.estimate, stop_file(cfg.run_path, job.supervisor), job.workers)
    except KDSearchError as exc:
        conn.send(("error", str(exc)))
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
