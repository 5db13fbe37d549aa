"""Time per training step: kdsearch's loop against a bare PyTorch loop over the same student.

The bare loop is what a user writes first: float images already in memory, no augmentation,
the default (contiguous) memory format, cross-entropy, SGD with Nesterov momentum, one step
per batch. kdsearch's loop (distill.train_epoch, as a trial runs it: uint8 data, batched crop
and flip, shuffled batches, the KD loss against cached teacher logits, the study's recipe and
weight average) runs the same number of steps on the same student. Both run in this process,
interleaved block by block so that load on the machine hits both alike (benchmarks.harness.interleaved);
the ratio of median seconds per step is printed (the target: kdsearch within 1.2x of the bare loop).

kdsearch trains each student in the memory format training.memory_format.fast_memory_format picks
(on a CPU, by a short timing of both, remembered per machine); with --formats, its loop is also timed
in the other format: whether that choice was right. With --out, each student is a row of OUT/results.jsonl.

    python -m benchmarks speed --threads 2
    python -m benchmarks speed --threads 2 --formats --students res8 plain15k odd-res inv50k odd-inv
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from kdsearch.config import TrainConfig
from kdsearch.models.students import build
from kdsearch.training.distill import make_optimizer, recipe_from, train_epoch, weight_average
from kdsearch.training.memory_format import fast_memory_format

from .harness import FakeCache, ResultFile, interleaved, random_images
from .students import STUDENTS, student_spec

FORMATS = {torch.channels_last: "channels_last", torch.contiguous_format: "contiguous"}


def bare_steps(model, x, y, batch: int, steps: int, opt) -> None:
    model.train()
    for i in range(steps):
        idx = torch.randint(0, len(y), (batch,))
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def kdsearch_steps(model, x, y, recipe, steps: int, opt, sched, ema, cache) -> None:
    n = recipe.batch_size * steps
    train_epoch(model, x[:n], y[:n], opt, sched, batch_size=recipe.batch_size, pad=4, flip=True,
                generator=torch.Generator().manual_seed(0), temperature=recipe.temperature, alpha=recipe.alpha,
                label_smoothing=recipe.label_smoothing, cache=cache, ema=ema)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks speed", description=__doc__.splitlines()[0])
    ap.add_argument("--students", nargs="+", default=["res8", "plain15k"], choices=list(STUDENTS))
    ap.add_argument("--steps", type=int, default=10, help="steps per timed block")
    ap.add_argument("--blocks", type=int, default=5, help="timed blocks per loop, interleaved")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--formats", action="store_true", help="also time kdsearch's loop in the other memory format")
    ap.add_argument("--out", help="also append each student's figures to OUT/results.jsonl")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    train = TrainConfig()
    recipe = recipe_from(train, epochs=1, lr=0.1, temperature=4.0, alpha=0.5)
    n = recipe.batch_size * args.steps
    x8, y = random_images(n)
    xf = x8.float().div(255)
    results = ResultFile(args.out, "speed", argv) if args.out else None
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {recipe.batch_size}, "
          f"recipe {train.optimizer}/{train.schedule}, ema {train.ema}")
    for name in args.students:
        spec = student_spec(name)
        bare = build(spec)
        bare_opt = torch.optim.SGD(bare.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        chosen = fast_memory_format(bare, torch.device("cpu"), (3, 32, 32), recipe.batch_size)  # (timed on a copy)
        formats = [chosen] + ([f for f in FORMATS if f != chosen] if args.formats else [])
        cache = FakeCache(n, 10)
        bare_steps(bare, xf, y, recipe.batch_size, 2, bare_opt)  # warm-up
        loops = {"bare": lambda: bare_steps(bare, xf, y, recipe.batch_size, args.steps, bare_opt)}
        for fmt in formats:
            model = build(spec).to(memory_format=fmt)
            opt, sched = make_optimizer(model, recipe.optimizer, recipe.lr, recipe.weight_decay, 10_000,
                                        recipe.schedule, recipe.warmup)
            ema = weight_average(model, recipe.ema)
            kdsearch_steps(model, x8, y, recipe, 2, opt, sched, ema, cache)  # warm-up
            loops[fmt] = (lambda m=model, o=opt, s=sched, e=ema:
                          kdsearch_steps(m, x8, y, recipe, args.steps, o, s, e, cache))
        times = interleaved(loops, args.blocks)
        per_step = {k: t.median / args.steps for k, t in times.items()}
        mb, mk = per_step["bare"], per_step[chosen]
        other = "".join(f"  ({FORMATS[f]}: {1000 * per_step[f]:.1f} ms/step, {per_step[f] / mb:.2f}x)"
                        for f in formats[1:])
        print(f"{name:13s} {spec.summary():36s} bare {1000 * mb:7.1f} ms/step  kdsearch {1000 * mk:7.1f} ms/step "
              f"{FORMATS[chosen]:13s} ratio {mk / mb:.2f}x{other}", flush=True)
        if results:
            results.append({"student": name, "arch": spec.summary(), "bare_ms": 1000 * mb, "kdsearch_ms": 1000 * mk,
                            "format": FORMATS[chosen], "ratio": mk / mb,
                            "other": {FORMATS[f]: per_step[f] / mb for f in formats[1:]},
                            "spread": {("bare" if k == "bare" else FORMATS[k]): t.spread for k, t in times.items()}},
                           {"steps": args.steps, "blocks": args.blocks, "threads": torch.get_num_threads(),
                            "batch": recipe.batch_size})
