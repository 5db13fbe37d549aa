"""How long recorded runs took, read from their files: the source of every duration the docs state.

For a run folder: the teacher's training time (`teachers/*.json`, `train_seconds`), the search's
span from its first trial's start to its last trial's end with its longest trial (the study's
trial times), and each final-training model's time (`final/*/results.json`, `seconds`). For a
pruners-benchmark folder or any Optuna SQLite file: the same span per study.

    python -m benchmarks run-times results/digits-demo results/cifar10-resnet32
    python -m benchmarks run-times benchmarks/results/pruners-cifar10-gpu benchmarks/results/pruners-cifar10
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import optuna


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def search_span(study: optuna.Study) -> str:
    """First trial start to last trial end, and the longest trial (Optuna's recorded times)."""
    done = [t for t in study.trials if t.datetime_start and t.datetime_complete]
    if not done:
        return "no finished trials"
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    longest = max((t.datetime_complete - t.datetime_start).total_seconds() for t in done)
    first = min(t.datetime_start for t in done)
    return (f"{len(done)} trials from {first:%Y-%m-%d %H:%M:%S} in {minutes(span)}, "
            f"longest trial {minutes(longest)}")


def storage_lines(db: Path) -> list[str]:
    url = f"sqlite:///{db}"
    return [f"  {s.study_name}: {search_span(optuna.load_study(study_name=s.study_name, storage=url))}"
            for s in sorted(optuna.get_all_study_summaries(url), key=lambda s: s.study_name)]


def run_lines(run: Path) -> list[str]:
    """A kdsearch run folder: teacher, search, final training."""
    lines = []
    for meta in sorted((run / "teachers").glob("*.json")):
        info = json.loads(meta.read_text())
        if info.get("train_seconds") is not None:
            lines.append(f"  teacher {info['name']}: {info['train_seconds']} s of training, "
                         f"{info.get('epochs_trained')} epoch(s) ({meta.relative_to(run)})")
    if (run / "study.db").is_file():
        lines += [line.replace("  ", "  search ", 1) for line in storage_lines(run / "study.db")]
    for results in sorted((run / "final").glob("*/results.json")):
        body = json.loads(results.read_text())
        secs = [r["seconds"] for r in body["runs"] if r.get("seconds") is not None]
        if secs:
            lines.append(f"  final trial {body['setup']['trial']}: {len(secs)} models of {body['setup']['epochs']} "
                         f"epoch(s), {minutes(min(secs))} to {minutes(max(secs))} each")
    return lines


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks run-times", description=__doc__.splitlines()[0])
    ap.add_argument("paths", type=Path, nargs="+", help="run folders, pruners-benchmark folders or .db files")
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for path in args.paths:
        print(path)
        if path.suffix == ".db":
            lines = storage_lines(path)
        elif (path / "run.json").is_file():
            lines = run_lines(path)
        else:
            lines = [line for db in sorted(path.glob("*.db")) for line in storage_lines(db)]
        print("\n".join(lines) or "  nothing recorded")
