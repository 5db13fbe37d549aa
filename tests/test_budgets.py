"""Budgets shape the space: over-budget students are resampled, impossible budgets refused; known students first."""

import json

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from kdsearch.analysis.front import feasible
from kdsearch.cli import app
from kdsearch.runs.storage import make_storage
from kdsearch.search.budgets import cheapest_costs
from kdsearch.search.pruners import PRUNED_AT
from kdsearch.search.study import counts

runner = CliRunner()


def args(tmp_path, *extra):
    return ["run", "--dataset", "digits", "--teacher", "resnet20", "--no-pretrained", "--teacher-epochs", "1",
            "--epochs", "1", "--device", "cpu", "--run-dir", str(tmp_path / "run"), "--study-name", "b", *extra]


def load(run_dir):
    info = json.loads((run_dir / "run.json").read_text())
    return optuna.load_study(study_name=info["study_name"], storage=make_storage(info["storage"]))


@pytest.mark.slow
def test_over_budget_students_are_resampled_until_n_fit(tmp_path, monkeypatch):
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    result = runner.invoke(app, args(tmp_path, "--trials", "4", "--max-params", "5000"))
    assert result.exit_code == 0, result.output
    study = load(tmp_path / "run")
    trained = [t for t in study.trials if counts(t)]
    rejected = [t for t in study.trials if t.state == TrialState.PRUNED and t.user_attrs.get(PRUNED_AT) == 0]
    assert len(trained) == 4 and all(t.user_attrs["params"] <= 5000 and feasible(t) for t in trained)
    assert rejected and all(t.user_attrs["params"] > 5000 and not feasible(t) for t in rejected)
    assert all("latency_ms" not in t.user_attrs for t in rejected)  # too big: never timed
    assert f"{len(rejected)} over-budget student(s) were rejected untrained and resampled" in result.output


def test_a_budget_the_space_cannot_meet_exits_2_before_the_teacher(tmp_path, monkeypatch):
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    result = runner.invoke(app, args(tmp_path, "--trials", "2", "--max-params", "50"))
    assert result.exit_code == 2 and "the space cannot meet it, its smallest student has" in result.output
    assert result.output.count("\n") == 1 or "error:" in result.output.splitlines()[-1]
    assert not (tmp_path / "run" / "teachers").exists()


def test_cheapest_costs_are_the_low_end_of_every_range():
    from kdsearch.config import StudyConfig
    from kdsearch.data.datasets import load_data
    from kdsearch.config import DataConfig

    cfg = StudyConfig()
    cfg.space.update(stages=[1, 3], convs_per_stage=[1, 2], channels=[4, 64], fc_layers=[0, 2], kernel_size=[3, 5])
    data = load_data(DataConfig(dataset="digits"))
    low = cheapest_costs(cfg, data)
    # one stage of one 3x3 conv with 4 channels (bias unless batch norm) and the classifier
    conv_bn = 1 * 4 * 9 + 2 * 4  # conv without bias, BN weight and bias
    conv_bias = 1 * 4 * 9 + 4
    head = 4 * 10 + 10
    assert low["params"] == min(conv_bn, conv_bias) + head


@pytest.mark.slow
def test_enqueued_students_are_evaluated_first_and_once(tmp_path, monkeypatch):
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    known = [{"spec": {"channels": [8, 16], "convs_per_stage": 1, "kernel_size": 3, "batch_norm": True},
              "temperature": 4.0, "alpha": 0.5, "lr": 0.01}]
    path = tmp_path / "known.json"
    path.write_text(json.dumps(known))
    result = runner.invoke(app, args(tmp_path, "--trials", "2", "--enqueue", str(path)))
    assert result.exit_code == 0, result.output
    assert "1 known student(s) queued" in result.output
    study = load(tmp_path / "run")
    first = study.trials[0]
    assert first.user_attrs["arch"].startswith("conv[8,16]x1 k3 bn") and first.user_attrs["alpha"] == 0.5
    again = runner.invoke(app, args(tmp_path, "--trials", "3", "--enqueue", str(path)))
    assert again.exit_code == 0 and "queued already" in again.output, again.output
    assert sum("enqueued" in t.user_attrs for t in load(tmp_path / "run").trials) == 1
    path.write_text(json.dumps([{"spec": {"channels": [8]}}]))
    bad = runner.invoke(app, args(tmp_path, "--trials", "3", "--enqueue", str(path)))
    assert bad.exit_code == 2 and "lacks temperature, alpha, lr" in bad.output
