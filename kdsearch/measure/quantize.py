"""int8 students: static quantization of the exported ONNX model with ONNX Runtime's tools.

QDQ format (QuantizeLinear/DequantizeLinear pairs that ONNX Runtime fuses into integer kernels),
int8 weights per output channel, int8 activations whose ranges are calibrated (min/max) on a few
hundred training images. The float model is first prepared with `quant_pre_process` (shape
inference, graph optimizations such as batch-norm folding), as ONNX Runtime recommends.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..data.augment import to_float
from ..data.splits import Split
from ..errors import KDSearchError
from .latency import ort_latency, ort_session


CALIBRATION_IMAGES = 256  # training images that set the activations' ranges
CALIBRATION_BATCH = 32


def calibration_images(split: Split, n: int = CALIBRATION_IMAGES, seed: int = 0) -> np.ndarray:
    """`n` images of `split` drawn at random (seeded), as float32 in [0, 1] (what the model takes)."""
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n]
    return to_float(split.x[idx]).numpy()


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol: one {"images": batch} per get_next, then None."""

    def __init__(self, images: np.ndarray, batch: int, name: str = "images"):
        self.batches = iter([{name: images[i:i + batch]} for i in range(0, len(images), batch)])

    def get_next(self) -> dict | None:
        return next(self.batches, None)

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def quantize_int8(float_model: Path | bytes, out: Path, calibration: np.ndarray,
                  batch: int = CALIBRATION_BATCH) -> None:
    """Write the int8 (QDQ, per-channel) model of `float_model` to `out`; a failure is one KDSearchError."""
    try:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static  # slow to import: int8 only
        from onnxruntime.quantization.shape_inference import quant_pre_process  # (the same)
    except ImportError as exc:
        raise KDSearchError(f"int8 quantization needs onnxruntime's quantization tools ({exc})") from None
    if not len(calibration):
        raise KDSearchError("cannot quantize to int8: no calibration images")
    logging.getLogger("root").setLevel(logging.ERROR)  # the tools log hints through the root logger
    with tempfile.TemporaryDirectory(prefix="kdsearch-int8-") as tmp:
        source = Path(tmp) / "float.onnx"
        if isinstance(float_model, bytes):
            source.write_bytes(float_model)
        else:
            source = Path(float_model)
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(source), str(prepared))
            quantize_static(str(prepared), str(out), _Reader(calibration, batch), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
        except KDSearchError:
            raise
        except Exception as exc:  # noqa: BLE001  (whatever the tools raise: one line, the reason kept)
            message = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise KDSearchError(f"cannot quantize to int8: {type(exc).__name__}: {message}") from None


def onnx_logits(model: Path | bytes, images: torch.Tensor, batch: int = 256, threads: int = 0) -> np.ndarray:
    """Logits of an ONNX model for uint8 images (N x C x H x W), in batches."""
    session = ort_session(model if isinstance(model, bytes) else Path(model), threads)
    name = session.get_inputs()[0].name
    out = [session.run(None, {name: to_float(images[i:i + batch]).numpy()})[0] for i in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def onnx_accuracy(model: Path | bytes, split: Split, batch: int = 256) -> float:
    """Top-1 accuracy of an ONNX model on a split (NaN for an empty one)."""
    if len(split) == 0:
        return float("nan")
    logits = onnx_logits(model, split.x, batch)
    if not np.isfinite(logits).all():
        name = "the model" if isinstance(model, bytes) else Path(model).name
        raise KDSearchError(f"{name} gives non-finite logits")
    return float((logits.argmax(1) == split.y.numpy()).mean())


def int8_size(graph: bytes, input_shape: Sequence[int], images: int = 32) -> int:
    """Bytes of the int8 model of an ONNX graph, calibrated on random images: what the search records
    before training (the file's size depends on the architecture, not on the weights' values)."""
    calibration = torch.rand(images, *input_shape, generator=torch.Generator().manual_seed(0)).numpy()
    with tempfile.TemporaryDirectory(prefix="kdsearch-int8-") as tmp:
        out = Path(tmp) / "int8.onnx"
        quantize_int8(graph, out, calibration)
        return out.stat().st_size


def check_int8(float_model: Path, int8_model: Path, val: Split, test: Split | None, input_shape: Sequence[int],
               threads: int = 1) -> dict:
    """What export.json records of an int8 model beside its float one: accuracy on the validation
    split (and test, when given), file sizes, ONNX Runtime latency at batch 1 (median and IQR, ms)."""
    out: dict = {"format": "QDQ, int8 weights per channel, int8 activations (min/max calibration)",
                 "calibration_images": None, "float_bytes": Path(float_model).stat().st_size,
                 "int8_bytes": Path(int8_model).stat().st_size}
    for name, split in (("val", val), ("test", test)):
        if split is not None:
            out[f"float_{name}_accuracy"] = onnx_accuracy(float_model, split)
            out[f"int8_{name}_accuracy"] = onnx_accuracy(int8_model, split)
    for kind, path in (("float", float_model), ("int8", int8_model)):
        timing = ort_latency(path, tuple(input_shape), batch=1, threads=threads)
        out[f"{kind}_latency_ms"], out[f"{kind}_latency_iqr_ms"] = timing.median_ms, timing.iqr_ms
    out["latency_threads"] = threads
    return out
