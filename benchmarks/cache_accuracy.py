"""Cached vs online distillation: the same students reach the same validation accuracy.

The plain baseline is online distillation (a teacher forward on every batch, on exactly the
view the student sees); kdsearch's cache replaces it with teacher logits stored per (image,
view). For each seed the same student spec, hyperparameters, optimizer and epochs run both
ways; the mean validation accuracy of the two must agree within 1 point.

Uses the teacher and logit cache of the CPU CIFAR-10 study (run it first, or the teacher is
fine-tuned here, which takes long on a CPU):

    kdsearch run studies/cifar10-resnet32-cpu.toml
    python -m benchmarks cache-accuracy studies/cifar10-resnet32-cpu.toml --epochs 3

With --out, each seed is a row of OUT/results.jsonl.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from rich.console import Console

from kdsearch.config import load_config
from kdsearch.data.datasets import load_data
from kdsearch.data.splits import stratified_subset
from kdsearch.models.students import StudentSpec, build
from kdsearch.training.distill import accuracy, make_optimizer, resolve_device, steps_per_epoch, train_epoch
from kdsearch.training.logit_cache import build_or_load, logit_cache_key as cache_key
from kdsearch.training.teacher import prepare_teacher

from .harness import ResultFile, parse_set, timed


def train_student(spec, x, y, xv, yv, *, epochs, seed, pad, flip, teacher=None, cache=None) -> float:
    torch.manual_seed(seed)
    model = build(spec).to(x.device, memory_format=torch.channels_last)
    opt, sched = make_optimizer(model, "adamw", 5e-3, 5e-4, epochs * steps_per_epoch(len(y), 128))
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        train_epoch(model, x, y, opt, sched, batch_size=128, pad=pad, flip=flip, generator=g,
                    teacher=teacher, cache=cache, temperature=4.0, alpha=0.9)
    return accuracy(model, xv, yv)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks cache-accuracy", description=__doc__.splitlines()[0])
    ap.add_argument("study_file")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a study-file setting, e.g. teacher.epochs=1 (repeatable)")
    ap.add_argument("--out", help="also append each seed's accuracies to OUT/results.jsonl")
    args = ap.parse_args(argv)
    cfg = load_config(args.study_file, dict(parse_set(item) for item in args.set))
    console = Console()
    device = resolve_device(cfg.device)
    data = load_data(cfg.data, seed=cfg.seed)
    train = stratified_subset(data.train, cfg.data.subset, cfg.seed) if cfg.data.subset else data.train
    teacher = prepare_teacher(cfg.teacher, data, cfg.run_path, device, cfg.seed, cfg.latency_threads,
                              latency_runtime=cfg.latency_runtime, latency_batch=cfg.latency_batch)
    x, y = train.x.to(device), train.y.to(device)
    xv, yv = data.val.x.to(device), data.val.y.to(device)
    key = cache_key(teacher.key, train.x, train.y, data.pad, data.flip, cfg.train.views, cfg.seed)
    caches = []
    seconds = timed(lambda: caches.append(build_or_load(teacher.model, x, pad=data.pad, flip=data.flip,
                                                        k=cfg.train.views, seed=cfg.seed, key=key, run_dir=cfg.run_path)),
                    device)
    cache = caches[0]
    console.print(f"teacher {teacher.name} val {teacher.val_accuracy:.2%}; cache of {cache.k} views x {len(y)} images "
                  f"{'built' if cache.built else 'loaded'} in {seconds:.1f} s; {args.epochs} epochs")
    results = ResultFile(args.out, "cache-accuracy", argv, device) if args.out else None
    spec = StudentSpec(in_channels=data.in_channels, num_classes=data.num_classes, image_size=data.image_size,
                       channels=[32, 64, 128], mean=list(data.mean), std=list(data.std))
    console.print(f"student {spec.summary()}")
    online, cached = [], []
    for seed in args.seeds:
        online_s = timed(lambda: online.append(train_student(spec, x, y, xv, yv, epochs=args.epochs, seed=seed,
                                                             pad=data.pad, flip=data.flip, teacher=teacher.model)), device)
        cached_s = timed(lambda: cached.append(train_student(spec, x, y, xv, yv, epochs=args.epochs, seed=seed,
                                                             pad=data.pad, flip=data.flip, cache=cache)), device)
        console.print(f"seed {seed}: online {online[-1]:.2%} ({online_s:.0f} s)   cached {cached[-1]:.2%} ({cached_s:.0f} s)")
        if results:
            results.append({"seed": seed, "online": online[-1], "cached": cached[-1], "online_s": online_s,
                            "cached_s": cached_s, "arch": spec.summary()},
                           {"study": args.study_file, "teacher": teacher.name, "views": cache.k, "epochs": args.epochs,
                            "temperature": 4.0, "alpha": 0.9, "images": len(y), "sets": args.set})
    diff = statistics.mean(cached) - statistics.mean(online)
    console.print(f"mean val accuracy: online {statistics.mean(online):.2%}, cached {statistics.mean(cached):.2%}, "
                  f"difference {diff * 100:+.2f} points ({'within' if abs(diff) <= 0.01 else 'NOT within'} 1 point)")
