"""Training recipes on fixed students: which [train] defaults make students as good as their size allows.

Trains fixed students (no search) for a fixed number of epochs on a dataset's training split
with kdsearch's own loop (distill.fit, the one every trial and final model runs), once per
(student, recipe variant, seed, teacher or not), and reports validation and test accuracy.
The baseline is `old`, kdsearch's recipe before [train] had these settings; every other
variant is printed as its difference from `old` on the same student and seed.

A variant is the shipped default ([train] of kdsearch.config.TrainConfig) plus `key=value`
changes, e.g. `lr=0.4`, `optimizer=adamw,lr=0.005,weight_decay=0.05`; `old` and `default`
are named. Every finished model is appended to OUT/results.jsonl at once: an interrupted
benchmark continues where it stopped and never trains a finished model twice; the model in progress
continues from its last saved epoch (OUT/partial/, kdsearch.training.checkpoint).

With `--teacher-run RUN` (a kdsearch run folder: its teacher and teacher-logit cache, built
on this data if missing), students also train distilled (`--arms kd`) at the given T and alpha
(`--temperature 4 --alpha 0.9`, recorded as arm `kd`; other values are recorded as their own arm),
from the run's cached views (`--views N`: a cache of N views per image, about the epochs at long budgets;
recorded in the arm's name). Each row's provenance (benchmarks.harness) records the machine, command,
commit and the distillation settings: T, alpha, views and the teacher (rows of older runs have none).

    python -m benchmarks recipe --data ../shared/data/cifar10-jpg.tar.gz --students plain15k res8 \
        --variants old default lr=0.4 --seeds 0 --epochs 10 --out benchmarks/results/recipe
    python -m benchmarks recipe --out benchmarks/results/recipe --markdown     # tables only
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import statistics
import time
from pathlib import Path

import torch

from kdsearch.analysis.stats import t_interval
from kdsearch.config import LEGACY_TRAIN, DataConfig, TrainConfig, config_from_dict
from kdsearch.data.datasets import load_data
from kdsearch.data.splits import Split, stratified_pick
from kdsearch.measure.costs import count_params
from kdsearch.models.students import StudentSpec, build
from kdsearch.training.checkpoint import Resume
from kdsearch.training.distill import accuracy, fit, recipe_from

from .harness import ResultFile, load_rows
from .students import STUDENTS, student_spec

OLD = {**LEGACY_TRAIN, "lr": 0.005}  # kdsearch's recipe before this benchmark, at the lr RESULTS.md used
DEFAULT_LR = 0.2  # the peak lr of `default` (a search samples it per student)


def variant_settings(name: str) -> dict:
    """[train] settings plus lr of a named variant."""
    if name == "old":
        return dict(OLD)
    base = {k: v for k, v in TrainConfig().model_dump().items() if k in LEGACY_TRAIN} | {"lr": DEFAULT_LR}
    if name == "default":
        return base
    for item in name.split(","):
        key, _, value = item.partition("=")
        if key not in base:
            raise SystemExit(f"variant {name!r}: unknown setting {key!r} (known: {', '.join(base)})")
        try:
            base[key] = json.loads(value)  # numbers, true/false, null
        except ValueError:
            base[key] = value  # names: optimizer=adamw
    return base


def spec_for(name: str, data) -> StudentSpec:
    return student_spec(name, data.in_channels, data.num_classes, data.image_size, mean=list(data.mean),
                        std=list(data.std))


def key(student: str, settings: dict, seed: int, arm: str, epochs: int, subset: int = 0) -> tuple:
    """What makes two models the same: their settings, not the name they were asked for (`default` is
    another recipe once the defaults change); `subset`: the training images when not all (0)."""
    return student, json.dumps(settings, sort_keys=True), seed, arm, epochs, subset


def label(settings: dict) -> str:
    """A model's variant named against today's default: `old`, `default`, or the settings that differ."""
    if settings == OLD:
        return "old"
    base = variant_settings("default")
    diff = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in settings.items() if base.get(k) != v]
    return ",".join(diff) or "default"


def arm_name(arm: str, temperature: float, alpha: float, views: int | None = None) -> str:
    """The arm as recorded: `kd` is T 4, alpha 0.9 from the teacher run's cached views (every kd model so far);
    other settings are named, so that they are other models, not ones already done."""
    if arm == "ce":
        return arm
    named = ([f"T={temperature:g},alpha={alpha:g}"] if (temperature, alpha) != (4.0, 0.9) else []) \
        + ([f"views={views}"] if views is not None else [])
    return f"kd({','.join(named)})" if named else "kd"


def partial_path(out: Path, student: str, settings: dict, seed: int, arm: str, epochs: int, subset: int = 0) -> Path:
    """The epoch checkpoint of a model in progress (kdsearch.training.checkpoint): a stopped benchmark
    continues the model it was training, not only the next one."""
    what = [student, settings, seed, arm, epochs] + ([subset] if subset else [])
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()
    return out / "partial" / f"{student}-{arm}-seed{seed}-{digest[:12]}.pt"


def train_one(data, student: str, variant: str, seed: int, arm: str, epochs: int, teacher, cache,
              temperature: float, alpha: float, partial: Path | None = None) -> dict:
    settings = variant_settings(variant)
    train = TrainConfig(**{k: v for k, v in settings.items() if k != "lr"})
    teaches = arm.startswith("kd")
    recipe = recipe_from(train, epochs, settings["lr"], temperature, alpha if teaches else 0.0)
    spec = spec_for(student, data)
    resume = Resume(partial, {"spec": spec.to_json(), "cache": cache.path.stem if teaches else None}) \
        if partial is not None else None
    torch.manual_seed(seed)
    model = build(spec)  # fit picks its memory format
    start = time.perf_counter()
    curve = fit(model, data.train.x, data.train.y, recipe, pad=data.pad, flip=data.flip, seed=seed,
                teacher=teacher if teaches else None, cache=cache if teaches else None,
                x_val=data.val.x, y_val=data.val.y, resume=resume)
    seconds = time.perf_counter() - start
    return {"student": student, "arch": spec.summary(), "params": count_params(model), "variant": variant,
            "settings": settings, "seed": seed, "arm": arm, "epochs": epochs, "val_curve": curve,
            "val_accuracy": curve[-1], "test_accuracy": accuracy(model, data.test.x, data.test.y),
            "seconds": seconds, "resumed_at": resume.resumed_at if resume is not None else 0,
            "threads": torch.get_num_threads()}


def teacher_run_config(run: str):
    """The study settings of a kdsearch run folder (its run.json)."""
    return config_from_dict(json.loads((Path(run) / "run.json").read_text())["config"])


def table(rows: list[dict], markdown: bool, arm: str | None = None) -> str:
    """Per student and arm: each variant's mean test (val) accuracy over its seeds, and its paired
    difference from `old` over the seeds both have. Variants are named by their settings against
    today's default (`label`), so a model trained as `default` before the defaults changed is listed
    under the settings that now differ. `arm`: that arm's tables only (its gain over no teacher still
    read from the others' rows)."""
    out = []
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for r in rows:
        if arm is not None and r["arm"] != arm:
            continue
        groups.setdefault((r["student"], r["arm"], r["epochs"], r.get("subset", 0)), {}) \
            .setdefault(label(r["settings"]), []).append(r)
    # the same student, recipe, seed, epochs and images without the teacher: what the teacher adds to a kd row
    plain = {(r["student"], label(r["settings"]), r["seed"], r["epochs"], r.get("subset", 0)): r
             for r in rows if r["arm"] == "ce"}
    for (student, arm, epochs, subset), variants in groups.items():
        any_row = next(iter(variants.values()))[0]
        images = f" on {subset:,} training images" if subset else ""
        out.append(f"\n{student} ({any_row['arch']}, {any_row['params']:,} params), {arm}, {epochs} epochs{images}\n")
        head = ["variant", "seeds", "test %", "val %", "test vs old (paired)", "s / epoch"]
        if arm.startswith("kd"):
            head.insert(5, "vs no teacher, points [95% CI] (paired)")
        out.append("| " + " | ".join(head) + " |" if markdown else "  ".join(f"{h:>22s}" for h in head))
        if markdown:
            out.append("|" + "---|" * len(head))
        old = {r["seed"]: r for r in variants.get("old", [])}
        for variant, rs in sorted(variants.items(), key=lambda kv: -statistics.mean(r["test_accuracy"] for r in kv[1])):
            test = [r["test_accuracy"] * 100 for r in rs]
            val = [r["val_accuracy"] * 100 for r in rs]
            diffs = [(r["test_accuracy"] - old[r["seed"]]["test_accuracy"]) * 100 for r in rs if r["seed"] in old]
            sd = f" ± {statistics.stdev(test):.2f}" if len(test) > 1 else ""
            cells = [variant, str(len(rs)), f"{statistics.mean(test):.2f}{sd}", f"{statistics.mean(val):.2f}",
                     f"{statistics.mean(diffs):+.2f} ({len(diffs)})" if diffs and variant != "old" else "",
                     f"{statistics.mean(r['seconds'] / (r['epochs'] - r.get('resumed_at', 0)) for r in rs):.1f}"]
            if arm.startswith("kd"):
                cells.insert(5, teacher_gain([(r["test_accuracy"] - plain[k]["test_accuracy"]) * 100 for r in rs
                                              if (k := (student, variant, r["seed"], epochs, subset)) in plain]))
            out.append("| " + " | ".join(cells) + " |" if markdown else "  ".join(f"{c:>22s}" for c in cells))
    return "\n".join(out)


def teacher_gain(diffs: list[float]) -> str:
    """Distilled minus no-teacher test accuracy over the seeds both have: mean, 95% t-interval, pairs."""
    if not diffs:
        return ""
    gain = t_interval(diffs)
    interval = f" [{gain.low:+.2f}, {gain.high:+.2f}]" if gain.n > 1 else ""
    return f"{gain.mean:+.2f}{interval} ({gain.n})"


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks recipe", description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="an image folder or .tar.gz (ImageFolder layout), or a dataset name")
    ap.add_argument("--students", nargs="+", default=["plain15k", "res8"], choices=list(STUDENTS),
                    help="fixed students (benchmarks/students.py); BENCHMARKS.md's: plain15k plain50k res8 inv50k")
    ap.add_argument("--variants", nargs="+", default=["old", "default"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--arms", nargs="+", default=["ce"], choices=["ce", "kd"])
    ap.add_argument("--teacher-run", help="a kdsearch run folder whose teacher distills the kd arm")
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--views", type=int, default=None,
                    help="teacher views cached per image for the kd arm (default: the teacher run's; about the "
                         "epochs at long budgets, as `kdsearch train --views`)")
    ap.add_argument("--subset", type=int, default=0,
                    help="train on a stratified subset of N training images, as a search trial does (0: all)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--markdown", action="store_true", help="print the tables of OUT only")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.jsonl"
    if args.markdown:
        print(table(load_rows(path), markdown=True))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    teacher = cache = teacher_name = None
    if "kd" in args.arms:
        if not args.teacher_run:
            raise SystemExit("--arms kd needs --teacher-run")
        from rich.console import Console

        from kdsearch.search.inputs import prepare_inputs  # the run's teacher and logit cache, as `kdsearch train` has them

        cfg = teacher_run_config(args.teacher_run)
        cfg.run_dir, cfg.data.subset, cfg.device = args.teacher_run, 0, "cpu"
        if args.views is not None:
            cfg.train.views = args.views  # that run's cache of as many views, built if missing
        ctx = prepare_inputs(cfg, Console())
        data, teacher, cache, teacher_name = ctx.data, ctx.teacher.model, ctx.cache, cfg.teacher.name
    else:
        source = Path(args.data)
        cfg = DataConfig(dataset="imagefolder", data_dir=str(source)) if source.exists() else DataConfig(dataset=args.data)
        data = load_data(cfg, seed=0)
    if args.subset:  # the images a search trial trains on (and their cached teacher views)
        index = torch.from_numpy(stratified_pick(data.train.y.cpu().numpy(), args.subset, 0))
        data = dataclasses.replace(data, train=Split(data.train.x[index], data.train.y[index]))
        if cache is not None:
            cache = dataclasses.replace(cache, views=cache.views[index], logits=cache.logits[index])
    for v in args.variants:
        variant_settings(v)  # every name checked before any training
    done = {key(r["student"], r["settings"], r["seed"], r["arm"], r["epochs"], r.get("subset", 0))
            for r in load_rows(path)}
    results = ResultFile(out, "recipe", argv)
    common = {"data": args.data, "subset": args.subset, "threads": torch.get_num_threads()}
    distilled = {"teacher": teacher_name, "teacher_run": args.teacher_run, "temperature": args.temperature,
                 "alpha": args.alpha, "views": cache.k if cache is not None else None, **common}
    plain = {"teacher": None, "teacher_run": None, "temperature": None, "alpha": 0.0, "views": None, **common}
    for student in args.students:
        for variant in args.variants:
            for seed in args.seeds:
                for arm in (arm_name(a, args.temperature, args.alpha, args.views) for a in args.arms):
                    if key(student, variant_settings(variant), seed, arm, args.epochs, args.subset) in done:
                        continue
                    partial = partial_path(out, student, variant_settings(variant), seed, arm, args.epochs, args.subset)
                    r = train_one(data, student, variant, seed, arm, args.epochs, teacher, cache,
                                  args.temperature, args.alpha, partial) | ({"subset": args.subset} if args.subset else {})
                    results.append(r, distilled if arm.startswith("kd") else plain)
                    partial.unlink(missing_ok=True)
                    print(f"{student:9s} {variant:40s} seed {seed} {arm}: test {r['test_accuracy']:.2%} "
                          f"val {r['val_accuracy']:.2%} ({r['seconds'] / (args.epochs - r['resumed_at']):.1f} s/epoch)", flush=True)
    print(table(load_rows(path), markdown=False))
