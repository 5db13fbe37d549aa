"""What final training records and concludes: the arms, one record per trained model, how each arm's
learning rate is chosen, and the paired summary (mean per arm, the gain with its interval).

Kept apart from the training itself (kdsearch.final.train) so that reports read results
without importing the machinery that trains them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from ..analysis.stats import excludes_zero, mean_sd, paired_differences, t_interval
from ..runs.files import write_text_atomic

MODES = {
    "kd": "distilled (trial's T, alpha)",
    "ce": "control: no teacher, the teacher's cached views",
    "ce-all": "ordinary training: no teacher, fresh views every epoch",
}
DISTILL_ONLY = ("temperature", "alpha")  # setup keys only the distilled arm depends on (the others train at alpha 0)
HEADLINE = ("ce-all", "ce")  # the baseline a gain is reported against: ordinary training where it was run
DEFAULT_GRID = (0.5, 1.0, 2.0)
PROBE_SHARE = 5  # by default each arm's lr is chosen on probes of 1/5 of the final budget (LrPolicy.for_budget)


@dataclass
class FinalRun:
    mode: str  # a key of MODES
    seed: int
    lr: float
    curve: list[float]  # validation accuracy after each epoch
    test_accuracy: float
    seconds: float
    error: str | None = None  # why the model failed (a diverging loss): no accuracy, the other arms go on
    probe: int | None = None  # epochs of a short lr probe (LrPolicy.probe_epochs): chooses an lr, not a result
    resumed_at: int = 0  # epochs it continued from (an interrupted training's checkpoint); seconds count the rest

    @property
    def val_accuracy(self) -> float:
        return self.curve[-1] if self.curve else math.nan


@dataclass
class LrPolicy:
    """How each arm's learning rate is set: chosen per arm from trial lr x `grid`, or `fixed` for both.

    With `probe_epochs` E the candidates train E epochs at the first seed (short probes: their test
    accuracy is not read) and the first seed then trains again at the chosen lr for the full budget;
    without, the candidates train the full budget and the chosen one is the first seed's result. At
    long budgets the probes cost a fraction of a full grid (3 x 10 epochs against 2 more 50-epoch models)."""

    grid: tuple[float, ...] = DEFAULT_GRID
    fixed: float | None = None
    probe_epochs: int | None = None

    def candidates(self, trial_lr: float) -> list[float]:
        if self.fixed is not None:
            return [self.fixed]
        return sorted({float(f"{trial_lr * m:.6g}") for m in self.grid})

    def describe(self, trial_lr: float) -> str:
        if self.fixed is not None:
            return f"one fixed learning rate for every arm: {self.fixed:.4g}"
        if len(self.candidates(trial_lr)) == 1:
            return f"the trial's learning rate for every arm: {trial_lr:.4g}"
        grid = ", ".join(f"{lr:.4g}" for lr in self.candidates(trial_lr))
        probes = f", after {self.probe_epochs}-epoch probes" if self.probe_epochs else ""
        return (f"each arm's learning rate chosen on validation accuracy (first seed{probes}) from the same grid: "
                f"{grid} (the trial's {trial_lr:.4g} x {', '.join(f'{m:g}' for m in self.grid)})")

    def probing(self, trial_lr: float) -> int | None:
        """The candidates' epochs when they are short probes, else None (they are full-budget models)."""
        return self.probe_epochs if len(self.candidates(trial_lr)) > 1 else None

    def for_budget(self, epochs: int) -> LrPolicy:
        """The policy for `epochs`: where no probe length was given and the budget allows one (at least
        PROBE_SHARE epochs), probes of 1/PROBE_SHARE of it. Choosing on full-budget candidates of the first
        seed would make that seed's result the best of several tries (a winner's curse in the interval);
        a probe is a separate, shorter training, so no compared model is itself selected. probe_epochs 0
        asks for full-budget candidates regardless."""
        if self.probe_epochs is None and self.fixed is None and len(self.grid) > 1 and epochs >= PROBE_SHARE:
            return dataclasses.replace(self, probe_epochs=epochs // PROBE_SHARE)
        if self.probe_epochs == 0:
            return dataclasses.replace(self, probe_epochs=None)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"grid": list(self.grid), "fixed": self.fixed} | ({"probe_epochs": self.probe_epochs}
                                                               if self.probe_epochs else {})


def load_results(path: Path, setup: dict[str, Any]) -> list[FinalRun]:
    """Runs already finished with the same setup (anything else is retrained)."""
    if not path.is_file():
        return []
    try:
        stored = json.loads(path.read_text())
        if stored.get("setup") != setup:
            return []
        return [FinalRun(**r) for r in stored["runs"]]
    except (ValueError, TypeError, KeyError):  # an old or damaged file: retrain rather than fail
        return []


def teacher_free_runs(path: Path, setup: dict[str, Any]) -> list[FinalRun] | None:
    """The stored runs of the arms without a teacher, when the stored setup differs from `setup` only in
    the distilled arm's settings (DISTILL_ONLY: T and alpha, which a no-teacher arm trains without);
    None when anything else differs (every arm retrains)."""
    try:
        before = json.loads(path.read_text())["setup"]
        if {**before, **{k: setup.get(k) for k in DISTILL_ONLY}} != setup:
            return None
    except (ValueError, TypeError, KeyError):
        return None
    return [r for r in load_results(path, before) if r.mode != "kd"]


def find(runs: list[FinalRun], mode: str, seed: int, lr: float, probe: int | None = None) -> FinalRun | None:
    """The model of that arm, seed and lr: a full-budget one, or with `probe` the lr probe of that many epochs."""
    return next((r for r in runs if r.mode == mode and r.seed == seed and r.probe == probe
                 and math.isclose(r.lr, lr, rel_tol=1e-9)), None)


def choose_lr(runs: list[FinalRun], mode: str, seed: int, candidates: list[float], trial_lr: float,
              probe: int | None = None) -> float | None:
    """The candidate with the best final validation accuracy at `seed` (ties: nearest the trial's lr),
    among the full-budget models or, with `probe`, the probes; None while a candidate is still untrained."""
    done = [find(runs, mode, seed, lr, probe) for lr in candidates]
    if any(r is None for r in done):
        return None
    trained = [r for r in done if r.error is None]
    if not trained:
        return None  # every candidate diverged: the arm has no result
    best = max(trained, key=lambda r: (r.val_accuracy, -abs(math.log(r.lr / trial_lr))))
    return best.lr


def summarize(runs: list[FinalRun], modes: list[str], seeds: list[int], policy: LrPolicy, trial_lr: float,
              teacher_test: float, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """Per arm: chosen lr, test accuracy per seed, mean and sd; the paired gain of kd over each baseline.
    `labels`: an arm's name where it is not MODES' (a distilled arm at T and alpha given to `train`)."""
    out: dict[str, Any] = {"arms": {}, "gain": {}}
    candidates = policy.candidates(trial_lr)
    per_seed: dict[str, dict[int, float]] = {}
    for mode in modes:
        lr = (candidates[0] if len(candidates) == 1 else
              choose_lr(runs, mode, seeds[0], candidates, trial_lr, policy.probing(trial_lr)))
        found = {s: r for s in seeds if lr is not None and (r := find(runs, mode, s, lr)) is not None}
        failed = {s: r.error for s, r in found.items() if r.error is not None}
        chosen = {s: r for s, r in found.items() if r.error is None}
        if failed:
            out.setdefault("failed", {})[mode] = failed
        if not chosen:
            continue
        per_seed[mode] = {s: r.test_accuracy for s, r in chosen.items()}
        mean, sd = mean_sd(list(per_seed[mode].values()))
        val_mean, _ = mean_sd([r.val_accuracy for r in chosen.values()])
        out["arms"][mode] = {"label": (labels or {}).get(mode, MODES[mode]), "lr": lr, "seeds": sorted(chosen),
                             "test": per_seed[mode],
                             "test_mean": mean, "test_sd": sd, "val_mean": val_mean,
                             "retained": mean / teacher_test if teacher_test else math.nan}
    for base in ("ce", "ce-all"):
        if "kd" in per_seed and base in per_seed:
            diffs = paired_differences(per_seed["kd"], per_seed[base])
            if diffs:
                out["gain"][base] = {"differences": diffs, **t_interval(diffs).to_dict()}
    return out


def headline(gain: dict[str, Any]) -> str | None:
    """The baseline that the gain of a trial's results is reported against (HEADLINE), None without any."""
    return next((base for base in HEADLINE if base in gain), None)


def gain_sentence(gain: dict[str, Any], against: str | None = None) -> str:
    """The paired gain in points over `against` (default: the headline baseline), its 95% interval, and
    plainly whether it excludes zero."""
    g = gain.get(against or headline(gain) or "")
    if not g:
        return "no paired runs yet"
    if g["n"] < 2:
        return f"{100 * g['mean']:+.2f} points from one seed: no interval (train more seeds)"
    where = "excludes zero" if excludes_zero(g["low"], g["high"]) else "spans zero: no effect shown"
    return (f"{100 * g['mean']:+.2f} points, 95% CI [{100 * g['low']:+.2f}, {100 * g['high']:+.2f}] over "
            f"{g['n']} seeds; the interval {where}")


def save_results(path: Path, body: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(body, indent=2) + "\n")


def final_table(label: str, results: dict[str, Any], every_view_cached: bool = False) -> Table:
    """Per arm: its lr, seeds, mean val and test accuracy (sd over seeds); the paired gain below. `label`
    names the student ("trial 26", "reference resnet8 for trial 26"). `every_view_cached`: the teacher's cache
    holds every view of each image, which makes the control ordinary training (said under the table)."""
    teacher, summary = results["teacher"], results["summary"]
    table = Table(title=f"{label}: final training (test read once per model)")
    for col in ("student", "lr", "seeds", "val", "test", "test sd", "of teacher"):
        table.add_column(col, justify="left" if col == "student" else "right")
    for arm in summary["arms"].values():
        sd = f"{arm['test_sd']:.2%}" if not math.isnan(arm["test_sd"]) else ""
        table.add_row(arm["label"], f"{arm['lr']:.3g}", str(len(arm["seeds"])), f"{arm['val_mean']:.2%}",
                      f"{arm['test_mean']:.2%}", sd, f"{arm['retained']:.1%}")
    table.add_row(f"teacher {teacher['name']}", "", "", f"{teacher['val_accuracy']:.2%}",
                  f"{teacher['test_accuracy']:.2%}", "", "")
    lines = [f"distillation adds {gain_sentence(summary['gain'], base)} (vs {MODES[base]})" for base in summary["gain"]]
    lines += [f"{MODES[mode]} failed at seed(s) {', '.join(map(str, failed))}: {next(iter(failed.values()))}"
              for mode, failed in summary.get("failed", {}).items()]
    same = same_views_note(summary, results.get("setup", {}).get("views")) if every_view_cached else None
    table.caption = "\n".join(lines + ([same] if same else []) + [results["lr_policy"]["text"]])
    return table


def same_views_note(summary: dict[str, Any], views: int | None) -> str | None:
    """Why the control and ordinary training print as identical rows where the teacher's cache holds every view
    of each image: the control then draws each view exactly as ordinary training does (same generator, same
    draws: tests/test_logits.py), so the two arms train the same model. None unless both arms are there."""
    arms = summary["arms"]
    if "ce" not in arms or "ce-all" not in arms:
        return None
    held = f"all {views} views" if views else "every view"
    return (f"the control and ordinary training are the same model here: the teacher's cache holds {held} of each "
            "image, so the control draws its views exactly as ordinary training does (they differ only where the "
            "cache holds fewer views than the data has: --views)")
