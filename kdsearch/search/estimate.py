"""How long the remaining trials, or a final training, may take, printed before they start."""

from __future__ import annotations

import os
import statistics

import optuna
import torch
from rich.console import Console

from ..measure.costs import wall_seconds
from ..models.students.registry import build
from ..models.students.space import sample_spec
from ..models.students.spec import StudentSpec
from ..progress import SLOW_S, minutes
from ..training import distill
from ..training.distill import recipe_from
from ..training.memory_format import fast_memory_format
from .inputs import TrialContext
from .pruners import looks_at, make_pruner
from .stand_ins import Middle
from .study import counts


def estimate_search(ctx: TrialContext, trials: int, console: Console, study: optuna.Study | None = None,
                    workers: int = 1) -> float | None:
    """Print what the remaining `trials` may take, and how the figure was made; returns it in seconds, or
    None when it cannot be made (an estimate is never worth stopping a run for).

    It is an estimate, not a bound: students differ in size and pruning stops some early. Once the study
    has trials measured (`study`), it is their median wall time times the trials left (divided among
    `workers`); before that, a few timed training steps of a mid-space student, scaled to a trial."""
    measured = trial_seconds(study) if study is not None else []
    if measured:
        per_trial = statistics.median(measured)
        total = per_trial * trials / max(workers, 1)
        console.print(f"estimate: {trials} trials left x {minutes(per_trial)} a trial (the median of the {len(measured)} "
                      f"trial(s) measured so far)" + (f" / {workers} workers" if workers > 1 else "")
                      + f" ≈ {minutes(total)}" + busy(ctx.device), highlight=False)
        return total
    try:
        return _estimate_search(ctx, trials, console)
    except Exception as exc:  # noqa: BLE001
        console.print(f"(no estimate of the trials: {type(exc).__name__}: {str(exc).splitlines()[0][:100]})",
                      highlight=False)
        return None


def trial_seconds(study: optuna.Study) -> list[float]:
    """The wall time of every trial that trained a student and finished (complete or pruned; not the
    over-budget rejections, which took no training), in seconds."""
    return [(t.datetime_complete - t.datetime_start).total_seconds() for t in study.get_trials(deepcopy=False)
            if counts(t) and t.datetime_start is not None and t.datetime_complete is not None]


def validation_passes(cfg) -> int:
    """Passes over the validation split in a trial that is not pruned: each epoch's end, and the mid-epoch
    checks its pruner looks at (all of them without pruning: they are recorded for replay)."""
    k = cfg.pruner.checks_per_epoch
    pruner = make_pruner(cfg.pruner, cfg.objectives)
    return cfg.epochs + sum(1 for c in range(1, cfg.epochs * k + 1) if c % k and looks_at(pruner, c, cfg.epochs * k))


def _seconds_per_image(ctx: TrialContext, spec: StudentSpec, lr: float) -> tuple[float, float]:
    """(training, validation) seconds per image of `spec` on the run's device: a few timed steps and a pass."""
    cfg, data = ctx.cfg, ctx.data
    with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
        model = build(spec).to(ctx.device)
        n = min(len(ctx.y_train), cfg.train.batch_size * 3)
        recipe = recipe_from(cfg.train, epochs=1, lr=lr)
        # the layout first: its one-time timing (training.memory_format) is not part of a step
        fast_memory_format(model, ctx.device, tuple(ctx.x_train.shape[1:]), recipe.batch_size)
        per_image = wall_seconds(lambda: distill.fit(model, ctx.x_train[:n], ctx.y_train[:n], recipe,
                                                     pad=data.pad, flip=data.flip, seed=0), ctx.device) / n
        m = min(len(ctx.y_val), n)
        per_val = wall_seconds(lambda: distill.predict(model, ctx.x_val[:m]), ctx.device) / m if m else 0.0
    return per_image, per_val


def estimate_training(ctx: TrialContext, spec: StudentSpec, lr: float, models: int, epochs: int, jobs: int,
                      console: Console) -> float | None:
    """Print what `models` models of `spec` training `epochs` epochs in all (an epoch: the training split and a
    validation pass) may take in `jobs` processes at once, from a few timed steps of it; the seconds, or None
    when the probe fails (an estimate is never worth stopping for). Final training at long budgets takes hours
    on a CPU: better said before than found out."""
    try:
        per_image, per_val = _seconds_per_image(ctx, spec, lr)
    except Exception as exc:  # noqa: BLE001
        console.print(f"(no estimate of the training: {type(exc).__name__}: {str(exc).splitlines()[0][:100]})",
                      highlight=False)
        return None
    total = (per_image * len(ctx.y_train) + per_val * len(ctx.y_val)) * epochs / jobs
    console.print(f"estimate: {models} model(s), {epochs} epochs in all on {len(ctx.y_train):,} images ≈ {minutes(total)}"
                  + (f" in {jobs} processes" if jobs > 1 else "")
                  + ("  (to shorten it: fewer --epochs or --seeds, --jobs, or a GPU)" if total > SLOW_S else "")
                  + busy(ctx.device), highlight=False)
    return total


def busy(device: torch.device) -> str:
    """A note when other work already fills the CPU (1-minute load average at or above its cores): the steps
    were timed beside it, and the processes to come will share the cores with it and with each other, so
    it may take longer than the timed steps say."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return ""
    if device.type != "cpu" or load < cores:
        return ""
    return f"  (the CPU is busy with other work, load {load:.1f} on {cores} cores: it may take longer)"


def _estimate_search(ctx: TrialContext, trials: int, console: Console) -> float:
    cfg, data = ctx.cfg, ctx.data
    study = optuna.create_study(sampler=Middle({}))
    spec = sample_spec(study.ask(), cfg.space, data.in_channels, data.num_classes, data.image_size,
                       list(data.mean), list(data.std))
    lr = min(cfg.space["lr"]) if isinstance(cfg.space["lr"], list) else cfg.space["lr"]
    per_image, per_val = _seconds_per_image(ctx, spec, lr)
    # the epochs, and the validation passes: one per epoch and per mid-epoch check measured
    total = (per_image * len(ctx.y_train) * cfg.epochs + per_val * len(ctx.y_val) * validation_passes(cfg)) * trials
    console.print(f"estimate: {trials} trials of a mid-size student ({spec.summary()}) ≈ {minutes(total)}, "
                  "from a few timed steps of it x its epochs x the trials (not a bound: pruning and smaller students "
                  "take less, larger ones more; once trials finish, their median is the measure)"
                  + ("  (to shorten it: --subset, fewer --epochs or --trials, --workers, or a GPU)"
                     if total > SLOW_S else "") + busy(ctx.device), highlight=False)
    return total
