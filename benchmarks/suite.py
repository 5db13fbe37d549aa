"""The benchmarks by subcommand name: which module runs each, and its purpose (the module's first
docstring line, read from the source so that listing them imports nothing)."""

from __future__ import annotations

import ast
from pathlib import Path

HERE = Path(__file__).resolve().parent

# subcommand -> module of this package; grouped as BENCHMARKS.md is: speed, accuracy of the shortcuts,
# latency, search, recipes, then tools that read results
BENCHMARKS: dict[str, str] = {
    "trial-speed": "trial_speed",
    "speed": "step_speed",
    "throughput": "throughput",
    "compile": "compile_speed",
    "eval": "eval_batch",
    "concurrent": "concurrent",
    "supervise": "supervise",
    "worker-start": "worker_start",
    "profile": "profile_step",
    "cache-accuracy": "cache_accuracy",
    "long-kd": "long_kd",
    "latency": "latency",
    "latency-drift": "latency_drift",
    "pruners": "pruners",
    "families": "families",
    "fidelity": "fidelity",
    "subnet-eval": "subnet_eval",
    "recipe": "recipe",
    "run-times": "run_times",
    "report": "report",
}


def purpose(name: str) -> str:
    """The first line of the benchmark module's docstring."""
    tree = ast.parse((HERE / f"{BENCHMARKS[name]}.py").read_text())
    return (ast.get_docstring(tree) or "").splitlines()[0]


def listing() -> str:
    width = max(map(len, BENCHMARKS))
    return "\n".join(f"{name:{width}s}  {purpose(name)}" for name in BENCHMARKS)
