"""Student CNNs: a StudentSpec (JSON round-trip), sampling one from a trial, and build(spec).

A student belongs to a family, and each family has one builder in FAMILIES (registered with
@register_family, as timm registers models):

- plain: a VGG-style CNN: stages of convs (optional batch norm, ReLU) each closed by a 2x2
  max-pool while the feature map is at least 2 pixels wide. The spec format and the module
  names of this family predate the others, so students saved before families existed load as
  they were.
- residual: a ResNet-8/14-style CIFAR net: a 3x3 conv-BN-ReLU stem, then stages of basic blocks
  (two k x k conv-BN with a ReLU between, added to an identity shortcut, or to a 1x1 conv-BN
  projection where the shape changes, then ReLU).
- inverted: a MobileNetV2-style net: a 3x3 conv-BN-ReLU6 stem, then stages of inverted-residual
  blocks (1x1 expansion conv-BN-ReLU6 by expand_ratio, skipped at ratio 1; k x k depthwise
  conv-BN-ReLU6; 1x1 projection conv-BN), added to the input where stride is 1 and the
  width is unchanged.

In every family the spec's channels are the per-stage widths, convs_per_stage the convs
(plain) or blocks (residual, inverted) per stage and kernel_size the kernel of those convs
(the depthwise kernel for inverted). Residual and inverted stages after the first start with
a stride-2 block. Batch norm is a searched choice only for plain: residual and inverted
students always use it (their shortcuts and depthwise convs train poorly without), so
batch_norm is True in their specs and is not sampled for them.

Every family ends in global average pooling and the same head: fully connected layers (ReLU,
optional dropout) and a linear classifier. Input normalization lives inside the model, so a
student, and its ONNX export, takes raw pixels in [0, 1] and returns logits.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
import torch
from torch import nn

from .config import DEFAULT_SPACE, SPACE_KINDS
from .errors import KDSearchError
from .kernels import avoid_crashing_kernels


@dataclass
class StudentSpec:
    in_channels: int
    num_classes: int
    image_size: int
    channels: list[int]  # per stage
    convs_per_stage: int = 1  # convs (plain) or blocks (residual, inverted) per stage
    kernel_size: int = 3  # of the stage convs (the depthwise conv for inverted)
    batch_norm: bool = True  # plain only: residual and inverted always use batch norm
    fc: list[int] = field(default_factory=list)  # hidden FC widths
    dropout: float = 0.0
    mean: list[float] = field(default_factory=list)  # input normalization (per channel)
    std: list[float] = field(default_factory=list)
    family: str = "plain"  # a key of FAMILIES (absent from specs saved before families: plain)
    expand_ratio: int = 1  # inverted only: hidden width = input width * expand_ratio

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StudentSpec:
        try:
            return cls(**json.loads(text))
        except (json.JSONDecodeError, TypeError) as exc:
            raise KDSearchError(f"invalid student spec: {exc}") from None

    def summary(self) -> str:
        """One line, e.g. 'conv[16,32]x2 k3 bn | fc[64] drop0.10', 'res[16,32]x2 k3 | fc[]',
        'inv[16,24]x2 e4 k3 | fc[]'."""
        tag = {"plain": "conv", "residual": "res", "inverted": "inv"}.get(self.family, self.family)
        body = f"{tag}[{','.join(map(str, self.channels))}]x{self.convs_per_stage}"
        body += f" e{self.expand_ratio}" if self.family == "inverted" else ""
        body += f" k{self.kernel_size}"
        body += " bn" if self.family == "plain" and self.batch_norm else ""
        fc = f"fc[{','.join(map(str, self.fc))}]" if self.fc else "fc[]"
        return f"{body} | {fc}" + (f" drop{self.dropout:.2f}" if self.dropout > 0 and self.fc else "")


class Normalize(nn.Module):
    """(x - mean) / std with per-channel buffers, so the model carries its preprocessing."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


Builder = Callable[[StudentSpec], nn.Module]
FAMILIES: dict[str, Builder] = {}  # family name -> builder, in registration order


def register_family(name: str) -> Callable[[Builder], Builder]:
    """Decorator: `@register_family("name")` makes a builder the one for StudentSpec.family == name."""
    def add(fn: Builder) -> Builder:
        if name in FAMILIES:
            raise ValueError(f"student family {name!r} is registered twice")
        FAMILIES[name] = fn
        return fn
    return add


def build(spec: StudentSpec) -> nn.Module:
    """The model that a spec describes (an nn.Sequential), built by its family's builder."""
    builder = FAMILIES.get(spec.family)
    if builder is None:
        raise KDSearchError(f"unknown student family {spec.family!r} (known: {', '.join(FAMILIES)})")
    return avoid_crashing_kernels(builder(spec))  # a torch CPU crash (kdsearch.kernels)


def _normalize(spec: StudentSpec) -> Normalize:
    return Normalize(spec.mean or [0.5] * spec.in_channels, spec.std or [0.25] * spec.in_channels)


def _head(c_in: int, spec: StudentSpec) -> list[nn.Module]:
    """Hidden FC layers (Linear, ReLU, optional dropout) and the classifier, after pooling."""
    layers: list[nn.Module] = []
    for width in spec.fc:
        layers += [nn.Linear(c_in, width), nn.ReLU(inplace=True)]
        if spec.dropout > 0:
            layers.append(nn.Dropout(spec.dropout))
        c_in = width
    layers.append(nn.Linear(c_in, spec.num_classes))
    return layers


def _always_bn(spec: StudentSpec) -> None:
    if not spec.batch_norm:
        raise KDSearchError(f"{spec.family} students always use batch norm (batch_norm must be true)")


@register_family("plain")
def build_plain(spec: StudentSpec) -> nn.Module:
    """Stages of conv (+BN) + ReLU, 2x2 max-pool per stage; one flat nn.Sequential (module names 0, 1, ...)."""
    layers: list[nn.Module] = [_normalize(spec)]
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
    layers += _head(c_in, spec)
    return nn.Sequential(*layers)


def _conv_bn(c_in: int, c_out: int, kernel_size: int, stride: int = 1, groups: int = 1,
             act: type[nn.Module] | None = None) -> nn.Sequential:
    """Conv (no bias, 'same' padding for odd kernels) + BN (+ activation)."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(c_out)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


def _staged(spec: StudentSpec, stem: nn.Module, block: Callable[[int, int, int], nn.Module]) -> nn.Sequential:
    """normalize, stem, stages of spec.convs_per_stage blocks (stride 2 first in every stage after the
    first), global average pool, flatten, head. block(c_in, c_out, stride) makes one block."""
    stages, c_in = [], spec.channels[0]
    for i, c_out in enumerate(spec.channels):
        blocks = []
        for j in range(spec.convs_per_stage):
            blocks.append(block(c_in, c_out, 2 if i > 0 and j == 0 else 1))
            c_in = c_out
        stages.append(nn.Sequential(*blocks))
    return nn.Sequential(OrderedDict(normalize=_normalize(spec), stem=stem, stages=nn.Sequential(*stages),
                                     pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
                                     head=nn.Sequential(*_head(c_in, spec))))


class BasicBlock(nn.Module):
    """ResNet basic block: ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x)); the shortcut is the
    identity, or a 1x1 conv-BN projection where the stride or the width changes."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int):
        super().__init__()
        self.conv1 = _conv_bn(c_in, c_out, kernel_size, stride, act=nn.ReLU)
        self.conv2 = _conv_bn(c_out, c_out, kernel_size)
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out
                         else _conv_bn(c_in, c_out, 1, stride))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


@register_family("residual")
def build_residual(spec: StudentSpec) -> nn.Module:
    """3x3 conv-BN-ReLU stem to channels[0], stages of BasicBlocks, GAP, head (always batch norm)."""
    _always_bn(spec)
    stem = _conv_bn(spec.in_channels, spec.channels[0], 3, act=nn.ReLU)
    return _staged(spec, stem, lambda c_in, c_out, stride: BasicBlock(c_in, c_out, spec.kernel_size, stride))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand conv-BN-ReLU6 (absent at ratio 1), k x k depthwise conv-BN-ReLU6
    (carrying the stride), 1x1 project conv-BN (linear); plus the input where stride 1 keeps the shape."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = c_in * expand_ratio
        self.expand = _conv_bn(c_in, hidden, 1, act=nn.ReLU6) if expand_ratio != 1 else nn.Identity()
        self.depthwise = _conv_bn(hidden, hidden, kernel_size, stride, groups=hidden, act=nn.ReLU6)
        self.project = _conv_bn(hidden, c_out, 1)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.residual else out


@register_family("inverted")
def build_inverted(spec: StudentSpec) -> nn.Module:
    """3x3 conv-BN-ReLU6 stem to channels[0], stages of InvertedResiduals, GAP, head (always batch norm)."""
    _always_bn(spec)
    if spec.expand_ratio < 1:
        raise KDSearchError(f"inverted students need expand_ratio >= 1, got {spec.expand_ratio}")
    stem = _conv_bn(spec.in_channels, spec.channels[0], 3, act=nn.ReLU6)
    return _staged(spec, stem, lambda c_in, c_out, stride: InvertedResidual(c_in, c_out, spec.kernel_size, stride,
                                                                            spec.expand_ratio))


def zero_init_last_bn(model: nn.Module) -> None:
    """Start every residual block as the identity: the scale of the last batch norm on its residual
    branch at zero (Goyal et al. 2017; torchvision's zero_init_residual, timm's zero_init_last).
    Only the initialization changes: the architecture, and a spec's saved weights, are the same."""
    for m in model.modules():
        if isinstance(m, BasicBlock):
            nn.init.zeros_(m.conv2[1].weight)
        elif isinstance(m, InvertedResidual) and m.residual:
            nn.init.zeros_(m.project[1].weight)


# [space] keys that only some families use: sampled only for those, irrelevant to a space without them.
FAMILY_KEYS: dict[str, tuple[str, ...]] = {"batch_norm": ("plain",), "expand_ratio": ("inverted",)}
# The value of a [space] key missing from a space stored before the key existed (an old run's run.json).
LEGACY_SPACE: dict[str, Any] = {"family": "plain"}


def space_families(space: dict[str, Any]) -> list[str]:
    """The families a space can sample (a missing `family` key means plain, as before families)."""
    family = space.get("family", LEGACY_SPACE["family"])
    return list(family) if isinstance(family, list) else [family]


def effective_space(space: dict[str, Any]) -> dict[str, Any]:
    """The space as its trials see it, for comparing a resumed run's settings with the stored ones:
    keys added since a run started get the value that run had (family: plain), and keys that no
    family of the space uses (expand_ratio without inverted, batch_norm without plain) are dropped."""
    out = {**LEGACY_SPACE, **space}
    families = space_families(out)
    unused = {key for key, users in FAMILY_KEYS.items() if not set(users) & set(families)}
    return {k: v for k, v in out.items() if k not in unused}


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
    """Define-by-run sampling of a student: `family` first, then the stages and their widths (a base
    `width` multiplied by `growth` from stage to stage, or, in a space with `channels`, channels_i
    per stage), fc_width_i per layer, and batch_norm (plain) or expand_ratio (inverted) only for the
    family that uses it.

    A key missing from `space` (a run stored before it existed) takes LEGACY_SPACE's value, else
    DEFAULT_SPACE's. A fixed family leaves the order of the other draws as it was before families.
    """
    def pick(key: str, name: str | None = None) -> Any:
        value = space[key] if key in space else LEGACY_SPACE.get(key, DEFAULT_SPACE[key])
        return suggest(trial, name or key, value, SPACE_KINDS[key])

    family = pick("family")
    stages = pick("stages")
    if "channels" in space:  # one width per stage, sampled independently (spaces before width and growth)
        channels = [pick("channels", f"channels_{i}") for i in range(stages)]
    else:  # widths that grow with depth, as in ResNets and MobileNets
        width, growth = pick("width"), pick("growth")
        channels = [int(width * growth ** i + 0.5) for i in range(stages)]
    fc = [pick("fc_width", f"fc_width_{i}") for i in range(pick("fc_layers"))]
    return StudentSpec(
        in_channels=in_channels, num_classes=num_classes, image_size=image_size,
        channels=channels,
        convs_per_stage=pick("convs_per_stage"),
        kernel_size=pick("kernel_size"),
        batch_norm=bool(pick("batch_norm")) if family == "plain" else True,
        fc=fc,
        dropout=pick("dropout") if fc else 0.0,
        mean=list(mean), std=list(std),
        family=family,
        expand_ratio=pick("expand_ratio") if family == "inverted" else 1,
    )
