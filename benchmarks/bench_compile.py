"""Does torch.compile pay for itself in a kdsearch trial?

Every trial trains a different student architecture, so a compiled model is compiled once per
trial and the compile time must be won back within that trial's few epochs. Baseline: the same
student trained eagerly (kdsearch's loop as it is), in the same process, on the same data.
Printed per student: eager and compiled seconds per epoch (steady state), the one-off compile
cost, the break-even number of epochs, and the whole-trial ratio at --trial-epochs.

    python benchmarks/bench_compile.py
    python benchmarks/bench_compile.py --device cuda --images 45000
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_throughput import SPECS, FakeCache

from kdsearch.models.students.registry import build
from kdsearch.training.distill import make_optimizer, resolve_device, train_epoch


def epoch_times(model, x, y, cache, args, epochs: int) -> list[float]:
    """Wall seconds of each of `epochs` training epochs (device synchronized)."""
    opt, sched = make_optimizer(model, "adamw", 3e-3, 5e-4, 10_000)
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        train_epoch(model, x, y, opt, sched, batch_size=args.batch_size, pad=4, flip=True,
                    generator=gen, temperature=4.0, alpha=0.9, cache=cache)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4096, help="training images per epoch")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--trial-epochs", type=int, default=4, help="epochs of the trial the ratio is computed for")
    ap.add_argument("--mode", default="default", help="torch.compile mode")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = resolve_device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=g).to(device)
    y = torch.randint(0, 10, (args.images,), generator=g).to(device)
    cache = FakeCache(args.images, 10)
    cache.logits = cache.logits.to(device)
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, {args.images} images/epoch, "
          f"batch {args.batch_size}, compile mode {args.mode}")
    print(f"{'student':44s} {'eager s/ep':>10s} {'comp s/ep':>9s} {'compile s':>9s} {'break-even':>10s} "
          f"{'trial ratio':>11s}")
    for spec in SPECS:
        torch.manual_seed(0)
        eager = epoch_times(build(spec).to(device, memory_format=torch.channels_last), x, y, cache, args, 3)
        torch._dynamo.reset()
        torch.manual_seed(0)
        model = torch.compile(build(spec).to(device, memory_format=torch.channels_last), mode=args.mode)
        compiled = epoch_times(model, x, y, cache, args, 3)
        e, c = min(eager[1:]), min(compiled[1:])
        overhead = compiled[0] - c
        gain = e - c
        even = f"{overhead / gain:10.1f}" if gain > 0 else f"{'never':>10s}"
        n = args.trial_epochs
        ratio = (n * e) / (overhead + n * c)  # > 1: compiling makes the whole trial faster
        print(f"{spec.summary():44s} {e:10.2f} {c:9.2f} {overhead:9.1f} {even} {ratio:11.2f}")
    print(f"trial ratio = eager trial time / compiled trial time over {args.trial_epochs} epochs, compile included")


if __name__ == "__main__":
    main()
