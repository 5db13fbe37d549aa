"""Latency drift: does the same student time the same from one minute to the next on this machine?

Measures two fixed students (MLPerf Tiny's ResNet-8 and the 50k plain student) through ONNX
Runtime, one thread, exactly as a study measures latency (`kdsearch.measure.latency.timed_blocks`:
21 blocks, thread CPU time), alternately and back to back for `--seconds`, and prints per 10-second
window the median latency of each and the ratio plain/ResNet-8 (the baseline measured in the same
process, interleaved with it). On a quiet host every window reads the same; when the host's other
tenants take the core's shared resources, both move, and the ratio shows whether a reference
measured alongside would cancel the move.

    python -m benchmarks latency-drift --seconds 90 [--out series.json]
    (stop other work on the machine first, e.g. kill -STOP a benchmark's pid, then kill -CONT)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from kdsearch.measure import latency
from kdsearch.measure.onnx_graph import onnx_bytes
from kdsearch.models.students import build

from .students import student_spec

STUDENTS = ("res8", "plain50k")


def sessions() -> dict[str, tuple]:
    out = {}
    for name in STUDENTS:
        spec = student_spec(name)
        session = latency.ort_session(onnx_bytes(build(spec).eval(), (3, 32, 32)), threads=1)
        out[name] = (session, {session.get_inputs()[0].name: torch.rand(1, 3, 32, 32).numpy()})
    return out


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks latency-drift", description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=90)
    ap.add_argument("--out", help="write the series (time, ms per student) as JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    timed = sessions()
    series, start = [], time.time()
    while time.time() - start < args.seconds:
        row = {"t": time.time() - start}
        for name, (session, x) in timed.items():
            row[name] = latency.timed_blocks(lambda: session.run(None, x), clock=latency.clock(1))[0]
        series.append(row)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(series, f)
    print(f"{'window':>8s} {'res8 ms':>9s} {'plain50k ms':>12s} {'ratio':>7s}")
    for w in range(0, int(args.seconds), 10):
        rows = [r for r in series if w <= r["t"] < w + 10]
        if rows:
            a, b = statistics.median(r["res8"] for r in rows), statistics.median(r["plain50k"] for r in rows)
            print(f"{w:>5d} s {a:9.4f} {b:12.4f} {b / a:7.3f}")
    for name in STUDENTS:
        values = [r[name] for r in series]
        print(f"{name}: {len(values)} measurements, min {min(values):.4f} ms, median {statistics.median(values):.4f}, "
              f"max {max(values):.4f} (max/min {max(values) / min(values):.2f}x)")
    ratios = [r["plain50k"] / r["res8"] for r in series]
    print(f"ratio plain50k/res8: min {min(ratios):.3f}, median {statistics.median(ratios):.3f}, max {max(ratios):.3f}")
