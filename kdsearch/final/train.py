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
  (multiples of the trial's lr, using the first seed, at the full budget or by short probes), or
  all use one fixed lr;
- the test split is read once per finished model and never used to choose anything;
- the gain is the per-seed paired difference of test accuracy, with a 95% t-interval.

Every finished model is saved and recorded at once, so an interrupted run keeps what it
finished and the same command continues.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import optuna
import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from ..analysis.front import pareto_trials
from ..config import LEGACY_TRAIN, config_from_dict, validate
from ..data.augment import num_views
from ..errors import KDSearchError
from ..models.students.spec import StudentSpec
from ..progress import progress_bar
from ..runs.layout import RESULTS_FILE, arm_partial_path
from ..runs.log_file import LOGGER, run_log
from ..runs.provenance import command_line, environment
from ..runs.run import Run
from ..search.estimate import estimate_training
from ..search.inputs import TrialContext, prepare_inputs
from .arms import (DISTILL_ONLY, FinalRun, LrPolicy, choose_lr, find, final_table, load_results, save_results,
                   summarize, teacher_free_runs)
from .models import _train_and_save
from .pool import Item, _train_side_by_side, as_a_job
from .students import Student, check_references, inherited_weights, reference_student, trial_student


def chosen_trial(study: optuna.Study, number: int) -> tuple[StudentSpec, dict[str, float]]:
    """The spec and distillation settings of trial `number`, which must have trained a student."""
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise KDSearchError(f"no trial {number} in study {study.study_name!r} (trials 0 to {len(trials) - 1})")
    attrs = trials[number].user_attrs
    if "spec" not in attrs or not all(k in attrs for k in ("temperature", "alpha", "lr")):
        raise KDSearchError(f"trial {number} has no student to retrain (state {trials[number].state.name.lower()})")
    return StudentSpec.from_json(json.dumps(attrs["spec"])), {k: float(attrs[k]) for k in ("temperature", "alpha", "lr")}

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
                jobs: int = 1, temperature: float | None = None, alpha: float | None = None,
                references: list[str] | None = (), inherit: bool = False,
                console: Console | None = None) -> dict[int, dict[str, Any]]:
    """Retrain each chosen trial's student with its teacher and (with `baseline`) without; returns the
    results written to RUN/final/<trial>/results.json, by trial number. `views`: teacher views cached per
    image for the distilled arm (and the control) instead of the study's; at long budgets about the number
    of epochs gives it fresh views as ordinary training has (python -m benchmarks long-kd). `device`,
    `threads` and `jobs` say where it runs, not what it trains (not part of a model's setup): with `jobs`
    N > 1, N processes train the models that can run at once (the lr candidates of the first seed, then
    every arm and seed) side by side on the device, each loading the prepared inputs. `temperature` and
    `alpha` replace the trial's in the distilled arm (the search chose them at its short budget; a longer one
    may want the teacher weighed otherwise): the arms without a teacher do not depend on them, so their
    models are kept, and the distilled arm of other settings is put aside, never overwritten.

    `references` (None: every one of models.students.references): after each trial, each hand-written
    reference scaled to the largest width with at most the trial's parameters trains beside it, by the same
    arms, recipe, epochs, seeds, T, alpha and lr grid (around the trial's lr), in RUN/final/<trial>/references/
    <name>/; the returned results hold them under "references", by name.

    `inherit` (one-shot runs): every model starts from the subnet's inherited weights instead of a fresh
    initialization, which fine-tunes it (RUN/final/<trial>/inherited/; the references, which inherit nothing,
    are not trained beside it)."""
    console = console or Console()
    policy = policy or LrPolicy()
    if run.run_dir is None or not run.config:
        raise KDSearchError("final training needs the run folder (its config, teacher and data settings)")
    numbers = resolve_trials(run, numbers, front)
    chosen = {n: chosen_trial(run.study, n) for n in numbers}  # every request checked before any work
    inits = inherited_weights(run, numbers, console) if inherit else {}
    if inherit:
        references = []
    distill = distill_settings(temperature, alpha)
    references = check_references(references)
    cfg = config_from_dict(run.config)
    cfg.run_dir = str(run.run_dir)
    if full_data:
        cfg.data.subset = 0
    epochs = 4 * cfg.epochs if epochs is None else epochs
    if epochs < 1:
        raise KDSearchError("--epochs must be at least 1")
    if views is None and cfg.train.teacher_cache and epochs > cfg.train.views:
        # one cached view per epoch, so the distilled arm sees fresh views as ordinary training does (fewer
        # would show it the same views again and again, tilting the comparison against distillation); the
        # cache serves every arm, seed and lr probe, so it costs less than the teacher run online
        views = epochs
        views_note = (f"teacher views: {views} cached per image, one per epoch (the study's {cfg.train.views} "
                      "would repeat views; --views N to choose)")
    else:
        views_note = None
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
    if jobs > 1 and threads is None:
        cfg.threads = None  # the parent prepares on all the cores; each process gets its share (worker_config)
    seeds = list(dict.fromkeys(seeds or [cfg.seed]))
    if (policy.fixed is not None and not policy.fixed > 0) or any(not m > 0 for m in policy.grid):
        raise KDSearchError("learning rates and --lr-grid factors must be positive")
    policy = policy.for_budget(epochs)
    if policy.probe_epochs is not None and not 1 <= policy.probe_epochs < epochs:
        raise KDSearchError(f"--lr-probe-epochs must be at least 1 and fewer than --epochs ({epochs}): a probe "
                            "shorter than the training chooses its lr")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with run_log(run.run_dir, console):  # what it prints, also in RUN/run.log
        LOGGER.info(f"$ {command_line()}")
        if views_note:  # (said once every request is checked: a refusal stays one line)
            console.print(views_note, highlight=False)
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
            trial = trial_student(run, ctx, number, spec, inits.get(number))
            args = ({**hp, **distill}, modes, seeds, epochs, policy, teacher, x_test, y_test, console, jobs)
            out[number] = _train_student(trial, ctx, *args)
            beside = [r for name in references if (r := reference_student(run, ctx, number, trial, name)) is not None]
            if beside:
                out[number] = {**out[number], "references": {r.setup["reference"]: _train_student(r, ctx, *args)
                                                             for r in beside}}
        return out


def distill_settings(temperature: float | None, alpha: float | None) -> dict[str, float]:
    """The distilled arm's T and alpha as given to `train`, checked as a study file's [space] checks them."""
    given = {k: float(v) for k, v in zip(DISTILL_ONLY, (temperature, alpha)) if v is not None}
    if not (math.isfinite(given.get("temperature", 1.0)) and given.get("temperature", 1.0) > 0):
        raise KDSearchError(f"--temperature must be a positive number, not {temperature}")
    if not 0 <= given.get("alpha", 0.0) <= 1:
        raise KDSearchError(f"--alpha must be in [0, 1], not {alpha}")
    return given


def put_aside(folder: Path, setup: dict[str, Any], only: str | None = None) -> str:
    """Move a final training of other settings (its results.json, models and checkpoints) into
    folder/earlier-<UTC time>/ before this one starts over: a changed setup trains anew, and never at the
    cost of what finished before. With `only` (an arm), just that arm's models and checkpoints move (and a
    copy of results.json): the other arms stay, for they do not depend on what changed. Returns what it
    says about it."""
    try:
        before = json.loads((folder / RESULTS_FILE).read_text()).get("setup") or {}
        changed = ", ".join(f"{k} {before.get(k)!r} -> {setup.get(k)!r}" for k in sorted(set(before) | set(setup))
                            if before.get(k) != setup.get(k)) or "its format"
    except (ValueError, AttributeError):
        changed = "unreadable results.json"
    stamp = time.strftime("earlier-%Y%m%dT%H%M%SZ", time.gmtime())
    keep = next(k for i in range(1, 1000) if not (k := folder / (stamp + (f"-{i}" if i > 1 else ""))).exists())
    keep.mkdir()
    prefix = f"{only}-" if only is not None else ""  # an arm's models and checkpoints: <arm>-lr...
    for item in folder.iterdir():
        if only is not None and item.name == RESULTS_FILE:
            shutil.copy2(item, keep / item.name)
        elif (item != keep and not item.name.startswith("earlier-") and item.name != "references"
              and item.name.startswith(prefix)):  # (the references beside a trial put aside their own)
            item.rename(keep / item.name)
    if only is not None:
        return (f"its {only} arm had other settings ({changed}): moved to {keep.name}/; the arms without a teacher "
                "do not depend on them and are kept")
    return (f"its final training had other settings ({changed}): moved to {keep.name}/, "
            "these settings train from scratch")


def _train_student(student: Student, ctx: TrialContext, hp: dict[str, float], modes: list[str], seeds: list[int],
                   epochs: int, policy: LrPolicy, teacher: dict[str, Any], x_test: torch.Tensor, y_test: torch.Tensor,
                   console: Console, jobs: int = 1) -> dict[str, Any]:
    cfg, spec, label = ctx.cfg, student.spec, student.label
    setup = {**student.setup, **hp, "epochs": epochs, "train_images": len(ctx.train),
             "batch_size": cfg.train.batch_size, "weight_decay": cfg.train.weight_decay,
             "teacher_key": ctx.teacher.key, "views": ctx.cache.k if ctx.cache is not None else None,
             # the rest of the recipe where it differs from the one results stored before it existed
             **{k: v for k, v in cfg.train.to_dict().items() if k in LEGACY_TRAIN and v != LEGACY_TRAIN[k]}}
    folder = student.folder
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RESULTS_FILE
    runs = load_results(path, setup)
    candidates = policy.candidates(hp["lr"])
    probe = policy.probing(hp["lr"])
    searched = student.searched
    given = any(hp[k] != searched[k] for k in DISTILL_ONLY)  # --temperature/--alpha other than the trial's
    distilled = f"T {hp['temperature']:.3g}, alpha {hp['alpha']:.3g}"
    labels = {"kd": f"distilled ({distilled}, given to train)"} if given else {}

    def body() -> dict[str, Any]:
        return {"setup": setup, "lr_policy": {**policy.to_dict(), "text": policy.describe(hp["lr"])},
                "trial": student.record, "teacher": teacher, "runs": [asdict(r) for r in runs],
                "summary": summarize(runs, modes, seeds, policy, hp["lr"], teacher["test_accuracy"], labels),
                "environment": environment(ctx.device), "command": command_line()}

    if not runs and path.is_file():
        kept = teacher_free_runs(path, setup)  # None unless only the distilled arm's settings changed
        console.print(f"[yellow]{label}: {put_aside(folder, setup, None if kept is None else 'kd')}[/]",
                      highlight=False)
        if kept:
            runs += kept
            save_results(path, body())  # the kept arms under this setup at once (the put-aside arm is not in it)

    def plan(upcoming: bool = False) -> list[Item]:
        """What is left: the lr selection runs first (first seed, every arm), then each seed's arms together.
        `upcoming` adds the models that wait on the selection (lr None until it is made), for the estimate;
        an arm whose every lr candidate diverged has nothing left (summarize records it as failed)."""
        todo: list[Item] = []
        then: list[Item] = []
        for mode in modes:
            lr: float | None = candidates[0]
            if len(candidates) > 1:
                todo += (missing := [(mode, seeds[0], c, probe) for c in candidates
                                     if find(runs, mode, seeds[0], c, probe) is None])
                lr = choose_lr(runs, mode, seeds[0], candidates, hp["lr"], probe)
                if lr is None and not (missing and upcoming):
                    continue
            for s in seeds:
                if lr is None:
                    if not (probe is None and s == seeds[0]):  # (no probes: seed 0's candidates are its models)
                        then.append((mode, s, None, None))
                elif find(runs, mode, s, lr) is None:
                    then.append((mode, s, lr, None))
        return todo if todo and not upcoming else todo + then

    todo = plan()
    said = (f"{distilled} (given; the search's T {searched['temperature']:.3g}, alpha {searched['alpha']:.3g})"
            if given else distilled)
    console.print(f"{label}: {spec.summary()}, {said}; "
                  f"{epochs} epochs on {len(ctx.train)} images, seeds {','.join(map(str, seeds))}; "
                  f"{policy.describe(hp['lr'])}; {len(runs)} model(s) already done ({path})", highlight=False)
    if upcoming := plan(upcoming=True):
        with as_a_job(ctx, jobs):
            estimate_training(ctx, spec, hp["lr"], len(upcoming), sum(item[3] or epochs for item in upcoming),
                              min(jobs, len(upcoming)), console)
    def record(result: FinalRun, progress: Progress) -> None:
        runs.append(result)
        save_results(path, body())  # at once: an interruption keeps it
        arm_partial_path(folder, result.mode, result.seed, result.lr, result.probe).unlink(missing_ok=True)
        done = (f"[red]failed: {escape(result.error)}[/]" if result.error else
                f"val {result.val_accuracy:.2%}, " + (f"{result.probe}-epoch lr probe" if result.probe else
                                                     f"test {result.test_accuracy:.2%}") + f" ({result.seconds:.0f} s"
                + (f", continued from epoch {result.resumed_at}" if result.resumed_at else "") + ")")
        progress.console.print(f"  {result.mode:6s} lr {result.lr:.3g} seed {result.seed}: {done}", highlight=False)

    with progress_bar(console) as progress:
        if jobs > 1 and len(todo) > 1:
            _train_side_by_side(folder, ctx, label, spec, hp, epochs, plan, record, jobs, progress, student.init)
        while todo := plan():
            mode, seed, lr, probe_epochs = todo[0]
            record(_train_and_save(folder, ctx, spec, hp, mode, seed, lr, probe_epochs, epochs, x_test, y_test,
                                   progress, student.init), progress)
    final = body()
    if not path.is_file() or json.loads(path.read_text())["runs"] != final["runs"]:
        save_results(path, final)
    console.print(final_table(label, final, every_view_cached=ctx.cache is not None  # control = ordinary training
                              and ctx.cache.k >= num_views(ctx.data.pad, ctx.data.flip)))
    return final


