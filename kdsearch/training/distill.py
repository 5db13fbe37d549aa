"""Response-based distillation (Hinton et al. 2015) and the lean training loop it runs in.

loss = alpha · T² · KL(teacher_T ‖ student_T) + (1 − alpha) · CE(student, labels), with the KL
averaged per sample (`batchmean`). alpha weighs the distillation term, as in Hinton et al. and
RepDistiller (torchdistill uses the opposite convention).

The loop keeps a whole split as one uint8 tensor on the device and augments batches with tensor
ops (kdsearch.data.augment): no DataLoader, no per-sample Python.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..config import OPTIMIZERS, SCHEDULES, TrainConfig
from ..data.augment import apply_views, random_views, to_float
from ..errors import KDSearchError
from ..models.students.zero_init import zero_init_last_bn
from . import checkpoint
from .checkpoint import Resume
from .memory_format import fast_memory_format, memory_format_of


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


# weight decay when the recipe leaves it unset: L2 for SGD (added to the gradient), decoupled for AdamW
# (shrinks weights by lr * wd per step, so it needs a far larger value to regularize at all)
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-4, "adamw": 0.05}


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay conv and linear weights only: decaying batch-norm scales and biases only hurts small nets."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(schedule: str, warmup: float, total_steps: int) -> Callable[[int], float]:
    """The lr multiplier after `step` optimizer steps: a linear warm-up over the first `warmup` of the
    steps to the peak, then a linear ("linear") or cosine ("cosine") decay to zero at the last step."""
    up = max(1, round(warmup * total_steps))
    down = max(1, total_steps - up)

    def factor(step: int) -> float:
        if step < up:
            return (step + 1) / up
        left = max(0.0, (total_steps - step) / down)
        return left if schedule == "linear" else 0.5 * (1.0 - math.cos(math.pi * left))
    return factor


def make_optimizer(model: nn.Module, kind: str, lr: float, weight_decay: float | None, total_steps: int,
                   schedule: str = "onecycle", warmup: float = 0.25):
    """SGD (Nesterov momentum 0.9) or AdamW over param_groups, and a per-step schedule: "onecycle"
    (torch's OneCycleLR, warm-up fraction `warmup`; kdsearch's schedule before it had a choice),
    "linear" or "cosine" (lr_factor)."""
    if kind not in OPTIMIZERS or schedule not in SCHEDULES:
        raise ValueError(f"unknown optimizer {kind!r} or schedule {schedule!r}")
    groups = param_groups(model, DEFAULT_WEIGHT_DECAY[kind] if weight_decay is None else weight_decay)
    if kind == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    else:
        opt = torch.optim.AdamW(groups, lr=lr)
    if schedule != "onecycle":
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(schedule, warmup, total_steps))
    if total_steps < 8:  # too short for warm-up and annealing phases (OneCycleLR divides by zero)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total_steps, pct_start=warmup)
    return opt, sched


def warmed_decay(decay: float, updates: int) -> float:
    """The average's decay at its `updates`-th update: min(decay, (1 + n) / (10 + n)), the warm-up of
    TensorFlow's ExponentialMovingAverage and timm's ModelEmaV2/V3. Without it a short trial's average
    (decay 0.999 keeps a weight of 0.999^steps on the start) would still be mostly the random initial
    weights; with it the average follows the trained weights at first and settles to `decay`."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


def weight_average(model: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of the weights and batch-norm statistics (torch's AveragedModel),
    updated after every step with a warmed-up decay (warmed_decay); None when decay is 0 (off).
    The number of updates is AveragedModel's n_averaged buffer, so a resumed fit warms up where it was."""
    if decay <= 0:
        return None

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        get_ema_multi_avg_fn(warmed_decay(decay, int(n_averaged)))(averaged, current, n_averaged)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)


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
                label_smoothing: float = 0.0, cache=None, ema: AveragedModel | None = None,
                on_step: Callable[[int], None] | None = None) -> float:
    """One epoch over (x, y) (uint8 images and labels already on the device); returns mean loss.

    With a logit cache (kdsearch.training.logit_cache.LogitCache), each image is shown as one of its cached
    views, and with alpha > 0 trained against exactly that view's teacher logits. The views are
    drawn the same way whatever alpha is, so a distilled student and its no-teacher baseline
    built with the same generator see the same views in the same order. Without a cache, views
    are drawn from all of them and the teacher (if any) runs online on exactly the view shown.
    With `ema`, the weight average is updated after every step.
    """
    model.train()
    device, fmt = x.device, memory_format_of(model)
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
        images = apply_views(to_float(x[idx_d]), views, pad, flip).contiguous(memory_format=fmt)
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
        if ema is not None:
            ema.update_parameters(model)
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
    """How a model is trained: everything but the model, the data and the teacher.

    The defaults are kdsearch's recipe before it had these settings (AdamW, one-cycle); studies get
    theirs from [train] (config.TrainConfig, recipe_from).
    """

    epochs: int
    lr: float
    batch_size: int
    weight_decay: float | None = 5e-4  # None: DEFAULT_WEIGHT_DECAY of the optimizer
    optimizer: str = "adamw"  # or "sgd" (Nesterov momentum 0.9)
    schedule: str = "onecycle"  # or "linear", "cosine" (after a linear warm-up)
    warmup: float = 0.25  # fraction of the steps spent warming up
    ema: float = 0.0  # per-step decay of a weight average that is evaluated and kept (0 = off)
    zero_init_residual: bool = False  # residual blocks start as identities (their last BN scale 0)
    temperature: float = 1.0
    alpha: float = 0.0  # weight of the distillation term; 0 = labels only
    label_smoothing: float = 0.0  # on the CE term


def recipe_from(train: TrainConfig, epochs: int, lr: float, temperature: float = 1.0, alpha: float = 0.0) -> Recipe:
    """A student's Recipe from a study's [train] settings and its own lr, T and alpha."""
    return Recipe(epochs=epochs, lr=lr, batch_size=train.batch_size, weight_decay=train.weight_decay,
                  optimizer=train.optimizer, schedule=train.schedule, warmup=train.warmup, ema=train.ema,
                  zero_init_residual=train.zero_init_residual, temperature=temperature, alpha=alpha,
                  label_smoothing=train.label_smoothing)


EpochCallback = Callable[[int, float, list[float]], None]  # (epoch from 1, mean loss, val curve so far)
CheckCallback = Callable[[int, list[float | None]], None]  # (check from 1, val accuracy at every check so far)


def check_steps(steps: int, per_epoch: int) -> list[int]:
    """The steps of an epoch after which the mid-epoch checks of `per_epoch` evenly spaced checks fall
    (the last check is the epoch's end); a step repeats when an epoch has fewer steps than checks."""
    return [max(1, round(j * steps / per_epoch)) for j in range(1, per_epoch)]


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, *, pad: int, flip: bool, seed: int,
        teacher: nn.Module | None = None, cache=None, x_val: torch.Tensor | None = None,
        y_val: torch.Tensor | None = None, on_epoch: EpochCallback | None = None,
        on_check: CheckCallback | None = None, checks_per_epoch: int = 1,
        measure_check: Callable[[int], bool] | None = None,
        progress: Progress | None = None, description: str = "train", resume: Resume | None = None) -> list[float]:
    """Train `model` on (x, y) by `recipe`; returns validation accuracy after each epoch.

    The one training loop of kdsearch: search trials (on_epoch prunes by raising), final
    training and teacher fine-tuning all run it. Batch order and views come from a CPU
    generator seeded with `seed`, so two calls with the same seed and data see the same batches
    and views, whatever their alpha (see train_epoch). The model's initialization is the
    caller's: seed torch before building it; fit puts it in the memory format that trains it fastest
    on the data's device (fast_memory_format). With recipe.ema the weight average is what each epoch
    evaluates, and it is copied into `model` at the end (also when on_epoch stops training early).

    With `on_check` (and validation data), validation accuracy is also measured `checks_per_epoch`
    times per epoch, evenly spaced in steps, the last at the epoch's end (its curve value), and
    `on_check` gets every check so far: what pruning short trials needs (a 2-epoch trial has no epoch
    at a quarter of it). A check only observes: the training is the same with or without checks.
    `measure_check(i)` says whether mid-epoch check i (counted from 1 over the whole training) is
    measured (a pass over the validation data: the pruner's rungs only); one that is not is recorded
    as None and not reported. The epoch's last check is always measured.

    With `resume`, the training's state is saved at epoch ends (every resume.every_s seconds) and a
    saved state of the same training is continued from (training.checkpoint): for long trainings that
    may be stopped part-way. The caller removes the file once it has kept the finished model.
    """
    steps = steps_per_epoch(len(y), recipe.batch_size)
    model.to(memory_format=fast_memory_format(model, x.device, tuple(x.shape[1:]), recipe.batch_size))
    if recipe.zero_init_residual:
        zero_init_last_bn(model)
    opt, sched = make_optimizer(model, recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.epochs * steps,
                                recipe.schedule, recipe.warmup)
    ema = weight_average(model, recipe.ema)
    evaluated = model if ema is None else ema.module
    generator = torch.Generator().manual_seed(seed)
    curve: list[float] = []
    checking = on_check is not None and x_val is not None and y_val is not None
    mid = check_steps(steps, checks_per_epoch) if checking else []
    checks: list[float | None] = []
    start = 0
    if resume is not None:
        key = checkpoint.full_key(resume, recipe, seed, len(y))
        state = checkpoint.load(resume, key)
        if state is not None:
            start, curve, checks = checkpoint.restore(state, model, opt, sched, ema, generator)
        resume.resumed_at, resume.last_save = start, time.monotonic()
    task = (progress.add_task(description, total=recipe.epochs * steps, completed=start * steps)
            if progress is not None else None)

    def on_step(step: int, epoch: int) -> None:
        if task is not None:
            progress.update(task, completed=epoch * steps + step)
        if step in mid:
            acc = None
            for _ in range(mid.count(step)):
                if measure_check is not None and not measure_check(len(checks) + 1):
                    checks.append(None)
                    continue
                if acc is None:
                    acc = accuracy(evaluated, x_val, y_val)
                    model.train()  # back to training (evaluation put it, or its average's copy, in eval mode)
                checks.append(acc)
                on_check(len(checks), checks)

    try:
        for epoch in range(start, recipe.epochs):
            if task is not None:
                progress.update(task, description=f"{description} epoch {epoch + 1}/{recipe.epochs}")
            loss = train_epoch(
                model, x, y, opt, sched, batch_size=recipe.batch_size, pad=pad, flip=flip, generator=generator,
                teacher=teacher, temperature=recipe.temperature, alpha=recipe.alpha,
                label_smoothing=recipe.label_smoothing, cache=cache, ema=ema,
                on_step=None if task is None and not mid else (lambda s, e=epoch: on_step(s, e)))
            if x_val is not None and y_val is not None:
                curve.append(accuracy(evaluated, x_val, y_val))
            if on_epoch is not None:
                on_epoch(epoch + 1, loss, curve)
            if checking:
                checks.append(curve[-1])
                on_check(len(checks), checks)
            if resume is not None and epoch + 1 < recipe.epochs:
                checkpoint.save(resume, key, epoch + 1, curve, checks, model, opt, sched, ema, generator)
    finally:
        if ema is not None:  # the average is the model: what was evaluated is what is kept
            model.load_state_dict(ema.module.state_dict())
        if task is not None:
            progress.remove_task(task)
    return curve


def eval_batch_size(device: torch.device) -> int:
    """Images per evaluation batch: 1024 on an accelerator; 128 on a CPU, where a validation pass of a small
    student, and a ResNet-32's forward, ran 1.4-2.0x faster than at 1024 and 1.1-1.4x faster than at 256
    (python -m benchmarks eval, BENCHMARKS.md "Validation passes")."""
    return 128 if device.type == "cpu" else 1024


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int | None = None, progress: Progress | None = None,
            description: str = "evaluating") -> torch.Tensor:
    """Logits for uint8 images x (on the model's device), unaugmented, in eval mode (with a progress
    task when given: scoring a large teacher on a CPU takes minutes); batch_size None: eval_batch_size."""
    model.eval()
    batch_size = batch_size or eval_batch_size(x.device)
    fmt = memory_format_of(model)
    out = []
    task = progress.add_task(description, total=len(x)) if progress is not None else None
    for i in range(0, len(x), batch_size):
        images = to_float(x[i:i + batch_size]).contiguous(memory_format=fmt)
        with autocast(x.device):
            out.append(model(images).float())
        if task is not None:
            progress.update(task, completed=min(i + batch_size, len(x)))
    if task is not None:
        progress.remove_task(task)
    return torch.cat(out) if out else torch.empty(0)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None,
             progress: Progress | None = None, description: str = "evaluating") -> float:
    """Top-1 accuracy in [0, 1]."""
    if len(y) == 0:
        return float("nan")
    return float((predict(model, x, batch_size, progress, description).argmax(1) == y).float().mean())
