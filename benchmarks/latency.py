"""Does a student's latency repeat? ONNX Runtime (the search's default) against eager PyTorch (before).

Twenty students of the default space (CIFAR-10 shape, untrained: latency does not depend on the
weights' values), each measured twice on an idle machine and twice while two training workers
of the same study run (two processes, each training a mid-size student in a loop, one thread
each, pausing for timing as kdsearch workers do: kdsearch/search/cpu_share.py). Measured each time:

- `onnxruntime`: what the search records now (latency.student_latency: the exported graph through
  ONNX Runtime, median of 21 blocks, batch 1, one thread), timed under the run folder's CPU lock;
- `torch`: the search's measurement before (measure.latency_ms: eager PyTorch,
  torch.utils.benchmark for 0.1 s, batch 1, one thread), which took no lock;
- under load also `onnxruntime` without the lock, to show what the lock does.

Printed per runtime and condition: the median and largest relative difference between the two
repeats (|a - b| / mean(a, b)), and their Spearman correlation; then the per-trial overhead (ONNX
export and timing) and the students' table. The idle numbers are only as idle as the machine: pause
other work first (the command in BENCHMARKS.md pauses one benchmark with SIGSTOP and resumes it).
OUT/latency.json keeps every measurement and the run's provenance (benchmarks.harness).

    python -m benchmarks latency --out benchmarks/results/latency
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch
from scipy.stats import spearmanr

from kdsearch.config import DEFAULT_SPACE
from kdsearch.measure.costs import count_macs
from kdsearch.measure.latency import student_latency
from kdsearch.search.cpu_share import quiet_cpu, training_share
from kdsearch.measure.onnx_graph import onnx_bytes, with_distinct_weights
from kdsearch.models.students import StudentSpec, build
from kdsearch.models.students.space import sample_spec

from .harness import ROOT, Stopwatch, command, git_commit, machine

SHAPE = (3, 32, 32)
MEAN, STD = [0.491, 0.482, 0.447], [0.247, 0.243, 0.262]
WORKER_SPEC = StudentSpec(family="residual", channels=[32, 64, 128], convs_per_stage=1, in_channels=3,
                          num_classes=10, image_size=32)  # a mid-size student for the training workers


def students(n: int, seed: int) -> list[StudentSpec]:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [sample_spec(study.ask(), dict(DEFAULT_SPACE), 3, 10, 32, MEAN, STD) for _ in range(n)]


def train_worker(run_dir: str, ready: str) -> None:
    """A training worker of the study: steps of SGD on random images, pausing while another times."""
    torch.set_num_threads(1)
    torch.manual_seed(os.getpid())
    model = build(WORKER_SPEC).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.rand(128, *SHAPE).contiguous(memory_format=torch.channels_last), torch.randint(0, 10, (128,))
    steps, start = 0, time.perf_counter()
    with training_share(Path(run_dir), model) as share:
        def report(*_):
            print(json.dumps({"pid": os.getpid(), "steps": steps, "seconds": round(time.perf_counter() - start, 1),
                              "paused_s": round(share.paused_s, 2)}), flush=True)
            raise SystemExit(0)

        signal.signal(signal.SIGTERM, report)
        while True:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            steps += 1
            if steps == 2:
                Path(ready).touch()


def eager_latency_ms(model, input_shape: tuple[int, ...], threads: int = 1, min_run_time: float = 0.1) -> float:
    """The search's latency before ONNX Runtime (kept here as this benchmark's baseline): eager PyTorch,
    batch 1, median of torch.utils.benchmark's blocked_autorange."""
    # torch.utils.benchmark imports cpp_extension, which warns about a missing CUDA toolkit on CPU-only machines
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils.benchmark import Timer  # after the logger is quieted

    model = copy.deepcopy(model).cpu().eval()
    x = torch.rand(1, *input_shape)
    with torch.no_grad():
        model(x)  # warm-up outside the timed region
    timer = Timer(stmt="model(x)", globals={"model": model, "x": x}, num_threads=threads)
    with torch.no_grad():  # scoped here: a grad-mode change in the Timer's setup would leak
        return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def measure_all(models, graphs, run_dir: Path | None, threads: int, eager: bool) -> dict[str, list[float]]:
    out = {"onnxruntime": [], "torch": [], "seconds": []}
    for model, graph in zip(models, graphs):
        with Stopwatch() as watch, quiet_cpu(run_dir):
            out["onnxruntime"].append(student_latency(model, SHAPE, "onnxruntime", 1, threads, graph).median_ms)
        out["seconds"].append(watch.seconds)
        if eager:  # as the search measured before: no lock
            out["torch"].append(eager_latency_ms(model, SHAPE, threads=threads))
    return out


def agreement(a: list[float], b: list[float]) -> dict[str, float]:
    rel = [abs(x - y) / ((x + y) / 2) for x, y in zip(a, b)]
    return {"median_rel_diff": statistics.median(rel), "max_rel_diff": max(rel),
            "spearman": float(spearmanr(a, b).statistic)}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks latency", description=__doc__.splitlines()[0])
    ap.add_argument("--students", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="latency threads")
    ap.add_argument("--workers", type=int, default=2, help="training workers for the 'under load' repeats")
    ap.add_argument("--out", type=Path, default=None, help="folder for latency.json")
    ap.add_argument("--train-worker", nargs=2, metavar=("RUN_DIR", "READY"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.train_worker:
        return train_worker(*args.train_worker)
    torch.set_num_threads(args.threads)
    run_dir = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    specs = students(args.students, args.seed)
    models, graphs, export_s = [], [], []
    onnx_bytes(build(specs[0]), SHAPE)  # the exporter's one-off start-up, not a trial's cost
    for spec in specs:
        model = build(spec).eval()
        with Stopwatch() as watch:
            graphs.append(onnx_bytes(with_distinct_weights(model), SHAPE))  # as search.deployed_costs does
        export_s.append(watch.seconds)
        models.append(model)
    print(f"{platform.node()}: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, torch "
          f"{torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}, load average "
          f"{os.getloadavg()[0]:.2f} at start; {len(specs)} students, batch 1, {args.threads} latency thread(s)",
          flush=True)
    runs = {"idle": [measure_all(models, graphs, run_dir, args.threads, True) for _ in range(2)]}
    print(f"idle done (load average {os.getloadavg()[0]:.2f})", flush=True)
    procs, worker_log = [], []
    try:
        for i in range(args.workers):
            ready = run_dir / f"ready{i}"
            procs.append(subprocess.Popen([sys.executable, "-m", "benchmarks", "latency", "--train-worker", str(run_dir),
                                           str(ready)], stdout=subprocess.PIPE, text=True, cwd=ROOT))
        while not all((run_dir / f"ready{i}").exists() for i in range(args.workers)):
            time.sleep(0.1)
        runs["load"] = [measure_all(models, graphs, run_dir, args.threads, True) for _ in range(2)]
        runs["load, no lock"] = [measure_all(models, graphs, None, args.threads, False) for _ in range(2)]
        print(f"load done (load average {os.getloadavg()[0]:.2f})", flush=True)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            out, _ = p.communicate(timeout=30)
            lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
            worker_log.append(lines[-1] if lines else {})
    summary = {}
    print("\n| condition | runtime | median rel. diff | max rel. diff | Spearman | median latency ms |")
    print("|---|---|---|---|---|---|")
    for cond, (a, b) in runs.items():
        for runtime in ("onnxruntime", "torch"):
            if not a[runtime]:
                continue
            s = agreement(a[runtime], b[runtime])
            s["median_ms"] = statistics.median(a[runtime] + b[runtime])
            summary[f"{cond} / {runtime}"] = s
            print(f"| {cond} | {runtime} | {s['median_rel_diff']:.1%} | {s['max_rel_diff']:.1%} | "
                  f"{s['spearman']:.3f} | {s['median_ms']:.3f} |")
    idle_ort = [statistics.mean(v) for v in zip(*(r["onnxruntime"] for r in runs["idle"]))]
    idle_eager = [statistics.mean(v) for v in zip(*(r["torch"] for r in runs["idle"]))]
    load_ort = [statistics.mean(v) for v in zip(*(r["onnxruntime"] for r in runs["load"]))]
    cross = agreement(idle_ort, load_ort)
    print(f"\nidle against load (onnxruntime, under the lock): median rel. diff {cross['median_rel_diff']:.1%}, "
          f"Spearman {cross['spearman']:.3f}; onnxruntime against eager torch (idle): Spearman "
          f"{spearmanr(idle_ort, idle_eager).statistic:.3f}, eager/onnxruntime median ratio "
          f"{statistics.median(e / o for e, o in zip(idle_eager, idle_ort)):.1f}x")
    timing_s = [s for r in runs["idle"] for s in r["seconds"]]
    print(f"per-trial overhead: ONNX export median {statistics.median(export_s):.2f} s (max {max(export_s):.2f}), "
          f"ONNX Runtime timing median {statistics.median(timing_s):.2f} s (max {max(timing_s):.2f}); "
          "training workers (steps, seconds, of which paused for timing): "
          + "; ".join(f"{w.get('steps')}, {w.get('seconds')} s, {w.get('paused_s')} s" for w in worker_log))
    print("\n| student | MACs | onnxruntime ms (idle, idle, load, load) | eager torch ms (idle, idle, load, load) |")
    print("|---|---|---|---|")
    for i, spec in enumerate(specs):
        ort_ms = [r["onnxruntime"][i] for c in ("idle", "load") for r in runs[c]]
        eager_ms = [r["torch"][i] for c in ("idle", "load") for r in runs[c]]
        print(f"| `{spec.summary()}` | {count_macs(models[i], SHAPE):,} | "
              f"{', '.join(f'{v:.3f}' for v in ort_ms)} | {', '.join(f'{v:.3f}' for v in eager_ms)} |")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "latency.json").write_text(json.dumps(
            {"command": command("latency", argv), "machine": platform.node(), "cpus": os.cpu_count(),
             "provenance": {"machine": machine(), "commit": git_commit(),
                            "settings": {"students": args.students, "seed": args.seed, "threads": args.threads,
                                         "workers": args.workers}},
             "students": [s.summary() for s in specs], "runs": runs, "summary": summary, "export_s": export_s,
             "workers": worker_log}, indent=1) + "\n")
