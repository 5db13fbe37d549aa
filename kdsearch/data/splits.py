"""The splits a study uses: uint8 image tensors with labels, stratified subsets, validation carved off.

A `DataSplits` holds train, val and test as `Split`s (uint8 N x C x H x W and int64 labels), the
classes, the per-channel statistics and the augmentation settings of the dataset.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import KDSearchError


@dataclass
class Split:
    x: torch.Tensor  # uint8, N x C x H x W
    y: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class DataSplits:
    name: str
    train: Split  # training data minus the validation split (teachers train on all of it)
    val: Split  # carved from the training data; what the search optimizes
    test: Split  # the official test split: final reports only
    classes: list[str]
    mean: tuple[float, ...]  # per channel, of train pixels scaled to [0, 1]
    std: tuple[float, ...]
    flip: bool  # horizontal flip is a label-preserving augmentation for this data
    pad: int  # random-crop padding in pixels (0 = no crop augmentation)

    @property
    def in_channels(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.x.shape[-1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def fingerprint(self) -> str:
        """Hash of the train/val content: keys teacher and logit caches."""
        h = hashlib.sha256()
        for split in (self.train, self.val):
            h.update(split.x.contiguous().numpy().tobytes())
            h.update(split.y.contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


def stratified_subset(split: Split, n: int, seed: int) -> Split:
    """A seeded subset of n images with the class proportions of `split` (n <= 0 or n >= len: all).

    Every class keeps at least one image when n >= the number of classes; order is preserved.
    """
    if n <= 0 or n >= len(split):
        return split
    index = stratified_pick(split.y.cpu().numpy(), n, seed)
    return _take(split, torch.from_numpy(index).to(split.y.device))


def stratified_pick(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of n items drawn per class in proportion to its size (largest remainder)."""
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * n / len(y)
    take = np.floor(quota).astype(np.int64)
    if n >= len(classes):
        take = np.maximum(take, 1)
    for i in np.argsort(-(quota - np.floor(quota)), kind="stable"):  # hand out what rounding lost
        if take.sum() >= n:
            break
        if take[i] < counts[i]:
            take[i] += 1
    while take.sum() > n:  # the one-per-class floor overshot: trim the largest shares
        take[np.argmax(np.where(take > 1, take - quota, -np.inf))] -= 1
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picked))


def _take(split: Split, index: torch.Tensor) -> Split:
    return Split(split.x[index], split.y[index])


def split_val(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """(train, val): val is a stratified, seeded `fraction` of the official training data."""
    if len(split) < 2:
        raise KDSearchError(f"need at least 2 training images to carve a validation split, found {len(split)}")
    n_val = min(max(round(fraction * len(split)), 1), len(split) - 1)
    is_val = torch.zeros(len(split), dtype=torch.bool)
    is_val[torch.from_numpy(stratified_pick(split.y.numpy(), n_val, seed))] = True
    return _take(split, ~is_val), _take(split, is_val)


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of pixels in [0, 1], exact from 256-bin histograms (no float copy)."""
    values = torch.arange(256, dtype=torch.float64) / 255.0
    mean, std = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        m = float((counts * values).sum() / counts.sum())
        var = float((counts * (values - m) ** 2).sum() / counts.sum())
        mean.append(m)
        std.append(var ** 0.5)
    return tuple(mean), tuple(std)
