"""Reading a finished study: the Pareto trials and the terminal table, with the teacher as reference."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial
from rich.table import Table


def feasible(trial: FrozenTrial) -> bool:
    """Within every budget (constraints set through trial.set_constraint are <= 0)."""
    return all(v <= 0 for v in trial.constraints.values())


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The non-dominated, feasible complete trials (Optuna's own front), most accurate first."""
    front = [t for t in study.best_trials if feasible(t)]
    return sorted(front, key=lambda t: (-t.values[0], t.user_attrs.get("params", 0)))


def _row(name: str, acc: float, attrs: dict[str, Any], t: str = "", alpha: str = "", arch: str = "") -> list[str]:
    return [name, f"{acc:.2%}", f"{attrs.get('params', 0):,}", f"{attrs.get('macs', 0):,}",
            f"{attrs.get('latency_ms', float('nan')):.3f}", t, alpha, arch]


def pareto_table(study: optuna.Study) -> Table:
    """Pareto trials (accuracy, params, MACs, latency, T, alpha, architecture), teacher first."""
    table = Table(title=f"Pareto front of {study.study_name} (validation accuracy)")
    for col in ("trial", "val acc", "params", "MACs", "latency ms", "T", "alpha", "architecture"):
        table.add_column(col, justify="left" if col in ("trial", "architecture") else "right")
    teacher = study.user_attrs.get("teacher")
    if teacher:
        table.add_row(*_row(f"teacher {teacher['name']}", teacher["val_accuracy"], teacher,
                            arch=f"test acc {teacher['test_accuracy']:.2%}"), style="bold")
    for t in pareto_trials(study):
        a = t.user_attrs
        table.add_row(*_row(str(t.number), t.values[0], a, f"{a.get('temperature', 0):.2f}",
                            f"{a.get('alpha', 0):.2f}", a.get("arch", "")))
    return table
