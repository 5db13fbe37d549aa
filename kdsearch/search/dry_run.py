"""`kdsearch run --dry-run`: the resolved settings, the run folder, the data and teacher a run would use,
and how long it may take, without running anything.

Nothing of the run is written: no run folder, study, teacher training or teacher-logit cache. The data
is read as a run reads it (from the decode cache in $KDSEARCH_CACHE, or decoded into it), except that a
torchvision dataset that is not there yet is not downloaded. The teacher is built without downloading
ImageNet weights, to say what it is and time a few of its steps; a student is timed as `kdsearch run`
times one before its trials. The settings are printed as a study file that gives exactly this run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import torch
from rich.console import Console

from ..config import SECTIONS, StudyConfig
from ..data.augment import num_views
from ..data.datasets import SHAPES, TORCHVISION, download_problem, download_url, load_data
from ..data.splits import DataSplits, stratified_subset
from ..errors import KDSearchError
from ..models.teachers.build import build_teacher, check_teacher_name
from ..progress import minutes
from ..runs.layout import run_file
from ..runs.run_file import check_not_a_file, check_run_folder
from ..runs.storage import make_storage
from ..training.distill import resolve_device, steps_per_epoch
from ..training.teacher import eval_batch, probe_speed, teacher_training
from .budgets import check_budgets_reachable
from .evaluation import DRY_RUN
from .fingerprint import check_resume
from .inputs import TrialContext, check_subset
from .study import n_finished


def toml_value(value: Any) -> str:
    """A TOML value (strings as JSON strings, which TOML reads alike)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def config_toml(cfg: StudyConfig) -> str:
    """The config as a study file: every setting, [study] first; an unset one (None) as a comment."""
    values = cfg.to_dict()
    tables = {"study": {k: v for k, v in values.items() if k not in SECTIONS and k != "space"},
              **{k: values[k] for k in SECTIONS}, "space": values["space"]}
    lines: list[str] = []
    for table, entries in tables.items():
        lines.append(f"{chr(10) if lines else ''}[{table}]")
        lines += [f"# {key} is unset (its default)" if value is None else f"{key} = {toml_value(value)}"
                  for key, value in entries.items()]
    return "\n".join(lines)


def dry_run(cfg: StudyConfig, console: Console) -> None:
    """Print what `kdsearch run` would do with `cfg`. Every input the run needs is checked first, as the run
    checks it (the run folder and study, the teacher's name and weights file, the data or its download),
    so that a refusal is the run's own one line, before anything is printed."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # as a run: Optuna's info lines are no news
    done, folder, study = check_folder(cfg)
    check_teacher_name(cfg.teacher.name, cfg.teacher.weights)  # the run's first check of its inputs
    data, data_line = find_data(cfg)
    shape = ((data.num_classes, data.in_channels, data.image_size) if data is not None else
             (*SHAPES[cfg.data.dataset][:2], cfg.data.image_size or SHAPES[cfg.data.dataset][2]))
    stats = (tuple(data.mean), tuple(data.std)) if data is not None else (None, None)
    model, info, epochs, teacher_lines = build_as_the_run(cfg, *shape, *stats)  # the file loads and fits
    console.print("dry run: nothing is written (no run folder, study, teacher training or teacher-logit cache)",
                  highlight=False)
    console.print("# the resolved settings, as a study file that gives exactly this run", highlight=False)
    console.print(config_toml(cfg), markup=False, highlight=False)
    console.print(folder, highlight=False)
    for line in [data_line, *teacher_lines]:
        console.print(line, highlight=False)
    if data is None:  # a run downloads it first: the teacher was checked for the dataset's shape
        console.print("the estimates need the data: --dry-run says more once a run (or torchvision) has "
                      "downloaded it", highlight=False)
        return
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    teacher_s = time_teacher(cfg, model, info, epochs, data, device, console)
    train = stratified_subset(data.train, cfg.data.subset, cfg.seed) if cfg.data.subset else data.train
    if cfg.train.teacher_cache:
        views = min(cfg.train.views, num_views(data.pad, data.flip))
        console.print(f"teacher logits: {views} views x {len(train):,} images, cached before the first trial "
                      f"≈ {minutes(teacher_s * views * len(train))}", highlight=False)
    else:
        console.print("teacher logits: not cached (teacher_cache off): the teacher runs on every training batch",
                      highlight=False)
    if done >= cfg.trials:
        console.print(f"the study has {done} finished trials already (target {cfg.trials}): a run trains none")
        return
    ctx = TrialContext(cfg=cfg, data=data, train=train, x_train=train.x.to(device), y_train=train.y.to(device),
                       x_val=data.val.x.to(device), y_val=data.val.y.to(device), teacher=None, device=device,
                       pruner=None)
    DRY_RUN[cfg.strategy](ctx, cfg.trials - done, console, study)  # the strategy's estimate (search.evaluation)
    if cfg.promote:
        rung_images = cfg.promote_images or len(data.train)
        ratio = cfg.promote_epochs * rung_images / (cfg.epochs * len(train))
        of = " and family" if cfg.promote_by == "family" else ""
        how = ("are fine-tuned from their inherited weights" if cfg.strategy == "oneshot" else "train again")
        each = ("" if cfg.strategy == "oneshot"  # (a one-shot trial trains nothing to compare with)
                else f", each about {ratio:.0f}x a trial's training")
        console.print(f"then promotion: the {cfg.promote} most accurate student(s) of each size band{of} (a factor of 2 "
                      f"in params) {how} for {cfg.promote_epochs} epochs on {rung_images:,} images{each}, one at a "
                      "time (docs/search.md, \"Promotion\")", highlight=False)


def check_folder(cfg: StudyConfig) -> tuple[int, str, optuna.Study | None]:
    """The study's finished trials, a line on the run folder and storage, new or resumed, and the study when it
    exists (a resume the run would refuse is refused, as the run words it)."""
    check_not_a_file(cfg.run_path)
    check_run_folder(cfg)  # another study's folder: the run's own refusal
    exists = run_file(cfg.run_path).is_file()
    url = cfg.storage_url
    path = url.removeprefix("sqlite:///").removeprefix("journal:") if url.startswith(("sqlite:///", "journal:")) \
        or url.endswith((".log", ".journal")) else None
    new = f"run folder {cfg.run_path}: {'exists' if exists else 'new'}; a new study {cfg.name!r} in {url}"
    if path is not None and not Path(path).is_file():  # opening it would create it
        return 0, new, None
    try:
        study = optuna.load_study(study_name=cfg.name, storage=make_storage(url))
    except KeyError:
        return 0, new, None
    check_resume(study, cfg)  # other settings than the study's: the run's own refusal
    done = n_finished(study)
    return (done, f"run folder {cfg.run_path}: resumes study {cfg.name!r} in {url}, {done} of {cfg.trials} trials "
            "finished", study)


def find_data(cfg: StudyConfig) -> tuple[DataSplits | None, str]:
    """The data as the run loads it (not downloaded), checked as the run checks it, and a line on its splits,
    classes and image shape. A torchvision dataset that is not here: None and a line saying the run
    downloads it, when its server answers now; refused in one line when it does not (the run would fail)."""
    try:
        data = load_data(cfg.data.model_copy(update={"download": False}), seed=cfg.seed)
    except KDSearchError as exc:
        if cfg.data.dataset in TORCHVISION and cfg.data.download:
            where = str(exc).split(" and ", 1)[0]  # "<dataset> is not in <folder>"
            problem = download_problem(cfg.data.dataset)
            if problem is not None:  # the run would fail at its download: refuse now, as it would
                raise KDSearchError(f"{where} and a run could not download it: {problem}: pass --data-dir with the "
                                    "torchvision files, or use --dataset imagefolder --data-dir DIR, or --dataset "
                                    "digits (bundled)") from None
            return None, (f"data {cfg.data.dataset}: {where}; a run downloads it first from "
                          f"{download_url(cfg.data.dataset)} (reachable now)")
        raise
    check_subset(cfg, data)
    check_budgets_reachable(cfg, data)
    n = cfg.data.subset or len(data.train)
    return data, (f"data {data.name}: {n:,} train" + (f" (subset of {len(data.train):,})" if cfg.data.subset else "")
                  + f", {len(data.val):,} val, {len(data.test):,} test, {data.num_classes} classes, "
                  f"{data.in_channels}x{data.image_size}x{data.image_size}; crop padding {data.pad}, "
                  f"flip {'on' if data.flip else 'off'}")


def build_as_the_run(cfg: StudyConfig, classes: int, channels: int, size: int, mean: tuple[float, ...] | None,
                     std: tuple[float, ...] | None) -> tuple[torch.nn.Module, Any, int, list[str]]:
    """The teacher built as the run builds it (its weights file read and fitted to the architecture; ImageNet
    weights not downloaded): the model, how it was built, the epochs the run trains it and lines saying so."""
    t = cfg.teacher
    model, info = build_teacher(t.name, num_classes=classes, in_channels=channels, image_size=size, pretrained=False,
                                weights=t.weights, trust_pickle=t.trust_pickle, input_size=t.input_size, mean=mean,
                                std=std, normalize=t.normalize, norm_mean=tuple(t.mean) or None,
                                norm_std=tuple(t.std) or None)
    imagenet = t.pretrained and not t.weights and ":" not in t.name
    weights = (f"weights {t.weights}" if t.weights else "ImageNet weights where it has them (tried by the run)"
               if imagenet else "random initialization")
    # built without downloading: its source reads "random" where the run would fine-tune ImageNet weights
    epochs, lr = teacher_training(t, info.fits_data, from_scratch=info.source == "random" and not imagenet)
    lines = [f"teacher {t.name}: {weights}; {sum(p.numel() for p in model.parameters()):,} params, input "
             f"{info.input_size}x{info.input_size}, {info.normalization}; "
             + (f"trained {epochs} epoch(s) at lr {lr:g}, batch {t.batch_size}" if epochs else "not trained")
             + (" (auto)" if t.epochs is None else "") + " on the full training split"]
    return model, info, epochs, lines + [f"teacher: {note}" for note in info.notes]


def time_teacher(cfg: StudyConfig, model: torch.nn.Module, info: Any, epochs: int, data: DataSplits,
                 device: torch.device, console: Console) -> float:
    """Time a few of the teacher's steps and print what its training and scoring may take; returns its seconds
    per image of inference (for the logit cache's estimate)."""
    t = cfg.teacher
    model = model.to(device)
    bs = eval_batch(info.input_size, device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        speed = probe_speed(model, data, device, t.batch_size, bs, train=epochs > 0)
    train_s = speed.get("train_s_per_step", 0.0) * steps_per_epoch(len(data.train), t.batch_size) * epochs
    score_s = speed["infer_s_per_image"] * (len(data.val) + len(data.test))
    console.print(f"estimate on {device} ({torch.get_num_threads()} threads): teacher "
                  + (f"training ≈ {minutes(train_s)}, " if epochs else "") + f"scoring ≈ {minutes(score_s)} "
                  "(a run reuses a teacher it prepared before)", highlight=False)
    return speed["infer_s_per_image"]
