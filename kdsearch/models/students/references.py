"""Hand-written reference students: the networks a person would write down without a search.

A search earns its place only if its students beat these at equal size and equal training. Each
reference is a fixed architecture of one of the built-in families with stage widths in a fixed
ratio, so it scales to a parameter budget by its first stage's width alone (as a width multiplier
scales MobileNets), exports like any student and retrains with `kdsearch train`.

Their documented parameter counts (`Reference.params`) are at `base_width`, for 10 classes and
32-px RGB input:

- resnet8: MLPerf Tiny's image-classification ResNet-8 (3 stages of one basic block, 16-32-64).
- mobilenetv2-tiny: a MobileNetV2-style net at CIFAR scale (3 stages of two inverted-residual
  blocks, expansion 3, 16-32-64).
- vgg-tiny: a VGG-style plain net (3 stages of two 3x3 conv-BN-ReLU, 16-32-64, max-pool after each).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import KDSearchError
from .registry import build
from .spec import StudentSpec


@dataclass(frozen=True)
class Reference:
    family: str
    ratios: tuple[int, ...]  # stage widths = first width x ratio
    convs_per_stage: int
    base_width: int  # the published network's first width
    params: int  # at base_width, 10 classes, 32-px RGB (tests/test_references.py checks it)
    expand_ratio: int = 1
    kernel_size: int = 3
    about: str = ""


REFERENCES: dict[str, Reference] = {
    "resnet8": Reference("residual", (1, 2, 4), 1, 16, 78_042,
                         about="MLPerf Tiny's ResNet-8: res[16,32,64]x1 k3"),
    "mobilenetv2-tiny": Reference("inverted", (1, 2, 4), 2, 16, 53_738, expand_ratio=3,
                                  about="MobileNetV2-style: inv[16,32,64]x2 e3 k3"),
    "vgg-tiny": Reference("plain", (1, 2, 4), 2, 16, 72_954,
                          about="VGG-style: conv[16,32,64]x2 k3 bn"),
}


def reference(name: str) -> Reference:
    if name not in REFERENCES:
        raise KDSearchError(f"unknown reference {name!r} (known: {', '.join(REFERENCES)})")
    return REFERENCES[name]


def reference_spec(name: str, width: int | None = None, *, in_channels: int = 3, num_classes: int = 10,
                   image_size: int = 32, mean: list[float] | None = None,
                   std: list[float] | None = None) -> StudentSpec:
    """The reference `name` with first-stage width `width` (default: the published one)."""
    ref = reference(name)
    width = ref.base_width if width is None else width
    if width < 1:
        raise KDSearchError(f"reference {name}: width must be >= 1, got {width}")
    return StudentSpec(in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                       channels=[width * r for r in ref.ratios], convs_per_stage=ref.convs_per_stage,
                       kernel_size=ref.kernel_size, batch_norm=True, fc=[], dropout=0.0,
                       mean=list(mean or []), std=list(std or []), family=ref.family,
                       expand_ratio=ref.expand_ratio)


def spec_params(spec: StudentSpec) -> int:
    return sum(p.numel() for p in build(spec).parameters())


def scaled_reference(name: str, max_params: int, **data) -> StudentSpec | None:
    """The reference at the largest first width whose parameter count is at most `max_params`
    (None when even width 1 is over it). `data`: reference_spec's in_channels, num_classes,
    image_size, mean and std. Parameter counts grow with the width, so a binary search finds it."""
    lo, hi = 0, 1
    while spec_params(reference_spec(name, hi, **data)) <= max_params:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # params(lo) <= max_params < params(hi); width 0 stands for "none fits"
        mid = (lo + hi) // 2
        if spec_params(reference_spec(name, mid, **data)) <= max_params:
            lo = mid
        else:
            hi = mid
    return reference_spec(name, lo, **data) if lo else None
