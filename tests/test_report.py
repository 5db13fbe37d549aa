"""The HTML report: figures read back from the page's embedded plotly JSON, stored test accuracy,
and a real headless browser that must draw every figure without a JavaScript error."""

import html
import json
import math
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from kdsearch.analysis.front import pareto_trials, trial_points
from kdsearch.analysis.hypervolume import hypervolume_2d, hypervolume_log
from kdsearch.cli import app
from kdsearch.reporting.figures import report_figures
from kdsearch.reporting.images import export_images
from kdsearch.reporting.page import TEST_SENTENCE, render_html
from kdsearch.runs.layout import RUN_FILE, TEST_FILE
from kdsearch.runs.storage import make_storage

runner = CliRunner()
FIGURES = {"accuracy-vs-params", "accuracy-vs-latency", "hypervolume", "learning-curves", "importance"}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))


def load(run_dir: Path) -> optuna.Study:
    info = json.loads((run_dir / RUN_FILE).read_text())
    return optuna.load_study(study_name=info["study_name"], storage=make_storage(info["storage"]))


def figures(page: str) -> dict[str, dict]:
    """Every figure of a report page, by id, from its embedded JSON block."""
    blocks = re.findall(r'<script type="application/json" id="fig-([\w-]+)-json">(.*?)</script>', page, re.S)
    return {name: json.loads(body) for name, body in blocks}


def trace(fig: dict, name_start: str) -> dict:
    return next(t for t in fig["data"] if t.get("name", "").startswith(name_start))


def make_report(run_dir: Path, out: Path, *extra: str) -> str:
    result = runner.invoke(app, ["report", str(run_dir), "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    assert "Pareto front of tiny" in result.output
    return out.read_text()


@pytest.fixture(scope="module")
def page(tiny_run, tmp_path_factory) -> str:
    """The tiny run's report with --test, made once for the module (test accuracy measured and stored)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KDSEARCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        return make_report(tiny_run, tmp_path_factory.mktemp("report") / "report.html", "--test")


@pytest.fixture
def no_importance(monkeypatch):
    """fANOVA takes seconds and is checked once (with `page`): skip it in the other tests."""
    monkeypatch.setattr("kdsearch.reporting.figures.importance_figure", lambda study: (None, "importance skipped in this test"))


def test_report_figures_front_teacher_and_plotlyjs_once(tiny_run, page):
    study = load(tiny_run)
    front = {t.number for t in pareto_trials(study)}
    pruned = {t.number for t in study.trials if t.state == optuna.trial.TrialState.PRUNED}
    assert front and pruned == {2}

    figs = figures(page)
    assert set(figs) == FIGURES
    teacher = study.user_attrs["teacher"]
    for name in ("accuracy-vs-params", "accuracy-vs-latency"):
        fig = figs[name]
        assert set(trace(fig, "Pareto front")["customdata"]) == front
        assert set(trace(fig, "pruned")["customdata"]) == pruned
        star = trace(fig, "teacher resnet20")
        assert star["y"] == [teacher["val_accuracy"]]
        assert any(s["type"] == "line" and s["y0"] == teacher["val_accuracy"] for s in fig["layout"]["shapes"])
        hover = trace(fig, "Pareto front")["text"][0]
        assert all(word in hover for word in ("trial", "conv[", "T ", "alpha", "params", "val acc"))
    assert figs["accuracy-vs-params"]["layout"]["xaxis"]["type"] == "log"
    assert "reference point" in figs["hypervolume"]["layout"]["title"]["text"]
    assert len(figs["hypervolume"]["data"][0]["y"]) == len(study.trials)
    # learning curves: one trace per trial; a pruned trial ends in an x marker at the epoch it stopped
    curves = {t["customdata"][0]: t for t in figs["learning-curves"]["data"]}
    assert set(curves) == {t.number for t in study.trials}
    for n in pruned:
        assert len(curves[n]["y"]) == 1 and curves[n]["marker"]["symbol"][-1] == "x"
    # one importance bar trace per objective
    assert [t["name"] for t in figs["importance"]["data"]] == study.metric_names

    assert page.count("* plotly.js v") == 1 and "<script src" not in page  # embedded once, opens offline
    assert len(page.encode()) < 6_000_000
    assert '<table id="trials" class="sortable">' in page


def test_test_accuracy_measured_once_and_stored(tiny_run, page, tmp_path, monkeypatch, no_importance):
    front = [t.number for t in pareto_trials(load(tiny_run))]
    stored = json.loads((tiny_run / TEST_FILE).read_text())
    assert {int(k) for k in stored} >= set(front)
    assert all(0.0 <= v <= 1.0 for v in stored.values())
    assert TEST_SENTENCE in page
    assert ">test acc</th>" in page.split('id="pareto"')[1].split("</table>")[0]

    def boom(*a, **k):
        raise AssertionError("test accuracy must not be evaluated twice")

    monkeypatch.setattr("kdsearch.analysis.holdout.evaluate_students", boom)
    page = make_report(tiny_run, tmp_path / "b.html", "--test")
    assert json.loads((tiny_run / TEST_FILE).read_text()) == stored
    hover = " ".join(trace(figures(page)["accuracy-vs-params"], "Pareto front")["text"])
    assert "test acc" in hover


@pytest.mark.parametrize("flags", [(), ("--no-test",)])
def test_test_accuracy_is_absent_unless_asked(tiny_run, tmp_path, monkeypatch, no_importance, flags):
    monkeypatch.setattr("kdsearch.analysis.holdout.evaluate_students", lambda *a, **k: pytest.fail("evaluated without --test"))
    page = make_report(tiny_run, tmp_path / "n.html", *flags)
    assert TEST_SENTENCE not in page
    assert ">test acc</th>" not in page.split('id="pareto"')[1].split("</table>")[0]
    assert "test acc" not in " ".join(trace(figures(page)["accuracy-vs-params"], "Pareto front")["text"])


def test_storage_and_study_name_instead_of_a_folder(tiny_run, tmp_path, no_importance):
    info = json.loads((tiny_run / RUN_FILE).read_text())
    result = runner.invoke(app, ["report", "--storage", info["storage"], "--study-name", "tiny", "--no-test",
                                 "--out", str(tmp_path / "s.html")])
    assert result.exit_code == 0, result.output
    assert "hypervolume" in figures((tmp_path / "s.html").read_text())


def test_report_and_status_print_json_on_stdout(tiny_run, tmp_path, no_importance):
    """`--json`: stdout is one JSON document (what else is said goes to stderr), numbers as the study has them."""
    study = load(tiny_run)
    front = pareto_trials(study)
    result = runner.invoke(app, ["report", str(tiny_run), "--no-test", "--out", str(tmp_path / "j.html"), "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert "Pareto front of" not in result.stdout and (tmp_path / "j.html").is_file()
    assert facts["study"] == "tiny" and facts["report"] == str(tmp_path / "j.html")
    assert [r["trial"] for r in facts["front"]] == [t.number for t in front]
    assert [r["val_accuracy"] for r in facts["front"]] == [t.values[0] for t in front]
    assert [r["params"] for r in facts["front"]] == [t.user_attrs["params"] for t in front]
    assert facts["teacher"]["name"] == "resnet20"
    assert facts["teacher"]["test_accuracy"] == study.user_attrs["teacher"]["test_accuracy"]
    status = runner.invoke(app, ["status", str(tiny_run), "--json"])
    assert status.exit_code == 0, status.output
    facts = json.loads(status.stdout)
    assert facts["finished"] == 6 and facts["target"] == 6 and facts["states"]["complete"] == 5
    assert facts["states"]["pruned"] == 1 and facts["running"] == [] and facts["failed"] == []
    assert facts["teacher_ready"] and facts["teacher"]["name"] == "resnet20"
    assert [c["complete"] for c in facts["logit_caches"]] == [True]
    assert [r["trial"] for r in facts["front"]] == [t.number for t in front]


def test_images_without_an_exporter_is_a_message(tiny_run, tmp_path, monkeypatch, no_importance):
    monkeypatch.setattr("kdsearch.reporting.images.image_exporter_available", lambda: False)
    result = runner.invoke(app, ["report", str(tiny_run), "--no-test", "--images", "--out", str(tmp_path / "i.html")])
    assert result.exit_code == 0, result.output
    assert "kaleido" in result.output and (tmp_path / "i.html").is_file()


@pytest.mark.parametrize("argv,match", [
    (["report", "{tmp}"], "not a kdsearch run folder"),
    (["report"], "give a run folder"),
    (["report", "--storage", "sqlite:///{tmp}/none.db", "--study-name", "x"], "no study named"),
    (["dashboard", "{tmp}"], "not a kdsearch run folder"),
])
def test_user_mistakes_exit_2_with_one_line(tmp_path, argv, match):
    result = runner.invoke(app, [a.format(tmp=tmp_path) for a in argv])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and match in lines[0]


def test_hypervolume_by_hand():
    # (cost / ref, accuracy): 0.1 -> 0.9 until 0.5, then 0.95 until the reference
    assert hypervolume_2d([(10, 0.9), (50, 0.95), (60, 0.5)], 100) == pytest.approx(0.4 * 0.9 + 0.5 * 0.95)
    assert hypervolume_2d([(150, 1.0)], 100) == 0.0  # larger than the reference: adds nothing
    assert hypervolume_2d([], 100) == 0.0


def test_log_params_hypervolume_by_hand():
    # x = (log10 p - 2) / (log10 1e6 - 2): 1e3 params -> 0.25, 1e4 -> 0.5; 50 params is clipped to 0
    assert hypervolume_log([(1e3, 0.8), (1e4, 0.9)], 1e6) == pytest.approx(0.25 * 0.8 + 0.5 * 0.9)
    assert hypervolume_log([(50, 0.5)], 1e6) == pytest.approx(0.5)
    # halving a small student moves it as much as halving a big one (linear params would not see it)
    assert hypervolume_log([(2e3, 0.8)], 1e6) - hypervolume_log([(4e3, 0.8)], 1e6) == pytest.approx(
        hypervolume_log([(2e5, 0.8)], 1e6) - hypervolume_log([(4e5, 0.8)], 1e6))


def synthetic_study(n_complete: int, third: str = "latency_ms") -> optuna.Study:
    """An in-memory study shaped like a kdsearch one (plus a rejected and a failed trial), untrained."""
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["val_accuracy", "params", third])
    study.set_user_attr("teacher", {"name": "t", "val_accuracy": 0.9, "test_accuracy": 0.88, "params": 1000,
                                    "macs": 5000, "latency_ms": 1.0})
    dist = {"alpha": optuna.distributions.FloatDistribution(0, 1)}
    for i in range(n_complete):
        acc, params = 0.5 + 0.1 * i, 100 * (i + 1)
        study.add_trial(optuna.trial.create_trial(
            values=[acc, params, 0.1 * (i + 1)], params={"alpha": 0.1 * i}, distributions=dist,
            user_attrs={"params": params, "macs": 10 * params, "latency_ms": 0.1 * (i + 1), "curve": [acc / 2, acc],
                        "arch": f"<arch {i}>", "temperature": 2.0, "alpha": 0.1 * i, "lr": 1e-3}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED,
                                              user_attrs={"params": 10**6, "pruned_at": 0, "arch": "big"}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    return study


@pytest.mark.parametrize("third", ["latency_ms", "macs"])
def test_few_trials_skip_importance_with_a_note(third):
    study = synthetic_study(2, third)
    points = trial_points(study)
    assert [p.state for p in points] == ["complete", "complete", "rejected", "failed"]
    figs, notes = report_figures(study, points)
    assert set(figs) == {"accuracy-vs-params", f"accuracy-vs-{third.removesuffix('_ms')}", "hypervolume",
                         "learning-curves"}
    assert "at least" in notes[0]
    page = render_html(study, points, figs, notes, with_test=False)
    assert "at least" in page and "&lt;arch 0&gt;" in page  # notes shown, text escaped
    # by hand, on log10 params from 100 (x = 0) to the teacher's 1000 (x = 1): 0.5 from x 0, 0.6 from x log10(2)
    assert figs["hypervolume"].data[0].y[-1] == pytest.approx(math.log10(2) * 0.5 + (1 - math.log10(2)) * 0.6)


def chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


# Injected at the top of <head>: record every uncaught error; after load, write the errors and
# each figure's box and SVG count into the DOM. The canary proves the capture works.
PROBE_HEAD = """<script>window.__errors = [];
window.addEventListener("error", e => window.__errors.push(String(e.message)));
window.addEventListener("load", () => setTimeout(() => {
  setTimeout(() => { throw new Error("kdsearch-canary"); }, 0);
  setTimeout(() => {
    const figs = [...document.querySelectorAll("div.figure")].map(d => {
      const r = d.getBoundingClientRect();
      return {id: d.id, x: r.x, y: r.y, w: r.width, h: r.height, svgs: d.querySelectorAll(".main-svg").length,
              points: d.querySelectorAll("path.point").length};
    });
    const out = document.createElement("pre");
    out.id = "probe";
    out.textContent = JSON.stringify({errors: window.__errors, figures: figs, height: document.body.scrollHeight});
    document.body.appendChild(out);
  }, 200);
}, 300));
</script>"""

BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                 "--virtual-time-budget=20000", "--window-size=1400,4000", "--enable-logging=stderr", "--v=0"]


def test_report_draws_in_a_headless_browser(tiny_run, page, tmp_path):
    exe = chromium()
    if exe is None:
        pytest.skip("no chromium binary (apt-get install chromium)")
    from PIL import Image

    probed, shot = tmp_path / "probed.html", tmp_path / "shot.png"
    probed.write_text(page.replace("<head>", "<head>" + PROBE_HEAD, 1))
    run = subprocess.run([exe, *BROWSER_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                          "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', run.stdout, re.S)
    assert found, run.stderr[-2000:]
    probe = json.loads(html.unescape(found.group(1)))
    assert [e for e in probe["errors"] if "kdsearch-canary" not in e] == []
    assert any("kdsearch-canary" in e for e in probe["errors"])  # the capture itself works
    assert not [line for line in run.stderr.splitlines() if "Uncaught" in line and "kdsearch-canary" not in line]
    assert {f["id"].removeprefix("fig-") for f in probe["figures"]} == FIGURES
    for f in probe["figures"]:
        assert f["svgs"] >= 1 and f["h"] > 200, f
    drawn = {f["id"]: f["points"] for f in probe["figures"]}
    assert drawn["fig-accuracy-vs-params"] >= len(load(tiny_run).trials) + 1  # every trained trial and the teacher

    image = Image.open(shot).convert("L")
    for f in probe["figures"]:
        box = (int(f["x"]) + 5, int(f["y"]) + 5, int(f["x"] + f["w"]) - 5, int(f["y"] + f["h"]) - 5)
        assert box[3] <= image.height, f"figure {f['id']} is below the screenshot"
        crop = image.crop(box)
        dark = sum(1 for p in crop.tobytes() if p < 200) / (crop.width * crop.height)
        assert dark > 0.01, f"figure {f['id']} looks blank ({dark:.4f} of its pixels are dark)"


BROWSER_ERROR = json.dumps({"result": {"exceptionDetails": {"exception": {
    "description": "ReferenceError: kaleido_scopes is not defined\n    at <anonymous>:1:1"}}}}, indent=2)


class FlakyFigure:
    """A figure whose first `fails` exports raise what kaleido raised: a JSON dump of a browser error."""

    def __init__(self, fails):
        self.fails, self.calls = fails, 0
        self.layout = type("Layout", (), {"height": None})()

    def write_image(self, path, format, width, height):
        self.calls += 1
        if self.calls <= self.fails:
            raise ValueError(BROWSER_ERROR)
        Path(path).write_bytes(b"\x89PNG")


def test_a_failed_image_export_is_tried_again_then_one_readable_line(tmp_path, monkeypatch):
    monkeypatch.setattr("kdsearch.reporting.images.image_exporter_available", lambda: True)
    once = FlakyFigure(fails=1)
    written, message = export_images({"front": once}, tmp_path / "a")
    assert message == "" and written == [tmp_path / "a" / "front.png"] and once.calls == 2
    always = FlakyFigure(fails=9)
    written, message = export_images({"front": always}, tmp_path / "b")
    assert written == [] and always.calls == 2
    assert message == "static image export failed: ReferenceError: kaleido_scopes is not defined"
