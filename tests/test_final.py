"""Final training: the chosen student retrained with and without its teacher, resumable, exportable."""

import json

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from kdsearch.cli import app
from kdsearch.report import open_run
from kdsearch.final import RESULTS_FILE, final_dir, model_dir

TRIAL = 3  # the export tests assume trial 0 has no final training


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))


def train(run, *argv):
    return CliRunner().invoke(app, ["train", str(run), "--trial", str(TRIAL), "--device", "cpu", *argv])


def test_train_with_and_without_teacher_then_resume_and_export(tiny_run, tmp_path, cache_env):
    result = train(tiny_run, "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert "2 to train" in result.output and "distillation adds" in result.output
    stored = json.loads((final_dir(tiny_run, TRIAL) / RESULTS_FILE).read_text())
    runs = {r["mode"]: r for r in stored["runs"]}
    assert set(runs) == {"kd", "ce"} and all(len(r["curve"]) == 2 and 0 <= r["test_accuracy"] <= 1 for r in runs.values())
    assert stored["setup"]["epochs"] == 2
    assert stored["setup"]["train_images"] == open_run(tiny_run).study.user_attrs["data"]["train"]  # no val images
    assert stored["summary"]["kd_gain_points"] == pytest.approx(
        100 * (runs["kd"]["test_accuracy"] - runs["ce"]["test_accuracy"]))
    kd = load_file(str(model_dir(tiny_run, TRIAL, "kd", 0) / "student.safetensors"))
    ce = load_file(str(model_dir(tiny_run, TRIAL, "ce", 0) / "student.safetensors"))
    assert any(not (kd[k] == ce[k]).all() for k in kd)  # the teacher changed what was learned

    again = train(tiny_run, "--epochs", "2")  # finished runs are kept, not retrained
    assert again.exit_code == 0 and "0 to train, 2 already done" in again.output, again.output
    assert json.loads((final_dir(tiny_run, TRIAL) / RESULTS_FILE).read_text())["runs"] == stored["runs"]

    out = tmp_path / "exp"
    exported = CliRunner().invoke(app, ["export", str(tiny_run), "--trial", str(TRIAL), "--out", str(out)])
    assert exported.exit_code == 0 and "final weights" in exported.output, exported.output
    info = json.loads((out / "export.json").read_text())
    assert info["weights"] == "final" and info["test_accuracy"] == runs["kd"]["test_accuracy"] and info["epochs"] == 2


@pytest.mark.parametrize("argv,match", [
    (["--epochs", "0"], "at least 1"),
    (["--seeds", "a,b"], "comma list"),
])
def test_bad_train_requests_exit_2_with_one_line(tiny_run, cache_env, argv, match):
    result = train(tiny_run, *argv)
    assert result.exit_code == 2 and match in result.output and result.output.count("\n") == 1, result.output


def test_a_trial_without_a_student_cannot_be_retrained(tiny_run, cache_env):
    result = CliRunner().invoke(app, ["train", str(tiny_run), "--trial", "42"])
    assert result.exit_code == 2 and "no trial 42" in result.output
