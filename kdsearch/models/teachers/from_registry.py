"""Teacher bodies of a registered architecture: from a checkpoint file, ImageNet weights or random init.

- a checkpoint file: loaded safely (weights_only unless trusted); the stem is read off the
  checkpoint (3x3 conv1 = small-image stem at native size; 7x7 = ImageNet stem, input resized to
  224, or 299 for inception_v3); ImageNet mean/std (inception_v3 files also get transform_input).
- ImageNet weights (torchvision names): ImageNet stem and statistics, input resized, head replaced.
  Offline, the download fails: that is a note, and the teacher falls back to random init.
- random init: small images (<= 64 px) get the small-image ResNet stem at native size, and the
  dataset's own mean/std.
A classifier with another class count is replaced (to fine-tune).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ...errors import KDSearchError
from .checkpoints import few, load_checked, load_checkpoint, short
from .normalization import DATA_STATISTICS, IMAGENET_MEAN, IMAGENET_STD
from .registry import TeacherArch, get_arch
from .wrapper import Body, SMALL_IMAGE, channel_repeat


def _replace_head(body: nn.Module, arch: TeacherArch, num_classes: int) -> int:
    """A fresh classifier for num_classes; returns the old class count."""
    old = getattr(body, arch.head)
    setattr(body, arch.head, nn.Linear(old.in_features, num_classes))
    return old.out_features


def _imagenet_body(name: str) -> nn.Module:
    """torchvision ImageNet weights (downloads them; raises when offline)."""
    import torchvision  # slow to import: only torchvision architectures need it

    body = torchvision.models.get_model(name, weights="DEFAULT")
    if name == "inception_v3":  # weights force the auxiliary head; it is training-only dead weight
        body.aux_logits = False
        body.AuxLogits = None
    return body


def _weights_url(name: str) -> str:
    try:
        import torchvision  # slow to import: only torchvision architectures need it

        return torchvision.models.get_model_weights(name).DEFAULT.url
    except Exception:  # noqa: BLE001  (only for a hint)
        return ""


def registry_body(name: str, num_classes: int, in_channels: int, image_size: int, pretrained: bool,
                   weights: str | Path | None, trust_pickle: bool, input_size: int | None,
                   data_mean: tuple[float, ...], data_std: tuple[float, ...], notes: list[str]) -> Body:
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
    repeat = channel_repeat(name, body_channels, in_channels)
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
    return Body(body, source, input_size, repeat, auto, head_replaced)
