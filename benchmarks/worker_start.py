"""Worker start: a process that imports what a kdsearch worker imports, forked from kdsearch's server vs spawned.

Every supervised search worker and every `train --jobs` process starts by importing torch, kdsearch's
worker modules and what its first trial needs (torch._dynamo with the first optimizer, onnx and onnxruntime
for its latency, the storage's SQL layer): kdsearch.search.spawn.PRELOAD. The baseline is what kdsearch did
before: a spawned process (a fresh interpreter that imports them itself). kdsearch's workers are forked from a fork server that imported them once
(kdsearch.search.spawn). Both are timed from `start()` to the child's exit, with the same target (the
imports of PRELOAD), interleaved over `--repeats` rounds in one process; the server's own start
(once per parent process, overlapping the parent's preparation in `kdsearch run`) is timed apart. The
ratio is spawn time / forked time: above 1, a worker starts that much faster. With --out, one row.

    python -m benchmarks worker-start --repeats 5 --out benchmarks/results/worker-start
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing

from kdsearch.search.spawn import PRELOAD, main_module_hidden, worker_context

from .harness import ResultFile, interleaved, timed

def import_all(names: list[str]) -> None:
    """What a worker imports before its first trial ends (a forked one finds them loaded)."""
    for name in names:
        importlib.import_module(name)


def start_and_join(context: multiprocessing.context.BaseContext) -> None:
    """One process that imports what a worker imports and exits; it must succeed."""
    with main_module_hidden():  # (kdsearch's workers are launched so; the same for the baseline)
        process = context.Process(target=import_all, args=(PRELOAD,))
        process.start()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"the worker process exited with {process.exitcode}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks worker-start", description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds (one start of each per round)")
    ap.add_argument("--out", help="folder for results.jsonl")
    args = ap.parse_args(argv)
    forked = worker_context()
    server_s = timed(lambda: start_and_join(forked))  # the first start waits for the server's imports
    times = interleaved({"spawn": lambda: start_and_join(multiprocessing.get_context("spawn")),
                         "forked": lambda: start_and_join(forked)}, args.repeats)
    spawn, fork = times["spawn"], times["forked"]
    ratio = spawn.median / fork.median
    print(f"first start (the fork server importing {', '.join(PRELOAD)}): {server_s:.2f} s")
    print(f"spawned: {spawn.median:.2f} s per start (spread {spawn.spread:.0%}); forked from the server: "
          f"{fork.median:.3f} s (spread {fork.spread:.0%}); ratio {ratio:.1f}x over {args.repeats} rounds")
    if args.out:
        ResultFile(args.out, "worker-start", argv or []).append(
            {"first_start_s": server_s, "spawn": spawn.as_dict(), "forked": fork.as_dict(), "ratio": ratio},
            {"repeats": args.repeats, "imports": PRELOAD, "preload": PRELOAD})

