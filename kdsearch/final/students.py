"""What final training trains in one folder: a search trial's student, or a hand-written reference scaled
to its size and trained beside it (kdsearch.models.students.references), by the same arms, recipe, epochs,
seeds, T, alpha and lr grid."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from ..measure.costs import count_macs, count_params
from ..models.students.references import REFERENCES, reference, scaled_reference
from ..models.students.registry import build
from ..models.students.spec import StudentSpec
from ..errors import KDSearchError
from ..runs.layout import final_dir, reference_dir
from ..runs.run import Run
from ..search.evaluation.oneshot import saved_subnets
from ..search.inputs import TrialContext
from ..runs.trial_attrs import INHERITED as FINE_TUNED_RUNG, ONESHOT, RUNG as RUNG_ATTR
from .arms import DISTILL_ONLY

INHERITED = "inherited"  # the folder (and setup "init") of a one-shot subnet fine-tuned from its inherited weights


@dataclass
class Student:
    """What final training trains in one folder: a search trial's student, or a hand-written reference
    scaled to its size and trained beside it by the same arms, recipe, seeds and teacher weighting."""

    label: str  # "trial 26", "reference resnet8 for trial 26"
    folder: Path
    spec: StudentSpec
    setup: dict[str, Any]  # what it is ("trial", the spec as stored, "reference"): another value retrains
    record: dict[str, Any]  # results.json's "trial": arch, params, MACs, the search's T, alpha and accuracy
    searched: dict[str, float]  # the trial's T and alpha, which the distilled arm uses unless train is given others
    init: Path | None = None  # a saved student every model starts from (a one-shot subnet's inherited weights)


def inherited_weights(run: Run, numbers: list[int], console: Console | None = None) -> dict[int, Path]:
    """Per one-shot trial, the folder of its subnet as it inherited its supernet's weights (checked); those not
    saved there (a committed run keeps its supernets, not its trials' students) are extracted again. A promoted
    subnet (fine-tuned at the rung) inherits what the subnet it promotes inherited."""
    trials = run.study.get_trials(deepcopy=False)
    sources = {}
    for number in numbers:
        rung = trials[number].user_attrs.get(RUNG_ATTR)
        source = rung["from"] if rung and rung.get(FINE_TUNED_RUNG) else number
        if ONESHOT not in trials[source].user_attrs:
            raise KDSearchError(f"--inherit: trial {source} trained its student from scratch (a per-trial search); "
                                "inherited weights are a one-shot run's")
        sources[number] = source
    folders = saved_subnets(run.run_dir, run.config, {source: StudentSpec.from_json(json.dumps(
        trials[source].user_attrs["spec"])) for source in sources.values()}, console or Console())
    return {number: folders[source] for number, source in sources.items()}


def trial_student(run: Run, ctx: TrialContext, number: int, spec: StudentSpec, init: Path | None = None) -> Student:
    """Trial `number`'s student, from scratch; or fine-tuned from the saved student `init` (a one-shot subnet's
    inherited weights: inherited_weights), in RUN/final/<trial>/inherited/."""
    attrs = run.study.get_trials(deepcopy=False)[number].user_attrs
    rung = attrs.get(RUNG_ATTR)  # a promoted student: its search accuracy is the rung's
    record = ({k: attrs.get(k) for k in ("arch", "params", "macs", "latency_ms", *DISTILL_ONLY)}
              | {"search_val_accuracy": (attrs.get("curve") or [None])[-1],
                 "search_epochs": rung["epochs"] if rung else ctx.cfg.epochs}
              | ({"rung": rung} if rung else {}))
    # the spec as the study stored it (re-serializing would add fields newer code knows, and retrain)
    setup = {"trial": number, "spec": attrs["spec"]}
    searched = {k: float(attrs[k]) for k in DISTILL_ONLY}
    if init is None:
        return Student(f"trial {number}", final_dir(run.run_dir, number), spec, setup, record, searched)
    return Student(f"trial {number} (inherited weights)", final_dir(run.run_dir, number) / INHERITED, spec,
                   {**setup, "init": INHERITED}, record, searched, init)


def reference_student(run: Run, ctx: TrialContext, number: int, trial: Student, name: str) -> Student | None:
    """Reference `name` at the largest width with at most trial `number`'s parameters (None if none fits)."""
    data = ctx.data
    spec = scaled_reference(name, int(trial.record["params"]), in_channels=data.in_channels,
                            num_classes=data.num_classes, image_size=data.image_size, mean=list(data.mean),
                            std=list(data.std))
    if spec is None:
        return None
    model = build(spec)
    record = {"arch": spec.summary(), "params": count_params(model),
              "macs": count_macs(model, (data.in_channels, data.image_size, data.image_size)), "latency_ms": None,
              **trial.searched, "search_val_accuracy": None, "search_epochs": None, "reference": name,
              "for_trial": number, "trial_params": trial.record["params"]}
    return Student(f"reference {name} for trial {number}", reference_dir(run.run_dir, number, name), spec,
                   {"trial": number, "reference": name, "spec": json.loads(spec.to_json())}, record, trial.searched)


def check_references(names: list[str] | None) -> list[str]:
    """The references to train beside each student (None: all of them), each a known name."""
    names = list(REFERENCES) if names is None else list(dict.fromkeys(names))
    for name in names:
        reference(name)  # an unknown name: one line naming the known ones
    return names
