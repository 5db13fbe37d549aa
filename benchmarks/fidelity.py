"""Search fidelity: does the search's short training rank students as full training does?

Samples students of a study's space (the random sampler, seeded: student i is the same on every
machine), trains each at one or more proxy budgets (the study's stratified subset of the training
split, with the teacher logits cached for it, for a few epochs, as a search trial does) and at the final budget (the whole training split,
more epochs), all with the study's [train] recipe, its teacher and the sampled T, alpha and lr,
and reports the Spearman and Kendall rank correlations of their validation accuracies between
each proxy and the final budget. The proxy a study should use is the cheapest one that ranks
well (Spearman >= 0.8 is the target).

Overall correlations over sizes spread across orders of magnitude mostly say that bigger students
score higher. The decision a search makes is between students of about the same size, so the table
also gives the within-band Kendall tau (pairs of students less than 2x apart in parameters) and, beside
it, the same figure for ranking by parameter count alone: a proxy that does not beat that baseline
adds nothing. `--bands B1 B2 ...` trains students made for it: per band B, the hand-written
references scaled to at most B parameters and `--per-band` students of the space sampled between B/2
and B; `--fixed temperature=4 alpha=0.9 lr=0.2` trains every student at those settings instead of
sampled ones, so that only the architecture differs.

`--oneshot RUN --bands B1 B2 ...` measures a one-shot run instead: per band, `--per-band` of the run's scored
subnets with between B/2 and B parameters (spread over its accuracies: the most and least accurate and
evenly between), each with its inherited-weight validation accuracy as the proxy (budget "inherited",
its scoring seconds) and trained from scratch at the final budget (the run's T, alpha and lr): the
one-shot search's within-band Kendall, beside the parameter-count baseline and the per-trial proxies'.

Every trained model is appended to OUT/results.jsonl at once (resumable). The study file's
run folder provides the teacher and its logit cache (built there on first use).

Each row also records its provenance (machine, command, commit, settings: benchmarks.harness); rows
of older runs, without it, load the same.

    python -m benchmarks fidelity studies/digits-demo.toml --students 12 --proxies 300x2 600x1 \
        --final-epochs 12 --out bench-out/fidelity-digits
    python -m benchmarks fidelity STUDY --out DIR --markdown      # the table only
    python -m benchmarks fidelity studies/digits-demo.toml --bands 1500 4000 --per-band 2 \
        --fixed temperature=4 alpha=0.9 --proxies 300x2 --final-epochs 6 --out bench-out/fidelity-bands
    python -m benchmarks fidelity studies/cifar10-resnet32-oneshot-cpu.toml --oneshot results/cifar10-resnet32-oneshot \
        --bands 4642 15472 46415 93000 --per-band 3 --final-epochs 10 --out benchmarks/results/fidelity-oneshot
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from pathlib import Path

import optuna
import torch
from rich.console import Console
from scipy.stats import kendalltau, spearmanr

from kdsearch.config import SPACE_KINDS, load_config
from kdsearch.data.splits import stratified_subset
from kdsearch.measure.costs import count_macs, count_params
from kdsearch.models.students import REFERENCES, build, scaled_reference
from kdsearch.models.students.space import sample_spec, suggest
from kdsearch.search.budgets import budget_excess
from kdsearch.search.evaluation.oneshot import fixed_hp
from kdsearch.search.inputs import prepare_inputs, teacher_logit_cache
from kdsearch.training.distill import fit, recipe_from

from .harness import ResultFile, load_rows


def sampled(cfg, data, n: int, seed: int, params: tuple[int, int] | None = None) -> list[tuple]:
    """n (spec, T, alpha, lr) of the space within the study's params and MACs budgets (as the search
    rejects the others before training), and within `params` = (low, high) when given, from a seeded
    random sampler."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    while len(out) < n:
        trial = study.ask()
        spec = sample_spec(trial, cfg.space, data.in_channels, data.num_classes, data.image_size,
                           list(data.mean), list(data.std))
        model = build(spec)
        costs = {"params": count_params(model), "macs": count_macs(model, (data.in_channels, data.image_size,
                                                                           data.image_size))}
        if any(excess > 0 for excess in budget_excess(cfg, costs).values()):
            continue
        if params and not params[0] <= costs["params"] <= params[1]:
            continue
        hp = {k: suggest(trial, k, cfg.space[k], SPACE_KINDS[k]) for k in ("temperature", "alpha", "lr")}
        out.append((spec, hp))
    return out


def band_students(cfg, data, bands: list[int], per_band: int, seed: int, fixed: dict) -> list[tuple]:
    """(name, spec, hp) per band B: each reference scaled to at most B params (B{B}-{reference}), then
    `per_band` students of the space between B/2 and B (B{B}-s{i}); hp from the space unless fixed."""
    shape = dict(in_channels=data.in_channels, num_classes=data.num_classes, image_size=data.image_size,
                 mean=list(data.mean), std=list(data.std))
    hp_default = fixed_hp(cfg)  # a fixed value, or the middle of its range, as a one-shot study's subnets get
    out = []
    for b in bands:
        for name in REFERENCES:
            spec = scaled_reference(name, b, **shape)
            if spec is not None:
                out.append((f"B{b}-{name}", spec, {**hp_default, **fixed}))
        for i, (spec, hp) in enumerate(sampled(cfg, data, per_band, seed * 7919 + b, (b // 2, b))):
            out.append((f"B{b}-s{i}", spec, {**hp, **fixed}))
    return out


INHERITED = "inherited"  # the proxy budget of a one-shot run's subnets: their inherited-weight accuracy


def oneshot_students(run_dir: str, bands: list[int], per_band: int) -> list[tuple]:
    """(name, spec, hp, proxy row) per band B: `per_band` of the run's scored subnets with B/2 < params <= B,
    spread over their inherited-weight accuracies (the lowest, the highest and evenly between)."""
    from kdsearch.models.students.spec import StudentSpec
    from kdsearch.runs.run import open_run
    from kdsearch.runs.trial_attrs import ONESHOT

    run = open_run(run_dir)
    scored = [t for t in run.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
              if ONESHOT in t.user_attrs]
    out = []
    for b in bands:
        inside = sorted((t for t in scored if b // 2 < t.user_attrs["params"] <= b), key=lambda t: t.values[0])
        picks = sorted({round(k * (len(inside) - 1) / max(per_band - 1, 1)) for k in range(per_band)}) if inside else []
        for t in (inside[k] for k in picks):
            spec = StudentSpec.from_json(json.dumps(t.user_attrs["spec"]))
            hp = {k: float(t.user_attrs[k]) for k in ("temperature", "alpha", "lr")}
            proxy = {"val_accuracy": t.values[0], "seconds": t.user_attrs.get("eval_seconds", 0.0), "trial": t.number}
            out.append((f"B{b}-t{t.number}", spec, hp, proxy))
    return out


def budget_name(images: int, epochs: int) -> str:
    return f"{images}x{epochs}"


def proxy_inputs(ctx, images: int) -> tuple:
    """The training images of a budget and their teacher-logit cache, as a search at that budget has them:
    the study's stratified subset (one per size, the study's seed) and its own cache of the same views."""
    if images >= len(ctx.data.train):
        return ctx.data.train, ctx.cache
    sub = stratified_subset(ctx.data.train, images, ctx.cfg.seed)
    sub_ctx = dataclasses.replace(ctx, train=sub, x_train=sub.x.to(ctx.device), y_train=sub.y.to(ctx.device),
                                  cache=None)
    return sub, teacher_logit_cache(sub_ctx, Console()) if ctx.cfg.train.teacher_cache else None


def train_at(ctx, spec, hp, train, cache, epochs: int, seed: int) -> dict:
    """Val accuracy of the student trained on `train` (with its logit cache) for `epochs`."""
    recipe = recipe_from(ctx.cfg.train, epochs, hp["lr"], hp["temperature"], hp["alpha"])
    torch.manual_seed(seed)
    model = build(spec).to(ctx.device)
    start = time.perf_counter()
    curve = fit(model, train.x.to(ctx.device), train.y.to(ctx.device), recipe, pad=ctx.data.pad, flip=ctx.data.flip,
                seed=seed, teacher=ctx.teacher.model, cache=cache, x_val=ctx.x_val, y_val=ctx.y_val)
    return {"val_accuracy": curve[-1], "curve": curve, "seconds": time.perf_counter() - start}


def within_band_kendall(score: dict, ref: dict, params: dict, ratio: float = 2.0) -> tuple[float, int]:
    """Kendall tau-a over the pairs of students less than `ratio` apart in parameters: the share of
    such pairs that `score` orders as `ref` does minus the share it orders the other way (ties in
    either count as neither), and the number of pairs. NaN without pairs."""
    agree = disagree = pairs = 0
    for a, b in itertools.combinations(sorted(score.keys() & ref.keys()), 2):
        if max(params[a], params[b]) >= ratio * min(params[a], params[b]):
            continue
        pairs += 1
        sign = (score[a] - score[b]) * (ref[a] - ref[b])
        agree, disagree = agree + (sign > 0), disagree + (sign < 0)
    return ((agree - disagree) / pairs if pairs else float("nan")), pairs


def table(rows: list[dict], final: str, markdown: bool) -> str:
    by_budget: dict[str, dict[int, float]] = {}
    for r in rows:
        by_budget.setdefault(r["budget"], {})[r["student"]] = r["val_accuracy"]
    params = {r["student"]: r["params"] for r in rows}
    out = []
    head = ["proxy budget (images x epochs)", "students", "Spearman", "Kendall", "within-band Kendall (pairs)",
            "parameter-count baseline", "s per student"]
    out.append("| " + " | ".join(head) + " |" if markdown else "  ".join(f"{h:>30s}" for h in head))
    if markdown:
        out.append("|" + "---|" * len(head))
    ref = by_budget.get(final, {})
    for budget, accs in sorted(by_budget.items()):
        if budget == final:
            continue
        common = sorted(accs.keys() & ref.keys())
        if len(common) < 3:
            continue
        a, b = [accs[i] for i in common], [ref[i] for i in common]
        seconds = sum(r["seconds"] for r in rows if r["budget"] == budget) / len(accs)
        band, pairs = within_band_kendall(accs, ref, params)
        baseline, _ = within_band_kendall({i: params[i] for i in common}, ref, params)
        cells = [budget, str(len(common)), f"{spearmanr(a, b).statistic:.3f}", f"{kendalltau(a, b).statistic:.3f}",
                 f"{band:.3f} ({pairs})", f"{baseline:.3f}", f"{seconds:.1f}"]
        out.append("| " + " | ".join(cells) + " |" if markdown else "  ".join(f"{c:>30s}" for c in cells))
    final_s = [r["seconds"] for r in rows if r["budget"] == final]
    if final_s:
        out.append(f"\nfinal budget {final}: {len(final_s)} students, {sum(final_s) / len(final_s):.1f} s per student")
    return "\n".join(out) + "\n\n" + students_table(rows, final, markdown)


def students_table(rows: list[dict], final: str, markdown: bool) -> str:
    """Each student's validation accuracy (%) at every budget it was trained at, the final budget last."""
    budgets = sorted({r["budget"] for r in rows} - {final}) + [final]
    acc = {(r["student"], r["budget"]): r["val_accuracy"] for r in rows}
    students = {r["student"]: r for r in rows}
    head = ["student", "params", "T", "alpha", "lr", *budgets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] if markdown else ["  ".join(head)]
    for i, r in sorted(students.items(), key=lambda kv: (kv[1]["params"] if isinstance(kv[0], str) else kv[0])):
        arch = r["arch"].replace("|", "\\|") if markdown else r["arch"]  # a table cell
        cells = [f"{i} `{arch}`", f"{r['params']:,}", f"{r['temperature']:.2f}", f"{r['alpha']:.2f}",
                 f"{r['lr']:.3f}", *(f"{100 * acc[i, b]:.2f}" if (i, b) in acc else "" for b in budgets)]
        lines.append("| " + " | ".join(cells) + " |" if markdown else "  ".join(cells))
    return "\n".join(lines)


def final_budget(rows: list[dict]) -> str:
    """The final budget of a results file without loading its study: the one with the most image-epochs
    (all the training images at the most epochs)."""
    images, epochs = max(tuple(map(int, r["budget"].split("x"))) for r in rows if r["budget"] != INHERITED)
    return budget_name(images, epochs)


def render(folder: Path) -> str:
    """Both tables of a results folder, as --markdown prints them (BENCHMARKS.md's generator)."""
    rows = load_rows(Path(folder) / "results.jsonl")
    return table(rows, final_budget(rows), markdown=True)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks fidelity", description=__doc__.splitlines()[0])
    ap.add_argument("study")
    ap.add_argument("--students", type=int, default=12)
    ap.add_argument("--proxies", nargs="+", default=["10000x3"], help="IMAGESxEPOCHS, e.g. 10000x3 45000x1")
    ap.add_argument("--final-epochs", type=int, default=30)
    ap.add_argument("--bands", nargs="*", type=int, default=[],
                    help="parameter budgets: per band, the references scaled to it and --per-band sampled students")
    ap.add_argument("--per-band", type=int, default=3)
    ap.add_argument("--oneshot", metavar="RUN", help="a one-shot run: its subnets per band, inherited vs from scratch")
    ap.add_argument("--fixed", nargs="*", default=[], help="hyperparameters for every student, e.g. temperature=4 alpha=0.9")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], help="study settings, e.g. threads=2 data.data_dir=PATH")
    ap.add_argument("--out", required=True)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.jsonl"
    rows = load_rows(path)
    cfg = load_config(args.study, {k: json.loads(v) if v[:1] in "0123456789[-tfn" else v
                                   for k, v in (s.split("=", 1) for s in args.set)} | {"run_dir": str(out / "run")})
    cfg.data.subset = 0
    ctx = prepare_inputs(cfg, Console())
    final = budget_name(len(ctx.data.train), args.final_epochs)
    if args.markdown:
        print(table(rows, final, markdown=True))
        return
    budgets = []
    for p in ([] if args.oneshot else args.proxies):
        images, _, epochs = p.partition("x")
        budgets.append((min(int(images), len(ctx.data.train)), int(epochs)))
    budgets.append((len(ctx.data.train), args.final_epochs))
    done = {(r["student"], r["budget"]) for r in rows}
    inputs = {images: proxy_inputs(ctx, images) for images, _ in budgets}
    fixed = {k: float(v) for k, v in (f.split("=", 1) for f in args.fixed)}
    results = ResultFile(out, "fidelity", argv, ctx.device)
    settings = {"study": args.study, "teacher": cfg.teacher.name, "views": cfg.train.views, "seed": args.seed,
                "fixed": fixed, "sets": args.set}
    proxies: dict = {}
    if args.oneshot:
        picked = oneshot_students(args.oneshot, args.bands, args.per_band)
        students = [(name, spec, {**hp, **fixed}) for name, spec, hp, _ in picked]
        proxies = {name: proxy for name, _, _, proxy in picked}
        settings["oneshot"] = args.oneshot
    elif args.bands:
        students = band_students(cfg, ctx.data, args.bands, args.per_band, args.seed, fixed)
    else:
        students = [(i, spec, {**hp, **fixed}) for i, (spec, hp) in enumerate(sampled(cfg, ctx.data, args.students, args.seed))]
    for i, spec, hp in students:  # the one-shot subnets' proxy: their accuracy as the run scored them
        if i in proxies and (i, INHERITED) not in done:
            r = {"student": i, "arch": spec.summary(), "params": count_params(build(spec)), **hp, "budget": INHERITED,
                 **proxies[i]}
            rows.append(results.append(r, settings))
    for n, (i, spec, hp) in enumerate(students):
        for images, epochs in budgets:
            name = budget_name(images, epochs)
            if (i, name) in done:
                continue
            r = {"student": i, "arch": spec.summary(), "params": count_params(build(spec)), **hp, "budget": name,
                 **train_at(ctx, spec, hp, *inputs[images], epochs, args.seed * 1_000_003 + n)}
            rows.append(results.append(r, settings))
            print(f"student {i!s:>2s} {r['arch']:40s} {name:>10s}: val {r['val_accuracy']:.2%} ({r['seconds']:.0f} s)",
                  flush=True)
    print(table(rows, final, markdown=False))
