"""The study: storage, sampler, and the objective that trains one distilled student per trial.

Data flows one way: config -> data -> teacher -> study. Everything a run produces lives in its
run folder (storage, teacher cache, per-trial weights), so re-running the same command resumes.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from pathlib import Path

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from safetensors.torch import save_file

from . import latency, measure
from .config import LEGACY_STUDY, LEGACY_TRAIN, SPACE_KINDS, StudyConfig, TrainConfig
from .data import DataSplits, Split, load_data, stratified_subset
from .distill import NonFiniteLoss, fit, recipe_from, resolve_device
from .errors import KDSearchError
from .files import atomic_path, write_text_atomic
from .augment import num_views
from .layout import logits_path, run_file, trial_dir
from .logits import LogitCache, build_or_load, cache_key
from .progress import progress_bar
from .provenance import code_version, command_line
from .workers import ERROR_ATTR, alive, heartbeat, recover_dead_trials, run_lock
from .pruning import CURVE, PRUNED_AT, Pruner, finished_trials, make_pruner, rejected
from .students import StudentSpec, build, effective_space, sample_spec, suggest
from .teachers import SLOW_S, TeacherResult, chance_note, minutes, prepare_teacher

METRIC_NAMES = {"accuracy": "val_accuracy", "params": "params", "latency": "latency_ms", "macs": "macs", "bytes": "bytes"}
DIRECTIONS = {"accuracy": "maximize", "params": "minimize", "latency": "minimize", "macs": "minimize",
              "bytes": "minimize"}


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL: RDB (SQLite, PostgreSQL, MySQL), a journal file (*.log,
    *.journal or journal:PATH) or Optuna's gRPC storage proxy (grpc://host:port). Liveness of
    workers is kdsearch's own (kdsearch.workers), the same on every storage."""
    try:
        if url.startswith("journal:") or url.endswith((".log", ".journal")):
            path = url.removeprefix("journal:")
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
        if url.startswith("grpc://"):
            host, _, port = url.removeprefix("grpc://").rpartition(":")
            return optuna.storages.GrpcStorageProxy(host=host or "localhost", port=int(port))
        engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None  # workers wait, not fail
        return optuna.storages.RDBStorage(url, engine_kwargs=engine)
    except Exception as exc:  # bad URL, unreachable server, missing driver
        raise KDSearchError(f"cannot open storage {url!r}: {str(exc).splitlines()[0]}") from None


class TrialSeeded(optuna.samplers.BaseSampler):
    """A sampler whose randomness for trial N depends on (seed, N) only.

    Workers that start together never draw the same students (their trials have different
    numbers), a resumed study never replays earlier draws, and one worker repeats exactly.
    """

    def __init__(self, base: optuna.samplers.BaseSampler, seed: int):
        self.base, self.seed = base, seed
        self._rngs = [r for r in (getattr(base, "_rng", None),
                                  getattr(getattr(base, "_random_sampler", None), "_rng", None),
                                  getattr(getattr(base, "_independent_sampler", None), "_rng", None)) if r is not None]
        if not self._rngs:
            raise TypeError(f"{type(base).__name__} exposes no random state to seed per trial")

    def infer_relative_search_space(self, study, trial):
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        for rng in self._rngs:
            rng.rng.seed((self.seed * 1_000_003 + trial.number) % 2**32)
        self.base.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()


def startup_trials(trials: int) -> int:
    """Random trials before TPE models the space: a quarter of the study, between 4 and 10
    (a fixed 10 would make a 12-trial study a random search)."""
    return min(10, max(4, trials // 4))


def make_sampler(name: str, seed: int, trials: int = 100) -> optuna.samplers.BaseSampler:
    if name == "nsga2":
        base = optuna.samplers.NSGAIISampler(seed=seed)
    elif name == "gp":
        base = optuna.samplers.GPSampler(seed=seed)
    elif name == "random":
        base = optuna.samplers.RandomSampler(seed=seed)
    else:
        # multivariate + group: the per-stage widths (channels_i, fc_width_i) exist only for some
        # depths, so they are modelled jointly within the group of trials that have them; the
        # constant liar counts trials running in other workers as bad, so they are not resampled
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            base = optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True, group=True,
                                              n_startup_trials=startup_trials(trials))
    return TrialSeeded(base, seed)


# Settings that change what a trial means: a study resumes only with the same ones. Others
# (trials, timeout, threads, device, storage, seed, sampler, paths) may change between runs.
MEANING = ("objectives", "epochs", "max_params", "max_macs", "max_latency_ms", "max_bytes", "latency_runtime",
           "latency_batch", "bytes_format", "data.dataset", "data.val_fraction",
           "data.subset", "data.pad", "data.flip", "teacher.name", "teacher.weights", "teacher.pretrained",
           "teacher.input_size", "teacher.epochs", "teacher.lr", "teacher.batch_size", "teacher.normalize",
           "teacher.mean", "teacher.std", "train.optimizer", "train.schedule", "train.warmup", "train.batch_size",
           "train.weight_decay", "train.label_smoothing", "train.ema", "train.zero_init_residual",
           "train.teacher_cache", "train.views", "pruner", "space")
FINGERPRINT_ATTR = "fingerprint"


def fingerprint(cfg: StudyConfig) -> dict[str, Any]:
    """The settings in MEANING, as JSON values (a checkpoint by its file name: folders may move)."""
    values = cfg.to_dict()
    out = {}
    for dotted in MEANING:
        section, _, key = dotted.rpartition(".")
        value = (values[section] if section else values)[key]
        out[dotted] = Path(value).name if dotted == "teacher.weights" and value else value
    out["space"] = effective_space(out["space"])  # a space stored before a key existed compares as it ran
    return json.loads(json.dumps(out))


def check_resume(study: optuna.Study, cfg: StudyConfig) -> None:
    """Refuse to add trials under other settings than the study's first ones, naming each difference."""
    stored, now = study.user_attrs.get(FINGERPRINT_ATTR), fingerprint(cfg)
    if stored is None:
        return
    legacy = StudyConfig(**LEGACY_STUDY)
    legacy.train = TrainConfig(**LEGACY_TRAIN)
    stored = {**fingerprint(legacy), **stored}  # settings added since the study began: the values it ran with
    stored["space"] = json.loads(json.dumps(effective_space(stored.get("space", {}))))
    diff = [f"{k} {json.dumps(stored.get(k))} (now {json.dumps(now.get(k))})" for k in now if stored.get(k) != now.get(k)]
    if diff:
        raise KDSearchError(f"study {cfg.name!r} was run with other settings: {'; '.join(diff)}. Resume with the "
                            "original settings, or start another study (--study-name or --run-dir)")


def open_study(cfg: StudyConfig, load_only: bool = False) -> optuna.Study:
    """Create the study, or load it when it exists (same name, same storage): that is resume."""
    storage = make_storage(cfg.storage_url)
    directions = [DIRECTIONS[o] for o in cfg.objectives]
    if load_only:
        return optuna.load_study(study_name=cfg.name, storage=storage)
    try:
        existing = optuna.load_study(study_name=cfg.name, storage=storage)
        if [d.name.lower() for d in existing.directions] != directions:
            raise KDSearchError(f"study {cfg.name!r} exists with other objectives; use another --study-name or --run-dir")
    except KeyError:
        pass
    study = optuna.create_study(study_name=cfg.name, storage=storage,
                                sampler=make_sampler(cfg.sampler, cfg.seed, cfg.trials),
                                directions=directions, load_if_exists=True)
    check_resume(study, cfg)  # (the settings are recorded by prepare, once the teacher and data are ready)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([METRIC_NAMES[o] for o in cfg.objectives])
    return study


def n_finished(study: optuna.Study) -> int:
    """Trials that count toward --trials (students that trained; over-budget rejections do not)."""
    return sum(counts(t) for t in study.get_trials(deepcopy=False))


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


def save_student(path: Path, model: torch.nn.Module, spec: StudentSpec) -> None:
    """Weights (safetensors) and spec (JSON), written atomically: a killed run leaves no half file."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path / "student.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"spec": spec.to_json()})
    write_text_atomic(path / "spec.json", spec.to_json() + "\n")


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
            from .distill import predict

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
        hp = {k: float(fixed[k]) for k in ("temperature", "alpha", "lr")}
    else:
        spec = sample_spec(trial, cfg.space, data.in_channels, data.num_classes, data.image_size,
                           list(data.mean), list(data.std))
        hp = {k: suggest(trial, k, cfg.space[k], SPACE_KINDS[k]) for k in ("temperature", "alpha", "lr")}
    seed = cfg.seed * 1_000_003 + trial.number
    torch.manual_seed(seed)
    model = build(spec)
    shape = (data.in_channels, data.image_size, data.image_size)
    costs = {"params": measure.count_params(model), "macs": measure.count_macs(model, shape)}
    for key, value in {"spec": json.loads(spec.to_json()), "arch": spec.summary(), **hp, **costs}.items():
        trial.set_user_attr(key, value)
    reject_over_budget(trial, cfg, costs)  # size first: no latency timing for a student that is too big
    deployed_costs(trial, cfg, model, shape, costs)

    model = model.to(ctx.device)
    recipe = recipe_from(cfg.train, cfg.epochs, hp["lr"], hp["temperature"], hp["alpha"])

    def prune(epoch: int, loss: float, curve: list[float]) -> None:
        trial.set_user_attr(CURVE, curve)
        if ctx.pruner.should_prune(finished_trials(trial.study), curve, cfg.epochs, costs):
            trial.set_user_attr(PRUNED_AT, epoch)
            raise optuna.TrialPruned(f"pruned after epoch {epoch} at val accuracy {curve[-1]:.4f}")

    try:
        with latency.training_share(cfg.run_path, model):  # paused while another worker times a student
            curve = fit(model, ctx.x_train, ctx.y_train, recipe, pad=data.pad, flip=data.flip, seed=seed,
                        teacher=ctx.teacher.model, cache=ctx.cache, x_val=ctx.x_val, y_val=ctx.y_val,
                        on_epoch=prune, progress=ctx.progress, description=f"trial {trial.number}")
    except optuna.TrialPruned:  # saved as evaluated (fit has put a weight average into the model by now)
        save_student(trial_dir(cfg.run_path, trial.number), model, spec)
        raise
    save_student(trial_dir(cfg.run_path, trial.number), model, spec)
    values = {"accuracy": curve[-1], **costs}
    return tuple(float(values[o]) for o in cfg.objectives)


def deployed_costs(trial: optuna.Trial, cfg: StudyConfig, model: torch.nn.Module, shape: tuple[int, ...],
                   costs: dict[str, float]) -> None:
    """The student's bytes (when an objective or budget) and latency, each recorded and checked against
    its budget as soon as known: the ONNX graph `kdsearch export` writes, exported once for both."""
    want_bytes = "bytes" in cfg.objectives or cfg.max_bytes is not None
    graph = None
    if cfg.latency_runtime == "onnxruntime" or want_bytes:
        from .export import onnx_bytes, with_distinct_weights

        graph = onnx_bytes(with_distinct_weights(model), shape)  # the size a trained student's file has
    if want_bytes:
        if cfg.bytes_format == "int8":
            from .quantize import int8_size

            costs["bytes"] = int8_size(graph, shape)
        else:
            costs["bytes"] = len(graph)
        trial.set_user_attr("bytes", costs["bytes"])
        reject_over_budget(trial, cfg, {"bytes": costs["bytes"]})
    with latency.quiet_cpu(cfg.run_path) as quiet:  # the study's other workers on this machine pause
        timing = latency.student_latency(model, shape, cfg.latency_runtime, cfg.latency_batch, cfg.latency_threads,
                                         graph)
    costs["latency"] = timing.median_ms
    trial.set_user_attr("latency_ms", timing.median_ms)
    trial.set_user_attr("latency_iqr_ms", timing.iqr_ms)
    if not quiet["quiet"]:
        trial.set_user_attr("latency_quiet", False)
    reject_over_budget(trial, cfg, {"latency": costs["latency"]})


def budget_excess(cfg: StudyConfig, costs: dict[str, float]) -> dict[str, float]:
    """Relative excess over each budget that is set and measured (<= 0 within budget)."""
    budgets = {"max_params": ("params", cfg.max_params), "max_macs": ("macs", cfg.max_macs),
               "max_latency_ms": ("latency", cfg.max_latency_ms), "max_bytes": ("bytes", cfg.max_bytes)}
    return {name: costs[cost] / limit - 1.0 for name, (cost, limit) in budgets.items()
            if limit is not None and cost in costs}


def reject_over_budget(trial: optuna.Trial, cfg: StudyConfig, costs: dict[str, float]) -> None:
    """Record each budget's relative excess as an Optuna constraint (> 0: infeasible, so samplers learn
    the feasible region) and reject an over-budget student before it trains: the trial ends PRUNED at
    epoch 0 and does not count toward --trials (another student is sampled in its place)."""
    over = []
    for key, excess in budget_excess(cfg, costs).items():
        trial.set_constraint(key, excess)
        if excess > 0:
            over.append(key)
    if over:
        trial.set_user_attr(PRUNED_AT, 0)
        raise optuna.TrialPruned(f"over budget ({', '.join(over)}): rejected before training")


def counts(trial: FrozenTrial) -> bool:
    """Whether a trial counts toward --trials: it trained a student (complete, or pruned while training);
    a student rejected over budget before training does not."""
    return trial.state == TrialState.COMPLETE or (trial.state == TrialState.PRUNED and not rejected(trial))


class _Cheapest(optuna.samplers.BaseSampler):
    """Every numeric parameter at its low end, each categorical one at the index given (or the first)."""

    def __init__(self, choices: dict[str, int]):
        self.choices, self.seen = choices, {}

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, name, dist):
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            self.seen[name] = len(dist.choices)
            return dist.choices[self.choices.get(name, 0)]
        return dist.low


def cheapest_costs(cfg: StudyConfig, data: DataSplits, max_combinations: int = 256) -> dict[str, Any]:
    """The smallest params and MACs any student of the space can have (every numeric setting at its
    low end, every combination of the categorical ones), and the spec with the fewest MACs."""
    import itertools

    best: dict[str, Any] = {}
    pending, tried = [{}], set()
    while pending and len(tried) < max_combinations:
        choices = pending.pop()
        key = json.dumps(choices, sort_keys=True)
        if key in tried:
            continue
        tried.add(key)
        sampler = _Cheapest(choices)
        study = optuna.create_study(sampler=sampler)
        spec = sample_spec(study.ask(), cfg.space, data.in_channels, data.num_classes, data.image_size,
                           list(data.mean), list(data.std))
        model = build(spec)
        params, macs = measure.count_params(model), measure.count_macs(model, (data.in_channels, data.image_size,
                                                                                data.image_size))
        best["params"] = min(best.get("params", params), params)
        if macs < best.get("macs", macs + 1):
            best["macs"], best["spec"] = macs, spec
        names = sorted(sampler.seen)  # every combination of the categorical parameters met so far
        for combo in itertools.product(*(range(sampler.seen[n]) for n in names)):
            pending.append(dict(zip(names, combo)))
    return best


def check_budgets_reachable(cfg: StudyConfig, data: DataSplits) -> None:
    """Exit 2 at once when no student of the space fits a budget (instead of rejecting forever)."""
    if cfg.max_params is None and cfg.max_macs is None and cfg.max_latency_ms is None and cfg.max_bytes is None:
        return
    low = cheapest_costs(cfg, data)
    limits = {"params": cfg.max_params, "macs": cfg.max_macs}
    for cost, limit in limits.items():
        if limit is not None and low[cost] > limit:
            raise KDSearchError(f"--max-{cost} {limit:,}: the space cannot meet it, its smallest student has "
                                f"{low[cost]:,} {cost} (lower [space] stages, channels, convs_per_stage, fc or "
                                "expand_ratio, or allow the plain family)")
    # a lower bound: a weight takes 4 bytes as float, at least 1 as int8, a batch-norm scale and shift
    # folded into a 4-byte bias 2 each
    least = low["params"] * (1 if cfg.bytes_format == "int8" else 2)
    if cfg.max_bytes is not None and least > cfg.max_bytes:
        raise KDSearchError(f"--max-bytes {cfg.max_bytes:,}: the space cannot meet it, its smallest student has "
                            f"{low['params']:,} params, at least {least:,} bytes as {cfg.bytes_format} (lower [space] "
                            "stages, channels, convs_per_stage, fc or expand_ratio" +
                            (", or --bytes-format int8)" if cfg.bytes_format == "float" else ")"))
    if cfg.max_latency_ms is not None:
        shape = (data.in_channels, data.image_size, data.image_size)
        with latency.quiet_cpu(cfg.run_path):
            fastest = latency.student_latency(build(low["spec"]), shape, cfg.latency_runtime, cfg.latency_batch,
                                              cfg.latency_threads).median_ms
        if fastest > cfg.max_latency_ms:
            raise KDSearchError(f"--max-latency-ms {cfg.max_latency_ms}: the space cannot meet it, its cheapest "
                                f"student takes {fastest:.3f} ms")


ENQUEUED_ATTR = "enqueued"  # user attribute of a trial that evaluates a known student (--enqueue)


def load_enqueue(path: str | Path) -> list[dict[str, Any]]:
    """Known students to evaluate first: a JSON list of {"spec": {...}, "temperature", "alpha", "lr"}
    (a spec as in a trial's spec.json; in_channels, num_classes, image_size, mean and std may be left
    out: they come from the data)."""
    try:
        entries = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise KDSearchError(f"--enqueue {path}: {exc}") from None
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list):
        raise KDSearchError(f"--enqueue {path}: expected a JSON list of students")
    for i, e in enumerate(entries):
        missing = [k for k in ("spec", "temperature", "alpha", "lr") if not isinstance(e, dict) or k not in e]
        if missing:
            raise KDSearchError(f"--enqueue {path}: entry {i} lacks {', '.join(missing)}")
        if not 0 <= float(e["alpha"]) <= 1 or float(e["temperature"]) <= 0 or float(e["lr"]) <= 0:
            raise KDSearchError(f"--enqueue {path}: entry {i}: need 0 <= alpha <= 1, temperature > 0, lr > 0")
    return entries


def spec_for_data(spec: dict[str, Any], data: DataSplits) -> StudentSpec:
    """A user's spec completed with the data's shape and normalization."""
    full = {"in_channels": data.in_channels, "num_classes": data.num_classes, "image_size": data.image_size,
            "mean": list(data.mean), "std": list(data.std), **spec}
    out = StudentSpec.from_json(json.dumps(full))
    if (out.in_channels, out.num_classes, out.image_size) != (data.in_channels, data.num_classes, data.image_size):
        raise KDSearchError(f"enqueued spec {out.summary()} is for other data "
                            f"({out.in_channels} channels, {out.num_classes} classes, {out.image_size} px)")
    build(out)  # fails now, with the spec named, rather than inside a trial
    return out


def enqueue_students(study: optuna.Study, entries: list[dict[str, Any]], data: DataSplits) -> int:
    """Queue each known student once (a rerun does not queue it again); returns how many were new."""
    done = {t.user_attrs[ENQUEUED_ATTR]["key"] for t in study.get_trials(deepcopy=False)
            if ENQUEUED_ATTR in t.user_attrs}
    new = 0
    for e in entries:
        spec_for_data(e["spec"], data)
        key = hashlib.sha256(json.dumps(e, sort_keys=True).encode()).hexdigest()[:12]
        if key not in done:
            study.enqueue_trial({}, user_attrs={ENQUEUED_ATTR: {**e, "key": key}})
            new += 1
    return new


MAX_CONSECUTIVE_FAILURES = 5  # then the study stops with the last error: something systematic is wrong
MAX_REJECTIONS_PER_TRIAL = 50  # over-budget students resampled per trial before the study gives up


def write_run_file(cfg: StudyConfig, study_file: Path | None = None) -> None:
    """run.json: how `report`, `train` and `results` find the study again, and how it was made
    (the first command is kept; later ones, e.g. resumes, are listed after it)."""
    path = run_file(cfg.run_path)
    try:
        old = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        old = {}  # a damaged run.json is written anew
    command = command_line()
    later = old.get("later_commands", []) + ([command] if old.get("command") and command != old["command"] else [])
    run = {"study_name": cfg.name, "storage": cfg.storage_url, "config": cfg.to_dict(),
           "command": old.get("command") or command, "later_commands": list(dict.fromkeys(later)),
           "study_file": old.get("study_file") or (str(study_file) if study_file else None),
           "study_text": old.get("study_text") or (Path(study_file).read_text() if study_file else None),
           "kdsearch": old.get("kdsearch") or code_version()}
    write_text_atomic(path, json.dumps(run, indent=2) + "\n")


def make_run_folder(path: Path) -> None:
    """The run folder, made when missing; a path that is (or lies under) a file is one line."""
    if path.exists() and not path.is_dir():
        raise KDSearchError(f"run folder {path} is a file, not a folder: give --run-dir a new folder or a run's folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise KDSearchError(f"run folder {path} cannot be made: part of its path is a file") from None
    except PermissionError:
        raise KDSearchError(f"run folder {path} cannot be made: permission denied") from None


def check_run_folder(cfg: StudyConfig) -> None:
    """One run folder holds one study: another study's trial folders would overwrite its files."""
    path = run_file(cfg.run_path)
    try:
        owner = json.loads(path.read_text()).get("study_name") if path.is_file() else None
    except ValueError:
        owner = None  # a damaged run.json is rewritten below
    if owner and owner != cfg.name:
        raise KDSearchError(f"run folder {cfg.run_path} holds study {owner!r}, not {cfg.name!r}: "
                            "give this study its own --run-dir")


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
    if 0 < cfg.data.subset < data.num_classes:
        raise KDSearchError(f"--subset {cfg.data.subset}: fewer images than the {data.num_classes} classes of "
                            f"{data.name}, so some classes would have no training image (give at least "
                            f"{data.num_classes}, or 0 for all)")
    console.print(f"[bold]kdsearch[/] study [cyan]{cfg.name}[/] in {cfg.run_path} on {device} "
                  f"({torch.get_num_threads()} CPU threads)")
    train = stratified_subset(data.train, cfg.data.subset, cfg.seed) if cfg.data.subset else data.train
    console.print(f"data {data.name}: {len(train)} train" + (f" (subset of {len(data.train)})" if cfg.data.subset else "")
                  + f", {len(data.val)} val, {len(data.test)} test, {data.num_classes} classes, "
                  f"{data.in_channels}x{data.image_size}x{data.image_size}")
    if check is not None:
        check(data)
    with run_lock(cfg.run_path, console, "preparing the teacher"):  # one worker trains it, the others load it
        teacher = prepare_teacher(cfg.teacher, data, cfg.run_path, device, cfg.seed, cfg.latency_threads, console)
    if check_teacher is not None:
        check_teacher(teacher, data)
    for note in teacher.notes:
        console.print(f"[yellow]teacher: {note}[/]")
    console.print(f"teacher {teacher.name}: val {teacher.val_accuracy:.2%}, test {teacher.test_accuracy:.2%}, "
                  f"{teacher.params:,} params, {teacher.latency_ms:.2f} ms" + (" (cached)" if teacher.from_cache else ""))
    teacher.model.requires_grad_(False).eval()
    ctx = TrialContext(cfg=cfg, data=data, train=train, x_train=train.x.to(device), y_train=train.y.to(device),
                       x_val=data.val.x.to(device), y_val=data.val.y.to(device), teacher=teacher, device=device,
                       pruner=make_pruner(cfg.pruner, cfg.objectives))
    if cfg.train.teacher_cache:
        with run_lock(cfg.run_path, console, "building the teacher-logit cache"):
            ctx.cache = teacher_logit_cache(ctx, console)
    return ctx


def prepare(cfg: StudyConfig, console: Console, study_file: Path | None = None,
            record: bool = True) -> tuple[TrialContext, optuna.Study]:
    """Everything before the first trial: the study (opened first: a bad storage URL fails before
    any teacher work), the training inputs, then the run's facts recorded in the study."""
    make_run_folder(cfg.run_path)
    check_run_folder(cfg)
    with run_lock(cfg.run_path, console, "creating the study"):  # two new workers: one creates the schema
        study = open_study(cfg)
    ctx = prepare_inputs(cfg, console, check=lambda data: check_budgets_reachable(cfg, data),
                         check_teacher=lambda teacher, data: check_teacher_teaches(cfg, teacher, data))
    if record:  # the command and study file (a worker process started by --workers has its parent's)
        with run_lock(cfg.run_path, console, "writing run.json"):
            write_run_file(cfg, study_file)
    data = ctx.data
    if FINGERPRINT_ATTR not in study.user_attrs:  # prepared without error: these settings are the study's now
        study.set_user_attr(FINGERPRINT_ATTR, fingerprint(cfg))
    for key, value in {"teacher": ctx.teacher.to_dict(), "config": cfg.to_dict(), "cpu_threads": torch.get_num_threads(),
                       "latency_threads": cfg.latency_threads, "device": str(ctx.device),
                       "data": {"name": data.name, "train": len(ctx.train), "val": len(data.val),
                                "test": len(data.test), "classes": data.classes}}.items():
        study.set_user_attr(key, value)
    return ctx, study


def check_teacher_teaches(cfg: StudyConfig, teacher: TeacherResult, data: DataSplits) -> None:
    """A study does not distill from a teacher at chance on validation, trained or not, unless asked
    (--allow-chance-teacher): one line, exit 2 (the teacher stays cached for a rerun)."""
    note = chance_note(teacher.val_accuracy, data.val.y, teacher.epochs_trained, teacher.name)
    if note and not cfg.teacher.allow_chance:
        raise KDSearchError(f"{note} (or pass --allow-chance-teacher to distill from it anyway)")


def teacher_logit_cache(ctx: TrialContext, console: Console) -> LogitCache:
    """Load or build (once, for all trials and workers) the teacher logits of the student train split."""
    cfg, data = ctx.cfg, ctx.data
    key = cache_key(ctx.teacher.key, ctx.train.x, ctx.train.y, data.pad, data.flip, cfg.train.views, cfg.seed)
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


def run_search(cfg: StudyConfig, console: Console | None = None, study_file: Path | None = None,
               workers: int = 1, record: bool = True, enqueue: str | Path | None = None,
               in_process: bool = False) -> optuna.Study:
    """Run (or resume) the study until it holds `cfg.trials` finished trials (all workers together).

    The study, teacher and teacher-logit cache are prepared here; then the trials run in
    `workers` supervised worker processes (kdsearch.supervise; one GPU each when several are
    visible), so a trial that kills its process fails alone. `in_process` runs them in this
    process instead (for debugging: breakpoints work; a crash then ends the run).
    """
    console = console or Console()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is reported in one line, below
    if in_process and workers > 1:
        raise KDSearchError("--in-process runs the trials in one process: drop --workers or --in-process")
    entries = load_enqueue(enqueue) if enqueue else []
    ctx, study = prepare(cfg, console, study_file, record)
    if entries:
        new = enqueue_students(study, entries, ctx.data)
        console.print(f"{new} known student(s) queued from {enqueue} (evaluated first)" if new else
                      f"the students in {enqueue} are queued already", highlight=False)
    with alive(cfg.run_path):
        recovered = recover_dead_trials(study, cfg.run_path, retries=cfg.retries)
        if recovered:
            console.print(f"[yellow]trial(s) {', '.join(map(str, recovered))} of stopped workers marked failed; "
                          "their parameters are queued again unless they were retried already[/]", highlight=False)
        done = n_finished(study)
        if done >= cfg.trials:
            console.print(f"study already has {done} finished trials (target {cfg.trials}): nothing to run")
            return study
        console.print(f"running until {cfg.trials} trials are finished ({done} already), {cfg.epochs} epochs each")
        if in_process:
            estimate_search(ctx, cfg.trials - done, console)
            with progress_bar(console) as progress:
                ctx.progress = progress
                run_trials(study, ctx, progress, progress.add_task("trials", total=cfg.trials, completed=done))
            return study
        device = ctx.device
        del ctx  # the workers load the prepared data, teacher and cache themselves
        if device.type == "cuda":
            torch.cuda.empty_cache()
        from .supervise import supervise

        supervise(cfg, study, workers, console)
    return study


def child_trials(cfg: StudyConfig, console: Console, deadline: float | None, estimate: bool) -> None:
    """The work of one supervised worker process: open the study, load the inputs its supervisor
    prepared (data, teacher and teacher-logit cache, from the run folder's caches), run trials."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = open_study(cfg)
    ctx = prepare_inputs(cfg, Console(quiet=True))
    with alive(cfg.run_path):
        done = n_finished(study)
        if estimate and done < cfg.trials:
            estimate_search(ctx, cfg.trials - done, console)
        with progress_bar(console) as progress:
            ctx.progress = progress
            run_trials(study, ctx, progress, progress.add_task("trials", total=cfg.trials, completed=done), deadline)


def time_teacher_forward(model: torch.nn.Module, x: torch.Tensor, batch: int) -> float:
    """Seconds per image of the teacher's forward pass (one warm-up batch, one timed)."""
    from .distill import predict

    return measure.wall_seconds(lambda: predict(model, x[:batch], batch), x.device) / batch


class _Middle(_Cheapest):
    """Every numeric parameter in the middle of its range (geometric for log ranges): a typical student."""

    def sample_independent(self, study, trial, name, dist):
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            return dist.choices[0]
        mid = (dist.low * dist.high) ** 0.5 if getattr(dist, "log", False) else (dist.low + dist.high) / 2
        return int(round(mid)) if isinstance(dist, optuna.distributions.IntDistribution) else mid


def estimate_search(ctx: TrialContext, trials: int, console: Console) -> float | None:
    """Time a few training steps of a mid-space student and print what the remaining trials may take
    (an upper bound: pruning and smaller students take less); returns the estimate in seconds, or None
    when the probe itself fails (an estimate is never worth stopping a run for)."""
    try:
        return _estimate_search(ctx, trials, console)
    except Exception as exc:  # noqa: BLE001
        console.print(f"(no estimate of the trials: {type(exc).__name__}: {str(exc).splitlines()[0][:100]})",
                      highlight=False)
        return None


def _estimate_search(ctx: TrialContext, trials: int, console: Console) -> float:
    from . import distill

    cfg, data = ctx.cfg, ctx.data
    study = optuna.create_study(sampler=_Middle({}))
    spec = sample_spec(study.ask(), cfg.space, data.in_channels, data.num_classes, data.image_size,
                       list(data.mean), list(data.std))
    with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
        model = build(spec).to(ctx.device)
        n = min(len(ctx.y_train), cfg.train.batch_size * 3)
        recipe = recipe_from(cfg.train, epochs=1, lr=min(cfg.space["lr"]) if isinstance(cfg.space["lr"], list)
                             else cfg.space["lr"])
        per_image = measure.wall_seconds(lambda: distill.fit(model, ctx.x_train[:n], ctx.y_train[:n], recipe,
                                                             pad=data.pad, flip=data.flip, seed=0), ctx.device) / n
    total = per_image * len(ctx.y_train) * cfg.epochs * trials
    console.print(f"estimate: {trials} trials of a mid-size student ({spec.summary()}) ≈ {minutes(total)} at most "
                  "(pruning and smaller students take less)"
                  + ("  (to shorten it: --subset, fewer --epochs or --trials, --workers, or a GPU)"
                     if total > SLOW_S else ""), highlight=False)
    return total


def run_trials(study: optuna.Study, ctx: TrialContext, progress: Progress, overall,
               deadline: float | None = None) -> None:
    """Start trials one at a time while finished plus running ones (every worker's) fall short of the
    target; fail a trial on any error and go on, but stop after MAX_CONSECUTIVE_FAILURES in a row.
    No trial starts after `deadline` (time.time(); default: --timeout from now)."""
    cfg = ctx.cfg
    if deadline is None and cfg.timeout:
        deadline = time.time() + cfg.timeout
    failures: list[str] = []
    over_budget = {"n": 0, "since": 0}

    def tick(study: optuna.Study, trial: FrozenTrial) -> None:
        progress.update(overall, completed=n_finished(study))
        error = trial.user_attrs.get(ERROR_ATTR)
        if error and error.startswith(Surplus.__name__):
            return
        if rejected(trial):  # over budget, untrained
            over_budget["n"] += 1
            over_budget["since"] += 1
            return  # counted and reported, not listed: a tight budget may reject many samples
        acc = trial.user_attrs.get(CURVE, [float("nan")])[-1]
        line = (f"trial {trial.number:3d} {trial.state.name.lower():8s} val {acc:.2%} "
                f"{trial.user_attrs.get('params', 0):>9,} params  {trial.user_attrs.get('arch', '')}")
        if over_budget["since"]:
            line += f"  ({over_budget['since']} over-budget student(s) resampled first)"
            over_budget["since"] = 0
        progress.console.print(line + (f"  [red]{escape(error)}[/]" if error else ""), highlight=False)
        failures[:] = failures + [error] if trial.state == TrialState.FAIL else []

    while deadline is None or time.time() < deadline:
        recover_dead_trials(study, cfg.run_path, retries=cfg.retries)
        trials = study.get_trials(deepcopy=False)
        finished = sum(counts(t) for t in trials)
        if finished >= cfg.trials:
            if over_budget["n"]:
                progress.console.print(f"{over_budget['n']} over-budget student(s) were rejected untrained and resampled "
                                       "(recorded as constraints for the sampler)", highlight=False)
            return
        if finished + sum(t.state == TrialState.RUNNING for t in trials) >= cfg.trials:
            time.sleep(1.0)  # the other workers' running trials make up the total, unless one fails
            continue
        study.optimize(lambda t: objective(t, ctx), n_trials=1, catch=(Exception,), callbacks=[tick])
        if over_budget["n"] > MAX_REJECTIONS_PER_TRIAL * cfg.trials:
            raise KDSearchError(f"stopped: {over_budget['n']} sampled students were over budget; the space rarely "
                                "meets it (narrow [space] toward smaller students)")
        if len(failures) >= MAX_CONSECUTIVE_FAILURES:
            raise KDSearchError(f"stopped: the last {len(failures)} trials failed (last error: {failures[-1]}); "
                                "finished trials are kept")
