"""Reading a study: the Pareto table, plotly figures, and one self-contained HTML report.

The report is one HTML file with plotly.js embedded once, so it opens offline and can be mailed.
Test accuracy of the Pareto members is measured here, once, and stored in the run folder
(RUN/test_accuracy.json): the search never sees the test split, and a second report does not
evaluate again. It cannot live on the trials themselves: Optuna's RDB storage refuses to update
a finished trial (UpdateFinishedTrialError), user attributes included.
"""

from __future__ import annotations

import html
import importlib.util
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import plotly.colors
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.table import Table

from .errors import KDSearchError
from .files import write_text_atomic
from .layout import RUN_FILE, default_storage, run_file, test_file, trial_dir
from .pruning import rejected

MIN_IMPORTANCE_TRIALS = 5  # completed trials needed before parameter importances mean anything
COST_LABELS = {"params": "params", "macs": "MACs", "latency_ms": "latency (ms)", "bytes": "bytes (ONNX file)"}
TEST_SENTENCE = ("Test accuracy is measured once, when the first report is made, on the held-out test split. "
                 "The search never used it: it chose and pruned students on validation accuracy only.")
FADED = "rgba(120, 120, 120, 0.45)"
PARETO_COLOR = "#d62728"
TEACHER_COLOR = "#222222"


def feasible(trial: FrozenTrial) -> bool:
    """Within every budget (constraints set through trial.set_constraint are <= 0)."""
    return all(v <= 0 for v in trial.constraints.values())


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The non-dominated, feasible complete trials (Optuna's own front), most accurate first."""
    front = [t for t in study.best_trials if feasible(t)]
    return sorted(front, key=lambda t: (-t.values[0], t.user_attrs.get("params", 0)))


def _row(name: str, acc: float, attrs: dict[str, Any], t: str = "", alpha: str = "", arch: str = "",
         test: str | None = None) -> list[str]:
    cells = [name, f"{acc:.2%}"] + ([test] if test is not None else [])
    return cells + [f"{attrs.get('params', 0):,}", f"{attrs.get('macs', 0):,}",
                    f"{attrs.get('latency_ms', float('nan')):.3f}", t, alpha, arch]


def pareto_table(study: optuna.Study, test_accuracy: dict[int, float] | None = None) -> Table:
    """Pareto trials (accuracy, params, MACs, latency, T, alpha, architecture), teacher first.

    With `test_accuracy` (trial number -> accuracy) a test column sits beside validation.
    """
    table = Table(title=f"Pareto front of {study.study_name} (validation accuracy)")
    cols = ["trial", "val acc"] + (["test acc"] if test_accuracy is not None else [])
    for col in cols + ["params", "MACs", "latency ms", "T", "alpha", "architecture"]:
        table.add_column(col, justify="left" if col in ("trial", "architecture") else "right")
    teacher = study.user_attrs.get("teacher")
    if teacher:
        test = f"{teacher['test_accuracy']:.2%}" if test_accuracy is not None else None
        table.add_row(*_row(f"teacher {teacher['name']}", teacher["val_accuracy"], teacher, test=test,
                            arch="" if test else f"test acc {teacher['test_accuracy']:.2%}"), style="bold")
    for t in pareto_trials(study):
        a = t.user_attrs
        test = None if test_accuracy is None else _pct(test_accuracy.get(t.number))
        table.add_row(*_row(str(t.number), t.values[0], a, f"{a.get('temperature', 0):.2f}",
                            f"{a.get('alpha', 0):.2f}", a.get("arch", ""), test=test))
    return table


# ---------------------------------------------------------------------------------------------
# Opening a run


@dataclass
class Run:
    """A study and, when known, its run folder (weights, stored test accuracies, the report)."""

    study: optuna.Study
    run_dir: Path | None
    config: dict[str, Any]


def open_run(run_dir: Path | None = None, storage: str | None = None, study_name: str | None = None) -> Run:
    """A run folder (its run.json), or a storage URL and study name (the folder then comes from the config)."""
    from .search import make_storage

    info: dict[str, Any] = {}
    if run_dir is not None:
        path = run_file(run_dir)
        if not path.is_file():
            raise KDSearchError(f"{run_dir} is not a kdsearch run folder (no {RUN_FILE})")
        try:
            info = json.loads(path.read_text())
        except ValueError as exc:
            raise KDSearchError(f"{path} is damaged ({exc}); `kdsearch run` with the same settings rewrites it") from None
    elif storage is None:
        raise KDSearchError("give a run folder, or --storage URL and --study-name NAME")
    if storage is None and run_dir is not None and not (info.get("config") or {}).get("storage"):
        # the default SQLite file of this folder, wherever the folder now is (copied, cloned, moved)
        storage = default_storage(run_dir)
    storage = storage or info["storage"]
    study_name = study_name or info.get("study_name")
    if not study_name:
        raise KDSearchError("--storage needs --study-name")
    try:
        study = optuna.load_study(study_name=study_name, storage=make_storage(storage))
    except KeyError:
        raise KDSearchError(f"no study named {study_name!r} in {storage}") from None
    config = info.get("config") or study.user_attrs.get("config") or {}
    if run_dir is None and config:
        guess = Path(config["run_dir"]) if config.get("run_dir") else Path("runs") / config.get("name", study_name)
        run_dir = guess if run_file(guess).is_file() else None
    return Run(study=study, run_dir=Path(run_dir) if run_dir is not None else None, config=config)


# ---------------------------------------------------------------------------------------------
# Trials as points


@dataclass
class Point:
    """One trial as the figures and tables see it."""

    number: int
    state: str  # complete, pruned, rejected (over budget, never trained), failed, running
    accuracy: float | None  # final validation accuracy, or the last one before pruning
    attrs: dict[str, Any]
    feasible: bool
    pareto: bool = False
    test_accuracy: float | None = None
    curve: list[float] = field(default_factory=list)

    def cost(self, name: str) -> float | None:
        value = self.attrs.get(name)
        return float(value) if value is not None else None


def trial_state(t: FrozenTrial) -> str:
    if t.state == TrialState.COMPLETE:
        return "complete"
    if t.state == TrialState.PRUNED:
        return "rejected" if rejected(t) else "pruned"
    return "failed" if t.state == TrialState.FAIL else "running"


def trial_points(study: optuna.Study, test_accuracy: dict[int, float] | None = None) -> list[Point]:
    """Every trial in number order, Pareto members marked."""
    front = {t.number for t in pareto_trials(study)}
    out = []
    for t in study.get_trials(deepcopy=False):
        curve = list(t.user_attrs.get("curve", []))
        state = trial_state(t)
        acc = t.values[0] if state == "complete" and t.values else (curve[-1] if curve else None)
        out.append(Point(number=t.number, state=state, accuracy=acc, attrs=t.user_attrs, feasible=feasible(t),
                         pareto=t.number in front, test_accuracy=(test_accuracy or {}).get(t.number), curve=curve))
    return out


def cost_names(study: optuna.Study) -> list[str]:
    """The cost objectives' attribute names (params, latency_ms or macs), in study order."""
    names = study.metric_names or ["val_accuracy", "params", "latency_ms"][: len(study.directions)]
    return list(names[1:])


def _pct(x: float | None) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2%}"


def hover(p: Point) -> str:
    """The hover text of a trial: architecture, T, alpha, lr and metrics."""
    a = p.attrs
    acc = f"val acc {_pct(p.accuracy)}"
    if p.state == "pruned":
        acc += f" (stopped after epoch {a.get('pruned_at', len(p.curve))})"
    if p.test_accuracy is not None:
        acc += f", test acc {_pct(p.test_accuracy)}"
    lines = [f"<b>trial {p.number}</b> ({p.state}" + (", Pareto" if p.pareto else "") + ")",
             html.escape(str(a.get("arch", ""))),
             f"T {a.get('temperature', math.nan):.2f}, alpha {a.get('alpha', math.nan):.2f}, lr {a.get('lr', math.nan):.2g}",
             acc,
             f"{a.get('params', 0):,} params, {a.get('macs', 0):,} MACs, {a.get('latency_ms', math.nan):.3f} ms"]
    return "<br>".join(lines)


# ---------------------------------------------------------------------------------------------
# Figures


def _scatter(points: Sequence[Point], cost: str, **kwargs: Any) -> go.Scatter:
    return go.Scatter(x=[p.cost(cost) for p in points], y=[p.accuracy for p in points],
                      customdata=[p.number for p in points], text=[hover(p) for p in points],
                      hovertemplate="%{text}<extra></extra>", mode="markers", **kwargs)


def front_2d(points: Sequence[Point], cost: str) -> list[Point]:
    """Complete, feasible trials that no other one beats on both accuracy and `cost`: the step line."""
    cands = sorted((p for p in points if p.state == "complete" and p.feasible and p.cost(cost) is not None),
                   key=lambda p: (p.cost(cost), -p.accuracy))
    front, best = [], -math.inf
    for p in cands:
        if p.accuracy > best:
            front.append(p)
            best = p.accuracy
    return front


def _teacher_line(fig: go.Figure, teacher: dict[str, Any] | None) -> None:
    if teacher:
        fig.add_hline(y=teacher["val_accuracy"], line=dict(color=TEACHER_COLOR, dash="dot", width=1),
                      annotation_text=f"teacher {teacher['name']} val acc {teacher['val_accuracy']:.2%}",
                      annotation_position="bottom left")


def front_figure(points: Sequence[Point], teacher: dict[str, Any] | None, cost: str) -> go.Figure:
    """Validation accuracy against one cost: Pareto members highlighted, the rest faded, teacher marked."""
    label = COST_LABELS.get(cost, cost)
    fig = go.Figure()
    pruned = [p for p in points if p.state == "pruned" and p.accuracy is not None and p.cost(cost) is not None]
    others = [p for p in points if p.state == "complete" and not p.pareto and p.cost(cost) is not None]
    members = [p for p in points if p.pareto]
    fig.add_trace(_scatter(pruned, cost, name="pruned (val acc when stopped)",
                           marker=dict(symbol="x", size=7, color="rgba(150, 150, 150, 0.5)")))
    fig.add_trace(_scatter(others, cost, name="dominated" + ("" if all(p.feasible for p in others) else " / over budget"),
                           marker=dict(size=8, color=FADED)))
    step = front_2d(points, cost)
    fig.add_trace(go.Scatter(x=[p.cost(cost) for p in step], y=[p.accuracy for p in step], mode="lines",
                             line=dict(shape="hv", color=PARETO_COLOR, width=1.5), hoverinfo="skip",
                             name=f"best val acc at ≤ {label}"))
    fig.add_trace(_scatter(members, cost, name="Pareto front (all objectives)",
                           marker=dict(size=11, color=PARETO_COLOR, line=dict(color="white", width=1))))
    if teacher:
        fig.add_trace(go.Scatter(x=[teacher.get(cost)], y=[teacher["val_accuracy"]], mode="markers",
                                 name=f"teacher {teacher['name']}", customdata=["teacher"],
                                 marker=dict(symbol="star", size=16, color=TEACHER_COLOR),
                                 hovertemplate=(f"<b>teacher {html.escape(teacher['name'])}</b><br>val acc "
                                                f"{_pct(teacher['val_accuracy'])}, test acc {_pct(teacher.get('test_accuracy'))}"
                                                f"<br>{teacher.get('params', 0):,} params, {teacher.get('macs', 0):,} MACs, "
                                                f"{teacher.get('latency_ms', float('nan')):.3f} ms<extra></extra>")))
    _teacher_line(fig, teacher)
    xs = [x for t in fig.data for x in t.x if x]
    log = cost == "params" or (bool(xs) and max(xs) / min(xs) > 30)  # log ticks within one decade mislead
    xaxis = dict(type="log", title=f"{label} (log scale)", tickvals=log_ticks(xs),
                 tickformat="~g" if cost == "latency_ms" else "~s") if log else dict(title=label)
    fig.update_layout(title=f"Validation accuracy vs {label}", xaxis=xaxis,
                      yaxis=dict(title="validation accuracy", tickformat=".0%"), height=480)
    return fig


def log_ticks(values: Sequence[float]) -> list[float]:
    """1-2-5 ticks over the values' range: plotly's own log ticks label every digit of a short range."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    return [m * 10.0**k for k in decades for m in (1, 2, 5) if lo / 2.5 <= m * 10.0**k <= hi * 2.5]


def hypervolume_2d(points: Sequence[tuple[float, float]], ref_cost: float) -> float:
    """Share of the box [0, ref_cost] x [0, 1] that (cost, accuracy) points dominate: 1.0 = a free, perfect model."""
    pts = sorted((c, a) for c, a in points if c < ref_cost)
    area, best = 0.0, 0.0
    for i, (c, a) in enumerate(pts):
        best = max(best, a)
        area += ((pts[i + 1][0] if i + 1 < len(pts) else ref_cost) - c) * best
    return area / ref_cost


LOW_PARAMS = 100.0  # log-params hypervolume: a student this small (or smaller) counts as free


def hypervolume_log(points: Sequence[tuple[float, float]], ref_params: float, low_params: float = LOW_PARAMS) -> float:
    """Hypervolume of (params, accuracy) points on log10 params, normalized to [0, 1]: log10 params
    mapped from [log10 low_params, log10 ref_params] to [0, 1] (clipped), reference point (1, 0).

    On linear params a front barely moves once one good small student exists (halving 2,000
    params to 1,000 is invisible next to a 460,000-param teacher); on log params each halving
    of a student's size counts the same, which is how a front of small students is judged.
    """
    lo, hi = math.log10(low_params), math.log10(max(ref_params, low_params * 10))

    def x(p: float) -> float:
        return min(max((math.log10(max(p, 1e-9)) - lo) / (hi - lo), 0.0), 1.0)

    return hypervolume_2d([(x(c), a) for c, a in points], 1.0)


def hypervolume_figure(points: Sequence[Point], teacher: dict[str, Any] | None) -> go.Figure:
    """Hypervolume of the accuracy-vs-log-params front after each trial; the reference is the teacher's size."""
    ref = float(teacher["params"]) if teacher and teacher.get("params") else max(
        (p.cost("params") or 0 for p in points), default=1.0) or 1.0
    xs, ys, seen = [], [], []
    for p in points:
        if p.state in ("running",):
            continue
        if p.state == "complete" and p.feasible and p.cost("params") is not None:
            seen.append((p.cost("params"), p.accuracy))
        xs.append(p.number)
        ys.append(hypervolume_log(seen, ref))
    who = f"the teacher's {int(ref):,}" if teacher else f"the largest trial's {int(ref):,}"
    fig = go.Figure(go.Scatter(x=xs, y=ys, mode="lines+markers", line=dict(shape="hv"), name="hypervolume",
                               hovertemplate="after trial %{x}: %{y:.4f}<extra></extra>"))
    fig.update_layout(title=("Hypervolume of the accuracy vs log-params front over trials<br><sup>normalized: "
                             f"log10 params from {int(LOW_PARAMS)} (counted as free) to {who}; reference point: "
                             "that size at accuracy 0; 1.0 = a 100-parameter model at 100%</sup>"),
                      xaxis_title="trial", yaxis_title="hypervolume (normalized)", height=420, showlegend=False)
    return fig


PALETTE = plotly.colors.qualitative.D3
CURVE_STYLES = {  # group -> (legend name, line style)
    "Pareto": ("", dict(width=2)),
    "complete": ("dominated", dict(width=1, color=FADED)),
    "pruned": ("pruned (x: where it stopped)", dict(width=1, color="rgba(150, 150, 150, 0.5)", dash="dot")),
    "running": ("running", dict(width=1.5, color="#1f77b4", dash="dash")),
}


def curves_figure(points: Sequence[Point], teacher: dict[str, Any] | None) -> go.Figure:
    """Validation accuracy per epoch of every trial; a pruned trial ends in an x where it stopped."""
    fig = go.Figure()
    shown: set[str] = set()
    colors = iter(PALETTE * (1 + len(points) // len(PALETTE)))  # one distinct colour per Pareto member
    for p in (p for p in points if p.curve):
        group = "Pareto" if p.pareto else (p.state if p.state in ("pruned", "running") else "complete")
        name, line = CURVE_STYLES[group]
        name, line = (name, line) if name else (f"trial {p.number}", dict(line, color=next(colors)))
        n = len(p.curve)
        end_symbol, end_size = ("x", 9) if p.state == "pruned" else ("circle", 7 if p.pareto else 0)
        fig.add_trace(go.Scatter(x=list(range(1, n + 1)), y=p.curve, mode="lines+markers", name=name,
                                 legendgroup=name, showlegend=name not in shown, line=line,
                                 marker=dict(symbol=["circle"] * (n - 1) + [end_symbol], size=[0] * (n - 1) + [end_size]),
                                 customdata=[p.number] * n, text=[hover(p)] * n,
                                 hovertemplate="epoch %{x}: val acc %{y:.2%}<br>%{text}<extra></extra>"))
        shown.add(name)
    _teacher_line(fig, teacher)
    fig.update_layout(title="Learning curves: validation accuracy per epoch", xaxis=dict(title="epoch", dtick=1),
                      yaxis=dict(title="validation accuracy", tickformat=".0%"), height=480)
    return fig


TRAIN_PARAMS = ("temperature", "alpha", "lr")  # cannot change params, MACs or latency: left out for those


def importance_figure(study: optuna.Study) -> tuple[go.Figure | None, str]:
    """fANOVA importance of each searched parameter for each objective, or None and why not."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        return None, (f"Parameter importance skipped: it needs at least {MIN_IMPORTANCE_TRIALS} completed trials "
                      f"(this study has {len(complete)}).")
    names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
    fig = go.Figure()
    order: list[str] = []
    for i, name in enumerate(names):
        params = None if i == 0 else [k for k in order if k not in TRAIN_PARAMS]
        try:
            imp = {} if params == [] else optuna.importance.get_param_importances(
                study, target=lambda t, i=i: t.values[i], params=params,
                evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
        except (RuntimeError, ValueError) as exc:
            return None, f"Parameter importance skipped: {str(exc).splitlines()[0]}"
        order = order or list(imp)[::-1]  # the accuracy ranking, most important on top
        fig.add_trace(go.Bar(y=order, x=[float(imp.get(k, 0.0)) for k in order], orientation="h", name=name,
                             hovertemplate=f"{name}: %{{y}} %{{x:.3f}}<extra></extra>"))
    fig.update_layout(title=("Hyperparameter importance per objective<br><sup>fANOVA over the "
                             f"{len(complete)} completed trials; T, alpha and lr only for accuracy (they cannot "
                             "change a student's size or speed); with few trials, small values are noise</sup>"),
                      barmode="group", xaxis_title="importance (sums to 1 per objective)", legend_traceorder="reversed",
                      height=max(380, 100 + 14 * len(order) * len(names)))
    return fig, ""


def report_figures(study: optuna.Study, points: Sequence[Point], importance: bool = True) -> tuple[dict[str, go.Figure], list[str]]:
    """Every figure of the report by id, and notes on figures that were skipped."""
    teacher = study.user_attrs.get("teacher")
    figs = {f"accuracy-vs-{c.replace('_ms', '')}": front_figure(points, teacher, c) for c in cost_names(study)}
    figs["hypervolume"] = hypervolume_figure(points, teacher)
    figs["learning-curves"] = curves_figure(points, teacher)
    notes = []
    if importance:
        fig, note = importance_figure(study)
        if fig is not None:
            figs["importance"] = fig
        else:
            notes.append(note)
    for fig in figs.values():
        fig.update_layout(template="plotly_white", margin=dict(l=70, r=30, t=80, b=60),
                          legend=dict(bgcolor="rgba(255,255,255,0.7)"))
    return figs, notes


# ---------------------------------------------------------------------------------------------
# Test accuracy of the Pareto members (measured once, stored in the run folder)


def load_test_accuracies(run_dir: Path | None) -> dict[int, float]:
    path = test_file(run_dir) if run_dir else None
    if not path or not path.is_file():
        return {}
    return {int(k): float(v) for k, v in json.loads(path.read_text()).items()}


def save_test_accuracies(run_dir: Path, values: dict[int, float]) -> None:
    """Atomically, like every file of a run folder."""
    write_text_atomic(test_file(run_dir), json.dumps({str(k): v for k, v in sorted(values.items())}, indent=2) + "\n")


def evaluate_students(run_dir: Path, config: dict[str, Any], numbers: Sequence[int]) -> dict[int, float]:
    """Test accuracy of the saved students `numbers` (weights in the run folder); loads the data once."""
    from safetensors.torch import load_file

    from .config import DataConfig
    from .data import load_data
    from .distill import accuracy, resolve_device
    from .students import StudentSpec, build

    data = load_data(DataConfig(**config["data"]), seed=config.get("seed", 0))
    device = resolve_device("auto")
    x, y = data.test.x.to(device), data.test.y.to(device)
    out = {}
    for n in numbers:
        folder = trial_dir(run_dir, n)
        model = build(StudentSpec.from_json((folder / "spec.json").read_text()))
        model.load_state_dict(load_file(str(folder / "student.safetensors")))
        out[n] = accuracy(model.to(device), x, y)
    return out


def pareto_test_accuracy(run: Run, numbers: Sequence[int], evaluate: bool = True,
                         say: Callable[[str], object] = print) -> tuple[dict[int, float], str]:
    """Stored test accuracies, after evaluating (once) those of `numbers` not stored yet; and a note."""
    stored = load_test_accuracies(run.run_dir)
    if not evaluate:
        return stored, ""
    if run.run_dir is None:
        return stored, "Test accuracy skipped: the run folder (with the students' weights) was not found."
    missing = [n for n in numbers if n not in stored]
    no_weights = [n for n in missing if not (trial_dir(run.run_dir, n) / "student.safetensors").is_file()]
    todo = [n for n in missing if n not in no_weights]
    note = f"No saved weights for trial(s) {', '.join(map(str, no_weights))}: no test accuracy." if no_weights else ""
    if todo:
        if not run.config.get("data"):
            return stored, "Test accuracy skipped: the run's data config is unknown."
        say(f"measuring test accuracy of {len(todo)} Pareto student(s) (once: stored in {test_file(run.run_dir)})")
        try:
            stored.update(evaluate_students(run.run_dir, run.config, todo))
        except KDSearchError as exc:  # e.g. the dataset is no longer where the run found it
            return stored, f"Test accuracy skipped: {exc}"
        save_test_accuracies(run.run_dir, stored)
    return stored, note


# ---------------------------------------------------------------------------------------------
# HTML


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; background: #fafafa; color: #222; }
main { max-width: 1300px; margin: 0 auto; padding: 16px 28px 48px; }
h1 { font-size: 1.5em; margin: 0.4em 0 0.2em; } h2 { font-size: 1.15em; margin: 1.6em 0 0.4em; }
.summary { color: #555; margin: 0 0 0.6em; line-height: 1.5; }
.figure { background: white; border: 1px solid #e4e4e4; border-radius: 6px; margin: 14px 0; min-height: 300px; }
table { border-collapse: collapse; font-size: 0.86em; background: white; width: 100%; }
th, td { padding: 4px 8px; border-bottom: 1px solid #eee; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; position: sticky; top: 0; }
td.l, th.l { text-align: left; } td.arch { font-family: ui-monospace, Menlo, monospace; font-size: 0.95em; }
tr.teacher td { font-weight: 600; } tr.pareto td:first-child { border-left: 3px solid #d62728; }
tr.pruned, tr.rejected, tr.failed { color: #888; }
table.sortable th { cursor: pointer; user-select: none; } table.sortable th:hover { background: #e2e2e2; }
.note { color: #666; font-size: 0.9em; } .scroll { max-height: 640px; overflow: auto; border: 1px solid #e4e4e4; }
"""

_SORT_JS = """
document.querySelectorAll("table.sortable th").forEach((th, col) => th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0], num = th.dataset.type === "num";
  const asc = th.dataset.order !== "asc"; th.dataset.order = asc ? "asc" : "desc";
  const key = r => { const c = r.cells[col], v = c.dataset.v ?? c.textContent; return num ? parseFloat(v) : v; };
  const rows = [...body.rows].sort((a, b) => {
    const x = key(a), y = key(b);
    if (num && (isNaN(x) || isNaN(y))) return isNaN(x) - isNaN(y);  // blanks last
    return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
  });
  rows.forEach(r => body.appendChild(r));
}));
"""

_PLOT_JS = """
document.querySelectorAll("div.figure").forEach(div => {
  const fig = JSON.parse(document.getElementById(div.id + "-json").textContent);
  Plotly.newPlot(div, fig.data, fig.layout, {responsive: true, displaylogo: false});
});
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _cell(text: str, value: float | int | str | None = None, cls: str = "") -> str:
    v = "" if value is None else f' data-v="{_e(value)}"'
    c = f' class="{cls}"' if cls else ""
    return f"<td{c}{v}>{_e(text)}</td>"


def _metric_cells(a: dict[str, Any]) -> str:
    lat = a.get("latency_ms")
    return (_cell(f"{a.get('params', 0):,}", a.get("params")) + _cell(f"{a.get('macs', 0):,}", a.get("macs"))
            + _cell("" if lat is None else f"{lat:.3f}", lat))


def pareto_html(points: Sequence[Point], teacher: dict[str, Any] | None, with_test: bool) -> str:
    """The Pareto table: teacher first, validation and (when measured) test accuracy side by side."""
    head = ["trial", "val acc"] + (["test acc"] if with_test else []) + ["params", "MACs", "latency ms", "T", "alpha", "architecture"]
    rows = []
    if teacher:
        test = _cell(_pct(teacher.get("test_accuracy"))) if with_test else ""
        rows.append(f'<tr class="teacher">{_cell("teacher " + teacher["name"], cls="l")}{_cell(_pct(teacher["val_accuracy"]))}'
                    f'{test}{_metric_cells(teacher)}<td></td><td></td><td class="l">reference</td></tr>')
    members = sorted((p for p in points if p.pareto), key=lambda p: (-p.accuracy, p.cost("params") or 0))
    for p in members:
        a = p.attrs
        test = _cell(_pct(p.test_accuracy)) if with_test else ""
        t, alpha = f"{a.get('temperature', 0):.2f}", f"{a.get('alpha', 0):.2f}"
        rows.append(f'<tr class="pareto">{_cell(str(p.number), cls="l")}{_cell(_pct(p.accuracy))}{test}{_metric_cells(a)}'
                    f'{_cell(t)}{_cell(alpha)}{_cell(a.get("arch", ""), cls="l arch")}</tr>')
    ths = "".join(f'<th class="{"l" if h in ("trial", "architecture") else ""}">{_e(h)}</th>' for h in head)
    return f'<table id="pareto"><thead><tr>{ths}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def trials_html(points: Sequence[Point]) -> str:
    """Every trial, sortable by clicking a column header."""
    head = [("trial", "num"), ("state", "str"), ("Pareto", "str"), ("val acc", "num"), ("test acc", "num"),
            ("params", "num"), ("MACs", "num"), ("latency ms", "num"), ("epochs", "num"), ("T", "num"),
            ("alpha", "num"), ("lr", "num"), ("architecture", "str")]
    rows = []
    for p in points:
        a = p.attrs
        f = lambda k, fmt: ("", None) if a.get(k) is None else (format(a[k], fmt), a[k])  # noqa: E731
        rows.append(f'<tr class="{p.state}">' + _cell(str(p.number), p.number, "l") + _cell(p.state, cls="l")
                    + _cell("yes" if p.pareto else "", cls="l") + _cell(_pct(p.accuracy), p.accuracy)
                    + _cell(_pct(p.test_accuracy), p.test_accuracy) + _metric_cells(a)
                    + _cell(str(len(p.curve)), len(p.curve)) + _cell(*f("temperature", ".2f"))
                    + _cell(*f("alpha", ".2f")) + _cell(*f("lr", ".2g")) + _cell(a.get("arch", ""), cls="l arch") + "</tr>")
    ths = "".join(f'<th data-type="{t}" class="{"l" if t == "str" else ""}">{_e(h)}</th>' for h, t in head)
    return (f'<div class="scroll"><table id="trials" class="sortable"><thead><tr>{ths}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _figure_block(fig_id: str, fig: go.Figure) -> str:
    """An empty div and its figure as JSON, drawn by one loader script (so plotly.js is embedded once)."""
    data = fig.to_json().replace("</", "<\\/")  # a "</script>" inside a string must not end the block
    return (f'<div id="fig-{fig_id}" class="figure"></div>\n'
            f'<script type="application/json" id="fig-{fig_id}-json">{data}</script>')


def summary_html(study: optuna.Study, points: Sequence[Point]) -> str:
    counts = {s: sum(p.state == s for p in points) for s in ("complete", "pruned", "rejected", "failed", "running")}
    teacher = study.user_attrs.get("teacher") or {}
    data = study.user_attrs.get("data") or {}
    objectives = ", ".join(f"{d.name.lower()} {n}" for d, n in zip(study.directions, ["val_accuracy"] + cost_names(study)))
    parts = [f"{len(points)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n),
             f"objectives: {objectives}"]
    if data:
        parts.append(f"data {data.get('name')}: {data.get('train')} train, {data.get('val')} val, {data.get('test')} test")
    if teacher:
        parts.append(f"teacher {teacher['name']}: val {_pct(teacher['val_accuracy'])}, "
                     f"test {_pct(teacher.get('test_accuracy'))}, {teacher.get('params', 0):,} params")
    return "<br>".join(_e(x) for x in parts)


def render_html(study: optuna.Study, points: Sequence[Point], figures: dict[str, go.Figure], notes: Sequence[str],
                with_test: bool) -> str:
    """The whole page: summary, Pareto table, figures, trials table; plotly.js inline once."""
    from plotly.offline import get_plotlyjs

    order = [k for k in figures if k.startswith("accuracy-vs-")] + ["hypervolume", "learning-curves", "importance"]
    blocks = "\n".join(_figure_block(k, figures[k]) for k in order if k in figures)
    note_html = "".join(f'<p class="note">{_e(n)}</p>' for n in notes)
    test_sentence = f'<p class="note">{_e(TEST_SENTENCE)}</p>' if with_test else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>kdsearch report: {_e(study.study_name)}</title>
<style>{_CSS}</style>
<script>{get_plotlyjs()}</script>
</head><body><main>
<h1>kdsearch report: {_e(study.study_name)}</h1>
<p class="summary">{summary_html(study, points)}</p>
<h2>Pareto front</h2>
{pareto_html(points, study.user_attrs.get("teacher"), with_test)}
{test_sentence}
<h2>Figures</h2>
{blocks}
{note_html}
<h2>All trials</h2>
<p class="note">Click a column header to sort.</p>
{trials_html(points)}
</main>
<script>{_PLOT_JS}</script>
<script>{_SORT_JS}</script>
</body></html>
"""


# ---------------------------------------------------------------------------------------------
# Static images (optional: needs kaleido)


def image_exporter_available() -> bool:
    """plotly writes static images through kaleido, an optional package."""
    return importlib.util.find_spec("kaleido") is not None


def export_images(figures: dict[str, go.Figure], folder: Path, fmt: str = "png") -> tuple[list[Path], str]:
    """Write each figure as PNG or SVG when an exporter (kaleido) is installed; else say how to get one.

    kaleido drives a browser, whose first export in a process can fail (e.g. "ReferenceError:
    kaleido_scopes is not defined" while its page is still loading): a failed export is tried once
    more, and one that fails again becomes one readable line, never the browser's raw error dump.
    """
    if not image_exporter_available():
        return [], "static images need the kaleido package (pip install kaleido): skipped"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in figures.items():
        path = folder / f"{name}.{fmt}"
        for attempt in (1, 2):
            try:
                fig.write_image(str(path), format=fmt, width=1100, height=fig.layout.height or 480)
                break
            except Exception as exc:  # kaleido present but unable to run (no Chrome, wrong version, a hiccup)
                if attempt == 2:
                    return written, f"static image export failed: {export_error(exc)}"
        written.append(path)
    return written, ""


def export_error(exc: BaseException, limit: int = 160) -> str:
    """One readable line from an exporter's error, which may be a multi-line JSON dump of a browser
    error: its first 'SomethingError: message' when it holds one, else its first line, shortened."""
    import re

    text = str(exc).strip() or type(exc).__name__
    found = re.search(r"\b([A-Z][A-Za-z]*(?:Error|Exception)): ([^\n\"\\]+)", text)
    line = f"{found.group(1)}: {found.group(2).strip()}" if found else text.splitlines()[0].strip()
    line = " ".join(line.split())
    return line if len(line) <= limit else line[:limit - 3].rstrip() + "..."


# ---------------------------------------------------------------------------------------------
# The command


def default_out(run: Run) -> Path:
    return run.run_dir / "report.html" if run.run_dir else Path(f"{run.study.study_name}-report.html")


def write_report(run: Run, out: Path | None = None, test: bool = False, images: bool = False, image_format: str = "png",
                 console: Console | None = None) -> Path:
    """Print the Pareto table and write the HTML report; with `test`, also the Pareto members' test
    accuracy (measured once and stored). Off by default: students are picked on validation accuracy,
    and a test column beside it invites picking on the test split."""
    console = console or Console()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = run.study
    members = [t.number for t in pareto_trials(study)]
    tests, test_note = pareto_test_accuracy(run, members, evaluate=test, say=lambda m: console.print(m, highlight=False))
    with_test = test and any(n in tests for n in members)
    console.print(pareto_table(study, tests if with_test else None))
    points = trial_points(study, tests if with_test else None)
    figures, notes = report_figures(study, points)
    notes = ([test_note] if test_note else []) + notes
    for note in notes:
        console.print(f"[yellow]{note}[/]", highlight=False)
    out = Path(out) if out else default_out(run)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, render_html(study, points, figures, notes, with_test))
    console.print(f"report: {out}", highlight=False)
    if images:
        written, message = export_images(figures, out.with_name(out.stem + "-images"), image_format)
        if written:
            console.print(f"images: {len(written)} {image_format.upper()} files in {written[0].parent}", highlight=False)
        if message:
            console.print(f"[yellow]{message}[/]", highlight=False)
    return out

