"""Per-trial speed: a plain baseline vs kdsearch's cached, lean path, in one process, same data.

(a) baseline: a torchvision-transforms DataLoader (RandomCrop + RandomHorizontalFlip per
    sample) and an online teacher forward on every batch;
(b) kdsearch: the teacher-logit cache (built once; its cost is amortized over --amortize
    trials) and the on-device uint8 training loop.
Both train the same student specs for the same epochs with the same optimizer and schedule,
and print wall time per trial, the ratio, and validation accuracy.

    python benchmarks/bench_trial_speed.py                      # CIFAR-style ResNet-50 teacher, random weights
    python benchmarks/bench_trial_speed.py --train 2000 --epochs 5 --views 8
    python benchmarks/bench_trial_speed.py --device cuda --train 10000 --workers 8   # bf16, data on the GPU

On CUDA both sides run under the same bf16 autocast; the baseline's DataLoader yields CPU
batches (pinned) that are copied to the GPU, as a plain pipeline does, while kdsearch keeps the
whole uint8 split on the GPU.
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision.transforms.v2 as T
from torch.utils.data import DataLoader, Dataset

from kdsearch.measure.costs import count_macs
from kdsearch.models.students.registry import build
from kdsearch.models.students.spec import StudentSpec
from kdsearch.models.teachers.build import build_teacher
from kdsearch.training.distill import (accuracy, autocast, kd_loss, make_optimizer, resolve_device, steps_per_epoch,
                                       train_epoch)
from kdsearch.training.logit_cache import build_or_load

SPECS = [
    StudentSpec(in_channels=3, num_classes=10, image_size=32, channels=[16, 32, 64], fc=[64]),
    StudentSpec(in_channels=3, num_classes=10, image_size=32, channels=[32, 64], convs_per_stage=2),
    StudentSpec(in_channels=3, num_classes=10, image_size=32, channels=[8, 16, 32], kernel_size=5, batch_norm=False),
]


class UInt8Images(Dataset):
    """What a plain pipeline does: one image at a time through torchvision transforms."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y
        self.tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToDtype(torch.float32, scale=True)])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.tf(self.x[i]), self.y[i]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="resnet50")
    ap.add_argument("--train", type=int, default=1000, help="training images (random 32x32 data)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--amortize", type=int, default=20, help="trials that share one cache build")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers of the baseline")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    args = ap.parse_args()
    device = resolve_device(args.device)

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.train, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (args.train,), generator=g)
    xv = torch.randint(0, 256, (500, 3, 32, 32), dtype=torch.uint8, generator=g)
    yv = torch.randint(0, 10, (500,), generator=g)
    teacher, _ = build_teacher(args.teacher, num_classes=10, in_channels=3, image_size=32, pretrained=False,
                               mean=(0.5,) * 3, std=(0.25,) * 3)
    teacher = teacher.eval().requires_grad_(False).to(device, memory_format=torch.channels_last)
    xd, yd, xv, yv = x.to(device), y.to(device), xv.to(device), yv.to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {name}, teacher {args.teacher} "
          f"({count_macs(teacher, (3, 32, 32)) / 1e6:.0f}M MACs/image, random weights), {args.train} train images, "
          f"{args.epochs} epochs, {args.views} views, cache amortized over {args.amortize} trials")

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cache = build_or_load(teacher, xd, pad=4, flip=True, k=args.views, seed=0, key="bench", run_dir=Path(tmp))
        sync(device)
        build_s = time.perf_counter() - start
    print(f"cache build: {build_s:.1f} s ({build_s / args.amortize:.2f} s per trial amortized)")
    print(f"{'student':40s} {'baseline s':>10s} {'kdsearch s':>10s} {'ratio':>6s} {'acc base':>8s} {'acc kds':>8s}")
    total_b = total_k = 0.0
    for i, spec in enumerate(SPECS):
        start = time.perf_counter()
        acc_b = baseline_trial(spec, teacher, x, y, xv, yv, args.epochs, args.batch_size, i, args.workers)
        sync(device)
        tb = time.perf_counter() - start
        start = time.perf_counter()
        acc_k = kdsearch_trial(spec, cache, xd, yd, xv, yv, args.epochs, args.batch_size, i)
        sync(device)
        tk = time.perf_counter() - start + build_s / args.amortize
        total_b, total_k = total_b + tb, total_k + tk
        print(f"{spec.summary():40s} {tb:10.2f} {tk:10.2f} {tb / tk:6.1f} {acc_b:8.3f} {acc_k:8.3f}")
    print(f"mean per trial: baseline {total_b / len(SPECS):.2f} s, kdsearch {total_k / len(SPECS):.2f} s, "
          f"speed-up {total_b / total_k:.1f}x (random labels: accuracies are chance-level, shown only to confirm both ran)")


if __name__ == "__main__":
    main()
