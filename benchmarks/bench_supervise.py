"""What supervision costs per trial: the same study run in this process (the baseline) and in a
supervised worker process (the default), in one Python process, on the same prepared inputs.

A warm-up run prepares the study's teacher and teacher-logit cache once (kept in --out: a rerun
skips it); both runs start from copies of them, so neither trains the teacher. The fixed cost,
one worker start, is also timed on its own (three times). The study's objectives should be deterministic
(the digits demo uses accuracy, params and MACs, one thread): then both runs train exactly the
same students and the difference in wall time is the supervision's — spawning the worker,
importing torch there, loading data, teacher and cache from the run folder, and passing its
printed lines back — divided over the trials.

    python benchmarks/bench_supervise.py studies/digits-demo.toml --trials 10
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console

from kdsearch.config import load_config
from kdsearch.search.runner import prepare, run_search
from kdsearch.search.study import n_finished


def timed_run(study_file: Path, run_dir: Path, trials: int, in_process: bool) -> tuple[float, int]:
    cfg = load_config(study_file, {"run_dir": str(run_dir), "trials": trials})
    start = time.perf_counter()
    study = run_search(cfg, Console(quiet=True), study_file, in_process=in_process)
    return time.perf_counter() - start, n_finished(study)


def _load_inputs(cfg_dict: dict) -> None:
    """What a worker does before its first trial: import kdsearch, load data, teacher and cache."""
    from kdsearch.config import config_from_dict
    from kdsearch.search.inputs import prepare_inputs

    prepare_inputs(config_from_dict(cfg_dict), Console(quiet=True))


def worker_start_seconds(cfg) -> float:
    """Wall time of one worker start: spawn, imports, loading the prepared inputs (paid once per run,
    and once per dead worker)."""
    import multiprocessing

    start = time.perf_counter()
    process = multiprocessing.get_context("spawn").Process(target=_load_inputs, args=(cfg.to_dict(),))
    process.start()
    process.join()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("study_file", type=Path)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None, help="Folder for the runs (default: a temporary one).")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="bench-supervise-"))
    warm = root / "warm-up"
    cfg = load_config(args.study_file, {"run_dir": str(warm), "trials": args.trials})
    t0 = time.perf_counter()
    prepare(cfg, Console(quiet=True), args.study_file, record=False)  # trains the teacher, builds the cache
    print(f"warm-up (teacher and teacher-logit cache, once): {time.perf_counter() - t0:.1f} s")
    starts = [worker_start_seconds(cfg) for _ in range(3)]
    print(f"one worker start (spawn, imports, data, teacher and cache loaded): "
          f"{', '.join(f'{s:.1f}' for s in starts)} s")
    results = {}
    for name, in_process in (("supervised", False), ("in-process", True)):
        run_dir = root / name
        shutil.rmtree(run_dir, ignore_errors=True)
        for folder in ("teachers", "logits"):
            shutil.copytree(warm / folder, run_dir / folder)
        results[name] = timed_run(args.study_file, run_dir, args.trials, in_process)
        print(f"{name}: {results[name][0]:.1f} s for {results[name][1]} trials")
    (base, n), (sup, _) = results["in-process"], results["supervised"]
    print(f"supervision: {sup - base:+.1f} s in all, {(sup - base) / n:+.2f} s per trial "
          f"({base / n:.2f} s -> {sup / n:.2f} s a trial, ratio {sup / base:.3f}); "
          f"worker start / trials: {min(starts) / n:.2f} s per trial")


if __name__ == "__main__":
    main()
