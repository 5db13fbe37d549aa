"""MODEL_CARD.md beside an exported student: what it is, its data, teacher, recipe, accuracies (with their
split), size, latency (and where it was measured), intended use and limits.

Every number is read from the run's files, none recomputed here: export.json (written beside it from
the trial and the files below), RUN/run.json (the resolved config, the command), the study's records
(the trial's attributes; the data, teacher and machine recorded when the run was prepared),
RUN/final/<trial>/results.json for final-trained weights, and RUN/test_accuracy.json. A figure the run
did not record is said to be unrecorded, not filled in. A YAML header repeats the main numbers, unrounded,
for tools (as Hugging Face model cards have one).
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..final import DISTILL_ONLY
from ..runs.layout import final_results, run_file
from ..runs.run import Run


CARD_FILE = "MODEL_CARD.md"
UNRECORDED = "not recorded in this run"


def pct(value: Any) -> str:
    return f"{value:.2%}" if isinstance(value, (int, float)) and math.isfinite(value) else UNRECORDED


def count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else UNRECORDED


def card_sources(run: Run, number: int, info: dict[str, Any]) -> dict[str, Any]:
    """What the card reads besides export.json: run.json, the study's and the trial's records, final training's
    results (for final weights)."""
    path = run_file(run.run_dir)
    run_json = json.loads(path.read_text()) if path.is_file() else {}
    results = final_results(run.run_dir, number)
    final = json.loads(results.read_text()) if info.get("weights") == "final" and results.is_file() else None
    return {"run": run_json, "config": run.config or run_json.get("config") or {}, "study": dict(run.study.user_attrs),
            "trial": dict(run.study.trials[number].user_attrs), "final": final}


def model_card(info: dict[str, Any], sources: dict[str, Any]) -> str:
    """The card's Markdown, from export.json's `info` and the run's records (card_sources)."""
    cfg, study, trial, final = sources["config"], sources["study"], sources["trial"], sources["final"]
    data, teacher = study.get("data") or {}, study.get("teacher") or {}
    arm, spec = info.get("arm", "kd"), trial.get("spec") or {}
    shape = info["input"]["shape"]
    size = f"{shape[2]}x{shape[3]}"  # height x width; shape[1] is the channels
    classes = info.get("classes") or data.get("classes") or []
    title = f"{info['study']} trial {info['trial']}" + ("" if arm == "kd" else f", {arm} baseline")
    lines = [
        "---",
        "library_name: \"kdsearch\"",
        "pipeline_tag: \"image-classification\"",
        f"tags: {json.dumps(['knowledge-distillation', 'onnx', arm])}",
        f"study: {json.dumps(info['study'])}",
        f"trial: {info['trial']}",
        f"weights: {json.dumps(info.get('weights'))}",
        f"params: {json.dumps(info.get('params'))}",
        f"macs: {json.dumps(info.get('macs'))}",
        f"onnx_bytes: {json.dumps(info['onnx']['bytes'])}",
        f"weights_bytes: {json.dumps(info.get('weights_bytes'))}",
        f"val_accuracy: {json.dumps(info.get('val_accuracy'))}",
        f"test_accuracy: {json.dumps(info.get('test_accuracy'))}",
        f"latency_ms: {json.dumps(info.get('latency_ms'))}",
        "---",
        "",
        f"# Model card: {title}",
        "",
        "## What it is",
        "",
        f"A small CNN image classifier, `{info.get('arch')}` (student family {spec.get('family', 'plain')}), "
        + ("distilled from a teacher by kdsearch's search" if arm == "kd" else
           f"the same architecture trained without a teacher ({info.get('arm_label')}), the baseline of the "
           "distilled student")
        + f": {count(info.get('params'))} parameters, {count(info.get('macs'))} multiply-accumulates per image.",
        "",
        f"- Input `images`: float32, N x {shape[1]} x {shape[2]} x {shape[3]}, pixels in [0, 1] (normalization is "
        "inside the model).",
        f"- Output `logits`: N x {info['output']['shape'][1]}, over the classes "
        + ", ".join(f"`{c}`" for c in classes) + " (in this order).",
        "- Files: `student.onnx` (ONNX Runtime), `spec.json` + `student.safetensors` (PyTorch: "
        "`kdsearch.export.load_student(folder)`)" + (", `student.int8.onnx` (int8)" if info.get("int8") else "")
        + "; `export.json` holds the numbers below.",
        "",
        *data_section(cfg, data, trial, final, size),
        *teacher_section(teacher, arm),
        *recipe_section(cfg, info, trial, final, arm),
        *accuracy_section(info, trial, final, teacher, cfg, arm),
        *size_section(info, trial, study, cfg, final),
        *use_section(data, size, info, sources["run"]),
    ]
    return "\n".join(lines) + "\n"


def data_section(cfg: dict[str, Any], data: dict[str, Any], trial: dict[str, Any], final: dict[str, Any] | None,
                 size: str) -> list[str]:
    d = cfg.get("data") or {}
    where = f" from `{d['data_dir']}`" if d.get("data_dir") else ""
    resized = f", every image resized to {d['image_size']}x{d['image_size']}" if d.get("image_size") else ""
    subset = (f"; the search trained each student on a stratified subset of {count(d['subset'])} of them"
              if d.get("subset") else "")
    lines = ["## Data", "",
             f"`{data.get('name', d.get('dataset'))}`{where}, {size} images{resized}: {count(data.get('train'))} "
             f"training images{subset}, {count(data.get('val'))} validation images (a stratified "
             f"{d.get('val_fraction')} of the training data, seed {cfg.get('seed')}) and {count(data.get('test'))} "
             "test images, never used to choose anything."]
    if final:
        lines.append(f"Final training used {count(final['setup'].get('train_images'))} training images.")
    return lines + [""]


def teacher_section(teacher: dict[str, Any], arm: str) -> list[str]:
    if not teacher:
        return ["## Teacher", "", UNRECORDED, ""]
    norm = (teacher.get("normalization") or {}).get("what")
    trained = teacher.get("epochs_trained")
    return ["## Teacher", "",
            ("" if arm == "kd" else "This model was trained without it; it is named for comparison. ")
            + f"`{teacher.get('name')}`, {count(teacher.get('params'))} parameters"
            + (f", trained {trained} epoch(s) on this data" if trained else ", used as given (not trained on this data)")
            + (f", input normalized with {norm}" if norm else "")
            + f": validation accuracy {pct(teacher.get('val_accuracy'))}, test accuracy "
            f"{pct(teacher.get('test_accuracy'))}.", ""]


def recipe_section(cfg: dict[str, Any], info: dict[str, Any], trial: dict[str, Any], final: dict[str, Any] | None,
                   arm: str) -> list[str]:
    train = cfg.get("train") or {}
    recipe = ", ".join(f"{k} {train[k]}" for k in ("optimizer", "schedule", "warmup", "batch_size", "weight_decay",
                                                   "label_smoothing", "ema") if train.get(k) is not None)
    lines = ["## Recipe", "", f"Training settings of the run: {recipe}."]
    if arm == "kd":
        # as these weights trained: final training's T and alpha (`train --temperature/--alpha`), else the trial's
        t, alpha = (info.get(k) if info.get(k) is not None else trial.get(k) for k in DISTILL_ONLY)
        given = (t, alpha) != (trial.get("temperature"), trial.get("alpha"))
        lines.append(f"Distillation: temperature T {t:.4g}, alpha {alpha:.4g} (the weight of the teacher's soft "
                     "targets" + (f"; given to `kdsearch train`, the search's were T {trial.get('temperature'):.4g}, "
                                  f"alpha {trial.get('alpha'):.4g}" if given else "")
                     + f"); the search's peak learning rate {trial.get('lr'):.4g}.")
    else:
        lines.append("No teacher: cross-entropy on the labels alone (alpha 0).")
    if final:
        setup, policy = final["setup"], final.get("lr_policy") or {}
        lines.append(f"These weights: final training, {info.get('epochs')} epoch(s) (the search trained "
                     f"{cfg.get('epochs')}), seed {info.get('seed')}, learning rate {info.get('lr'):.4g} "
                     f"({policy.get('text', UNRECORDED)}), batch size {setup.get('batch_size')}.")
    else:
        lines.append(f"These weights: the search's trial, {cfg.get('epochs')} epoch(s).")
    return lines + [""]


def accuracy_section(info: dict[str, Any], trial: dict[str, Any], final: dict[str, Any] | None,
                     teacher: dict[str, Any], cfg: dict[str, Any], arm: str) -> list[str]:
    curve = trial.get("curve") or [None]
    rows = [("validation", pct(curve[-1]), f"the search's trial, {len(trial.get('curve') or [])} epoch(s)"
             + (" (distilled)" if arm != "kd" else ""))]
    if final:
        rows.append(("validation", pct(info.get("val_accuracy")), f"these weights (final training, seed {info.get('seed')})"))
        rows.append(("test", pct(info.get("test_accuracy")), f"these weights (final training, seed {info.get('seed')}), "
                                                               "read once"))
        summary = (final.get("summary") or {}).get("arms", {}).get(arm)
        if summary:
            sd = summary.get("test_sd")
            rows.append(("test", pct(summary.get("test_mean")) + (f" ± {pct(sd)}" if isinstance(sd, float)
                                                                  and math.isfinite(sd) else ""),
                         f"mean over seeds {', '.join(map(str, summary.get('seeds', [])))} of this arm"))
    elif info.get("test_accuracy") is not None:
        rows.append(("test", pct(info.get("test_accuracy")), "these weights (measured by `kdsearch report --test`)"))
    rows.append(("validation", pct(teacher.get("val_accuracy")), f"teacher {teacher.get('name')}"))
    rows.append(("test", pct(teacher.get("test_accuracy")), f"teacher {teacher.get('name')}"))
    lines = ["## Accuracy", "", "| split | accuracy | of |", "| --- | --- | --- |"]
    lines += [f"| {split} | {value} | {what} |" for split, value, what in rows]
    if final:
        lines += ["", _gains(final)]
    else:
        lines += ["", "The validation accuracy chose this model among the search's trials, so it is optimistic; "
                      "test accuracy is the unbiased figure (`kdsearch train` measures it for final-trained models)."]
    return lines + [""]


def _gains(final: dict[str, Any]) -> str:
    """Final training's paired gain of the distilled student over each baseline, as results.json states it."""
    gain = (final.get("summary") or {}).get("gain") or {}
    parts = []
    for base, g in gain.items():
        if g.get("n", 0) >= 2 and math.isfinite(g.get("low", math.nan)):
            parts.append(f"{100 * g['mean']:+.2f} points over {base} (95% CI [{100 * g['low']:+.2f}, "
                         f"{100 * g['high']:+.2f}], {g['n']} seeds)")
        elif "mean" in g:
            parts.append(f"{100 * g['mean']:+.2f} points over {base} (one seed: no interval)")
    return ("Distillation's test gain in final training: " + "; ".join(parts) + ".") if parts else \
        "Final training has no paired distilled/baseline result for this trial."


def size_section(info: dict[str, Any], trial: dict[str, Any], study: dict[str, Any], cfg: dict[str, Any],
                 final: dict[str, Any] | None) -> list[str]:
    env = study.get("environment") or {}
    iqr = trial.get("latency_iqr_ms")
    runtime = cfg.get("latency_runtime", "torch")  # a run.json without it ran with eager PyTorch (config.LEGACY_STUDY)
    where = env.get("machine") or UNRECORDED
    lat = info.get("latency_ms")
    lines = ["## Size and latency", "",
             f"- {count(info.get('params'))} parameters; `student.onnx` {count(info['onnx']['bytes'])} bytes "
             f"(opset {info['onnx']['opset']}); `student.safetensors` {count(info.get('weights_bytes'))} bytes.",
             f"- Latency {lat:.3f} ms" if isinstance(lat, (int, float)) else f"- Latency {UNRECORDED}"]
    lines[-1] += ((f" (interquartile range {iqr:.3f} ms)" if isinstance(iqr, (int, float)) else "")
                  + f": median per call of {cfg.get('latency_batch', 1)} image(s), {runtime} on the CPU, "
                  f"{study.get('latency_threads', cfg.get('latency_threads', 1))} thread(s), on {where}, "
                  "measured during the search (the weights do not change it). It differs on other machines: "
                  "measure on yours.")
    q = info.get("int8")
    if q:
        lines.append(f"- int8 (`{q['file']}`): {count(q['int8_bytes'])} bytes; ONNX Runtime latency "
                     f"{q['int8_latency_ms']:.3f} ms against {q['float_latency_ms']:.3f} ms for the float file "
                     f"(measured at export); validation accuracy {pct(q.get('int8_val_accuracy'))} against "
                     f"{pct(q.get('float_val_accuracy'))}.")
    if final and final.get("environment"):
        lines.append(f"- Final training ran on {final['environment'].get('device')}.")
    return lines + [""]


def use_section(data: dict[str, Any], size: str, info: dict[str, Any], run_json: dict[str, Any]) -> list[str]:
    return ["## Intended use and limits", "",
            f"- Intended for classifying images like those of `{data.get('name', '?')}` into its "
            f"{len(info.get('classes') or [])} classes, at {size}, where the teacher is too large or too slow: "
            "on CPUs and small devices.",
            "- The accuracies hold for this data's distribution and splits only. The model was not evaluated for "
            "robustness to other images, calibration of its scores, or fairness; check those before relying on it.",
            "- Images of another size must be resized to the input size first, as the training data was.",
            "",
            "## Provenance", "",
            f"kdsearch {run_json.get('kdsearch', UNRECORDED)}; the run was made by `{run_json.get('command', UNRECORDED)}`"
            f"; exported from its trial {info['trial']} ({info.get('weights')} weights).",
            ""]
