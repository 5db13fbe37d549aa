"""Teachers: a registry of architectures, checkpoint loading, adaptation, fine-tuning, cache.

`create_teacher(name, ...)` works like timm's `create_model`: a name picks a builder from
`TEACHERS`; the result is a plain `nn.Module` (`TeacherNet`) that takes float images in
[0, 1] at the dataset's native size and returns logits. The wrapper carries everything that
adapts the body to the data: normalization, grayscale -> RGB repetition and resizing, so
callers (the logit cache, the training loop) never need to know where a teacher came from.

Where the weights come from decides how the body is adapted:

- a checkpoint file (`weights=`): loaded safely (`weights_only=True`) unless the user trusts
  the pickle. The stem is read off the checkpoint (3x3 conv1 = small-image stem, input at
  native size; 7x7 = ImageNet stem, input resized to 224, or 299 for inception_v3). Inputs
  are normalized with the ImageNet mean/std, the convention of torchvision and of the
  akamaster CIFAR ResNets (inception_v3 files also get torchvision's transform_input=True).
  A classifier with another class count is replaced (to fine-tune).
- ImageNet weights (`pretrained=True`, torchvision names): ImageNet stem and stats, input
  resized to 224 (299 for inception_v3), head replaced. Offline, the download fails: that is
  a note, and the teacher falls back to random init.
- random init: small images (input <= 64 px) get the small-image ResNet stem (3x3 stride-1
  conv1, no max-pool) at native size; normalization uses the dataset's own mean/std.

Two more kinds of name (see the README's Teacher paragraph for the contract):

- `timm:NAME`: `timm.create_model` (an optional dependency), with its pretrained weights, a
  checkpoint file or random init; another class count gets timm's `reset_classifier`.
- `package.module:function`: `function(num_classes=, in_channels=)` returns the body; one batch
  checks that it gives N x classes logits when it is built.

The input normalization is a setting (`normalize`, or explicit mean/std, which win): "auto"
is what the rules above say (timm: its pretrained_cfg statistics for trained weights; a
factory: its declared `kdsearch_mean`/`kdsearch_std`, else the data's), or a preset
(NORMALIZE_PRESETS), "data" or "none". Only settings other than the default add a note and a
cache-key part, so the keys of teachers cached before the setting existed do not change.

`prepare_teacher` then fine-tunes (or trains) the teacher on the full training split, scores
it, and caches it under `<run_dir>/teachers/<key>.safetensors` keyed by a hash of its
initial weights, the data and the training settings, so a second run costs nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from . import distill
from .config import NORMALIZE, TeacherConfig
from .checkpoints import few, load_checked, load_checkpoint, short
from .data import DataSplits
from .kernels import avoid_crashing_kernels
from .errors import KDSearchError
from .files import atomic_path, write_text_atomic
from .progress import progress_bar
from .layout import teachers_dir
from .measure import count_macs, count_params, latency_ms, wall_seconds

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DATA_STATISTICS = "the data's statistics"  # the normalization a teacher gets from the training split
SMALL_IMAGE = 64  # inputs up to this size get the small-image ResNet stem when trained from scratch
CACHE_VERSION = 1  # bump when the cache key's meaning changes
NORMALIZE_PRESETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {  # [teacher] normalize = NAME
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}  # with "auto", "data" and "none": config.NORMALIZE


# --------------------------------------------------------------------------------------------
# CIFAR ResNets (He et al. 2016, sec. 4.2), laid out exactly as akamaster's so its checkpoints load


class ShortcutA(nn.Module):
    """Option-A shortcut: stride-2 subsampling plus zero channels; no parameters, no keys."""

    def __init__(self, planes: int):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class CifarBasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = ShortcutA(planes) if stride != 1 or in_planes != planes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """3x3 conv 16 -> three stages of n basic blocks (16, 32, 64 channels) -> pool -> linear."""

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        stages = []
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(CifarBasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


# --------------------------------------------------------------------------------------------
# The registry


@dataclass(frozen=True)
class TeacherArch:
    """How to build one architecture and where its parts are."""

    build: Callable[[int, int, bool], nn.Module]  # (num_classes, in_channels, small_stem) -> random body
    head: str  # attribute of the final nn.Linear
    stem: str  # state-dict key of the first conv's weight
    imagenet_input: int | None = None  # input size of its ImageNet weights (None: none exist)
    min_input: int = 1  # smallest input size the body accepts


def _cifar_resnet(depth: int, num_classes: int, in_channels: int, small_stem: bool) -> nn.Module:
    return CifarResNet(depth, num_classes, in_channels)


def _tv_resnet(name: str, num_classes: int, in_channels: int, small_stem: bool) -> nn.Module:
    """torchvision ResNet; the small-image stem is a 3x3 stride-1 conv1 and no max-pool."""
    import torchvision

    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if small_stem:
        model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


def _inception_v3(num_classes: int, in_channels: int, small_stem: bool) -> nn.Module:
    """Inception v3 without the auxiliary head (3 input channels; grayscale is repeated)."""
    import torchvision

    return torchvision.models.get_model("inception_v3", weights=None, num_classes=num_classes,
                                        aux_logits=False, init_weights=True, transform_input=False)


TEACHERS: dict[str, TeacherArch] = {
    **{f"resnet{d}": TeacherArch(partial(_cifar_resnet, d), "linear", "conv1.weight")
       for d in (20, 32, 44, 56, 110)},
    **{f"resnet{d}": TeacherArch(partial(_tv_resnet, f"resnet{d}"), "fc", "conv1.weight", imagenet_input=224)
       for d in (18, 34, 50, 101)},
    "inception_v3": TeacherArch(_inception_v3, "fc", "Conv2d_1a_3x3.conv.weight", imagenet_input=299, min_input=75),
}


def teacher_names() -> list[str]:
    return list(TEACHERS)


def get_arch(name: str) -> TeacherArch:
    if name not in TEACHERS:
        raise KDSearchError(f"unknown teacher {name!r} (known: {', '.join(TEACHERS)}; "
                            "or timm:NAME, or package.module:function)")
    return TEACHERS[name]


# --------------------------------------------------------------------------------------------
# The wrapper


class TeacherNet(nn.Module):
    """Raw [0, 1] images at the data's size -> logits: repeat channels, normalize, resize, body."""

    def __init__(self, body: nn.Module, mean: tuple[float, ...], std: tuple[float, ...],
                 input_size: int | None = None, in_channels_repeat: int = 1):
        super().__init__()
        self.body = body
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.input_size = input_size  # None = as given
        self.in_channels_repeat = in_channels_repeat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_channels_repeat > 1:
            x = x.repeat(1, self.in_channels_repeat, 1, 1)
        x = (x - self.mean) / self.std
        s = self.input_size
        if s is not None and (x.shape[-2] != s or x.shape[-1] != s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=False)
        out = self.body(x)
        return out if isinstance(out, torch.Tensor) else out.logits  # InceptionOutputs in train mode

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, in_channels_repeat={self.in_channels_repeat}"


@dataclass
class TeacherInfo:
    """How a teacher was built: what its weights are and what the caller must know."""

    name: str
    source: str  # "file", "imagenet" (torchvision), "pretrained" (timm), "factory" (declared trained) or "random"
    head_replaced: bool
    input_size: int  # what the body sees
    notes: list[str] = field(default_factory=list)
    normalization: str = ""  # what mean/std are, e.g. "imagenet statistics", DATA_STATISTICS
    mean: tuple[float, ...] = ()  # the body's input normalization (TeacherNet's buffers)
    std: tuple[float, ...] = ()

    @property
    def fits_data(self) -> bool:
        """Trained weights whose classifier already has the dataset's classes."""
        return self.source != "random" and not self.head_replaced


# --------------------------------------------------------------------------------------------
# Loading checkpoint files


# --------------------------------------------------------------------------------------------
# Building a teacher


def _replace_head(body: nn.Module, arch: TeacherArch, num_classes: int) -> int:
    """A fresh classifier for num_classes; returns the old class count."""
    old = getattr(body, arch.head)
    setattr(body, arch.head, nn.Linear(old.in_features, num_classes))
    return old.out_features


def _imagenet_body(name: str) -> nn.Module:
    """torchvision ImageNet weights (downloads them; raises when offline)."""
    import torchvision

    body = torchvision.models.get_model(name, weights="DEFAULT")
    if name == "inception_v3":  # weights force the auxiliary head; it is training-only dead weight
        body.aux_logits = False
        body.AuxLogits = None
    return body


def _weights_url(name: str) -> str:
    try:
        import torchvision

        return torchvision.models.get_model_weights(name).DEFAULT.url
    except Exception:  # noqa: BLE001  (only for a hint)
        return ""


def _pair(value: Any) -> tuple[float, ...] | None:
    """A mean or std given as a list, tuple or tensor -> a tuple of floats (None stays None)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.detach().flatten().tolist()
    return tuple(float(v) for v in value)


@dataclass
class _Body:
    """What one way of building (registry, timm, factory) hands to build_teacher."""

    body: nn.Module
    source: str
    input_size: int
    repeat: int  # grayscale data repeated this many times for a multi-channel body
    auto: tuple[tuple[float, ...], tuple[float, ...], str]  # normalize "auto": mean, std, what they are
    head_replaced: bool = False


def _channel_repeat(name: str, body_channels: int, in_channels: int) -> int:
    if body_channels == in_channels:
        return 1
    if in_channels == 1:
        return body_channels
    raise KDSearchError(f"teacher {name} takes {body_channels}-channel images, the data has {in_channels} channels")


def _registry_body(name: str, num_classes: int, in_channels: int, image_size: int, pretrained: bool,
                   weights: str | Path | None, trust_pickle: bool, input_size: int | None,
                   data_mean: tuple[float, ...], data_std: tuple[float, ...], notes: list[str]) -> _Body:
    """A registered architecture (TEACHERS), adapted as the module docstring says."""
    arch = get_arch(name)
    if input_size is not None and input_size < max(arch.min_input, 1):
        raise KDSearchError(f"teacher input size {input_size}: {name} needs at least {max(arch.min_input, 1)} pixels")
    body: nn.Module | None = None
    source = "random"
    small_stem = True  # input at native size unless the body has an ImageNet stem
    if weights is not None:
        sd = load_checkpoint(weights, trust_pickle)
        if name == "inception_v3":
            sd = {k: v for k, v in sd.items() if not k.startswith("AuxLogits.")}
        head_key = f"{arch.head}.weight"
        if head_key not in sd or arch.stem not in sd or sd[head_key].ndim != 2 or sd[arch.stem].ndim != 4:
            raise KDSearchError(f"{weights} does not fit the {name} architecture: missing "
                                f"{few([k for k in (arch.stem, head_key) if k not in sd]) or 'a 2-D classifier'} "
                                f"(found {few(list(sd))})")
        ck_classes, ck_channels, kernel = sd[head_key].shape[0], sd[arch.stem].shape[1], sd[arch.stem].shape[-1]
        small_stem = arch.imagenet_input is None or (name.startswith("resnet") and kernel == 3)
        try:
            body = arch.build(ck_classes, ck_channels, small_stem)
        except Exception as exc:  # noqa: BLE001
            raise KDSearchError(f"{weights}: cannot build {name} for it ({short(exc)})") from None
        if name == "inception_v3":
            body.transform_input = True  # torchvision's convention for ImageNet-normalized inputs
        load_checked(body, sd, name, weights)
        source = "file"
    elif pretrained and arch.imagenet_input is not None:
        try:
            body = _imagenet_body(name)
            source = "imagenet"
            small_stem = False
        except Exception as exc:  # noqa: BLE001  (offline: URLError, OSError, hash mismatch...)
            url = _weights_url(name)
            hint = f"; to use them offline put {url.rsplit('/', 1)[-1]} into ~/.cache/torch/hub/checkpoints/" if url else ""
            notes.append(f"could not load ImageNet weights for {name} ({short(exc, 100)}): "
                         f"starting from random init{hint}")
    elif pretrained:
        notes.append(f"{name} has no downloadable pretrained weights: starting from random init "
                     "(pass --teacher-weights for a checkpoint)")

    if body is None:  # random init, adapted to the data
        size = input_size or max(image_size, arch.min_input)
        small_stem = size <= SMALL_IMAGE or arch.imagenet_input is None
        body = arch.build(num_classes, in_channels, small_stem)

    body_channels = int(body.state_dict()[arch.stem].shape[1])
    repeat = _channel_repeat(name, body_channels, in_channels)
    if source == "random":
        auto = (data_mean * repeat, data_std * repeat, DATA_STATISTICS)
    elif body_channels == 3:
        auto = (IMAGENET_MEAN, IMAGENET_STD, "imagenet statistics")
    else:
        auto = (data_mean, data_std, DATA_STATISTICS)

    if input_size is None:  # native size unless an ImageNet stem carries trained weights
        trained_imagenet_stem = not small_stem and source != "random"
        input_size = (arch.imagenet_input or image_size) if trained_imagenet_stem else max(image_size, arch.min_input)

    head_replaced = False
    old_classes = getattr(body, arch.head).out_features
    if old_classes != num_classes:
        _replace_head(body, arch, num_classes)
        head_replaced = True
        notes.append(f"head replaced ({old_classes} -> {num_classes} classes): the teacher must be fine-tuned")
    return _Body(body, source, input_size, repeat, auto, head_replaced)


_TIMM_HUB = ("hf-hub:", "hf_hub:", "local-dir:")  # timm names that are not in its registry


def _import_timm() -> Any:
    try:
        import timm
    except ImportError:
        raise KDSearchError("timm teachers need timm, which is not installed: pip install 'kdsearch[timm]' "
                            "(or pip install timm)") from None
    return timm


def _timm_cfg(timm: Any, model_name: str) -> dict[str, Any]:
    """timm's pretrained_cfg of a model name, without building it ({} when it has none)."""
    try:
        cfg = timm.models.get_pretrained_cfg(model_name)
    except Exception:  # noqa: BLE001  (hub names, old timm: the built model's cfg is used instead)
        return {}
    return dict(cfg.to_dict()) if hasattr(cfg, "to_dict") else dict(cfg or {})


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (tuple, list)) and value else value


def _timm_body(name: str, num_classes: int, in_channels: int, image_size: int, pretrained: bool,
               weights: str | Path | None, trust_pickle: bool, input_size: int | None,
               data_mean: tuple[float, ...], data_std: tuple[float, ...], notes: list[str]) -> _Body:
    """`timm:NAME`: timm.create_model, with its pretrained weights, a checkpoint file or random init."""
    timm = _import_timm()
    model_name = name[len("timm:"):]
    if not model_name:
        raise KDSearchError("teacher 'timm:' names no model: give e.g. timm:resnet18 (see timm.list_models())")
    if not model_name.startswith(_TIMM_HUB) and not timm.is_model(model_name):
        import difflib

        close = difflib.get_close_matches(model_name, timm.list_models(), n=3)
        raise KDSearchError(f"unknown timm model {model_name!r}"
                            + (f" (close: {', '.join(close)})" if close else " (see timm.list_models())"))

    def create(**kwargs: Any) -> nn.Module:
        return timm.create_model(model_name, **kwargs)

    body: nn.Module | None = None
    source, body_channels = "random", in_channels
    if weights is not None:
        sd = load_checkpoint(weights, trust_pickle)
        cfg = _timm_cfg(timm, model_name)
        head = sd.get(f"{_first(cfg.get('classifier'))}.weight")
        stem = sd.get(f"{_first(cfg.get('first_conv'))}.weight")
        classes = int(head.shape[0]) if head is not None and head.ndim == 2 else num_classes
        body_channels = int(stem.shape[1]) if stem is not None and stem.ndim == 4 else in_channels
        try:
            body = create(pretrained=False, num_classes=classes, in_chans=body_channels)
        except Exception as exc:  # noqa: BLE001
            raise KDSearchError(f"{weights}: cannot build {name} for it ({short(exc)})") from None
        load_checked(body, sd, name, weights)
        source = "file"
    elif pretrained:
        cfg = _timm_cfg(timm, model_name)
        if not model_name.startswith(_TIMM_HUB) and not any(cfg.get(k) for k in ("url", "hf_hub_id", "file")):
            notes.append(f"{name} has no downloadable pretrained weights: starting from random init "
                         "(pass --teacher-weights for a checkpoint)")
        else:
            try:
                body = create(pretrained=True, in_chans=3)  # its own classes (a new head below); grayscale repeated
                source, body_channels = "pretrained", 3
            except Exception as exc:  # noqa: BLE001  (offline: connection errors, missing files...)
                body = None
                notes.append(f"could not load pretrained weights for {name} ({short(exc, 100)}): starting from "
                             "random init; offline, a copy in the Hugging Face cache (HF_HUB_OFFLINE=1) or the file "
                             "given with --teacher-weights works")
    if body is None:
        body_channels = in_channels
        try:
            body = create(pretrained=False, num_classes=num_classes, in_chans=in_channels)
        except Exception as exc:  # noqa: BLE001
            raise KDSearchError(f"cannot build {name} for {in_channels}-channel input and {num_classes} classes "
                                f"({short(exc)})") from None

    repeat = _channel_repeat(name, body_channels, in_channels)
    cfg = dict(getattr(body, "pretrained_cfg", None) or {})
    cfg_mean, cfg_std = _pair(cfg.get("mean")), _pair(cfg.get("std"))
    if source != "random" and cfg_mean and cfg_std and len(cfg_mean) == len(cfg_std) == body_channels:
        auto = (cfg_mean, cfg_std, "timm's pretrained_cfg mean/std")
    else:
        auto = (data_mean * repeat, data_std * repeat, DATA_STATISTICS)
    if input_size is None:  # the pretrained resolution for pretrained weights (or a fixed-size model), else native
        cfg_size = cfg.get("input_size")
        use_cfg = cfg_size and (source == "pretrained" or cfg.get("fixed_input_size"))
        input_size = int(cfg_size[-1]) if use_cfg else image_size

    head_replaced = False
    old_classes = getattr(body, "num_classes", num_classes)
    if old_classes != num_classes:
        try:
            body.reset_classifier(num_classes)
        except Exception as exc:  # noqa: BLE001
            raise KDSearchError(f"teacher {name}: cannot replace its classifier ({short(exc)})") from None
        head_replaced = True
        notes.append(f"head replaced ({old_classes} -> {num_classes} classes): the teacher must be fine-tuned")
    return _Body(body, source, input_size, repeat, auto, head_replaced)


def _import_factory(spec: str) -> Callable[..., Any]:
    """`package.module:function` (or `:Class.method`) -> the callable; every failure is one line."""
    import importlib
    import os
    import sys

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


def _factory_body(spec: str, num_classes: int, in_channels: int, image_size: int, weights: str | Path | None,
                  trust_pickle: bool, input_size: int | None, data_mean: tuple[float, ...],
                  data_std: tuple[float, ...], notes: list[str]) -> _Body:
    """`package.module:factory`: factory(num_classes=, in_channels=) -> nn.Module (see the README's contract)."""
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
    mean, std = _pair(getattr(body, "kdsearch_mean", None)), _pair(getattr(body, "kdsearch_std", None))
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
    return _Body(body, source, input_size or image_size, 1, auto)


def _resolve_normalization(normalize: str, mean: tuple[float, ...] | None, std: tuple[float, ...] | None,
                           built: _Body, in_channels: int, data_mean: tuple[float, ...],
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


def _check_forward(model: TeacherNet, name: str, num_classes: int, in_channels: int, image_size: int) -> None:
    """One batch through a timm or factory teacher: logits of shape N x classes, or one clear line."""
    was_training = model.training
    model.eval()
    shape = f"2 images of {in_channels}x{image_size}x{image_size}"
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, in_channels, image_size, image_size))
    except Exception as exc:  # noqa: BLE001
        raise KDSearchError(f"teacher {name} fails on a batch of {shape} ({type(exc).__name__}: {short(exc)})") from None
    finally:
        model.train(was_training)
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if got != (2, num_classes):
        raise KDSearchError(f"teacher {name} returns {got} for a batch of {shape}; expected logits of shape "
                            f"(2, {num_classes}), N x classes")


def build_teacher(name: str, *, num_classes: int, in_channels: int = 3, image_size: int = 32,
                  pretrained: bool = False, weights: str | Path | None = None, trust_pickle: bool = False,
                  input_size: int | None = None, mean: tuple[float, ...] | None = None,
                  std: tuple[float, ...] | None = None, normalize: str = "auto",
                  norm_mean: tuple[float, ...] | None = None,
                  norm_std: tuple[float, ...] | None = None) -> tuple[TeacherNet, TeacherInfo]:
    """Build a teacher for data of (in_channels, image_size, image_size) and num_classes.

    name: a registered architecture, `timm:NAME` or `package.module:factory`. weights (a file)
    wins over pretrained; mean/std are the dataset's. normalize (a NORMALIZE name) and
    norm_mean/norm_std (explicit, they win) say how the body's input is normalized; "auto"
    picks per source (see the module docstring). Returns the wrapper and how it was built.
    """
    data_mean = tuple(mean) if mean is not None else (0.5,) * in_channels
    data_std = tuple(std) if std is not None else (0.25,) * in_channels
    norm_mean, norm_std = _pair(norm_mean) or None, _pair(norm_std) or None  # () = not given
    if normalize not in NORMALIZE:
        raise KDSearchError(f"teacher.normalize: {normalize!r} is not one of {', '.join(NORMALIZE)}")
    notes: list[str] = []
    external = ":" in name
    if name.startswith("timm:"):
        built = _timm_body(name, num_classes, in_channels, image_size, pretrained, weights, trust_pickle,
                           input_size, data_mean, data_std, notes)
    elif external:
        built = _factory_body(name, num_classes, in_channels, image_size, weights, trust_pickle, input_size,
                              data_mean, data_std, notes)
    else:
        built = _registry_body(name, num_classes, in_channels, image_size, pretrained, weights, trust_pickle,
                               input_size, data_mean, data_std, notes)
    norm = _resolve_normalization(normalize, norm_mean, norm_std, built, in_channels, data_mean, data_std)
    if external or normalize != "auto" or norm_mean is not None:  # the default of a registered teacher is silent
        notes.append("teacher input is not normalized (raw [0, 1] pixels)" if normalize == "none" and norm_mean is None
                     else f"normalizing teacher input with {norm[2]}: mean {_fmt(norm[0])}, std {_fmt(norm[1])}")
    if not external and getattr(built.body, "transform_input", False) and norm[:2] != (IMAGENET_MEAN, IMAGENET_STD):
        built.body.transform_input = False  # inception_v3's re-normalization assumes ImageNet-normalized input
        notes.append(f"{name}: transform_input turned off (it assumes ImageNet-normalized input)")

    model = TeacherNet(avoid_crashing_kernels(built.body), norm[0], norm[1], built.input_size, built.repeat)
    info = TeacherInfo(name=name, source=built.source, head_replaced=built.head_replaced, input_size=built.input_size,
                       notes=notes, normalization=norm[2], mean=norm[0], std=norm[1])
    if external:
        _check_forward(model, name, num_classes, in_channels, image_size)
    return model, info


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def create_teacher(name: str, num_classes: int, in_channels: int = 3, image_size: int = 32,
                   pretrained: bool = False, **kwargs: Any) -> TeacherNet:
    """timm-style entry point: the model only; notes become warnings (see build_teacher)."""
    model, info = build_teacher(name, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                                pretrained=pretrained, **kwargs)
    for note in info.notes:
        warnings.warn(note, stacklevel=2)
    return model


# --------------------------------------------------------------------------------------------
# Fine-tuning and the cache


@dataclass
class TeacherResult:
    model: nn.Module  # eval mode, frozen, on the device
    name: str
    val_accuracy: float
    test_accuracy: float
    params: int
    macs: int
    latency_ms: float
    epochs_trained: int
    from_cache: bool
    notes: list[str]
    key: str
    normalization: dict[str, Any] = field(default_factory=dict)  # setting, what, mean, std

    def to_dict(self) -> dict[str, Any]:
        """Everything but the model (for the study's user attributes)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}
        out["notes"] = list(self.notes)
        return out


def state_hash(model: nn.Module) -> str:
    """sha256 of every tensor in the state dict (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().cpu().contiguous().reshape(-1)
        h.update(f"{k}|{t.dtype}|{tuple(v.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_key(**parts: Any) -> str:
    """16 hex chars over the parts (JSON, sorted keys)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _save_cache(model: nn.Module, meta: dict[str, Any], folder: Path, key: str) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / f"{key}.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"key": key})
    write_text_atomic(folder / f"{key}.json", json.dumps(meta, indent=2))  # last: marks done


CACHE_META = ("val_accuracy", "test_accuracy", "params", "macs", "latency_ms", "epochs_trained", "notes")


def _load_cache(model: nn.Module, folder: Path, key: str) -> tuple[dict[str, Any] | None, str]:
    """The cached metadata (weights loaded into model), or None and why when the entry is unusable.

    The weights are checked against the model's keys and shapes before any is copied: a damaged
    or foreign entry leaves the model exactly as it was, to be trained again from its own weights.
    """
    meta_path, weights_path = folder / f"{key}.json", folder / f"{key}.safetensors"
    if not (meta_path.is_file() and weights_path.is_file()):
        return None, ""
    try:
        from safetensors.torch import load_file

        meta = json.loads(meta_path.read_text())
        missing = [k for k in CACHE_META if k not in meta]
        if missing:
            raise ValueError(f"metadata lacks {', '.join(missing)}")
        state, own = load_file(str(weights_path)), model.state_dict()
        if state.keys() != own.keys() or any(state[k].shape != own[k].shape for k in own):
            raise ValueError("weights do not fit the architecture")
        model.load_state_dict(state)
        return meta, ""
    except Exception as exc:  # noqa: BLE001  (a damaged cache entry is rebuilt, never fatal)
        return None, f"the cached teacher {key} was unusable ({str(exc).splitlines()[0][:120]}): prepared again"


def _eval_batch(input_size: int) -> int:
    """Evaluation batch: 1024 at CIFAR size, fewer for big inputs so activations fit in memory."""
    return max(32, min(1024, int(1024 * (32 / max(input_size, 1)) ** 2)))


def _train(model: nn.Module, data: DataSplits, device: torch.device, epochs: int, lr: float, batch_size: int,
           seed: int, title: str) -> None:
    """Plain cross-entropy with one-cycle SGD and the data's crop/flip, on the full train split."""
    recipe = distill.Recipe(epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=5e-4, optimizer="sgd")
    with progress_bar(Console(stderr=True), transient=False) as progress:
        distill.fit(model, data.train.x.to(device), data.train.y.to(device), recipe, pad=data.pad, flip=data.flip,
                    seed=seed, progress=progress, description=title,
                    on_epoch=lambda e, loss, _: progress.console.print(f"{title} epoch {e}/{epochs}: loss {loss:.3f}"))


def probe_speed(model: nn.Module, data: DataSplits, device: torch.device, batch_size: int, eval_batch: int,
                train: bool) -> dict[str, float]:
    """Seconds per training step and per image of inference, timed on a copy of the model (a warm-up
    step, then two timed ones), so a long teacher job can be announced with an estimate first."""
    import copy

    probe = copy.deepcopy(model).to(device).to(memory_format=torch.channels_last)
    x = data.train.x[:max(batch_size, min(eval_batch, 256))].to(device)
    y = data.train.y[:len(x)].to(device)

    def timed(fn) -> float:
        return wall_seconds(fn, device, repeats=2)

    out = {"infer_s_per_image": timed(lambda: distill.predict(probe, x, len(x))) / len(x)}
    if train:
        opt = torch.optim.SGD(probe.parameters(), lr=0.0)
        images = distill.to_float(x[:batch_size]).contiguous(memory_format=torch.channels_last)

        def step() -> None:
            probe.train()
            with torch.enable_grad(), distill.autocast(device):
                loss = torch.nn.functional.cross_entropy(probe(images).float(), y[:batch_size])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        out["train_s_per_step"] = timed(step)
    return out


CHANCE_MIN_VAL = 50  # validation images below which a teacher's accuracy is not judged against chance


def chance_note(val_accuracy: float, val_y: torch.Tensor, epochs: int, name: str = "") -> str | None:
    """A warning when the teacher does no better on validation than always answering the most common
    class (within two standard errors of that rate); None when it does, or when validation is too
    small to tell (fewer than CHANCE_MIN_VAL images)."""
    n = len(val_y)
    if n < CHANCE_MIN_VAL or not math.isfinite(val_accuracy):
        return None
    share = float(torch.bincount(val_y.cpu()).max()) / n
    if val_accuracy > share + 2.0 * math.sqrt(share * (1.0 - share) / n):
        return None
    how = f"after {epochs} epoch(s) of training" if epochs else "untrained"
    return (f"teacher {name + ' ' if name else ''}is at chance on this data {how}: val {val_accuracy:.2%}, where always "
            f"answering the most common class scores {share:.2%}; it cannot teach. Train it longer (--teacher-epochs), "
            "check --teacher-lr, or give trained --teacher-weights")


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


SLOW_S = 600  # estimates above this come with what would shorten them


def _normalization_key(cfg: TeacherConfig, normalization: dict[str, Any]) -> dict[str, Any]:
    """The cache-key part for the input normalization: none for a registered teacher at the default
    (its key stays what it always was; its mean/std are in the weights hash anyway), else the values."""
    if ":" not in cfg.name and cfg.normalize == "auto" and not cfg.mean and not cfg.std:
        return {}
    return {"normalize": {k: normalization[k] for k in ("setting", "mean", "std")}}


def prepare_teacher(cfg: TeacherConfig, data: DataSplits, run_dir: str | Path, device: torch.device, seed: int,
                    latency_threads: int = 1, console: Any = None) -> TeacherResult:
    """Build/load the teacher, fine-tune it if needed (or load that from the cache), and score it.

    epochs = cfg.epochs, or when None: 0 for trained weights that already fit the classes,
    else 10. lr = cfg.lr, or 0.05 to fine-tune trained weights, 0.1 from scratch.
    """
    torch.manual_seed(seed)
    model, info = build_teacher(cfg.name, num_classes=data.num_classes, in_channels=data.in_channels,
                                image_size=data.image_size, pretrained=cfg.pretrained, weights=cfg.weights,
                                trust_pickle=cfg.trust_pickle, input_size=cfg.input_size,
                                mean=tuple(data.mean), std=tuple(data.std), normalize=cfg.normalize,
                                norm_mean=tuple(cfg.mean) or None, norm_std=tuple(cfg.std) or None)
    notes = list(info.notes)
    normalization = {"setting": cfg.normalize, "what": info.normalization, "mean": list(info.mean),
                     "std": list(info.std)}
    epochs = cfg.epochs if cfg.epochs is not None else (0 if info.fits_data else 10)
    lr = cfg.lr if cfg.lr is not None else (0.1 if info.source == "random" else 0.05)
    if epochs == 0 and not info.fits_data:
        notes.append("teacher is untrained on this data: its accuracy is chance-level; set --teacher-epochs")
    fingerprint = data.fingerprint()  # hashes every train/val pixel: compute it once
    key = cache_key(version=CACHE_VERSION, name=cfg.name, weights=state_hash(model), data=fingerprint,
                    pad=data.pad, flip=data.flip, epochs=epochs, lr=lr, batch_size=cfg.batch_size,
                    input_size=info.input_size, seed=seed,
                    **_normalization_key(cfg, normalization))
    folder = teachers_dir(run_dir)
    input_shape = (data.in_channels, data.image_size, data.image_size)

    meta, damaged = _load_cache(model, folder, key)
    if meta is not None:
        model = model.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)
        latency = meta["latency_ms"]
        if meta.get("latency_threads") != latency_threads:
            latency = latency_ms(model, input_shape, latency_threads, min_run_time=0.1)
        return TeacherResult(model, cfg.name, meta["val_accuracy"], meta["test_accuracy"], meta["params"],
                             meta["macs"], latency, meta["epochs_trained"], True, list(meta["notes"]), key,
                             normalization)

    model = model.to(device).to(memory_format=torch.channels_last)
    bs = _eval_batch(info.input_size)
    console = console or Console(stderr=True)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the probe leaves no trace
        speed = probe_speed(model, data, device, cfg.batch_size, bs, train=epochs > 0)
    steps = distill.steps_per_epoch(len(data.train.y), cfg.batch_size) * epochs
    train_s = speed.get("train_s_per_step", 0.0) * steps
    score_s = speed["infer_s_per_image"] * (len(data.val.y) + len(data.test.y))
    console.print(f"estimate on {device} ({torch.get_num_threads()} threads): teacher {cfg.name} "
                  + (f"training {epochs} epoch(s) ≈ {minutes(train_s)}, " if epochs else "")
                  + f"scoring {len(data.val.y) + len(data.test.y):,} images ≈ {minutes(score_s)}", highlight=False)
    if train_s + score_s > SLOW_S:
        console.print("  to shorten it: a GPU (--device cuda), a smaller teacher, fewer --teacher-epochs, or "
                      "trained weights that already fit the data (--teacher-weights)", highlight=False)
    start = time.perf_counter()
    if epochs > 0:
        with torch.enable_grad():  # whatever grad mode the caller is in
            _train(model, data, device, epochs, lr, cfg.batch_size, seed, f"teacher {cfg.name}")
    train_seconds = time.perf_counter() - start
    model.eval().requires_grad_(False)
    with progress_bar(console) as progress:
        val_acc = distill.accuracy(model, data.val.x.to(device), data.val.y.to(device), bs, progress,
                                   f"scoring teacher {cfg.name} on validation")
        test_acc = distill.accuracy(model, data.test.x.to(device), data.test.y.to(device), bs, progress,
                                    f"scoring teacher {cfg.name} on test")
    at_chance = chance_note(val_acc, data.val.y, epochs)
    if at_chance and epochs:  # (untrained, it has its note already)
        notes.append(at_chance)
    params, macs = count_params(model), count_macs(model, input_shape)
    latency = latency_ms(model, input_shape, latency_threads, min_run_time=0.1)
    meta = {"key": key, "name": cfg.name, "source": info.source, "weights_file": cfg.weights,
            "val_accuracy": val_acc, "test_accuracy": test_acc, "params": params, "macs": macs,
            "latency_ms": latency, "latency_threads": latency_threads, "epochs_trained": epochs, "lr": lr,
            "batch_size": cfg.batch_size, "input_size": info.input_size, "seed": seed,
            "data_fingerprint": fingerprint, "train_seconds": round(train_seconds, 1), "notes": notes,
            "normalization": normalization}
    _save_cache(model, meta, folder, key)
    return TeacherResult(model, cfg.name, val_acc, test_acc, params, macs, latency, epochs, False,
                         notes + ([damaged] if damaged else []), key, normalization)
