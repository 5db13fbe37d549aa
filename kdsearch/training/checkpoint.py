"""Epoch checkpoints of a training in progress, so that a training stopped part-way continues from its
last saved epoch instead of from scratch.

A 50-epoch model of a 40k-parameter student takes hours on a 2-core CPU: longer than the session or
the machine that started it may last. `fit` saves everything the rest of the training depends on
(weights, optimizer and schedule state, weight average, the batch-and-view generator, torch's random
state, the validation curve) at an epoch's end, at most every `every_s` seconds, and a later `fit` of
the same training continues from there: bit for bit the model an uninterrupted run gives, on the same
machine and thread count (tests/test_checkpoint.py). A checkpoint of another training (another key) or
an unreadable one is ignored: that training starts from scratch and overwrites it.
"""

from __future__ import annotations

import json
import pickle
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..runs.files import atomic_path


SAVE_EVERY_S = 60.0  # at most one save a minute: a save is milliseconds, an interruption loses under a minute


@dataclass
class Resume:
    """Where a training keeps its checkpoint, and what the training is (`key`, the caller's: the student, the
    arm, the data; fit adds the recipe, the seed and the number of images). The caller removes the file once
    the finished model is kept: until then an interruption loses at most `every_s` seconds of training."""

    path: Path
    key: dict[str, Any]
    every_s: float | None = None  # None: SAVE_EVERY_S
    resumed_at: int = 0  # set by fit: epochs already done when it started (0: from scratch)
    last_save: float = field(default=0.0, repr=False)


def full_key(resume: Resume, recipe: Any, seed: int, images: int) -> dict[str, Any]:
    """The caller's key with everything fit itself knows that changes the training, as JSON values."""
    return json.loads(json.dumps({**resume.key, "recipe": asdict(recipe), "seed": seed, "images": images}))


def _read(path: Path) -> dict[str, Any] | None:
    """A saved state, or None when there is none or it cannot be read (damaged: the training starts over)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # never a full unpickle
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError):
        return None
    return state if isinstance(state, dict) else None


def load(resume: Resume, key: dict[str, Any]) -> dict[str, Any] | None:
    """The saved state of this training, or None (none saved, another training's, or unreadable)."""
    state = _read(resume.path)
    return state if state is not None and state.get("key") == key else None


def save(resume: Resume, key: dict[str, Any], epoch: int, curve: list[float], checks: list[float | None],
         model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, ema, generator: torch.Generator) -> None:
    """Save the state after `epoch` epochs (atomically), unless the last save is under every_s seconds old."""
    now = time.monotonic()
    every = SAVE_EVERY_S if resume.every_s is None else resume.every_s
    if now - resume.last_save < every:
        return
    state = {"key": key, "epoch": epoch, "curve": list(curve), "checks": list(checks),
             "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict() if scheduler is not None else None,
             "ema": ema.state_dict() if ema is not None else None,
             "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    with atomic_path(resume.path) as tmp:
        torch.save(state, tmp)
    resume.last_save = now


def restore(state: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, ema,
            generator: torch.Generator) -> tuple[int, list[float], list[float | None]]:
    """Put a saved state back; returns (epochs done, validation curve, checks)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["epoch"]), list(state["curve"]), list(state["checks"])


def progress_of(path: Path) -> tuple[int, int] | None:
    """(epochs done, epochs in all) of the training saved in `path`, or None if it cannot be read
    (for `kdsearch status`)."""
    state = _read(path)
    if state is None:
        return None
    try:
        return int(state["epoch"]), int(state["key"]["recipe"]["epochs"])
    except (KeyError, TypeError, ValueError):
        return None
