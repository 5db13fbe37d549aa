"""The fixed students the benchmarks train and time, by name: one definition, so that a name means
the same network in every benchmark and in BENCHMARKS.md (benchmarks/ is on sys.path when a
benchmark runs as a script)."""

from __future__ import annotations

from kdsearch.models.students.spec import StudentSpec

STUDENTS: dict[str, dict] = {
    "res8": dict(family="residual", channels=[16, 32, 64]),  # MLPerf Tiny's ResNet-8, 78,042 params
    # two plain students of the committed CIFAR-10 run (results/cifar10-resnet32 trials 18 and 15)
    "plain15k": dict(channels=[10, 13, 29], convs_per_stage=2),
    "plain50k": dict(channels=[6, 17, 63], convs_per_stage=2),
    "inv50k": dict(family="inverted", channels=[16, 32, 64], convs_per_stage=2, expand_ratio=3),  # MobileNetV2-style
    "plain6k": dict(channels=[8, 16, 32]),  # 6,418 params
    "plain-aligned": dict(channels=[16, 32, 64], convs_per_stage=2),
    "odd-res": dict(family="residual", channels=[12, 18, 27], convs_per_stage=2),
    "odd-inv": dict(family="inverted", channels=[11, 17, 25], convs_per_stage=2, expand_ratio=3),
    # the v2 CIFAR-10 search's front (results/cifar10-resnet32-v2)
    "conv18x4": dict(channels=[18, 18, 18, 18]),
    "conv37x4": dict(channels=[37, 37, 37, 37]),
    # its final-training picks at 1/100 and 1/30 of the teacher (trials 25 and 18; 1/10 is trial 26, conv37x4)
    "conv10x4": dict(channels=[10, 10, 10, 10]),
    "conv23x4": dict(channels=[23, 23, 23, 23]),
}


def student_spec(name: str, in_channels: int = 3, num_classes: int = 10, image_size: int = 32,
                 **data) -> StudentSpec:
    """The named student for data of that shape (CIFAR-10's by default); `data`: mean and std."""
    return StudentSpec(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **data,
                       **STUDENTS[name])
