"""Export a chosen student: spec JSON, weights (safetensors) and ONNX, checked against PyTorch.

An exported folder stands alone: `load_student(folder)` rebuilds the PyTorch model from
spec.json + student.safetensors, student.onnx runs anywhere ONNX Runtime does, and MODEL_CARD.md
says what the model is, how it was made and how well it does (export.model_card). Both take
float32 images in [0, 1], N x C x H x W (normalization is inside the model), and return
logits. The ONNX file is verified at export: ONNX Runtime's logits on a batch of images must
match PyTorch's, or the export fails.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..analysis.holdout import load_test_accuracies
from ..errors import KDSearchError, disk_full, disk_full_error
from ..final import DISTILL_ONLY, MODES, chosen_trial
from ..models.students.io import load_student
from ..runs.files import temp_folder, write_text_atomic
from ..runs.layout import SPEC_FILE, STUDENT_FILES, WEIGHTS_FILE, export_dir, final_results, model_dir, trial_dir
from ..runs.run import Run
from ..runs.trial_attrs import CURVE, LATENCY_MS
from .int8 import Int8Inputs, int8_files, int8_inputs
from .model_card import CARD_FILE, card_sources, model_card
from .onnx_file import ONNX_FILE, verify_onnx, write_onnx


INFO_FILE = "export.json"


@dataclass
class Exported:
    folder: Path
    source: str  # "search" or "final"
    max_abs_diff: float
    info: dict[str, Any]


def export_student(source: Path, out: Path, info: dict[str, Any], opset: int = 18,
                   int8: Int8Inputs | None = None, card: Callable[[dict[str, Any]], str] | None = None) -> Exported:
    """Copy spec and weights from `source`, write and verify student.onnx, and describe it in export.json
    (and, given `card`, in MODEL_CARD.md: card(export.json's contents) is its text).

    Written into a temporary folder first and swapped in at the end: a failed export leaves no half
    folder, and an earlier export stays in place until the new one is complete.
    """
    model, spec = load_student(source)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_folder(out.parent, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as exc:  # a path through a file, a folder that cannot be made or written to
        if disk_full(exc):
            raise disk_full_error(str(out)) from None
        raise KDSearchError(f"cannot make the export folder {out}: {exc.strerror or exc} (give --out a folder that "
                            "can be made)") from None
    old = out.with_name(f".{out.name}.old")
    try:
        shutil.copyfile(source / SPEC_FILE, tmp / SPEC_FILE)
        shutil.copyfile(source / WEIGHTS_FILE, tmp / WEIGHTS_FILE)
        write_onnx(model, spec, tmp / ONNX_FILE, opset)
        diff = verify_onnx(model, spec, tmp / ONNX_FILE)
        info = {**info, "input": {"name": "images", "shape": ["batch", spec.in_channels, spec.image_size,
                                                               spec.image_size],
                                  "dtype": "float32", "range": [0.0, 1.0], "normalized_inside": True},
                "output": {"name": "logits", "shape": ["batch", spec.num_classes]},
                "onnx": {"opset": opset, "max_abs_diff_vs_torch": diff, "bytes": (tmp / ONNX_FILE).stat().st_size},
                "weights_bytes": (tmp / WEIGHTS_FILE).stat().st_size}
        if int8 is not None:
            info["int8"] = int8_files(tmp, spec, int8)
        write_text_atomic(tmp / INFO_FILE, json.dumps(info, indent=2) + "\n")
        if card is not None:
            write_text_atomic(tmp / CARD_FILE, card(info))
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            os.replace(out, old)  # the old export is moved aside, not deleted, until the new one is in place
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:  # a full disk, a folder gone or not writable meanwhile: the earlier export stays
        if disk_full(exc):
            raise disk_full_error(str(out)) from None
        raise KDSearchError(f"cannot write the export {out}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():
            os.replace(old, out)
    return Exported(out, info.get("weights", "search"), diff, info)


def pick_source(run_dir: Path, number: int, weights: str, arm: str = "kd") -> tuple[Path, str, dict[str, Any]]:
    """Where the weights to export are: the search trial's, or final training's model of `arm` (kd: distilled;
    ce, ce-all: the baselines without a teacher) at the arm's chosen lr, the best seed by validation."""
    if weights not in ("auto", "search", "final"):
        raise KDSearchError(f"--weights: {weights!r} is not one of auto, search, final")
    if arm not in MODES:
        raise KDSearchError(f"--arm: {arm!r} is not one of {', '.join(MODES)}")
    if arm != "kd" and weights == "search":
        raise KDSearchError(f"--arm {arm}: the search trains distilled students only; the baseline comes from final "
                            "training (--weights auto or final)")
    results = final_results(run_dir, number)
    stored = json.loads(results.read_text()) if results.is_file() else {}
    chosen = stored.get("summary", {}).get("arms", {}).get(arm)  # the arm at its chosen lr
    done = [r for r in stored.get("runs", []) if chosen and r["mode"] == arm and r["lr"] == chosen["lr"]
            and not r.get("error") and not r.get("probe") and r["curve"]]
    if not done and (weights == "final" or arm != "kd"):
        train = f"`kdsearch train {run_dir} --trial {number}`"
        if arm == "kd" or not stored:
            raise KDSearchError(f"trial {number} has no final training yet: run {train}")
        raise KDSearchError(f"trial {number}'s final training has no {arm} model ({MODES[arm]}): run {train}"
                            + (" without --no-baseline" if arm == "ce" else " without --no-all-views-baseline"))
    if done and weights != "search":
        best = max(done, key=lambda r: r["curve"][-1])
        return (_with_weights(model_dir(run_dir, number, arm, best["seed"], best["lr"]), number, "final"), "final",
                {"val_accuracy": best["curve"][-1], "test_accuracy": best["test_accuracy"],
                 "epochs": len(best["curve"]), "seed": best["seed"], "lr": best["lr"]}
                # the distilled arm's T and alpha as trained (`train --temperature/--alpha` may replace the trial's)
                | ({k: stored["setup"][k] for k in DISTILL_ONLY} if arm == "kd" else {}))
    return _with_weights(trial_dir(run_dir, number), number, "search"), "search", {}


def _with_weights(folder: Path, number: int, kind: str) -> Path:
    """`folder`, when it holds a student's spec and weights; else one line saying why it may not (a copied or
    committed run folder) and what to do, rather than a missing-file message that reads as a broken install."""
    if all((folder / name).is_file() for name in STUDENT_FILES):
        return folder
    what = "its search student" if kind == "search" else "its final-training model"
    raise KDSearchError(f"trial {number}'s weights are not in this run folder ({what}, {folder}, was not saved there or "
                        "not copied: a committed or copied run may hold its study and results without the weights); "
                        "make the run yourself (`kdsearch run` with its study file, then `kdsearch train` for final "
                        "weights) and export from that folder")


def export_trial(run: Run, number: int, out: Path | None = None, weights: str = "auto", opset: int = 18,
                 int8: bool = False, arm: str = "kd") -> Exported:
    """Export trial `number` of a run to `out` (default RUN/export/<number>, or <number>-<arm> for a baseline
    arm); with `int8`, also its statically quantized int8 model, checked on the validation split (and test
    for final weights). `arm`: kd (the distilled student), or ce / ce-all (final training without a teacher)."""
    if run.run_dir is None:
        raise KDSearchError("export needs the run folder (it holds the students' weights)")
    chosen_trial(run.study, number)  # a clear error for a missing trial or one without a student
    source, kind, final = pick_source(run.run_dir, number, weights, arm)
    trial = run.study.get_trials(deepcopy=False)[number]
    attrs = trial.user_attrs
    curve = attrs.get(CURVE) or [None]
    info = {"study": run.study.study_name, "trial": number, "weights": kind, "arch": attrs.get("arch"),
            "params": attrs.get("params"), "macs": attrs.get("macs"), "latency_ms": attrs.get(LATENCY_MS),
            "temperature": attrs.get("temperature"), "alpha": attrs.get("alpha"), "lr": attrs.get("lr"),
            "val_accuracy": curve[-1], "test_accuracy": load_test_accuracies(run.run_dir).get(number),
            **final, "classes": run.study.user_attrs.get("data", {}).get("classes"),
            "teacher": {k: run.study.user_attrs.get("teacher", {}).get(k) for k in ("name", "test_accuracy")},
            "arm": arm, "arm_label": MODES[arm]}
    if arm != "kd":  # trained without the teacher: no distillation settings
        info.update(temperature=None, alpha=0.0)
    inputs = int8_inputs(run, kind) if int8 else None
    sources = card_sources(run, number, info)
    try:
        return export_student(source, out or export_dir(run.run_dir, number, arm), info, opset, inputs,
                              card=lambda written: model_card(written, sources))
    except KDSearchError as exc:
        if str(exc).startswith("cannot quantize"):
            raise KDSearchError(f"trial {number}: {exc} (the float export works without --int8)") from None
        raise
