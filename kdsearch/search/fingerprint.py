"""The resume guard: a study resumes only with the settings that change what its trials mean.

Which settings those are is said where each is defined (CHANGES_TRIALS in config.schema); others
(trials, timeout, threads, device, storage, paths) may change between runs. The seed and the sampler
are guarded too: the seed decides the validation split, the training subset and the teacher's and
logit cache's keys, so a study resumed under another seed would mix two experiments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna

from ..config import LEGACY_STUDY, LEGACY_TRAIN, StudyConfig, TrainConfig, trial_meaning_keys
from ..errors import KDSearchError
from ..models.students.space import effective_space


MEANING = tuple(trial_meaning_keys())  # dotted keys: "epochs", "data.subset", ..., "pruner", "space"
FINGERPRINT_ATTR = "fingerprint"
LATER_GUARDED = ("seed", "sampler")  # [study] settings guarded since 0.1.0: older fingerprints lack them
# the pruner settings each pruner reads: the others cannot change what its trials mean (with `none`, a
# study resumed under the settings chosen by replaying it is the same study)
PRUNER_READS = {"none": (), "median": ("warmup_epochs", "min_trials", "rungs"),
                "asha": ("warmup_epochs", "eta", "min_trials", "rungs"),
                "moasha": ("warmup_epochs", "eta", "min_trials", "rungs"),
                "pareto": ("warmup_epochs", "margin", "rungs")}


def effective_pruner(pruner: dict[str, Any]) -> dict[str, Any]:
    """The pruner's name, checks per epoch (what trials record) and the settings that pruner reads."""
    reads = PRUNER_READS.get(pruner.get("name"), tuple(pruner))
    return {k: v for k, v in pruner.items() if k in ("name", "checks_per_epoch") or k in reads}


def fingerprint(cfg: StudyConfig) -> dict[str, Any]:
    """The settings in MEANING, as JSON values (a checkpoint by its file name: folders may move)."""
    values = cfg.to_dict()
    out = {}
    for dotted in MEANING:
        section, _, key = dotted.rpartition(".")
        value = (values[section] if section else values)[key]
        out[dotted] = Path(value).name if dotted == "teacher.weights" and value else value
    out["space"] = effective_space(out["space"])  # a space stored before a key existed compares as it ran
    out["pruner"] = effective_pruner(out["pruner"])
    return json.loads(json.dumps(out))


def check_resume(study: optuna.Study, cfg: StudyConfig) -> None:
    """Refuse to add trials under other settings than the study's first ones, naming each difference."""
    stored, now = study.user_attrs.get(FINGERPRINT_ATTR), fingerprint(cfg)
    if stored is None:
        return
    legacy = StudyConfig(**LEGACY_STUDY)
    legacy.train = TrainConfig(**LEGACY_TRAIN)
    # settings guarded since the study began: the values it ran with (seed and sampler from its recorded config)
    ran = study.user_attrs.get("config") or {}
    stored = {**fingerprint(legacy), **{k: ran[k] for k in LATER_GUARDED if k in ran}, **stored}
    stored["space"] = json.loads(json.dumps(effective_space(stored.get("space", {}))))
    stored["pruner"] = effective_pruner(stored["pruner"])
    diff = [f"{k} {json.dumps(stored.get(k))} (now {json.dumps(now.get(k))})" for k in now if stored.get(k) != now.get(k)]
    if diff:
        raise KDSearchError(f"study {cfg.name!r} was run with other settings: {'; '.join(diff)}. Resume with the "
                            "original settings, or start another study (--study-name or --run-dir)")
