"""BENCHMARKS.md from the result files: the template's prose stitched with tables generated from them.

benchmarks/template.md is BENCHMARKS.md's prose. Each line of it of the form `{{ NAME {JSON} }}` is
replaced by what the renderer NAME (TABLES below) makes of the result files the JSON arguments name;
`{{ headline }}` is the opening screen of headline figures, each computed from the same files. No
number in a table is typed: to change one, rerun its benchmark (or correct its result file) and
regenerate. tests/test_benchmarks.py regenerates the page and fails on any difference from the
committed BENCHMARKS.md.

    python -m benchmarks report --out BENCHMARKS.md
    python -m benchmarks report --check            # exit 1 when BENCHMARKS.md is not what the files give
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


from . import fidelity, pruners, recipe, tables
from .harness import ROOT, load_rows

TEMPLATE = Path(__file__).resolve().parent / "template.md"
DIRECTIVE = re.compile(r"^\{\{ *([\w-]+) *(\{.*\})? *\}\}$")
RESULTS = "benchmarks/results"


def pruners_table(folder: str, labels: dict[str, str] | None = None, per_seed: bool = True) -> str:
    text = pruners.markdown(pruners.load_summary(ROOT / folder)["rows"], labels)
    return (text if per_seed else text.split("\n\n")[0]) + f"\n\n(`{folder}/summary.json`)"


def pruners_overview(columns: list[list[str]], rows: list[list[str]], target: list[float]) -> str:
    """Mean epochs / hypervolume vs no pruning of chosen variants over several pruner-benchmark folders,
    bold where both meet the target (at most target[0] of the epochs, at least target[1] of the hypervolume)."""
    summaries = [pruners.load_summary(ROOT / folder)["rows"] for _, folder in columns]
    body = []
    for label, variant in rows:
        cells = []
        for summary in summaries:
            epochs, hv, *_ = pruners.aggregate(summary[variant])
            text = f"{epochs:.1%} / {hv:.1%}"
            cells.append(f"**{text}**" if round(epochs, 3) <= target[0] and round(hv, 3) >= target[1] else text)
        body.append([label, *cells])
    return tables.markdown_table(["pruner", *(name for name, _ in columns)], body) + "\n\n(" + \
        ", ".join(f"`{folder}/summary.json`" for _, folder in columns) + ")"


def recipe_tables(folder: str, arm: str, epochs: int, students: list[str], subset: int = 0) -> str:
    """The recipe benchmark's per-student tables (its --markdown), for one arm and number of epochs."""
    rows = [r for r in load_rows(ROOT / folder / "results.jsonl") if r["epochs"] == epochs and r.get("subset", 0) == subset]
    parts = [recipe.table([r for r in rows if r["student"] == s], markdown=True, arm=arm).strip() for s in students]
    return "\n\n".join(parts) + f"\n\n(`{folder}/results.jsonl`)"


def fidelity_tables(folder: str) -> str:
    """Both fidelity tables of a folder; nothing while its results.jsonl does not exist yet."""
    if not (ROOT / folder / "results.jsonl").is_file():
        return ""
    return fidelity.render(ROOT / folder).strip() + f"\n\n(`{folder}/results.jsonl`)"


def _within_band(folder: str, budget: str) -> tuple[float, float, int, str]:
    """A proxy budget's within-band Kendall against the folder's final budget, the parameter-count
    baseline's over the same pairs, the number of pairs and the final budget."""
    rows = load_rows(ROOT / folder / "results.jsonl")
    final = fidelity.final_budget(rows)
    acc = {b: {r["student"]: r["val_accuracy"] for r in rows if r["budget"] == b} for b in (budget, final)}
    params = {r["student"]: r["params"] for r in rows}
    common = acc[budget].keys() & acc[final].keys()
    band, pairs = fidelity.within_band_kendall(acc[budget], acc[final], params)
    base, _ = fidelity.within_band_kendall({s: params[s] for s in common}, acc[final], params)
    return band, base, pairs, final


ONESHOT_RUN, DEFAULT_RUN = "results/cifar10-resnet32-oneshot", "results/cifar10-resnet32-v4"


def _costs(folder: str, *runs: str) -> str:
    """Each run's thread-hours and students per thread-hour, as the cost table has them (its latest row)."""
    latest = tables.latest_costs(folder)
    return ", ".join(f"{Path(run).name} {latest[run]['thread_hours']:.2f} h ({latest[run]['students_per_thread_hour']:.0f}"
                     " students per h)" for run in runs)


def fidelity_line(folder: str, budget: str, label: str = "within-band Kendall (default budget)") -> str:
    """The one-line figure of a proxy budget: its within-band Kendall against the final budget, and the
    parameter-count baseline's over the same pairs (an indented line, as the issues' form asks)."""
    if not (ROOT / folder / "results.jsonl").is_file():
        return f"({label}: nothing trained yet, `{folder}`)"
    band, base, pairs, final = _within_band(folder, budget)
    if not pairs:
        return f"({label}: no pair of students less than 2x apart has both budgets yet, `{folder}/results.jsonl`)"
    return (f"    {label}: {band:.2f}; parameter-count baseline: {base:.2f}\n\n"
            f"({budget} against {final}, over {pairs} pairs of students less than 2x apart in parameters; "
            f"`{folder}/results.jsonl`)")


def verbatim(path: str) -> str:
    """A committed log, as an indented block."""
    return "\n".join("    " + line if line else "" for line in (ROOT / path).read_text().splitlines())


# ------------------------------------------------------------------------------------------- headline

@dataclass(frozen=True)
class Headline:
    figure: str
    value: str  # computed from the result files
    section: str  # the heading it links to
    command: str


def _span(values: list[float], fmt: str = ".2f", unit: str = "") -> str:
    """The range of some figures, "low-high" (one figure when they agree)."""
    low, high = f"{min(values):{fmt}}{unit}", f"{max(values):{fmt}}{unit}"
    return low if low == high else f"{low}-{high}"


def _recipe_mean(folder: str, student: str, variant: str, arm: str, epochs: int) -> str:
    """A student's mean test accuracy (%) and its spread over seeds, for one recipe variant, arm and budget."""
    rows = [r for r in load_rows(ROOT / folder / "results.jsonl") if r["student"] == student and r["arm"] == arm
            and r["epochs"] == epochs and recipe.label(r["settings"]) == variant and not r.get("subset")]
    test = [100 * r["test_accuracy"] for r in rows]
    return f"{statistics.mean(test):.2f} ± {statistics.stdev(test) if len(test) > 1 else 0.0:.2f}"


def _pareto(folder: str) -> str:
    epochs, hv, *_ = pruners.aggregate(pruners.load_summary(ROOT / folder)["rows"]["pareto"])
    return f"{epochs:.1%} / {hv:.1%}"


def _field(folder: str, key: str, **where: str) -> list[float]:
    return [r[key] for r in tables.rows_of(folder, **where) if key in r]


def headlines() -> list[Headline]:
    R = RESULTS
    xeon = [f"{R}/latency-xeon", f"{R}/latency-xeon-2"]
    trial = {device: f"{tables.trial_speed_ratio(f'{R}/trial-speed', device=device):.1f}x"
             for device in ("cpu", "H200", "H100")}
    return [
        Headline("Per-trial speed against a plain pipeline (DataLoader, online ResNet-50 teacher)",
                 f"{trial['cpu']} on the CPU, {trial['H200']} on an H200, {trial['H100']} on an H100",
                 "Per-trial speed: teacher-logit cache and lean loop vs a plain pipeline",
                 "python -m benchmarks trial-speed"),
        Headline("Validation accuracy, cached minus online distillation",
                 f"{tables.cache_difference(f'{R}/cache-accuracy'):+.2f} points",
                 "Cached vs online distillation: same accuracy", "python -m benchmarks cache-accuracy STUDY"),
        Headline("kdsearch's training step / a bare PyTorch loop's (latest run)",
                 _span(_field(f"{R}/speed", "ratio", date="2026-12-04"), unit="x"),
                 "Time per training step: kdsearch's loop vs a bare PyTorch loop", "python -m benchmarks speed"),
        Headline("Training step's share of the machine's matmul FLOP/s",
                 _span(_field(f"{R}/throughput", "of_matmul"), ".1%"),
                 "Student training step vs matmul throughput", "python -m benchmarks throughput"),
        Headline("torch.compile: eager / compiled time of a 4-epoch trial (inverted students: a 110-epoch rung)",
                 f"{_span(_field(f'{R}/compile', 'trial_ratio', date='2026-11'))} (CPU and GPU); inverted "
                 f"{_span(_field(f'{R}/compile', 'trial_ratio', date='2026-12-06'))} (CPU): it does not pay by default",
                 "torch.compile: does it pay for itself in a trial?", "python -m benchmarks compile"),
        Headline("Latency repeats (ONNX Runtime, median difference, Xeon host)",
                 f"{_span(tables.latency_figure(xeon, 'idle / onnxruntime'), '.1%')} idle, "
                         f"{_span(tables.latency_figure(xeon, 'load / onnxruntime'), '.1%')} while two workers train",
                 "Latency: does a student's latency repeat?", "python -m benchmarks latency"),
        Headline("Default pruner (pareto): epochs / hypervolume vs no pruning, 12-epoch studies",
                 f"{_pareto(f'{R}/pruners-digits')} (digits), {_pareto(f'{R}/pruners-cifar10-e12-gpu')} and "
                         f"{_pareto(f'{R}/pruners-cifar10-plain-e12-gpu')} (CIFAR-10 subset)",
                 "Search quality per pruner", "python -m benchmarks pruners STUDY"),
        Headline("Search fidelity within size bands: Kendall with 10 epochs on all images of the default study's "
                 "rung (45,000 x 3), its short trials (10,000 x 3) and ranking by size",
                 "{:.2f}, {:.2f} and {:.2f} over {} pairs".format(
                     _within_band(f"{R}/fidelity-cifar10-bands", "45000x3")[0],
                     *_within_band(f"{R}/fidelity-cifar10-bands", "10000x3")[:3]),
                 "Within size bands: students made for the question",
                 "bash benchmarks/results/fidelity-cifar10-bands/run.sh"),
        Headline("One-shot search on CIFAR-10: within-band Kendall of inherited weights, of ranking by size and of "
                 "inherited weights fine-tuned 3 epochs; thread-hours of the one-shot and the default per-trial search",
                 "{:.2f}, {:.2f} and {:.2f} over {} pairs; {}".format(
                     *_within_band(f"{R}/fidelity-oneshot", "inherited")[:2],
                     *_within_band(f"{R}/fidelity-oneshot", "inherited+3")[::2],
                     _costs(f"{R}/search-cost", ONESHOT_RUN, DEFAULT_RUN)),
                 "One-shot search on CIFAR-10: fidelity and cost",
                 "bash benchmarks/results/fidelity-oneshot/run.sh"),
        Headline("A worker's start, spawned / forked from kdsearch's preloaded server",
                 _span(_field(f"{R}/worker-start", "ratio"), ".0f", "x"),
                 "A worker's start: forked from a preloaded server vs spawned",
                 "python -m benchmarks worker-start"),
        Headline("ResNet-8, 10 CIFAR-10 epochs: default recipe vs the old one (test %)",
                 f"{_recipe_mean(f'{R}/recipe', 'res8', 'default', 'ce', 10)} vs "
                         f"{_recipe_mean(f'{R}/recipe', 'res8', 'old', 'ce', 10)}",
                 "Training recipe: fixed students, 10 epochs on CIFAR-10", "python -m benchmarks recipe"),
        Headline("ResNet-8 distilled (T 4, alpha 0.9), 10 epochs (test %)",
                 _recipe_mean(f"{R}/recipe", "res8", "default", "kd", 10),
                 "Training recipe: fixed students, 10 epochs on CIFAR-10", "python -m benchmarks recipe --arms kd"),
        Headline("Validation pass at batch 128 vs 1024 (CPU, one thread)",
                 _span([r["ratio"]["128"] for r in tables.rows_of(f"{R}/eval")], unit="x") + " faster",
                 "Validation passes: evaluation batch size on the CPU", "python -m benchmarks eval"),
        Headline("`kdsearch train --jobs 2` on 2 cores: images/s together vs one model alone",
                 _span(_field(f"{R}/concurrent", "ratio"), unit="x"),
                 "Final training side by side: `kdsearch train --jobs N`", "python -m benchmarks concurrent --jobs 2"),
    ]


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", re.sub(r"[`*_]", "", heading.strip().lower())).replace(" ", "-")


def headline() -> str:
    """The opening screen: each headline figure, the section it comes from and the command behind it."""
    body = [[h.figure, h.value, f"[{h.section.replace('`', '')}](#{anchor(h.section)})", f"`{h.command}`"]
            for h in headlines()]
    return tables.markdown_table(["figure", "value", "section", "command"], body)


TABLES: dict[str, Callable[..., str]] = {
    "trial-speed": tables.trial_speed,
    "cache-accuracy": tables.cache_accuracy,
    "long-kd": tables.long_kd,
    "throughput": tables.throughput,
    "compile": tables.compile_speed,
    "latency": tables.latency,
    "pruners": pruners_table,
    "pruners-overview": pruners_overview,
    "families": tables.families,
    "families-fronts": tables.families_fronts,
    "recipe": recipe_tables,
    "alpha-budget": tables.alpha_budget,
    "fidelity": fidelity_tables,
    "fidelity-line": fidelity_line,
    "eval": tables.eval_batch,
    "speed": tables.step_speed,
    "supervise": tables.supervise,
    "worker-start": tables.worker_start,
    "subnet-eval": tables.subnet_eval,
    "search-cost": tables.search_cost,
    "concurrent": tables.concurrent,
    "verbatim": verbatim,
    "headline": headline,
}


def render(template: str) -> str:
    """The template with every directive line replaced by its table."""
    out = []
    for line in template.splitlines():
        m = DIRECTIVE.match(line.strip())
        if not m:
            out.append(line)
            continue
        name, args = m.group(1), json.loads(m.group(2)) if m.group(2) else {}
        if name not in TABLES:
            raise SystemExit(f"template: no table {name!r} (known: {', '.join(TABLES)})")
        out.append(TABLES[name](**args))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out).strip()) + "\n"


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks report", description=__doc__.splitlines()[0])
    ap.add_argument("--template", type=Path, default=TEMPLATE)
    ap.add_argument("--out", type=Path, help="write the page here (default: print it)")
    ap.add_argument("--check", type=Path, nargs="?", const=ROOT / "BENCHMARKS.md",
                    help="compare with this page (default BENCHMARKS.md) and exit 1 where it differs")
    args = ap.parse_args(argv)
    page = render(args.template.read_text())
    if args.check:
        if args.check.read_text() != page:
            raise SystemExit(f"{args.check} is not what the result files give: python -m benchmarks report --out {args.check}")
        print(f"{args.check}: as the result files give it")
    elif args.out:
        args.out.write_text(page)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(page)
