"""The objective: one trial trains one distilled student, measures its costs and saves it."""

from __future__ import annotations

import json

import optuna
import torch
from optuna.trial import TrialState

from ..config import SPACE_KINDS, StudyConfig
from ..measure import latency
from ..measure.costs import count_macs, count_params
from ..measure.onnx_graph import onnx_bytes, with_distinct_weights
from ..measure.quantize import int8_size
from ..models.students.io import save_student
from ..models.students.registry import build
from ..models.students.space import sample_spec, suggest
from ..runs.layout import trial_dir
from ..runs.trial_attrs import BYTES, LATENCY_DEVICE, LATENCY_IQR_MS, LATENCY_MS, LATENCY_QUIET
from ..training.distill import NonFiniteLoss, fit, predict, recipe_from
from .budgets import reject_over_budget
from .enqueue import ENQUEUED_ATTR, spec_for_data
from .inputs import TrialContext
from .pruners import CHECKS, CURVE, PRUNED_AT, finished_trials, looks_at, pruned_at
from .study import counts
from .workers import ERROR_ATTR, heartbeat


class Surplus(RuntimeError):
    """Another worker's running trials already make up the total: this one is not needed."""


def objective(trial: optuna.Trial, ctx: TrialContext) -> tuple[float, ...]:
    """One trial, isolated: any error fails it with the reason stored (user attribute `error`) and
    the study goes on; a heartbeat says it is alive while it trains."""
    try:
        with heartbeat(trial):
            if surplus(trial.study, trial.number, ctx.cfg.trials):
                raise Surplus("not needed: running and finished trials already make up the total")
            return train_trial(trial, ctx)
    except optuna.TrialPruned:
        raise
    except KeyboardInterrupt:  # Optuna fails the trial; `kdsearch status` should say why, not "no reason recorded"
        trial.set_user_attr(ERROR_ATTR, "interrupted while it trained (Ctrl-C or a stop signal): not retried; "
                                        "`kdsearch run` on the run folder goes on with new trials")
        raise
    except Exception as exc:
        if isinstance(exc, torch.OutOfMemoryError) and torch.cuda.is_available():
            torch.cuda.empty_cache()  # the trial's tensors are gone with its frames: give their memory back
        reason = str(exc).strip()
        if isinstance(exc, NonFiniteLoss) and not teacher_logits_finite(ctx):
            reason = (f"training loss became nan because teacher {ctx.teacher.name}'s logits are not finite "
                      "(not the student's lr): retrain the teacher")
        trial.set_user_attr(ERROR_ATTR, f"{type(exc).__name__}: {reason}"[:500])
        raise


def teacher_logits_finite(ctx: TrialContext) -> bool:
    """Whether the teacher's logits (cached, or online on a batch of training images) are finite:
    a non-finite distillation loss is the teacher's doing when they are not (checked once)."""
    if ctx.teacher_finite is None:
        if ctx.cache is not None:
            ctx.teacher_finite = bool(torch.isfinite(ctx.cache.logits).all())
        else:
            ctx.teacher_finite = bool(torch.isfinite(predict(ctx.teacher.model, ctx.x_train[:256], 256)).all())
    return ctx.teacher_finite


def surplus(study: optuna.Study, number: int, target: int) -> bool:
    """True when finished trials plus the running ones numbered before `number` reach the target
    (two workers that both saw room for one more trial: the later-numbered one stands down)."""
    trials = study.get_trials(deepcopy=False)
    earlier = sum(t.state == TrialState.RUNNING and t.number < number for t in trials)
    return sum(counts(t) for t in trials) + earlier >= target


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
    seed = cfg.seed * 1_000_003 + trial.number
    torch.manual_seed(seed)
    model = build(spec)
    shape = (data.in_channels, data.image_size, data.image_size)
    costs = {"params": count_params(model), "macs": count_macs(model, shape)}
    for key, value in {"spec": json.loads(spec.to_json()), "arch": spec.summary(), **hp, **costs}.items():
        trial.set_user_attr(key, value)
    reject_over_budget(trial, cfg, costs)  # size first: no latency timing for a student that is too big
    deployed_costs(trial, cfg, model, shape, costs, ctx.device)

    model = model.to(ctx.device)
    recipe = recipe_from(cfg.train, cfg.epochs, hp["lr"], hp["temperature"], hp["alpha"])

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
        with latency.training_share(cfg.run_path, model):  # paused while another worker times a student
            curve = fit(model, ctx.x_train, ctx.y_train, recipe, pad=data.pad, flip=data.flip, seed=seed,
                        teacher=ctx.teacher.model, cache=ctx.cache, x_val=ctx.x_val, y_val=ctx.y_val,
                        on_epoch=record, on_check=prune, checks_per_epoch=k,
                        measure_check=lambda check: looks_at(ctx.pruner, check, cfg.epochs * k), progress=ctx.progress,
                        description=f"trial {trial.number}")
    except optuna.TrialPruned:  # saved as evaluated (fit has put a weight average into the model by now)
        save_student(trial_dir(cfg.run_path, trial.number), model, spec)
        raise
    save_student(trial_dir(cfg.run_path, trial.number), model, spec)
    values = {"accuracy": curve[-1], **costs}
    return tuple(float(values[o]) for o in cfg.objectives)


def deployed_costs(trial: optuna.Trial, cfg: StudyConfig, model: torch.nn.Module, shape: tuple[int, ...],
                   costs: dict[str, float], device: torch.device | None = None) -> None:
    """The student's bytes (when an objective or budget) and latency, each recorded and checked against
    its budget as soon as known: the ONNX graph `kdsearch export` writes, exported once for both."""
    want_bytes = "bytes" in cfg.objectives or cfg.max_bytes is not None
    graph = None
    if cfg.latency_runtime == "onnxruntime" or want_bytes:
        graph = onnx_bytes(with_distinct_weights(model), shape)  # the size a trained student's file has
    if want_bytes:
        if cfg.bytes_format == "int8":
            costs["bytes"] = int8_size(graph, shape)
        else:
            costs["bytes"] = len(graph)
        trial.set_user_attr(BYTES, costs["bytes"])
        reject_over_budget(trial, cfg, {"bytes": costs["bytes"]})
    with latency.quiet_cpu(cfg.run_path) as quiet:  # the study's other workers on this machine pause
        timing = latency.student_latency(model, shape, cfg.latency_runtime, cfg.latency_batch, cfg.latency_threads,
                                         graph, device=device)
    costs["latency"] = timing.median_ms
    trial.set_user_attr(LATENCY_MS, timing.median_ms)
    trial.set_user_attr(LATENCY_IQR_MS, timing.iqr_ms)
    if timing.device != "cpu":
        trial.set_user_attr(LATENCY_DEVICE, timing.device)
    if not quiet["quiet"]:
        trial.set_user_attr(LATENCY_QUIET, False)
    reject_over_budget(trial, cfg, {"latency": costs["latency"]})
