"""The Pareto front as a terminal table."""

from __future__ import annotations

import math
from typing import Any

import optuna
from rich.table import Table

from ..analysis.front import pareto_trials


def _row(name: str, acc: float, attrs: dict[str, Any], t: str = "", alpha: str = "", arch: str = "",
         test: str | None = None) -> list[str]:
    cells = [name, f"{acc:.2%}"] + ([test] if test is not None else [])
    return cells + [f"{attrs.get('params', 0):,}", f"{attrs.get('macs', 0):,}",
                    f"{attrs.get('latency_ms', float('nan')):.3f}", t, alpha, arch]


def pareto_table(study: optuna.Study, test_accuracy: dict[int, float] | None = None) -> Table:
    """Pareto trials (accuracy, params, MACs, latency, T, alpha, architecture), teacher first.

    With `test_accuracy` (trial number -> accuracy) a test column sits beside validation.
    """
    table = Table(title=f"Pareto front of {study.study_name} (validation accuracy)")
    cols = ["trial", "val acc"] + (["test acc"] if test_accuracy is not None else [])
    for col in cols + ["params", "MACs", "latency ms", "T", "alpha", "architecture"]:
        table.add_column(col, justify="left" if col in ("trial", "architecture") else "right")
    teacher = study.user_attrs.get("teacher")
    if teacher:
        test = f"{teacher['test_accuracy']:.2%}" if test_accuracy is not None else None
        table.add_row(*_row(f"teacher {teacher['name']}", teacher["val_accuracy"], teacher, test=test,
                            arch="" if test else f"test acc {teacher['test_accuracy']:.2%}"), style="bold")
    for t in pareto_trials(study):
        a = t.user_attrs
        test = None if test_accuracy is None else percent(test_accuracy.get(t.number))
        table.add_row(*_row(str(t.number), t.values[0], a, f"{a.get('temperature', 0):.2f}",
                            f"{a.get('alpha', 0):.2f}", a.get("arch", ""), test=test))
    return table


FRONT_KEYS = ("params", "macs", "latency_ms", "bytes", "temperature", "alpha", "lr", "arch")


def front_facts(study: optuna.Study, test_accuracy: dict[int, float] | None = None) -> list[dict[str, Any]]:
    """The Pareto table's students as JSON values (`report --json`, `status --json`), most accurate first."""
    return [{"trial": t.number, "val_accuracy": t.values[0],
             **({"test_accuracy": test_accuracy.get(t.number)} if test_accuracy is not None else {}),
             **{k: t.user_attrs.get(k) for k in FRONT_KEYS}} for t in pareto_trials(study)]


def teacher_facts(study: optuna.Study) -> dict[str, Any] | None:
    """The teacher's row of the Pareto table as JSON values."""
    teacher = study.user_attrs.get("teacher")
    if not teacher:
        return None
    keys = ("name", "val_accuracy", "test_accuracy", "params", "macs", "latency_ms", "epochs_trained")
    return {k: teacher.get(k) for k in keys}


def percent(x: float | None) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2%}"
