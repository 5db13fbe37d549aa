"""How long recorded runs took, read from their files: the source of every duration the docs state.

For a run folder: the teacher's training time (`teachers/*.json`, `train_seconds`), the search's
span from its first trial's start to its last trial's end with its longest trial (the study's
trial times), and each final-training model's time (`final/*/results.json`, `seconds`). For a
pruners-benchmark folder or any Optuna SQLite file: the same span per study.

The search's cost (search_cost): thread-hours of its trials by kind (short trials, promotions to a rung,
one-shot subnets scored, trials that failed or were stopped: those counted to their recorded end, an upper
bound), each trial's time times the study's threads per trial; a one-shot run's supernet training as each
supernet file records it (its epochs' seconds), or for a supernet saved before that was recorded, from the
run's `run.log` (per process that trained it, the last "supernet epoch ... elapsed" it logged; the log is not
committed); and the students it trained or scored per thread-hour. `--out DIR` appends one row per run folder (what BENCHMARKS.md's search-cost table shows).

    python -m benchmarks run-times results/digits-demo results/cifar10-resnet32
    python -m benchmarks run-times benchmarks/results/pruners-cifar10-gpu benchmarks/results/pruners-cifar10
    python -m benchmarks run-times results/cifar10-resnet32-v3 results/cifar10-resnet32-oneshot \
        --out benchmarks/results/search-cost
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import optuna
from optuna.trial import TrialState

from kdsearch.runs.run import open_run
from kdsearch.search.evaluation.oneshot import training_seconds
from kdsearch.runs.trial_attrs import ONESHOT, RUNG, rejected, repeated

from .harness import ResultFile


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


ELAPSED = re.compile(r"supernet epoch \d+/\d+: .*?(\d+):(\d\d):(\d\d) elapsed")


def supernet_seconds(log: Path) -> float | None:
    """Seconds of supernet training a run.log records: per process (each `$ kdsearch` line starts one), the
    last elapsed time its supernet progress logged, summed; None without a log or supernet lines."""
    if not log.is_file():
        return None
    total, last, seen = 0.0, 0.0, False
    for line in log.read_text(errors="replace").splitlines():
        if "INFO    $ " in line:
            total, last = total + last, 0.0
        m = ELAPSED.search(line)
        if m:
            h, mi, se = map(int, m.groups())
            last, seen = h * 3600 + mi * 60 + se, True
    return total + last if seen else None


def search_cost(run: Path) -> dict:
    """Thread-hours of a run's search by kind of trial, its supernets', and students per thread-hour."""
    opened = open_run(run)
    threads = int(opened.config.get("threads") or 1)
    kinds = {"short": 0.0, "rung": 0.0, "subnets": 0.0, "failed": 0.0}
    counts = {"students": 0, "promotions": 0, "subnets scored": 0, "repeats": 0, "over budget": 0}
    for t in opened.study.get_trials(deepcopy=False):
        hours = ((t.datetime_complete - t.datetime_start).total_seconds() * threads / 3600
                 if t.datetime_start and t.datetime_complete else 0.0)
        if t.state == TrialState.FAIL:
            kinds["failed"] += hours
        elif ONESHOT in t.user_attrs or repeated(t):
            kinds["subnets"] += hours
            counts["repeats" if repeated(t) else "over budget" if rejected(t) else "subnets scored"] += 1
        elif RUNG in t.user_attrs:
            kinds["rung"] += hours
            counts["promotions"] += t.state == TrialState.COMPLETE
        elif t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            kinds["short"] += hours
            counts["over budget" if rejected(t) else "students"] += 1
    recorded = [training_seconds(f) for f in sorted((run / "supernets").glob("*.pt")) if ".partial" not in f.name]
    seconds = sum(recorded) if recorded and None not in recorded else supernet_seconds(run / "run.log")
    total = sum(kinds.values()) + (seconds or 0.0) * threads / 3600
    seen = counts["students"] + counts["subnets scored"]
    return {"run": str(run), "strategy": opened.config.get("strategy", "pertrial"), "threads": threads,
            **{f"{k}_thread_hours": v for k, v in kinds.items()},
            "supernet_thread_hours": None if seconds is None else seconds * threads / 3600,
            **{k.replace(" ", "_"): v for k, v in counts.items()},
            "thread_hours": total, "students_per_thread_hour": seen / total if total else None}


def cost_lines(row: dict) -> list[str]:
    supernet = row["supernet_thread_hours"]
    parts = [f"short trials {row['short_thread_hours']:.2f}", f"rungs {row['rung_thread_hours']:.2f}",
             f"subnets {row['subnets_thread_hours']:.2f}", f"failed or stopped {row['failed_thread_hours']:.2f}",
             "supernets " + ("not in a run.log" if supernet is None else f"{supernet:.2f}")]
    seen = row["students"] + row["subnets_scored"]
    return [f"  cost: {row['thread_hours']:.2f} thread-hours ({', '.join(parts)}); {seen} students trained or scored"
            + (f", {row['students_per_thread_hour']:.0f} per thread-hour" if row["students_per_thread_hour"] else "")]


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks run-times", description=__doc__.splitlines()[0])
    ap.add_argument("paths", type=Path, nargs="+", help="run folders, pruners-benchmark folders or .db files")
    ap.add_argument("--out", type=Path, help="append each run folder's search cost to OUT/results.jsonl")
    args = ap.parse_args(argv)
    results = ResultFile(args.out, "run-times", [str(a) for a in argv]) if args.out else None
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for path in args.paths:
        print(path)
        if path.suffix == ".db":
            lines = storage_lines(path)
        elif (path / "run.json").is_file():
            cost = search_cost(path)
            lines = run_lines(path) + cost_lines(cost)
            if results is not None:
                results.append(cost)
        else:
            lines = [line for db in sorted(path.glob("*.db")) for line in storage_lines(db)]
        print("\n".join(lines) or "  nothing recorded")
