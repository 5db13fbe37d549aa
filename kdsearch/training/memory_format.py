"""The memory format a network trains fastest in: channels_last on CUDA; on a CPU, measured once per
architecture and machine, and remembered.

Convolutions, batch norm and pooling run on different kernels in PyTorch's two 4-D layouts, and which
layout is faster on a CPU depends on the channel widths and on the CPU itself (oneDNN picks kernels by
instruction set; max pooling is several times slower in the contiguous layout on some hosts): on one
2-core guest channels_last trained plain students with odd widths 1.4-1.6x slower, on another 1.2-1.7x
faster (BENCHMARKS.md, "Time per training step"). No rule on widths holds on both, so on a CPU the
choice is a short timing of both layouts (forward and backward steps on a copy of the network,
interleaved), written to kdsearch's cache folder under the machine, torch version, thread count,
batch size and architecture. The same network on the same machine then always trains in the same
layout, so a seeded run still repeats bit for bit there (as it can only on the same machine anyway).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import platform
import time
from pathlib import Path

import torch
from torch import nn

from ..data.decode_cache import cache_root
from ..runs.files import atomic_path


FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
ROUNDS = 3  # timed steps per layout, interleaved, after one warm-up step each; the median decides
MAX_TIMING_BATCH = 64  # a large network's step at full batch would make the timing take minutes
_CHOSEN: dict[str, torch.memory_format] = {}  # this process's choices, by their file


def fast_memory_format(model: nn.Module, device: torch.device, sample: tuple[int, ...],
                       batch_size: int) -> torch.memory_format:
    """The layout that trains `model` faster on `device`, for inputs of shape `sample` (C, H, W) in
    batches of `batch_size`: channels_last on CUDA (tensor-core convolutions); on a CPU the faster of
    the two by a timing, made once per key (cpu_choice_key) and kept on disk."""
    if device.type == "cuda":
        return torch.channels_last
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if device.type != "cpu" or not convs or len(sample) != 3:
        return torch.contiguous_format
    path = cache_root() / "memory-format" / f"{cpu_choice_key(convs, sample, batch_size)}.json"
    if str(path) in _CHOSEN:  # (by path: a process that changes $KDSEARCH_CACHE leaves a choice in each folder)
        return _CHOSEN[str(path)]
    fmt = _read(path)
    if fmt is None:
        seconds = time_formats(model, sample, min(batch_size, MAX_TIMING_BATCH))
        name = min(seconds, key=seconds.get)
        fmt = FORMATS[name]
        try:
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps({"format": name, "seconds_per_step": seconds, "machine": _machine(),
                                           "torch": torch.__version__, "threads": torch.get_num_threads(),
                                           "sample": list(sample), "batch_size": batch_size}, indent=1))
        except OSError:  # a read-only cache folder: the choice holds for this process only
            pass
    _CHOSEN[str(path)] = fmt
    return fmt


def cpu_choice_key(convs: list[nn.Conv2d], sample: tuple[int, ...], batch_size: int) -> str:
    """What the CPU choice depends on: machine, torch, threads, batch size, input shape and every convolution."""
    shapes = [(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.groups) for m in convs]
    text = f"{_machine()}|{torch.__version__}|{torch.get_num_threads()}|{batch_size}|{tuple(sample)}|{shapes}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def time_formats(model: nn.Module, sample: tuple[int, ...], batch_size: int) -> dict[str, float]:
    """Median seconds of a forward-backward step in each layout, on a copy of `model` (its weights,
    buffers and gradients stay as they are) with random inputs from a generator of its own (torch's
    global random state is not touched: a seeded training goes on as it would have)."""
    images = torch.randn((batch_size, *sample), generator=torch.Generator().manual_seed(0))
    copies = {name: copy.deepcopy(model).train().to(memory_format=fmt) for name, fmt in FORMATS.items()}
    inputs = {name: images.contiguous(memory_format=fmt) for name, fmt in FORMATS.items()}
    times: dict[str, list[float]] = {name: [] for name in FORMATS}
    with torch.random.fork_rng(devices=[]):  # dropout draws from torch's generator: put it back after
        for round_ in range(ROUNDS + 1):  # round 0 warms up
            for name, net in copies.items():
                start = time.perf_counter()
                out = net(inputs[name]).float().sum()
                if out.requires_grad:  # (a frozen network is timed forward only)
                    out.backward()
                if round_:
                    times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def memory_format_of(model: nn.Module) -> torch.memory_format:
    """The memory format `model`'s convolution weights are in (its inputs are given the same)."""
    for p in model.parameters():
        if p.ndim == 4 and not p.is_contiguous():
            return torch.channels_last
    return torch.contiguous_format


def _read(path: Path) -> torch.memory_format | None:
    try:
        return FORMATS.get(json.loads(path.read_text()).get("format"))
    except (OSError, ValueError, AttributeError):
        return None


@functools.cache  # (read once a process: fit asks on every training)
def _machine() -> str:
    """The CPU's model name and instruction sets (what decides which kernels are faster: a virtual
    machine may name only "AMD EPYC" for hosts with and without AVX-512), else what platform knows."""
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines() if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        flags = " ".join(sorted(f for f in info.get("flags", "").split() if f.startswith(("avx", "amx", "sse", "fma"))))
        return f"{info['model name']} [{flags}]"
    except (OSError, KeyError, ValueError):
        return f"{platform.machine()} {platform.processor()}"
