"""Cost of a model: params (count), MACs (multiply-accumulates) and latency (ms at batch 1).

Params and MACs are exact and known before training, which is what lets budgets and the
pruner act early; latency is measured, so the thread count is fixed and recorded with it.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable

import torch
from torch import nn

# torch.utils.benchmark imports cpp_extension, which warns about a missing CUDA toolkit on
# CPU-only machines although nothing here compiles: keep that line out of the user's output.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
from torch.utils.benchmark import Timer  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of one forward pass at batch 1, from PyTorch's FLOP counter (2 FLOPs per MAC)."""
    model = copy.deepcopy(model).cpu().eval()
    x = torch.zeros(1, *input_shape)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 2


def latency_ms(model: nn.Module, input_shape: tuple[int, ...], threads: int = 1, min_run_time: float = 0.2) -> float:
    """Median CPU latency of one image (batch 1, eval mode, no grad) with `threads` threads."""
    model = copy.deepcopy(model).cpu().eval()
    x = torch.rand(1, *input_shape)
    with torch.no_grad():
        model(x)  # warm-up outside the timed region
    timer = Timer(stmt="model(x)", globals={"model": model, "x": x}, num_threads=threads)
    with torch.no_grad():  # scoped here: a grad-mode change in the Timer's setup would leak
        return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def wall_seconds(fn: Callable[[], object], device: torch.device, repeats: int = 1) -> float:
    """Wall seconds per call of fn after one warm-up call (allocations, kernel selection), with the
    GPU synchronized around the timed calls: the probes behind kdsearch's time estimates."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats
