"""What every benchmark shares: one timer, one result writer, the synthetic data they time on.

The timer: `Stopwatch` (a block) and `timed` (a function) read the clock around the work, synchronizing
the device first and last on CUDA (kernels are asynchronous: without it a GPU step would look free);
`interleaved` times
several functions round by round (A, B, A, B, ...), so that load moving on the machine hits each
alike, and returns each one's seconds as a `Timing` (median, min, max and their spread).

The writer: `ResultFile` appends one JSON object a line to OUT/results.jsonl, each row with its
provenance (`provenance` key: the machine, the command line, the git commit and the benchmark's
settings), at once (an interrupted benchmark keeps every finished row); `load_rows` reads such a file
and also the rows of older runs, which have no provenance.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdsearch.data.augment import random_views
from kdsearch.runs.provenance import environment

ROOT = Path(__file__).resolve().parents[1]  # the repository (the `benchmarks` package's parent)
RESULTS = Path(__file__).resolve().parent / "results"  # the committed result folders


# ------------------------------------------------------------------------------------------- timing

def sync(device: Any = None) -> None:
    """Wait for the device's queued work (CUDA only; the CPU runs in order)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """One timed block: `with Stopwatch(device) as watch: work()`, then `watch.seconds` (wall seconds, the
    device synchronized on entry and exit)."""

    def __init__(self, device: Any = None):
        self.device, self.seconds = device, 0.0

    def __enter__(self) -> Stopwatch:
        sync(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self._start


def timed(fn: Callable[[], Any], device: Any = None) -> float:
    """Wall seconds of one call of `fn`, the device synchronized before and after."""
    with Stopwatch(device) as watch:
        fn()
    return watch.seconds


@dataclass(frozen=True)
class Timing:
    """Seconds of the repeats of one timed function."""

    seconds: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def min(self) -> float:
        return min(self.seconds)

    @property
    def max(self) -> float:
        return max(self.seconds)

    @property
    def spread(self) -> float:
        """(max - min) / median: how far apart the repeats fell."""
        return (self.max - self.min) / self.median if self.median else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"median_s": self.median, "min_s": self.min, "max_s": self.max, "spread": self.spread,
                "repeats": len(self.seconds)}


def interleaved(fns: dict[Any, Callable[[], Any]], repeats: int, device: Any = None) -> dict[Any, Timing]:
    """Each function timed `repeats` times, one call of each per round, in the dict's order."""
    seconds: dict[Any, list[float]] = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            seconds[key].append(timed(fn, device))
    return {key: Timing(tuple(s)) for key, s in seconds.items()}


# ------------------------------------------------------------------------------------------- provenance

def git_commit() -> str | None:
    """The repository's commit (short), with "-dirty" when tracked files under kdsearch/ or benchmarks/
    differ from it; None outside a git checkout."""
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "kdsearch",
                                "benchmarks"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("-dirty" if dirty else "")) or None


def machine(device: Any = "cpu") -> dict[str, Any]:
    """CPU model and cores, the GPU when the benchmark runs on one, threads and versions, the date."""
    env = environment(device)
    env.pop("kdsearch", None)  # the commit is recorded on its own
    return env


def command(benchmark: str, argv: Sequence[str]) -> str:
    """The command line that reruns the benchmark."""
    return shlex.join(["python", "-m", "benchmarks", benchmark, *argv])


def parse_value(text: str) -> Any:
    """A setting's value as TOML reads it (numbers, booleans, lists, quoted strings), else the text."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_set(item: str) -> tuple[str, Any]:
    """--set's 'pruner.margin=0.01' -> ('pruner.margin', 0.01); the value read as TOML, else as a string."""
    key, _, value = item.partition("=")
    return key, parse_value(value)


def load_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a results.jsonl (none when it is missing), old ones without provenance included."""
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


class ResultFile:
    """OUT/results.jsonl of one benchmark run: rows appended one at a time, each with its provenance."""

    def __init__(self, out: Path | str, benchmark: str, argv: Sequence[str], device: Any = "cpu",
                 name: str = "results.jsonl"):
        self.path = Path(out) / name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._run = {"machine": machine(device), "command": command(benchmark, argv), "commit": git_commit()}

    def rows(self) -> list[dict[str, Any]]:
        return load_rows(self.path)

    def append(self, row: dict[str, Any], settings: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write `row` with its provenance (`settings`: what the benchmark ran it with); returns the row written."""
        full = {**row, "provenance": {**self._run, "settings": settings or {}}}
        with self.path.open("a") as f:
            f.write(json.dumps(full) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return full


def provenance_of(row: dict[str, Any]) -> dict[str, Any]:
    """A row's provenance, or {} for a row written before rows had it."""
    return row.get("provenance") or {}


# ------------------------------------------------------------------------------------------- synthetic data

def random_images(n: int, classes: int = 10, size: int = 32, channels: int = 3, seed: int = 0,
                  generator: Any = None) -> tuple[Any, Any]:
    """n random uint8 images and labels (timings do not depend on the pixels' values)."""
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    return x, torch.randint(0, classes, (n,), generator=g)


class FakeCache:
    """Teacher logits for every image and view, served as the real cache serves them (no teacher cost)."""

    def __init__(self, n: int, classes: int):
        self.logits = torch.randn(n, classes).half()

    def draw(self, idx: Any, generator: Any) -> tuple[Any, Any]:
        return random_views(len(idx), 4, True, generator), self.logits[idx]
