"""Loading a StudyConfig: defaults <- study file <- overrides, or back from a run's run.json.

The values are merged first and validated once (config.schema), so a value in the file that a flag
replaces is never checked. Every refusal is one KDSearchError line that names the setting by its
dotted key ("train.batch_size", "space.dropout", "timeout" for [study]: the CLI prints messages as
rich markup, which would swallow a "[train]"), the value, and what is allowed.
"""

from __future__ import annotations

import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import KDSearchError
from .rules import ERROR_TYPE
from .schema import LEGACY_STUDY, LEGACY_TRAIN, SECTIONS, StudyConfig
from .space import DEFAULT_SPACE


def type_name(annotation: Any) -> str:
    """'int', 'float | None', 'list[float]': a setting's type as a user reads it."""
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        names = [type_name(a) for a in args]
        names = ["float" if n == "int" and "float" in names else n for n in names]  # ints go where floats do
        return " | ".join(dict.fromkeys(names))
    return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(a) for a in args)}]"


def _field(loc: tuple[str, ...]) -> tuple[type[BaseModel], str] | None:
    model: type[BaseModel] = StudyConfig
    for part in loc[:-1]:
        model = SECTIONS.get(part) if model is StudyConfig else None
        if model is None:
            return None
    return (model, loc[-1]) if loc[-1] in model.model_fields else None


def _known(model: type[BaseModel]) -> str:
    return ", ".join(k for k in model.model_fields if k not in SECTIONS and k != "space")


def one_line(exc: ValidationError, raw: dict[str, Any]) -> KDSearchError:
    """The first error of a validation as one line: '<setting>: <what is wrong>, got <value>'."""
    err = exc.errors()[0]
    raw_loc = [str(p) for p in err["loc"]]  # ('train', 'batch_size', ...): past the setting, list items and union members
    loc = tuple(raw_loc[:2] if raw_loc[0] in SECTIONS and len(raw_loc) > 1 else raw_loc[:1])
    dotted = ".".join(loc)
    if err["type"] == ERROR_TYPE:
        return KDSearchError(f"{dotted}: {err['msg']}")
    if err["type"] == "extra_forbidden":
        section = loc[:-1]
        model = SECTIONS[section[0]] if section else StudyConfig
        return KDSearchError(f"{'.'.join(section) or 'study'}: unknown key {loc[-1]!r} (known: {_known(model)})")
    value: Any = raw
    for part in loc:
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return KDSearchError(f"{dotted}: must not be empty")
    found = _field(loc)
    if found is None or loc[-1] in SECTIONS:
        return KDSearchError(f"{dotted}: expected a table of settings, got {value!r}")
    model, key = found
    return KDSearchError(f"{dotted}: expected {type_name(model.model_fields[key].annotation)}, got {value!r}")


def from_values(raw: dict[str, Any]) -> StudyConfig:
    """A StudyConfig from nested values ({"trials": 5, "data": {"subset": 100}, "space": {...}}), validated."""
    try:
        return StudyConfig.model_validate(raw)
    except ValidationError as exc:
        raise one_line(exc, raw) from None


def validate(cfg: StudyConfig) -> StudyConfig:
    """The config checked again (after code changed it in place): the same refusals as at load."""
    return from_values(cfg.to_dict())


def config_from_dict(values: dict[str, Any]) -> StudyConfig:
    """The inverse of StudyConfig.to_dict (as stored in a run's run.json), validated again.

    Settings added since the run was stored take the value it ran with (LEGACY_STUDY, LEGACY_TRAIN);
    its [space] is taken as stored, without today's defaults.
    """
    raw = {**LEGACY_STUDY, **{k: v for k, v in values.items() if k not in SECTIONS and k != "space"}}
    for key in SECTIONS:
        stored = values.get(key, {})
        raw[key] = {**LEGACY_TRAIN, **stored} if key == "train" and isinstance(stored, dict) else stored
    raw["space"] = dict(values.get("space", DEFAULT_SPACE))
    return from_values(raw)


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise KDSearchError(f"study file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise KDSearchError(f"invalid study file {path}: {exc}") from None
    known = ("study", *SECTIONS, "space")
    for key, value in raw.items():
        if key not in known:
            raise KDSearchError(f"{path}: unknown section [{key}] (known: {', '.join(known)})")
        if not isinstance(value, dict):
            raise KDSearchError(f"{path}: [{key}] must be a table")
    return raw


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Defaults <- study file <- overrides (dotted keys such as 'data.subset' or 'trials'; None = not given)."""
    raw: dict[str, Any] = {key: {} for key in SECTIONS}
    space = {k: v for k, v in DEFAULT_SPACE.items() if k != "lr"}  # lr left out: the optimizer's (config.schema)
    given_space: set[str] = set()
    if path is not None:
        for key, table in _read(Path(path)).items():
            if key == "study":
                raw.update(table)
            elif key == "space":
                space.update(table)
                given_space |= set(table)
            else:
                raw[key].update(table)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.rpartition(".")
        if section == "space":
            space[key] = value
            given_space.add(key)
        elif section in SECTIONS:
            raw[section][key] = value
        elif section:
            raise KDSearchError(f"--{dotted}: unknown section {section!r} (known: {', '.join(SECTIONS)}, space)")
        else:
            raw[key] = value
    if "channels" in given_space:  # per-stage widths, as before width and growth
        if {"width", "growth"} & given_space:
            raise KDSearchError("space: give either channels (a width per stage) or width and growth, not both")
        space.pop("width", None)
        space.pop("growth", None)
    raw["space"] = space
    return from_values(raw)
