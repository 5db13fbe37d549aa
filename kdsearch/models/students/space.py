"""Sampling a student from the search space, define-by-run, and the space as a run's trials see it."""

from __future__ import annotations

from typing import Any

import optuna

from .spec import StudentSpec


# The search space: each entry is a fixed value (not searched) or a list. For int/float entries a
# two-element list is a [low, high] range; for "choice" entries a list is the set of choices.
SPACE_KINDS: dict[str, str] = {
    "family": "choice",  # student families (models.students.registry.FAMILIES): plain, residual, inverted
    "stages": "int",
    "convs_per_stage": "int",
    "width": "int_log",  # channels of the first stage; stage i has round(width * growth**i)
    "growth": "choice",  # width multiplier from one stage to the next
    "channels": "int_log",  # instead of width and growth: sampled per stage as channels_0, channels_1, ...
    "kernel_size": "choice",
    "batch_norm": "choice",  # plain only (residual and inverted always use batch norm)
    "expand_ratio": "int",  # inverted only: width multiplier of the 1x1 expansion
    "fc_layers": "int",
    "fc_width": "int_log",  # sampled per layer as fc_width_0, ...
    "dropout": "float",
    "temperature": "float",
    "alpha": "float",
    "lr": "float_log",
}

DEFAULT_SPACE: dict[str, Any] = {
    "family": ["plain", "residual", "inverted"],
    "stages": [1, 4],
    "convs_per_stage": [1, 2],
    "width": [8, 64],
    "growth": [1.0, 1.5, 2.0],
    "kernel_size": [3, 5],
    "batch_norm": [True, False],
    "expand_ratio": [2, 6],
    "fc_layers": [0, 2],
    "fc_width": [16, 256],
    "dropout": [0.0, 0.5],
    # fixed, not searched: a short trial cannot see what the teacher is worth. At a search trial's budget
    # (3 epochs on 10,000 CIFAR-10 images) alpha 0.9 scores below no teacher and a sampled alpha comes out
    # small, which buys nothing at the final budget; at 10 epochs and more T 4, alpha 0.9 adds 1.8-2.5
    # points to every fixed student measured (docs/search.md, "The teacher's weight"). A study file may
    # still give ranges, e.g. temperature = [1.0, 10.0], alpha = [0.0, 1.0].
    "temperature": 4.0,
    "alpha": 0.9,
    "lr": [1e-3, 1e-2],
}

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
