"""A student as an ONNX graph (bytes): what `kdsearch export` writes and what the search times and sizes."""

from __future__ import annotations

import copy
import io
import logging
import warnings

import torch
from torch import nn

from ..errors import KDSearchError


def onnx_bytes(model: nn.Module, input_shape: tuple[int, ...], opset: int = 18) -> bytes:
    """The student as an ONNX model (bytes), batch axis dynamic: the graph `kdsearch export` writes and
    the search times. PyTorch's TorchScript-based exporter: about 0.1 s a student and eval-mode batch
    norm folded into the convolutions, where the torch.export-based one takes seconds and writes
    Python stack traces into the file; that one is used where the former is gone."""
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
    model = copy.deepcopy(model).cpu()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if tensor.is_floating_point():
                noise = torch.rand(tensor.shape, generator=generator, dtype=tensor.dtype) * 1e-3
                tensor.add_(noise if name.endswith("running_var") else noise - 5e-4)
    return model
