"""The benchmark suite (`python -m benchmarks`): every subcommand runs a tiny smoke run here, so that a
change to the kdsearch functions a benchmark calls breaks a test, not the next measurement; the harness
(timer, result rows and their provenance) does what it says; BENCHMARKS.md is what its result files give.

The smoke runs use tiny sizes (a few images, one epoch, one repeat) on synthetic tensors or a 3-class
8x8 image folder, in this process (so that they can stub latency timing, as the CLI tests do); the two
that start processes (`concurrent`, `supervise`) are marked slow.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kdsearch.measure.costs import count_params
from kdsearch.measure.latency import Timing

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the suite is a package of the repository, not of the installed kdsearch
    sys.path.insert(0, str(ROOT))

from benchmarks import harness  # noqa: E402
from benchmarks.__main__ import main as bench  # noqa: E402
from benchmarks.suite import BENCHMARKS, listing  # noqa: E402

FIDELITY_ROW = {"student", "arch", "params", "temperature", "alpha", "lr", "budget", "val_accuracy", "curve", "seconds"}


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """kdsearch's cache folder (decoded data, memory-format choices) in the test's own folder."""
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))


def stub_latency(monkeypatch) -> None:
    """Latency timing is ~1 s a model and not what these tests check: a size-based stand-in, as in conftest."""
    def fake(model, shape):
        return 0.01 + count_params(model) / 1e6

    monkeypatch.setattr("kdsearch.training.teacher.teacher_latency", lambda model, shape, *a: fake(model, shape))
    monkeypatch.setattr("kdsearch.measure.latency.student_latency",
                        lambda model, shape, *a, **k: Timing(fake(model, shape), 0.0, 1, "onnxruntime", 1, 1))


@pytest.fixture
def study(folder, tmp_path) -> Path:
    """A tiny study on the 3-class image folder: a 1-epoch ResNet-20 teacher, plain students, 1-epoch trials."""
    path = tmp_path / "smoke.toml"
    path.write_text(f'''
[study]
name = "smoke"
trials = 2
epochs = 1
objectives = ["accuracy", "params", "macs"]
device = "cpu"
threads = 1

[data]
dataset = "imagefolder"
data_dir = "{folder}"

[teacher]
name = "resnet20"
pretrained = false
epochs = 1

[train]
views = 2
batch_size = 16

[space]
family = "plain"
''')
    return path


def rows(out: Path) -> list[dict]:
    return harness.load_rows(out / "results.jsonl")


# ------------------------------------------------------------------------------------------- the entry point

def test_list_names_every_benchmark_one_a_line_without_importing_torch():
    script = ("import runpy, sys; sys.argv = ['benchmarks', 'list']; runpy.run_module('benchmarks', run_name='__main__');"
              "print('torch imported' if 'torch' in sys.modules else 'torch not imported')")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1] == "torch not imported"
    assert [line.split()[0] for line in lines[:-1]] == list(BENCHMARKS)
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines[:-1])  # a purpose on every line


def test_an_unknown_benchmark_is_one_line():
    with pytest.raises(SystemExit, match="no benchmark 'nope'"):
        bench(["nope"])


def test_no_script_is_left_loose_in_benchmarks():
    """benchmarks/ holds the package's modules, its template and results/ (whose run.sh files record runs)."""
    loose = [p.name for p in (ROOT / "benchmarks").iterdir()
             if p.is_file() and p.suffix not in (".py", ".md")] + \
            [p.name for p in (ROOT / "benchmarks").glob("*.py") if p.name.startswith(("bench_", "gpu"))]
    assert not loose, loose
    modules = {p.stem for p in (ROOT / "benchmarks").glob("*.py")}
    assert set(BENCHMARKS.values()) <= modules


def test_every_benchmark_has_a_smoke_run():
    smoke = {name.removeprefix("test_smoke_").replace("_", "-") for name in globals() if name.startswith("test_smoke_")}
    assert set(BENCHMARKS) <= smoke, set(BENCHMARKS) - smoke


# ------------------------------------------------------------------------------------------- the harness

def test_the_timer_interleaves_and_reports_median_and_spread():
    calls = []
    timings = harness.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3)
    assert calls == ["a", "b"] * 3
    assert all(len(t.seconds) == 3 for t in timings.values())
    t = harness.Timing((1.0, 2.0, 4.0))
    assert (t.median, t.min, t.max, t.spread) == (2.0, 1.0, 4.0, 1.5)


def test_rows_carry_their_provenance_and_old_rows_load(tmp_path):
    (tmp_path / "results.jsonl").write_text(json.dumps({"student": "old", "val_accuracy": 0.5}) + "\n")
    results = harness.ResultFile(tmp_path, "recipe", ["--epochs", "1"])
    written = results.append({"student": "new"}, {"temperature": 4.0, "alpha": 0.9, "views": 8, "teacher": "resnet32"})
    assert [r["student"] for r in results.rows()] == ["old", "new"]
    assert harness.provenance_of(results.rows()[0]) == {}
    p = harness.provenance_of(written)
    assert p["command"] == "python -m benchmarks recipe --epochs 1"
    assert p["settings"]["teacher"] == "resnet32" and p["machine"]["machine"] and "date" in p["machine"]
    assert p["commit"] is None or len(p["commit"].removesuffix("-dirty")) >= 7


def test_benchmarks_md_is_what_the_result_files_give(tmp_path):
    """The committed page and `python -m benchmarks report` agree to the byte (regenerate on a difference)."""
    bench(["report", "--out", str(tmp_path / "BENCHMARKS.md")])
    assert (tmp_path / "BENCHMARKS.md").read_text() == (ROOT / "BENCHMARKS.md").read_text(), \
        "BENCHMARKS.md is stale: python -m benchmarks report --out BENCHMARKS.md"


def test_the_report_renders_a_fidelity_folder_only_once_it_has_results(tmp_path):
    from benchmarks import report

    assert report.fidelity_tables(str(tmp_path / "none-yet")) == ""
    assert "within-band Kendall" in report.fidelity_tables("benchmarks/results/fidelity-cifar10")


# ------------------------------------------------------------------------------------------- smoke runs: speed

def test_smoke_trial_speed(tmp_path):
    bench(["trial-speed", "--teacher", "resnet20", "--train", "32", "--epochs", "1", "--views", "1", "--amortize", "1",
           "--batch-size", "16", "--students", "tiny-fc64", "--out", str(tmp_path)])
    cache, student = rows(tmp_path)
    assert cache["cache_build_s"] > 0 and student["baseline_s"] > 0 and student["kdsearch_s"] > 0
    assert harness.provenance_of(student)["settings"]["teacher"] == "resnet20"


def test_smoke_speed(tmp_path):
    bench(["speed", "--students", "plain6k", "--steps", "1", "--blocks", "2", "--formats", "--out", str(tmp_path)])
    (row,) = rows(tmp_path)
    assert row["bare_ms"] > 0 and row["kdsearch_ms"] > 0 and len(row["other"]) == 1


def test_smoke_throughput(tmp_path):
    bench(["throughput", "--images", "64", "--batch-size", "32", "--epochs", "1", "--students", "tiny-fc64",
           "--matmul-size", "64", "--matmul-seconds", "0.01", "--out", str(tmp_path)])
    (row,) = rows(tmp_path)
    assert row["mflop_per_image"] > 0 and 0 < row["of_matmul"]


def test_smoke_compile(tmp_path):
    """The eager backend traces the model without compiling kernels: the loop runs, in seconds."""
    bench(["compile", "--images", "64", "--batch-size", "32", "--students", "tiny-fc64", "--backend", "eager",
           "--out", str(tmp_path)])
    (row,) = rows(tmp_path)
    assert row["eager_s"] > 0 and row["compiled_s"] > 0


def test_smoke_eval(tmp_path):
    bench(["eval", "--images", "64", "--batches", "32", "--rounds", "1", "--threads", "1", "--train-images", "64",
           "--out", str(tmp_path)])
    assert {r["model"] for r in rows(tmp_path)} == {"conv18x4", "conv37x4", "res8"}
    assert all(r["ratio"]["1024"] == 1.0 for r in rows(tmp_path))


@pytest.mark.slow  # starts a process (spawn: torch imported again)
def test_smoke_concurrent(tmp_path):
    bench(["concurrent", "--student", "plain6k", "--jobs", "1", "--images", "256", "--epochs", "1", "--threads", "1",
           "--start-delay", "0", "--out", str(tmp_path)])
    (row,) = rows(tmp_path)
    assert row["jobs"] == 1 and row["together"] > 0 and row["params"] == 6418


@pytest.mark.slow  # starts worker processes, as the benchmark measures
def test_smoke_supervise(study, tmp_path):
    bench(["supervise", str(study), "--trials", "1", "--starts", "0", "--out", str(tmp_path / "out")])
    (row,) = rows(tmp_path / "out")
    assert row["trials"] == 1 and row["in_process_s"] > 0 and row["supervised_s"] > 0


@pytest.mark.slow  # spawns a process that imports torch, as the benchmark's baseline
def test_smoke_worker_start(tmp_path):
    bench(["worker-start", "--repeats", "1", "--out", str(tmp_path)])
    (row,) = rows(tmp_path)
    assert row["spawn"]["repeats"] == 1 and row["forked"]["median_s"] > 0 and row["ratio"] > 0


def test_smoke_profile(capsys):
    bench(["profile", "plain6k", "--batch", "8", "--steps", "1", "--layout", "contiguous"])
    assert "Self CPU" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- smoke runs: accuracy

def test_smoke_cache_accuracy(study, tmp_path, monkeypatch):
    stub_latency(monkeypatch)
    bench(["cache-accuracy", str(study), "--seeds", "0", "--epochs", "1", "--set", f"run_dir={tmp_path / 'run'}",
           "--out", str(tmp_path)])
    (row,) = rows(tmp_path)
    assert 0 <= row["online"] <= 1 and 0 <= row["cached"] <= 1
    assert harness.provenance_of(row)["settings"]["views"] == 2


def test_smoke_long_kd(tmp_path):
    bench(["long-kd", "--images", "32", "--epochs-total", "2", "--seeds", "1", "--threads", "1", "--students", "plain6k",
           "--out", str(tmp_path)])
    (row,) = rows(tmp_path)
    assert row["cached_epoch_s"] > 0 and row["online_epoch_s"] > 0


# ------------------------------------------------------------------------------------------- smoke runs: latency

def test_smoke_latency(tmp_path):
    bench(["latency", "--students", "2", "--workers", "0", "--out", str(tmp_path)])
    body = json.loads((tmp_path / "latency.json").read_text())
    assert {"idle / onnxruntime", "idle / torch"} <= set(body["summary"]) and body["provenance"]["commit"] != ""
    assert body["command"].startswith("python -m benchmarks latency")


def test_smoke_latency_drift(tmp_path):
    bench(["latency-drift", "--seconds", "0.2", "--out", str(tmp_path / "series.json")])
    series = json.loads((tmp_path / "series.json").read_text())
    assert series and {"t", "res8", "plain50k"} <= set(series[0])


# ------------------------------------------------------------------------------------------- smoke runs: search

def test_smoke_pruners(study, tmp_path, monkeypatch, capsys):
    stub_latency(monkeypatch)
    bench(["pruners", str(study), "--trials", "2", "--epochs", "1", "--seeds", "0", "--pruners", "none", "pareto",
           "--out", str(tmp_path), "--markdown"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["rows"]) == {"none", "pareto"} and summary["provenance"]["command"].startswith("python -m")
    assert "| none | 100.0% | 100.0% |" in capsys.readouterr().out


def committed_pruner_studies(tmp_path: Path) -> Path:
    """A copy of a committed pruners-benchmark folder (read by optuna, which may write to a SQLite file)."""
    out = tmp_path / "pruners-digits"
    out.mkdir()
    shutil.copy(ROOT / "benchmarks" / "results" / "pruners-digits" / "unpruned.db", out)
    return out


def test_smoke_families(tmp_path):
    folder = committed_pruner_studies(tmp_path)
    bench(["families", str(folder), str(folder), "--epochs", "12", "--out", str(tmp_path / "out")])
    got = rows(tmp_path / "out")
    assert {(r["space"], r["seed"]) for r in got} == {(s, f"seed{i}") for s in ("all families", "plain only") for i in range(3)}
    assert all(r["front"] and r["hypervolume"] > 0 for r in got)


def test_smoke_run_times(tmp_path, capsys):
    bench(["run-times", str(committed_pruner_studies(tmp_path))])
    assert "40 trials from" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")  # tiny data: tied accuracies
def test_smoke_fidelity(study, tmp_path, monkeypatch, capsys):
    """The results.jsonl rows keep their fields (a committed run writes them); --markdown reads them back."""
    stub_latency(monkeypatch)
    out = tmp_path / "fid"
    bench(["fidelity", str(study), "--students", "3", "--proxies", "40x1", "--final-epochs", "1", "--out", str(out)])
    got = rows(out)
    assert len(got) == 6 and all(FIDELITY_ROW <= set(r) for r in got)
    assert {r["student"] for r in got} == {0, 1, 2}
    capsys.readouterr()
    bench(["fidelity", str(study), "--final-epochs", "1", "--out", str(out), "--markdown"])
    assert "| 40x1 | 3 |" in capsys.readouterr().out
    bench(["fidelity", str(study), "--bands", "3000", "--per-band", "1", "--fixed", "temperature=4", "alpha=0.9",
           "--proxies", "40x1", "--final-epochs", "1", "--out", str(tmp_path / "bands")])
    band = rows(tmp_path / "bands")
    assert all(str(r["student"]).startswith("B3000-") and r["temperature"] == 4.0 for r in band)


def test_smoke_subnet_eval(tmp_path):
    bench(["subnet-eval", "--subnets", "1", "--val-images", "64", "--calibration-images", "32", "--first-pass", "16",
           "--rounds", "1", "--threads", "1", "--max-params", "20000", "--sandwich-steps", "1", "--batch-size", "4",
           "--out", str(tmp_path)])
    got = [r for r in rows(tmp_path) if "subnet" in r]
    assert {r["family"] for r in got} == {"residual", "inverted"} and all(r["params"] <= 20000 for r in got)
    assert all(r["baseline"]["median_s"] > 0 and r["ratio_channels_last"] > 0 for r in got)
    steps = [r for r in rows(tmp_path) if "supernet" in r]
    assert len(steps) == 4 and all(r["epoch_s"] > r["sandwich_step_s"] > 0 for r in steps)
    assert sum(r["chosen"] for r in steps) == 2  # one layout per family: the one its supernet trains in
    from benchmarks import tables

    assert "sandwich step (batch 4), s" in tables.subnet_eval(str(tmp_path))


def test_smoke_recipe(folder, study, tmp_path, monkeypatch, capsys):
    """Without and with the teacher: the distilled rows record T, alpha, the views and the teacher."""
    from rich.console import Console

    from kdsearch.config import load_config
    from kdsearch.search.runner import prepare

    stub_latency(monkeypatch)
    run = tmp_path / "run"
    prepare(load_config(study, {"run_dir": str(run)}), Console(quiet=True), study)  # a run folder with run.json
    bench(["recipe", "--data", str(folder), "--students", "plain6k", "--variants", "default", "--seeds", "0",
           "--epochs", "1", "--threads", "1", "--out", str(tmp_path / "out")])
    bench(["recipe", "--students", "plain6k", "--variants", "default", "--seeds", "0", "--epochs", "1", "--threads", "1",
           "--arms", "kd", "--teacher-run", str(run), "--out", str(tmp_path / "out")])
    ce, kd = rows(tmp_path / "out")
    assert (ce["arm"], kd["arm"]) == ("ce", "kd")
    settings = harness.provenance_of(kd)["settings"]
    assert (settings["teacher"], settings["temperature"], settings["alpha"], settings["views"]) == ("resnet20", 4.0, 0.9, 2)
    assert harness.provenance_of(ce)["settings"]["teacher"] is None
    capsys.readouterr()
    bench(["recipe", "--out", str(tmp_path / "out"), "--markdown"])
    assert "vs no teacher" in capsys.readouterr().out


def test_smoke_report(tmp_path, capsys):
    bench(["report", "--check"])
    assert "as the result files give it" in capsys.readouterr().out


def test_supernet_training_time_is_summed_over_the_processes_a_run_log_records(tmp_path):
    from benchmarks.run_times import supernet_seconds

    assert supernet_seconds(tmp_path / "run.log") is None
    log = tmp_path / "run.log"
    log.write_text("t INFO    $ kdsearch run a.toml\n"
                   "t INFO    supernet epoch 1/3: 5/30 (17%), 0:00:30 elapsed, about 0:02:30 left\n"
                   "t INFO    supernet epoch 2/3: 12/30 (40%), 0:01:10 elapsed, about 0:01:45 left\n"
                   "t INFO    $ kdsearch run a.toml\n"  # stopped, then continued by another process
                   "t INFO    supernet epoch 3/3: 25/30 (83%), 1:00:05 elapsed, about 0:00:10 left\n"
                   "t INFO    trial 0 finished\n")
    assert supernet_seconds(log) == 70 + 3605
