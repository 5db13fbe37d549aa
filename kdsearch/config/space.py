"""The [space] section: what each search-space entry is, its default, its bounds, and its check.

Each entry is a fixed value (not searched) or a list. For int/float entries a two-element list is a
[low, high] range; for "choice" entries a list is the set of choices. Student families must be
registered (models.students.registry): the check reads the registry.
"""

from __future__ import annotations

from typing import Any

from ..errors import KDSearchError
from ..models.students import registry  # registry.FAMILIES, looked up when checked (the dict may be swapped)
from ..models.students.space import DEFAULT_SPACE, SPACE_KINDS  # noqa: F401  (the space is the students')
from .rules import Bound, FRACTION, POSITIVE, at_least, is_int, number


# [space] lr when the study file leaves it out: a peak-lr range that suits the optimizer
DEFAULT_LR: dict[str, list[float]] = {"sgd": [0.05, 0.5], "adamw": [1e-3, 1e-2]}

# A fixed value, both ends of a range and every choice must pass the entry's rule (as the students'
# builders and the objective use each value).
SPACE_RULES: dict[str, Bound] = {
    "family": Bound(lambda v: isinstance(v, str) and v != "", "a student family name"),  # and registered
    "expand_ratio": at_least(1),
    "stages": at_least(1), "convs_per_stage": at_least(1), "channels": at_least(1), "fc_width": at_least(1),
    "width": at_least(1),
    "growth": number(lambda v: v >= 1, ">= 1"),
    "fc_layers": at_least(0),
    "kernel_size": Bound(lambda v: is_int(v) and v >= 1 and v % 2 == 1, "a positive odd integer"),  # padding k // 2
    "batch_norm": Bound(lambda v: isinstance(v, bool), "true or false"),
    "dropout": FRACTION, "temperature": POSITIVE, "alpha": number(lambda v: 0 <= v <= 1, "in [0, 1]"),
    "lr": POSITIVE,
}


def validate_space(space: dict[str, Any]) -> None:
    """Refuse an unknown entry, a malformed range or choice list, a value out of bounds or an
    unregistered family, in one line naming the entry (`space.dropout`) and the value."""
    for key, value in space.items():
        kind = SPACE_KINDS.get(key)
        if kind is None:
            raise KDSearchError(f"space: unknown parameter {key!r} (known: {', '.join(SPACE_KINDS)})")
        where, rule = f"space.{key}", SPACE_RULES[key]
        if isinstance(value, list) and kind == "choice" and not value:
            raise KDSearchError(f"{where}: the list of choices is empty")
        if isinstance(value, list) and kind != "choice" and len(value) != 2:
            raise KDSearchError(f"{where}: a range must be [low, high], got {value!r}")
        if not all(rule.test(v) for v in (value if isinstance(value, list) else [value])):
            what = ("the value" if not isinstance(value, list) else "each choice" if kind == "choice"
                    else "low and high")
            raise KDSearchError(f"{where}: {what} must be {rule.text}, got {value!r}")
        if isinstance(value, list) and kind != "choice" and value[0] > value[1]:
            raise KDSearchError(f"{where}: low {value[0]} is above high {value[1]}")
        if key == "family":
            unknown = [v for v in (value if isinstance(value, list) else [value]) if v not in registry.FAMILIES]
            if unknown:
                raise KDSearchError(f"{where}: unknown student family {unknown[0]!r} "
                                    f"(known: {', '.join(registry.FAMILIES)}), got {value!r}")
