"""`kdsearch report`: the Pareto table, and the HTML report with its figures (and, asked, test accuracy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from rich.console import Console

from ..analysis.front import pareto_trials, trial_points
from ..analysis.holdout import pareto_test_accuracy
from ..runs.files import write_text_atomic
from ..runs.run import Run
from .figures import report_figures
from .images import export_images
from .page import render_html
from .tables import front_facts, pareto_table, teacher_facts


def default_out(run: Run) -> Path:
    return run.run_dir / "report.html" if run.run_dir else Path(f"{run.study.study_name}-report.html")


def write_report(run: Run, out: Path | None = None, test: bool = False, images: bool = False, image_format: str = "png",
                 console: Console | None = None, table: bool = True) -> dict[str, Any]:
    """Print the Pareto table (unless not `table`) and write the HTML report; with `test`, also the Pareto
    members' test accuracy (measured once and stored). Off by default: students are picked on validation
    accuracy, and a test column beside it invites picking on the test split. Returns what the table says, as
    JSON values (`report --json`): the study, the report's path, the teacher, the front and the notes."""
    console = console or Console()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = run.study
    members = [t.number for t in pareto_trials(study)]
    tests, test_note = pareto_test_accuracy(run, members, evaluate=test, say=lambda m: console.print(m, highlight=False))
    with_test = test and any(n in tests for n in members)
    if table:
        console.print(pareto_table(study, tests if with_test else None))
    points = trial_points(study, tests if with_test else None)
    figures, notes = report_figures(study, points)
    notes = ([test_note] if test_note else []) + notes
    for note in notes:
        console.print(f"[yellow]{note}[/]", highlight=False)
    out = Path(out) if out else default_out(run)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, render_html(study, points, figures, notes, with_test))
    console.print(f"report: {out}", highlight=False)
    if images:
        written, message = export_images(figures, out.with_name(out.stem + "-images"), image_format)
        if written:
            console.print(f"images: {len(written)} {image_format.upper()} files in {written[0].parent}", highlight=False)
        if message:
            console.print(f"[yellow]{message}[/]", highlight=False)
    return {"study": study.study_name, "report": str(out), "teacher": teacher_facts(study),
            "front": front_facts(study, tests if with_test else None), "notes": notes}
