"""A one-shot study (`strategy = "oneshot"`): supernets trained once, then each trial evaluates a subnet.

The study file, run folder, objectives, budgets, report, export and `train` are the per-trial search's; what
differs is how a sampled student gets its accuracy. Per family of the space that has a supernet (residual,
inverted; another family is left out with a one-line note), the supernet is the largest subnet of the space
at widths where its thinnest subnets fit the budgets (subnet_space), trained `epochs` epochs by the sandwich
rule with the teacher's cached logits (training.sandwich), saved in RUN/supernets/ and resumable by epoch.
Each trial then draws a subnet (Optuna's sampler proposes the family and, per stage, width, depth, kernel
and expansion), measures its costs, rejects it over budget, and scores it with inherited weights after
batch-norm recalibration (training.subnet_eval): seconds, not minutes. The recalibrated subnet is saved as
the trial's student, so `kdsearch export` exports it and `kdsearch train` retrains it from scratch. The
trials run in the study's own loop (search.trials), in supervised worker processes like any trial (or in
this process with --in-process): the first worker trains the supernets under the run folder's lock, the
others wait and load them.

T, alpha and lr cannot vary per subnet of a shared supernet: they are the space's (its value where
fixed, the middle of a range otherwise), recorded with every trial, and not sampled; nor the head
(no hidden FC layers, no dropout) or plain's batch norm.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from ...config import SPACE_KINDS, StudyConfig, config_from_dict
from ...data.splits import stratified_pick, stratified_subset
from ...errors import KDSearchError
from ...measure.costs import count_macs, count_params
from ...models.students.io import save_student
from ...models.students.registry import build
from ...models.students.space import space_families
from ...models.students.spec import StudentSpec
from ...progress import progress_bar
from ...models.students.supernet import ONESHOT_FAMILIES, SubnetSpace
from ...runs.files import atomic_path
from ...runs.layout import WEIGHTS_FILE, trial_dir
from ...runs.trial_attrs import CURVE, FIRST_PASS, ONESHOT as ONESHOT_ATTR, REPEAT_OF, rejected, repeated
from ...training.checkpoint import Resume
from ...training.distill import Recipe, eval_batch_size, recipe_from
from ...training.memory_format import FORMATS, fast_memory_format
from ...training.sandwich import train_supernet
from ...training.subnet_eval import correct, inherit
from ..budgets import reject_over_budget, within_budgets
from ..inputs import TrialContext, prepare_inputs
from ..workers import run_lock
from .base import Evaluation
from .costs import deployed_costs

WIDTH_FRACTIONS = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)  # a stage's widths, of the largest's
CALIBRATION_IMAGES = 2000  # training images that recalibrate each subnet's batch norm
LAYOUTS = {fmt: name for name, fmt in FORMATS.items()}
FIRST_PASS_IMAGES = 1000  # validation images every subnet is scored on first (recorded; [study] screen: a stop)
SCREEN_MARGIN = 3 * 0.5 / math.sqrt(FIRST_PASS_IMAGES)  # 3 of the first pass's largest binomial standard error


def _values(cfg: StudyConfig, key: str, default: Any = None) -> list:
    """A [space] entry's values: a fixed value, the choices of a choice entry, or every integer of an int range."""
    value = cfg.space.get(key, default)
    if not isinstance(value, list):
        return [value]
    if SPACE_KINDS[key] == "choice":
        return list(value)
    return list(range(int(value[0]), int(value[1]) + 1))


def fixed_hp(cfg: StudyConfig) -> dict[str, float]:
    """T, alpha and lr of every subnet: the space's value, or the middle of its range (geometric on a log scale)."""
    out = {}
    for key in ("temperature", "alpha", "lr"):
        value = cfg.space[key]
        if isinstance(value, list):
            value = math.sqrt(value[0] * value[1]) if SPACE_KINDS[key].endswith("log") else sum(value) / 2
        out[key] = float(value)
    return out


def largest_widths(cfg: StudyConfig, stages: int) -> list[int]:
    if "channels" in cfg.space:
        return [int(max(_values(cfg, "channels")))] * stages
    width, growth = max(_values(cfg, "width")), max(_values(cfg, "growth"))
    return [int(width * growth ** i + 0.5) for i in range(stages)]


def subnet_space(cfg: StudyConfig, data, family: str) -> SubnetSpace:
    """The family's subnets as the study's [space] draws them: its most stages, each with the space's depths
    (convs_per_stage), kernels and (inverted) expansions, and widths that are fractions of the largest's.

    The budgets bound the subnets a trial may score (one over them is rejected and redrawn, as a per-trial
    student is), not the supernet: its widths are the widest (at most the space's) at which the thinnest
    build of the space (every stage at its fewest blocks, smallest kernel and expansion) still fits the
    params and MACs budgets at full width. Deeper, larger-kernel or wider-expansion subnets then fit at a
    fraction of those widths. Fitting the largest subnet itself to a 20,000-params budget on digits left
    the default space's four stages 2 to 20 channels wide, and its best subnet 62.5% accurate where
    per-trial students of that size pass 95% (docs/search.md, "One-shot search")."""
    stages = max(_values(cfg, "stages"))
    depths = tuple(sorted(set(_values(cfg, "convs_per_stage"))))
    kernels = tuple(sorted(set(_values(cfg, "kernel_size"))))
    expands = tuple(sorted({e for e in _values(cfg, "expand_ratio", [2, 6]) if e >= 2})) or (2,)
    base = StudentSpec(data.in_channels, data.num_classes, data.image_size, [1] * stages, mean=list(data.mean),
                       std=list(data.std), family=family)
    top = largest_widths(cfg, stages)
    shape = (data.in_channels, data.image_size, data.image_size)

    def space_at(scale: float) -> SubnetSpace:
        widths = tuple(tuple(sorted({max(1, round(w * scale * f)) for f in WIDTH_FRACTIONS})) for w in top)
        return SubnetSpace(base, widths, depths, kernels, expands)

    def thinnest(space: SubnetSpace) -> StudentSpec:  # full width, the fewest blocks, smallest kernel and expansion
        n = space.stages
        return space.spec([max(w) for w in space.widths], [min(depths)] * n, [min(kernels)] * n, [min(expands)] * n)

    scale = 1.0
    while max(top) * scale >= 1:
        candidate = space_at(scale)
        if within_budgets(cfg, build(thinnest(candidate)), shape):
            return candidate
        scale *= 0.9
    raise KDSearchError(f"one-shot: no {family} subnet of the space fits the budgets")


def oneshot_families(cfg: StudyConfig, console: Console) -> list[str]:
    families = space_families(cfg.space)
    left = [f for f in families if f not in ONESHOT_FAMILIES]
    if left:
        console.print(f"[yellow]one-shot: the {', '.join(left)} family has no supernet (its layers cannot be shared "
                      f"across depths): left out of this study[/]", highlight=False)
    kept = [f for f in families if f in ONESHOT_FAMILIES]
    if not kept:
        raise KDSearchError(f"one-shot search needs a family with a supernet ({', '.join(ONESHOT_FAMILIES)}) in "
                            f"[space] family, got {', '.join(families)}")
    return kept


def supernet_path(run_dir: Path, family: str) -> Path:
    return Path(run_dir) / "supernets" / f"{family}.pt"


def supernet_recipe(cfg: StudyConfig) -> Recipe:
    """How every supernet of the study trains: the recipe at the study's epochs and its fixed T, alpha and lr."""
    hp = fixed_hp(cfg)
    return recipe_from(cfg.train, cfg.epochs, hp["lr"], hp["temperature"], hp["alpha"])


def supernet_key(ctx: TrialContext, space: SubnetSpace) -> dict[str, Any]:
    """What a saved supernet must match to be used: its space, teacher, recipe, logit cache and images."""
    return {"space": repr(space), "teacher": ctx.teacher.key, "recipe": repr(supernet_recipe(ctx.cfg)),
            "cache": ctx.cache.path.stem if ctx.cache is not None else None, "images": len(ctx.train)}


def load_supernet(ctx: TrialContext, family: str, run_dir: Path) -> tuple[SubnetSpace, torch.nn.Module] | None:
    """`family`'s supernet as run folder `run_dir` saved it for this study, teacher and views; None if it has none."""
    space = subnet_space(ctx.cfg, ctx.data, family)
    saved = _load(supernet_path(run_dir, family), supernet_key(ctx, space))
    if saved is None:
        return None
    supernet = build(space.largest())
    supernet.load_state_dict(saved["state"])
    return space, supernet.to(ctx.device).eval()


def prepare_supernets(ctx: TrialContext, console: Console) -> dict[str, tuple[SubnetSpace, torch.nn.Module]]:
    """Each family's supernet: loaded when trained already (same space, teacher and views), else trained now
    (progress bar; an interruption continues from the last finished epoch)."""
    cfg, out = ctx.cfg, {}
    for family in oneshot_families(cfg, console):
        loaded = load_supernet(ctx, family, cfg.run_path)
        if loaded is None:  # one process trains it; another worker of the study waits, then loads it
            with run_lock(cfg.run_path, console, f"training the {family} supernet"):
                loaded = load_supernet(ctx, family, cfg.run_path)
                if loaded is None:
                    space = subnet_space(cfg, ctx.data, family)
                    supernet = _train(ctx, space, supernet_path(cfg.run_path, family), supernet_key(ctx, space),
                                      supernet_recipe(cfg), family, console)
                    loaded = space, supernet.to(ctx.device).eval()
        out[family] = loaded
    return out


def calibration_images(ctx: TrialContext) -> torch.Tensor:
    """The training images that recalibrate every subnet's batch norm: a fixed stratified sample (the study's seed)."""
    return stratified_subset(ctx.train, min(CALIBRATION_IMAGES, len(ctx.train)), ctx.cfg.seed).x.to(ctx.device)


def _train(ctx: TrialContext, space: SubnetSpace, path: Path, key: dict[str, Any], recipe: Recipe, family: str,
           console: Console) -> torch.nn.Module:
    """Train one family's supernet (resumable by epoch) and save it atomically with its key and each epoch's
    seconds (`epoch_seconds`: the search's cost, kept across interruptions in a file beside it)."""
    cfg = ctx.cfg
    largest = space.largest()
    console.print(f"one-shot: training the {family} supernet ({largest.summary()}, "
                  f"{count_params(build(largest)):,} params) for {cfg.epochs} epochs by the sandwich rule",
                  highlight=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    resume = Resume(path.with_suffix(".partial.pt"), key, every_s=0.0)
    times_path = path.with_suffix(".seconds.json")
    try:  # the epochs an interrupted training finished before
        times = json.loads(times_path.read_text())
    except (OSError, ValueError):
        times = {}

    def record(epoch: int, loss: float, seconds: float) -> None:
        times[str(epoch)] = seconds
        times_path.write_text(json.dumps(times))

    with progress_bar(console) as progress:
        supernet = train_supernet(space, ctx.x_train, ctx.y_train, recipe, pad=ctx.data.pad, flip=ctx.data.flip,
                                  seed=cfg.seed, cache=ctx.cache, teacher=ctx.teacher.model,
                                  progress=progress, resume=resume, on_epoch=record)
    seconds = [times[str(e)] for e in range(1, recipe.epochs + 1) if str(e) in times]
    with atomic_path(path) as tmp:  # a supernet half-written is never loaded
        torch.save({"key": key, "state": supernet.state_dict(), "epoch_seconds": seconds}, tmp)
    resume.path.unlink(missing_ok=True)
    times_path.unlink(missing_ok=True)
    return supernet


def training_seconds(path: Path) -> float | None:
    """The seconds a saved supernet's training took (its epochs' sum), None when it did not record them."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  (missing or damaged)
        return None
    seconds = saved.get("epoch_seconds") if isinstance(saved, dict) else None
    return float(sum(seconds)) if seconds else None


def _load(path: Path, key: dict[str, Any]) -> dict | None:
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  (damaged: trained again)
        return None
    return saved if saved.get("key") == key else None


def saved_subnets(run_dir: Path, config: dict[str, Any], specs: dict[int, StudentSpec],
                  console: Console) -> dict[int, Path]:
    """Each trial's subnet folder (trial number -> spec); a subnet not saved there is saved again, extracted from
    the run's supernet and recalibrated as the trial did: a committed run keeps its supernets, not every scored
    subnet's weights. The run's own inputs (its config as stored: teacher, views and images decide the
    supernet's key) are prepared, and each family's supernet loaded, once and only if a subnet is missing."""
    folders = {number: trial_dir(Path(run_dir), number) for number in specs}
    missing = [number for number, folder in folders.items() if not (folder / WEIGHTS_FILE).is_file()]
    if not missing:
        return folders
    cfg = config_from_dict(config)
    cfg.run_dir = str(run_dir)
    ctx = prepare_inputs(cfg, console)
    calib = calibration_images(ctx)
    supernets: dict[str, torch.nn.Module] = {}
    for number in missing:
        spec = specs[number]
        try:
            student = inherited_subnet(ctx, run_dir, spec, supernets, calib)
        except KDSearchError as exc:
            raise KDSearchError(f"trial {number}'s subnet was not saved and {exc}") from None
        console.print(f"trial {number}: its subnet extracted again from the {spec.family} supernet (not saved in this "
                      "run folder)", highlight=False)
        save_student(folders[number], student, spec)
    return folders


def inherited_subnet(ctx: TrialContext, run_dir: Path, spec: StudentSpec, supernets: dict[str, torch.nn.Module],
                     calib: torch.Tensor) -> torch.nn.Module:
    """Subnet `spec` with the weights it inherits from its family's supernet in `run_dir` (the one saved for
    `ctx`'s study, teacher and views; loaded once per family into `supernets`), batch norm recalibrated on `calib`."""
    if spec.family not in supernets:
        loaded = load_supernet(ctx, spec.family, Path(run_dir))
        if loaded is None:
            raise KDSearchError(f"{supernet_path(run_dir, spec.family)} is missing or holds a supernet of another "
                                "study, teacher or views")
        supernets[spec.family] = loaded[1]
    return inherit(supernets[spec.family], spec, calib)


def describe(ctx: TrialContext, trials: int, console: Console, study: optuna.Study | None = None) -> None:
    """What a one-shot run would do, for --dry-run (no per-trial training to time)."""
    console.print(f"one-shot: a supernet per family trains {ctx.cfg.epochs} epochs by the sandwich rule (each step "
                  f"the largest, the smallest and two random subnets: several trials' training each epoch), then "
                  f"{trials} subnets are evaluated with inherited weights, seconds each on a CPU", highlight=False)


def suggest_subnet(trial: optuna.Trial, spaces: dict[str, SubnetSpace]) -> StudentSpec:
    """Define-by-run: the family, then per stage its width, depth, kernel and (inverted) expansion."""
    family = trial.suggest_categorical("family", list(spaces)) if len(spaces) > 1 else next(iter(spaces))
    s = spaces[family]
    n = s.stages
    widths = [trial.suggest_categorical(f"{family}_width_{i}", list(s.widths[i])) for i in range(n)]
    depths = [trial.suggest_categorical(f"depth_{i}", list(s.depths)) for i in range(n)]
    kernels = [trial.suggest_categorical(f"kernel_{i}", list(s.kernels)) for i in range(n)]
    expands = ([trial.suggest_categorical(f"expand_{i}", list(s.expands)) for i in range(n)]
               if family == "inverted" else None)
    return s.spec(widths, depths, kernels, expands)


@dataclass(frozen=True)
class Validation:
    """The validation split as two passes: a stratified first `FIRST_PASS_IMAGES` and the rest (together all of
    it, each image once); on a split under twice that, one pass (an empty rest is never scored)."""
    x_first: torch.Tensor
    y_first: torch.Tensor
    x_rest: torch.Tensor
    y_rest: torch.Tensor


def split_validation(x: torch.Tensor, y: torch.Tensor, seed: int) -> Validation:
    if len(y) < 2 * FIRST_PASS_IMAGES:
        return Validation(x, y, x[:0], y[:0])
    first = torch.zeros(len(y), dtype=torch.bool)
    first[torch.from_numpy(stratified_pick(y.cpu().numpy(), FIRST_PASS_IMAGES, seed))] = True
    first = first.to(y.device)
    return Validation(x[first], y[first], x[~first], y[~first])


def scored_before(trial: optuna.Trial) -> int | None:
    """The earlier trial that scored (or stopped after its first pass) the subnet `trial` proposes, if any:
    samplers propose a subnet again, more often as they converge (Optuna's FAQ answers such repeats with
    TrialPruned, which also steers the sampler away from them)."""
    for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if t.number != trial.number and t.params == trial.params and not (rejected(t) or repeated(t)):
            return t.number
    return None


def dominating(scored: Iterable[FrozenTrial], objectives: list[str], costs: dict[str, float],
               accuracy: float) -> int | None:
    """Of the `scored` (complete) trials, one at most as costly in every cost objective and more accurate than
    `accuracy`, if any: the screening rule (also replayed on a finished run: `python -m benchmarks subnet-eval
    --replay RUN`)."""
    i = objectives.index("accuracy")
    for t in scored:
        if t.values[i] > accuracy and all(t.values[j] <= costs[o] for j, o in enumerate(objectives) if j != i):
            return t.number
    return None


def evaluate_trial(trial: optuna.Trial, ctx: TrialContext, supernets: dict, x_calib: torch.Tensor,
                   val: Validation, layouts: dict[str, torch.memory_format]) -> tuple[float, ...]:
    """One trial: a subnet (one proposed before is not scored again), its costs (rejected over budget), its
    accuracy with inherited weights, in two passes over the validation images; the student saved."""
    cfg = ctx.cfg
    spec = suggest_subnet(trial, {f: s for f, (s, _) in supernets.items()})
    trial.set_user_attr("arch", spec.summary())
    earlier = scored_before(trial)
    if earlier is not None:
        trial.set_user_attr(REPEAT_OF, earlier)
        raise optuna.TrialPruned(f"the subnet of trial {earlier}: not scored again")
    space, supernet = supernets[spec.family]
    hp = fixed_hp(cfg)
    model = build(spec)
    shape = (ctx.data.in_channels, ctx.data.image_size, ctx.data.image_size)
    costs = {"params": count_params(model), "macs": count_macs(model, shape)}
    for key, value in {"spec": json.loads(spec.to_json()), **hp, **costs,
                       ONESHOT_ATTR: {"calibration_images": len(x_calib), "supernet_epochs": cfg.epochs,
                                      "layout": LAYOUTS[layouts[spec.family]]}}.items():
        trial.set_user_attr(key, value)
    reject_over_budget(trial, cfg, costs)
    deployed_costs(trial, cfg, model, shape, costs, ctx.device)
    start = time.perf_counter()
    student = inherit(supernet, spec, x_calib, layouts[spec.family])
    hits = correct(student, val.x_first, val.y_first)
    if len(val.y_rest):  # a first pass, recorded; with [study] screen a subnet that cannot reach the front stops
        first = hits / len(val.y_first)
        trial.set_user_attr(FIRST_PASS, {"images": len(val.y_first), "accuracy": first,
                                         "seconds": time.perf_counter() - start})  # recalibration included
        scored = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if cfg.screen else []
        better = dominating(scored, cfg.objectives, costs, first + SCREEN_MARGIN)
        if better is not None:
            trial.set_user_attr("eval_seconds", time.perf_counter() - start)
            raise optuna.TrialPruned(f"first pass {first:.2%} on {len(val.y_first):,} images: trial {better} is "
                                     f"as small and more accurate by over {SCREEN_MARGIN:.1%}")
        hits += correct(student, val.x_rest, val.y_rest)
    acc = hits / (len(val.y_first) + len(val.y_rest))
    trial.set_user_attr(CURVE, [acc])
    trial.set_user_attr("eval_seconds", time.perf_counter() - start)
    save_student(trial_dir(cfg.run_path, trial.number), student, spec)
    values = {"accuracy": acc, **costs}
    return tuple(float(values[o]) for o in cfg.objectives)


def prepare(ctx: TrialContext, console: Console) -> Evaluation:
    """Train the supernets (or load them: trained by the first process of the study, or by a run before), and
    the training images that recalibrate each subnet's batch norm; then each trial evaluates a subnet."""
    supernets = prepare_supernets(ctx, console)
    calib = calibration_images(ctx)
    shape = (ctx.data.in_channels, ctx.data.image_size, ctx.data.image_size)
    # each family's subnets are scored in the layout its supernet runs faster in here (timed once, kept on disk)
    layouts = {family: fast_memory_format(supernet, ctx.device, shape, eval_batch_size(ctx.device))
               for family, (_, supernet) in supernets.items()}
    val = split_validation(ctx.x_val, ctx.y_val, ctx.cfg.seed)
    return Evaluation(lambda trial: evaluate_trial(trial, ctx, supernets, calib, val, layouts), trains=False)
