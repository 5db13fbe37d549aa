"""`kdsearch results`: one Markdown document from finished runs, every number read from their files.

Per run: the teacher; the search's Pareto front (validation accuracy; test accuracy only for
students that went through final training); the final training of each retrained student
(distilled and baseline test accuracy over seeds, the paired gains with their 95% intervals,
accuracy retained as a fraction of the teacher's, the search's rank fidelity); a figure
of test accuracy against params; the commands, the study file, machine and software. A run
folder may hold a hand-written `notes.md` (discussion, no numbers): it is included as is.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from rich.console import Console
from scipy.stats import kendalltau, spearmanr

from ..analysis.front import pareto_trials
from .cells import arm_cell, fraction, gain_cell, pct, sentence
from ..errors import KDSearchError
from ..final import DISTILL_ONLY, MODES, headline
from ..runs.files import write_text_atomic
from ..runs.layout import RESULTS_FILE, notes_file
from ..runs.run import Run, open_run
from ..runs.trial_attrs import INHERITED, rung_of
from .figures import log_ticks
from .images import export_images
from .results_provenance import provenance_section
from .results_references import load_references, reference_aim_lines, references_section


AIM_FRACTION, AIM_POINTS = 0.1, 3.0  # the aim: at most 1/10 of the teacher's params, within 3 points of it
FIDELITY_MIN = 6  # retrained students needed before the search's rank correlation is printed
ARM_STYLE = {"kd": ("#d62728", "circle", 0.96), "ce": ("#1f77b4", "square", 1.0), "ce-all": ("#7f7f7f", "diamond", 1.04)}
# (colour, marker, x offset factor: the arms of one student sit side by side instead of on top of each other)


def load_finals(run_dir: Path, within: str = "") -> list[dict[str, Any]]:
    """Every RUN/final/<trial>/results.json with at least one finished model, by trial number (`within` a
    sub-folder of each: "inherited", a one-shot subnet fine-tuned from its inherited weights)."""
    out = []
    for path in sorted((run_dir / "final").glob(f"*/{within + '/' if within else ''}{RESULTS_FILE}")):
        try:
            body = json.loads(path.read_text())
        except ValueError as exc:
            raise KDSearchError(f"{path} is not valid JSON ({exc})") from None
        if body.get("summary", {}).get("arms"):
            out.append(body)
    return sorted(out, key=lambda b: b["setup"]["trial"])


def legend(mode: str, arms: list[dict[str, Any]]) -> str:
    """An arm's name in the figure: its label where the students share it (a distilled arm at a T and alpha
    given to `train` says so), else the arm's kind alone."""
    labels = {arm.get("label", MODES[mode]) for arm in arms}
    return labels.pop() if len(labels) == 1 else MODES[mode].split(" (")[0]


def figure(finals: list[dict[str, Any]], teacher: dict[str, Any], title: str) -> go.Figure:
    """Test accuracy against params: each arm's mean over seeds (bars: sd), the teacher as a star and line."""
    fig = go.Figure()
    for mode, (color, symbol, shift) in ARM_STYLE.items():
        rows = [(b["trial"]["params"], b["summary"]["arms"][mode], b["setup"]["trial"]) for b in finals
                if mode in b["summary"]["arms"]]
        if not rows:
            continue
        fig.add_trace(go.Scatter(
            x=[r[0] * shift for r in rows], y=[r[1]["test_mean"] for r in rows], mode="markers+text",
            text=[f"#{r[2]}" if mode == "kd" else "" for r in rows], textposition="top center",
            error_y=dict(type="data", array=[0 if math.isnan(r[1]["test_sd"]) else r[1]["test_sd"] for r in rows]),
            name=legend(mode, [r[1] for r in rows]), marker=dict(color=color, symbol=symbol, size=10)))
    fig.add_trace(go.Scatter(x=[teacher["params"]], y=[teacher["test_accuracy"]], mode="markers",
                             name=f"teacher {teacher['name']}", marker=dict(symbol="star", size=16, color="#222")))
    fig.add_hline(y=teacher["test_accuracy"], line=dict(color="#222", dash="dot", width=1))
    fig.update_layout(title=title, template="plotly_white", height=480, width=900,
                      xaxis=dict(type="log", title="params (log scale)", tickformat="~s",
                                 tickvals=log_ticks([b["trial"]["params"] for b in finals] + [teacher["params"]])),
                      yaxis=dict(title="test accuracy (mean over seeds, bars: sd)", tickformat=".0%"))
    return fig


CHECKPOINT_VAL = ("not held out: the validation split is carved from the training images, which a checkpoint "
                  "trained elsewhere on this dataset (as third-party CIFAR-10 checkpoints are) has seen; the test "
                  "accuracy is the held-out number")


def teacher_section(teacher: dict[str, Any], data: dict[str, Any], weights: str | None = None) -> list[str]:
    """The teacher and the data. A teacher loaded from a checkpoint file (`weights`) may have trained on the
    images the validation split is carved from, so its validation accuracy is said to be no held-out number."""
    val = pct(teacher["val_accuracy"]) + (f"; {CHECKPOINT_VAL}" if weights else "")
    return [f"**Teacher** {teacher['name']}: test accuracy **{pct(teacher['test_accuracy'])}** (validation "
            f"{val}), {teacher['params']:,} params, {teacher.get('macs', 0):,} MACs, "
            f"{teacher.get('latency_ms', math.nan):.2f} ms at batch 1; "
            f"trained or fine-tuned here for {teacher.get('epochs_trained', 0)} epoch(s)"
            + (" (loaded from the run's cache)" if teacher.get("from_cache") else "") + ".",
            "",
            f"**Data** {data.get('name', '')}: {data.get('train', 0):,} images for the search's students, "
            f"{data.get('val', 0):,} validation (carved from the training data), {data.get('test', 0):,} test "
            f"(read only for the tables below, never by the search).", ""]


MAX_FRONT_ROWS = 40  # a longer front is shown as its accuracy-vs-params members


def front_section(run: Run, teacher: dict[str, Any], finals: list[dict[str, Any]]) -> list[str]:
    """The search's front by validation accuracy (what the search chose on); test accuracy only for the
    students that went through final training, as their distilled arm scored there."""
    members = pareto_trials(run.study)
    final_test = {b["setup"]["trial"]: b["summary"]["arms"]["kd"]["test_mean"] for b in finals
                  if "kd" in b["summary"]["arms"]}
    cfg = run.config
    rung = rung_of(members[0]) if members else None
    if rung:  # the front is read at the highest rung (search.promote)
        how = (f"read where its students were promoted: {rung['epochs']} epochs on "
               + (f"{rung['images']:,} images" if rung["images"] else "all the training images")
               + (f", fine-tuned from the weights they inherit from supernets trained {cfg.get('epochs')} epoch(s)"
                  if rung.get(INHERITED) else f"; the search's trials {cfg.get('epochs')} epochs each"))
    elif cfg.get("strategy") == "oneshot":
        how = f"subnets scored with the weights they inherit from supernets trained {cfg.get('epochs')} epoch(s)"
    else:
        how = f"{cfg.get('epochs')} epochs each on the search's training images"
    lines = [f"### The search's Pareto front ({len(members)} of {len(run.study.trials)} trials; {how})", ""]
    shown = members
    if len(members) > MAX_FRONT_ROWS:  # a one-shot front runs to hundreds: the accuracy-vs-params one, and the retrained
        shown = [t for t in members if t.number in final_test or not any(
            o.values[0] > t.values[0] and o.user_attrs.get("params", 0) <= t.user_attrs.get("params", 0) for o in members)]
        lines += [f"The {len(shown)} of them that no other member beats in validation accuracy at no more parameters "
                  f"(and any retrained below); `kdsearch report` lists all {len(members)}.", ""]
    lines += ["| trial | val acc (search) | test acc (final training) | params | of teacher | MACs | latency ms | T "
              "| alpha | architecture |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for t in sorted(shown, key=lambda t: t.user_attrs.get("params", 0)):
        a = t.user_attrs
        lines.append(f"| {t.number} | {pct(t.values[0])} | {pct(final_test.get(t.number))} | {a.get('params', 0):,} | "
                     f"{fraction(a.get('params', 0), teacher['params'])} | {a.get('macs', 0):,} | "
                     f"{a.get('latency_ms', math.nan):.3f} | {a.get('temperature', math.nan):.2f} | "
                     f"{a.get('alpha', math.nan):.2f} | `{a.get('arch', '')}` |")
    runtime = {"onnxruntime": "ONNX Runtime", "torch": "eager PyTorch"}.get(cfg.get("latency_runtime", "torch"), "?")
    return lines + ["", "Validation accuracy is what the search optimized; the test split is read only for "
                    "students retrained below (their distilled arm's mean over seeds). Latency: median per call "
                    f"through {runtime} on the CPU, batch {cfg.get('latency_batch', 1)}, "
                    f"{cfg.get('latency_threads', 1)} thread(s).", ""]


BASELINES = {"ce-all": "ordinary training (fresh views)", "ce": "control (teacher's views)"}
SHORT = {"kd": "distilled", "ce": "control", "ce-all": "ordinary"}  # arm names in the lr column


def paired(b: dict[str, Any]) -> int | None:
    """How many seeds the headline gain's interval is over (pairs of a distilled and a baseline model)."""
    g = b["summary"]["gain"].get(headline(b["summary"]["gain"]) or "")
    return g["n"] if g else None


def seeds_cell(b: dict[str, Any]) -> str:
    """The seeds the interval uses; where the distilled arm finished more, its count beside them."""
    kd = b["summary"]["arms"].get("kd")
    done, pairs = len(kd["seeds"]) if kd else 0, paired(b)
    if pairs is None or pairs == done:
        return str(done)
    return f"{pairs} (distilled: {done})"


def lr_cell(arms: dict[str, Any]) -> str:
    """The learning rate each arm trained at: one number when they agree."""
    rates = {mode: arm["lr"] for mode, arm in arms.items()}
    if len(set(rates.values())) == 1:
        return f"{next(iter(rates.values())):.3g}"
    return ", ".join(f"{SHORT.get(mode, mode)} {lr:.3g}" for mode, lr in rates.items())


def policy_text(policy: dict[str, Any]) -> str:
    """How the learning rates were set, without the trial's own rate (the table's lr column has that)."""
    if policy.get("fixed") is not None:
        return f"one fixed learning rate for every arm (`--lr {policy['fixed']:g}`)"
    grid = policy.get("grid") or []
    if len(grid) == 1:
        times = "" if grid[0] == 1 else f" x {grid[0]:g}"
        return f"every arm at the trial's own learning rate{times} (`--lr-grid {grid[0]:g}`)"
    return ("each arm chose its learning rate on validation accuracy (first seed) from the trial's lr x "
            f"{', '.join(f'{m:g}' for m in grid)}")


def distill_given(b: dict[str, Any]) -> str | None:
    """What a final training's distilled arm was trained with when `train --temperature/--alpha` replaced the
    trial's T and alpha (results.json's setup against its trial record; older files do not record the trial's)."""
    s, t = b["setup"], b["trial"]
    if any(t.get(k) is None for k in DISTILL_ONLY) or all(t[k] == s[k] for k in DISTILL_ONLY):
        return None
    return (f"distilled at T {s['temperature']:.3g}, alpha {s['alpha']:.3g} (given to `train`; the search's "
            f"T {t['temperature']:.3g}, alpha {t['alpha']:.3g})")


def inherited_section(tuned: list[dict[str, Any]], finals: list[dict[str, Any]],
                      teacher: dict[str, Any]) -> list[str]:
    """One-shot subnets fine-tuned from their inherited weights (`kdsearch train --inherit`), each beside its
    inherited-weight accuracy in the search and, where it was trained from scratch too, that training."""
    if not tuned:
        return []
    scratch = {b["setup"]["trial"]: b for b in finals}
    head = ["trial", "params (of teacher)", "val acc (search, inherited)", "fine-tuned epochs",
            "fine-tuned distilled test", "from scratch epochs", "from scratch distilled test"]
    lines = ["### Inherited weights fine-tuned", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b in tuned:
        n, trial, other = b["setup"]["trial"], b["trial"], scratch.get(b["setup"]["trial"])
        lines.append("| " + " | ".join([
            str(n), f"{trial['params']:,} ({fraction(trial['params'], teacher['params'])})",
            pct(trial.get("search_val_accuracy")), str(b["setup"]["epochs"]), arm_cell(b["summary"]["arms"].get("kd")),
            str(other["setup"]["epochs"]) if other else "",
            arm_cell(other["summary"]["arms"].get("kd")) if other else "not trained"]) + " |")
    return lines + ["", "Each fine-tuned model starts from the weights the subnet inherited from its supernet "
                    "(`kdsearch train --inherit`, RUN/final/<trial>/inherited/); from scratch is the final training "
                    "above. Test accuracy: the distilled arm's mean ± sd over its seeds.", ""]


def finals_section(finals: list[dict[str, Any]], teacher: dict[str, Any]) -> list[str]:
    """The final-training table, then in prose only what the table does not say: the data and learning-rate
    policy (once, when every student shares them) and each student's failures or differences."""
    if not finals:
        return ["No final training yet (`kdsearch train RUN --front` or `--trials ...`).", ""]
    bases = [base for base in BASELINES if any(base in b["summary"]["arms"] for b in finals)]
    head = ["trial", "params (of teacher)", "MACs (of teacher)", "paired seeds", "epochs", "lr", "distilled test"]
    for base in bases:
        head += [f"{BASELINES[base]} test", f"gain vs {BASELINES[base].split(' (')[0]}, points [95% CI]"]
    head += ["distilled / teacher"]
    lines = ["### Final training", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b in finals:
        arms, gain, trial = b["summary"]["arms"], b["summary"]["gain"], b["trial"]
        kd = arms.get("kd")
        failed = b["summary"].get("failed", {})

        def cell(mode: str) -> str:  # an arm with no finished model: failed (the notes say why), or not trained yet
            return arm_cell(arms.get(mode)) or ("failed" if mode in failed else "none yet")

        row = [str(b["setup"]["trial"]), f"{trial['params']:,} ({fraction(trial['params'], teacher['params'])})",
               f"{trial['macs']:,} ({fraction(trial['macs'], teacher.get('macs', 0))})",
               seeds_cell(b), str(b["setup"]["epochs"]), lr_cell(arms), cell("kd")]
        for base in bases:
            row += [cell(base), gain_cell(gain.get(base), paired(b))]
        row += [pct(kd["retained"], 1) if kd else ""]
        lines.append("| " + " | ".join(row) + " |")
    images = {b["setup"]["train_images"] for b in finals}
    policies = {json.dumps({k: b["lr_policy"].get(k) for k in ("grid", "fixed")}, sort_keys=True) for b in finals}
    common = []
    if len(images) == 1:
        common.append(f"every student trained from scratch on {next(iter(images)):,} images")
    if len(policies) == 1:
        common.append(policy_text(json.loads(next(iter(policies)))))
    lines += ["", f"Test accuracy: mean ± sd over the seeds each arm finished, teacher {pct(teacher['test_accuracy'])}. "
              "Gain: the distilled minus the baseline test accuracy of each seed (same initialization and batches; "
              "the control also sees the distilled student's views), mean and 95% t-interval over the paired seeds "
              "(both arms finished), in points." + (f" {sentence('; '.join(common))}." if common else ""), ""]
    notes = []
    for b in finals:
        s, says = b["setup"], []
        if len(images) > 1:
            says.append(f"{s['train_images']:,} training images")
        if len(policies) > 1:
            says.append(policy_text(b["lr_policy"]))
        if given := distill_given(b):
            says.append(given)
        says += [f"{MODES[m]} failed at seed(s) {', '.join(map(str, f))}: {next(iter(f.values()))}"
                 for m, f in b["summary"].get("failed", {}).items()]
        if says:
            notes.append(f"- Trial {s['trial']}: {'; '.join(says)}.")
    return lines + notes + ([""] if notes else []) + fidelity_lines(finals)


def int8_section(run_dir: Path, finals: list[dict[str, Any]]) -> list[str]:
    """int8 accuracy and bytes of the final-trained students that were exported with --int8 (their final weights)."""
    rows = []
    for b in finals:
        path = Path(run_dir) / "export" / f"{b['setup']['trial']:05d}" / "export.json"
        try:
            info = json.loads(path.read_text()) if path.is_file() else {}
        except ValueError:
            continue
        q = info.get("int8")
        if q and info.get("weights") == "final" and info.get("trial") == b["setup"]["trial"]:
            rows.append((b["setup"]["trial"], info, q))
    if not rows:
        return []
    lines = ["### int8 students (exported with `kdsearch export --int8`)", "",
             "| trial | float bytes | int8 bytes | float test | int8 test | change, points | float val | int8 val "
             "| float ms | int8 ms |", "|---|---|---|---|---|---|---|---|---|---|"]
    for number, info, q in rows:
        f, i = q.get("float_test_accuracy"), q.get("int8_test_accuracy")
        change = "" if f is None or i is None else f"{100 * (i - f):+.2f}"
        lines.append(f"| {number} | {q['float_bytes']:,} | {q['int8_bytes']:,} | {pct(f)} | {pct(i)} | {change} | "
                     f"{pct(q.get('float_val_accuracy'))} | {pct(q.get('int8_val_accuracy'))} | "
                     f"{q['float_latency_ms']:.3f} | {q['int8_latency_ms']:.3f} |")
    return lines + ["", "The exported model of the best seed of each student's distilled arm (by validation "
                    "accuracy), run by ONNX Runtime on the CPU: int8 is static QDQ quantization, weights per channel, "
                    f"calibrated on {rows[0][2].get('calibration_images')} training images; latency at batch 1, "
                    f"{rows[0][2].get('latency_threads', 1)} thread(s).", ""]


def fidelity_lines(finals: list[dict[str, Any]]) -> list[str]:
    """How well the search's short training ranked the retrained students: rank correlations of their
    search validation accuracy with their final (distilled) test accuracy."""
    pairs = [(b["trial"]["search_val_accuracy"], b["summary"]["arms"]["kd"]["test_mean"]) for b in finals
             if "kd" in b["summary"]["arms"] and b["trial"].get("search_val_accuracy") is not None]
    if len(pairs) < FIDELITY_MIN:
        return [] if not pairs else [f"Search fidelity: {len(pairs)} retrained student(s) so far, too few to tell how "
                                     "well the search ranks them (a rank correlation over fewer than "
                                     f"{FIDELITY_MIN} students is mostly chance: with 3, a perfect one comes up "
                                     "once in 6 random orders).", ""]
    search, final = zip(*pairs)
    rho, tau = spearmanr(search, final).statistic, kendalltau(search, final).statistic
    return [f"Search fidelity: over the {len(pairs)} retrained students, the search's validation accuracy ranks "
            f"them against their final test accuracy with Spearman {rho:.2f} and Kendall {tau:.2f}.", ""]


def exclusions(gains: list[tuple[str, dict[str, Any] | None]]) -> tuple[list[str], list[str]]:
    """The trials whose gain's interval (over at least 2 seeds) lies above zero, and those below it."""
    tested = [(n, g) for n, g in gains if g and g["n"] >= 2]
    return [n for n, g in tested if g["low"] > 0], [n for n, g in tested if g["high"] < 0]


def aim_section(finals: list[dict[str, Any]], teacher: dict[str, Any],
                refs: dict[int, list[dict[str, Any]]] | None = None) -> list[str]:
    """The aim, checked against the numbers: a student at <= 1/10 of the params within 3 points, a gain that excludes 0
    (against the headline baseline; the other baseline is named where its interval excludes 0), and per size band
    the search's student at least as accurate as the best hand-written reference of at most its size."""
    small = [b for b in finals if "kd" in b["summary"]["arms"] and b["trial"]["params"] <= AIM_FRACTION * teacher["params"]]
    lines = ["### Against the aim", ""]
    if small:
        best = max(small, key=lambda b: b["summary"]["arms"]["kd"]["test_mean"])
        gap = 100 * (teacher["test_accuracy"] - best["summary"]["arms"]["kd"]["test_mean"])
        met = "met" if gap <= AIM_POINTS else "not met"
        lines.append(f"- A student with at most 1/{1 / AIM_FRACTION:.0f} of the teacher's params within "
                     f"{AIM_POINTS:g} points of its test accuracy: **{met}**. The best such student here, trial "
                     f"{best['setup']['trial']} ({fraction(best['trial']['params'], teacher['params'])} of the params), "
                     + (f"is {gap:.2f} points below the teacher." if gap >= 0 else
                        f"is {-gap:.2f} points above the teacher."))
    else:
        lines.append(f"- No student with at most 1/{1 / AIM_FRACTION:.0f} of the teacher's params was retrained.")
    gains = [(str(b["setup"]["trial"]), b["summary"]["gain"].get(headline(b["summary"]["gain"]) or "")) for b in finals]
    positive, negative = exclusions(gains)
    lines.append("- A distillation gain whose 95% interval excludes zero: "
                 + (f"**met** for trial(s) {', '.join(positive)}." if positive else "**not met**: ")
                 + ("" if positive else ("no interval excludes zero." if not negative else
                                         f"the intervals of trial(s) {', '.join(negative)} exclude zero below it "
                                         "(the teacher hurt).")))
    for base, name in BASELINES.items():  # the other baseline too, where its interval excludes zero
        above, below = exclusions([(str(b["setup"]["trial"]), b["summary"]["gain"].get(base)) for b in finals
                                   if headline(b["summary"]["gain"]) != base])
        said = ([f"above it for trial(s) {', '.join(above)}"] if above else []) + \
               ([f"below it for trial(s) {', '.join(below)} (the teacher hurt)"] if below else [])
        if said:
            lines.append(f"- Against the {name} instead, the interval excludes zero {' and '.join(said)}.")
    lines += reference_aim_lines(finals, refs or {}, teacher)
    tested = sum(1 for _, g in gains if g and g["n"] >= 2)
    if tested > 1:
        lines.append(f"- {tested} students were compared: at 95%, about {tested / 20:.2g} of {tested} intervals would "
                     "exclude zero by chance alone, so a lone exclusion among many is a lead to retest with more "
                     "seeds, not a finding.")
    return lines + [""]


def search_key(run: Run) -> str:
    """What identifies a search: its study name and every trial's number, state, values and parameters
    (a run folder that copied another's study, to retrain its students otherwise, has the same key)."""
    trials = [(t.number, t.state.name, t.values, sorted(t.params.items())) for t in run.study.trials]
    return json.dumps([run.study.study_name, trials], default=str)


def same_search_section(run: Run, shown_in: Path) -> list[str]:
    """In place of a front already in the document: where it is, so the page does not repeat it."""
    return ["### The search", "", f"The same search as `{shown_in}` above ({len(run.study.trials)} trials; this "
            "folder holds a copy of its study): its Pareto front, study file and search command are shown there. "
            "This folder trains some of its students otherwise (below).", ""]


def run_section(run: Run, figures: Path, out: Path, same_study_twice: bool = False,
                search_shown_in: Path | None = None) -> list[str]:
    """One run's part of the document (`run` opened from its folder), titled by its study name, and its run
    folder's name too when another run of the same study is in the document (say, the same search retrained
    otherwise); a search already shown for an earlier folder (`search_shown_in`) is referred to, not repeated."""
    run_dir = run.run_dir
    study = run.study
    title = f"{study.study_name} ({run_dir.name})" if same_study_twice else study.study_name
    stem = f"{study.study_name}-{run_dir.name}" if same_study_twice else study.study_name
    teacher, data = study.user_attrs.get("teacher"), study.user_attrs.get("data", {})
    if not teacher:
        raise KDSearchError(f"{run_dir}: the study records no teacher (was the run ever started?)")
    finals = load_finals(run_dir)
    lines = [f"## {title}", "", f"Run folder `{run_dir}`.", ""]
    lines += teacher_section(teacher, data, (run.config.get("teacher") or {}).get("weights"))
    lines += (same_search_section(run, search_shown_in) if search_shown_in else
              front_section(run, teacher, finals))
    refs = load_references(run_dir)
    lines += finals_section(finals, teacher)
    lines += inherited_section(load_finals(run_dir, "inherited"), finals, teacher)
    lines += references_section(finals, refs, teacher)
    lines += int8_section(run_dir, finals)
    if finals:
        fig = figure(finals, teacher, f"{title}: test accuracy vs params")
        written, message = export_images({f"{stem}-accuracy-vs-params": fig}, figures)
        if written:
            rel = Path(*written[0].resolve().parts[len(out.parent.resolve().parts):]) \
                if written[0].resolve().is_relative_to(out.parent.resolve()) else written[0].resolve()
            lines += [f"![test accuracy vs params]({rel.as_posix()})", ""]
        else:
            lines += [f"*(No figure: {message}.)*", ""]
        lines += aim_section(finals, teacher, refs)
    notes = notes_file(run_dir)
    if notes.is_file():
        lines += ["### Notes", "", notes.read_text().rstrip(), ""]
    return lines + provenance_section(run_dir, study, finals, search=search_shown_in is None)


def write_results(run_dirs: list[Path], out: Path, figures: Path | None = None, command: str = "",
                  console: Console | None = None, preface: Path | None = None) -> Path:
    """Write the Markdown document for `run_dirs` to `out` (figures as PNG under `figures`), after an
    optional hand-written `preface` (the question, what is not run here: text, no numbers)."""
    console = console or Console()
    if not run_dirs:
        raise KDSearchError("give at least one run folder")
    out = Path(out)
    figures = Path(figures) if figures else out.with_name(out.stem + "-figures")
    lines = ["# Results", "",
             f"Generated by `{command}` from the run folders below: every number is read from their files "
             "(the study, `final/*/results.json`); rerun the command to regenerate. "
             "Accuracy is top-1; params and MACs are exact counts; latency is a median on the CPU (each run's front says "
             "through which runtime).", ""]
    if preface is not None:
        if not Path(preface).is_file():
            raise KDSearchError(f"--preface: {preface} not found")
        lines += [Path(preface).read_text().rstrip(), ""]
    run_dirs = list(dict.fromkeys(Path(d) for d in run_dirs))  # a folder named twice is one section
    runs = [open_run(d) for d in run_dirs]
    names = [run.study.study_name for run in runs]
    first: dict[str, Path] = {}  # search key -> the first folder in the document with that search
    for run_dir, run, name in zip(run_dirs, runs, names):
        shown_in = first.setdefault(search_key(run), run_dir)
        lines += run_section(run, figures, out, same_study_twice=names.count(name) > 1,
                             search_shown_in=None if shown_in == run_dir else shown_in)
    write_text_atomic(out, "\n".join(lines).rstrip() + "\n")
    console.print(f"results: {out}", highlight=False)
    return out
