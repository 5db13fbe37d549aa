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
`--finetune N ...` also trains each subnet from its inherited weights (its family's supernet as the run saved
it, batch norm recalibrated on the run's calibration images) for N epochs on all the training images by the same
recipe (budget "inherited+N"), and `--proxies 45000xN` from scratch for N: whether the inherited weights are
worth starting from (the fine-tuning table: fine-tuned minus from scratch, per subnet, for the same N epochs and
for the final budget).

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
    python -m benchmarks fidelity studies/cifar10-resnet32-oneshot-cpu.toml --oneshot results/cifar10-resnet32-oneshot \
        --bands 15472 46415 93000 --per-band 4 --final-epochs 10 --finetune 3 --proxies 45000x3 \
        --out benchmarks/results/fidelity-oneshot
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

from kdsearch.analysis.stats import t_interval
from kdsearch.config import SPACE_KINDS, config_from_dict, load_config
from kdsearch.data.splits import stratified_subset
from kdsearch.errors import KDSearchError
from kdsearch.measure.costs import count_macs, count_params
from kdsearch.models.students import REFERENCES, build, scaled_reference
from kdsearch.models.students.space import sample_spec, suggest
from kdsearch.search.budgets import budget_excess
from kdsearch.search.evaluation.oneshot import calibration_images, fixed_hp, inherited_subnet
from kdsearch.search.inputs import prepare_inputs, teacher_logit_cache
from kdsearch.training.distill import accuracy, fit, recipe_from

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


def finetuned_name(epochs: int) -> str:
    """The budget of a one-shot subnet trained `epochs` epochs from its inherited weights."""
    return f"{INHERITED}+{epochs}"


def scratch_budget(budget: str) -> tuple[int, int] | None:
    """(images, epochs) of a from-scratch budget, None for the inherited ones."""
    images, x, epochs = budget.partition("x")
    return (int(images), int(epochs)) if x and images.isdigit() and epochs.isdigit() else None


def inherited_student(ctx, run_dir: str, spec, supernets: dict, calib: torch.Tensor):
    """The one-shot subnet `spec` with the weights it inherits from its family's supernet in `run_dir`, batch norm
    recalibrated on `calib` as the run did (oneshot.inherited_subnet). `ctx`: the inputs the supernets trained on
    (subset_context of the study's subset)."""
    try:
        return inherited_subnet(ctx, Path(run_dir), spec, supernets, calib)
    except KDSearchError as exc:
        raise SystemExit(f"--finetune: {exc} (run the benchmark with the run's own study file; REUSE its teacher "
                         "and logits)") from None


def subset_context(ctx, images: int):
    """The inputs of a search on `images` training images, as it has them: the study's stratified subset (one
    per size, the study's seed) and its own cache of the same views; all of them from `images` up (or 0)."""
    if not images or images >= len(ctx.data.train):
        return ctx
    sub = stratified_subset(ctx.data.train, images, ctx.cfg.seed)
    sub_ctx = dataclasses.replace(ctx, train=sub, x_train=sub.x.to(ctx.device), y_train=sub.y.to(ctx.device),
                                  cache=None)
    return dataclasses.replace(sub_ctx, cache=teacher_logit_cache(sub_ctx, Console()) if ctx.cfg.train.teacher_cache
                               else None)


def proxy_inputs(ctx, images: int) -> tuple:
    """The training images of a budget and their teacher-logit cache (subset_context)."""
    sub = subset_context(ctx, images)
    return sub.train, sub.cache


def train_at(ctx, spec, hp, train, cache, epochs: int, seed: int, model=None) -> dict:
    """Val accuracy of the student trained on `train` (with its logit cache) for `epochs`: a fresh one
    (seeded), or `model` as it is (fine-tuned)."""
    recipe = recipe_from(ctx.cfg.train, epochs, hp["lr"], hp["temperature"], hp["alpha"])
    torch.manual_seed(seed)
    model = build(spec).to(ctx.device) if model is None else model
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
    tuned = finetune_table(rows, final, markdown)
    return "\n".join(out) + "\n\n" + students_table(rows, final, markdown) + (f"\n\n{tuned}" if tuned else "")


def finetune_table(rows: list[dict], final: str, markdown: bool) -> str:
    """Per fine-tuning budget (inherited+N): the subnets' accuracy fine-tuned minus trained from scratch, in points
    with a 95% t-interval over subnets, against N epochs from scratch on the same images and against the final
    budget; empty without fine-tuned rows."""
    acc = {(r["student"], r["budget"]): r["val_accuracy"] for r in rows}
    seconds = {(r["student"], r["budget"]): r["seconds"] for r in rows}
    images = scratch_budget(final)[0]
    tuned_budgets = sorted({b for _, b in acc if b.startswith(INHERITED + "+")}, key=lambda b: int(b.split("+")[1]))
    head = ["fine-tuned", "against (from scratch)", "subnets", "fine-tuned minus from scratch, points [95% CI]",
            "subnets ahead", "s per subnet (fine-tuned / from scratch)"]
    lines = []
    for tuned in tuned_budgets:
        for other in dict.fromkeys([budget_name(images, int(tuned.split("+")[1])), final]):
            both = sorted(s for s, b in acc if b == tuned and (s, other) in acc)
            if not both:
                continue
            ci = t_interval([100 * (acc[s, tuned] - acc[s, other]) for s in both])
            ahead = sum(acc[s, tuned] > acc[s, other] for s in both)
            pace = (sum(seconds[s, tuned] for s in both) / len(both), sum(seconds[s, other] for s in both) / len(both))
            cells = [tuned, other, str(len(both)), f"{ci.mean:+.2f} [{ci.low:+.2f}, {ci.high:+.2f}]",
                     f"{ahead} of {len(both)}", f"{pace[0]:.0f} / {pace[1]:.0f}"]
            lines.append("| " + " | ".join(cells) + " |" if markdown else "  ".join(cells))
    if not lines:
        return ""
    top = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] if markdown else ["  ".join(head)]
    return "\n".join(top + lines)


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
    images, epochs = max(b for b in (scratch_budget(r["budget"]) for r in rows) if b is not None)
    return budget_name(images, epochs)


def render(folder: Path) -> str:
    """Both tables of a results folder, as --markdown prints them (BENCHMARKS.md's generator)."""
    rows = load_rows(Path(folder) / "results.jsonl")
    return table(rows, final_budget(rows), markdown=True)


def study_config(study: str | None, oneshot: str | None, overrides: dict):
    """The study file's config, or without one the one-shot run's own (as its run.json stored it), with
    `overrides` (dotted keys)."""
    if study:
        return load_config(study, overrides)
    from kdsearch.runs.run import open_run

    values = open_run(oneshot).config
    for dotted, value in overrides.items():
        section, _, key = dotted.rpartition(".")
        (values.setdefault(section, {}) if section else values)[key] = value
    return config_from_dict(values)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks fidelity", description=__doc__.splitlines()[0])
    ap.add_argument("study", nargs="?", help="the study file (with --oneshot, the run's own study by default)")
    ap.add_argument("--students", type=int, default=12)
    ap.add_argument("--proxies", nargs="+", help="IMAGESxEPOCHS, e.g. 10000x3 45000x1 (default 10000x3; none "
                    "with --oneshot)")
    ap.add_argument("--final-epochs", type=int, default=30)
    ap.add_argument("--bands", nargs="*", type=int, default=[],
                    help="parameter budgets: per band, the references scaled to it and --per-band sampled students")
    ap.add_argument("--per-band", type=int, default=3)
    ap.add_argument("--oneshot", metavar="RUN", help="a one-shot run: its subnets per band, inherited vs from scratch")
    ap.add_argument("--finetune", nargs="*", type=int, default=[], metavar="N",
                    help="with --oneshot: also train each subnet N epochs from its inherited weights")
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
    if not (args.study or args.oneshot):
        ap.error("give a study file, or --oneshot RUN")
    cfg = study_config(args.study, args.oneshot, {k: json.loads(v) if v[:1] in "0123456789[-tfn" else v
                                                  for k, v in (s.split("=", 1) for s in args.set)}
                       | {"run_dir": str(out / "run")})
    search_images, cfg.data.subset = cfg.data.subset, 0  # every budget chooses its own images
    ctx = prepare_inputs(cfg, Console())
    final = budget_name(len(ctx.data.train), args.final_epochs)
    if args.markdown:
        print(table(rows, final, markdown=True))
        return
    budgets = []
    if args.finetune and not args.oneshot:
        ap.error("--finetune needs --oneshot RUN (the run whose supernets the subnets inherit from)")
    for p in args.proxies or ([] if args.oneshot else ["10000x3"]):
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
    supernets: dict = {}
    supernet_ctx = subset_context(ctx, search_images) if args.finetune else None
    calib = calibration_images(supernet_ctx) if args.finetune else None
    jobs = [(n, images, epochs, False) for n in range(len(students)) for images, epochs in budgets]
    jobs += [(n, len(ctx.data.train), epochs, True) for n in range(len(students)) for epochs in args.finetune]
    jobs.sort(key=lambda job: job[1:3] == budgets[-1])  # the final budget last: the others' rows come sooner
    for n, images, epochs, tune in jobs:
        i, spec, hp = students[n]
        name = finetuned_name(epochs) if tune else budget_name(images, epochs)
        if (i, name) in {(r["student"], r["budget"]) for r in load_rows(path)}:  # also trained by another process
            continue
        start = {}
        if tune:
            model = inherited_student(supernet_ctx, args.oneshot, spec, supernets, calib)
            start = {"inherited_val_accuracy": accuracy(model, ctx.x_val, ctx.y_val)}  # the subnet as it was scored
        r = {"student": i, "arch": spec.summary(), "params": count_params(build(spec)), **hp, "budget": name, **start,
             **train_at(ctx, spec, hp, *inputs[images], epochs, args.seed * 1_000_003 + n, model if tune else None)}
        rows.append(results.append(r, settings))
        print(f"student {i!s:>2s} {r['arch']:40s} {name:>10s}: val {r['val_accuracy']:.2%} ({r['seconds']:.0f} s)",
              flush=True)
    print(table(rows, final, markdown=False))
