"""Reading a teacher checkpoint someone else saved: safely, whatever its wrapping, with clear errors.

`load_checkpoint` turns a file (torch.save of a state dict, a {"state_dict": ...} dict and
friends, a trusted whole module, or safetensors) into a flat state dict, refusing to unpickle
arbitrary objects unless the user trusts the file; `load_checked` puts it into a module or says
in one line which keys do not fit.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from ...errors import KDSearchError


def short(exc: BaseException, limit: int = 160) -> str:
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
        try:
            obj: Any = load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001  (any failure means: not a readable safetensors file)
            raise KDSearchError(f"cannot read {path}: not a valid safetensors file ({short(exc)})") from None
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
                                f"({detail.group(0) if detail else short(exc)})") from None
        except Exception as exc:  # noqa: BLE001  (zip, EOF, key errors... all mean a bad file)
            raise KDSearchError(f"cannot read {path}: corrupt or not a PyTorch checkpoint "
                                f"({type(exc).__name__}: {short(exc)})") from None
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


def few(keys: list[str], n: int = 4) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_checked(body: nn.Module, sd: dict[str, torch.Tensor], name: str, path: str | Path) -> None:
    """Load sd into body, or say in one line which keys do not fit (num_batches_tracked aside)."""
    expected = body.state_dict()
    skip = lambda k: k.endswith("num_batches_tracked")  # noqa: E731  (old checkpoints lack it)
    missing = [k for k in expected if k not in sd and not skip(k)]
    unexpected = [k for k in sd if k not in expected and not skip(k)]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(expected[k].shape)}" for k in sd
              if k in expected and sd[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing {few(missing)}")
    if unexpected:
        problems.append(f"unexpected {few(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch {few(shapes, 3)}")
    if problems:
        raise KDSearchError(f"{path} does not fit the {name} architecture: {'; '.join(problems)}")
    body.load_state_dict({k: v for k, v in sd.items() if k in expected}, strict=False)
