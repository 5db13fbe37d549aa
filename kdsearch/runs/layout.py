"""The run folder: every path kdsearch reads or writes inside it, named in one place.

    RUN/run.json                  study name, storage, resolved config, command, study file
    RUN/study.db                  the default Optuna storage (SQLite)
    RUN/teachers/<key>.*          the prepared teacher, keyed by weights, data and training settings
    RUN/logits/<key>.safetensors  the teacher-logit cache, keyed by teacher, images and views
    RUN/trials/<number>/          each trial's student (spec.json, student.safetensors)
    RUN/test_accuracy.json        test accuracy of the Pareto members, measured once
    RUN/final/<trial>/            final training: results.json and <arm>-lr<lr>-seed<S>/ models
    RUN/final/<trial>/references/<name>/   a hand-written reference scaled to the trial's size, trained beside it
    RUN/export/<trial>/           exports (of the distilled student; RUN/export/<trial>-ce/ etc. for a baseline arm)
    RUN/artifacts/                optuna-dashboard's artifact store
    RUN/notes.md                  hand-written discussion that `kdsearch results` includes
    RUN/.lock                     held by the worker that prepares the study, teacher and cache

One run folder holds one study: a second study name is refused (its trial folders would collide).
"""

from __future__ import annotations

from pathlib import Path


RUN_FILE = "run.json"
STUDY_DB = "study.db"
TEST_FILE = "test_accuracy.json"
RESULTS_FILE = "results.json"
NOTES_FILE = "notes.md"
LOCK_FILE = ".lock"
PARTIAL_SUFFIX = ".partial.pt"  # a final-training model in progress (partial_model_path)
PARTIAL_LOGITS_SUFFIX = ".partial.safetensors"  # a logit cache being built (partial_logits_path)
SPEC_FILE, WEIGHTS_FILE = "spec.json", "student.safetensors"  # a saved student (models.students.io)
STUDENT_FILES = (SPEC_FILE, WEIGHTS_FILE)


def run_file(run_dir: Path) -> Path:
    return Path(run_dir) / RUN_FILE


def default_storage(run_dir: Path) -> str:
    return f"sqlite:///{(Path(run_dir) / STUDY_DB).resolve()}"


def teachers_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "teachers"


def logits_path(run_dir: Path, key: str) -> Path:
    return Path(run_dir) / "logits" / f"{key}.safetensors"


def partial_logits_path(run_dir: Path, key: str) -> Path:
    """What a logit cache build saved so far (training.logit_cache), beside the cache it becomes."""
    return Path(run_dir) / "logits" / f"{key}{PARTIAL_LOGITS_SUFFIX}"


def trial_dir(run_dir: Path, number: int) -> Path:
    return Path(run_dir) / "trials" / f"{number:05d}"


def rung_checkpoint(run_dir: Path, rung: dict) -> Path:
    """The epoch checkpoint of a promoted student's rung training in progress, by the trial it promotes (not
    by its rung trial's number: a rung trial stopped with the session is promoted again as a new trial, which
    continues from it); removed once the rung trial is complete."""
    images = rung["images"] or "all"
    return trial_dir(run_dir, rung["from"]) / f"rung-e{rung['epochs']}-{images}{PARTIAL_SUFFIX}"


def test_file(run_dir: Path) -> Path:
    return Path(run_dir) / TEST_FILE


def final_dir(run_dir: Path, number: int) -> Path:
    return Path(run_dir) / "final" / f"{number:05d}"


def final_results(run_dir: Path, number: int) -> Path:
    return final_dir(run_dir, number) / RESULTS_FILE


def reference_dir(run_dir: Path, number: int, name: str) -> Path:
    """Final training of the hand-written reference `name` scaled to trial `number`'s size."""
    return final_dir(run_dir, number) / "references" / name


def arm_dir(folder: Path, mode: str, seed: int, lr: float) -> Path:
    """A finished final-training model inside a final folder (a trial's or a reference's)."""
    return Path(folder) / f"{mode}-lr{lr:.4g}-seed{seed}"


def arm_partial_path(folder: Path, mode: str, seed: int, lr: float, probe: int | None = None) -> Path:
    """The epoch checkpoint of a final-training model in progress (training.checkpoint); removed once it is kept."""
    name = f"{mode}-lr{lr:.4g}-seed{seed}" + (f"-probe{probe}" if probe else "")
    return Path(folder) / f"{name}{PARTIAL_SUFFIX}"


def model_dir(run_dir: Path, number: int, mode: str, seed: int, lr: float) -> Path:
    return arm_dir(final_dir(run_dir, number), mode, seed, lr)


def partial_model_path(run_dir: Path, number: int, mode: str, seed: int, lr: float, probe: int | None = None) -> Path:
    return arm_partial_path(final_dir(run_dir, number), mode, seed, lr, probe)


def export_dir(run_dir: Path, number: int, arm: str = "kd") -> Path:
    """RUN/export/00020 for the distilled student, RUN/export/00020-ce for a baseline arm of final training."""
    return Path(run_dir) / "export" / (f"{number:05d}" if arm == "kd" else f"{number:05d}-{arm}")


def artifacts_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "artifacts"


def notes_file(run_dir: Path) -> Path:
    return Path(run_dir) / NOTES_FILE


def lock_file(run_dir: Path) -> Path:
    return Path(run_dir) / LOCK_FILE
