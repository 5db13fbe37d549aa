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

`prepare_teacher` then fine-tunes (or trains) the teacher on the full training split, scores
it, and caches it under `<run_dir>/teachers/<key>.safetensors` keyed by a hash of its
initial weights, the data and the training settings, so a second run costs nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import re
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from . import distill
from .config import TeacherConfig
from .data import DataSplits
from .errors import KDSearchError
from .files import atomic_path, write_text_atomic
from .progress import progress_bar
from .layout import teachers_dir
from .measure import count_macs, count_params, latency_ms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SMALL_IMAGE = 64  # inputs up to this size get the small-image ResNet stem when trained from scratch
CACHE_VERSION = 1  # bump when the cache key's meaning changes


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
        raise KDSearchError(f"unknown teacher {name!r} (known: {', '.join(TEACHERS)})")
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
    source: str  # "file", "imagenet" or "random"
    head_replaced: bool
    input_size: int  # what the body sees
    notes: list[str] = field(default_factory=list)

    @property
    def fits_data(self) -> bool:
        """Trained weights whose classifier already has the dataset's classes."""
        return self.source != "random" and not self.head_replaced


# --------------------------------------------------------------------------------------------
# Loading checkpoint files


def _short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "…"


def load_checkpoint(path: str | Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A checkpoint file -> a flat state dict (prefixes such as `module.` stripped).

    Safe by default: `torch.load(weights_only=True)` (or safetensors); a pickle that needs
    arbitrary globals loads only with trust_pickle, because unpickling can run code.
    """
    path = Path(path)
    if not path.is_file():
        raise KDSearchError(f"teacher weights not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001  (any failure means: not a readable safetensors file)
            raise KDSearchError(f"cannot read {path}: not a valid safetensors file ({_short(exc)})") from None
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
        except pickle.UnpicklingError as exc:
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
            if found and not trust_pickle:
                raise KDSearchError(f"{path} is not loadable safely (it pickles {found.group(1)}); "
                                    "pass --trust-pickle if you trust this file") from None
            detail = re.search(r"Unsupported operand[^.\n]*|invalid load key[^\n]*", str(exc))
            raise KDSearchError(f"cannot read {path}: corrupt or not a PyTorch checkpoint "
                                f"({detail.group(0) if detail else _short(exc)})") from None
        except Exception as exc:  # noqa: BLE001  (zip, EOF, key errors... all mean a bad file)
            raise KDSearchError(f"cannot read {path}: corrupt or not a PyTorch checkpoint "
                                f"({type(exc).__name__}: {_short(exc)})") from None
    return _clean_state_dict(_find_state_dict(obj, path))


_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights", "params")


def _find_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Accept a bare state dict, {"state_dict": ...} and friends, or (trusted) a whole module."""
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:  # the first nested entry that holds tensors
            if key in obj and isinstance(obj[key], (Mapping, nn.Module)):
                try:
                    return _find_state_dict(obj[key], path)
                except KDSearchError:
                    continue
        tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
        keys = ", ".join(map(str, list(obj)[:5]))
        raise KDSearchError(f"{path} holds no state dict (top-level keys: {keys or 'none'})")
    raise KDSearchError(f"{path} is not a checkpoint: it holds a {type(obj).__name__}, not a state dict")


def _clean_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the prefixes that nn.DataParallel (`module.`) and torch.compile (`_orig_mod.`) add."""
    sd = dict(sd)
    changed = True
    while changed and sd:
        changed = False
        for prefix in ("module.", "_orig_mod."):
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                changed = True
    return sd


def _few(keys: list[str], n: int = 4) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _load_checked(body: nn.Module, sd: dict[str, torch.Tensor], name: str, path: str | Path) -> None:
    """Load sd into body, or say in one line which keys do not fit (num_batches_tracked aside)."""
    expected = body.state_dict()
    skip = lambda k: k.endswith("num_batches_tracked")  # noqa: E731  (old checkpoints lack it)
    missing = [k for k in expected if k not in sd and not skip(k)]
    unexpected = [k for k in sd if k not in expected and not skip(k)]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(expected[k].shape)}" for k in sd
              if k in expected and sd[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected {_few(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch {_few(shapes, 3)}")
    if problems:
        raise KDSearchError(f"{path} does not fit the {name} architecture: {'; '.join(problems)}")
    body.load_state_dict({k: v for k, v in sd.items() if k in expected}, strict=False)


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


def build_teacher(name: str, *, num_classes: int, in_channels: int = 3, image_size: int = 32,
                  pretrained: bool = False, weights: str | Path | None = None, trust_pickle: bool = False,
                  input_size: int | None = None, mean: tuple[float, ...] | None = None,
                  std: tuple[float, ...] | None = None) -> tuple[TeacherNet, TeacherInfo]:
    """Build a teacher for data of (in_channels, image_size, image_size) and num_classes.

    weights (a file) wins over pretrained (ImageNet); mean/std are the dataset's, used only
    for randomly initialized teachers. Returns the wrapper and how it was built (notes).
    """
    arch = get_arch(name)
    if input_size is not None and input_size < max(arch.min_input, 1):
        raise KDSearchError(f"teacher input size {input_size}: {name} needs at least {max(arch.min_input, 1)} pixels")
    data_mean = tuple(mean) if mean is not None else (0.5,) * in_channels
    data_std = tuple(std) if std is not None else (0.25,) * in_channels
    notes: list[str] = []
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
                                f"{_few([k for k in (arch.stem, head_key) if k not in sd]) or 'a 2-D classifier'} "
                                f"(found {_few(list(sd))})")
        ck_classes, ck_channels, kernel = sd[head_key].shape[0], sd[arch.stem].shape[1], sd[arch.stem].shape[-1]
        small_stem = arch.imagenet_input is None or (name.startswith("resnet") and kernel == 3)
        try:
            body = arch.build(ck_classes, ck_channels, small_stem)
        except Exception as exc:  # noqa: BLE001
            raise KDSearchError(f"{weights}: cannot build {name} for it ({_short(exc)})") from None
        if name == "inception_v3":
            body.transform_input = True  # torchvision's convention for ImageNet-normalized inputs
        _load_checked(body, sd, name, weights)
        source = "file"
    elif pretrained and arch.imagenet_input is not None:
        try:
            body = _imagenet_body(name)
            source = "imagenet"
            small_stem = False
        except Exception as exc:  # noqa: BLE001  (offline: URLError, OSError, hash mismatch...)
            url = _weights_url(name)
            hint = f"; to use them offline put {url.rsplit('/', 1)[-1]} into ~/.cache/torch/hub/checkpoints/" if url else ""
            notes.append(f"could not load ImageNet weights for {name} ({_short(exc, 100)}): "
                         f"starting from random init{hint}")
    elif pretrained:
        notes.append(f"{name} has no downloadable pretrained weights: starting from random init "
                     "(pass --teacher-weights for a checkpoint)")

    if body is None:  # random init, adapted to the data
        size = input_size or max(image_size, arch.min_input)
        small_stem = size <= SMALL_IMAGE or arch.imagenet_input is None
        body = arch.build(num_classes, in_channels, small_stem)

    body_channels = int(body.state_dict()[arch.stem].shape[1])
    if body_channels == in_channels:
        repeat = 1
    elif in_channels == 1:
        repeat = body_channels
    else:
        raise KDSearchError(f"teacher {name} takes {body_channels}-channel images, the data has {in_channels} "
                            "channels")
    if source == "random":
        norm_mean, norm_std = data_mean * repeat, data_std * repeat
    elif body_channels == 3:
        norm_mean, norm_std = IMAGENET_MEAN, IMAGENET_STD
    else:
        norm_mean, norm_std = data_mean, data_std

    if input_size is None:  # native size unless an ImageNet stem carries trained weights
        trained_imagenet_stem = not small_stem and source != "random"
        input_size = (arch.imagenet_input or image_size) if trained_imagenet_stem else max(image_size, arch.min_input)

    head_replaced = False
    old_classes = getattr(body, arch.head).out_features
    if old_classes != num_classes:
        _replace_head(body, arch, num_classes)
        head_replaced = True
        notes.append(f"head replaced ({old_classes} -> {num_classes} classes): the teacher must be fine-tuned")

    model = TeacherNet(body, norm_mean, norm_std, input_size, repeat)
    info = TeacherInfo(name=name, source=source, head_replaced=head_replaced, input_size=input_size, notes=notes)
    return model, info


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
        fn()  # warm-up (allocations, kernel selection)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(2):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / 2

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


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


SLOW_S = 600  # estimates above this come with what would shorten them


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
                                mean=tuple(data.mean), std=tuple(data.std))
    notes = list(info.notes)
    epochs = cfg.epochs if cfg.epochs is not None else (0 if info.fits_data else 10)
    lr = cfg.lr if cfg.lr is not None else (0.1 if info.source == "random" else 0.05)
    if epochs == 0 and not info.fits_data:
        notes.append("teacher is untrained on this data: its accuracy is chance-level; set --teacher-epochs")
    fingerprint = data.fingerprint()  # hashes every train/val pixel: compute it once
    key = cache_key(version=CACHE_VERSION, name=cfg.name, weights=state_hash(model), data=fingerprint,
                    pad=data.pad, flip=data.flip, epochs=epochs, lr=lr, batch_size=cfg.batch_size,
                    input_size=info.input_size, seed=seed)
    folder = teachers_dir(run_dir)
    input_shape = (data.in_channels, data.image_size, data.image_size)

    meta, damaged = _load_cache(model, folder, key)
    if meta is not None:
        model = model.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)
        latency = meta["latency_ms"]
        if meta.get("latency_threads") != latency_threads:
            latency = latency_ms(model, input_shape, latency_threads, min_run_time=0.1)
        return TeacherResult(model, cfg.name, meta["val_accuracy"], meta["test_accuracy"], meta["params"],
                             meta["macs"], latency, meta["epochs_trained"], True, list(meta["notes"]), key)

    model = model.to(device).to(memory_format=torch.channels_last)
    bs = _eval_batch(info.input_size)
    console = console or Console(stderr=True)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the probe leaves no trace
        speed = probe_speed(model, data, device, cfg.batch_size, bs, train=epochs > 0)
    steps = distill.steps_per_epoch(len(data.train.y), cfg.batch_size) * epochs
    train_s = speed.get("train_s_per_step", 0.0) * steps
    score_s = speed["infer_s_per_image"] * (len(data.val.y) + len(data.test.y))
    console.print(f"estimate on {device} ({torch.get_num_threads()} threads): teacher {cfg.name} "
                  + (f"training {epochs} epoch(s) ≈ {_minutes(train_s)}, " if epochs else "")
                  + f"scoring {len(data.val.y) + len(data.test.y):,} images ≈ {_minutes(score_s)}", highlight=False)
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
    params, macs = count_params(model), count_macs(model, input_shape)
    latency = latency_ms(model, input_shape, latency_threads, min_run_time=0.1)
    meta = {"key": key, "name": cfg.name, "source": info.source, "weights_file": cfg.weights,
            "val_accuracy": val_acc, "test_accuracy": test_acc, "params": params, "macs": macs,
            "latency_ms": latency, "latency_threads": latency_threads, "epochs_trained": epochs, "lr": lr,
            "batch_size": cfg.batch_size, "input_size": info.input_size, "seed": seed,
            "data_fingerprint": fingerprint, "train_seconds": round(train_seconds, 1), "notes": notes}
    _save_cache(model, meta, folder, key)
    return TeacherResult(model, cfg.name, val_acc, test_acc, params, macs, latency, epochs, False,
                         notes + ([damaged] if damaged else []), key)
