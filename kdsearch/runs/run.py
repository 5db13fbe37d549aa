"""Opening a run: its study, its folder and its config, from the folder's run.json or a storage URL."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from ..errors import KDSearchError
from .layout import RUN_FILE, default_storage, run_file
from .storage import make_storage


@dataclass
class Run:
    """A study and, when known, its run folder (weights, stored test accuracies, the report)."""

    study: optuna.Study
    run_dir: Path | None
    config: dict[str, Any]


def open_run(run_dir: Path | None = None, storage: str | None = None, study_name: str | None = None) -> Run:
    """A run folder (its run.json), or a storage URL and study name (the folder then comes from the config)."""
    info: dict[str, Any] = {}
    if run_dir is not None:
        path = run_file(run_dir)
        if not path.is_file():
            raise KDSearchError(f"{run_dir} is not a kdsearch run folder (no {RUN_FILE})")
        try:
            info = json.loads(path.read_text())
        except ValueError as exc:
            raise KDSearchError(f"{path} is damaged ({exc}); `kdsearch run` with the same settings rewrites it") from None
    elif storage is None:
        raise KDSearchError("give a run folder, or --storage URL and --study-name NAME")
    if storage is None and run_dir is not None and not (info.get("config") or {}).get("storage"):
        # the default SQLite file of this folder, wherever the folder now is (copied, cloned, moved)
        storage = default_storage(run_dir)
    storage = storage or info["storage"]
    study_name = study_name or info.get("study_name")
    if not study_name:
        raise KDSearchError("--storage needs --study-name")
    try:
        study = optuna.load_study(study_name=study_name, storage=make_storage(storage))
    except KeyError:
        raise KDSearchError(f"no study named {study_name!r} in {storage}") from None
    config = info.get("config") or study.user_attrs.get("config") or {}
    if run_dir is None and config:
        guess = Path(config["run_dir"]) if config.get("run_dir") else Path("runs") / config.get("name", study_name)
        run_dir = guess if run_file(guess).is_file() else None
    return Run(study=study, run_dir=Path(run_dir) if run_dir is not None else None, config=config)
