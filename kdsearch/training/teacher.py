"""Preparing the teacher for a study: fine-tune (or train) it, score it, and cache it in the run folder.

`prepare_teacher` builds the teacher (models.teachers), fine-tunes or trains it on the full
training split when needed, scores it, and caches it under `<run_dir>/teachers/<key>.safetensors`
keyed by a hash of its initial weights, the data and the training settings, so a second run costs
nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from safetensors.torch import load_file, save_file
from torch import nn

from . import distill
from ..config import TeacherConfig
from ..data.splits import DataSplits
from ..measure.costs import count_macs, count_params, wall_seconds
from ..measure.latency import latency_device, student_latency
from ..models.teachers.build import build_teacher
from ..progress import SLOW_S, minutes, progress_bar
from ..runs.files import atomic_path, write_text_atomic
from ..runs.layout import teachers_dir


CACHE_VERSION = 1  # bump when the cache key's meaning changes


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
    normalization: dict[str, Any] = field(default_factory=dict)  # setting, what, mean, std

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


def teacher_cache_key(**parts: Any) -> str:
    """The key of a prepared teacher in the run's teacher cache: 16 hex chars over the parts (JSON, sorted keys)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _save_cache(model: nn.Module, meta: dict[str, Any], folder: Path, key: str) -> None:
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


def teacher_training(cfg: TeacherConfig, fits_data: bool, from_scratch: bool) -> tuple[int, float]:
    """Epochs and lr the teacher is trained with: cfg's, or by default 0 epochs for trained weights that
    already fit the classes (else 10), at lr 0.05 to fine-tune trained weights, 0.1 from scratch."""
    epochs = cfg.epochs if cfg.epochs is not None else (0 if fits_data else 10)
    lr = cfg.lr if cfg.lr is not None else (0.1 if from_scratch else 0.05)
    return epochs, lr


def eval_batch(input_size: int, device: torch.device) -> int:
    """Evaluation batch: the device's (distill.eval_batch_size: 1024, 128 on a CPU) at CIFAR size, fewer
    for big inputs so activations fit in memory."""
    return max(32, min(distill.eval_batch_size(device), int(1024 * (32 / max(input_size, 1)) ** 2)))


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
    probe = copy.deepcopy(model).to(device).to(memory_format=torch.channels_last)
    x = data.train.x[:max(batch_size, min(eval_batch, 256))].to(device)
    y = data.train.y[:len(x)].to(device)

    def timed(fn) -> float:
        return wall_seconds(fn, device, repeats=2)

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


CHANCE_MIN_VAL = 50  # validation images below which a teacher's accuracy is not judged against chance


def chance_note(val_accuracy: float, val_y: torch.Tensor, epochs: int, name: str = "") -> str | None:
    """A warning when the teacher does no better on validation than always answering the most common
    class (within two standard errors of that rate); None when it does, or when validation is too
    small to tell (fewer than CHANCE_MIN_VAL images)."""
    n = len(val_y)
    if n < CHANCE_MIN_VAL or not math.isfinite(val_accuracy):
        return None
    share = float(torch.bincount(val_y.cpu()).max()) / n
    if val_accuracy > share + 2.0 * math.sqrt(share * (1.0 - share) / n):
        return None
    how = f"after {epochs} epoch(s) of training" if epochs else "untrained"
    return (f"teacher {name + ' ' if name else ''}is at chance on this data {how}: val {val_accuracy:.2%}, where always "
            f"answering the most common class scores {share:.2%}; it cannot teach. Train it longer (--teacher-epochs), "
            "check --teacher-lr, or give trained --teacher-weights")


def _normalization_key(cfg: TeacherConfig, normalization: dict[str, Any]) -> dict[str, Any]:
    """The cache-key part for the input normalization: none for a registered teacher at the default
    (its key stays what it always was; its mean/std are in the weights hash anyway), else the values."""
    if ":" not in cfg.name and cfg.normalize == "auto" and not cfg.mean and not cfg.std:
        return {}
    return {"normalize": {k: normalization[k] for k in ("setting", "mean", "std")}}


def teacher_latency(model: nn.Module, input_shape: tuple[int, ...], runtime: str, batch: int, threads: int,
                    notes: list[str], device: torch.device | None = None) -> float:
    """The teacher timed as its study times the students (runtime, batch, threads; eager PyTorch on the
    study's device), so a student's latency "of the teacher" compares like with like. A teacher the ONNX
    exporter cannot take is timed in eager PyTorch, with a note saying so."""
    if runtime == "onnxruntime":
        try:  # exported from a float CPU copy (the teacher may be channels_last or on a GPU)
            cpu = copy.deepcopy(model).cpu().float().eval().to(memory_format=torch.contiguous_format)
            return student_latency(cpu, input_shape, "onnxruntime", batch, threads).median_ms
        except Exception as exc:  # noqa: BLE001 - any exporter or runtime failure: eager timing instead
            notes.append(f"teacher latency timed in eager PyTorch: ONNX export or ONNX Runtime failed "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})")
    return student_latency(model, input_shape, "torch", batch, threads, device=device).median_ms  # (times a copy)


def prepare_teacher(cfg: TeacherConfig, data: DataSplits, run_dir: str | Path, device: torch.device, seed: int,
                    latency_threads: int = 1, console: Any = None, latency_runtime: str = "onnxruntime",
                    latency_batch: int = 1) -> TeacherResult:
    """Build/load the teacher, fine-tune it if needed (or load that from the cache), and score it.

    epochs = cfg.epochs, or when None: 0 for trained weights that already fit the classes,
    else 10. lr = cfg.lr, or 0.05 to fine-tune trained weights, 0.1 from scratch.
    """
    torch.manual_seed(seed)
    model, info = build_teacher(cfg.name, num_classes=data.num_classes, in_channels=data.in_channels,
                                image_size=data.image_size, pretrained=cfg.pretrained, weights=cfg.weights,
                                trust_pickle=cfg.trust_pickle, input_size=cfg.input_size,
                                mean=tuple(data.mean), std=tuple(data.std), normalize=cfg.normalize,
                                norm_mean=tuple(cfg.mean) or None, norm_std=tuple(cfg.std) or None)
    notes = list(info.notes)
    normalization = {"setting": cfg.normalize, "what": info.normalization, "mean": list(info.mean),
                     "std": list(info.std)}
    epochs, lr = teacher_training(cfg, info.fits_data, from_scratch=info.source == "random")
    if epochs == 0 and not info.fits_data:
        notes.append("teacher is untrained on this data: its accuracy is chance-level; set --teacher-epochs")
    fingerprint = data.fingerprint()  # hashes every train/val pixel: compute it once
    key = teacher_cache_key(version=CACHE_VERSION, name=cfg.name, weights=state_hash(model), data=fingerprint,
                    pad=data.pad, flip=data.flip, epochs=epochs, lr=lr, batch_size=cfg.batch_size,
                    input_size=info.input_size, seed=seed,
                    **_normalization_key(cfg, normalization))
    folder = teachers_dir(run_dir)
    input_shape = (data.in_channels, data.image_size, data.image_size)

    meta, damaged = _load_cache(model, folder, key)
    if meta is not None:
        model = model.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)
        latency, cached_notes = meta["latency_ms"], list(meta["notes"])
        timed_as = (meta.get("latency_runtime", "torch"), meta.get("latency_batch", 1), meta.get("latency_threads"),
                    meta.get("latency_device", "cpu"))  # (caches from before runtimes: eager on the CPU, batch 1)
        if timed_as != (latency_runtime, latency_batch, latency_threads, latency_device(latency_runtime, device)):
            latency = teacher_latency(model, input_shape, latency_runtime, latency_batch, latency_threads,
                                      cached_notes, device)
        return TeacherResult(model, cfg.name, meta["val_accuracy"], meta["test_accuracy"], meta["params"],
                             meta["macs"], latency, meta["epochs_trained"], True, cached_notes, key,
                             normalization)

    model = model.to(device).to(memory_format=torch.channels_last)
    bs = eval_batch(info.input_size, device)
    console = console or Console(stderr=True)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the probe leaves no trace
        speed = probe_speed(model, data, device, cfg.batch_size, bs, train=epochs > 0)
    steps = distill.steps_per_epoch(len(data.train.y), cfg.batch_size) * epochs
    train_s = speed.get("train_s_per_step", 0.0) * steps
    score_s = speed["infer_s_per_image"] * (len(data.val.y) + len(data.test.y))
    console.print(f"estimate on {device} ({torch.get_num_threads()} threads): teacher {cfg.name} "
                  + (f"training {epochs} epoch(s) ≈ {minutes(train_s)}, " if epochs else "")
                  + f"scoring {len(data.val.y) + len(data.test.y):,} images ≈ {minutes(score_s)}", highlight=False)
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
    at_chance = chance_note(val_acc, data.val.y, epochs)
    if at_chance and epochs:  # (untrained, it has its note already)
        notes.append(at_chance)
    params, macs = count_params(model), count_macs(model, input_shape)
    latency = teacher_latency(model, input_shape, latency_runtime, latency_batch, latency_threads, notes, device)
    meta = {"key": key, "name": cfg.name, "source": info.source, "weights_file": cfg.weights,
            "val_accuracy": val_acc, "test_accuracy": test_acc, "params": params, "macs": macs,
            "latency_ms": latency, "latency_threads": latency_threads, "latency_runtime": latency_runtime,
            "latency_batch": latency_batch, "latency_device": latency_device(latency_runtime, device),
            "epochs_trained": epochs, "lr": lr,
            "batch_size": cfg.batch_size, "input_size": info.input_size, "seed": seed,
            "data_fingerprint": fingerprint, "train_seconds": round(train_seconds, 1), "notes": notes,
            "normalization": normalization}
    _save_cache(model, meta, folder, key)
    return TeacherResult(model, cfg.name, val_acc, test_acc, params, macs, latency, epochs, False,
                         notes + ([damaged] if damaged else []), key, normalization)
