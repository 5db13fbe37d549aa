"""Student CNNs: a StudentSpec (JSON round-trip), sampling one from a trial, and build(spec).

A student is a plain VGG-style CNN: stages of convs (optional batch norm, ReLU) each closed by
a 2x2 max-pool while the feature map is at least 2 pixels wide, global average pooling, then
fully connected layers. Input normalization lives inside the model, so an exported student
takes raw pixels in [0, 1].
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
import torch
from torch import nn

from .config import SPACE_KINDS
from .errors import KDSearchError


@dataclass
class StudentSpec:
    in_channels: int
    num_classes: int
    image_size: int
    channels: list[int]  # per stage
    convs_per_stage: int = 1
    kernel_size: int = 3
    batch_norm: bool = True
    fc: list[int] = field(default_factory=list)  # hidden FC widths
    dropout: float = 0.0
    mean: list[float] = field(default_factory=list)  # input normalization (per channel)
    std: list[float] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StudentSpec:
        try:
            return cls(**json.loads(text))
        except (json.JSONDecodeError, TypeError) as exc:
            raise KDSearchError(f"invalid student spec: {exc}") from None

    def summary(self) -> str:
        """One line, e.g. 'conv[16,32]x2 k3 bn | fc[64] drop0.1'."""
        conv = f"conv[{','.join(map(str, self.channels))}]x{self.convs_per_stage} k{self.kernel_size}"
        conv += " bn" if self.batch_norm else ""
        fc = f"fc[{','.join(map(str, self.fc))}]" if self.fc else "fc[]"
        return f"{conv} | {fc}" + (f" drop{self.dropout:.2f}" if self.dropout > 0 and self.fc else "")


class Normalize(nn.Module):
    """(x - mean) / std with per-channel buffers, so the model carries its preprocessing."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def build(spec: StudentSpec) -> nn.Module:
    """The nn.Sequential that a spec describes."""
    mean = spec.mean or [0.5] * spec.in_channels
    std = spec.std or [0.25] * spec.in_channels
    layers: list[nn.Module] = [Normalize(mean, std)]
    c_in, size = spec.in_channels, spec.image_size
    for c_out in spec.channels:
        for _ in range(spec.convs_per_stage):
            layers.append(nn.Conv2d(c_in, c_out, spec.kernel_size, padding=spec.kernel_size // 2,
                                    bias=not spec.batch_norm))
            if spec.batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
            c_in = c_out
        if size >= 2:
            layers.append(nn.MaxPool2d(2))
            size //= 2
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    for width in spec.fc:
        layers += [nn.Linear(c_in, width), nn.ReLU(inplace=True)]
        if spec.dropout > 0:
            layers.append(nn.Dropout(spec.dropout))
        c_in = width
    layers.append(nn.Linear(c_in, spec.num_classes))
    return nn.Sequential(*layers)


def suggest(trial: optuna.Trial, name: str, value: Any, kind: str) -> Any:
    """Sample one search-space entry as parameter `name`, or return it when it is fixed."""
    if not isinstance(value, list):
        return value
    if kind == "choice":
        return value[0] if len(value) == 1 else trial.suggest_categorical(name, value)
    low, high = value
    if low == high:
        return low
    if kind.startswith("int"):
        return trial.suggest_int(name, int(low), int(high), log=kind.endswith("log"))
    return trial.suggest_float(name, float(low), float(high), log=kind.endswith("log"))


def sample_spec(trial: optuna.Trial, space: dict[str, Any], in_channels: int, num_classes: int,
                image_size: int, mean: list[float], std: list[float]) -> StudentSpec:
    """Define-by-run sampling of a student (channels_i and fc_width_i exist per stage / layer)."""
    def pick(key: str, name: str | None = None) -> Any:
        return suggest(trial, name or key, space[key], SPACE_KINDS[key])

    channels = [pick("channels", f"channels_{i}") for i in range(pick("stages"))]
    fc = [pick("fc_width", f"fc_width_{i}") for i in range(pick("fc_layers"))]
    return StudentSpec(
        in_channels=in_channels, num_classes=num_classes, image_size=image_size,
        channels=channels,
        convs_per_stage=pick("convs_per_stage"),
        kernel_size=pick("kernel_size"),
        batch_norm=bool(pick("batch_norm")),
        fc=fc,
        dropout=pick("dropout") if fc else 0.0,
        mean=list(mean), std=list(std),
    )
