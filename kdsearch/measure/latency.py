"""Latency where the student runs, measured so that it repeats.

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

Timing waits for a search's other workers on this machine to pause: search.cpu_share.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import KDSearchError
from .onnx_graph import onnx_bytes

RUNTIMES = ("onnxruntime", "torch")
BLOCKS = 21  # timed blocks per measurement: the median is stable to a few percent
BLOCK_S = 0.01  # seconds a block runs at least (as many calls as that takes)
WARMUP_S = 0.05  # untimed calls first (allocations, kernel selection, caches)


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
