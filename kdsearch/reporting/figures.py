"""The report's plotly figures: accuracy against each cost, hypervolume, learning curves, importances."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import optuna
import plotly.colors
import plotly.graph_objects as go
from optuna.trial import TrialState

from ..analysis.front import Point, cost_names, front_2d
from ..analysis.hypervolume import LOW_PARAMS, hypervolume_log
from .tables import percent


MIN_IMPORTANCE_TRIALS = 5  # completed trials needed before parameter importances mean anything
COST_LABELS = {"params": "params", "macs": "MACs", "latency_ms": "latency (ms)", "bytes": "bytes (ONNX file)"}
FADED = "rgba(120, 120, 120, 0.45)"
PARETO_COLOR = "#d62728"
TEACHER_COLOR = "#222222"


def hover(p: Point) -> str:
    """The hover text of a trial: architecture, T, alpha, lr and metrics."""
    a = p.attrs
    acc = f"val acc {percent(p.accuracy)}"
    if p.state == "pruned":
        acc += f" (stopped after epoch {a.get('pruned_at', len(p.curve))})"
    if p.test_accuracy is not None:
        acc += f", test acc {percent(p.test_accuracy)}"
    lines = [f"<b>trial {p.number}</b> ({p.state}" + (", Pareto" if p.pareto else "") + ")",
             html.escape(str(a.get("arch", ""))),
             f"T {a.get('temperature', math.nan):.2f}, alpha {a.get('alpha', math.nan):.2f}, lr {a.get('lr', math.nan):.2g}",
             acc,
             f"{a.get('params', 0):,} params, {a.get('macs', 0):,} MACs, {a.get('latency_ms', math.nan):.3f} ms"]
    return "<br>".join(lines)


def _scatter(points: Sequence[Point], cost: str, **kwargs: Any) -> go.Scatter:
    return go.Scatter(x=[p.cost(cost) for p in points], y=[p.accuracy for p in points],
                      customdata=[p.number for p in points], text=[hover(p) for p in points],
                      hovertemplate="%{text}<extra></extra>", mode="markers", **kwargs)


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
                                                f"{percent(teacher['val_accuracy'])}, test acc {percent(teacher.get('test_accuracy'))}"
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
