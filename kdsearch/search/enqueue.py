"""Known students evaluated first (--enqueue): loaded, completed with the data's shape, queued once."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import optuna

from ..data.splits import DataSplits
from ..errors import KDSearchError
from ..models.students.registry import build
from ..models.students.spec import StudentSpec


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
