"""Parts every student family shares: input normalization inside the model, conv-BN, the staged body, the head."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from ...errors import KDSearchError
from .spec import StudentSpec


class Normalize(nn.Module):
    """(x - mean) / std with per-channel buffers, so the model carries its preprocessing."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def normalize_layer(spec: StudentSpec) -> Normalize:
    return Normalize(spec.mean or [0.5] * spec.in_channels, spec.std or [0.25] * spec.in_channels)


def head_layers(c_in: int, spec: StudentSpec) -> list[nn.Module]:
    """Hidden FC layers (Linear, ReLU, optional dropout) and the classifier, after pooling."""
    layers: list[nn.Module] = []
    for width in spec.fc:
        layers += [nn.Linear(c_in, width), nn.ReLU(inplace=True)]
        if spec.dropout > 0:
            layers.append(nn.Dropout(spec.dropout))
        c_in = width
    layers.append(nn.Linear(c_in, spec.num_classes))
    return layers


def require_batch_norm(spec: StudentSpec) -> None:
    if not spec.batch_norm:
        raise KDSearchError(f"{spec.family} students always use batch norm (batch_norm must be true)")


def conv_bn(c_in: int, c_out: int, kernel_size: int, stride: int = 1, groups: int = 1,
             act: type[nn.Module] | None = None) -> nn.Sequential:
    """Conv (no bias, 'same' padding for odd kernels) + BN (+ activation)."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(c_out)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


def staged(spec: StudentSpec, stem: nn.Module, block: Callable[[int, int, int, int], nn.Module]) -> nn.Sequential:
    """normalize, stem, stages of spec.convs_per_stage blocks (stride 2 first in every stage after the
    first), global average pool, flatten, head. block(c_in, c_out, stride, stage) makes one block."""
    stages, c_in = [], spec.channels[0]
    for i, c_out in enumerate(spec.channels):
        blocks = []
        for j in range(spec.stage_depth(i)):
            blocks.append(block(c_in, c_out, 2 if i > 0 and j == 0 else 1, i))
            c_in = c_out
        stages.append(nn.Sequential(*blocks))
    return nn.Sequential(OrderedDict(normalize=normalize_layer(spec), stem=stem, stages=nn.Sequential(*stages),
                                     pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
                                     head=nn.Sequential(*head_layers(c_in, spec))))
