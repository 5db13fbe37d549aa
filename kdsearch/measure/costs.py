"""Cost of a model: params (count) and MACs (multiply-accumulates), and wall time of a call.

Params and MACs are exact and known before training, which is what lets budgets and the
pruner act early; latency is measured where the student runs (kdsearch/measure/latency.py).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
from torch import nn

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
