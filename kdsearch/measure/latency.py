"""Latency where the student runs, measured so that it repeats, and a quiet CPU to measure it on.

- **Runtime.** By default (`[study] latency_runtime = "onnxruntime"`) a student's latency is
  the time ONNX Runtime's CPU provider takes for one call at `latency_batch` images, with
  `latency_threads` threads, on the ONNX graph `kdsearch export` writes (export.onnx_bytes).
  `"torch"` is eager PyTorch on the CPU: what studies measured before the setting existed (their
  stored fingerprint compares as "torch"), mostly PyTorch's per-layer overhead for small students.
- **Repeats.** After a warm-up, `BLOCKS` timed blocks of at least `BLOCK_S` seconds each (as many
  calls as that takes); the latency is the median block's time per call and the spread beside it
  is the blocks' interquartile range (user attribute `latency_iqr_ms`). With one thread (the
  default) a block is timed by the calling thread's CPU time, where both runtimes compute: what a
  core of its own takes, not inflated when the scheduler runs other programs in between (on the
  busy 2-core machine this made repeats agree to a few percent instead of 10-20%); with several
  threads, by wall time.
- **A quiet CPU.** Workers of one study on one machine share two lock files per host in
  RUN/.cpu/: a worker trains only while it holds `busy` shared, and checks at every forward pass
  of its student (a forward pre-hook: every training step and every evaluation batch) whether
  a timer is waiting at `gate`; if one is, it lets go of `busy` and waits at the gate. A worker
  that times a student takes `gate` exclusively (no trainer starts another step) and then `busy`
  exclusively (every trainer has reached the end of its current step), times, and lets both go.
  So no other worker of the study computes on this machine while a student is timed: trainers
  pause for the timing (about a third of a second a trial). The kernel drops the locks of a
  killed process, so a dead worker never blocks the others. Work outside the study (other
  programs) is not held back: the median over many blocks is what keeps short disturbances out.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import KDSearchError
from .onnx_graph import onnx_bytes


try:  # POSIX only; elsewhere workers are not held back while a student is timed
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

RUNTIMES = ("onnxruntime", "torch")
BLOCKS = 21  # timed blocks per measurement: the median is stable to a few percent
BLOCK_S = 0.01  # seconds a block runs at least (as many calls as that takes)
WARMUP_S = 0.05  # untimed calls first (allocations, kernel selection, caches)
QUIET_WAIT_S = 600.0  # a timer waits this long for the other workers to pause, then times anyway


@dataclass
class Timing:
    median_ms: float  # per call (one batch of `batch` images)
    iqr_ms: float  # interquartile range of the blocks' per-call times
    blocks: int
    runtime: str
    batch: int
    threads: int
    quiet: bool = True  # no other worker of the study computed on this machine meanwhile
    device: str = "cpu"  # where it ran: always the CPU for onnxruntime; the study's device for torch

    @property
    def spread(self) -> float:
        """The IQR as a fraction of the median."""
        return self.iqr_ms / self.median_ms if self.median_ms > 0 else math.nan


def timed_blocks(call: Callable[[], Any], blocks: int = BLOCKS, block_s: float = BLOCK_S,
                 warmup_s: float = WARMUP_S, clock: Callable[[], float] = time.perf_counter) -> tuple[float, float]:
    """(median, IQR) in ms of the per-call time over `blocks` blocks of at least `block_s` each."""
    start, n = time.perf_counter(), 0
    while n < 3 or time.perf_counter() - start < warmup_s:
        call()
        n += 1
    per_call = (time.perf_counter() - start) / n
    reps = max(1, math.ceil(block_s / max(per_call, 1e-7)))
    times = []
    for _ in range(blocks):
        t = clock()
        for _ in range(reps):
            call()
        times.append((clock() - t) / reps * 1e3)
    q = statistics.quantiles(times, n=4, method="inclusive")
    return statistics.median(times), q[2] - q[0]


def clock(threads: int) -> Callable[[], float]:
    """With one thread the runtime computes in the calling thread: its CPU time is the wall time a
    core of its own would take, and time the scheduler gives to other programs does not count. With
    several threads, wall time."""
    return time.thread_time if threads == 1 else time.perf_counter


def ort_session(graph: bytes | str | Path, threads: int = 1):
    """An ONNX Runtime CPU session with `threads` intra-op threads, sequential, quiet."""
    try:
        import onnxruntime as ort  # slow to import: only ONNX Runtime timing needs it
    except ImportError:  # a core dependency; a broken install still gets one line

        raise KDSearchError("latency through ONNX Runtime needs onnxruntime (pip install onnxruntime)") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    source = graph if isinstance(graph, bytes) else str(graph)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def ort_latency(graph: bytes | str | Path, input_shape: tuple[int, ...], batch: int = 1, threads: int = 1,
                blocks: int = BLOCKS) -> Timing:
    """ONNX Runtime (CPU) latency of an ONNX model (bytes or a file) whose input is `images`."""
    session = ort_session(graph, threads)
    name = session.get_inputs()[0].name
    x = {name: torch.rand(batch, *input_shape, generator=torch.Generator().manual_seed(0)).numpy()}
    median, iqr = timed_blocks(lambda: session.run(None, x), blocks, clock=clock(threads))
    return Timing(median, iqr, blocks, "onnxruntime", batch, threads)


def torch_latency(model: nn.Module, input_shape: tuple[int, ...], batch: int = 1, threads: int = 1,
                  blocks: int = BLOCKS, device: torch.device | str | None = None) -> Timing:
    """Eager PyTorch latency (eval mode, no grad): on the CPU with `threads` threads, or on a GPU `device`,
    where each call waits for its result (as a served request does) and wall time is measured."""
    device = torch.device(device or "cpu")
    x = torch.rand(batch, *input_shape, generator=torch.Generator().manual_seed(0))
    if device.type != "cpu":
        model, x = copy.deepcopy(model).to(device).eval(), x.to(device)
        sync = torch.cuda.synchronize if device.type == "cuda" else getattr(torch, device.type).synchronize

        def call() -> None:
            model(x)
            sync()
        with torch.no_grad():
            median, iqr = timed_blocks(call, blocks)
        return Timing(median, iqr, blocks, "torch", batch, threads, device=device.type)
    model = copy.deepcopy(model).cpu().eval()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            median, iqr = timed_blocks(lambda: model(x), blocks, clock=clock(threads))
    finally:
        torch.set_num_threads(before)
    return Timing(median, iqr, blocks, "torch", batch, threads)


def latency_device(runtime: str, device: torch.device | str | None) -> str:
    """Where a latency is timed: ONNX Runtime always on the CPU, eager PyTorch on the study's device."""
    return torch.device(device or "cpu").type if runtime == "torch" else "cpu"


def student_latency(model: nn.Module, input_shape: tuple[int, ...], runtime: str = "onnxruntime", batch: int = 1,
                    threads: int = 1, graph: bytes | None = None, device: torch.device | str | None = None) -> Timing:
    """The latency a study records: through ONNX Runtime on the CPU (`graph`: the model's ONNX bytes,
    exported here when not given), or eager PyTorch on the study's `device` (the CPU or a GPU)."""
    if runtime == "torch":
        return torch_latency(model, input_shape, batch, threads, device=device)
    if graph is None:
        graph = onnx_bytes(model, input_shape)
    return ort_latency(graph, input_shape, batch, threads)


# ---------------------------------------------------------------------------------------------
# A quiet CPU: timing waits for the study's other workers on this machine to pause


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
