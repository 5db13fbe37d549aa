"""The study: storage, sampler, and the objective that trains one distilled student per trial.

Data flows one way: config -> data -> teacher -> study. Everything a run produces lives in its
run folder (storage, teacher cache, per-trial weights), so re-running the same command resumes.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.progress import Progress
from safetensors.torch import save_file

from . import measure
from .config import SPACE_KINDS, StudyConfig
from .data import DataSplits, Split, load_data, stratified_subset
from .distill import NonFiniteLoss, Recipe, fit, resolve_device
from .errors import KDSearchError
from .files import atomic_path, write_text_atomic
from .layout import run_file, trial_dir
from .logits import LogitCache, build_or_load, cache_key
from .progress import progress_bar
from .provenance import command_line
from .pruning import CURVE, PRUNED_AT, Pruner, finished_trials, make_pruner
from .students import StudentSpec, build, sample_spec, suggest
from .teachers import TeacherResult, prepare_teacher

METRIC_NAMES = {"accuracy": "val_accuracy", "params": "params", "latency": "latency_ms", "macs": "macs"}
DIRECTIONS = {"accuracy": "maximize", "params": "minimize", "latency": "minimize", "macs": "minimize"}


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """RDB URLs get heartbeats (stale trials of killed workers fail); *.log / journal: files are journals."""
    if url.startswith("journal:") or url.endswith((".log", ".journal")):
        path = url.removeprefix("journal:")
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180)
    except Exception as exc:  # bad URL, unreachable server, missing driver
        raise KDSearchError(f"cannot open storage {url!r}: {str(exc).splitlines()[0]}") from None


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def open_study(cfg: StudyConfig, load_only: bool = False) -> optuna.Study:
    """Create the study, or load it when it exists (same name, same storage): that is resume."""
    storage = make_storage(cfg.storage_url)
    directions = [DIRECTIONS[o] for o in cfg.objectives]
    if load_only:
        return optuna.load_study(study_name=cfg.name, storage=storage)
    # Offset the sampler seed by the trials already run, so a resumed run does not replay them.
    try:
        existing = optuna.load_study(study_name=cfg.name, storage=storage)
        n_existing = len(existing.trials)
        if [d.name.lower() for d in existing.directions] != directions:
            raise KDSearchError(f"study {cfg.name!r} exists with other objectives; use another --study-name or --run-dir")
    except KeyError:
        n_existing = 0
    sampler = make_sampler(cfg.sampler, cfg.seed + n_existing)
    study = optuna.create_study(study_name=cfg.name, storage=storage, sampler=sampler, directions=directions,
                                load_if_exists=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([METRIC_NAMES[o] for o in cfg.objectives])
    return study


def n_finished(study: optuna.Study) -> int:
    return len(finished_trials(study))


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


def save_student(path: Path, model: torch.nn.Module, spec: StudentSpec) -> None:
    """Weights (safetensors) and spec (JSON), written atomically: a killed run leaves no half file."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path / "student.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"spec": spec.to_json()})
    write_text_atomic(path / "spec.json", spec.to_json() + "\n")


def objective(trial: optuna.Trial, ctx: TrialContext) -> tuple[float, ...]:
    cfg, data = ctx.cfg, ctx.data
    spec = sample_spec(trial, cfg.space, data.in_channels, data.num_classes, data.image_size,
                       list(data.mean), list(data.std))
    hp = {k: suggest(trial, k, cfg.space[k], SPACE_KINDS[k]) for k in ("temperature", "alpha", "lr")}
    seed = cfg.seed * 1_000_003 + trial.number
    torch.manual_seed(seed)
    model = build(spec)
    shape = (data.in_channels, data.image_size, data.image_size)
    costs = {"params": measure.count_params(model), "macs": measure.count_macs(model, shape),
             "latency": measure.latency_ms(model, shape, threads=cfg.latency_threads, min_run_time=0.1)}
    for key, value in {"spec": json.loads(spec.to_json()), "arch": spec.summary(), **hp,
                       "params": costs["params"], "macs": costs["macs"], "latency_ms": costs["latency"]}.items():
        trial.set_user_attr(key, value)
    over = []
    for key, excess in budget_excess(cfg, costs).items():
        trial.set_constraint(key, excess)  # > 0: infeasible; samplers learn from it
        if excess > 0:
            over.append(key)
    if over:
        trial.set_user_attr(PRUNED_AT, 0)
        raise optuna.TrialPruned(f"over budget ({', '.join(over)}): rejected before training")

    model = model.to(ctx.device, memory_format=torch.channels_last)
    recipe = Recipe(epochs=cfg.epochs, lr=hp["lr"], batch_size=cfg.train.batch_size,
                    weight_decay=cfg.train.weight_decay, temperature=hp["temperature"], alpha=hp["alpha"],
                    label_smoothing=cfg.train.label_smoothing)

    def prune(epoch: int, loss: float, curve: list[float]) -> None:
        trial.set_user_attr(CURVE, curve)
        if ctx.pruner.should_prune(finished_trials(trial.study), curve, cfg.epochs, costs):
            trial.set_user_attr(PRUNED_AT, epoch)
            save_student(trial_dir(cfg.run_path, trial.number), model, spec)
            raise optuna.TrialPruned(f"pruned after epoch {epoch} at val accuracy {curve[-1]:.4f}")

    curve = fit(model, ctx.x_train, ctx.y_train, recipe, pad=data.pad, flip=data.flip, seed=seed,
                teacher=ctx.teacher.model, cache=ctx.cache, x_val=ctx.x_val, y_val=ctx.y_val, on_epoch=prune,
                progress=ctx.progress, description=f"trial {trial.number}")
    save_student(trial_dir(cfg.run_path, trial.number), model, spec)
    values = {"accuracy": curve[-1], **costs}
    return tuple(float(values[o]) for o in cfg.objectives)


def budget_excess(cfg: StudyConfig, costs: dict[str, float]) -> dict[str, float]:
    """Relative excess over each budget that is set (<= 0 within budget)."""
    budgets = {"max_params": ("params", cfg.max_params), "max_macs": ("macs", cfg.max_macs),
               "max_latency_ms": ("latency", cfg.max_latency_ms)}
    return {name: costs[cost] / limit - 1.0 for name, (cost, limit) in budgets.items() if limit is not None}


class StopWhenDone:
    """End the study at `target` finished trials (all workers together), or after too many failures."""

    def __init__(self, target: int, max_failures: int):
        self.target, self.max_failures, self.failures = target, max_failures, 0

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.failures += trial.state == TrialState.FAIL
        if n_finished(study) >= self.target or self.failures >= self.max_failures:
            study.stop()


def write_run_file(cfg: StudyConfig, study_file: Path | None = None) -> None:
    """run.json: how `report`, `train` and `results` find the study again, and how it was made."""
    run = {"study_name": cfg.name, "storage": cfg.storage_url, "config": cfg.to_dict(), "command": command_line(),
           "study_file": str(study_file) if study_file else None,
           "study_text": Path(study_file).read_text() if study_file else None}
    write_text_atomic(run_file(cfg.run_path), json.dumps(run, indent=2) + "\n")


def prepare_inputs(cfg: StudyConfig, console: Console) -> TrialContext:
    """What training needs, in data-flow order: device, data, teacher, teacher-logit cache."""
    cfg.run_path.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)  # once per run; recorded in the study
    console.print(f"[bold]kdsearch[/] study [cyan]{cfg.name}[/] in {cfg.run_path} on {device} "
                  f"({torch.get_num_threads()} CPU threads)")
    data = load_data(cfg.data, seed=cfg.seed)
    train = stratified_subset(data.train, cfg.data.subset, cfg.seed) if cfg.data.subset else data.train
    console.print(f"data {data.name}: {len(train)} train" + (f" (subset of {len(data.train)})" if cfg.data.subset else "")
                  + f", {len(data.val)} val, {len(data.test)} test, {data.num_classes} classes, "
                  f"{data.in_channels}x{data.image_size}x{data.image_size}")
    teacher = prepare_teacher(cfg.teacher, data, cfg.run_path, device, cfg.seed, cfg.latency_threads)
    for note in teacher.notes:
        console.print(f"[yellow]teacher: {note}[/]")
    console.print(f"teacher {teacher.name}: val {teacher.val_accuracy:.2%}, test {teacher.test_accuracy:.2%}, "
                  f"{teacher.params:,} params, {teacher.latency_ms:.2f} ms" + (" (cached)" if teacher.from_cache else ""))
    teacher.model.requires_grad_(False).eval()
    ctx = TrialContext(cfg=cfg, data=data, train=train, x_train=train.x.to(device), y_train=train.y.to(device),
                       x_val=data.val.x.to(device), y_val=data.val.y.to(device), teacher=teacher, device=device,
                       pruner=make_pruner(cfg.pruner, cfg.objectives))
    if cfg.train.teacher_cache:
        ctx.cache = teacher_logit_cache(ctx, console)
    return ctx


def prepare(cfg: StudyConfig, console: Console, study_file: Path | None = None) -> tuple[TrialContext, optuna.Study]:
    """Everything before the first trial: the study (opened first: a bad storage URL fails before
    any teacher work), the training inputs, then the run's facts recorded in the study."""
    cfg.run_path.mkdir(parents=True, exist_ok=True)
    study = open_study(cfg)
    ctx = prepare_inputs(cfg, console)
    write_run_file(cfg, study_file)
    data = ctx.data
    for key, value in {"teacher": ctx.teacher.to_dict(), "config": cfg.to_dict(), "cpu_threads": torch.get_num_threads(),
                       "latency_threads": cfg.latency_threads, "device": str(ctx.device),
                       "data": {"name": data.name, "train": len(ctx.train), "val": len(data.val),
                                "test": len(data.test), "classes": data.classes}}.items():
        study.set_user_attr(key, value)
    return ctx, study


def teacher_logit_cache(ctx: TrialContext, console: Console) -> LogitCache:
    """Load or build (once, for all trials and workers) the teacher logits of the student train split."""
    cfg, data = ctx.cfg, ctx.data
    key = cache_key(ctx.teacher.key, ctx.train.x, ctx.train.y, data.pad, data.flip, cfg.train.views, cfg.seed)
    with progress_bar(console) as progress:
        cache = build_or_load(ctx.teacher.model, ctx.x_train, pad=data.pad, flip=data.flip, k=cfg.train.views,
                              seed=cfg.seed, key=key, run_dir=cfg.run_path, progress=progress)
    if cache.note:
        console.print(f"[yellow]warning: {cache.note}[/]", highlight=False)
    console.print(f"teacher logits: {cache.k} views x {len(ctx.train)} images "
                  + ("built" if cache.built else "loaded") + f" ({cache.path.name})")
    return cache


def run_search(cfg: StudyConfig, console: Console | None = None, study_file: Path | None = None) -> optuna.Study:
    """Run (or resume) the study until it holds `cfg.trials` finished trials."""
    console = console or Console()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ctx, study = prepare(cfg, console, study_file)
    done = n_finished(study)
    if done >= cfg.trials:
        console.print(f"study already has {done} finished trials (target {cfg.trials}): nothing to run")
        return study
    console.print(f"running {cfg.trials - done} more trials ({done} finished already), {cfg.epochs} epochs each")
    with progress_bar(console) as progress:
        ctx.progress = progress
        overall = progress.add_task("trials", total=cfg.trials, completed=done)

        def tick(study: optuna.Study, trial: FrozenTrial) -> None:
            progress.update(overall, completed=n_finished(study))
            acc = trial.user_attrs.get(CURVE, [float("nan")])[-1]
            progress.console.print(f"trial {trial.number:3d} {trial.state.name.lower():8s} val {acc:.2%} "
                                   f"{trial.user_attrs.get('params', 0):>9,} params  {trial.user_attrs.get('arch', '')}")

        study.optimize(lambda t: objective(t, ctx), n_trials=None, timeout=cfg.timeout,
                       catch=(NonFiniteLoss, torch.OutOfMemoryError),
                       callbacks=[tick, StopWhenDone(cfg.trials, max_failures=max(5, cfg.trials))])
    return study
