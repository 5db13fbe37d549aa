"""The study-file schema: one pydantic model per section, each setting with its type, default and bounds.

A study file has the sections [study], [data], [teacher], [train], [pruner] and [space]; every key
is optional and falls back to the defaults below. Types are strict (an int where a float goes is
accepted, a bool where an int goes is not), unknown keys are errors, and each bound is a `Bound` in
the setting's annotation (config.rules), so a typo or an impossible value never silently does
nothing. Settings marked CHANGES_TRIALS change what a trial means: a study resumes only with the
values it began with (search.fingerprint); the others (trials, timeout, threads, device, storage,
paths) may change between runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ..errors import KDSearchError
from ..models.teachers.normalization import NORMALIZE
from .rules import Bound, FINITE, FRACTION, NAME, NON_NEGATIVE, OneOf, POSITIVE, at_least, is_int, number, refusal
from .space import DEFAULT_LR, DEFAULT_SPACE, validate_space


DATASETS = ("cifar10", "cifar100", "mnist", "fashion-mnist", "svhn", "imagefolder", "digits")
SAMPLERS = ("tpe", "nsga2", "gp", "random")
PROMOTE_BY = ("family", "band")  # whom promotion compares: a size band's students of one family, or all of them
STRATEGIES = ("pertrial", "oneshot")  # how a sampled student gets its accuracy ([study] strategy)
PRUNERS = ("pareto", "median", "asha", "moasha", "none")
DEVICES = ("auto", "cpu", "cuda", "mps")
OBJECTIVES = ("accuracy", "params", "latency", "macs", "bytes")
LATENCY_RUNTIMES = ("onnxruntime", "torch")  # where a student's latency is measured (measure/latency.py)
BYTES_FORMATS = ("float", "int8")  # which ONNX file's size is the "bytes" cost
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("linear", "cosine", "onecycle")
TRACKERS = ("none", "mlflow", "wandb", "tensorboard")  # where each trial is logged besides the study (search.tracking)


class ChangesTrials:
    """Marks a setting (or a whole section) whose value changes what a trial means."""


CHANGES_TRIALS = ChangesTrials()


class Section(BaseModel):
    """Strict types, no unknown keys; assignment after loading is not checked (as before: code sets
    run_dir, threads, subset and device on a loaded config)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


class DataConfig(Section):
    dataset: Annotated[str, OneOf(DATASETS), CHANGES_TRIALS] = "cifar10"
    data_dir: str | None = None  # torchvision root, or the imagefolder folder / .tar.gz
    val_fraction: Annotated[float, number(lambda v: 0 < v < 1, "strictly between 0 and 1"),
                            CHANGES_TRIALS] = 0.1  # carved from the training data, stratified and seeded
    subset: Annotated[int, at_least(0), CHANGES_TRIALS] = 0  # students train on a stratified subset (0 = all)
    download: bool = True  # torchvision datasets: try to download when missing
    pad: Annotated[int | None, at_least(0), CHANGES_TRIALS] = None  # random-crop padding (None = dataset default)
    flip: Annotated[bool | None, CHANGES_TRIALS] = None  # horizontal flip (None = dataset default)
    # every image resized to image_size x image_size (None = as stored; an image folder whose images differ
    # in size, or are not square, needs it)
    image_size: Annotated[int | None, at_least(1), CHANGES_TRIALS] = None


class TeacherConfig(Section):
    name: Annotated[str, CHANGES_TRIALS] = "resnet50"  # a registered architecture, timm:NAME or package.module:factory
    weights: Annotated[str | None, CHANGES_TRIALS] = None  # a checkpoint file for the named architecture
    trust_pickle: bool = False  # allow full (unsafe) unpickling of the checkpoint
    pretrained: Annotated[bool, CHANGES_TRIALS] = True  # torchvision names: try ImageNet weights
    input_size: Annotated[int | None, at_least(1), CHANGES_TRIALS] = None  # None = default per teacher
    epochs: Annotated[int | None, at_least(0), CHANGES_TRIALS] = None  # None = auto: 0 if the weights fit, else 10
    lr: Annotated[float | None, POSITIVE, CHANGES_TRIALS] = None  # None = default (fine-tune vs from scratch)
    batch_size: Annotated[int, at_least(1), CHANGES_TRIALS] = 128
    # input normalization: one of NORMALIZE ("auto": per weights source, see docs/teachers.md)
    normalize: Annotated[str, OneOf(NORMALIZE), CHANGES_TRIALS] = "auto"
    allow_chance: bool = False  # distill from a teacher that scores at chance on validation (else: stop, exit 2)
    # explicit per-channel mean/std (both or neither): win over normalize; empty = not given
    mean: Annotated[list[int | float], FINITE, CHANGES_TRIALS] = Field(default_factory=list)
    std: Annotated[list[int | float], POSITIVE, CHANGES_TRIALS] = Field(default_factory=list)


class TrainConfig(Section):
    """How each student is trained (fixed per study; T, alpha and lr are in [space]). The defaults are the
    best recipe measured on fixed CIFAR-10 students at 10 epochs (python -m benchmarks recipe; BENCHMARKS.md,
    "Training recipe"): a textbook SGD recipe at batch 128, residual blocks not zero-initialized."""

    optimizer: Annotated[str, OneOf(OPTIMIZERS), CHANGES_TRIALS] = "sgd"  # "sgd" (Nesterov momentum 0.9) or "adamw"
    # linear warm-up, then "linear" or "cosine" decay to 0; or "onecycle"
    schedule: Annotated[str, OneOf(SCHEDULES), CHANGES_TRIALS] = "linear"
    warmup: Annotated[float, FRACTION, CHANGES_TRIALS] = 0.2  # fraction of the steps spent warming up
    batch_size: Annotated[int, at_least(1), CHANGES_TRIALS] = 128  # 256 was 1.1 points worse on ResNet-8
    # None: the optimizer's (sgd 5e-4 as L2, adamw 0.05 decoupled)
    weight_decay: Annotated[float | None, NON_NEGATIVE, CHANGES_TRIALS] = None
    label_smoothing: Annotated[float, FRACTION, CHANGES_TRIALS] = 0.1  # on the cross-entropy term of the loss
    # per-step decay of an average of the weights that is evaluated and kept (0 = off)
    ema: Annotated[float, FRACTION, CHANGES_TRIALS] = 0.0
    # residual blocks start as identities (last BN scale 0): 0.4-1.8 points worse on ResNet-8 at 10 epochs
    zero_init_residual: Annotated[bool, CHANGES_TRIALS] = False
    teacher_cache: Annotated[bool, CHANGES_TRIALS] = True  # cache teacher logits per (image, view); False = online
    views: Annotated[int, at_least(1), CHANGES_TRIALS] = 16  # cached views per image (every view when this covers them all)


class PrunerConfig(Section):
    name: Annotated[str, OneOf(PRUNERS)] = "pareto"
    # never prune at or before this many epochs (asha: its first rung); a fraction with checks_per_epoch > 1
    warmup_epochs: Annotated[int | float, number(lambda v: v >= 0, ">= 0")] = 1
    # validation checks per epoch that pruners look at: 1 = after each epoch; more for short trials
    # (a 2-epoch trial has no epoch at a quarter of it); each check costs one pass over the validation split
    checks_per_epoch: Annotated[int, at_least(1)] = 1
    # median / asha / moasha: finished trials needed at an epoch before pruning at it
    min_trials: Annotated[int, at_least(0)] = 4
    # pareto: a trial is pruned when a no-larger, no-slower trial beats it by more than `margin`;
    # a negative margin prunes unless it beats every such trial by at least -margin (the default)
    margin: Annotated[float, number(lambda v: -1 <= v <= 1, "in [-1, 1]")] = -0.01
    # epochs at which to check; a number below 1 is a fraction of the trial's epochs (0.25 of 12
    # is epoch 3). None: the pruner's own (pareto [0.25, 0.5]; median every epoch; asha and moasha
    # warmup_epochs·eta^k); []: every epoch (asha, moasha: warmup_epochs·eta^k)
    rungs: Annotated[list[int | float] | None,
                     Bound(lambda v: is_int(v) and v >= 1 or isinstance(v, float) and 0 < v < 1,
                          "an epoch (an integer >= 1) or a fraction of the epochs (strictly between 0 and 1)")] = None
    eta: Annotated[int, at_least(2)] = 3  # asha, moasha: keep the top 1/eta at each rung


def _objectives(value: list[str]) -> list[str]:
    """The first objective is accuracy; each is known; none repeats."""
    if not value or value[0] != "accuracy":
        raise refusal("the first objective must be 'accuracy'", value)
    OneOf(OBJECTIVES).check(value)
    if len(set(value)) != len(value):
        raise refusal("repeated entries", value)
    return value


class StudyConfig(Section):
    name: Annotated[str, NAME] = "kdsearch"
    trials: Annotated[int, at_least(1)] = 100  # the study ends with this many finished (complete or pruned) trials
    epochs: Annotated[int, at_least(1), CHANGES_TRIALS] = 10
    # the sampler and the seed are part of one experiment: the seed decides the validation split, the training
    # subset, the teacher's and the logit cache's keys and each trial's draws; a study resumes only with both
    sampler: Annotated[str, OneOf(SAMPLERS), CHANGES_TRIALS] = "tpe"
    seed: Annotated[int, at_least(0, 2**31 - 1), CHANGES_TRIALS] = 0  # numpy seeds are >= 0
    timeout: Annotated[float | None, POSITIVE] = None  # seconds for this invocation
    objectives: Annotated[list[str], AfterValidator(_objectives), CHANGES_TRIALS] = Field(
        default_factory=lambda: ["accuracy", "params", "latency"])
    device: Annotated[str, OneOf(DEVICES)] = "auto"
    storage: str | None = None  # Optuna storage URL; None = SQLite in the run folder
    run_dir: str | None = None  # None = runs/<name>
    threads: Annotated[int | None, at_least(1)] = None  # CPU threads for training, set once per run (None: torch's)
    latency_threads: Annotated[int, at_least(1)] = 1  # CPU threads for latency measurement (recorded in the study)
    retries: Annotated[int, at_least(0)] = 1  # times the parameters of a trial whose process died are tried again
    tracking: Annotated[str, OneOf(TRACKERS)] = "none"  # also log each trial to mlflow, wandb or tensorboard
    # one of LATENCY_RUNTIMES: ONNX Runtime (CPU) or eager PyTorch (CPU)
    latency_runtime: Annotated[str, OneOf(LATENCY_RUNTIMES), CHANGES_TRIALS] = "onnxruntime"
    latency_batch: Annotated[int, at_least(1), CHANGES_TRIALS] = 1  # images per timed call
    # the "bytes" cost: size of the float ONNX file, or of the int8 one
    bytes_format: Annotated[str, OneOf(BYTES_FORMATS), CHANGES_TRIALS] = "float"
    # budgets: a student over any of them is rejected untrained
    max_params: Annotated[int | None, at_least(1), CHANGES_TRIALS] = None
    max_macs: Annotated[int | None, at_least(1), CHANGES_TRIALS] = None
    max_latency_ms: Annotated[float | None, POSITIVE, CHANGES_TRIALS] = None
    max_bytes: Annotated[int | None, at_least(1), CHANGES_TRIALS] = None
    # how a sampled student gets its accuracy: "pertrial" trains it from scratch; "oneshot" evaluates it inside
    # supernets trained once (search.evaluation.oneshot; `epochs` are then the supernets' epochs)
    strategy: Annotated[str, OneOf(STRATEGIES), CHANGES_TRIALS] = "pertrial"
    # (one-shot) stop scoring a subnet after its first 1,000 validation images when a scored subnet no larger in
    # any cost is more accurate by over 3 of the first pass's standard errors (search.evaluation.oneshot)
    screen: bool = False
    # promotion (search.promote): the `promote` most accurate students of each size band (within 2x in
    # params), of each family in it with promote_by = "family" (the default) or of all with "band", train
    # again for `promote_epochs` on `promote_images` training images (0: all; a one-shot study fine-tunes its
    # subnets from their inherited weights), and the front is read there;
    # 0 = off. Changing them later promotes what the new rung lacks, at that rung.
    promote: Annotated[int, at_least(0)] = 0
    promote_by: Annotated[str, OneOf(PROMOTE_BY)] = "family"
    promote_epochs: Annotated[int, at_least(1)] = 10
    promote_images: Annotated[int, at_least(0)] = 0
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    pruner: Annotated[PrunerConfig, CHANGES_TRIALS] = Field(default_factory=PrunerConfig)
    space: Annotated[dict[str, Any], CHANGES_TRIALS] = Field(default_factory=lambda: dict(DEFAULT_SPACE))

    @model_validator(mode="before")
    @classmethod
    def _lr_for_the_optimizer(cls, data: Any) -> Any:
        """[space] lr left out: the peak-lr range that suits the optimizer (SGD's is 50x AdamW's). The one
        place this rule lives, so a StudyConfig built in Python gets what a study file gets."""
        if not isinstance(data, dict):
            return data
        space = data.get("space", {k: v for k, v in DEFAULT_SPACE.items() if k != "lr"})
        if not isinstance(space, dict) or "lr" in space:
            return data
        train = data.get("train")
        optimizer = train.get("optimizer") if isinstance(train, dict) else getattr(train, "optimizer", None)
        lr = DEFAULT_LR.get(optimizer or TrainConfig.model_fields["optimizer"].default, DEFAULT_SPACE["lr"])
        return {**data, "space": {**space, "lr": list(lr)}}

    @model_validator(mode="after")
    def _together(self) -> StudyConfig:
        """What one setting alone cannot say (raised as KDSearchError: one line, as every refusal)."""
        if len(self.teacher.mean) != len(self.teacher.std):
            raise KDSearchError(f"teacher.mean and teacher.std: give both, one value per channel, got mean "
                                f"{self.teacher.mean!r} and std {self.teacher.std!r}")
        if self.data.dataset == "imagefolder" and not self.data.data_dir:
            raise KDSearchError("imagefolder: give the folder with --data-dir (it must hold train/ and test/ or val/)")
        validate_space(self.space)
        if self.screen and self.strategy != "oneshot":
            raise KDSearchError('screen: a one-shot study\'s setting (strategy = "oneshot"); a per-trial study stops '
                                "students with its [pruner]")
        return self

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.name

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.run_path / 'study.db').resolve()}"


SECTIONS: dict[str, type[Section]] = {"data": DataConfig, "teacher": TeacherConfig, "train": TrainConfig,
                                      "pruner": PrunerConfig}

# Values of settings for studies stored before the setting existed (a run.json or study fingerprint
# without the key): what those studies ran with, so they resume and retrain as they were.
LEGACY_STUDY: dict[str, Any] = {"latency_runtime": "torch"}  # [study] settings
LEGACY_TRAIN: dict[str, Any] = {"optimizer": "adamw", "schedule": "onecycle", "warmup": 0.25, "ema": 0.0,
                                "zero_init_residual": False, "batch_size": 128, "weight_decay": 5e-4,
                                "label_smoothing": 0.0}


def _marked(model: type[BaseModel], name: str) -> bool:
    return any(m is CHANGES_TRIALS for m in model.model_fields[name].metadata)


def trial_meaning_keys() -> list[str]:
    """The settings that change what a trial means, as dotted keys in schema order: a whole section
    where the section is marked (pruner, space), else each marked key of it."""
    keys = []
    for name in StudyConfig.model_fields:
        section = SECTIONS.get(name)
        if _marked(StudyConfig, name):
            keys.append(name)
        elif section is not None:
            keys += [f"{name}.{key}" for key in section.model_fields if _marked(section, key)]
    return keys


def field_rules() -> dict[str, Bound | OneOf]:
    """Every setting's bound, by dotted key (for tests and documentation)."""
    out: dict[str, Bound | OneOf] = {}
    for prefix, model in {"": StudyConfig, **{f"{k}.": v for k, v in SECTIONS.items()}}.items():
        for key, info in model.model_fields.items():
            for m in info.metadata:
                if isinstance(m, (Bound, OneOf)):
                    out[prefix + key] = m
    return out
