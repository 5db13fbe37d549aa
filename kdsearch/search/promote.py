"""Promotion: the best few students of each size band train again at a longer rung.

A short trial (3 epochs on a subset) rewards students that learn fast, not those that end well: among
students of about the same size its ranking is close to chance (BENCHMARKS.md, "Search fidelity"). So
once the search has its trials, the `promote` most accurate students of each size band (parameter counts
within a factor of 2: bands [2^k, 2^(k+1))) and, by default, of each family in it train again from
scratch at the rung, `promote_epochs` epochs on `promote_images` training images (0: all), each as a new
trial of the study that records which trial it promotes. The front is then read at the highest rung: the
promoted students compete with each other only, and the pruner never compares a rung's curves with the
short trials' (a rung trial is not pruned). Rung trials do not count toward `trials`. Per family,
because short trials misjudge families as a whole: on CIFAR-10 at about 3,000 parameters a plain student
led 10,000 images x 3 epochs and a MobileNetV2-style one led 10 epochs on all images (BENCHMARKS.md,
"Search fidelity", the bands table), and the v3 CIFAR-10 search, promoting by band alone, promoted only
plain students; `promote_by = "band"` compares every family's students in a band at once.

In a one-shot study a promoted subnet is fine-tuned from the weights it inherited instead (rung
`inherited`): on CIFAR-10 three epochs of that ranked subnets within size bands at Kendall 0.87 against
10 epochs from scratch, where their inherited-weight scores ranked them no better than size (0.73) and 3
epochs from scratch at 0.80 (BENCHMARKS.md, "One-shot search on CIFAR-10").

Promotion runs in the `kdsearch run` process, after the workers' trials, one student at a time (a
failing student fails its trial alone); rerunning the command promotes what is missing.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import defaultdict

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.markup import escape

from ..config import StudyConfig
from ..models.students.spec import StudentSpec
from ..progress import progress_bar
from ..runs.provenance import command_line
from ..runs.trial_attrs import COMMAND, INHERITED, RESUMED_AT, RUNG as RUNG_ATTR, STOPPED, is_reference, rung_of
from .enqueue import ENQUEUED_ATTR
from .estimate import estimate_training
from .evaluation.oneshot import saved_subnets
from .evaluation.pertrial import train_trial
from .inputs import prepare_inputs
from .workers import ERROR_ATTR, heartbeat


def size_band(params: float) -> int:
    """The band of students within a factor of 2 of each other in parameters: [2^k, 2^(k+1))."""
    return int(math.floor(math.log2(max(params, 1))))


def searched(trial: FrozenTrial) -> bool:
    """A complete, feasible short trial of the search's own (not a rung trial, not a hand-written reference)."""
    return (trial.state == TrialState.COMPLETE and not rung_of(trial) and not is_reference(trial.user_attrs)
            and all(v <= 0 for v in trial.constraints.values()))


def to_promote(study: optuna.Study, per_band: int, rung: dict, by: str = "family") -> list[FrozenTrial]:
    """The `per_band` most accurate searched trials of each size band (of each family in it, `by` "family")
    that this rung has not trained yet, smallest band first. A promotion whose process stopped (killed, or the
    session ended) is tried again, continuing from its last epoch (pertrial.train_trial); one that failed by an
    error of its own is tried once more."""
    trials = study.get_trials(deepcopy=False)
    at_rung = [(r["from"], t.state, t.user_attrs.get(STOPPED)) for t in trials
               if (r := rung_of(t)) and (r["epochs"], r["images"]) == (rung["epochs"], rung["images"])]
    failed = [n for n, state, stopped in at_rung if state == TrialState.FAIL and not stopped]
    done = {n for n, state, _ in at_rung if state in (TrialState.COMPLETE, TrialState.RUNNING) or failed.count(n) >= 2}
    bands: dict[tuple[int, str], list[FrozenTrial]] = defaultdict(list)
    for t in trials:
        if searched(t):
            family = t.user_attrs["spec"].get("family", "plain") if by == "family" else ""
            bands[size_band(t.user_attrs["params"]), family].append(t)
    best = [t for band in sorted(bands)
            for t in sorted(bands[band], key=lambda t: (-t.values[0], t.number))[:per_band]]
    return [t for t in best if t.number not in done]


def rung_config(cfg: StudyConfig) -> StudyConfig:
    """The study's settings for its rung: the rung's epochs and images, no pruning."""
    out = cfg.model_copy(deep=True)
    out.epochs = cfg.promote_epochs
    out.data.subset = cfg.promote_images
    out.pruner.name = "none"
    return out


def promote(cfg: StudyConfig, study: optuna.Study, console: Console) -> list[int]:
    """Train the students to promote at the rung (each a new trial); returns the new trials' numbers."""
    rung = {"epochs": cfg.promote_epochs, "images": cfg.promote_images}
    if cfg.strategy == "oneshot":  # fine-tuned from the subnet's inherited weights (pertrial.train_trial)
        rung[INHERITED] = True
    chosen = to_promote(study, cfg.promote, rung, cfg.promote_by)
    if cfg.promote <= 0 or not chosen:
        return []
    images = f"{cfg.promote_images:,} images" if cfg.promote_images else "all training images"
    of = " and family" if cfg.promote_by == "family" else ""
    start = " from their inherited weights" if rung.get(INHERITED) else ""
    console.print(f"promoting the {cfg.promote} most accurate student(s) of each size band{of} (within 2x in params): "
                  f"trial(s) {', '.join(str(t.number) for t in chosen)}, {cfg.promote_epochs} epochs on {images} "
                  f"each{start}", highlight=False)
    if rung.get(INHERITED):  # the subnets' inherited weights (a committed run keeps only its supernets)
        saved_subnets(cfg.run_path, cfg.to_dict(), {t.number: StudentSpec.from_json(json.dumps(t.user_attrs["spec"]))
                                                    for t in chosen}, console)
    ctx = prepare_inputs(rung_config(cfg), console)
    numbers = []
    for source in chosen:
        estimate_training(ctx, StudentSpec.from_json(json.dumps(source.user_attrs["spec"])),
                          source.user_attrs["lr"], 1, cfg.promote_epochs, 1, console)
        attrs = source.user_attrs
        known = attrs.get(ENQUEUED_ATTR) or {}
        trial = study.ask()
        trial.set_user_attr(RUNG_ATTR, {**rung, "from": source.number})
        trial.set_user_attr(COMMAND, command_line())  # may differ from the search's (a --promote added later)
        trial.set_user_attr(ENQUEUED_ATTR, {**known, "spec": attrs["spec"],
                                            **{k: attrs[k] for k in ("temperature", "alpha", "lr")}})
        numbers.append(trial.number)
        try:
            with heartbeat(trial), progress_bar(console) as progress:
                values = train_trial(trial, dataclasses.replace(ctx, progress=progress))
        except Exception as exc:  # this student fails alone; the others are promoted
            trial.set_user_attr(ERROR_ATTR, f"{type(exc).__name__}: {exc}"[:500])
            study.tell(trial, state=TrialState.FAIL)
            console.print(f"[red]rung trial {trial.number} (trial {source.number}) failed: {escape(str(exc))}[/]",
                          highlight=False)
            continue
        study.tell(trial, values)
        resumed = study.get_trials(deepcopy=False)[trial.number].user_attrs.get(RESUMED_AT)
        console.print(f"rung trial {trial.number:3d} (trial {source.number}) val {values[0]:.2%} "
                      f"(search {source.values[0]:.2%}) {attrs['params']:>9,} params  {attrs['arch']}"
                      + (f"  (continued from epoch {resumed})" if resumed else ""), highlight=False)
    return numbers
