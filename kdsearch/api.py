"""The Python API, for notebooks and scripts: the functions the `kdsearch` commands call.

    import kdsearch
    study = kdsearch.run("studies/digits-demo.toml", trials=5, data__subset=500)
    kdsearch.front("runs/digits-demo")          # a pandas DataFrame, smallest student first

Every function that reads a run takes a run folder (str or Path) or a `Run` from `open_run`.
Settings of `run` are the study file's keys: a [study] key as is (`trials=5`, `epochs=3`), a key
of another section as `section__key` (`data__subset=500`, `teacher__name="resnet20"`) or, the
same thing, dotted through a dict (`**{"data.subset": 500}`). Mistakes raise KDSearchError.

`trials` and `front` return pandas DataFrames; pandas is imported only when they are called.
`export` is `kdsearch.api.export` (the package's `kdsearch.export` is the export package).
Each function imports what it needs when called (torch, optuna, pandas): `import kdsearch` stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import KDSearchError

if TYPE_CHECKING:
    import optuna
    import pandas
    from rich.console import Console
    from torch import nn

    from .runs.run import Run

__all__ = ["run", "open_run", "trials", "front", "load_student", "retrain", "export"]

# the first columns of `trials` and `front`; Optuna's trials_dataframe columns follow
COLUMNS = ["number", "state", "pareto", "feasible", "val_accuracy", "test_accuracy", "params", "macs", "latency_ms",
           "temperature", "alpha", "lr", "arch"]


def _pandas():
    try:
        import pandas
    except ImportError:
        raise KDSearchError("kdsearch.trials and kdsearch.front need pandas (pip install pandas)") from None
    return pandas


def _console(console: Console | None) -> Console:
    from rich.console import Console

    return console or Console()


def _overrides(values: dict[str, Any]) -> dict[str, Any]:
    """`data__subset` -> `data.subset`; a comma string of objectives -> a list."""
    out = {key.replace("__", "."): value for key, value in values.items()}
    if isinstance(out.get("objectives"), str):
        out["objectives"] = [s.strip() for s in out["objectives"].split(",")]
    return out


def run(study_file: str | Path | None = None, *, workers: int = 1, console: Console | None = None,
        in_process: bool = False, callbacks: Iterable[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] | None = None,
        **overrides: Any) -> optuna.Study:
    """Run (or resume) a search, as `kdsearch run`, and return its Optuna study.

    `overrides` are study-file keys: `trials=5`, `data__subset=500` or `**{"data.subset": 500}`;
    `tracking="mlflow"` (or wandb, tensorboard) logs each trial there, as --tracking.
    `callbacks` are Optuna's callbacks, `f(study, frozen_trial)`: each is called in this process once for
    every trial this run finishes (complete, pruned or failed), shortly after it finishes, wherever it ran;
    `study.stop()` in one starts no new trial (kdsearch.search.callbacks).
    The trials run in supervised worker processes, which import the modules that registered
    custom student families (families registered in a notebook cell cannot be reached there:
    put them in a module, or pass `in_process=True`, as `--in-process`).
    """
    from .config import load_config
    from .search.runner import run_search

    if workers < 1:
        raise KDSearchError(f"workers: must be at least 1, got {workers}")
    cfg = load_config(study_file, _overrides(overrides))
    return run_search(cfg, _console(console), Path(study_file) if study_file else None, workers=workers,
                      in_process=in_process, callbacks=list(callbacks or []))


def open_run(path: str | Path | Run | None = None, storage: str | None = None, study_name: str | None = None) -> Run:
    """A run folder (or a storage URL and study name): its study, folder and config (`kdsearch.runs.run.Run`)."""
    from .runs.run import Run, open_run as open_

    if isinstance(path, Run):
        return path
    return open_(Path(path) if path is not None else None, storage, study_name)


def trials(path: str | Path | Run) -> pandas.DataFrame:
    """Every trial, one row each, in trial order.

    First kdsearch's columns: number; state (complete, pruned, rejected = over budget and never
    trained, failed, running); pareto (a feasible Pareto member); feasible (within every budget);
    val_accuracy (final, or the last before pruning); test_accuracy (only where `kdsearch report`
    measured it); params, macs, latency_ms, temperature, alpha, lr, arch. Then Optuna's
    `study.trials_dataframe()` columns (values_*, params_*, user_attrs_*, datetimes, ...), less
    its own `state`.
    """
    from .analysis.front import trial_points
    from .analysis.holdout import load_test_accuracies

    pd = _pandas()
    r = open_run(path)
    rows = [{"number": p.number, "state": p.state, "pareto": p.pareto, "feasible": p.feasible,
             "val_accuracy": p.accuracy, "test_accuracy": p.test_accuracy,
             **{k: p.attrs.get(k) for k in COLUMNS[6:]}}
            for p in trial_points(r.study, load_test_accuracies(r.run_dir))]
    ours = pd.DataFrame(rows, columns=COLUMNS)
    theirs = r.study.trials_dataframe()
    if len(theirs) and "number" in theirs:
        theirs = theirs.drop(columns=[c for c in theirs.columns if c in COLUMNS and c != "number"])
        ours = ours.merge(theirs, on="number", how="left")
    return ours


def front(path: str | Path | Run) -> pandas.DataFrame:
    """The feasible Pareto members (the rows of `trials` with pareto True), smallest (by params) first."""
    df = trials(path)
    return df[df["pareto"].astype(bool)].sort_values(["params", "number"]).reset_index(drop=True)


def _pick(r: Run, trial: int | None, rules: dict[str, Any], console: Console | None) -> int:
    """The trial number given, or the one a picking rule chooses (its reason printed)."""
    from .analysis.pick import Rule, choose

    unknown = set(rules) - set(Rule.names())
    if unknown:
        raise KDSearchError(f"unknown argument(s) {', '.join(sorted(unknown))} (picking rules: {', '.join(Rule.names())})")
    rule = Rule(**rules)
    if rule.given and trial is not None:
        raise KDSearchError("give a trial number or a picking rule, not both")
    if not rule.given:
        if trial is None:
            raise KDSearchError("give a trial number or a picking rule (min_accuracy, max_params, max_macs, "
                                "max_latency_ms, knee)")
        return int(trial)
    picked = choose(r.study, rule)
    _console(console).print(picked.sentence, highlight=False)
    return picked.number


def load_student(path_or_folder: str | Path | Run, trial: int | None = None, *, weights: str = "auto",
                 arm: str = "kd", console: Console | None = None, **rules: Any) -> nn.Module:
    """A student as a torch module in eval mode: from a folder holding spec.json and student.safetensors
    (an export, a trial's or a final model's folder), or trial `trial` (or the one a picking rule such
    as `knee=True` chooses) of a run. From a run, `weights` and `arm` are as for `export`: auto (final
    training's best by validation, when there is one, else the search's), search or final; kd, ce or ce-all."""
    from .export.folder import pick_source
    from .models.students.io import load_student as load
    from .final import chosen_trial
    from .runs.layout import run_file

    if not isinstance(path_or_folder, (str, Path)) or run_file(Path(path_or_folder)).is_file():
        r = open_run(path_or_folder)
        if r.run_dir is None:
            raise KDSearchError("the run's folder (it holds the students' weights) was not found")
        number = _pick(r, trial, rules, console)
        chosen_trial(r.study, number)  # a clear error for a missing trial or one without a student
        folder = pick_source(r.run_dir, number, weights, arm)[0]
    elif trial is not None or rules:
        raise KDSearchError(f"{path_or_folder} is not a run folder (no run.json): give a run folder with a trial")
    else:
        folder = Path(path_or_folder)
    return load(folder)[0]


def retrain(path: str | Path | Run, trials: int | Iterable[int] | None = None, *, front: bool = False,
            epochs: int | None = None, seeds: Iterable[int] | None = None, baseline: bool = True,
            all_views: bool = True, lr: float | None = None, lr_grid: Iterable[float] | None = None,
            lr_probe_epochs: int | None = None, full_data: bool = True, device: str | None = None,
            batch_size: int | None = None, views: int | None = None, threads: int | None = None, jobs: int = 1,
            temperature: float | None = None, alpha: float | None = None,
            references: Iterable[str] | None = None, console: Console | None = None,
            **rules: Any) -> dict[int, dict[str, Any]]:
    """Final training, as `kdsearch train`: each chosen student retrained with its teacher and (with
    `baseline`) without. Choose by trial number(s), `front=True`, or a picking rule (`knee=True`,
    `min_accuracy=0.9`, `max_params=5000`, ...). `temperature` and `alpha` replace the trial's in the
    distilled arm. `references` (None: all; () for none): hand-written references, each scaled to at most
    the student's parameters, trained beside it (results under "references"). Returns the results.json
    contents by trial number."""
    from .final import DEFAULT_GRID, LrPolicy, train_final

    r = open_run(path)
    numbers = [trials] if isinstance(trials, int) else list(trials or [])
    if rules:
        if front or numbers:
            raise KDSearchError("give trial numbers, front=True or a picking rule, not several")
        numbers = [_pick(r, None, rules, console)]
    policy = LrPolicy(grid=tuple(lr_grid) if lr_grid is not None else DEFAULT_GRID, fixed=lr,
                      probe_epochs=lr_probe_epochs)
    return train_final(r, numbers, front=front, epochs=epochs, seeds=list(seeds) if seeds is not None else None,
                       baseline=baseline, all_views=all_views, policy=policy, full_data=full_data, device=device,
                       batch_size=batch_size, views=views, threads=threads, jobs=jobs, temperature=temperature,
                       alpha=alpha, references=list(references) if references is not None else None,
                       console=_console(console))


def export(path: str | Path | Run, trial: int | None = None, *, out: str | Path | None = None, weights: str = "auto",
           opset: int = 18, int8: bool = False, arm: str = "kd", console: Console | None = None,
           **rules: Any) -> Path:
    """Export trial `trial` of a run, or the one a picking rule chooses (`knee=True`, `min_accuracy=0.9`,
    `max_params=5000`, `max_macs=...`, `max_latency_ms=...`), as `kdsearch export`: spec.json,
    student.safetensors, a verified student.onnx, export.json and MODEL_CARD.md (with `int8`, also
    student.int8.onnx, checked as `export --int8` does). `arm="ce"` (or "ce-all") exports final training's
    baseline without a teacher instead of the distilled student. Returns the folder (default
    RUN/export/<trial>, RUN/export/<trial>-<arm> for a baseline)."""
    from .export.folder import export_trial

    r = open_run(path)
    number = _pick(r, trial, rules, console)
    return export_trial(r, number, Path(out) if out is not None else None, weights=weights, opset=opset,
                        int8=int8, arm=arm).folder
