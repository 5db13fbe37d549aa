"""The inverted family: a MobileNetV2-style net.

A 3x3 conv-BN-ReLU6 stem, then stages of inverted-residual blocks (1x1 expansion conv-BN-ReLU6 by
expand_ratio, skipped at ratio 1; k x k depthwise conv-BN-ReLU6; 1x1 projection conv-BN), added to
the input where stride is 1 and the width is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import KDSearchError
from .layers import conv_bn, require_batch_norm, staged
from .registry import register_family
from .spec import StudentSpec


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand conv-BN-ReLU6 (absent at ratio 1), k x k depthwise conv-BN-ReLU6
    (carrying the stride), 1x1 project conv-BN (linear); plus the input where stride 1 keeps the shape."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = c_in * expand_ratio
        self.expand = conv_bn(c_in, hidden, 1, act=nn.ReLU6) if expand_ratio != 1 else nn.Identity()
        self.depthwise = conv_bn(hidden, hidden, kernel_size, stride, groups=hidden, act=nn.ReLU6)
        self.project = conv_bn(hidden, c_out, 1)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.residual else out


@register_family("inverted")
def build_inverted(spec: StudentSpec) -> nn.Module:
    """3x3 conv-BN-ReLU6 stem to channels[0], stages of InvertedResiduals, GAP, head (always batch norm)."""
    require_batch_norm(spec)
    ratios = spec.expand_ratios if spec.expand_ratios is not None else [spec.expand_ratio]
    if min(ratios) < 1:
        raise KDSearchError(f"inverted students need expand_ratio >= 1, got {min(ratios)}")
    stem = conv_bn(spec.in_channels, spec.channels[0], 3, act=nn.ReLU6)
    return staged(spec, stem, lambda c_in, c_out, stride, i: InvertedResidual(c_in, c_out, spec.stage_kernel(i), stride,
                                                                               spec.stage_expand(i)))
