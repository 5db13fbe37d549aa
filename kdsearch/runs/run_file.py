"""The run folder and its run.json: made once, owned by one study, the first command kept.

runs/ sits below config/ (config reads models/, which saves students through runs/), so this module
takes the study's settings as anything with the few fields it reads (`RunSettings`; a
config.StudyConfig is one), not by importing config."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any, Protocol

from ..errors import KDSearchError
from .files import new_folders, write_text_atomic  # noqa: F401  (new_folders: the runner's)
from .layout import STUDY_DB, run_file
from .provenance import code_version, command_line


class RunSettings(Protocol):
    """What run.json and the ownership check read of a study's settings (config.StudyConfig has them)."""

    name: str

    @property
    def run_path(self) -> Path: ...

    @property
    def storage_url(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


def write_run_file(cfg: RunSettings, study_file: Path | None = None) -> None:
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


def check_not_a_file(path: Path) -> None:
    """A run folder path that names a file is one line (before anything would be made there)."""
    if path.exists() and not path.is_dir():
        raise KDSearchError(f"run folder {path} is a file, not a folder: give --run-dir a new folder or a run's folder")


def make_run_folder(path: Path) -> None:
    """The run folder, made when missing; a path that is (or lies under) a file is one line."""
    check_not_a_file(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise KDSearchError(f"run folder {path} cannot be made: part of its path is a file") from None
    except PermissionError:
        raise KDSearchError(f"run folder {path} cannot be made: permission denied") from None


def check_run_folder(cfg: RunSettings) -> None:
    """One run folder holds one study: another study's trial folders would overwrite its files."""
    path = run_file(cfg.run_path)
    try:
        owner = json.loads(path.read_text()).get("study_name") if path.is_file() else None
    except ValueError:
        owner = None  # a damaged run.json is rewritten below
    if owner and owner != cfg.name:
        raise KDSearchError(f"run folder {cfg.run_path} holds study {owner!r}, not {cfg.name!r}: "
                            "give this study its own --run-dir")


WORK = ("teachers", "logits", "trials", "final", "export", "notes.md")  # what a refused run must never remove


def forget_refused_run(created: Path | None, run_path: Path) -> None:
    """Remove the folders a refused command made (`created`, from new_folders before it made them) when they
    hold nothing finished: no teacher, logit cache, trial, final model or export, and no trial in the
    folder's study.db. A refused run then leaves nothing behind; one that did any work keeps it all."""
    if created is None or not created.is_dir():
        return
    run_path = Path(run_path)
    if any(_holds_a_file(run_path / name) for name in WORK):
        return
    db = run_path / STUDY_DB
    if db.is_file():
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
                if con.execute("SELECT COUNT(*) FROM trials").fetchone()[0]:
                    return
        except sqlite3.Error:
            pass  # no trials table: a study that never got as far
    shutil.rmtree(created, ignore_errors=True)


def _holds_a_file(path: Path) -> bool:
    return path.is_file() or (path.is_dir() and any(p.is_file() for p in path.rglob("*")))
