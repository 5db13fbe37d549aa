"""The report as one self-contained HTML page: plotly.js embedded once, so it opens offline and can be mailed."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import optuna
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from ..analysis.front import TRIAL_STATES, Point, cost_names
from .tables import percent


TEST_SENTENCE = ("Test accuracy is measured once, when the first report is made, on the held-out test split. "
                 "The search never used it: it chose and pruned students on validation accuracy only.")

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
        test = _cell(percent(teacher.get("test_accuracy"))) if with_test else ""
        rows.append(f'<tr class="teacher">{_cell("teacher " + teacher["name"], cls="l")}{_cell(percent(teacher["val_accuracy"]))}'
                    f'{test}{_metric_cells(teacher)}<td></td><td></td><td class="l">reference</td></tr>')
    members = sorted((p for p in points if p.pareto), key=lambda p: (-p.accuracy, p.cost("params") or 0))
    for p in members:
        a = p.attrs
        test = _cell(percent(p.test_accuracy)) if with_test else ""
        t, alpha = f"{a.get('temperature', 0):.2f}", f"{a.get('alpha', 0):.2f}"
        rows.append(f'<tr class="pareto">{_cell(str(p.number), cls="l")}{_cell(percent(p.accuracy))}{test}{_metric_cells(a)}'
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
                    + _cell("yes" if p.pareto else "", cls="l") + _cell(percent(p.accuracy), p.accuracy)
                    + _cell(percent(p.test_accuracy), p.test_accuracy) + _metric_cells(a)
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
    counts = {s: sum(p.state == s for p in points) for s in TRIAL_STATES}
    teacher = study.user_attrs.get("teacher") or {}
    data = study.user_attrs.get("data") or {}
    objectives = ", ".join(f"{d.name.lower()} {n}" for d, n in zip(study.directions, ["val_accuracy"] + cost_names(study)))
    parts = [f"{len(points)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n),
             f"objectives: {objectives}"]
    if data:
        parts.append(f"data {data.get('name')}: {data.get('train')} train, {data.get('val')} val, {data.get('test')} test")
    if teacher:
        parts.append(f"teacher {teacher['name']}: val {percent(teacher['val_accuracy'])}, "
                     f"test {percent(teacher.get('test_accuracy'))}, {teacher.get('params', 0):,} params")
    return "<br>".join(_e(x) for x in parts)


def render_html(study: optuna.Study, points: Sequence[Point], figures: dict[str, go.Figure], notes: Sequence[str],
                with_test: bool) -> str:
    """The whole page: summary, Pareto table, figures, trials table; plotly.js inline once."""
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
