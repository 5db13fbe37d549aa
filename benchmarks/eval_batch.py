"""Validation-pass speed by evaluation batch size: kdsearch's `accuracy` at batch B vs at 1024.

Every epoch of a trial ends with a pass over the validation split, and pruning checks within epochs
add more (on the CPU a pass over 5,000 images costs over a quarter of a training epoch over 10,000).
The baseline is the batch kdsearch used everywhere (1024, which suits a GPU); each student is timed
at each batch size in interleaved rounds in one process (the median of the rounds), and the ratio is
baseline time / time: above 1, that batch size is faster. `--teacher NAME` times that teacher's forward
(random weights) the same way; `--train-images N` also times one training epoch of each student over N
images (batch 128, the default recipe's SGD) against its validation pass at kdsearch's evaluation batch.
`--bf16` also times every model under bf16 autocast (kdsearch's precision on CUDA; on a CPU with AMX,
e.g. Intel Sapphire Rapids, oneDNN runs it natively), against the default precision at 1024. With
--out, each model and precision is a row of OUT/results.jsonl (its median seconds and ratio per batch).

    python -m benchmarks eval --threads 1 --teacher resnet32 --train-images 10000
    python -m benchmarks eval --threads 1 --teacher resnet32 --batches 128 --bf16
    python -m benchmarks eval --device cuda --batches 256 1024 4096
"""

from __future__ import annotations

import argparse

import torch

from kdsearch.models.students import build
from kdsearch.models.teachers.registry import get_arch
from kdsearch.training.distill import accuracy, eval_batch_size, make_optimizer, train_epoch
from kdsearch.training.memory_format import fast_memory_format

from .harness import ResultFile, interleaved, random_images, timed
from .students import student_spec

STUDENTS = ("conv18x4", "conv37x4", "res8")


def timed_pass(model, x, y, batch: int, bf16: bool) -> None:
    """One validation pass (ends in a host sync: accuracy returns a float), under bf16 autocast or not."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        accuracy(model, x, y, batch_size=batch)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks eval", description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--batches", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--teacher", help="also a teacher of kdsearch's registry, e.g. resnet32")
    ap.add_argument("--train-images", type=int, default=0, help="also one training epoch over N images")
    ap.add_argument("--bf16", action="store_true",
                    help="also under bf16 autocast (ratios against the default precision at 1024)")
    ap.add_argument("--out", help="also append each model's figures to OUT/results.jsonl")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    x, y = random_images(args.images, generator=g)
    x, y = x.to(dev), y.to(dev)
    results = ResultFile(args.out, "eval", argv, dev) if args.out else None
    settings = {"images": args.images, "rounds": args.rounds, "threads": args.threads}
    sizes = [1024] + [b for b in args.batches if b != 1024]
    print(f"torch {torch.__version__}, {args.device}, {args.threads} threads, {args.images} images, "
          f"median of {args.rounds} interleaved rounds; ratio = time at 1024 / time at the batch")
    print(f"{'student':14s} " + " ".join(f"{'b' + str(b) + ' s':>9s}" for b in sizes) + "  " +
          " ".join(f"{'x b' + str(b):>8s}" for b in sizes[1:]))
    models = {name: build(student_spec(name)).to(dev) for name in STUDENTS}
    if args.teacher:
        models[args.teacher] = get_arch(args.teacher).build(10, 3, True).to(dev)
    precisions = ["default"] + (["bf16"] if args.bf16 else [])
    for name, model in models.items():
        model.to(memory_format=fast_memory_format(model, dev, (3, 32, 32), 128))  # as it trains
        accuracy(model, x[:1024], y[:1024])  # warm-up
        times = interleaved({(p, b): (lambda p=p, b=b: timed_pass(model, x, y, b, p == "bf16"))
                             for p in precisions for b in sizes}, args.rounds, dev)
        med = {k: t.median for k, t in times.items()}
        base = med["default", 1024]
        for p in precisions:
            label = name if p == "default" else f"{name} bf16"
            print(f"{label:14s} " + " ".join(f"{med[p, b]:9.2f}" for b in sizes) + "  " +
                  " ".join(f"{base / med[p, b]:8.2f}" for b in sizes[1:]))
            if results:
                results.append({"model": name, "precision": p, "seconds": {str(b): med[p, b] for b in sizes},
                                "ratio": {str(b): base / med[p, b] for b in sizes}}, settings)
    if args.train_images:
        xt, yt = random_images(args.train_images, generator=g)
        xt, yt = xt.to(dev), yt.to(dev)
        bs = eval_batch_size(dev)
        for name in STUDENTS:
            model = models[name]
            opt, sched = make_optimizer(model, "sgd", 0.05, None, 10 ** 6, "linear", 0.2)
            train_epoch(model, xt[:1280], yt[:1280], opt, sched, batch_size=128, pad=4, flip=True, generator=g)
            epoch = timed(lambda: train_epoch(model, xt, yt, opt, sched, batch_size=128, pad=4, flip=True, generator=g),
                          dev)
            val = timed(lambda: accuracy(model, x, y, batch_size=bs), dev)
            print(f"{name:10s} training epoch over {args.train_images} images {epoch:.1f} s; validation pass over "
                  f"{args.images} at batch {bs} {val:.1f} s = {val / epoch:.2f} of the epoch")
