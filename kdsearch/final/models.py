"""One model of final training: a student trained from scratch by one arm at one seed and lr, its
weights saved (kdsearch.final.train plans which; kdsearch.final.pool trains several at once)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from rich.progress import Progress

from ..models.students.io import load_student, save_student
from ..models.students.registry import build
from ..models.students.spec import StudentSpec
from ..runs.layout import arm_dir, arm_partial_path
from ..search.inputs import TrialContext
from ..training.checkpoint import Resume
from ..training.distill import NonFiniteLoss, accuracy, fit, recipe_from
from .arms import FinalRun


def train_one(ctx: TrialContext, spec: StudentSpec, hp: dict[str, float], mode: str, seed: int, lr: float,
              epochs: int, x_test: torch.Tensor, y_test: torch.Tensor, progress: Progress | None,
              probe: int | None = None, checkpoint: Path | None = None,
              init: Path | None = None) -> tuple[FinalRun, torch.nn.Module]:
    """Train the spec from scratch (same init, batches and views for every arm of a seed), or from the student
    saved in `init` (a one-shot subnet's inherited weights); val curve, test once.
    An lr probe trains `probe` epochs and never reads the test split (it only chooses a learning rate).
    With `checkpoint`, its state is saved there at epoch ends and a stopped training of the same model continues
    from it (a 50-epoch model on a CPU can outlast the session that started it)."""
    epochs = probe or epochs
    cfg, data = ctx.cfg, ctx.data
    recipe = recipe_from(cfg.train, epochs, lr, hp["temperature"], hp["alpha"] if mode == "kd" else 0.0)
    cache = None if mode == "ce-all" else ctx.cache
    # what the model is, beyond what fit adds (recipe, seed, images): a checkpoint of anything else is not used
    key = {"spec": spec.to_json(), "mode": mode, "teacher": ctx.teacher.key,
           "cache": cache.path.stem if cache is not None else None} | ({"init": init.name} if init else {})
    resume = Resume(checkpoint, key) if checkpoint is not None else None
    torch.manual_seed(seed)
    model = (load_student(init)[0].train() if init is not None else build(spec)).to(ctx.device)
    start = time.perf_counter()
    curve = fit(model, ctx.x_train, ctx.y_train, recipe, pad=data.pad, flip=data.flip, seed=seed,
                teacher=ctx.teacher.model if mode == "kd" else None, cache=cache,
                x_val=ctx.x_val, y_val=ctx.y_val, progress=progress, resume=resume,
                description=f"{mode} lr {lr:.3g} seed {seed}" + (f" ({probe}-epoch probe)" if probe else ""))
    test = math.nan if probe else accuracy(model, x_test, y_test)
    return FinalRun(mode, seed, lr, curve, test, time.perf_counter() - start, probe=probe,
                    resumed_at=resume.resumed_at if resume is not None else 0), model


def _train_and_save(folder: Path, ctx: TrialContext, spec: StudentSpec, hp: dict[str, float], mode: str,
                    seed: int, lr: float, probe: int | None, epochs: int, x_test: torch.Tensor, y_test: torch.Tensor,
                    progress: Progress | None, init: Path | None = None) -> FinalRun:
    """One model trained and its weights saved in `folder` (an lr probe's are not kept); a diverging arm is a
    failed FinalRun (the others go on)."""
    try:
        result, model = train_one(ctx, spec, hp, mode, seed, lr, epochs, x_test, y_test, progress, probe,
                                  arm_partial_path(folder, mode, seed, lr, probe), init)
        if probe is None:
            save_student(arm_dir(folder, mode, seed, lr), model, spec)
        return result
    except NonFiniteLoss as exc:  # this arm diverged at this lr: recorded as failed, the others go on
        return FinalRun(mode, seed, lr, [], math.nan, 0.0, error=f"{type(exc).__name__}: {exc}", probe=probe)
