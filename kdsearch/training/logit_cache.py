"""The teacher-logit cache: teacher outputs per (training image, augmentation view), built once.

The teacher is frozen, so its logits on a given view of a given image never change: computing
them once for K views per image and sharing them across all trials and workers removes the
teacher's forward pass from every student step. Caches keyed by image index alone reuse the
logits of one augmented view for another (teaching the wrong targets); here every entry is
tied to a view id (kdsearch.data.augment), and the student trains on exactly that view.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.progress import Progress
from safetensors.torch import load_file, save_file
from torch import nn

from ..data.augment import apply_views, identity_view, num_views, to_float
from ..errors import KDSearchError
from ..runs.files import atomic_path
from ..runs.layout import logits_path, partial_logits_path
from .distill import autocast, eval_batch_size


@dataclass
class LogitCache:
    views: torch.Tensor  # N x K view ids (int64), on the device
    logits: torch.Tensor  # N x K x classes, fp16 (float32 where fp16 cannot hold them), on the device
    path: Path
    built: bool  # False when it was loaded from disk
    note: str = ""  # why it was rebuilt, when a stored cache could not be used

    @property
    def k(self) -> int:
        return int(self.views.shape[1])

    def draw(self, idx: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """For each image in idx, one of its cached views (id) and exactly that view's logits."""
        j = torch.randint(0, self.k, (len(idx),), generator=generator).to(self.views.device)
        idx = idx.to(self.views.device)
        return self.views[idx, j], self.logits[idx, j]


def logit_cache_key(teacher_key: str, x: torch.Tensor, y: torch.Tensor, pad: int, flip: bool, k: int, seed: int) -> str:
    """Hash of everything the cached logits depend on: teacher, images, labels, views."""
    h = hashlib.sha256(f"{teacher_key}|pad={pad}|flip={flip}|k={k}|seed={seed}".encode())
    h.update(x.cpu().contiguous().numpy().tobytes())
    h.update(y.cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def choose_views(n: int, k: int, pad: int, flip: bool, seed: int) -> torch.Tensor:
    """N x K view ids: every view when K covers them all, else K distinct ones per image
    (the unaugmented view always among them), seeded."""
    total = num_views(pad, flip)
    if k >= total:
        return torch.arange(total).expand(n, total).clone()
    g = torch.Generator().manual_seed(seed)
    ident = identity_view(pad, flip)
    scores = torch.rand(n, total, generator=g)
    scores[:, ident] = -1.0  # sorted first: always kept
    return scores.argsort(dim=1)[:, :k]


FP16_MAX = 65504.0  # the largest finite fp16 value
SAVE_EVERY_S = 120.0  # a long build saves what it has this often, so an interruption loses minutes, not hours


def _load_partial(path: Path, total: int, batch_size: int, device: torch.device) -> torch.Tensor | None:
    """The logits an interrupted build of this cache saved (whole batches, in build order), or None."""
    try:
        done = load_file(str(path), device=str(device))["logits"]
        rows = len(done)
        if done.ndim != 2 or rows > total or (rows % batch_size and rows != total) or not bool(torch.isfinite(done).all()):
            return None
        return done
    except Exception:  # noqa: BLE001  (an unreadable partial build is started over, never fatal)
        return None


@torch.no_grad()
def build_or_load(teacher: nn.Module, x: torch.Tensor, *, pad: int, flip: bool, k: int, seed: int, key: str,
                  run_dir: Path, batch_size: int | None = None, progress: Progress | None = None,
                  teacher_name: str = "the teacher", save_every_s: float = SAVE_EVERY_S) -> LogitCache:
    """Load the cache for `key` from run_dir/logits, or compute it in batches and save it atomically.

    A long build (50 views of 45,000 images through a ResNet is hours on a CPU) saves the logits it has
    every `save_every_s` seconds beside the cache (`<key>.partial.safetensors`); a build of the same key
    continues from there, with the same batches, so the result is the uninterrupted one.

    A stored cache that cannot be read, does not fit the images (truncated, damaged, foreign) or
    holds non-finite values (as fp16 caches of huge logits did) is rebuilt, and the returned
    cache's `note` says so. Logits are stored in fp16 when it holds them all, else in float32;
    a teacher whose own logits are not finite cannot teach: KDSearchError, naming it.
    """
    path = logits_path(run_dir, key)
    device = x.device
    note = ""
    if path.is_file():
        try:
            stored = load_file(str(path), device=str(device))
            views, logits = stored["views"].long(), stored["logits"]
            if views.ndim != 2 or len(views) != len(x) or logits.shape[:2] != views.shape or \
                    not bool(torch.isfinite(logits).all()):
                raise ValueError("shapes or values do not fit the images")
            return LogitCache(views, logits, path, built=False)
        except Exception as exc:  # noqa: BLE001  (a damaged cache is rebuilt, never fatal)
            note = f"the stored teacher-logit cache {path.name} is unreadable ({str(exc).splitlines()[0][:120]}): rebuilt"
    n = len(x)
    batch_size = batch_size or min(512, eval_batch_size(device))  # 128 on a CPU: ResNet-32 ran 1.2-1.4x faster than at 256
    views = choose_views(n, k, pad, flip, seed)
    k = views.shape[1]
    teacher.eval()
    partial = partial_logits_path(run_dir, key)
    done = _load_partial(partial, n * k, batch_size, device) if partial.is_file() else None
    chunks = [] if done is None else [done]
    first = 0 if done is None else len(done)
    title = "teacher logits" + (f" (continuing after {first:,} of {n * k:,} saved)" if first else "")
    task = progress.add_task(title, total=n * k - first) if progress else None  # the rest: a true rate and ETA
    flat_idx = torch.arange(n).repeat_interleave(k)
    flat_views = views.reshape(-1)
    saved = time.monotonic()
    for start in range(first, n * k, batch_size):
        idx = flat_idx[start:start + batch_size].to(device)
        images = apply_views(to_float(x[idx]), flat_views[start:start + batch_size], pad, flip)
        with autocast(device):
            chunks.append(teacher(images.contiguous(memory_format=torch.channels_last)).float())
        if task is not None:
            progress.update(task, advance=len(idx))
        if time.monotonic() - saved >= save_every_s and start + batch_size < n * k:
            chunks = [torch.cat(chunks)]
            with atomic_path(partial) as tmp:
                save_file({"logits": chunks[0].cpu().contiguous()}, str(tmp))
            saved = time.monotonic()
    logits = torch.cat(chunks).view(n, k, -1)
    finite = torch.isfinite(logits)
    if not bool(finite.all()):
        if task is not None:
            progress.remove_task(task)
        bad = int((~finite).any(dim=2).sum())
        raise KDSearchError(f"teacher {teacher_name} gives non-finite logits (nan or inf) on {bad:,} of {n * k:,} "
                            "training views: it cannot teach (its training diverged? try a lower --teacher-lr, more "
                            "--teacher-epochs, or other --teacher-weights)")
    if float(logits.abs().max()) < FP16_MAX:
        logits = logits.half()  # the usual case: half the memory (huge logits stay float32)
    with atomic_path(path) as tmp:
        save_file({"views": views.to(torch.int32).contiguous(), "logits": logits.cpu().contiguous()}, str(tmp))
    partial.unlink(missing_ok=True)
    if task is not None:
        progress.remove_task(task)
    return LogitCache(views.to(device), logits, path, built=True, note=note)
