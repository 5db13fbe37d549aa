"""`kdsearch train`: retrain a chosen student at full budget, with its teacher and without.

The search trains each student briefly, often on a subset; the student a user picks deserves
the full training split and more epochs. Trained twice from the same seed and initialization,
once with the trial's distillation settings (T, alpha, lr) and once with plain cross-entropy
(alpha = 0, same lr and schedule), the difference in test accuracy is what distillation adds
for that student. Validation accuracy is tracked per epoch; the test split is read once per
finished model. Each finished model is saved and recorded at once, so an interrupted run keeps
what it finished and a rerun of the same command continues.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .config import config_from_dict
from .distill import accuracy, make_optimizer, steps_per_epoch, train_epoch
from .errors import KDSearchError
from .report import Run
from .search import TrialContext, prepare_inputs, save_student
from .students import StudentSpec, build

FINAL_DIR = "final"
RESULTS_FILE = "results.json"
MODES = {"kd": "with teacher (trial's T, alpha)", "ce": "without teacher (alpha = 0)"}


def final_dir(run_dir: Path, number: int) -> Path:
    return run_dir / FINAL_DIR / f"{number:05d}"


def model_dir(run_dir: Path, number: int, mode: str, seed: int) -> Path:
    return final_dir(run_dir, number) / f"{mode}-seed{seed}"


@dataclass
class FinalRun:
    mode: str  # "kd" or "ce"
    seed: int
    curve: list[float]  # validation accuracy after each epoch
    test_accuracy: float
    seconds: float

    @property
    def val_accuracy(self) -> float:
        return self.curve[-1]


def chosen_trial(study: optuna.Study, number: int) -> tuple[StudentSpec, dict[str, float]]:
    """The spec and distillation settings of trial `number`, which must have trained a student."""
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise KDSearchError(f"no trial {number} in study {study.study_name!r} (trials 0 to {len(trials) - 1})")
    attrs = trials[number].user_attrs
    if "spec" not in attrs or not all(k in attrs for k in ("temperature", "alpha", "lr")):
        raise KDSearchError(f"trial {number} has no student to retrain (state {trials[number].state.name.lower()})")
    return StudentSpec.from_json(json.dumps(attrs["spec"])), {k: float(attrs[k]) for k in ("temperature", "alpha", "lr")}


def load_results(path: Path, setup: dict[str, Any]) -> list[FinalRun]:
    """Runs already finished with the same setup (anything else is retrained)."""
    if not path.is_file():
        return []
    stored = json.loads(path.read_text())
    if stored.get("setup") != setup:
        return []
    return [FinalRun(**r) for r in stored["runs"]]


def save_results(path: Path, setup: dict[str, Any], runs: list[FinalRun], teacher: dict[str, Any]) -> None:
    summary = {}
    for mode in MODES:
        tests = [r.test_accuracy for r in runs if r.mode == mode]
        if tests:
            summary[f"{mode}_test_mean"] = statistics.mean(tests)
    if len(summary) == 2:
        summary["kd_gain_points"] = 100 * (summary["kd_test_mean"] - summary["ce_test_mean"])
    body = {"setup": setup, "teacher": teacher, "runs": [asdict(r) for r in runs], "summary": summary}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    os.replace(tmp, path)


def train_one(ctx: TrialContext, spec: StudentSpec, hp: dict[str, float], mode: str, seed: int, epochs: int,
              x_test: torch.Tensor, y_test: torch.Tensor, progress: Progress) -> tuple[FinalRun, torch.nn.Module]:
    """Train the spec from scratch (same init for both modes of a seed); val curve, then test once."""
    cfg, data = ctx.cfg, ctx.data
    alpha = hp["alpha"] if mode == "kd" else 0.0
    torch.manual_seed(seed)
    model = build(spec).to(ctx.device, memory_format=torch.channels_last)
    steps = steps_per_epoch(len(ctx.y_train), cfg.train.batch_size)
    opt, sched = make_optimizer(model, "adamw", hp["lr"], cfg.train.weight_decay, epochs * steps)
    generator = torch.Generator().manual_seed(seed)
    task = progress.add_task(f"{mode} seed {seed}", total=epochs * steps)
    start, curve = time.perf_counter(), []
    for epoch in range(epochs):
        train_epoch(model, ctx.x_train, ctx.y_train, opt, sched, batch_size=cfg.train.batch_size, pad=data.pad,
                    flip=data.flip, generator=generator, teacher=ctx.teacher.model, temperature=hp["temperature"],
                    alpha=alpha, label_smoothing=cfg.train.label_smoothing, cache=ctx.cache,
                    on_step=lambda s, e=epoch: progress.update(task, completed=e * steps + s))
        curve.append(accuracy(model, ctx.x_val, ctx.y_val))
    progress.remove_task(task)
    result = FinalRun(mode, seed, curve, accuracy(model, x_test, y_test), time.perf_counter() - start)
    return result, model


def train_final(run: Run, number: int, epochs: int | None = None, seeds: list[int] | None = None,
                baseline: bool = True, full_data: bool = True, device: str | None = None,
                console: Console | None = None) -> list[FinalRun]:
    """Retrain trial `number`'s student (and, with `baseline`, the same student without a teacher)."""
    console = console or Console()
    if run.run_dir is None or not run.config:
        raise KDSearchError("final training needs the run folder (its config, teacher and data settings)")
    spec, hp = chosen_trial(run.study, number)
    cfg = config_from_dict(run.config)
    cfg.run_dir = str(run.run_dir)
    if full_data:
        cfg.data.subset = None
    if device:
        cfg.device = device
    epochs = 4 * cfg.epochs if epochs is None else epochs
    seeds = seeds or [cfg.seed]
    if epochs < 1:
        raise KDSearchError("--epochs must be at least 1")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ctx = prepare_inputs(cfg, console)
    setup = {"trial": number, "spec": json.loads(spec.to_json()), **hp, "epochs": epochs, "train_images": len(ctx.train),
             "batch_size": cfg.train.batch_size, "teacher_key": ctx.teacher.key}
    folder = final_dir(run.run_dir, number)
    folder.mkdir(parents=True, exist_ok=True)
    results_path = folder / RESULTS_FILE
    runs = load_results(results_path, setup)
    teacher = {"name": ctx.teacher.name, "val_accuracy": ctx.teacher.val_accuracy,
               "test_accuracy": ctx.teacher.test_accuracy, "params": ctx.teacher.params}
    modes = list(MODES) if baseline else ["kd"]
    todo = [(m, s) for s in seeds for m in modes if not any(r.mode == m and r.seed == s for r in runs)]
    console.print(f"trial {number}: {spec.summary()}, T {hp['temperature']:.2f}, alpha {hp['alpha']:.2f}, "
                  f"lr {hp['lr']:.2e}; {epochs} epochs on {len(ctx.train)} images; "
                  f"{len(todo)} to train, {len(runs)} already done ({results_path})", highlight=False)
    x_test, y_test = ctx.data.test.x.to(ctx.device), ctx.data.test.y.to(ctx.device)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        for mode, seed in todo:
            result, model = train_one(ctx, spec, hp, mode, seed, epochs, x_test, y_test, progress)
            save_student(model_dir(run.run_dir, number, mode, seed), model, spec)
            runs.append(result)
            save_results(results_path, setup, runs, teacher)  # at once: an interruption keeps it
            progress.console.print(f"{mode} seed {seed}: val {result.val_accuracy:.2%}, test {result.test_accuracy:.2%} "
                                   f"({result.seconds:.0f} s)", highlight=False)
    console.print(final_table(runs, teacher))
    return runs


def final_table(runs: list[FinalRun], teacher: dict[str, Any]) -> Table:
    """Means over seeds (and the spread of test accuracy across them, when there are several)."""
    table = Table(title="final training (test accuracy read once per model)")
    for col in ("student", "seeds", "val", "test", "test sd"):
        table.add_column(col, justify="left" if col == "student" else "right")
    means = {}
    for mode, label in MODES.items():
        rs = [r for r in runs if r.mode == mode]
        if rs:
            tests = [r.test_accuracy for r in rs]
            means[mode] = statistics.mean(tests)
            sd = f"{statistics.stdev(tests):.2%}" if len(tests) > 1 else ""
            table.add_row(label, str(len(rs)), f"{statistics.mean(r.val_accuracy for r in rs):.2%}", f"{means[mode]:.2%}", sd)
    table.add_row(f"teacher {teacher['name']}", "", f"{teacher['val_accuracy']:.2%}", f"{teacher['test_accuracy']:.2%}", "")
    if len(means) == 2:
        gain = round(100 * (means["kd"] - means["ce"]), 2) + 0.0  # + 0.0: no "-0.00"
        table.caption = f"distillation adds {gain:+.2f} points of test accuracy (mean over seeds)"
    return table
