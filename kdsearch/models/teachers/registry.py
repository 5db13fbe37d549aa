"""The registered teacher architectures (CIFAR ResNets, torchvision ResNets, inception_v3) and where their parts are."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from torch import nn

from ...errors import KDSearchError
from .cifar_resnet import CifarResNet


@dataclass(frozen=True)
class TeacherArch:
    """How to build one architecture and where its parts are."""

    build: Callable[[int, int, bool], nn.Module]  # (num_classes, in_channels, small_stem) -> random body
    head: str  # attribute of the final nn.Linear
    stem: str  # state-dict key of the first conv's weight
    imagenet_input: int | None = None  # input size of its ImageNet weights (None: none exist)
    min_input: int = 1  # smallest input size the body accepts


def _cifar_resnet(depth: int, num_classes: int, in_channels: int, small_stem: bool) -> nn.Module:
    return CifarResNet(depth, num_classes, in_channels)


def _tv_resnet(name: str, num_classes: int, in_channels: int, small_stem: bool) -> nn.Module:
    """torchvision ResNet; the small-image stem is a 3x3 stride-1 conv1 and no max-pool."""
    import torchvision  # slow to import: only torchvision architectures need it

    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if small_stem:
        model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


def _inception_v3(num_classes: int, in_channels: int, small_stem: bool) -> nn.Module:
    """Inception v3 without the auxiliary head (3 input channels; grayscale is repeated)."""
    import torchvision  # slow to import: only torchvision architectures need it

    return torchvision.models.get_model("inception_v3", weights=None, num_classes=num_classes,
                                        aux_logits=False, init_weights=True, transform_input=False)


TEACHERS: dict[str, TeacherArch] = {
    **{f"resnet{d}": TeacherArch(partial(_cifar_resnet, d), "linear", "conv1.weight")
       for d in (20, 32, 44, 56, 110)},
    **{f"resnet{d}": TeacherArch(partial(_tv_resnet, f"resnet{d}"), "fc", "conv1.weight", imagenet_input=224)
       for d in (18, 34, 50, 101)},
    "inception_v3": TeacherArch(_inception_v3, "fc", "Conv2d_1a_3x3.conv.weight", imagenet_input=299, min_input=75),
}


def teacher_names() -> list[str]:
    return list(TEACHERS)


def get_arch(name: str) -> TeacherArch:
    if name not in TEACHERS:
        raise KDSearchError(f"unknown teacher {name!r} (known: {', '.join(TEACHERS)}; "
                            "or timm:NAME, or package.module:function)")
    return TEACHERS[name]
