"""StudyConfig: defaults, TOML study files, CLI overrides and validation.

A study file has the sections [study], [data], [teacher], [train] and [space]; every key is
optional and falls back to the defaults below. CLI flags override file values. Unknown keys
and wrong types are errors (KDSearchError), so a typo never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import KDSearchError

DATASETS = ("cifar10", "cifar100", "mnist", "fashion-mnist", "svhn", "imagefolder", "digits")
SAMPLERS = ("tpe", "nsga2", "gp", "random")
PRUNERS = ("pareto", "median", "asha", "none")
DEVICES = ("auto", "cpu", "cuda", "mps")
OBJECTIVES = ("accuracy", "params", "latency", "macs")


@dataclass
class DataConfig:
    dataset: str = "cifar10"
    data_dir: str | None = None  # torchvision root, or the imagefolder folder / .tar.gz
    val_fraction: float = 0.1  # carved from the training data, stratified and seeded
    subset: int = 0  # students train on a stratified subset of this many images (0 = all)
    download: bool = True  # torchvision datasets: try to download when missing
    pad: int | None = None  # random-crop padding in pixels (None = dataset default)
    flip: bool | None = None  # horizontal flip (None = dataset default)


@dataclass
class TeacherConfig:
    name: str = "resnet50"
    weights: str | None = None  # a checkpoint file for the named architecture
    trust_pickle: bool = False  # allow full (unsafe) unpickling of the checkpoint
    pretrained: bool = True  # torchvision names: try ImageNet weights
    input_size: int | None = None  # None = default per teacher
    epochs: int | None = None  # None = auto: 0 if the weights already fit the dataset, else 10
    lr: float | None = None  # None = default (fine-tune vs from scratch)
    batch_size: int = 128


@dataclass
class TrainConfig:
    """How each student is trained (fixed per study; T, alpha and lr are in [space])."""

    batch_size: int = 128
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    teacher_cache: bool = True  # cache teacher logits per (image, view); False = online teacher
    views: int = 16  # cached views per image (every view when this covers them all)


@dataclass
class PrunerConfig:
    name: str = "pareto"
    warmup_epochs: int = 1  # never prune at or before this many epochs (asha: its first rung)
    min_trials: int = 4  # median / asha: finished trials needed at an epoch before pruning at it
    margin: float = 0.02  # pareto: a cheaper trial must beat this one by more than this accuracy
    rungs: list[int] = field(default_factory=list)  # epochs at which to check (empty: every epoch)
    eta: int = 3  # asha: keep the top 1/eta at each rung


# Search space: each entry is a fixed value (not searched) or a list. For int/float entries a
# two-element list is a [low, high] range; for "choice" entries a list is the set of choices.
SPACE_KINDS: dict[str, str] = {
    "stages": "int",
    "convs_per_stage": "int",
    "channels": "int_log",  # sampled per stage as channels_0, channels_1, ...
    "kernel_size": "choice",
    "batch_norm": "choice",
    "fc_layers": "int",
    "fc_width": "int_log",  # sampled per layer as fc_width_0, ...
    "dropout": "float",
    "temperature": "float",
    "alpha": "float",
    "lr": "float_log",
}

DEFAULT_SPACE: dict[str, Any] = {
    "stages": [1, 4],
    "convs_per_stage": [1, 2],
    "channels": [8, 128],
    "kernel_size": [3, 5],
    "batch_norm": [True, False],
    "fc_layers": [0, 2],
    "fc_width": [16, 256],
    "dropout": [0.0, 0.5],
    "temperature": [1.0, 10.0],
    "alpha": [0.0, 1.0],
    "lr": [1e-3, 1e-2],
}


@dataclass
class StudyConfig:
    name: str = "kdsearch"
    trials: int = 100  # the study ends with this many finished (complete or pruned) trials
    epochs: int = 10
    sampler: str = "tpe"
    seed: int = 0
    timeout: float | None = None  # seconds for this invocation
    objectives: list[str] = field(default_factory=lambda: ["accuracy", "params", "latency"])
    device: str = "auto"
    storage: str | None = None  # Optuna storage URL; None = SQLite in the run folder
    run_dir: str | None = None  # None = runs/<name>
    threads: int | None = None  # CPU threads for training, set once per run (None: torch's default)
    latency_threads: int = 1  # CPU threads for latency measurement (recorded in the study)
    max_params: int | None = None  # budgets: a student over any of them is rejected untrained
    max_macs: int | None = None
    max_latency_ms: float | None = None
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    space: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_SPACE))

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.name

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.run_path / 'study.db').resolve()}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "teacher": TeacherConfig, "train": TrainConfig, "pruner": PrunerConfig}


_TYPES = {"bool": bool, "int": int, "float": float, "str": str, "list": list}


def _check_type(where: str, value: Any, annotation: str) -> Any:
    """Accept a value that fits the field's annotation (ints where floats go); reject the rest."""
    allowed = [t for t in re.findall(r"[A-Za-z]+", annotation.split("[")[0]) if t in _TYPES or t == "None"]
    if value is None:
        if "None" in allowed:
            return None
        raise KDSearchError(f"{where}: must not be empty")
    if "float" in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    for name in allowed:
        if name != "None" and isinstance(value, _TYPES[name]) and not (name == "int" and isinstance(value, bool)):
            return value
    raise KDSearchError(f"{where}: expected {annotation}, got {value!r}")


def _apply(obj: Any, values: dict[str, Any], where: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in fields or key in _SECTIONS or key == "space":
            known = ", ".join(k for k in fields if k not in _SECTIONS and k != "space")
            raise KDSearchError(f"{where}: unknown key {key!r} (known: {known})")
        value = _check_type(f"{where}.{key}", value, str(fields[key].type))
        setattr(obj, key, value)


def validate_space(space: dict[str, Any]) -> None:
    for key, value in space.items():
        kind = SPACE_KINDS.get(key)
        if kind is None:
            raise KDSearchError(f"[space]: unknown parameter {key!r} (known: {', '.join(SPACE_KINDS)})")
        if kind == "choice":
            if isinstance(value, list) and not value:
                raise KDSearchError(f"[space].{key}: the list of choices is empty")
            continue
        if isinstance(value, list):
            if len(value) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                raise KDSearchError(f"[space].{key}: a range must be [low, high] numbers, got {value!r}")
            if value[0] > value[1]:
                raise KDSearchError(f"[space].{key}: low {value[0]} is above high {value[1]}")
            if kind.endswith("log") and value[0] <= 0:
                raise KDSearchError(f"[space].{key}: a log range must be positive, got {value!r}")
        elif not isinstance(value, (int, float)) or isinstance(value, bool):
            raise KDSearchError(f"[space].{key}: expected a number or a [low, high] range, got {value!r}")
    if "alpha" in space:
        lo_hi = space["alpha"] if isinstance(space["alpha"], list) else [space["alpha"]] * 2
        if lo_hi[0] < 0 or lo_hi[1] > 1:
            raise KDSearchError("[space].alpha: must lie in [0, 1]")


def validate(cfg: StudyConfig) -> StudyConfig:
    """Check values that types alone do not catch."""
    def one_of(where: str, value: str, allowed: tuple[str, ...]) -> None:
        if value not in allowed:
            raise KDSearchError(f"{where}: {value!r} is not one of {', '.join(allowed)}")

    one_of("dataset", cfg.data.dataset, DATASETS)
    one_of("sampler", cfg.sampler, SAMPLERS)
    one_of("pruner", cfg.pruner.name, PRUNERS)
    one_of("device", cfg.device, DEVICES)
    if not cfg.objectives or cfg.objectives[0] != "accuracy":
        raise KDSearchError("objectives: the first objective must be 'accuracy'")
    for o in cfg.objectives:
        one_of("objectives", o, OBJECTIVES)
    if len(set(cfg.objectives)) != len(cfg.objectives):
        raise KDSearchError(f"objectives: repeated entries in {cfg.objectives}")
    if cfg.trials < 1 or cfg.epochs < 1:
        raise KDSearchError("trials and epochs must be at least 1")
    if not 0.0 < cfg.data.val_fraction < 1.0:
        raise KDSearchError(f"val_fraction: must lie strictly between 0 and 1, got {cfg.data.val_fraction}")
    if cfg.pruner.margin < 0 or cfg.pruner.eta < 2 or any(r < 1 for r in cfg.pruner.rungs):
        raise KDSearchError("pruner: margin must be >= 0, eta >= 2, rungs positive epochs")
    for budget in ("max_params", "max_macs", "max_latency_ms"):
        if getattr(cfg, budget) is not None and getattr(cfg, budget) <= 0:
            raise KDSearchError(f"{budget}: must be positive")
    if cfg.threads is not None and cfg.threads < 1:
        raise KDSearchError("threads: must be at least 1")
    if cfg.train.views < 1:
        raise KDSearchError("views: must be at least 1")
    if cfg.data.subset < 0:
        raise KDSearchError("subset: must be 0 (all) or a positive count")
    if cfg.teacher.epochs is not None and cfg.teacher.epochs < 0:
        raise KDSearchError("teacher epochs: must be 0 or more")
    if cfg.data.dataset == "imagefolder" and not cfg.data.data_dir:
        raise KDSearchError("imagefolder: give the folder with --data-dir (it must hold train/ and test/ or val/)")
    validate_space(cfg.space)
    return cfg


def config_from_dict(values: dict[str, Any]) -> StudyConfig:
    """The inverse of StudyConfig.to_dict (as stored in a run's run.json), validated again."""
    cfg = StudyConfig()
    top = {k: v for k, v in values.items() if k not in _SECTIONS and k != "space"}
    _apply(cfg, top, "run config")
    for key in _SECTIONS:
        _apply(getattr(cfg, key), values.get(key, {}), f"run config [{key}]")
    cfg.space = dict(values.get("space", cfg.space))
    return validate(cfg)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Defaults <- study file <- overrides (dotted keys such as 'data.subset' or 'trials')."""
    cfg = StudyConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise KDSearchError(f"study file not found: {path}")
        try:
            raw = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise KDSearchError(f"invalid study file {path}: {exc}") from None
        for key, value in raw.items():
            if key == "study":
                if not isinstance(value, dict):
                    raise KDSearchError(f"{path}: [study] must be a table")
                _apply(cfg, value, "[study]")
            elif key in _SECTIONS:
                if not isinstance(value, dict):
                    raise KDSearchError(f"{path}: [{key}] must be a table")
                _apply(getattr(cfg, key), value, f"[{key}]")
            elif key == "space":
                if not isinstance(value, dict):
                    raise KDSearchError(f"{path}: [space] must be a table")
                cfg.space.update(value)
            else:
                raise KDSearchError(f"{path}: unknown section [{key}] (known: study, {', '.join(_SECTIONS)}, space)")
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.rpartition(".")
        if section == "space":
            cfg.space[key] = value
        elif section:
            _apply(getattr(cfg, section), {key: value}, f"--{dotted}")
        else:
            _apply(cfg, {key: value}, f"--{dotted}")
    return validate(cfg)
