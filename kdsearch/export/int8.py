"""`export --int8`: the statically quantized model beside the float one, checked on the data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import config_from_dict
from ..data.datasets import load_data
from ..errors import KDSearchError
from ..search.cpu_share import quiet_cpu
from ..measure.quantize import calibration_images, check_int8, quantize_int8
from ..models.students.spec import StudentSpec
from ..runs.run import Run
from .onnx_file import ONNX_FILE


INT8_FILE = "student.int8.onnx"  # with --int8: the statically quantized model (kdsearch/measure/quantize.py)


@dataclass
class Int8Inputs:
    """What `export --int8` needs besides the student: images to calibrate on, splits to check on."""

    calibration: Any  # float32 images in [0, 1], N x C x H x W (measure.quantize.calibration_images)
    val: Any  # data.Split
    test: Any | None  # data.Split, for students that went through final training; else None
    threads: int = 1  # ONNX Runtime threads for the latency of both files
    run_dir: Path | None = None  # timing waits for a search's other workers there (search.cpu_share.quiet_cpu)


def int8_files(folder: Path, spec: StudentSpec, inputs: Int8Inputs) -> dict[str, Any]:
    """Write folder/INT8_FILE from folder/ONNX_FILE and check both (quantize.check_int8)."""
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


def int8_inputs(run: Run, kind: str) -> Int8Inputs:
    """Calibration images from the run's training split; its validation split; test for final weights."""
    if not run.config:
        raise KDSearchError("--int8 needs the run's config (run.json) to load its data")
    cfg = config_from_dict(run.config)
    data = load_data(cfg.data, seed=cfg.seed)
    return Int8Inputs(calibration_images(data.train, seed=cfg.seed), data.val, data.test if kind == "final" else None,
                      threads=cfg.latency_threads, run_dir=run.run_dir)
