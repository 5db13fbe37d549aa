"""StudyConfig: defaults, TOML study files, CLI overrides and validation.

A study file has the sections [study], [data], [teacher], [train] and [space]; every key is
optional and falls back to the defaults below. CLI flags override file values. Unknown keys
and wrong types are errors (KDSearchError), so a typo never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import KDSearchError

DATASETS = ("cifar10", "cifar100", "mnist", "fashion-mnist", "svhn", "imagefolder", "digits")
SAMPLERS = ("tpe", "nsga2", "gp", "random")
PRUNERS = ("pareto", "median", "asha", "moasha", "none")
DEVICES = ("auto", "cpu", "cuda", "mps")
OBJECTIVES = ("accuracy", "params", "latency", "macs", "bytes")
LATENCY_RUNTIMES = ("onnxruntime", "torch")  # where a student's latency is measured (kdsearch/latency.py)
BYTES_FORMATS = ("float", "int8")  # which ONNX file's size is the "bytes" cost
# [teacher] normalize: how the teacher's input is normalized (values: teachers.NORMALIZE_PRESETS)
NORMALIZE = ("auto", "imagenet", "cifar10", "cifar100", "data", "none")


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
    name: str = "resnet50"  # a registered architecture, timm:NAME or package.module:factory
    weights: str | None = None  # a checkpoint file for the named architecture
    trust_pickle: bool = False  # allow full (unsafe) unpickling of the checkpoint
    pretrained: bool = True  # torchvision names: try ImageNet weights
    input_size: int | None = None  # None = default per teacher
    epochs: int | None = None  # None = auto: 0 if the weights already fit the dataset, else 10
    lr: float | None = None  # None = default (fine-tune vs from scratch)
    batch_size: int = 128
    normalize: str = "auto"  # input normalization: one of NORMALIZE ("auto": per weights source, see README)
    allow_chance: bool = False  # distill from a teacher that scores at chance on validation (else: stop, exit 2)
    mean: list[float] = field(default_factory=list)  # explicit per-channel mean/std (both or neither): win over
    std: list[float] = field(default_factory=list)  # normalize; empty = not given


@dataclass
class TrainConfig:
    """How each student is trained (fixed per study; T, alpha and lr are in [space]). The defaults are a
    textbook CIFAR recipe that beat kdsearch's old one in a plain loop (issue 17); benchmarks/bench_recipe.py
    screens them on fixed students (BENCHMARKS.md, "Training recipe")."""

    optimizer: str = "sgd"  # "sgd" (Nesterov momentum 0.9) or "adamw"
    schedule: str = "linear"  # linear warm-up, then "linear" or "cosine" decay to 0; or "onecycle"
    warmup: float = 0.2  # fraction of the steps spent warming up
    batch_size: int = 256
    weight_decay: float | None = None  # None: the optimizer's (sgd 5e-4 as L2, adamw 0.05 decoupled)
    label_smoothing: float = 0.1  # on the cross-entropy term of the loss
    ema: float = 0.0  # per-step decay of an average of the weights that is evaluated and kept (0 = off)
    zero_init_residual: bool = True  # residual blocks start as identities (last BN scale 0)
    teacher_cache: bool = True  # cache teacher logits per (image, view); False = online teacher
    views: int = 16  # cached views per image (every view when this covers them all)


# Values of settings for studies stored before the setting existed (a run.json or study fingerprint
# without the key): what those studies ran with, so they resume and retrain as they were.
LEGACY_STUDY: dict[str, Any] = {"latency_runtime": "torch"}  # [study] settings
LEGACY_TRAIN: dict[str, Any] = {"optimizer": "adamw", "schedule": "onecycle", "warmup": 0.25, "ema": 0.0,
                                "zero_init_residual": False, "batch_size": 128, "weight_decay": 5e-4,
                                "label_smoothing": 0.0}
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("linear", "cosine", "onecycle")
# [space] lr when the study file leaves it out: a peak-lr range that suits the optimizer
DEFAULT_LR: dict[str, list[float]] = {"sgd": [0.05, 0.5], "adamw": [1e-3, 1e-2]}


@dataclass
class PrunerConfig:
    name: str = "pareto"
    warmup_epochs: int = 1  # never prune at or before this many epochs (asha: its first rung)
    min_trials: int = 4  # median / asha / moasha: finished trials needed at an epoch before pruning at it
    # pareto: a trial is pruned when a no-larger, no-slower trial beats it by more than `margin`;
    # a negative margin prunes unless it beats every such trial by at least -margin (the default)
    margin: float = -0.01
    # epochs at which to check; a number below 1 is a fraction of the trial's epochs (0.25 of 12
    # is epoch 3). None: the pruner's own (pareto [0.25, 0.5]; median every epoch; asha and moasha
    # warmup_epochs·eta^k); []: every epoch (asha, moasha: warmup_epochs·eta^k)
    rungs: list[float] | None = None
    eta: int = 3  # asha, moasha: keep the top 1/eta at each rung


# Search space: each entry is a fixed value (not searched) or a list. For int/float entries a
# two-element list is a [low, high] range; for "choice" entries a list is the set of choices.
SPACE_KINDS: dict[str, str] = {
    "family": "choice",  # student families (students.FAMILIES): plain, residual, inverted
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
    retries: int = 1  # times the parameters of a trial whose process died are tried again
    latency_runtime: str = "onnxruntime"  # one of LATENCY_RUNTIMES: ONNX Runtime (CPU) or eager PyTorch (CPU)
    latency_batch: int = 1  # images per timed call
    bytes_format: str = "float"  # the "bytes" cost: size of the float ONNX file, or of the int8 one
    max_params: int | None = None  # budgets: a student over any of them is rejected untrained
    max_macs: int | None = None
    max_latency_ms: float | None = None
    max_bytes: int | None = None
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
    outer = annotation
    while "[" in outer:  # "list[float] | None" -> "list | None"
        outer = re.sub(r"\[[^\[\]]*\]", "", outer)
    allowed = [t for t in re.findall(r"[A-Za-z]+", outer) if t in _TYPES or t == "None"]
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


Rule = tuple[Callable[[Any], bool], str]  # (test of one value, what it must be)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(low: int, high: int | None = None) -> Rule:
    text = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    return (lambda v: _is_int(v) and v >= low and (high is None or v <= high)), text


def _num(test: Callable[[float], bool], text: str) -> Rule:
    """A finite number (int or float, never bool, NaN or infinity) that passes test."""
    return (lambda v: (_is_int(v) or isinstance(v, float)) and math.isfinite(v) and test(v)), f"a finite number {text}"


_POSITIVE = _num(lambda v: v > 0, "> 0")
_NON_NEGATIVE = _num(lambda v: v >= 0, ">= 0")
_FRACTION = _num(lambda v: 0 <= v < 1, "in [0, 1)")

# Bounds of every numeric setting (None means "default" and is not checked) and of every [space]
# entry (a fixed value, both ends of a range and every choice must pass the entry's rule). Errors
# name a setting by its dotted key ("train.batch_size", "space.dropout", "timeout" for [study]):
# the CLI prints messages as rich markup, which would swallow a "[train]".
FIELD_RULES: dict[str, Rule] = {
    "name": ((lambda v: isinstance(v, str) and v.strip() != ""), "a non-empty name"),
    "trials": _int(1), "epochs": _int(1), "seed": _int(0, 2**31 - 1),  # numpy seeds are >= 0
    "timeout": _POSITIVE, "threads": _int(1), "latency_threads": _int(1), "retries": _int(0),
    "max_params": _int(1), "max_macs": _int(1), "max_latency_ms": _POSITIVE,
    "latency_batch": _int(1), "max_bytes": _int(1),
    "data.val_fraction": _num(lambda v: 0 < v < 1, "strictly between 0 and 1"),
    "data.subset": _int(0), "data.pad": _int(0),
    "teacher.input_size": _int(1), "teacher.epochs": _int(0), "teacher.lr": _POSITIVE,
    "teacher.batch_size": _int(1),
    "teacher.mean": ((lambda v: (_is_int(v) or isinstance(v, float)) and math.isfinite(v)), "a finite number"),
    "teacher.std": _POSITIVE,
    "train.batch_size": _int(1), "train.weight_decay": _NON_NEGATIVE, "train.label_smoothing": _FRACTION,
    "train.views": _int(1), "train.warmup": _FRACTION, "train.ema": _FRACTION,
    "pruner.warmup_epochs": _int(0), "pruner.min_trials": _int(0), "pruner.eta": _int(2),
    "pruner.margin": _num(lambda v: -1 <= v <= 1, "in [-1, 1]"),
    "pruner.rungs": ((lambda v: _is_int(v) and v >= 1 or isinstance(v, float) and 0 < v < 1),
                     "an epoch (an integer >= 1) or a fraction of the epochs (strictly between 0 and 1)"),
}
SPACE_RULES: dict[str, Rule] = {  # how students.build and search.objective use each value
    "family": ((lambda v: isinstance(v, str) and v != ""), "a student family name"),  # and registered: validate_space
    "expand_ratio": _int(1),
    "stages": _int(1), "convs_per_stage": _int(1), "channels": _int(1), "fc_width": _int(1), "width": _int(1),
    "growth": _num(lambda v: v >= 1, ">= 1"),
    "fc_layers": _int(0),
    "kernel_size": ((lambda v: _is_int(v) and v >= 1 and v % 2 == 1), "a positive odd integer"),  # padding k // 2
    "batch_norm": ((lambda v: isinstance(v, bool)), "true or false"),
    "dropout": _FRACTION, "temperature": _POSITIVE, "alpha": _num(lambda v: 0 <= v <= 1, "in [0, 1]"),
    "lr": _POSITIVE,
}


def validate_space(space: dict[str, Any]) -> None:
    for key, value in space.items():
        kind = SPACE_KINDS.get(key)
        if kind is None:
            raise KDSearchError(f"space: unknown parameter {key!r} (known: {', '.join(SPACE_KINDS)})")
        where, (ok, text) = f"space.{key}", SPACE_RULES[key]
        if isinstance(value, list) and kind == "choice" and not value:
            raise KDSearchError(f"{where}: the list of choices is empty")
        if isinstance(value, list) and kind != "choice" and len(value) != 2:
            raise KDSearchError(f"{where}: a range must be [low, high], got {value!r}")
        if not all(ok(v) for v in (value if isinstance(value, list) else [value])):
            what = ("the value" if not isinstance(value, list) else "each choice" if kind == "choice"
                    else "low and high")
            raise KDSearchError(f"{where}: {what} must be {text}, got {value!r}")
        if isinstance(value, list) and kind != "choice" and value[0] > value[1]:
            raise KDSearchError(f"{where}: low {value[0]} is above high {value[1]}")
        if key == "family":
            from .students import FAMILIES  # the registry of builders (students imports this module)

            unknown = [v for v in (value if isinstance(value, list) else [value]) if v not in FAMILIES]
            if unknown:
                raise KDSearchError(f"{where}: unknown student family {unknown[0]!r} "
                                    f"(known: {', '.join(FAMILIES)}), got {value!r}")


def validate(cfg: StudyConfig) -> StudyConfig:
    """Check what types alone do not catch (names, FIELD_RULES, SPACE_RULES) when the study loads.

    A bad value is refused at once, in one line naming the setting and the value, instead of
    crashing the first trial after an hour of data loading and teacher fine-tuning.
    """
    def one_of(where: str, value: str, allowed: tuple[str, ...]) -> None:
        if value not in allowed:
            raise KDSearchError(f"{where}: {value!r} is not one of {', '.join(allowed)}")

    one_of("dataset", cfg.data.dataset, DATASETS)
    one_of("sampler", cfg.sampler, SAMPLERS)
    one_of("pruner", cfg.pruner.name, PRUNERS)
    one_of("device", cfg.device, DEVICES)
    one_of("teacher.normalize", cfg.teacher.normalize, NORMALIZE)
    one_of("train.optimizer", cfg.train.optimizer, OPTIMIZERS)
    one_of("train.schedule", cfg.train.schedule, SCHEDULES)
    one_of("latency_runtime", cfg.latency_runtime, LATENCY_RUNTIMES)
    one_of("bytes_format", cfg.bytes_format, BYTES_FORMATS)
    if not cfg.objectives or cfg.objectives[0] != "accuracy":
        raise KDSearchError("objectives: the first objective must be 'accuracy'")
    for o in cfg.objectives:
        one_of("objectives", o, OBJECTIVES)
    if len(set(cfg.objectives)) != len(cfg.objectives):
        raise KDSearchError(f"objectives: repeated entries in {cfg.objectives}")
    for dotted, (ok, text) in FIELD_RULES.items():
        section, _, key = dotted.rpartition(".")
        value = getattr(getattr(cfg, section) if section else cfg, key)
        if isinstance(value, list) and not all(ok(v) for v in value):
            raise KDSearchError(f"{dotted}: every entry must be {text}, got {value!r}")
        if value is not None and not isinstance(value, list) and not ok(value):
            raise KDSearchError(f"{dotted}: must be {text}, got {value!r}")
    if len(cfg.teacher.mean) != len(cfg.teacher.std):
        raise KDSearchError(f"teacher.mean and teacher.std: give both, one value per channel, got mean "
                            f"{cfg.teacher.mean!r} and std {cfg.teacher.std!r}")
    if cfg.data.dataset == "imagefolder" and not cfg.data.data_dir:
        raise KDSearchError("imagefolder: give the folder with --data-dir (it must hold train/ and test/ or val/)")
    validate_space(cfg.space)
    return cfg


def config_from_dict(values: dict[str, Any]) -> StudyConfig:
    """The inverse of StudyConfig.to_dict (as stored in a run's run.json), validated again."""
    cfg = StudyConfig()
    top = {**LEGACY_STUDY, **{k: v for k, v in values.items() if k not in _SECTIONS and k != "space"}}
    _apply(cfg, top, "run config")
    for key in _SECTIONS:
        stored = values.get(key, {})
        if key == "train":  # a run stored before a [train] setting existed ran with its legacy value
            stored = {**LEGACY_TRAIN, **stored}
        _apply(getattr(cfg, key), stored, f"run config [{key}]")
    cfg.space = dict(values.get("space", cfg.space))
    return validate(cfg)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Defaults <- study file <- overrides (dotted keys such as 'data.subset' or 'trials')."""
    cfg = StudyConfig()
    given_space: set[str] = {dotted.partition(".")[2] for dotted, value in (overrides or {}).items()
                             if dotted.startswith("space.") and value is not None}
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
                given_space |= set(value)
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
    if "channels" in given_space:  # per-stage widths, as before width and growth
        if {"width", "growth"} & given_space:
            raise KDSearchError("space: give either channels (a width per stage) or width and growth, not both")
        cfg.space.pop("width", None)
        cfg.space.pop("growth", None)
    if cfg.space.get("lr") == DEFAULT_SPACE["lr"] and "lr" not in given_space:
        cfg.space["lr"] = list(DEFAULT_LR.get(cfg.train.optimizer, DEFAULT_SPACE["lr"]))
    return validate(cfg)
