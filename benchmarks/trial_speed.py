"""Per-trial speed: a plain DataLoader pipeline with an online teacher vs kdsearch's cached, lean path.

(a) baseline: a torchvision-transforms DataLoader (RandomCrop + RandomHorizontalFlip per
    sample) and an online teacher forward on every batch;
(b) kdsearch: the teacher-logit cache (built once; its cost is amortized over --amortize
    trials) and the on-device uint8 training loop.
Both train the same student specs for the same epochs with the same optimizer and schedule,
and print wall time per trial, the ratio, and validation accuracy (in one process, on the same data).
With --out, each student (and the cache build) is a row of OUT/results.jsonl.

    python -m benchmarks trial-speed                      # CIFAR-style ResNet-50 teacher, random weights
    python -m benchmarks trial-speed --train 2000 --epochs 5 --views 8
    python -m benchmarks trial-speed --device cuda --train 10000 --workers 8   # bf16, data on the GPU

On CUDA both sides run under the same bf16 autocast; the baseline's DataLoader yields CPU
batches (pinned) that are copied to the GPU, as a plain pipeline does, while kdsearch keeps the
whole uint8 split on the GPU.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torchvision.transforms.v2 as T
from torch.utils.data import DataLoader, Dataset

from kdsearch.measure.costs import count_macs
from kdsearch.models.students import build
from kdsearch.models.teachers.build import build_teacher
from kdsearch.training.distill import (accuracy, autocast, kd_loss, make_optimizer, resolve_device, steps_per_epoch,
                                       train_epoch)
from kdsearch.training.logit_cache import build_or_load

from .harness import ResultFile, random_images, timed
from .students import STUDENTS, TRIAL_STUDENTS, student_spec


class UInt8Images(Dataset):
    """What a plain pipeline does: one image at a time through torchvision transforms."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y
        self.tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToDtype(torch.float32, scale=True)])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.tf(self.x[i]), self.y[i]


def baseline_trial(spec, teacher, x, y, xv, yv, epochs, batch_size, seed, workers) -> float:
    """x, y on the CPU (a DataLoader's job); teacher and validation data on the device."""
    device = xv.device
    torch.manual_seed(seed)
    model = build(spec).to(device, memory_format=torch.channels_last)
    loader = DataLoader(UInt8Images(x, y), batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(seed), pin_memory=device.type == "cuda")
    opt, sched = make_optimizer(model, "adamw", 3e-3, 5e-4, epochs * len(loader))
    for _ in range(epochs):
        model.train()
        for images, labels in loader:
            images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            labels = labels.to(device, non_blocking=True)
            with autocast(device):
                with torch.no_grad():
                    t_logits = teacher(images)
                logits = model(images)
            loss = kd_loss(logits, t_logits, labels, 4.0, 0.9)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return accuracy(model, xv, yv)


def kdsearch_trial(spec, cache, x, y, xv, yv, epochs, batch_size, seed) -> float:
    """Everything on the device."""
    torch.manual_seed(seed)
    model = build(spec).to(x.device, memory_format=torch.channels_last)
    opt, sched = make_optimizer(model, "adamw", 3e-3, 5e-4, epochs * steps_per_epoch(len(y), batch_size))
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        train_epoch(model, x, y, opt, sched, batch_size=batch_size, pad=4, flip=True, generator=g,
                    temperature=4.0, alpha=0.9, cache=cache)
    return accuracy(model, xv, yv)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks trial-speed", description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="resnet50")
    ap.add_argument("--train", type=int, default=1000, help="training images (random 32x32 data)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--amortize", type=int, default=20, help="trials that share one cache build")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers of the baseline")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--students", nargs="+", default=list(TRIAL_STUDENTS), choices=list(STUDENTS))
    ap.add_argument("--out", help="also append each student's trial times to OUT/results.jsonl")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = random_images(args.train, generator=g)
    xv, yv = random_images(500, generator=g)
    teacher, _ = build_teacher(args.teacher, num_classes=10, in_channels=3, image_size=32, pretrained=False,
                               mean=(0.5,) * 3, std=(0.25,) * 3)
    teacher = teacher.eval().requires_grad_(False).to(device, memory_format=torch.channels_last)
    xd, yd, xv, yv = x.to(device), y.to(device), xv.to(device), yv.to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {name}, teacher {args.teacher} "
          f"({count_macs(teacher, (3, 32, 32)) / 1e6:.0f}M MACs/image, random weights), {args.train} train images, "
          f"{args.epochs} epochs, {args.views} views, cache amortized over {args.amortize} trials")

    results = ResultFile(args.out, "trial-speed", argv, device) if args.out else None
    settings = {"teacher": args.teacher, "train": args.train, "epochs": args.epochs, "views": args.views,
                "amortize": args.amortize, "batch": args.batch_size, "workers": args.workers,
                "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        caches = []
        build_s = timed(lambda: caches.append(build_or_load(teacher, xd, pad=4, flip=True, k=args.views, seed=0,
                                                             key="bench", run_dir=Path(tmp))), device)
        cache = caches[0]
    print(f"cache build: {build_s:.1f} s ({build_s / args.amortize:.2f} s per trial amortized)")
    if results:
        results.append({"cache_build_s": build_s, "views": args.views, "images": args.train}, settings)
    print(f"{'student':40s} {'baseline s':>10s} {'kdsearch s':>10s} {'ratio':>6s} {'acc base':>8s} {'acc kds':>8s}")
    total_b = total_k = 0.0
    for i, name in enumerate(args.students):
        spec, acc = student_spec(name), {}
        tb = timed(lambda: acc.update(base=baseline_trial(spec, teacher, x, y, xv, yv, args.epochs, args.batch_size, i,
                                                          args.workers)), device)
        tk = timed(lambda: acc.update(kds=kdsearch_trial(spec, cache, xd, yd, xv, yv, args.epochs, args.batch_size, i)),
                   device) + build_s / args.amortize
        total_b, total_k = total_b + tb, total_k + tk
        print(f"{spec.summary():40s} {tb:10.2f} {tk:10.2f} {tb / tk:6.1f} {acc['base']:8.3f} {acc['kds']:8.3f}")
        if results:
            results.append({"student": name, "arch": spec.summary(), "baseline_s": tb, "kdsearch_s": tk,
                            "ratio": tb / tk, "acc_baseline": acc["base"], "acc_kdsearch": acc["kds"]}, settings)
    n = len(args.students)
    print(f"mean per trial: baseline {total_b / n:.2f} s, kdsearch {total_k / n:.2f} s, "
          f"speed-up {total_b / total_k:.1f}x (random labels: accuracies are chance-level, shown only to confirm both ran)")
