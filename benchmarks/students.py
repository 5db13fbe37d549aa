"""The fixed students the benchmarks train and time, by name: one definition, so that a name means the
same network in every benchmark and in BENCHMARKS.md."""

from __future__ import annotations

from kdsearch.models.students import StudentSpec

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
    # two inverted students the v3 CIFAR-10 search promoted (results/cifar10-resnet32-v3 trials 76 and 80)
    "inv16e5": dict(family="inverted", channels=[16], convs_per_stage=2, expand_ratio=5),
    "inv15x4e6": dict(family="inverted", channels=[15, 15, 15, 15], expand_ratio=6),
    # the throughput and torch.compile benchmarks' three sizes (16, 230 and 913 MFLOP a training image)
    "tiny-fc64": dict(channels=[16, 32, 64], fc=[64]),
    "conv32x2": dict(channels=[32, 64, 128], convs_per_stage=2),
    "conv64x2": dict(channels=[64, 128, 256], convs_per_stage=2),
    # the per-trial speed benchmark's other two (with tiny-fc64)
    "conv32-64x2": dict(channels=[32, 64], convs_per_stage=2),
    "k5-no-bn": dict(channels=[8, 16, 32], kernel_size=5, batch_norm=False),
}
SIZES = ("tiny-fc64", "conv32x2", "conv64x2")  # throughput, compile
TRIAL_STUDENTS = ("tiny-fc64", "conv32-64x2", "k5-no-bn")  # trial-speed


def student_spec(name: str, in_channels: int = 3, num_classes: int = 10, image_size: int = 32,
                 **data) -> StudentSpec:
    """The named student for data of that shape (CIFAR-10's by default); `data`: mean and std."""
    return StudentSpec(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **data,
                       **STUDENTS[name])
