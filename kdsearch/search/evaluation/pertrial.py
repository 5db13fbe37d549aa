"""Strategy "pertrial": a trial samples a student, trains it from scratch under distillation and saves it.

The trial's student is the sampler's (search space in models/students/space.py) or a known one from --enqueue;
its costs are measured before any training (over budget: rejected untrained), the pruner looks at its validation
accuracy at every check, and whatever it reaches (pruned or not) is saved as RUN/trials/<n>/. Promotion
(search.promote) trains its rung trials here too (a one-shot study's from the weights its subnet inherited).
"""

from __future__ import annotations

import json

import optuna
import torch
from rich.console import Console

from ...config import SPACE_KINDS
from ...measure.costs import count_macs, count_params
from ...models.students.io import load_student, save_student
from ...models.students.registry import build
from ...models.students.space import sample_spec, suggest
from ...runs.layout import rung_checkpoint, trial_dir
from ...runs.trial_attrs import INHERITED, RESUMED_AT, RUNG
from ...training.checkpoint import Resume
from ...training.distill import fit, recipe_from
from ..budgets import reject_over_budget
from ..cpu_share import training_share
from ..enqueue import ENQUEUED_ATTR, spec_for_data
from ..inputs import TrialContext
from ..pruners import CHECKS, CURVE, PRUNED_AT, finished_trials, looks_at, pruned_at
from .base import Evaluation
from .costs import deployed_costs


def prepare(ctx: TrialContext, console: Console) -> Evaluation:
    """Nothing to prepare: each trial trains its own student."""
    return Evaluation(lambda trial: train_trial(trial, ctx))


def train_trial(trial: optuna.Trial, ctx: TrialContext) -> tuple[float, ...]:
    cfg, data = ctx.cfg, ctx.data
    fixed = trial.user_attrs.get(ENQUEUED_ATTR)  # a known student from --enqueue, evaluated as it is
    if fixed:
        spec = spec_for_data(fixed["spec"], data)
        # (a reference may leave T, alpha and lr to the sampler)
        hp = {k: float(fixed[k]) if k in fixed else suggest(trial, k, cfg.space[k], SPACE_KINDS[k])
              for k in ("temperature", "alpha", "lr")}
    else:
        spec = sample_spec(trial, cfg.space, data.in_channels, data.num_classes, data.image_size,
                           list(data.mean), list(data.std))
        hp = {k: suggest(trial, k, cfg.space[k], SPACE_KINDS[k]) for k in ("temperature", "alpha", "lr")}
    rung = trial.user_attrs.get(RUNG)  # a promoted student: seeded by the trial it promotes, so that a rung
    seed = cfg.seed * 1_000_003 + (rung["from"] if rung else trial.number)  # trial tried again continues
    torch.manual_seed(seed)
    model = build(spec)
    shape = (data.in_channels, data.image_size, data.image_size)
    costs = {"params": count_params(model), "macs": count_macs(model, shape)}
    for key, value in {"spec": json.loads(spec.to_json()), "arch": spec.summary(), **hp, **costs}.items():
        trial.set_user_attr(key, value)
    reject_over_budget(trial, cfg, costs)  # size first: no latency timing for a student that is too big
    deployed_costs(trial, cfg, model, shape, costs, ctx.device)

    if rung and rung.get(INHERITED):  # a one-shot subnet promoted: fine-tuned from the weights it inherited
        model.load_state_dict(load_student(trial_dir(cfg.run_path, rung["from"]))[0].state_dict())
    model = model.to(ctx.device)
    recipe = recipe_from(cfg.train, cfg.epochs, hp["lr"], hp["temperature"], hp["alpha"])
    # a rung's training (10 epochs on all images: hours on a CPU) keeps epoch checkpoints; a short trial does not
    resume = (Resume(rung_checkpoint(cfg.run_path, rung), {"spec": spec.to_json(), **hp, "teacher": ctx.teacher.key,
                                                           "cache": ctx.cache.path.stem if ctx.cache else None,
                                                           **({INHERITED: True} if rung.get(INHERITED) else {})})
              if rung else None)

    k = cfg.pruner.checks_per_epoch

    def record(epoch: int, loss: float, curve: list[float]) -> None:
        trial.set_user_attr(CURVE, curve)

    def prune(check: int, checks: list[float]) -> None:  # at each epoch's end, and k - 1 times within it
        if k > 1:
            trial.set_user_attr(CHECKS, checks)
        if ctx.pruner.should_prune(finished_trials(trial.study), checks, cfg.epochs * k, costs):
            epoch = pruned_at(check, k)
            if check < k:  # within its first epoch: an empty curve, as a replay gives it
                trial.set_user_attr(CURVE, [])
            trial.set_user_attr(PRUNED_AT, epoch)
            raise optuna.TrialPruned(f"pruned after epoch {epoch} at val accuracy {checks[-1]:.4f}")

    try:
        with training_share(cfg.run_path, model):  # paused while another worker times a student
            curve = fit(model, ctx.x_train, ctx.y_train, recipe, pad=data.pad, flip=data.flip, seed=seed,
                        teacher=ctx.teacher.model, cache=ctx.cache, x_val=ctx.x_val, y_val=ctx.y_val,
                        on_epoch=record, on_check=prune, checks_per_epoch=k,
                        measure_check=lambda check: looks_at(ctx.pruner, check, cfg.epochs * k), progress=ctx.progress,
                        description=f"trial {trial.number}", resume=resume)
    except optuna.TrialPruned:  # saved as evaluated (fit has put a weight average into the model by now)
        save_student(trial_dir(cfg.run_path, trial.number), model, spec)
        raise
    save_student(trial_dir(cfg.run_path, trial.number), model, spec)
    if resume is not None:
        if resume.resumed_at:
            trial.set_user_attr(RESUMED_AT, resume.resumed_at)
        resume.path.unlink(missing_ok=True)
    values = {"accuracy": curve[-1], **costs}
    return tuple(float(values[o]) for o in cfg.objectives)
