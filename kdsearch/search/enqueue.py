"""Known students evaluated first (--enqueue): loaded, completed with the data's shape, queued once.

An entry is a spec with its T, alpha and lr, or a hand-written reference by name
(models.students.references), {"reference": "resnet8"}, at its published width, at `"width": W`
or scaled to `"max_params": N`; a reference's T, alpha and lr, where the entry leaves them out,
are sampled as any trial's. A trial of a reference is the reference's, not the search's: picking
rules, `--front` and the results' comparison of search students leave it out."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import optuna

from ..data.splits import DataSplits
from ..errors import KDSearchError
from ..models.students.references import reference, reference_spec, scaled_reference
from ..models.students.registry import build
from ..models.students.spec import StudentSpec
from ..runs.trial_attrs import ENQUEUED as ENQUEUED_ATTR

HP = ("temperature", "alpha", "lr")


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
        if isinstance(e, dict) and "reference" in e:
            reference(e["reference"])  # a known name
            if "width" in e and "max_params" in e:
                raise KDSearchError(f"--enqueue {path}: entry {i}: give a reference's width or max_params, not both")
        missing = [k for k in ("spec", *HP) if not isinstance(e, dict) or (k not in e and "reference" not in e)]
        if missing:
            raise KDSearchError(f"--enqueue {path}: entry {i} lacks {', '.join(missing)}")
        if not 0 <= float(e.get("alpha", 0)) <= 1 or float(e.get("temperature", 1)) <= 0 or float(e.get("lr", 1)) <= 0:
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


def reference_entry(e: dict[str, Any], data: DataSplits) -> dict[str, Any]:
    """A reference entry with its spec for the data (the width given, scaled to max_params, or published)."""
    shape = dict(in_channels=data.in_channels, num_classes=data.num_classes, image_size=data.image_size,
                 mean=list(data.mean), std=list(data.std))
    if "max_params" in e:
        spec = scaled_reference(e["reference"], int(e["max_params"]), **shape)
        if spec is None:
            raise KDSearchError(f"reference {e['reference']}: no width has at most {e['max_params']} parameters")
    else:
        spec = reference_spec(e["reference"], e.get("width"), **shape)
    return {**e, "spec": json.loads(spec.to_json())}


def enqueue_students(study: optuna.Study, entries: list[dict[str, Any]], data: DataSplits) -> int:
    """Queue each known student once (a rerun does not queue it again); returns how many were new."""
    done = {t.user_attrs[ENQUEUED_ATTR].get("key") for t in study.get_trials(deepcopy=False)
            if ENQUEUED_ATTR in t.user_attrs}  # (a promoted student's rung trial has no key)
    new = 0
    for e in entries:
        if "reference" in e:
            e = reference_entry(e, data)
        spec_for_data(e["spec"], data)
        key = hashlib.sha256(json.dumps(e, sort_keys=True).encode()).hexdigest()[:12]
        if key not in done:
            study.enqueue_trial({}, user_attrs={ENQUEUED_ATTR: {**e, "key": key}})
            new += 1
    return new
