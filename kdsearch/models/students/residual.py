"""The residual family: a ResNet-8/14-style CIFAR net.

A 3x3 conv-BN-ReLU stem, then stages of basic blocks (two k x k conv-BN with a ReLU between, added
to an identity shortcut, or to a 1x1 conv-BN projection where the shape changes, then ReLU).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import conv_bn, require_batch_norm, staged
from .registry import register_family
from .spec import StudentSpec


class BasicBlock(nn.Module):
    """ResNet basic block: ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x)); the shortcut is the
    identity, or a 1x1 conv-BN projection where the stride or the width changes."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int):
        super().__init__()
        self.conv1 = conv_bn(c_in, c_out, kernel_size, stride, act=nn.ReLU)
        self.conv2 = conv_bn(c_out, c_out, kernel_size)
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out
                         else conv_bn(c_in, c_out, 1, stride))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


@register_family("residual")
def build_residual(spec: StudentSpec) -> nn.Module:
    """3x3 conv-BN-ReLU stem to channels[0], stages of BasicBlocks, GAP, head (always batch norm)."""
    require_batch_norm(spec)
    stem = conv_bn(spec.in_channels, spec.channels[0], 3, act=nn.ReLU)
    return staged(spec, stem, lambda c_in, c_out, stride, i: BasicBlock(c_in, c_out, spec.stage_kernel(i), stride))
