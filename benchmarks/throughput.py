"""Student training step vs matmul throughput: how close a student's step comes to this machine's FLOP/s.

Baseline: a plain float32 matmul (torch.mm, square, sized like a big GEMM) in the same
process and thread count gives the machine's attainable FLOP/s. Then each student trains
through kdsearch's loop (cached teacher logits, on-device uint8 data, batched augmentation)
and its training FLOPs per image (forward + backward, counted by PyTorch's FLOP counter on
one real training step) times images per second gives the achieved FLOP/s. The ratio is the
fraction of matmul throughput the training step reaches. With --out, each student is a row of
OUT/results.jsonl (the matmul figure in its settings).

    python -m benchmarks throughput
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from kdsearch.models.students import StudentSpec, build
from kdsearch.training.distill import kd_loss, make_optimizer, train_epoch

from .harness import FakeCache, ResultFile, random_images, timed
from .students import SIZES, STUDENTS, student_spec


def matmul_flops(n: int = 2048, seconds: float = 2.0) -> float:
    """FLOP/s of back-to-back n x n float32 matmuls for about `seconds`."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - start)


def train_flops_per_image(spec: StudentSpec, batch: int) -> float:
    """FLOPs of one full training step (forward, loss, backward) divided by the batch size."""
    model = build(spec)
    x = torch.rand(batch, 3, 32, 32)
    counter = FlopCounterMode(display=False)
    with counter:
        loss = kd_loss(model(x), torch.randn(batch, 10), torch.zeros(batch, dtype=torch.long), 4.0, 0.9)
        loss.backward()
    return counter.get_total_flops() / batch


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks throughput", description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--students", nargs="+", default=list(SIZES), choices=list(STUDENTS))
    ap.add_argument("--matmul-size", type=int, default=2048, help="the baseline's square matrices")
    ap.add_argument("--matmul-seconds", type=float, default=2.0, help="how long the baseline multiplies")
    ap.add_argument("--out", help="also append each student's figures to OUT/results.jsonl")
    args = ap.parse_args(argv)
    peak = matmul_flops(args.matmul_size, args.matmul_seconds)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; float32 matmul {args.matmul_size}^3: "
          f"{peak / 1e9:.1f} GFLOP/s")
    x, y = random_images(args.images)
    cache = FakeCache(args.images, 10)
    results = ResultFile(args.out, "throughput", argv) if args.out else None
    print(f"{'student':44s} {'MFLOP/img':>10s} {'img/s':>8s} {'GFLOP/s':>8s} {'of matmul':>9s}")
    for name in args.students:
        spec = student_spec(name)
        flops = train_flops_per_image(spec, args.batch_size)
        model = build(spec).to(memory_format=torch.channels_last)
        opt, sched = make_optimizer(model, "adamw", 3e-3, 5e-4, 10_000)
        gen = torch.Generator().manual_seed(0)

        def epochs(n: int, images: int) -> None:
            for _ in range(n):
                train_epoch(model, x[:images], y[:images], opt, sched, batch_size=args.batch_size, pad=4, flip=True,
                            generator=gen, temperature=4.0, alpha=0.9, cache=cache)

        epochs(1, 512)  # warm-up
        seconds = timed(lambda: epochs(args.epochs, args.images))
        rate = args.epochs * (args.images // args.batch_size) * args.batch_size / seconds
        print(f"{spec.summary():44s} {flops / 1e6:10.1f} {rate:8.0f} {flops * rate / 1e9:8.1f} {flops * rate / peak:9.1%}")
        if results:
            results.append({"student": name, "arch": spec.summary(), "mflop_per_image": flops / 1e6,
                            "images_per_s": rate, "gflops": flops * rate / 1e9, "of_matmul": flops * rate / peak},
                           {"matmul_gflops": peak / 1e9, "matmul_size": args.matmul_size, "images": args.images,
                            "batch": args.batch_size, "epochs": args.epochs, "threads": torch.get_num_threads()})
