"""Where a student's CPU training step goes: torch.profiler's operators by self time, over a few SGD steps.

A fixed student (benchmarks/students.py), in the memory format kdsearch trains it in (or --layout).
Prints the profiler's table (no result file: BENCHMARKS.md quotes its shares).

    python -m benchmarks profile inv50k [--threads 1] [--batch 128] [--layout contiguous|channels_last]
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from kdsearch.models.students import build
from kdsearch.training.memory_format import FORMATS, fast_memory_format

from .students import STUDENTS, student_spec


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks profile", description=__doc__.splitlines()[0])
    ap.add_argument("student", choices=list(STUDENTS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--layout", choices=["auto", *FORMATS], default="auto",
                    help="the memory layout to profile in (auto: the one kdsearch trains the student in)")
    ap.add_argument("--steps", type=int, default=3, help="steps profiled (after two warm-up steps)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(student_spec(args.student)).train()
    fmt = (fast_memory_format(model, torch.device("cpu"), (3, 32, 32), args.batch) if args.layout == "auto"
           else FORMATS[args.layout])
    model = model.to(memory_format=fmt)
    x = torch.randn(args.batch, 3, 32, 32).to(memory_format=fmt)
    y = torch.randint(0, 10, (args.batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    print(f"{args.student}, batch {args.batch}, {args.threads} thread(s), {fmt}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
