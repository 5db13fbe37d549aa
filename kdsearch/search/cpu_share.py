"""A quiet CPU for timing: the study's workers on one machine pause while one of them times a student.

Workers of one study on one machine share two lock files per host in RUN/.cpu/: a worker trains only
while it holds `busy` shared, and checks at every forward pass of its student (a forward pre-hook: every
training step and every evaluation batch) whether a timer is waiting at `gate`; if one is, it lets go of
`busy` and waits at the gate. A worker that times a student takes `gate` exclusively (no trainer starts
another step) and then `busy` exclusively (every trainer has reached the end of its current step),
times, and lets both go. So no other worker of the study computes on this machine while a student is
timed: trainers pause for the timing (about a third of a second a trial). The kernel drops the locks of
a killed process, so a dead worker never blocks the others. Work outside the study (other programs) is
not held back: the median over many blocks is what keeps short disturbances out.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

try:  # POSIX only; elsewhere workers are not held back while a student is timed
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

QUIET_WAIT_S = 600.0  # a timer waits this long for the other workers to pause, then times anyway


def _lock_paths(run_dir: Path) -> tuple[Path, Path]:
    folder = Path(run_dir) / ".cpu"
    folder.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().replace("/", "_")
    return folder / f"{host}.gate", folder / f"{host}.busy"


def _try(fd: int, op: int) -> bool:
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@contextlib.contextmanager
def quiet_cpu(run_dir: Path | None, wait_s: float = QUIET_WAIT_S) -> Iterator[dict[str, bool]]:
    """Hold the CPU of this machine for timing: the study's other workers pause at their next step.

    Yields a dict whose "quiet" is False when they did not pause within `wait_s` (timed anyway).
    """
    state = {"quiet": True}
    if run_dir is None or fcntl is None:
        yield state
        return
    gate_path, busy_path = _lock_paths(run_dir)
    gate = os.open(gate_path, os.O_RDWR | os.O_CREAT, 0o644)
    busy = os.open(busy_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        got_gate = got_busy = False
        while not (got_gate and got_busy) and time.monotonic() < deadline:
            got_gate = got_gate or _try(gate, fcntl.LOCK_EX)
            got_busy = got_gate and _try(busy, fcntl.LOCK_EX)
            if not got_busy:
                time.sleep(0.002)
        state["quiet"] = got_busy
        yield state
    finally:
        os.close(busy)  # closing the descriptors lets go of the locks
        os.close(gate)


class TrainingShare:
    """A training worker's share of the CPU (see the module docstring): held while it trains, given
    up at the next forward pass of the student whenever a timer waits at the gate."""

    def __init__(self, run_dir: Path | None):
        self.fds = _lock_paths(run_dir) if run_dir is not None and fcntl is not None else None
        self.gate = self.busy = -1
        self.paused_s = 0.0  # time spent waiting for timers

    def __enter__(self) -> TrainingShare:
        if self.fds:
            self.gate = os.open(self.fds[0], os.O_RDWR | os.O_CREAT, 0o644)
            self.busy = os.open(self.fds[1], os.O_RDWR | os.O_CREAT, 0o644)
            self._enter()
        return self

    def _enter(self) -> None:
        start = time.perf_counter()
        fcntl.flock(self.gate, fcntl.LOCK_SH)  # waits while a timer holds the gate
        fcntl.flock(self.busy, fcntl.LOCK_SH)
        fcntl.flock(self.gate, fcntl.LOCK_UN)
        self.paused_s += time.perf_counter() - start

    def checkpoint(self, *_: Any) -> None:
        """Between steps: pause while a timer waits (a forward pre-hook calls this)."""
        if self.gate < 0:
            return
        if _try(self.gate, fcntl.LOCK_SH):  # no timer waiting
            fcntl.flock(self.gate, fcntl.LOCK_UN)
            return
        fcntl.flock(self.busy, fcntl.LOCK_UN)
        self._enter()

    def __exit__(self, *exc: Any) -> None:
        for fd in (self.busy, self.gate):
            if fd >= 0:
                os.close(fd)
        self.gate = self.busy = -1


@contextlib.contextmanager
def training_share(run_dir: Path | None, model: nn.Module) -> Iterator[TrainingShare]:
    """Train `model` inside the block as a worker that pauses for other workers' timing."""
    with TrainingShare(run_dir) as share:
        handle = model.register_forward_pre_hook(share.checkpoint)
        try:
            yield share
        finally:
            handle.remove()
