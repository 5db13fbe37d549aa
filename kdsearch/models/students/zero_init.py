"""Initialization that the training recipe chooses: residual blocks that start as identities."""

from __future__ import annotations

from torch import nn

from .inverted import InvertedResidual
from .residual import BasicBlock


def zero_init_last_bn(model: nn.Module) -> None:
    """Start every residual block as the identity: the scale of the last batch norm on its residual
    branch at zero (Goyal et al. 2017; torchvision's zero_init_residual, timm's zero_init_last).
    Only the initialization changes: the architecture, and a spec's saved weights, are the same."""
    for m in model.modules():
        if isinstance(m, BasicBlock):
            nn.init.zeros_(m.conv2[1].weight)
        elif isinstance(m, InvertedResidual) and m.residual:
            nn.init.zeros_(m.project[1].weight)
