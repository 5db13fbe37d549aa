"""`kdsearch train`: retrain chosen students at full budget, with their teacher and without.

The search trains each student briefly, often on a subset; the students a user picks deserve
the full training split and more epochs. The comparison is built to be fair:

- the headline baseline is ordinary training: the same student without a teacher (alpha = 0),
  fresh augmentation views every epoch, the same recipe, its own learning rate;
- the control isolates the teacher's signal: without a teacher but on **the same views** as
  the distilled student (the cached view ids of the teacher-logit cache); per seed, all arms
  start from the same initialization and see the same batches;
- an arm whose loss diverges is recorded as failed, with its reason, and the others go on;
- each arm gets its own learning rate, chosen on the validation split from the same grid
  (multiples of the trial's lr, using the first seed), or both use one fixed lr;
- the test split is read once per finished model and never used to choose anything;
- the gain is the per-seed paired difference of test accuracy, with a 95% t-interval.

Every finished model is saved and recorded at once, so an interrupted run keeps what it
finished and the same command continues.
"""

from __future__ import annotations

import importlib
import json
import math
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from ..config import LEGACY_TRAIN, config_from_dict, validate
from ..errors import KDSearchError
from ..models.students.io import save_student
from ..models.students.registry import build
from ..models.students.spec import StudentSpec
from ..progress import progress_bar
from ..runs.files import write_text_atomic
from ..runs.layout import RESULTS_FILE, final_dir, model_dir
from ..runs.log_file import LOGGER, run_log
from ..runs.provenance import command_line, environment
from ..runs.run import Run
from ..search.inputs import TrialContext, prepare_inputs
from ..search.supervise import family_modules, threads_each
from ..training.distill import NonFiniteLoss, accuracy, fit, recipe_from, resolve_device
from .front import pareto_trials
from .stats import excludes_zero, mean_sd, paired_differences, t_interval


MODES = {
    "kd": "distilled (trial's T, alpha)",
    "ce": "control: no teacher, the teacher's cached views",
    "ce-all": "ordinary training: no teacher, fresh views every epoch",
}
HEADLINE = ("ce-all", "ce")  # the baseline a gain is reported against: ordinary training where it was run
DEFAULT_GRID = (0.5, 1.0, 2.0)


@dataclass
class FinalRun:
    mode: str  # a key of MODES
    seed: int
    lr: float
    curve: list[float]  # validation accuracy after each epoch
    test_accuracy: float
    seconds: float
    error: str | None = None  # why the model failed (a diverging loss): no accuracy, the other arms go on

    @property
    def val_accuracy(self) -> float:
        return self.curve[-1] if self.curve else math.nan


@dataclass
class LrPolicy:
    """How each arm's learning rate is set: chosen per arm from trial lr x `grid`, or `fixed` for both."""

    grid: tuple[float, ...] = DEFAULT_GRID
    fixed: float | None = None

    def candidates(self, trial_lr: float) -> list[float]:
        if self.fixed is not None:
            return [self.fixed]
        return sorted({float(f"{trial_lr * m:.6g}") for m in self.grid})

    def describe(self, trial_lr: float) -> str:
        if self.fixed is not None:
            return f"one fixed learning rate for every arm: {self.fixed:.4g}"
        if len(self.candidates(trial_lr)) == 1:
            return f"the trial's learning rate for every arm: {trial_lr:.4g}"
        grid = ", ".join(f"{lr:.4g}" for lr in self.candidates(trial_lr))
        return (f"each arm's learning rate chosen on validation accuracy (first seed) from the same grid: "
                f"{grid} (the trial's {trial_lr:.4g} x {', '.join(f'{m:g}' for m in self.grid)})")

    def to_dict(self) -> dict[str, Any]:
        return {"grid": list(self.grid), "fixed": self.fixed}


def chosen_trial(study: optuna.Study, number: int) -> tuple[StudentSpec, dict[str, float]]:
    """The spec and distillation settings of trial `number`, which must have trained a student."""
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise KDSearchError(f"no trial {number} in study {study.study_name!r} (trials 0 to {len(trials) - 1})")
    attrs = trials[number].user_attrs
    if "spec" not in attrs or not all(k in attrs for k in ("temperature", "alpha", "lr")):
        raise KDSearchError(f"trial {number} has no student to retrain (state {trials[number].state.name.lower()})")
    return StudentSpec.from_json(json.dumps(attrs["spec"])), {k: float(attrs[k]) for k in ("temperature", "alpha", "lr")}


def load_results(path: Path, setup: dict[str, Any]) -> list[FinalRun]:
    """Runs already finished with the same setup (anything else is retrained)."""
    if not path.is_file():
        return []
    try:
        stored = json.loads(path.read_text())
        if stored.get("setup") != setup:
            return []
        return [FinalRun(**r) for r in stored["runs"]]
    except (ValueError, TypeError, KeyError):  # an old or damaged file: retrain rather than fail
        return []


def find(runs: list[FinalRun], mode: str, seed: int, lr: float) -> FinalRun | None:
    return next((r for r in runs if r.mode == mode and r.seed == seed and math.isclose(r.lr, lr, rel_tol=1e-9)), None)


def choose_lr(runs: list[FinalRun], mode: str, seed: int, candidates: list[float], trial_lr: float) -> float | None:
    """The candidate with the best final validation accuracy at `seed` (ties: nearest the trial's lr);
    None while a candidate is still untrained."""
    done = [find(runs, mode, seed, lr) for lr in candidates]
    if any(r is None for r in done):
        return None
    trained = [r for r in done if r.error is None]
    if not trained:
        return None  # every candidate diverged: the arm has no result
    best = max(trained, key=lambda r: (r.val_accuracy, -abs(math.log(r.lr / trial_lr))))
    return best.lr


def summarize(runs: list[FinalRun], modes: list[str], seeds: list[int], policy: LrPolicy, trial_lr: float,
              teacher_test: float) -> dict[str, Any]:
    """Per arm: chosen lr, test accuracy per seed, mean and sd; the paired gain of kd over each baseline."""
    out: dict[str, Any] = {"arms": {}, "gain": {}}
    candidates = policy.candidates(trial_lr)
    per_seed: dict[str, dict[int, float]] = {}
    for mode in modes:
        lr = candidates[0] if len(candidates) == 1 else choose_lr(runs, mode, seeds[0], candidates, trial_lr)
        found = {s: r for s in seeds if lr is not None and (r := find(runs, mode, s, lr)) is not None}
        failed = {s: r.error for s, r in found.items() if r.error is not None}
        chosen = {s: r for s, r in found.items() if r.error is None}
        if failed:
            out.setdefault("failed", {})[mode] = failed
        if not chosen:
            continue
        per_seed[mode] = {s: r.test_accuracy for s, r in chosen.items()}
        mean, sd = mean_sd(list(per_seed[mode].values()))
        val_mean, _ = mean_sd([r.val_accuracy for r in chosen.values()])
        out["arms"][mode] = {"label": MODES[mode], "lr": lr, "seeds": sorted(chosen), "test": per_seed[mode],
                             "test_mean": mean, "test_sd": sd, "val_mean": val_mean,
                             "retained": mean / teacher_test if teacher_test else math.nan}
    for base in ("ce", "ce-all"):
        if "kd" in per_seed and base in per_seed:
            diffs = paired_differences(per_seed["kd"], per_seed[base])
            if diffs:
                out["gain"][base] = {"differences": diffs, **t_interval(diffs).to_dict()}
    return out


def headline(gain: dict[str, Any]) -> str | None:
    """The baseline that the gain of a trial's results is reported against (HEADLINE), None without any."""
    return next((base for base in HEADLINE if base in gain), None)


def gain_sentence(gain: dict[str, Any], against: str | None = None) -> str:
    """The paired gain in points over `against` (default: the headline baseline), its 95% interval, and
    plainly whether it excludes zero."""
    g = gain.get(against or headline(gain) or "")
    if not g:
        return "no paired runs yet"
    if g["n"] < 2:
        return f"{100 * g['mean']:+.2f} points from one seed: no interval (train more seeds)"
    where = "excludes zero" if excludes_zero(g["low"], g["high"]) else "spans zero: no effect shown"
    return (f"{100 * g['mean']:+.2f} points, 95% CI [{100 * g['low']:+.2f}, {100 * g['high']:+.2f}] over "
            f"{g['n']} seeds; the interval {where}")


def save_results(path: Path, body: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(body, indent=2) + "\n")


def train_one(ctx: TrialContext, spec: StudentSpec, hp: dict[str, float], mode: str, seed: int, lr: float,
              epochs: int, x_test: torch.Tensor, y_test: torch.Tensor,
              progress: Progress | None) -> tuple[FinalRun, torch.nn.Module]:
    """Train the spec from scratch (same init, batches and views for every arm of a seed); val curve, test once."""
    cfg, data = ctx.cfg, ctx.data
    recipe = recipe_from(cfg.train, epochs, lr, hp["temperature"], hp["alpha"] if mode == "kd" else 0.0)
    torch.manual_seed(seed)
    model = build(spec).to(ctx.device)
    start = time.perf_counter()
    curve = fit(model, ctx.x_train, ctx.y_train, recipe, pad=data.pad, flip=data.flip, seed=seed,
                teacher=ctx.teacher.model if mode == "kd" else None, cache=None if mode == "ce-all" else ctx.cache,
                x_val=ctx.x_val, y_val=ctx.y_val, progress=progress, description=f"{mode} lr {lr:.3g} seed {seed}")
    result = FinalRun(mode, seed, lr, curve, accuracy(model, x_test, y_test), time.perf_counter() - start)
    return result, model


def _train_and_save(run_dir: Path, ctx: TrialContext, number: int, spec: StudentSpec, hp: dict[str, float], mode: str,
                    seed: int, lr: float, epochs: int, x_test: torch.Tensor, y_test: torch.Tensor,
                    progress: Progress | None) -> FinalRun:
    """One model trained and its weights saved; a diverging arm is a failed FinalRun (the others go on)."""
    try:
        result, model = train_one(ctx, spec, hp, mode, seed, lr, epochs, x_test, y_test, progress)
        save_student(model_dir(run_dir, number, mode, seed, lr), model, spec)
        return result
    except NonFiniteLoss as exc:  # this arm diverged at this lr: recorded as failed, the others go on
        return FinalRun(mode, seed, lr, [], math.nan, 0.0, error=f"{type(exc).__name__}: {exc}")


_WORKER: dict[str, Any] = {}  # in a --jobs process: its prepared inputs


def _start_worker(cfg: dict[str, Any], imports: list[str]) -> None:
    """A --jobs process: the same inputs as its parent (data, teacher, logit cache), loaded, not rebuilt."""
    for module in imports:  # student families registered outside kdsearch
        importlib.import_module(module)
    ctx = prepare_inputs(config_from_dict(cfg), Console(quiet=True))
    _WORKER.update(ctx=ctx, test=(ctx.data.test.x.to(ctx.device), ctx.data.test.y.to(ctx.device)))


def _train_in_worker(run_dir: str, number: int, spec: str, hp: dict[str, float], mode: str, seed: int, lr: float,
                     epochs: int) -> FinalRun:
    return _train_and_save(Path(run_dir), _WORKER["ctx"], number, StudentSpec.from_json(spec), hp, mode, seed, lr,
                           epochs, *_WORKER["test"], None)


def _train_side_by_side(run: Run, ctx: TrialContext, number: int, spec: StudentSpec, hp: dict[str, float], epochs: int,
                        plan: Callable[[], list[tuple[str, int, float]]], record: Callable[[FinalRun, Progress], None],
                        jobs: int, progress: Progress) -> None:
    """Train what `plan` says is left in `jobs` processes at once (spawned: safe with CUDA), recording each
    model as it finishes; the lr candidates come first, so the seeds' arms are planned once they are in."""
    task = progress.add_task(f"trial {number}: models in {jobs} processes", total=len(plan()))
    context = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker,
                                 initargs=(ctx.cfg.to_dict(), family_modules())) as pool:
            running: dict[Any, tuple[str, int, float]] = {}
            finished_models = 0
            while True:
                for item in plan():
                    if item not in running.values():
                        running[pool.submit(_train_in_worker, str(run.run_dir), number, spec.to_json(), hp, *item,
                                            epochs)] = item
                progress.update(task, total=finished_models + len(running))
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    del running[future]
                    record(future.result(), progress)
                    finished_models += 1
                    progress.advance(task)
    except BrokenProcessPool as exc:
        raise KDSearchError(f"a --jobs training process died ({exc}); the models it finished are kept: "
                            "run the same command to continue (with fewer --jobs if memory ran out)") from None
    finally:
        progress.remove_task(task)


def resolve_trials(run: Run, numbers: list[int] | None, front: bool) -> list[int]:
    """The trials to retrain: the given numbers, or every feasible Pareto member."""
    if front:
        members = sorted(t.number for t in pareto_trials(run.study))
        if not members:
            raise KDSearchError("--front: the study has no complete, feasible trial yet")
        return members
    if not numbers:
        raise KDSearchError("name the students to retrain: --trial N, --trials 3,9,20 or --front")
    return list(dict.fromkeys(numbers))


def train_final(run: Run, numbers: list[int] | None = None, *, front: bool = False, epochs: int | None = None,
                seeds: list[int] | None = None, baseline: bool = True, all_views: bool = True,
                policy: LrPolicy | None = None, full_data: bool = True, device: str | None = None,
                batch_size: int | None = None, views: int | None = None, threads: int | None = None,
                jobs: int = 1, console: Console | None = None) -> dict[int, dict[str, Any]]:
    """Retrain each chosen trial's student with its teacher and (with `baseline`) without; returns the
    results written to RUN/final/<trial>/results.json, by trial number. `views`: teacher views cached per
    image for the distilled arm (and the control) instead of the study's; at long budgets about the number
    of epochs gives it fresh views as ordinary training has (benchmarks/bench_long_kd.py). `device`,
    `threads` and `jobs` say where it runs, not what it trains (not part of a model's setup): with `jobs`
    N > 1, N processes train the models that can run at once (the lr candidates of the first seed, then
    every arm and seed) side by side on the device, each loading the prepared inputs."""
    console = console or Console()
    policy = policy or LrPolicy()
    if run.run_dir is None or not run.config:
        raise KDSearchError("final training needs the run folder (its config, teacher and data settings)")
    numbers = resolve_trials(run, numbers, front)
    chosen = {n: chosen_trial(run.study, n) for n in numbers}  # every request checked before any work
    cfg = config_from_dict(run.config)
    cfg.run_dir = str(run.run_dir)
    if full_data:
        cfg.data.subset = 0
    given = {k: v for k, v in {"batch_size": batch_size, "views": views}.items() if v is not None}
    if given:  # each is recorded in results.json's setup: another value retrains
        for key, value in given.items():
            setattr(cfg.train, key, value)
        cfg = validate(cfg)  # the study file's rule for each setting, in its words
    if device:
        cfg.device = device
    if threads is not None:
        if threads < 1:
            raise KDSearchError("--threads must be at least 1")
        cfg.threads = threads
    if jobs < 1:
        raise KDSearchError("--jobs must be at least 1")
    if jobs > 1 and threads is None and resolve_device(cfg.device).type == "cpu":
        cfg.threads = threads_each(jobs)  # the processes share the cores, as search workers do
    epochs = 4 * cfg.epochs if epochs is None else epochs
    seeds = list(dict.fromkeys(seeds or [cfg.seed]))
    if epochs < 1:
        raise KDSearchError("--epochs must be at least 1")
    if (policy.fixed is not None and not policy.fixed > 0) or any(not m > 0 for m in policy.grid):
        raise KDSearchError("learning rates and --lr-grid factors must be positive")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with run_log(run.run_dir, console):  # what it prints, also in RUN/run.log
        LOGGER.info(f"$ {command_line()}")
        ctx = prepare_inputs(cfg, console)
        modes = ["kd"] + (["ce"] if baseline else []) + (["ce-all"] if all_views else [])
        teacher = {"name": ctx.teacher.name, "val_accuracy": ctx.teacher.val_accuracy,
                   "test_accuracy": ctx.teacher.test_accuracy, "params": ctx.teacher.params, "macs": ctx.teacher.macs,
                   "latency_ms": ctx.teacher.latency_ms}
        if ctx.cache is None:
            console.print("no teacher-logit cache (teacher_cache off): every arm draws from all views, in the same order")
        x_test, y_test = ctx.data.test.x.to(ctx.device), ctx.data.test.y.to(ctx.device)
        out = {}
        for number in numbers:
            spec, hp = chosen[number]
            out[number] = _train_trial(run, ctx, number, spec, hp, modes, seeds, epochs, policy, teacher,
                                       x_test, y_test, console, jobs)
        return out


def _train_trial(run: Run, ctx: TrialContext, number: int, spec: StudentSpec, hp: dict[str, float],
                 modes: list[str], seeds: list[int], epochs: int, policy: LrPolicy, teacher: dict[str, Any],
                 x_test: torch.Tensor, y_test: torch.Tensor, console: Console, jobs: int = 1) -> dict[str, Any]:
    cfg = ctx.cfg
    attrs = run.study.get_trials(deepcopy=False)[number].user_attrs
    # the spec as the study stored it (re-serializing would add fields newer code knows, and retrain)
    setup = {"trial": number, "spec": attrs["spec"], **hp, "epochs": epochs, "train_images": len(ctx.train),
             "batch_size": cfg.train.batch_size, "weight_decay": cfg.train.weight_decay,
             "teacher_key": ctx.teacher.key, "views": ctx.cache.k if ctx.cache is not None else None,
             # the rest of the recipe where it differs from the one results stored before it existed
             **{k: v for k, v in cfg.train.to_dict().items() if k in LEGACY_TRAIN and v != LEGACY_TRAIN[k]}}
    folder = final_dir(run.run_dir, number)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RESULTS_FILE
    runs = load_results(path, setup)
    candidates = policy.candidates(hp["lr"])

    def body() -> dict[str, Any]:
        return {"setup": setup, "lr_policy": {**policy.to_dict(), "text": policy.describe(hp["lr"])},
                "trial": {k: attrs.get(k) for k in ("arch", "params", "macs", "latency_ms")}
                | {"search_val_accuracy": (attrs.get("curve") or [None])[-1], "search_epochs": cfg.epochs},
                "teacher": teacher, "runs": [asdict(r) for r in runs],
                "summary": summarize(runs, modes, seeds, policy, hp["lr"], teacher["test_accuracy"]),
                "environment": environment(ctx.device), "command": command_line()}

    def plan() -> list[tuple[str, int, float]]:
        """What is left: the lr selection runs first (first seed, every arm), then each seed's arms together."""
        todo: list[tuple[str, int, float]] = []
        lrs: dict[str, float | None] = {}
        for mode in modes:
            if len(candidates) == 1:
                lrs[mode] = candidates[0]
            else:
                todo += [(mode, seeds[0], lr) for lr in candidates if find(runs, mode, seeds[0], lr) is None]
                lrs[mode] = choose_lr(runs, mode, seeds[0], candidates, hp["lr"])
        if todo:
            return todo
        return [(m, s, lrs[m]) for s in seeds for m in modes if find(runs, m, s, lrs[m]) is None]

    todo = plan()
    console.print(f"trial {number}: {spec.summary()}, T {hp['temperature']:.2f}, alpha {hp['alpha']:.2f}; "
                  f"{epochs} epochs on {len(ctx.train)} images, seeds {','.join(map(str, seeds))}; "
                  f"{policy.describe(hp['lr'])}; {len(runs)} model(s) already done ({path})", highlight=False)
    def record(result: FinalRun, progress: Progress) -> None:
        runs.append(result)
        save_results(path, body())  # at once: an interruption keeps it
        done = (f"[red]failed: {escape(result.error)}[/]" if result.error else
                f"val {result.val_accuracy:.2%}, test {result.test_accuracy:.2%} ({result.seconds:.0f} s)")
        progress.console.print(f"  {result.mode:6s} lr {result.lr:.3g} seed {result.seed}: {done}", highlight=False)

    with progress_bar(console) as progress:
        if jobs > 1 and len(todo) > 1:
            _train_side_by_side(run, ctx, number, spec, hp, epochs, plan, record, jobs, progress)
        while todo := plan():
            mode, seed, lr = todo[0]
            record(_train_and_save(run.run_dir, ctx, number, spec, hp, mode, seed, lr, epochs, x_test, y_test,
                                   progress), progress)
    final = body()
    if not path.is_file() or json.loads(path.read_text())["runs"] != final["runs"]:
        save_results(path, final)
    console.print(final_table(number, final))
    return final


def final_table(number: int, results: dict[str, Any]) -> Table:
    """Per arm: its lr, seeds, mean val and test accuracy (sd over seeds); the paired gain below."""
    teacher, summary = results["teacher"], results["summary"]
    table = Table(title=f"trial {number}: final training (test read once per model)")
    for col in ("student", "lr", "seeds", "val", "test", "test sd", "of teacher"):
        table.add_column(col, justify="left" if col == "student" else "right")
    for arm in summary["arms"].values():
        sd = f"{arm['test_sd']:.2%}" if not math.isnan(arm["test_sd"]) else ""
        table.add_row(arm["label"], f"{arm['lr']:.3g}", str(len(arm["seeds"])), f"{arm['val_mean']:.2%}",
                      f"{arm['test_mean']:.2%}", sd, f"{arm['retained']:.1%}")
    table.add_row(f"teacher {teacher['name']}", "", "", f"{teacher['val_accuracy']:.2%}",
                  f"{teacher['test_accuracy']:.2%}", "", "")
    lines = [f"distillation adds {gain_sentence(summary['gain'], base)} (vs {MODES[base]})" for base in summary["gain"]]
    lines += [f"{MODES[mode]} failed at seed(s) {', '.join(map(str, failed))}: {next(iter(failed.values()))}"
              for mode, failed in summary.get("failed", {}).items()]
    table.caption = "\n".join(lines + [results["lr_policy"]["text"]])
    return table
