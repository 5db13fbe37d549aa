"""What every trial of a run shares, in data-flow order: device, data, teacher, teacher-logit cache."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.progress import Progress

from ..config import StudyConfig
from ..data.augment import num_views
from ..data.datasets import load_data
from ..data.splits import DataSplits, Split, stratified_subset
from ..errors import KDSearchError
from ..measure.costs import wall_seconds
from ..progress import SLOW_S, minutes, progress_bar
from ..runs.layout import logits_path
from ..runs.run_file import make_run_folder
from ..training.distill import predict, resolve_device
from ..training.logit_cache import LogitCache, build_or_load, logit_cache_key
from ..training.teacher import TeacherResult, chance_note, prepare_teacher
from .pruners import Pruner, make_pruner
from .workers import run_lock


@dataclass
class TrialContext:
    """What every trial of one run shares: built once, before the first trial."""

    cfg: StudyConfig
    data: DataSplits
    train: Split  # the student training split (a stratified subset when --subset is set)
    x_train: torch.Tensor  # on the device
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    teacher: TeacherResult
    device: torch.device
    pruner: Pruner
    cache: LogitCache | None = None  # teacher logits per (image, view); None = online teacher
    progress: Progress | None = None
    teacher_finite: bool | None = None  # whether the teacher's logits are finite (checked when a loss is not)


def check_subset(cfg: StudyConfig, data: DataSplits) -> None:
    """A --subset smaller than the classes would leave some classes without a training image: one line."""
    if 0 < cfg.data.subset < data.num_classes:
        raise KDSearchError(f"--subset {cfg.data.subset}: fewer images than the {data.num_classes} classes of "
                            f"{data.name}, so some classes would have no training image (give at least "
                            f"{data.num_classes}, or 0 for all)")


def prepare_inputs(cfg: StudyConfig, console: Console,
                   check: Callable[[DataSplits], None] | None = None,
                   check_teacher: Callable[[TeacherResult, DataSplits], None] | None = None) -> TrialContext:
    """What training needs, in data-flow order: device, data, teacher, teacher-logit cache
    (`check` looks at the data before any teacher work: the search checks its budgets there;
    `check_teacher` looks at the teacher before its logits are cached)."""
    make_run_folder(cfg.run_path)
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)  # once per run; recorded in the study
    data = load_data(cfg.data, seed=cfg.seed)  # (data it cannot use is one line, before anything is printed)
    check_subset(cfg, data)
    console.print(f"[bold]kdsearch[/] study [cyan]{cfg.name}[/] in {cfg.run_path} on {device} "
                  f"({torch.get_num_threads()} CPU threads)")
    train = stratified_subset(data.train, cfg.data.subset, cfg.seed) if cfg.data.subset else data.train
    console.print(f"data {data.name}: {len(train)} train" + (f" (subset of {len(data.train)})" if cfg.data.subset else "")
                  + f", {len(data.val)} val, {len(data.test)} test, {data.num_classes} classes, "
                  f"{data.in_channels}x{data.image_size}x{data.image_size}")
    if check is not None:
        check(data)
    with run_lock(cfg.run_path, console, "preparing the teacher"):  # one worker trains it, the others load it
        teacher = prepare_teacher(cfg.teacher, data, cfg.run_path, device, cfg.seed, cfg.latency_threads, console,
                                  cfg.latency_runtime, cfg.latency_batch)
    if check_teacher is not None:
        check_teacher(teacher, data)
    for note in teacher.notes:
        console.print(f"[yellow]teacher: {note}[/]")
    console.print(f"teacher {teacher.name}: val {teacher.val_accuracy:.2%}, test {teacher.test_accuracy:.2%}, "
                  f"{teacher.params:,} params, {teacher.latency_ms:.2f} ms" + (" (cached)" if teacher.from_cache else "")
                  + ("; val is not held out if the checkpoint trained on these training images (test is)"
                     if cfg.teacher.weights else ""))
    teacher.model.requires_grad_(False).eval()
    ctx = TrialContext(cfg=cfg, data=data, train=train, x_train=train.x.to(device), y_train=train.y.to(device),
                       x_val=data.val.x.to(device), y_val=data.val.y.to(device), teacher=teacher, device=device,
                       pruner=make_pruner(cfg.pruner, cfg.objectives))
    if cfg.train.teacher_cache:
        with run_lock(cfg.run_path, console, "building the teacher-logit cache"):
            ctx.cache = teacher_logit_cache(ctx, console)
    return ctx


def check_teacher_teaches(cfg: StudyConfig, teacher: TeacherResult, data: DataSplits) -> None:
    """A study does not distill from a teacher at chance on validation, trained or not, unless asked
    (--allow-chance-teacher): one line, exit 2 (the teacher stays cached for a rerun)."""
    note = chance_note(teacher.val_accuracy, data.val.y, teacher.epochs_trained, teacher.name)
    if note and not cfg.teacher.allow_chance:
        raise KDSearchError(f"{note} (or pass --allow-chance-teacher to distill from it anyway)")


def teacher_logit_cache(ctx: TrialContext, console: Console) -> LogitCache:
    """Load or build (once, for all trials and workers) the teacher logits of the student train split."""
    cfg, data = ctx.cfg, ctx.data
    key = logit_cache_key(ctx.teacher.key, ctx.train.x, ctx.train.y, data.pad, data.flip, cfg.train.views, cfg.seed)
    if not logits_path(cfg.run_path, key).is_file():  # about to be built: say how long, first
        per_image = time_teacher_forward(ctx.teacher.model, ctx.x_train, batch=min(256, len(ctx.x_train)))
        views = min(cfg.train.views, num_views(data.pad, data.flip))
        total = per_image * views * len(ctx.train)
        console.print(f"estimate: teacher logits for {views} views x {len(ctx.train):,} images ≈ {minutes(total)}"
                      + ("  (to shorten it: fewer --views, --subset, or a GPU)" if total > SLOW_S else ""),
                      highlight=False)
    with progress_bar(console) as progress:
        cache = build_or_load(ctx.teacher.model, ctx.x_train, pad=data.pad, flip=data.flip, k=cfg.train.views,
                              seed=cfg.seed, key=key, run_dir=cfg.run_path, progress=progress,
                              teacher_name=ctx.teacher.name)
    if cache.note:
        console.print(f"[yellow]warning: {cache.note}[/]", highlight=False)
    console.print(f"teacher logits: {cache.k} views x {len(ctx.train)} images "
                  + ("built" if cache.built else "loaded") + f" ({cache.path.name})")
    return cache


def time_teacher_forward(model: torch.nn.Module, x: torch.Tensor, batch: int) -> float:
    """Seconds per image of the teacher's forward pass (one warm-up batch, one timed)."""
    return wall_seconds(lambda: predict(model, x[:batch], batch), x.device) / batch
