"""torch.compile: does it pay for itself in a kdsearch trial?

Every trial trains a different student architecture, so a compiled model is compiled once per
trial and the compile time must be won back within that trial's few epochs. Baseline: the same
student trained eagerly (kdsearch's loop as it is), in the same process, on the same data.
Printed per student: eager and compiled seconds per epoch (steady state), the one-off compile
cost, the break-even number of epochs, and the whole-trial ratio at --trial-epochs. With --out,
each student is a row of OUT/results.jsonl. (`--backend eager` only traces, without compiling kernels:
the smoke test's quick check that the benchmark still runs.)

    python -m benchmarks compile
    python -m benchmarks compile --device cuda --images 45000
"""

from __future__ import annotations

import argparse

import torch

from kdsearch.models.students import build
from kdsearch.training.distill import make_optimizer, resolve_device, train_epoch

from .harness import FakeCache, ResultFile, random_images, timed
from .students import SIZES, STUDENTS, student_spec


def epoch_times(model, x, y, cache, batch_size: int, epochs: int) -> list[float]:
    """Wall seconds of each of `epochs` training epochs (device synchronized)."""
    opt, sched = make_optimizer(model, "adamw", 3e-3, 5e-4, 10_000)
    gen = torch.Generator().manual_seed(0)
    return [timed(lambda: train_epoch(model, x, y, opt, sched, batch_size=batch_size, pad=4, flip=True,
                                      generator=gen, temperature=4.0, alpha=0.9, cache=cache), x.device)
            for _ in range(epochs)]


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks compile", description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4096, help="training images per epoch")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--trial-epochs", type=int, default=4, help="epochs of the trial the ratio is computed for")
    ap.add_argument("--mode", default="default", help="torch.compile mode")
    ap.add_argument("--backend", default="inductor", help="torch.compile backend")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--students", nargs="+", default=list(SIZES), choices=list(STUDENTS))
    ap.add_argument("--out", help="also append each student's figures to OUT/results.jsonl")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    x, y = random_images(args.images)
    x, y = x.to(device), y.to(device)
    cache = FakeCache(args.images, 10)
    cache.logits = cache.logits.to(device)
    results = ResultFile(args.out, "compile", argv, device) if args.out else None
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, {args.images} images/epoch, "
          f"batch {args.batch_size}, compile mode {args.mode}")
    print(f"{'student':44s} {'eager s/ep':>10s} {'comp s/ep':>9s} {'compile s':>9s} {'break-even':>10s} "
          f"{'trial ratio':>11s}")
    for name in args.students:
        spec = student_spec(name)
        torch.manual_seed(0)
        eager = epoch_times(build(spec).to(device, memory_format=torch.channels_last), x, y, cache, args.batch_size, 3)
        torch._dynamo.reset()
        torch.manual_seed(0)
        model = torch.compile(build(spec).to(device, memory_format=torch.channels_last), mode=args.mode,
                              backend=args.backend)
        compiled = epoch_times(model, x, y, cache, args.batch_size, 3)
        e, c = min(eager[1:]), min(compiled[1:])
        overhead = compiled[0] - c
        gain = e - c
        even = f"{overhead / gain:10.1f}" if gain > 0 else f"{'never':>10s}"
        n = args.trial_epochs
        ratio = (n * e) / (overhead + n * c)  # > 1: compiling makes the whole trial faster
        print(f"{spec.summary():44s} {e:10.2f} {c:9.2f} {overhead:9.1f} {even} {ratio:11.2f}")
        if results:
            results.append({"student": name, "arch": spec.summary(), "eager_s": e, "compiled_s": c,
                            "compile_s": overhead, "break_even": overhead / gain if gain > 0 else None,
                            "trial_ratio": ratio},
                           {"images": args.images, "batch": args.batch_size, "trial_epochs": n, "mode": args.mode,
                            "backend": args.backend, "threads": torch.get_num_threads()})
    print(f"trial ratio = eager trial time / compiled trial time over {args.trial_epochs} epochs, compile included")
