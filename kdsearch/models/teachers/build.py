"""`build_teacher(name, ...)` and timm-style `create_teacher`: one source per kind of name, one wrapper.

A name is a registered architecture (models.teachers.registry), `timm:NAME` or
`package.module:function`; the normalization setting (`normalize`, or explicit mean/std, which
win) is resolved once for all of them. Only settings other than the default add a note.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from ...errors import KDSearchError
from ..kernels import avoid_crashing_kernels
from .checkpoints import short
from .from_factory import _import_factory, factory_body
from .from_registry import registry_body
from .from_timm import check_timm_name, timm_body
from .registry import get_arch
from .normalization import IMAGENET_MEAN, IMAGENET_STD, NORMALIZE, format_values, resolve_normalization
from .wrapper import TeacherInfo, TeacherNet, as_floats


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


def check_teacher_name(name: str, weights: str | Path | None = None) -> None:
    """Refuse, in one line and before any data or study work, a teacher that cannot be built: an unknown
    name, a timm model timm does not know (or timm missing), a factory that cannot be imported, or a
    weights file that is not there. (Whether the file loads and fits is known once it is built.)"""
    if name.startswith("timm:"):
        check_timm_name(name)
    elif ":" in name:
        _import_factory(name)
    else:
        get_arch(name)
    if weights is not None and not Path(weights).is_file():
        raise KDSearchError(f"teacher weights not found: {weights}")


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
    norm_mean, norm_std = as_floats(norm_mean) or None, as_floats(norm_std) or None  # () = not given
    if normalize not in NORMALIZE:
        raise KDSearchError(f"teacher.normalize: {normalize!r} is not one of {', '.join(NORMALIZE)}")
    notes: list[str] = []
    external = ":" in name
    if name.startswith("timm:"):
        built = timm_body(name, num_classes, in_channels, image_size, pretrained, weights, trust_pickle,
                           input_size, data_mean, data_std, notes)
    elif external:
        built = factory_body(name, num_classes, in_channels, image_size, weights, trust_pickle, input_size,
                              data_mean, data_std, notes)
    else:
        built = registry_body(name, num_classes, in_channels, image_size, pretrained, weights, trust_pickle,
                               input_size, data_mean, data_std, notes)
    norm = resolve_normalization(normalize, norm_mean, norm_std, built, in_channels, data_mean, data_std)
    if external or normalize != "auto" or norm_mean is not None:  # the default of a registered teacher is silent
        notes.append("teacher input is not normalized (raw [0, 1] pixels)" if normalize == "none" and norm_mean is None
                     else f"normalizing teacher input with {norm[2]}: mean {format_values(norm[0])}, std {format_values(norm[1])}")
    if not external and getattr(built.body, "transform_input", False) and norm[:2] != (IMAGENET_MEAN, IMAGENET_STD):
        built.body.transform_input = False  # inception_v3's re-normalization assumes ImageNet-normalized input
        notes.append(f"{name}: transform_input turned off (it assumes ImageNet-normalized input)")

    model = TeacherNet(avoid_crashing_kernels(built.body), norm[0], norm[1], built.input_size, built.repeat)
    info = TeacherInfo(name=name, source=built.source, head_replaced=built.head_replaced, input_size=built.input_size,
                       notes=notes, normalization=norm[2], mean=norm[0], std=norm[1])
    if external:
        _check_forward(model, name, num_classes, in_channels, image_size)
    return model, info


def create_teacher(name: str, num_classes: int, in_channels: int = 3, image_size: int = 32,
                   pretrained: bool = False, **kwargs: Any) -> TeacherNet:
    """timm-style entry point: the model only; notes become warnings (see build_teacher)."""
    model, info = build_teacher(name, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                                pretrained=pretrained, **kwargs)
    for note in info.notes:
        warnings.warn(note, stacklevel=2)
    return model
