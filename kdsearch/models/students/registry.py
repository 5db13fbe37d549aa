"""The student families: `@register_family(name)` adds a builder, `build(spec)` calls it.

As timm registers models: a family is a name and a builder of nn.Modules from a StudentSpec. The
built-in families (plain, residual, inverted) register themselves when kdsearch.models.students is
imported; a user's module registers its own the same way.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ...errors import KDSearchError
from ..kernels import avoid_crashing_kernels
from .spec import StudentSpec


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
    return avoid_crashing_kernels(builder(spec))  # a torch CPU crash (kdsearch.models.kernels)
