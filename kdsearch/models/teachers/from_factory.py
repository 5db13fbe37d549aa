"""Teacher bodies from the user's code: `package.module:function(num_classes=, in_channels=)`."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from ...errors import KDSearchError
from .checkpoints import load_checked, load_checkpoint, short
from .normalization import DATA_STATISTICS
from .registry import TEACHERS
from .wrapper import Body, as_floats


def _import_factory(spec: str) -> Callable[..., Any]:
    """`package.module:function` (or `:Class.method`) -> the callable; every failure is one line."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise KDSearchError(f"teacher {spec!r}: expected package.module:function, timm:NAME or a registered "
                            f"name ({', '.join(TEACHERS)})")
    try:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # `kdsearch` as a console script has no cwd on sys.path
            cwd, top = os.getcwd(), module_name.split(".")[0]
            local = Path(cwd, top).is_dir() or Path(cwd, f"{top}.py").is_file()
            if exc.name != top or not local or cwd in sys.path or "" in sys.path:
                raise
            sys.path.append(cwd)
            module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001  (an import can fail any way; the user fixes their module)
        raise KDSearchError(f"teacher {spec}: cannot import {module_name} "
                            f"({type(exc).__name__}: {short(exc)})") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise KDSearchError(f"teacher {spec}: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise KDSearchError(f"teacher {spec}: {attr} is not callable (it is a {type(obj).__name__} value)")
    return obj


def factory_body(spec: str, num_classes: int, in_channels: int, image_size: int, weights: str | Path | None,
                  trust_pickle: bool, input_size: int | None, data_mean: tuple[float, ...],
                  data_std: tuple[float, ...], notes: list[str]) -> Body:
    """`package.module:factory`: factory(num_classes=, in_channels=) -> nn.Module (the contract: docs/teachers.md)."""
    factory = _import_factory(spec)
    try:
        body = factory(num_classes=num_classes, in_channels=in_channels)
    except Exception as exc:  # noqa: BLE001
        raise KDSearchError(f"teacher factory {spec} failed for num_classes={num_classes}, in_channels={in_channels} "
                            f"({type(exc).__name__}: {short(exc)})") from None
    if not isinstance(body, nn.Module):
        raise KDSearchError(f"teacher factory {spec} returned a {type(body).__name__}, not a torch nn.Module")
    source = "factory" if getattr(body, "kdsearch_trained", False) else "random"
    if weights is not None:
        load_checked(body, load_checkpoint(weights, trust_pickle), spec, weights)
        source = "file"
    mean, std = as_floats(getattr(body, "kdsearch_mean", None)), as_floats(getattr(body, "kdsearch_std", None))
    if (mean is None) != (std is None):
        raise KDSearchError(f"teacher factory {spec}: declare kdsearch_mean and kdsearch_std together")
    auto = (mean, std, "the factory's kdsearch_mean/kdsearch_std") if mean else \
        (data_mean, data_std, DATA_STATISTICS)
    declared = getattr(body, "kdsearch_input_size", None)
    if input_size is None and declared is not None:
        if not isinstance(declared, int) or isinstance(declared, bool) or declared < 1:
            raise KDSearchError(f"teacher factory {spec}: kdsearch_input_size must be a positive integer, "
                                f"got {declared!r}")
        input_size = declared
    return Body(body, source, input_size or image_size, 1, auto)
