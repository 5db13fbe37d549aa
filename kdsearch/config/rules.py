"""Bounds of settings as pydantic metadata: each names what is allowed, and a refusal is one line.

A `Bound` sits in a setting's annotation (`Annotated[int, at_least(1)]`): pydantic runs it after the
type check, and its text ("an integer >= 1") is what the error says the value must be. `OneOf`
does the same for a fixed set of names. None (a default that is decided later) is never checked;
a list is checked entry by entry.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic_core import PydanticCustomError, core_schema


ERROR_TYPE = "kdsearch_rule"  # the pydantic error type of a broken Bound or OneOf (config.load prints it as is)


@dataclass(frozen=True)
class Bound:
    """A test of one value and what it must be, e.g. (v >= 1, "an integer >= 1")."""

    test: Callable[[Any], bool]
    text: str

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def check(self, value: Any) -> Any:
        if value is None:
            return value
        if isinstance(value, list):
            if not all(self.test(v) for v in value):
                raise refusal(f"every entry must be {self.text}", value)
        elif not self.test(value):
            raise refusal(f"must be {self.text}", value)
        return value


@dataclass(frozen=True)
class OneOf:
    """A name from a fixed set (a dataset, a sampler, ...)."""

    allowed: tuple[str, ...]

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def check(self, value: Any) -> Any:
        for v in value if isinstance(value, list) else [value]:
            if v not in self.allowed:
                raise PydanticCustomError(ERROR_TYPE, "{value} is not one of {allowed}",
                                          {"value": repr(v), "allowed": ", ".join(self.allowed)})
        return value


def refusal(text: str, value: Any) -> PydanticCustomError:
    """The error of a value that breaks a rule: '<text>, got <value>'."""
    return PydanticCustomError(ERROR_TYPE, "{text}, got {value}", {"text": text, "value": repr(value)})


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A finite int or float (never bool, NaN or infinity)."""
    return (is_int(v) or isinstance(v, float)) and math.isfinite(v)


def at_least(low: int, high: int | None = None) -> Bound:
    text = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    return Bound(lambda v: is_int(v) and v >= low and (high is None or v <= high), text)


def number(test: Callable[[float], bool], text: str) -> Bound:
    """A finite number (int or float, never bool, NaN or infinity) that passes test."""
    return Bound(lambda v: is_number(v) and test(v), f"a finite number {text}")


POSITIVE = number(lambda v: v > 0, "> 0")
NON_NEGATIVE = number(lambda v: v >= 0, ">= 0")
FRACTION = number(lambda v: 0 <= v < 1, "in [0, 1)")
FINITE = Bound(is_number, "a finite number")
NAME = Bound(lambda v: isinstance(v, str) and v.strip() != "", "a non-empty name")
