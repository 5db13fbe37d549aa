"""Native-kernel faults that kdsearch steps around (docs/faults.md, "Known issues").

torch 2.14.1, CPU: the backward pass of a 1x1, stride-2 convolution on a channels_last input
crashes the process with some odd batch sizes (a segmentation fault, or glibc's "double free or
corruption" abort), e.g. 11 -> 10 channels on 16x16 at batch 55 or 127. oneDNN runs that
backward-data pass in its strided kernel (`brgconv_strided`). Residual students' shortcut
projections (and torchvision ResNet teachers' downsample convolutions) are such convolutions, and
kdsearch trains channels_last, which pays on the CPU for residual and inverted students.

A 1x1 convolution with stride s and no padding is a stride-1 1x1 convolution of x[..., ::s, ::s]
(same weights, same output), whose backward pass never reaches the strided kernel. On the CPU,
while gradients are recorded, kdsearch computes it that way; elsewhere (GPUs, inference, latency
timing, ONNX export) the convolution runs as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SubsampledPointwise(nn.Conv2d):
    """A 1x1, strided, unpadded Conv2d that trains on the CPU as subsampling + a stride-1 1x1 conv
    (same parameters and state_dict as nn.Conv2d: checkpoints and specs are unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and torch.is_grad_enabled():
            sh, sw = self.stride
            return F.conv2d(x[..., ::sh, ::sw], self.weight, self.bias, 1, 0, 1, self.groups)
        return super().forward(x)


def strided_pointwise(module: nn.Module) -> bool:
    """A plain Conv2d whose kernel is 1x1, stride above 1, and no padding."""
    return (type(module) is nn.Conv2d and module.kernel_size == (1, 1) and module.stride != (1, 1)
            and module.padding in ((0, 0), "valid"))


def avoid_crashing_kernels(model: nn.Module) -> nn.Module:
    """Make every strided 1x1 convolution of `model` a SubsampledPointwise (in place; returns the model)."""
    for module in model.modules():
        if strided_pointwise(module):
            module.__class__ = SubsampledPointwise
    return model
