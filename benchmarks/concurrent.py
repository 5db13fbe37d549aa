"""Models trained side by side (`kdsearch train --jobs N`) vs one at a time: images per second.

One small student trains through kdsearch's loop (`distill.train_epoch`: uint8 data on the device,
batched crop and flip, the default recipe's SGD) on random images, first alone in one process with
all the threads (the baseline), then as N copies in N processes at once on the same device (on a CPU
the threads shared out, as `--jobs` does). Printed: images per second of one model alone, of each
copy and of all N together, and the ratio of the total to the alone figure: how much faster a final
training's models (arms x seeds) finish side by side than one after the other. On a GPU, the alone
figure is also the per-model step throughput (the issue's aim: 100,000 images/s for a tiny student
on an H100-class device). With --out, each --jobs N is a row of OUT/results.jsonl.

    python -m benchmarks concurrent --jobs 2                       # this CPU's cores (--student plain6k)
    python -m benchmarks concurrent --device cuda --jobs 4 8       # a GPU lease (scripts/gpu/gpu.sh)
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time

import torch

from kdsearch.measure.costs import count_params
from kdsearch.models.students import build
from kdsearch.training.distill import make_optimizer, train_epoch
from kdsearch.training.memory_format import fast_memory_format

from .harness import ResultFile, random_images, timed
from .students import STUDENTS, student_spec


def images_per_second(student: str, device: str, threads: int, images: int, batch: int, epochs: int,
                      start: float | None = None) -> float:
    """Train `epochs` epochs (after one warm-up epoch) and return images/s; waits until `start` (time.time())."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    x, y = random_images(images, generator=g)
    x, y = x.to(dev), y.to(dev)
    model = build(student_spec(student)).to(dev)
    model.to(memory_format=fast_memory_format(model, dev, (3, 32, 32), batch))
    opt, sched = make_optimizer(model, "sgd", 0.05, None, (epochs + 1) * images // batch, "linear", 0.2)

    def epoch() -> None:
        train_epoch(model, x, y, opt, sched, batch_size=batch, pad=4, flip=True, generator=g)  # one sync at its end

    epoch()  # warm-up: allocator, kernels, oneDNN primitives
    if start is not None:
        time.sleep(max(0.0, start - time.time()))
    seconds = timed(lambda: [epoch() for _ in range(epochs)], dev)
    return epochs * (images // batch) * batch / seconds


def _job(args: tuple) -> float:
    return images_per_second(*args)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks concurrent", description=__doc__.splitlines()[0])
    ap.add_argument("--student", default="res8", choices=list(STUDENTS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, nargs="+", default=[2])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of the process alone")
    ap.add_argument("--images", type=int, default=5120)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--start-delay", type=float, default=None,
                    help="seconds before the copies start timing, for every process to warm up (default 20 + 2N)")
    ap.add_argument("--out", help="also append each --jobs N to OUT/results.jsonl")
    a = ap.parse_args(argv)
    results = ResultFile(a.out, "concurrent", argv, a.device) if a.out else None
    name = torch.cuda.get_device_name() if a.device == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"torch {torch.__version__}, {name}, student {a.student}, batch {a.batch}, {a.images} images x {a.epochs} epochs")
    alone = images_per_second(a.student, a.device, a.threads, a.images, a.batch, a.epochs)
    print(f"alone ({a.threads} threads): {alone:,.0f} images/s")
    context = multiprocessing.get_context("spawn")
    for n in a.jobs:
        threads = max(1, a.threads // n) if a.device == "cpu" else a.threads
        # every process has warmed up by then: they time the same seconds
        start = time.time() + (20 + 2 * n if a.start_delay is None else a.start_delay)
        with context.Pool(n) as pool:
            each = pool.map(_job, [(a.student, a.device, threads, a.images, a.batch, a.epochs, start)] * n)
        total = sum(each)
        print(f"--jobs {n} ({threads} threads each): {min(each):,.0f}-{max(each):,.0f} images/s each, "
              f"{total:,.0f} together: {total / alone:.2f}x alone")
        if results:
            results.append({"student": a.student, "arch": student_spec(a.student).summary(),
                            "params": count_params(build(student_spec(a.student))), "jobs": n,
                            "alone": alone, "each": each, "together": total, "ratio": total / alone},
                           {"device": a.device, "threads": a.threads, "threads_each": threads, "images": a.images,
                            "batch": a.batch, "epochs": a.epochs})
