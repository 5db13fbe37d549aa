"""The ONNX file of a student, written atomically and checked against PyTorch."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import KDSearchError
from ..measure.onnx_graph import onnx_bytes
from ..models.students.spec import StudentSpec
from ..runs.files import atomic_path


ONNX_FILE = "student.onnx"
TOLERANCE = 1e-4  # max |ONNX Runtime - PyTorch| logit difference accepted (float32)


def write_onnx(model: nn.Module, spec: StudentSpec, path: Path, opset: int = 18) -> None:
    """onnx_bytes, written atomically to one file."""
    data = onnx_bytes(model, (spec.in_channels, spec.image_size, spec.image_size), opset)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def verify_onnx(model: nn.Module, spec: StudentSpec, path: Path, batch: int = 8, seed: int = 0) -> float:
    """Max |ONNX Runtime - PyTorch| over the logits of a random batch; raises above TOLERANCE."""
    try:
        import onnxruntime as ort  # slow to import: only the check needs it
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
