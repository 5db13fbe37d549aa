"""Batched, replayable augmentation on tensors: translate (zero padding) and horizontal flip.

Each augmented view of an image is named by a small integer, the view id, that fixes its
crop offset and flip, so the same id always gives the same tensor (on CPU and GPU). That is
what lets teacher outputs be cached per view: teacher and student always see the same view.
A whole batch is augmented with a few tensor ops on its device, as airbench does, instead of
a per-sample Python transform in a DataLoader worker.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1] (models normalize inside, so exports take raw pixels)."""
    return x.float().div_(255.0)


def num_views(pad: int, flip: bool) -> int:
    """How many distinct views an image has: (2·pad+1)² offsets, times 2 with flips."""
    return (2 * pad + 1) ** 2 * (2 if flip else 1)


def identity_view(pad: int, flip: bool) -> int:
    """The view id of the unshifted, unflipped image."""
    side = 2 * pad + 1
    return (pad * side + pad) * (2 if flip else 1)


def decode_view(view: torch.Tensor, pad: int, flip: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """view ids -> (dy, dx, flipped) with dy, dx in [0, 2·pad]."""
    side = 2 * pad + 1
    flipped = (view % 2).bool() if flip else torch.zeros_like(view, dtype=torch.bool)
    rest = view // 2 if flip else view
    return rest // side, rest % side, flipped


def apply_views(x: torch.Tensor, view: torch.Tensor, pad: int, flip: bool) -> torch.Tensor:
    """Augment a batch: image i is shown as view view[i] (flip first, then translate)."""
    n, _, h, w = x.shape
    view = view.to(x.device)
    dy, dx, flipped = decode_view(view, pad, flip)
    if flip:
        x = torch.where(flipped[:, None, None, None], x.flip(3), x)
    if pad > 0:
        padded = F.pad(x, (pad, pad, pad, pad))
        rows = dy[:, None] + torch.arange(h, device=x.device)[None, :]  # n x h
        cols = dx[:, None] + torch.arange(w, device=x.device)[None, :]  # n x w
        idx_n = torch.arange(n, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    return x.contiguous()


def random_views(n: int, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """n view ids drawn uniformly (on the CPU generator, so runs repeat across devices)."""
    return torch.randint(0, num_views(pad, flip), (n,), generator=generator)
