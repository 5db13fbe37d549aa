"""Supervision: what a trial costs in a supervised worker process against in the command's own.

The same study runs in this process (the baseline) and in a supervised worker process (the default),
in one Python process, on the same prepared inputs.

A warm-up run prepares the study's teacher and teacher-logit cache once (kept in --out: a rerun
skips it); both runs start from copies of them, so neither trains the teacher. The fixed cost,
one worker start, is also timed on its own (three times). The study's objectives should be deterministic
(the digits demo uses accuracy, params and MACs, one thread): then both runs train exactly the
same students and the difference in wall time is the supervision's — spawning the worker,
importing torch there, loading data, teacher and cache from the run folder, and passing its
printed lines back — divided over the trials. With --out, the figures are a row of OUT/results.jsonl
(the runs themselves go to OUT/runs/).

    python -m benchmarks supervise studies/digits-demo.toml --trials 10
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import tempfile
from pathlib import Path

from rich.console import Console

from kdsearch.config import load_config
from kdsearch.search.runner import prepare, run_search
from kdsearch.search.study import n_finished

from .harness import ResultFile, parse_set, timed


def timed_run(study_file: Path, run_dir: Path, trials: int, in_process: bool, sets: dict) -> tuple[float, int]:
    cfg = load_config(study_file, {**sets, "run_dir": str(run_dir), "trials": trials})
    studies = []
    seconds = timed(lambda: studies.append(run_search(cfg, Console(quiet=True), study_file, in_process=in_process)))
    return seconds, n_finished(studies[0])


def _load_inputs(cfg_dict: dict) -> None:
    """What a worker does before its first trial: import kdsearch, load data, teacher and cache."""
    from kdsearch.config import config_from_dict
    from kdsearch.search.inputs import prepare_inputs

    prepare_inputs(config_from_dict(cfg_dict), Console(quiet=True))


def worker_start_seconds(cfg) -> float:
    """Wall time of one worker start: spawn, imports, loading the prepared inputs (paid once per run,
    and once per dead worker)."""
    def start() -> None:
        process = multiprocessing.get_context("spawn").Process(target=_load_inputs, args=(cfg.to_dict(),))
        process.start()
        process.join()

    return timed(start)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks supervise", description=__doc__.split("\n")[0])
    parser.add_argument("study_file", type=Path)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None,
                        help="Folder for the runs (OUT/runs) and results.jsonl (default: a temporary one, no results).")
    parser.add_argument("--starts", type=int, default=3, help="worker starts timed on their own (0: none)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a study-file setting, e.g. epochs=2 (repeatable)")
    args = parser.parse_args(argv)
    sets = dict(parse_set(item) for item in args.set)
    root = args.out / "runs" if args.out else Path(tempfile.mkdtemp(prefix="bench-supervise-"))
    warm = root / "warm-up"
    cfg = load_config(args.study_file, {**sets, "run_dir": str(warm), "trials": args.trials})
    warm_s = timed(lambda: prepare(cfg, Console(quiet=True), args.study_file, record=False))  # the teacher, the cache
    print(f"warm-up (teacher and teacher-logit cache, once): {warm_s:.1f} s")
    starts = [worker_start_seconds(cfg) for _ in range(args.starts)]
    if starts:
        print(f"one worker start (spawn, imports, data, teacher and cache loaded): "
              f"{', '.join(f'{s:.1f}' for s in starts)} s")
    results = {}
    for name, in_process in (("supervised", False), ("in-process", True)):
        run_dir = root / name
        shutil.rmtree(run_dir, ignore_errors=True)
        for folder in ("teachers", "logits"):
            shutil.copytree(warm / folder, run_dir / folder)
        results[name] = timed_run(args.study_file, run_dir, args.trials, in_process, sets)
        print(f"{name}: {results[name][0]:.1f} s for {results[name][1]} trials")
    (base, n), (sup, _) = results["in-process"], results["supervised"]
    print(f"supervision: {sup - base:+.1f} s in all, {(sup - base) / n:+.2f} s per trial "
          f"({base / n:.2f} s -> {sup / n:.2f} s a trial, ratio {sup / base:.3f})"
          + (f"; worker start / trials: {min(starts) / n:.2f} s per trial" if starts else ""))
    if args.out:
        ResultFile(args.out, "supervise", argv).append(
            {"trials": n, "in_process_s": base, "supervised_s": sup, "ratio": sup / base, "worker_starts_s": starts},
            {"study": str(args.study_file), "sets": args.set})
