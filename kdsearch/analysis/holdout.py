"""Test accuracy of the Pareto members: measured once, on the held-out test split, stored in the run folder.

It is stored in RUN/test_accuracy.json, not on the trials: Optuna's RDB storage refuses to update a
finished trial (UpdateFinishedTrialError), user attributes included. The search never sees the
test split, and a second report does not evaluate again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..config import DataConfig
from ..data.datasets import load_data
from ..errors import KDSearchError
from ..models.students.io import load_student
from ..runs.files import write_text_atomic
from ..runs.layout import test_file, trial_dir
from ..runs.run import Run
from ..training.distill import accuracy, resolve_device


def load_test_accuracies(run_dir: Path | None) -> dict[int, float]:
    path = test_file(run_dir) if run_dir else None
    if not path or not path.is_file():
        return {}
    return {int(k): float(v) for k, v in json.loads(path.read_text()).items()}


def save_test_accuracies(run_dir: Path, values: dict[int, float]) -> None:
    """Atomically, like every file of a run folder."""
    write_text_atomic(test_file(run_dir), json.dumps({str(k): v for k, v in sorted(values.items())}, indent=2) + "\n")


def evaluate_students(run_dir: Path, config: dict[str, Any], numbers: Sequence[int]) -> dict[int, float]:
    """Test accuracy of the saved students `numbers` (weights in the run folder); loads the data once."""
    data = load_data(DataConfig(**config["data"]), seed=config.get("seed", 0))
    device = resolve_device("auto")
    x, y = data.test.x.to(device), data.test.y.to(device)
    out = {}
    for n in numbers:
        model, _ = load_student(trial_dir(run_dir, n))
        out[n] = accuracy(model.to(device), x, y)
    return out


def pareto_test_accuracy(run: Run, numbers: Sequence[int], evaluate: bool = True,
                         say: Callable[[str], object] = print) -> tuple[dict[int, float], str]:
    """Stored test accuracies, after evaluating (once) those of `numbers` not stored yet; and a note."""
    stored = load_test_accuracies(run.run_dir)
    if not evaluate:
        return stored, ""
    if run.run_dir is None:
        return stored, "Test accuracy skipped: the run folder (with the students' weights) was not found."
    missing = [n for n in numbers if n not in stored]
    no_weights = [n for n in missing if not (trial_dir(run.run_dir, n) / "student.safetensors").is_file()]
    todo = [n for n in missing if n not in no_weights]
    note = f"No saved weights for trial(s) {', '.join(map(str, no_weights))}: no test accuracy." if no_weights else ""
    if todo:
        if not run.config.get("data"):
            return stored, "Test accuracy skipped: the run's data config is unknown."
        say(f"measuring test accuracy of {len(todo)} Pareto student(s) (once: stored in {test_file(run.run_dir)})")
        try:
            stored.update(evaluate_students(run.run_dir, run.config, todo))
        except KDSearchError as exc:  # e.g. the dataset is no longer where the run found it
            return stored, f"Test accuracy skipped: {exc}"
        save_test_accuracies(run.run_dir, stored)
    return stored, note
