"""Response-based distillation (Hinton et al. 2015) and the lean training loop it runs in.

loss = alpha · T² · KL(teacher_T ‖ student_T) + (1 − alpha) · CE(student, labels), with the KL
averaged per sample (`batchmean`). alpha weighs the distillation term, as in Hinton et al. and
RepDistiller (torchdistill uses the opposite convention).

The loop keeps a whole split as one uint8 tensor on the device and augments batches with tensor
ops (kdsearch.augment): no DataLoader, no per-sample Python.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import nn

from .augment import apply_views, random_views, to_float
from .errors import KDSearchError


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite: the trial fails, the study goes on."""


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise KDSearchError("--device cuda: no CUDA device is available (use --device auto or cpu)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise KDSearchError("--device mps: MPS is not available (use --device auto or cpu)")
    return torch.device(name)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; full precision elsewhere (CPU bf16 is slower for small convs)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, targets: torch.Tensor,
            temperature: float, alpha: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """alpha·T²·KL(teacher_T ‖ student_T) + (1−alpha)·CE; plain CE when there is no teacher."""
    ce = F.cross_entropy(student_logits.float(), targets, label_smoothing=label_smoothing)
    if teacher_logits is None or alpha == 0.0:
        return ce
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits.float() / t, dim=1), F.log_softmax(teacher_logits.float() / t, dim=1),
                  reduction="batchmean", log_target=True)
    return alpha * t * t * kl + (1.0 - alpha) * ce


def make_optimizer(model: nn.Module, kind: str, lr: float, weight_decay: float, total_steps: int):
    """AdamW or SGD (Nesterov) with a one-cycle schedule: robust for short budgets."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if kind == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    else:
        opt = torch.optim.AdamW(groups, lr=lr)
    if total_steps < 8:  # too short for warm-up and annealing phases (OneCycleLR divides by zero)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total_steps, pct_start=0.25)
    return opt, sched


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(n // batch_size, 1)  # the last, partial batch is dropped (stable batch norm)


def train_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Index batches of one epoch in a seeded random order (CPU generator: repeatable anywhere)."""
    order = torch.randperm(n, generator=generator)
    for i in range(steps_per_epoch(n, batch_size)):
        yield order[i * batch_size:(i + 1) * batch_size]


def train_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
                scheduler, *, batch_size: int, pad: int, flip: bool, generator: torch.Generator,
                teacher: nn.Module | None = None, temperature: float = 1.0, alpha: float = 0.0,
                label_smoothing: float = 0.0, cache=None,
                on_step: Callable[[int], None] | None = None) -> float:
    """One epoch over (x, y) (uint8 images and labels already on the device); returns mean loss.

    With a logit cache (kdsearch.logits.LogitCache), each image is shown as one of its cached
    views, and with alpha > 0 trained against exactly that view's teacher logits. The views are
    drawn the same way whatever alpha is, so a distilled student and its no-teacher baseline
    built with the same generator see the same views in the same order. Without a cache, views
    are drawn from all of them and the teacher (if any) runs online on exactly the view shown.
    """
    model.train()
    device = x.device
    total = torch.zeros((), device=device)
    steps = 0
    for idx in train_batches(len(y), batch_size, generator):
        t_logits = None
        if cache is not None:
            views, cached = cache.draw(idx, generator)
            t_logits = cached if alpha > 0 else None
        else:
            views = random_views(len(idx), pad, flip, generator)
        idx_d = idx.to(device, non_blocking=True)
        images = apply_views(to_float(x[idx_d]), views, pad, flip).contiguous(memory_format=torch.channels_last)
        with autocast(device):
            if t_logits is None and cache is None and teacher is not None and alpha > 0:
                with torch.no_grad():
                    t_logits = teacher(images)
            logits = model(images)
        loss = kd_loss(logits, t_logits, y[idx_d], temperature, alpha, label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.detach()
        steps += 1
        if on_step is not None:
            on_step(steps)
    mean = float(total) / max(steps, 1)  # one device sync per epoch
    if not math.isfinite(mean):
        raise NonFiniteLoss(f"training loss became {mean} (try a lower learning rate)")
    return mean


@dataclass
class Recipe:
    """How a model is trained: everything but the model, the data and the teacher."""

    epochs: int
    lr: float
    batch_size: int
    weight_decay: float = 5e-4
    optimizer: str = "adamw"  # or "sgd" (Nesterov momentum); both with a one-cycle schedule
    temperature: float = 1.0
    alpha: float = 0.0  # weight of the distillation term; 0 = labels only
    label_smoothing: float = 0.0


EpochCallback = Callable[[int, float, list[float]], None]  # (epoch from 1, mean loss, val curve so far)


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, *, pad: int, flip: bool, seed: int,
        teacher: nn.Module | None = None, cache=None, x_val: torch.Tensor | None = None,
        y_val: torch.Tensor | None = None, on_epoch: EpochCallback | None = None,
        progress: Progress | None = None, description: str = "train") -> list[float]:
    """Train `model` on (x, y) by `recipe`; returns validation accuracy after each epoch.

    The one training loop of kdsearch: search trials (on_epoch prunes by raising), final
    training and teacher fine-tuning all run it. Batch order and views come from a CPU
    generator seeded with `seed`, so two calls with the same seed and data see the same batches
    and views, whatever their alpha (see train_epoch). The model's initialization is the
    caller's: seed torch before building it.
    """
    steps = steps_per_epoch(len(y), recipe.batch_size)
    opt, sched = make_optimizer(model, recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.epochs * steps)
    generator = torch.Generator().manual_seed(seed)
    task = progress.add_task(description, total=recipe.epochs * steps) if progress is not None else None
    curve: list[float] = []
    try:
        for epoch in range(recipe.epochs):
            if task is not None:
                progress.update(task, description=f"{description} epoch {epoch + 1}/{recipe.epochs}")
            loss = train_epoch(
                model, x, y, opt, sched, batch_size=recipe.batch_size, pad=pad, flip=flip, generator=generator,
                teacher=teacher, temperature=recipe.temperature, alpha=recipe.alpha,
                label_smoothing=recipe.label_smoothing, cache=cache,
                on_step=None if task is None else (lambda s, e=epoch: progress.update(task, completed=e * steps + s)))
            if x_val is not None and y_val is not None:
                curve.append(accuracy(model, x_val, y_val))
            if on_epoch is not None:
                on_epoch(epoch + 1, loss, curve)
    finally:
        if task is not None:
            progress.remove_task(task)
    return curve


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024, progress: Progress | None = None,
            description: str = "evaluating") -> torch.Tensor:
    """Logits for uint8 images x (on the model's device), unaugmented, in eval mode (with a progress
    task when given: scoring a large teacher on a CPU takes minutes)."""
    model.eval()
    out = []
    task = progress.add_task(description, total=len(x)) if progress is not None else None
    for i in range(0, len(x), batch_size):
        images = to_float(x[i:i + batch_size]).contiguous(memory_format=torch.channels_last)
        with autocast(x.device):
            out.append(model(images).float())
        if task is not None:
            progress.update(task, completed=min(i + batch_size, len(x)))
    if task is not None:
        progress.remove_task(task)
    return torch.cat(out) if out else torch.empty(0)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024,
             progress: Progress | None = None, description: str = "evaluating") -> float:
    """Top-1 accuracy in [0, 1]."""
    if len(y) == 0:
        return float("nan")
    return float((predict(model, x, batch_size, progress, description).argmax(1) == y).float().mean())
