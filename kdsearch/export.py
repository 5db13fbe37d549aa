"""Export a chosen student: spec JSON, weights (safetensors) and ONNX, checked against PyTorch.

An exported folder stands alone: `load_student(folder)` rebuilds the PyTorch model from
spec.json + student.safetensors, and student.onnx runs anywhere ONNX Runtime does. Both take
float32 images in [0, 1], N x C x H x W (normalization is inside the model), and return
logits. The ONNX file is verified at export: ONNX Runtime's logits on a batch of images must
match PyTorch's, or the export fails.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from .errors import KDSearchError
from .files import atomic_path, write_text_atomic
from .layout import export_dir, final_results, model_dir, trial_dir
from .pruning import CURVE
from .students import StudentSpec, build

if TYPE_CHECKING:
    from .report import Run

SPEC_FILE, WEIGHTS_FILE, ONNX_FILE, INFO_FILE = "spec.json", "student.safetensors", "student.onnx", "export.json"
INT8_FILE = "student.int8.onnx"  # with --int8: the statically quantized model (kdsearch/quantize.py)
TOLERANCE = 1e-4  # max |ONNX Runtime - PyTorch| logit difference accepted (float32)


def load_student(folder: str | Path) -> tuple[nn.Module, StudentSpec]:
    """The student saved in `folder` (a trial folder, a final-training folder or an export), in eval mode."""
    folder = Path(folder)
    spec_path, weights = folder / SPEC_FILE, folder / WEIGHTS_FILE
    if not spec_path.is_file() or not weights.is_file():
        raise KDSearchError(f"{folder} holds no student ({SPEC_FILE} and {WEIGHTS_FILE})")
    try:
        spec = StudentSpec.from_json(spec_path.read_text())
        model = build(spec)
        model.load_state_dict(load_file(str(weights)))  # safetensors: no pickle, nothing executed
    except (SafetensorError, RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise KDSearchError(f"cannot load the student in {folder}: {str(exc).splitlines()[0]}") from None
    return model.eval(), spec


def onnx_bytes(model: nn.Module, input_shape: tuple[int, ...], opset: int = 18) -> bytes:
    """The student as an ONNX model (bytes), batch axis dynamic: the graph `kdsearch export` writes and
    the search times. PyTorch's TorchScript-based exporter: about 0.1 s a student and eval-mode batch
    norm folded into the convolutions, where the torch.export-based one takes seconds and writes
    Python stack traces into the file; that one is used where the former is gone."""
    import copy
    import io
    import warnings

    model = copy.deepcopy(model).cpu().eval()
    example = torch.rand(1, *input_shape)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation notice
            torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=opset, input_names=["images"],
                              output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
        return buffer.getvalue()
    except ImportError as exc:
        raise KDSearchError(f"ONNX export needs the onnx package ({exc})") from None
    except Exception:  # noqa: BLE001  (the TorchScript exporter removed or failing: the other one)
        pass
    try:
        program = torch.onnx.export(model, (example,), None, dynamo=True, opset_version=opset, input_names=["images"],
                                    output_names=["logits"], verbose=False,
                                    dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        return program.model_proto.SerializeToString()
    except ImportError as exc:
        raise KDSearchError(f"ONNX export needs the onnx and onnxscript packages ({exc})") from None


def with_distinct_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of `model` with a little noise (1e-3) on every weight and buffer (variances stay positive):
    an untrained model's equal tensors (zero means, unit variances, zero-initialized layers) are stored
    once by the exporter, a trained model's are not, so this copy's ONNX file has the trained size, and
    its activations keep the initialization's scale."""
    import copy

    model = copy.deepcopy(model).cpu()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if tensor.is_floating_point():
                noise = torch.rand(tensor.shape, generator=generator, dtype=tensor.dtype) * 1e-3
                tensor.add_(noise if name.endswith("running_var") else noise - 5e-4)
    return model


def write_onnx(model: nn.Module, spec: StudentSpec, path: Path, opset: int = 18) -> None:
    """onnx_bytes, written atomically to one file."""
    data = onnx_bytes(model, (spec.in_channels, spec.image_size, spec.image_size), opset)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def verify_onnx(model: nn.Module, spec: StudentSpec, path: Path, batch: int = 8, seed: int = 0) -> float:
    """Max |ONNX Runtime - PyTorch| over the logits of a random batch; raises above TOLERANCE."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise KDSearchError("verifying the ONNX file needs onnxruntime (pip install onnxruntime)") from None
    x = torch.rand(batch, spec.in_channels, spec.image_size, spec.image_size,
                   generator=torch.Generator().manual_seed(seed))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    with torch.no_grad():
        want = model(x)
    diff = float((got - want).abs().max())
    if not diff <= TOLERANCE:  # also catches NaN
        raise KDSearchError(f"ONNX check failed: logits differ from PyTorch by {diff:.2e} (> {TOLERANCE:.0e})")
    return diff


@dataclass
class Int8Inputs:
    """What `export --int8` needs besides the student: images to calibrate on, splits to check on."""

    calibration: Any  # float32 images in [0, 1], N x C x H x W (quantize.calibration_images)
    val: Any  # data.Split
    test: Any | None  # data.Split, for students that went through final training; else None
    threads: int = 1  # ONNX Runtime threads for the latency of both files
    run_dir: Path | None = None  # timing waits for a search's other workers there (latency.quiet_cpu)


@dataclass
class Exported:
    folder: Path
    source: str  # "search" or "final"
    max_abs_diff: float
    info: dict[str, Any]


def export_student(source: Path, out: Path, info: dict[str, Any], opset: int = 18,
                   int8: Int8Inputs | None = None) -> Exported:
    """Copy spec and weights from `source`, write and verify student.onnx, and describe it in export.json.

    Written into a temporary folder first and swapped in at the end: a failed export leaves no half
    folder, and an earlier export stays in place until the new one is complete.
    """
    model, spec = load_student(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
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
                "onnx": {"opset": opset, "max_abs_diff_vs_torch": diff, "bytes": (tmp / ONNX_FILE).stat().st_size}}
        if int8 is not None:
            info["int8"] = int8_files(tmp, spec, int8)
        write_text_atomic(tmp / INFO_FILE, json.dumps(info, indent=2) + "\n")
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            os.replace(out, old)  # the old export is moved aside, not deleted, until the new one is in place
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():
            os.replace(old, out)
    return Exported(out, info.get("weights", "search"), diff, info)


def int8_files(folder: Path, spec: StudentSpec, inputs: Int8Inputs) -> dict[str, Any]:
    """Write folder/INT8_FILE from folder/ONNX_FILE and check both (quantize.check_int8)."""
    from .latency import quiet_cpu
    from .quantize import check_int8, quantize_int8

    quantize_int8(folder / ONNX_FILE, folder / INT8_FILE, inputs.calibration)
    try:
        with quiet_cpu(inputs.run_dir):
            checked = check_int8(folder / ONNX_FILE, folder / INT8_FILE, inputs.val, inputs.test,
                                 (spec.in_channels, spec.image_size, spec.image_size), inputs.threads)
    except KDSearchError as exc:
        raise KDSearchError(f"cannot quantize to int8: {exc}") from None
    except Exception as exc:  # noqa: BLE001  (an int8 model that ONNX Runtime cannot load or run)
        raise KDSearchError(f"cannot quantize to int8: the int8 model does not run: {type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:300]}") from None
    return {**checked, "file": INT8_FILE, "calibration_images": len(inputs.calibration)}


def int8_lines(q: dict[str, Any]) -> list[str]:
    """export.json's int8 record as the lines `kdsearch export --int8` prints."""
    def acc(split: str) -> str:
        f, i = q[f"float_{split}_accuracy"], q[f"int8_{split}_accuracy"]
        return f"{split} accuracy int8 {i:.2%}, float {f:.2%} ({100 * (i - f):+.2f} points)"

    return [f"int8: {q['int8_bytes']:,} bytes, float {q['float_bytes']:,} ({q['int8_bytes'] / q['float_bytes']:.0%})"
            f"; calibrated on {q['calibration_images']} training images",
            "int8: " + "; ".join(acc(s) for s in ("val", "test") if f"int8_{s}_accuracy" in q),
            f"int8: ONNX Runtime latency {q['int8_latency_ms']:.3f} ms, float {q['float_latency_ms']:.3f} ms "
            f"(batch 1, {q['latency_threads']} thread(s), median of blocks)"]


def pick_source(run_dir: Path, number: int, weights: str) -> tuple[Path, str, dict[str, Any]]:
    """Where the weights to export are: the search trial's, or the best (by val) final KD model's."""
    if weights not in ("auto", "search", "final"):
        raise KDSearchError(f"--weights: {weights!r} is not one of auto, search, final")
    results = final_results(run_dir, number)
    stored = json.loads(results.read_text()) if results.is_file() else {}
    arm = stored.get("summary", {}).get("arms", {}).get("kd")  # the distilled arm at its chosen lr
    kd = [r for r in stored.get("runs", []) if arm and r["mode"] == "kd" and r["lr"] == arm["lr"]]
    if weights == "final" and not kd:
        raise KDSearchError(f"trial {number} has no final training yet: run `kdsearch train {run_dir} --trial {number}`")
    if kd and weights != "search":
        best = max(kd, key=lambda r: r["curve"][-1])
        return (model_dir(run_dir, number, "kd", best["seed"], best["lr"]), "final",
                {"val_accuracy": best["curve"][-1], "test_accuracy": best["test_accuracy"],
                 "epochs": len(best["curve"]), "seed": best["seed"], "lr": best["lr"]})
    return trial_dir(run_dir, number), "search", {}


def export_trial(run: Run, number: int, out: Path | None = None, weights: str = "auto", opset: int = 18,
                 int8: bool = False) -> Exported:
    """Export trial `number` of a run to `out` (default RUN/export/<number>); with `int8`, also its
    statically quantized int8 model, checked on the validation split (and test for final weights)."""
    from .final import chosen_trial
    from .report import load_test_accuracies

    if run.run_dir is None:
        raise KDSearchError("export needs the run folder (it holds the students' weights)")
    chosen_trial(run.study, number)  # a clear error for a missing trial or one without a student
    source, kind, final = pick_source(run.run_dir, number, weights)
    trial = run.study.get_trials(deepcopy=False)[number]
    attrs = trial.user_attrs
    curve = attrs.get(CURVE) or [None]
    info = {"study": run.study.study_name, "trial": number, "weights": kind, "arch": attrs.get("arch"),
            "params": attrs.get("params"), "macs": attrs.get("macs"), "latency_ms": attrs.get("latency_ms"),
            "temperature": attrs.get("temperature"), "alpha": attrs.get("alpha"), "lr": attrs.get("lr"),
            "val_accuracy": curve[-1], "test_accuracy": load_test_accuracies(run.run_dir).get(number),
            **final, "classes": run.study.user_attrs.get("data", {}).get("classes"),
            "teacher": {k: run.study.user_attrs.get("teacher", {}).get(k) for k in ("name", "test_accuracy")}}
    inputs = int8_inputs(run, kind) if int8 else None
    try:
        return export_student(source, out or export_dir(run.run_dir, number), info, opset, inputs)
    except KDSearchError as exc:
        if str(exc).startswith("cannot quantize"):
            raise KDSearchError(f"trial {number}: {exc} (the float export works without --int8)") from None
        raise


def int8_inputs(run: Run, kind: str) -> Int8Inputs:
    """Calibration images from the run's training split; its validation split; test for final weights."""
    from .config import config_from_dict
    from .data import load_data
    from .quantize import calibration_images

    if not run.config:
        raise KDSearchError("--int8 needs the run's config (run.json) to load its data")
    cfg = config_from_dict(run.config)
    data = load_data(cfg.data, seed=cfg.seed)
    return Int8Inputs(calibration_images(data.train, seed=cfg.seed), data.val, data.test if kind == "final" else None,
                      threads=cfg.latency_threads, run_dir=run.run_dir)
