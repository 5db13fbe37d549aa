"""How close the student training step comes to this machine's matmul throughput.

Baseline: a plain float32 matmul (torch.mm, square, sized like a big GEMM) in the same
process and thread count gives the machine's attainable FLOP/s. Then each student trains
through kdsearch's loop (cached teacher logits, on-device uint8 data, batched augmentation)
and its training FLOPs per image (forward + backward, counted by PyTorch's FLOP counter on
one real training step) times images per second gives the achieved FLOP/s. The ratio is the
fraction of matmul throughput the training step reaches.

    python benchmarks/bench_throughput.py
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from kdsearch.data.augment import random_views
from kdsearch.models.students.registry import build
from kdsearch.models.students.spec import StudentSpec
from kdsearch.training.distill import kd_loss, make_optimizer, train_epoch

SPECS = [
    StudentSpec(in_channels=3, num_classes=10, image_size=32, channels=[16, 32, 64], fc=[64]),
    StudentSpec(in_channels=3, num_classes=10, image_size=32, channels=[32, 64, 128], convs_per_stage=2),
    StudentSpec(in_channels=3, num_classes=10, image_size=32, channels=[64, 128, 256], convs_per_stage=2),
]


class FakeCache:
    """Teacher logits for every image and view, as the real cache serves them (no teacher cost)."""

    def __init__(self, n: int, classes: int):
        self.logits = torch.randn(n, classes).half()

    def draw(self, idx, generator):
        return random_views(len(idx), 4, True, generator), self.logits[idx]


def matmul_flops(n: int = 2048, seconds: float = 2.0) -> float:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    peak = matmul_flops()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; float32 matmul 2048^3: {peak / 1e9:.1f} GFLOP/s")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (args.images,), generator=g)
    cache = FakeCache(args.images, 10)
    print(f"{'student':44s} {'MFLOP/img':>10s} {'img/s':>8s} {'GFLOP/s':>8s} {'of matmul':>9s}")
    for spec in SPECS:
        flops = train_flops_per_image(spec, args.batch_size)
        model = build(spec).to(memory_format=torch.channels_last)
        opt, sched = make_optimizer(model, "adamw", 3e-3, 5e-4, 10_000)
        gen = torch.Generator().manual_seed(0)
        train_epoch(model, x[:512], y[:512], opt, sched, batch_size=args.batch_size, pad=4, flip=True,
                    generator=gen, temperature=4.0, alpha=0.9, cache=cache)  # warm-up
        start = time.perf_counter()
        for _ in range(args.epochs):
            train_epoch(model, x, y, opt, sched, batch_size=args.batch_size, pad=4, flip=True,
                        generator=gen, temperature=4.0, alpha=0.9, cache=cache)
        rate = args.epochs * (args.images // args.batch_size) * args.batch_size / (time.perf_counter() - start)
        print(f"{spec.summary():44s} {flops / 1e6:10.1f} {rate:8.0f} {flops * rate / 1e9:8.1f} {flops * rate / peak:9.1%}")


if __name__ == "__main__":
    main()
