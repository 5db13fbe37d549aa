"""Teacher bodies from timm (`timm:NAME`, an optional dependency): its pretrained weights, a checkpoint or random init."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from torch import nn

from ...errors import KDSearchError
from .checkpoints import load_checked, load_checkpoint, short
from .normalization import DATA_STATISTICS
from .wrapper import Body, as_floats, channel_repeat


_TIMM_HUB = ("hf-hub:", "hf_hub:", "local-dir:")  # timm names that are not in its registry


def _import_timm() -> Any:
    try:
        import timm  # an optional extra: pip install 'kdsearch[timm]'
    except ImportError:
        raise KDSearchError("timm teachers need timm, which is not installed: pip install 'kdsearch[timm]' "
                            "(or pip install timm)") from None
    return timm


def check_timm_name(name: str) -> str:
    """`timm:NAME` -> NAME, once timm is installed and knows the model (one line otherwise)."""
    timm = _import_timm()
    model_name = name[len("timm:"):]
    if not model_name:
        raise KDSearchError("teacher 'timm:' names no model: give e.g. timm:resnet18 (see timm.list_models())")
    if not model_name.startswith(_TIMM_HUB) and not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=3)
        raise KDSearchError(f"unknown timm model {model_name!r}"
                            + (f" (close: {', '.join(close)})" if close else " (see timm.list_models())"))
    return model_name


def _timm_cfg(timm: Any, model_name: str) -> dict[str, Any]:
    """timm's pretrained_cfg of a model name, without building it ({} when it has none)."""
    try:
        cfg = timm.models.get_pretrained_cfg(model_name)
    except Exception:  # noqa: BLE001  (hub names, old timm: the built model's cfg is used instead)
        return {}
    return dict(cfg.to_dict()) if hasattr(cfg, "to_dict") else dict(cfg or {})


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (tuple, list)) and value else value


def timm_body(name: str, num_classes: int, in_channels: int, image_size: int, pretrained: bool,
               weights: str | Path | None, trust_pickle: bool, input_size: int | None,
               data_mean: tuple[float, ...], data_std: tuple[float, ...], notes: list[str]) -> Body:
    """`timm:NAME`: timm.create_model, with its pretrained weights, a checkpoint file or random init."""
    timm = _import_timm()
    model_name = check_timm_name(name)

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

    repeat = channel_repeat(name, body_channels, in_channels)
    cfg = dict(getattr(body, "pretrained_cfg", None) or {})
    cfg_mean, cfg_std = as_floats(cfg.get("mean")), as_floats(cfg.get("std"))
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
    return Body(body, source, input_size, repeat, auto, head_replaced)
