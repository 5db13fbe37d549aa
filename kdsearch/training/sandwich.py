"""Training a supernet by the sandwich rule with in-place distillation (BigNAS, Yu et al. 2020).

Every step trains, on the same batch, the largest subnet against the teacher (its cached logits for the
batch's views, the study's T and alpha), then the smallest and `n_random` random subnets against the
largest's own predictions (in-place distillation, detached); their gradients add up in the shared
weights and one optimizer step follows. Training the two ends every step is what lets the smallest
subnets keep up; learning from the largest rather than from the labels keeps the small ones from
overfitting. With `teach_all`, every subnet learns from the teacher instead. The recipe (optimizer,
schedule, weight decay, label smoothing) is the study's [train], as for any student.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import torch
from rich.progress import Progress
from torch import nn

from ..data.augment import apply_views, random_views, to_float
from ..models.students.registry import build
from ..models.students.supernet import SubnetSpace, Subnets
from . import checkpoint
from .checkpoint import Resume
from .distill import NonFiniteLoss, Recipe, autocast, kd_loss, make_optimizer, steps_per_epoch, train_batches
from .memory_format import fast_memory_format


def sandwich(space: SubnetSpace, step: int, seed: int, n_random: int) -> list:
    """The subnets one step trains: the largest, the smallest, then `n_random` drawn from (seed, step) alone
    (so a resumed training draws the same ones)."""
    rng = random.Random(seed * 1_000_003 + step)
    return [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(n_random)]


def sandwich_step(subnets: Subnets, specs: list, images: torch.Tensor, targets: torch.Tensor,
                  t_logits: torch.Tensor | None, recipe: Recipe, teach_all: bool = False) -> float:
    """Accumulate the gradients of one sandwich step in the shared weights (no optimizer step): specs[0],
    the largest, against the teacher; the others against the largest's detached predictions (or, with
    `teach_all`, the teacher). Returns the largest's loss."""
    soft, first = None, 0.0
    for j, spec in enumerate(specs):
        with autocast(images.device):
            logits = subnets.forward(spec, images)
        if j == 0 or teach_all:  # the largest (or every subnet) learns from the teacher
            loss = kd_loss(logits, t_logits, targets, recipe.temperature, recipe.alpha, recipe.label_smoothing)
        else:  # in-place distillation: from the largest's predictions on the same images
            loss = kd_loss(logits, soft, targets, 1.0, 1.0)
        loss.backward()
        if j == 0:
            soft, first = logits.detach(), float(loss.detach())
    return first


def train_supernet(space: SubnetSpace, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, *, pad: int, flip: bool,
                   seed: int, cache=None, teacher: nn.Module | None = None, n_random: int = 2,
                   teach_all: bool = False, progress: Progress | None = None, resume: Resume | None = None,
                   on_epoch=None) -> nn.Module:
    """The supernet (the largest subnet's module, holding every subnet's weights) trained for recipe.epochs
    on uint8 images x (on the device) by the sandwich rule; resumable by epoch with `resume`."""
    device = x.device
    torch.manual_seed(seed)
    supernet = build(space.largest()).to(device)
    # the layout it trains faster in here (channels_last on CUDA; on a CPU timed once and kept): the CIFAR-10
    # inverted supernet's step took 7.5 s in channels_last against 13.9 s on the 2-core CPU, the residual one's
    # 1.17 against 1.53 (python -m benchmarks subnet-eval --sandwich-steps)
    fmt = fast_memory_format(supernet, device, tuple(x.shape[1:]), recipe.batch_size)
    supernet = supernet.to(memory_format=fmt)
    subnets = Subnets(supernet)
    steps = steps_per_epoch(len(y), recipe.batch_size)
    opt, sched = make_optimizer(supernet, recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.epochs * steps,
                                recipe.schedule, recipe.warmup)
    generator = torch.Generator().manual_seed(seed)
    start, losses = 0, []
    if resume is not None:
        key = checkpoint.full_key(resume, recipe, seed, len(y))
        state = checkpoint.load(resume, key)
        if state is not None:
            start, losses, _ = checkpoint.restore(state, supernet, opt, sched, None, generator)
        resume.resumed_at, resume.last_save = start, 0.0
    task = progress.add_task("supernet", total=recipe.epochs * steps, completed=start * steps) if progress else None
    try:
        for epoch in range(start, recipe.epochs):
            supernet.train()
            total, began = 0.0, time.perf_counter()
            for i, idx in enumerate(train_batches(len(y), recipe.batch_size, generator)):
                if cache is not None:
                    views, t_logits = cache.draw(idx, generator)
                else:
                    views, t_logits = random_views(len(idx), pad, flip, generator), None
                idx_d = idx.to(device, non_blocking=True)
                images = apply_views(to_float(x[idx_d]), views, pad, flip).contiguous(memory_format=fmt)
                if t_logits is None and teacher is not None:
                    with torch.no_grad():
                        t_logits = teacher(images)
                opt.zero_grad(set_to_none=True)
                total += sandwich_step(subnets, sandwich(space, epoch * steps + i, seed, n_random), images,
                                       y[idx_d], t_logits, recipe, teach_all)
                opt.step()
                sched.step()
                if task is not None:
                    progress.update(task, completed=epoch * steps + i + 1,
                                    description=f"supernet epoch {epoch + 1}/{recipe.epochs}")
            mean = total / steps
            if not math.isfinite(mean):
                raise NonFiniteLoss(f"supernet training loss became {mean} (try a lower learning rate)")
            losses.append(mean)
            if on_epoch is not None:
                on_epoch(epoch + 1, mean, time.perf_counter() - began)
            if resume is not None and epoch + 1 < recipe.epochs:
                checkpoint.save(resume, key, epoch + 1, losses, [], supernet, opt, sched, None, generator)
    finally:
        if task is not None:
            progress.remove_task(task)
    return supernet


def supernet_checkpoint(path: Path, space: SubnetSpace, teacher_key: str, cache_key: str | None) -> Resume:
    """Where a supernet training keeps its epoch checkpoint, keyed by what it trains (space, teacher, views)."""
    return Resume(path, {"space": repr(space), "teacher": teacher_key, "cache": cache_key}, every_s=0.0)
