"""The Python API: the README's example runs as written, and each function does what the commands do."""

import json
import re
from pathlib import Path

import pytest
import torch

import kdsearch
from kdsearch import api
from kdsearch.analysis.front import pareto_trials
from kdsearch.errors import KDSearchError
from kdsearch.models.students.io import load_student
from kdsearch.runs.layout import trial_dir
from kdsearch.runs.run import Run

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    """The first ```python block after the '## Python API' heading."""
    text = README.read_text()
    section = text[text.index("\n## Python API\n"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs(tiny_run, capsys):
    pytest.importorskip("pandas")
    code = readme_example()
    assert 'RUN = "runs/digits-demo"' in code
    ns: dict = {}
    exec(compile(code.replace('"runs/digits-demo"', repr(str(tiny_run))), "README.md", "exec"), ns)
    members = pareto_trials(kdsearch.open_run(tiny_run).study)
    assert sorted(ns["front"].number) == sorted(t.number for t in members)
    assert list(ns["front"].params) == sorted(ns["front"].params)
    assert len(ns["table"]) == 6 and (ns["table"].state == "pruned").sum() == 1
    assert isinstance(ns["model"], torch.nn.Module) and not ns["model"].training
    folder = Path(ns["folder"])
    assert (folder / "student.onnx").is_file() and folder.parent == tiny_run / "export"
    out = capsys.readouterr().out
    picked = int(re.search(r"picked trial (\d+): ", out).group(1))
    assert json.loads((folder / "export.json").read_text())["trial"] == picked
    assert "val_accuracy" in out and "complete" in out


def test_trials_and_front_frames(tiny_run):
    pytest.importorskip("pandas")
    run = api.open_run(tiny_run)
    df = api.trials(run)
    assert list(df.columns[:len(api.COLUMNS)]) == api.COLUMNS and list(df.number) == list(range(6))
    assert "state" not in df.columns[len(api.COLUMNS):] and "datetime_start" in df.columns  # Optuna's columns follow
    row = df[df.number == 2].iloc[0]
    assert row.state == "pruned" and not row.pareto and row.val_accuracy == run.study.trials[2].user_attrs["curve"][-1]
    for t in run.study.trials:
        got = df[df.number == t.number].iloc[0]
        assert got.params == t.user_attrs["params"] and got.arch == t.user_attrs["arch"]
    front = api.front(tiny_run)
    assert set(front.number) == {t.number for t in pareto_trials(run.study)} and front.pareto.all() and front.feasible.all()


def test_load_student_from_a_run_or_a_folder(tiny_run):
    model = api.load_student(tiny_run, 1, weights="search")
    again, _ = load_student(trial_dir(tiny_run, 1))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    from_folder = kdsearch.load_student(trial_dir(tiny_run, 1))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), from_folder.state_dict().values()))
    with pytest.raises(KDSearchError, match="no trial 42"):
        api.load_student(tiny_run, 42)
    with pytest.raises(KDSearchError, match="trial number or a picking rule"):
        api.load_student(tiny_run)
    with pytest.raises(KDSearchError, match="not a run folder"):
        api.load_student(trial_dir(tiny_run, 1), 1)


def test_export_by_number_or_rule(tiny_run, tmp_path, capsys):
    folder = api.export(str(tiny_run), 1, out=tmp_path / "one", weights="search")
    assert json.loads((folder / "export.json").read_text())["trial"] == 1
    best = max(pareto_trials(kdsearch.open_run(tiny_run).study), key=lambda t: (t.values[0], -t.user_attrs["params"]))
    folder = api.export(tiny_run, out=tmp_path / "best", weights="search", max_params=10**9)
    assert json.loads((folder / "export.json").read_text())["trial"] == best.number
    assert f"picked trial {best.number}: the most accurate" in capsys.readouterr().out
    for kwargs, match in [({"trial": 1, "knee": True}, "not both"), ({"min_accuracy": 95}, "not a fraction"),
                          ({"knees": True}, "unknown argument"), ({}, "trial number or a picking rule")]:
        with pytest.raises(KDSearchError, match=match):
            api.export(tiny_run, out=tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_run_overrides_take_dotted_or_double_underscore_keys(monkeypatch, tmp_path):
    seen = {}

    def fake_search(cfg, console, study_file, workers=1, in_process=False, callbacks=None):
        seen.update(cfg=cfg, study_file=study_file, workers=workers)
        return "study"

    monkeypatch.setattr("kdsearch.search.runner.run_search", fake_search)
    study_file = tmp_path / "s.toml"
    study_file.write_text('[study]\nepochs = 3\n[data]\ndataset = "digits"\n')
    assert kdsearch.run(study_file, trials=5, data__subset=500, objectives="accuracy,params,macs",
                        **{"teacher.name": "resnet20"}) == "study"
    cfg = seen["cfg"]
    assert (cfg.trials, cfg.epochs, cfg.data.subset, cfg.data.dataset, cfg.teacher.name) == (5, 3, 500, "digits", "resnet20")
    assert cfg.objectives == ["accuracy", "params", "macs"] and seen["study_file"] == study_file
    with pytest.raises(KDSearchError, match="unknown key 'subsett'"):
        kdsearch.run(None, data__subsett=5)


def test_retrain_passes_its_choice_to_final_training(tiny_run, monkeypatch):
    calls = []
    monkeypatch.setattr("kdsearch.final.train_final", lambda run, numbers, **kw: calls.append((run, numbers, kw)) or {})
    kdsearch.retrain(tiny_run, 3, epochs=1, seeds=(0, 1), lr=0.01)
    run, numbers, kw = calls[-1]
    assert isinstance(run, Run) and numbers == [3] and kw["epochs"] == 1 and kw["seeds"] == [0, 1]
    assert kw["policy"].fixed == 0.01 and not kw["front"]
    kdsearch.retrain(tiny_run, front=True, lr_grid=[1])
    assert calls[-1][1] == [] and calls[-1][2]["front"] and calls[-1][2]["policy"].grid == (1,)
    kdsearch.retrain(tiny_run, knee=True)
    assert calls[-1][1] == [pick_knee(tiny_run)]
    with pytest.raises(KDSearchError, match="not several"):
        kdsearch.retrain(tiny_run, [1], knee=True)


def pick_knee(run_dir):
    from kdsearch.analysis.pick import Rule, choose

    return choose(kdsearch.open_run(run_dir).study, Rule(knee=True)).number


def test_importing_kdsearch_stays_cheap():
    import subprocess
    import sys

    code = "import sys, kdsearch; print(sorted(m for m in ('torch', 'optuna', 'pandas') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


SCRIPT = '''import kdsearch

study = kdsearch.run(None, name="s", run_dir={run_dir!r}, trials=1, epochs=1, device="cpu", threads=1,
                     data__dataset="digits", data__subset=100, teacher__name="resnet20", teacher__pretrained=False,
                     teacher__epochs=0, teacher__allow_chance=True, train__views=1, space__family="plain")
print("finished", len([t for t in study.trials if t.state.name == "COMPLETE"]))
'''


@pytest.mark.slow
def test_the_api_runs_a_study_from_a_script_without_a_main_guard_and_from_stdin(tmp_path):
    """Issue 36: `kdsearch.run(...)` at a script's top level (no `if __name__ == "__main__":`) made every spawned
    worker run the script again (tracebacks, then "worker processes died 5 times in a row"), and `python - <<EOF`
    failed with FileNotFoundError '<stdin>'. Both finish a (tiny) digits study in supervised workers."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "KDSEARCH_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(README.parent), os.environ.get("PYTHONPATH", "")])}
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(run_dir=str(tmp_path / "from-file")))
    ran = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0 and "finished 1" in ran.stdout, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert "Traceback" not in ran.stdout + ran.stderr
    piped = subprocess.run([sys.executable, "-"], input=SCRIPT.format(run_dir=str(tmp_path / "from-stdin")),
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert piped.returncode == 0 and "finished 1" in piped.stdout, piped.stdout[-3000:] + piped.stderr[-3000:]
    assert "Traceback" not in piped.stdout + piped.stderr


def test_worker_processes_are_launched_with_no_main_module_to_import():
    """What makes the test above pass, checked directly: the spawn preparation data a worker receives names no
    main module (neither a path nor a module name), and the caller's __main__ is back afterwards."""
    import multiprocessing.spawn
    import sys

    from kdsearch.search.spawn import main_module_hidden, worker_context

    main = sys.modules["__main__"]
    with main_module_hidden():
        data = multiprocessing.spawn.get_preparation_data("kdsearch-worker-0")
    assert "init_main_from_path" not in data and "init_main_from_name" not in data
    assert sys.modules["__main__"] is main
    assert worker_context().Process._Popen.__qualname__.startswith("WorkerProcess")


def test_a_worker_process_starts_with_the_callers_environment_and_directory(tmp_path, monkeypatch):
    """Workers are forked from a fork server started earlier (search.spawn): they must still see the environment
    and working directory of the moment they start, as a spawned process does (KDSEARCH_CACHE, CUDA_VISIBLE_DEVICES,
    a relative run folder)."""
    import subprocess

    from kdsearch.search.spawn import start_worker_server, worker_context

    start_worker_server()  # (already running in a test process that ran a study before: the point)
    monkeypatch.setenv("KDSEARCH_TEST_MARKER", "set-after-the-server-started")
    monkeypatch.chdir(tmp_path)
    process = worker_context().Process(target=subprocess.run, args=(["sh", "-c", 'echo "$KDSEARCH_TEST_MARKER" > seen'],))
    process.start()
    process.join()
    assert process.exitcode == 0
    assert (tmp_path / "seen").read_text().strip() == "set-after-the-server-started"  # (written in its directory)
