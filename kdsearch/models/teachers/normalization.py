"""How a teacher's input is normalized: explicit mean/std > a preset > "auto" (per source of weights)."""

from __future__ import annotations

import math

from ...errors import KDSearchError
from .wrapper import Body


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DATA_STATISTICS = "the data's statistics"  # the normalization a teacher gets from the training split

NORMALIZE_PRESETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {  # [teacher] normalize = NAME
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
NORMALIZE = ("auto", *NORMALIZE_PRESETS, "data", "none")  # the values of [teacher] normalize


def resolve_normalization(normalize: str, mean: tuple[float, ...] | None, std: tuple[float, ...] | None,
                           built: Body, in_channels: int, data_mean: tuple[float, ...],
                           data_std: tuple[float, ...]) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    """(mean, std, what they are) for the body's input: explicit mean/std > normalize preset > auto."""
    channels = in_channels * built.repeat
    if mean is not None or std is not None:
        if mean is None or std is None:
            raise KDSearchError("teacher.mean and teacher.std go together: give both or neither")
        given = []
        for label, values in (("mean", mean), ("std", std)):
            if len(values) == in_channels and built.repeat > 1:
                values = values * built.repeat  # one value per data channel, repeated with the channels
            if len(values) != channels:
                raise KDSearchError(f"teacher.{label} has {len(values)} values; the teacher takes {channels}-channel "
                                    f"input")
            given.append(values)
        result = (given[0], given[1], "the given mean/std")
    elif normalize == "auto":
        result = built.auto
    elif normalize == "data":
        result = (data_mean * built.repeat, data_std * built.repeat, DATA_STATISTICS)
    elif normalize == "none":
        result = ((0.0,) * channels, (1.0,) * channels, "no normalization (raw [0, 1] pixels)")
    else:  # a NORMALIZE_PRESETS name (build_teacher checked it before building anything)
        if channels != 3:
            raise KDSearchError(f"teacher.normalize {normalize!r} is for 3-channel input; the teacher takes "
                                f"{channels}-channel input: use data, none or teacher.mean/std")
        result = (*NORMALIZE_PRESETS[normalize], f"{normalize} statistics")
    m, s, what = result
    if len(m) != len(s) or not all(math.isfinite(v) for v in (*m, *s)) or not all(v > 0 for v in s):
        raise KDSearchError(f"teacher normalization ({what}): mean {list(m)} and std {list(s)} must be finite, "
                            "of equal length, with every std > 0")
    return tuple(m), tuple(s), what


def format_values(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
