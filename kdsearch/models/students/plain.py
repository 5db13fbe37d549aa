"""The plain family: a VGG-style CNN.

Stages of convs (optional batch norm, ReLU) each closed by a 2x2 max-pool while the feature map is
at least 2 pixels wide. The spec format and the module names of this family predate the others,
so students saved before families existed load as they were.
"""

from __future__ import annotations

from torch import nn

from .layers import head_layers, normalize_layer
from .registry import register_family
from .spec import StudentSpec


@register_family("plain")
def build_plain(spec: StudentSpec) -> nn.Module:
    """Stages of conv (+BN) + ReLU, 2x2 max-pool per stage; one flat nn.Sequential (module names 0, 1, ...)."""
    layers: list[nn.Module] = [normalize_layer(spec)]
    c_in, size = spec.in_channels, spec.image_size
    for i, c_out in enumerate(spec.channels):
        k = spec.stage_kernel(i)
        for _ in range(spec.stage_depth(i)):
            layers.append(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=not spec.batch_norm))
            if spec.batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
            c_in = c_out
        if size >= 2:
            layers.append(nn.MaxPool2d(2))
            size //= 2
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    layers += head_layers(c_in, spec)
    return nn.Sequential(*layers)
