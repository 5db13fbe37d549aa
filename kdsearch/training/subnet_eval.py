"""A subnet's accuracy with the weights it inherits: batch-norm recalibration, then validation.

The supernet's batch-norm statistics are a mixture over every subnet trained (each sandwich step runs
several), so a subnet's own are recomputed before it is scored, on a fixed sample of training images
(BigNAS, Once-for-All): its running means and variances reset, then averaged over the sample
(momentum None: a plain cumulative average, the same whatever the batch order), in training mode and
without gradients.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.augment import to_float
from ..models.students.spec import StudentSpec
from ..models.students.supernet import extract
from .distill import accuracy, eval_batch_size, predict
from .memory_format import memory_format_of


def recalibrate(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> nn.Module:
    """Reset every batch norm's running statistics and recompute them on the uint8 images `x`."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    fmt = memory_format_of(model)
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            model(to_float(x[start:start + batch_size]).contiguous(memory_format=fmt))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()


def inherit(supernet: nn.Module, spec: StudentSpec, x_calib: torch.Tensor,
            memory_format: torch.memory_format = torch.contiguous_format) -> nn.Module:
    """Subnet `spec` as a standalone student with inherited weights and batch norm recalibrated on `x_calib`
    (ready to score, export or fine-tune), in `memory_format` (the inverted family's evaluation ran 1.7-2.1x
    faster in channels_last on the 2-core CPU: `python -m benchmarks subnet-eval`)."""
    return recalibrate(extract(supernet, spec).to(memory_format=memory_format), x_calib)


def correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """How many of the images `x` the model classifies as `y` (the counts of two passes add up exactly)."""
    if len(y) == 0:
        return 0
    return int((predict(model, x, eval_batch_size(x.device)).argmax(1) == y).sum())


def evaluate(supernet: nn.Module, spec: StudentSpec, x_calib: torch.Tensor, x_val: torch.Tensor,
             y_val: torch.Tensor, memory_format: torch.memory_format = torch.contiguous_format
             ) -> tuple[float, nn.Module]:
    """Validation accuracy of subnet `spec` with inherited weights (inherit), and the student it is."""
    student = inherit(supernet, spec, x_calib, memory_format)
    return accuracy(student, x_val, y_val, eval_batch_size(x_val.device)), student
