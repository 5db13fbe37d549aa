"""The on-disk decode cache: a dataset decoded once to uint8 arrays, keyed by its source.

Every loader (torchvision, digits, an image folder) returns `Arrays`; `cached` stores them under
$KDSEARCH_CACHE (or ~/.cache/kdsearch) so the next study reads them back instead of decoding.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from ..runs.files import atomic_path


CACHE_FORMAT = 1  # bump when the cached dict changes: old cache files then never match a key
Arrays = dict  # train_x, train_y, test_x, test_y (tensors), classes (list[str]), format (int)


def cache_root() -> Path:
    """Where decoded arrays, extracted archives and torchvision downloads go ($KDSEARCH_CACHE)."""
    env = os.environ.get("KDSEARCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kdsearch"


def cache_path(dataset: str, identity: str, root: Path) -> Path:
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{dataset}|{identity}".encode()).hexdigest()[:16]
    return root / "arrays" / f"{dataset}-{digest}.pt"


def cached(dataset: str, identity: str, decode, root: Path) -> Arrays:
    """Arrays from the cache when this exact source was decoded before, else decode and store."""
    path = cache_path(dataset, identity, root)
    if path.is_file():
        try:
            arrays = torch.load(path, weights_only=True)
            if isinstance(arrays, dict) and arrays.get("format") == CACHE_FORMAT:
                return arrays
        except Exception:  # noqa: BLE001  a truncated or foreign file: decode again, overwrite it
            pass
    arrays = {**decode(), "format": CACHE_FORMAT}
    try:
        with atomic_path(path) as tmp:  # a reader never sees half a file
            torch.save(arrays, tmp)
    except OSError:
        pass  # a read-only cache only costs the next run a decode
    return arrays


def make_arrays(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
            classes: list[str]) -> Arrays:
    return {"train_x": train_x.contiguous(), "train_y": train_y.to(torch.int64), "test_x": test_x.contiguous(),
            "test_y": test_y.to(torch.int64), "classes": [str(c) for c in classes]}
