"""BENCHMARKS.md's tables, each made from a benchmark's result file (benchmarks/results/): the renderers
`python -m benchmarks report` calls for the benchmarks whose modules have none of their own (recipe,
pruners and fidelity render their own tables, as their --markdown prints them).

Every renderer takes the folder of a results.jsonl (or a latency.json) and optional filters, and ends
its table with where the numbers are from: the file, and "transcribed from the <date> printout" where
a row was written into the file from the figures a benchmark printed before it wrote result files.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from .harness import ROOT, load_rows, provenance_of
from .recipe import teacher_gain


def short_arch(arch: str) -> str:
    """A student's summary without what most share: 3x3 kernels and no hidden fc layer."""
    return arch.replace(" | fc[]", "").replace(" k3", "")


def cell(text: str) -> str:
    """Text in a table cell (a `|` in an architecture would end the cell)."""
    return text.replace("|", "\\|")


def rows_of(folder: str | Path, date: str | None = None, device: str | None = None, **match: Any) -> list[dict]:
    """The rows of FOLDER/results.jsonl, those of a run's `date` (a prefix, e.g. "2026-12-04") on `device`
    (a part of the recorded device, e.g. "H100" or "cpu") when given, and with the given field values."""
    rows = load_rows(ROOT / folder / "results.jsonl")
    out = []
    for r in rows:
        m = provenance_of(r).get("machine") or {}
        if date and not str(m.get("date", "")).startswith(date):
            continue
        if device and device not in str(m.get("device", "")):
            continue
        if all(r.get(k) == v for k, v in match.items()):
            out.append(r)
    return out


def source(folder: str | Path, rows: list[dict]) -> str:
    """The line under a table: the file, and the printouts its rows were transcribed from."""
    notes = sorted({provenance_of(r).get("source", "") for r in rows} - {""})
    return f"(`{Path(folder).as_posix()}/results.jsonl`" + (f"; {', '.join(notes)}" if notes else "") + ")"


def markdown_table(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])


# ------------------------------------------------------------------------------------------- speed

def trial_speed(folder: str, date: str | None = None, device: str | None = None) -> str:
    rows = [r for r in rows_of(folder, date, device) if "student" in r]
    body = [[cell(r["arch"]), f"{r['baseline_s']:.2f}", f"{r['kdsearch_s']:.2f}", f"{r['baseline_s'] / r['kdsearch_s']:.1f}x"]
            for r in rows]
    base, kds = statistics.mean(r["baseline_s"] for r in rows), statistics.mean(r["kdsearch_s"] for r in rows)
    body.append(["mean per trial", f"{base:.2f}", f"{kds:.2f}", f"**{base / kds:.1f}x**"])
    return markdown_table(["student", "baseline s", "kdsearch s (incl. amortized cache)", "ratio"], body) + \
        "\n\n" + source(folder, rows)


def trial_speed_ratio(folder: str, date: str | None = None, device: str | None = None) -> float:
    """Mean baseline seconds per trial over mean kdsearch seconds: the figure the benchmark prints last."""
    rows = [r for r in rows_of(folder, date, device) if "student" in r]
    return statistics.mean(r["baseline_s"] for r in rows) / statistics.mean(r["kdsearch_s"] for r in rows)


def step_speed(folder: str, date: str | None = None, device: str | None = None, notes: dict | None = None) -> str:
    rows = rows_of(folder, date, device)
    notes = notes or {}
    body = []
    for r in rows:
        other = ", ".join(f"{fmt} {ratio:.2f}x" for fmt, ratio in (r.get("other") or {}).items())
        body.append([f"{r['student']} `{short_arch(r['arch'])}`" + (f" {notes[r['student']]}" if r["student"] in notes else ""),
                     f"{r['bare_ms']:.1f}", f"{r['kdsearch_ms']:.1f} ({r['format']})", f"{r['ratio']:.2f}x", other])
    return markdown_table(["student", "bare ms/step", "kdsearch ms/step (layout it chose)", "ratio",
                           "kdsearch in the other layout"], body) + "\n\n" + source(folder, rows)


def throughput(folder: str, date: str | None = None, device: str | None = None) -> str:
    rows = rows_of(folder, date, device)
    body = [[cell(r["arch"]), f"{r['mflop_per_image']:.1f}", f"{r['images_per_s']:,.0f}", f"{r['gflops']:.1f}",
             f"{r['of_matmul']:.1%}"] for r in rows]
    peak = provenance_of(rows[0])["settings"]["matmul_gflops"]
    return (f"Baseline, float32 `torch.mm` of 2048x2048 matrices on the same threads: **{peak:.1f} GFLOP/s**.\n\n"
            + markdown_table(["student", "MFLOP / image (train)", "images / s", "GFLOP/s", "of matmul"], body)
            + "\n\n" + source(folder, rows))


def compile_speed(folder: str, date: str | None = None, device: str | None = None) -> str:
    rows = rows_of(folder, date, device)
    n = provenance_of(rows[0])["settings"]["trial_epochs"]
    body = [[cell(r["arch"]), f"{r['eager_s']:.2f}", f"{r['compiled_s']:.2f}", f"{r['compile_s']:.1f}",
             "never" if r["break_even"] is None else f"{r['break_even']:.0f}", f"{r['trial_ratio']:.2f}"] for r in rows]
    return markdown_table(["student", "eager s / epoch", "compiled s / epoch", "compile s", "break-even epochs",
                           f"trial ratio ({n} epochs)"], body) + "\n\n" + source(folder, rows)


EVAL_LABELS = {"res8": "`res[16,32,64]x1 k3` (ResNet-8)", "resnet32": "ResNet-32 (the CIFAR-10 teacher, forward)",
               "conv18x4": "`conv[18,18,18,18]x1 k3 bn`", "conv37x4": "`conv[37,37,37,37]x1 k3 bn`"}


def eval_batch(folder: str, date: str | None = None, device: str | None = None) -> str:
    """Ratio of seconds at batch 1024 to seconds at each batch, per model and number of images (a row per run)."""
    rows = [r for r in rows_of(folder, date, device) if r.get("precision", "default") == "default"]
    batches = sorted({int(b) for r in rows for b in r["ratio"]} - {1024})
    body, seen = [], set()
    for model in dict.fromkeys(r["model"] for r in rows):
        for r in (r for r in rows if r["model"] == model):
            images = provenance_of(r)["settings"]["images"]
            label = "" if model in seen else EVAL_LABELS.get(model, model)
            seen.add(model)
            body.append([label, f"{images:,}", *(f"{r['ratio'][str(b)]:.2f}" if str(b) in r["ratio"] else "" for b in batches)])
    return markdown_table(["model", "images", *(f"x at {b}" for b in batches)], body) + "\n\n" + source(folder, rows)


def subnet_eval(folder: str, date: str | None = None, device: str | None = None) -> str:
    """Per subnet: seconds of kdsearch's evaluation (recalibration + validation) and the variants' ratios; then
    per supernet, a training step's and an epoch's seconds (rows of --sandwich-steps)."""
    every = rows_of(folder, date, device)
    rows = [r for r in every if "subnet" in r]
    supernets = [r for r in every if "supernet" in r]
    body = [[r["family"], f"`{cell(r['subnet'].replace(' | fc[]', ''))}`", f"{r['params']:,}", f"{r['macs'] / 1e6:.1f}M",
             f"{r['baseline']['median_s']:.2f}", f"{r['recalibration']['median_s']:.2f}",
             f"{r['validation']['median_s']:.2f}", f"{r['ratio_channels_last']:.2f}x", f"{r['ratio_first_pass']:.2f}x"]
            for r in rows]
    settings = provenance_of(rows[0])["settings"]
    head = ["family", "subnet", "params", "MACs", f"evaluation, s ({settings['threads']} thread)", "recalibration, s",
            "validation, s", "x channels_last", f"x first pass ({settings['first_pass']:,} images)"]
    out = markdown_table(head, body)
    if supernets:
        steps = [[r["family"], f"`{cell(r['supernet'].replace(' | fc[]', ''))}`", f"{r['supernet_params']:,}",
                  r.get("layout", "contiguous") + (" (chosen)" if r.get("chosen") else ""),
                  f"{r['sandwich_step_s']:.2f}", f"{r['epoch_s'] / 60:.0f}"] for r in supernets]
        settings = provenance_of(supernets[0])["settings"]
        images, batch = settings["train_images"], settings.get("batch_size", 128)
        out += "\n\n" + markdown_table(["family", "supernet", "params", "layout", f"sandwich step (batch {batch}), s",
                                          f"epoch on {images:,} images, min"], steps)
    return out + "\n\n" + source(folder, every)


def concurrent(folder: str, date: str | None = None, device: str | None = None) -> str:
    rows = rows_of(folder, date, device)
    body = []
    for r in rows:
        name = "`res[16,32,64]x1 k3` (ResNet-8)" if r["student"] == "res8" else f"`{cell(r['arch'].replace(' | fc[]', ''))}`"
        threads = provenance_of(r)["settings"]["threads"]
        body.append([name, f"{r['params']:,}", f"{r['alone']:,.0f} images/s", f"{min(r['each']):,.0f}-{max(r['each']):,.0f}",
                     f"{r['together']:,.0f}", f"**{r['ratio']:.2f}x**"])
    head = ["student", "params", f"alone, {threads} threads", f"--jobs {rows[0]['jobs']}, each", "together",
            "together / alone"]
    return markdown_table(head, body) + "\n\n" + source(folder, rows)


def supervise(folder: str) -> str:
    rows = rows_of(folder)
    head = [""] + [f"run {i} ({provenance_of(r)['settings'].get('order', '')})" for i, r in enumerate(rows, 1)]
    body = [["in-process, s per trial", *(f"{r['in_process_s'] / r['trials']:.2f}" for r in rows)],
            ["supervised, s per trial", *(f"{r['supervised_s'] / r['trials']:.2f}" for r in rows)],
            ["ratio supervised / in-process", *(f"{r['supervised_s'] / r['in_process_s']:.3f}" for r in rows)]]
    return markdown_table(head, body) + "\n\n" + source(folder, rows)


def worker_start(folder: str) -> str:
    rows = rows_of(folder)

    def imports(row: dict) -> str:  # (the first rows imported the worker module alone)
        settings = provenance_of(row)["settings"]
        return ", ".join(settings["imports"]) if "imports" in settings else settings["module"]
    body = [[f"run {i}", imports(r), f"{r['first_start_s']:.2f}", f"{r['spawn']['median_s']:.2f}",
             f"{r['forked']['median_s']:.3f}", f"{r['ratio']:.0f}x", str(r["spawn"]["repeats"])]
            for i, r in enumerate(rows, 1)]
    head = ["", "a start imports", "fork server's start, s", "spawned, s per start", "forked, s per start", "ratio",
            "rounds"]
    return markdown_table(head, body) + "\n\n" + source(folder, rows)


# ------------------------------------------------------------------------------------------- accuracy of the shortcuts

def cache_accuracy(folder: str) -> str:
    rows = rows_of(folder)
    body = [[str(r["seed"]), f"{r['online']:.2%}", f"{r['cached']:.2%}", f"{r['online_s']:.0f}", f"{r['cached_s']:.0f}"]
            for r in rows]
    body.append(["mean", f"{statistics.mean(r['online'] for r in rows):.2%}",
                 f"{statistics.mean(r['cached'] for r in rows):.2%}", "", ""])
    return markdown_table(["seed", "online", "cached", "online s", "cached s"], body) + "\n\n" + source(folder, rows)


def cache_difference(folder: str) -> float:
    """Mean cached minus mean online validation accuracy, in points."""
    rows = rows_of(folder)
    return 100 * (statistics.mean(r["cached"] for r in rows) - statistics.mean(r["online"] for r in rows))


def long_kd(folder: str) -> str:
    rows = rows_of(folder)
    settings = provenance_of(rows[0])["settings"]
    e, k = settings["epochs_total"], settings["views"]
    body = [[f"{r['student']} `{short_arch(r['arch'])}`", f"{r['cached_k_min']:.1f}", f"{r['cached_e_min']:.1f}",
             f"{r['online_min']:.1f}", f"{r['online_over_cached_e']:.2f}x"] for r in rows]
    return markdown_table(["student", f"{k} cached views", f"{e} cached views", "teacher online",
                           f"online / {e} views"], body) + "\n\n" + source(folder, rows)


# ------------------------------------------------------------------------------------------- latency

CONDITIONS = {"idle / onnxruntime": ("idle", "onnxruntime"), "idle / torch": ("idle", "eager torch (before)"),
              "load / onnxruntime": ("two workers train", "onnxruntime, lock"),
              "load / torch": ("two workers train", "eager torch (before), no lock"),
              "load, no lock / onnxruntime": ("two workers train", "onnxruntime, no lock")}


def latency(folders: list[str]) -> str:
    """The repeatability summary of one or more runs of the latency benchmark (latency.json), runs side by
    side in each cell ("run 1 / run 2")."""
    runs = [json.loads((ROOT / f / "latency.json").read_text())["summary"] for f in folders]
    several = len(runs) > 1
    suffix = " (" + " / ".join(f"run {i}" for i in range(1, len(runs) + 1)) + ")" if several else ""
    body = []
    for key, (condition, runtime) in CONDITIONS.items():
        if all(key in run for run in runs):
            def both(field: str, fmt: str) -> str:
                return " / ".join(format(run[key][field], fmt) for run in runs)
            body.append([condition, runtime, both("median_rel_diff", ".1%"), both("max_rel_diff", ".1%"),
                         both("spearman", ".3f"), both("median_ms", ".3f")])
    head = ["condition", "runtime", f"median rel. diff{suffix}", "max rel. diff", "Spearman", "median ms"]
    return markdown_table(head, body) + "\n\n(" + ", ".join(f"`{f}/latency.json`" for f in folders) + ")"


def latency_figure(folders: list[str], key: str, field: str = "median_rel_diff") -> list[float]:
    """One figure of a condition over runs (e.g. the onnxruntime idle median difference)."""
    return [json.loads((ROOT / f / "latency.json").read_text())["summary"][key][field] for f in folders]


# ------------------------------------------------------------------------------------------- search

def families(folder: str, epochs: list[int] | None = None) -> str:
    """Mean hypervolume per space and trial length, default pruner and none, from the families benchmark's rows."""
    rows = rows_of(folder)
    by: dict[tuple, dict[str, list[float]]] = {}
    for r in rows:
        pair = tuple(sorted((provenance_of(r)["settings"]["all_families"], provenance_of(r)["settings"]["plain"])))
        by.setdefault((pair, r["space"], r["epochs"]), {}).setdefault(r["pruner"], []).append(r["hypervolume"])
    body = []
    for (pair, space, ep), hvs in by.items():
        if epochs and ep not in epochs:
            continue
        where = ", on this CPU" if not any("gpu" in p for p in pair) else ""
        label = ("all families (plain, residual, inverted)" if space == "all families" and not body else space) + where

        def mean(values: list[float]) -> str:
            return f"{statistics.mean(values):.4f} ({', '.join(f'{v:.4f}' for v in values)})"
        pruned = next(v for k, v in hvs.items() if k != "none")
        body.append([label, str(ep), mean(pruned), mean(hvs.get("none", []))])
    return markdown_table(["space", "epochs", "hypervolume, default pruner", "hypervolume, no pruning"], body) + \
        "\n\n" + source(folder, rows)


def families_fronts(folder: str, pair_folder: str, seed: str, pruner: str) -> str:
    """One seed's two fronts side by side (all families, plain only)."""
    rows = [r for r in rows_of(folder, seed=seed, pruner=pruner)
            if pair_folder in (provenance_of(r)["settings"]["all_families"], provenance_of(r)["settings"]["plain"])]
    fronts = {r["space"]: r["front"] for r in rows}
    a, b = fronts["all families"], fronts["plain only"]
    body = []
    for i in range(max(len(a), len(b))):
        row = []
        for front in (a, b):
            row += ([f"{front[i][0]:,.0f}", f"{front[i][1]:.2%}", cell(front[i][2])] if i < len(front) else ["", "", ""])
        body.append(row)
    return markdown_table(["all families: params", "val acc", "student", "plain only: params", "val acc", "student"], body)


def alpha_budget(folder: str) -> str:
    """Per student: validation accuracy without the teacher and at each (T, alpha), and the paired test gain."""
    rows = rows_of(folder)
    students = list(dict.fromkeys(r["student"] for r in rows))
    arms = [a for a in dict.fromkeys(r["arm"] for r in rows) if a != "ce"]

    def arm_label(arm: str) -> str:
        return "T 4, alpha 0.9" if arm == "kd" else arm.removeprefix("kd(").removesuffix(")").replace("T=", "T ") \
            .replace(",alpha=", ", alpha ")
    head = ["student", "no teacher: val %"]
    for arm in arms:
        head += [f"{arm_label(arm)}: val %", "vs no teacher, test points [95% CI]"]
    body = []
    for s in students:
        mine = [r for r in rows if r["student"] == s]
        plain = {r["seed"]: r for r in mine if r["arm"] == "ce"}
        row = [f"{s} ({mine[0]['params']:,} params)", f"{statistics.mean(100 * r['val_accuracy'] for r in plain.values()):.2f}"]
        for arm in arms:
            kd = [r for r in mine if r["arm"] == arm]
            row += [f"{statistics.mean(100 * r['val_accuracy'] for r in kd):.2f}",
                    teacher_gain([100 * (r["test_accuracy"] - plain[r["seed"]]["test_accuracy"]) for r in kd
                                  if r["seed"] in plain]).rsplit(" (", 1)[0]]
        body.append(row)
    return markdown_table(head, body) + "\n\n" + source(folder, rows)


def latest_costs(folder: str) -> dict[str, dict]:
    """Each run's latest search-cost row (python -m benchmarks run-times --out), by run folder."""
    return {r["run"]: r for r in rows_of(folder)}


def search_cost(folder: str) -> str:
    """Per run (its latest row): thread-hours of supernet training and of trials by kind, and students per
    thread-hour (python -m benchmarks run-times --out)."""
    latest = latest_costs(folder)

    def hours(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}"

    body = [[f"`{r['run']}`", r["strategy"], f"{r['students'] + r['subnets_scored']:,}",
             hours(r["supernet_thread_hours"]), hours(r["short_thread_hours"] + r["subnets_thread_hours"]),
             f"{hours(r['rung_thread_hours'])} ({r['promotions']})", hours(r["failed_thread_hours"]), f"**{r['thread_hours']:.2f}**",
             f"{r['students_per_thread_hour']:.0f}"] for r in latest.values()]
    head = ["run", "strategy", "students trained (per-trial) or scored (one-shot)", "supernet training",
            "short trials or subnets scored", "promotions to the rung (students)", "failed or stopped (upper bound)",
            "thread-hours in all", "students per thread-hour"]
    return markdown_table(head, body) + "\n\n" + source(folder, list(latest.values()))
