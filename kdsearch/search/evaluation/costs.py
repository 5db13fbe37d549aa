"""What every strategy records of a trial's student beside params and MACs: its file's bytes and its latency."""

from __future__ import annotations

import optuna
import torch

from ...config import StudyConfig
from ...measure import latency
from ...measure.onnx_graph import onnx_bytes, with_distinct_weights
from ...measure.quantize import int8_size
from ...runs.trial_attrs import BYTES, LATENCY_DEVICE, LATENCY_IQR_MS, LATENCY_MS, LATENCY_QUIET
from ..budgets import reject_over_budget
from ..cpu_share import quiet_cpu


def deployed_costs(trial: optuna.Trial, cfg: StudyConfig, model: torch.nn.Module, shape: tuple[int, ...],
                   costs: dict[str, float], device: torch.device | None = None) -> None:
    """The student's bytes (when an objective or budget) and latency, each recorded and checked against
    its budget as soon as known: the ONNX graph `kdsearch export` writes, exported once for both."""
    want_bytes = "bytes" in cfg.objectives or cfg.max_bytes is not None
    graph = None
    if cfg.latency_runtime == "onnxruntime" or want_bytes:
        graph = onnx_bytes(with_distinct_weights(model), shape)  # the size a trained student's file has
    if want_bytes:
        if cfg.bytes_format == "int8":
            costs["bytes"] = int8_size(graph, shape)
        else:
            costs["bytes"] = len(graph)
        trial.set_user_attr(BYTES, costs["bytes"])
        reject_over_budget(trial, cfg, {"bytes": costs["bytes"]})
    with quiet_cpu(cfg.run_path) as quiet:  # the study's other workers on this machine pause
        timing = latency.student_latency(model, shape, cfg.latency_runtime, cfg.latency_batch, cfg.latency_threads,
                                         graph, device=device)
    costs["latency"] = timing.median_ms
    trial.set_user_attr(LATENCY_MS, timing.median_ms)
    trial.set_user_attr(LATENCY_IQR_MS, timing.iqr_ms)
    if timing.device != "cpu":
        trial.set_user_attr(LATENCY_DEVICE, timing.device)
    if not quiet["quiet"]:
        trial.set_user_attr(LATENCY_QUIET, False)
    reject_over_budget(trial, cfg, {"latency": costs["latency"]})
