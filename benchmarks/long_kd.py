"""Long distillation budgets: more cached teacher views, or the teacher run online?

Final training at E epochs distills from the teacher's logits. The logit cache holds K views per
image (`[train] views`, 8 in the CIFAR-10 study files): with E > K the distilled student sees each
cached view about E/K times, while ordinary training draws a fresh view every epoch. Two ways to
give it fresh views: cache K = E views (the teacher's forward pass for E views of every image, once,
shared by every seed), or run the teacher online on every batch (that forward pass once per epoch
of every seed). This measures, in one process on the same images, the three costs they are made
of and prints the totals for E epochs and S seeds of one distilled arm:

- teacher forward per image-view (building the cache);
- a distilled epoch from the cache, and one with the teacher online (the plain baseline);

    python -m benchmarks long-kd --images 2048 --epochs-total 50 --seeds 3 [--threads 2]

Timings use random images and a randomly initialized CIFAR ResNet-32 (the same arithmetic as a
trained one); they scale linearly with the number of training images. With --out, each student is a
row of OUT/results.jsonl (the teacher's cost per image-view in its settings).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from kdsearch.config import TrainConfig
from kdsearch.models.students import build
from kdsearch.models.teachers.build import build_teacher
from kdsearch.training.distill import fit, recipe_from
from kdsearch.training.logit_cache import build_or_load

from .harness import ResultFile, interleaved, random_images, timed
from .students import STUDENTS, student_spec

DEFAULT_STUDENTS = ("res8", "plain15k")


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks long-kd", description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2048, help="training images timed (the totals scale to --scale)")
    ap.add_argument("--scale", type=int, default=45000, help="training images of the run the totals are for")
    ap.add_argument("--epochs-total", type=int, default=50)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--views", type=int, default=8, help="the study's cached views, for comparison")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--students", nargs="+", default=list(DEFAULT_STUDENTS), choices=list(STUDENTS))
    ap.add_argument("--out", help="also append each student's figures to OUT/results.jsonl")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    x, y = random_images(args.images)
    teacher, _ = build_teacher("resnet32", num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3)
    teacher = teacher.eval().requires_grad_(False)
    with tempfile.TemporaryDirectory() as tmp:
        caches = []
        seconds = timed(lambda: caches.append(build_or_load(teacher, x, pad=4, flip=True, k=4, seed=0, key="bench",
                                                            run_dir=Path(tmp))))
        cache, per_view = caches[0], seconds / (4 * args.images)  # seconds per image-view
        recipe = recipe_from(TrainConfig(), epochs=1, lr=0.2, temperature=4.0, alpha=0.5)
        scale = args.scale / args.images
        print(f"teacher resnet32 forward: {per_view * 1e3:.2f} ms per image-view; {args.images:,} images timed, "
              f"totals for {args.scale:,} images, {args.epochs_total} epochs, {args.seeds} seeds, "
              f"{args.threads} threads")
        print(f"{'student':>9s} {'cached s/epoch':>15s} {'online s/epoch':>15s} | {'K=' + str(args.views):>9s}"
              f" {'K=E cached':>11s} {'online':>9s} {'online / K=E':>13s}  (minutes, one distilled arm)")
        results = ResultFile(args.out, "long-kd", argv) if args.out else None
        for name in args.students:
            spec = student_spec(name)

            def one_epoch(mode: str) -> None:
                torch.manual_seed(0)
                fit(build(spec), x, y, recipe, pad=4, flip=True, seed=0, teacher=teacher,
                    cache=cache if mode == "cached" else None)

            # interleaved, the faster of two kept
            times = {m: t.min for m, t in interleaved({m: lambda m=m: one_epoch(m) for m in ("cached", "online")}, 2).items()}
            cached_epoch, online_epoch = times["cached"] * scale, times["online"] * scale
            e, s = args.epochs_total, args.seeds
            build_k = per_view * args.views * args.scale
            build_e = per_view * e * args.scale
            k_small = (build_k + s * e * cached_epoch) / 60
            k_full = (build_e + s * e * cached_epoch) / 60
            online = s * e * online_epoch / 60
            print(f"{name:>9s} {cached_epoch:15.1f} {online_epoch:15.1f} | {k_small:9.1f} {k_full:11.1f} {online:9.1f}"
                  f" {online / k_full:12.2f}x")
            if results:
                results.append({"student": name, "arch": spec.summary(), "cached_epoch_s": cached_epoch,
                                "online_epoch_s": online_epoch, "cached_k_min": k_small, "cached_e_min": k_full,
                                "online_min": online, "online_over_cached_e": online / k_full},
                               {"teacher": "resnet32", "ms_per_view": per_view * 1e3, "images": args.images,
                                "scale": args.scale, "epochs_total": e, "seeds": s, "views": args.views,
                                "threads": args.threads})
