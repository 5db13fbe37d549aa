"""TeacherNet: the wrapper that adapts any teacher body to the data, and what a source of bodies hands back.

The wrapper takes float images in [0, 1] at the dataset's native size and returns logits: it repeats
grayscale channels, normalizes and resizes for the body, so callers (the logit cache, the training
loop) never need to know where a teacher came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import KDSearchError


SMALL_IMAGE = 64  # inputs up to this size get the small-image ResNet stem when trained from scratch


class TeacherNet(nn.Module):
    """Raw [0, 1] images at the data's size -> logits: repeat channels, normalize, resize, body."""

    def __init__(self, body: nn.Module, mean: tuple[float, ...], std: tuple[float, ...],
                 input_size: int | None = None, in_channels_repeat: int = 1):
        super().__init__()
        self.body = body
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.input_size = input_size  # None = as given
        self.in_channels_repeat = in_channels_repeat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_channels_repeat > 1:
            x = x.repeat(1, self.in_channels_repeat, 1, 1)
        x = (x - self.mean) / self.std
        s = self.input_size
        if s is not None and (x.shape[-2] != s or x.shape[-1] != s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=False)
        out = self.body(x)
        return out if isinstance(out, torch.Tensor) else out.logits  # InceptionOutputs in train mode

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, in_channels_repeat={self.in_channels_repeat}"


@dataclass
class TeacherInfo:
    """How a teacher was built: what its weights are and what the caller must know."""

    name: str
    source: str  # "file", "imagenet" (torchvision), "pretrained" (timm), "factory" (declared trained) or "random"
    head_replaced: bool
    input_size: int  # what the body sees
    notes: list[str] = field(default_factory=list)
    normalization: str = ""  # what mean/std are, e.g. "imagenet statistics", DATA_STATISTICS
    mean: tuple[float, ...] = ()  # the body's input normalization (TeacherNet's buffers)
    std: tuple[float, ...] = ()

    @property
    def fits_data(self) -> bool:
        """Trained weights whose classifier already has the dataset's classes."""
        return self.source != "random" and not self.head_replaced


def as_floats(value: Any) -> tuple[float, ...] | None:
    """A mean or std given as a list, tuple or tensor -> a tuple of floats (None stays None)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.detach().flatten().tolist()
    return tuple(float(v) for v in value)


@dataclass
class Body:
    """What one way of building (registry, timm, factory) hands to build_teacher."""

    body: nn.Module
    source: str
    input_size: int
    repeat: int  # grayscale data repeated this many times for a multi-channel body
    auto: tuple[tuple[float, ...], tuple[float, ...], str]  # normalize "auto": mean, std, what they are
    head_replaced: bool = False


def channel_repeat(name: str, body_channels: int, in_channels: int) -> int:
    if body_channels == in_channels:
        return 1
    if in_channels == 1:
        return body_channels
    raise KDSearchError(f"teacher {name} takes {body_channels}-channel images, the data has {in_channels} channels")
