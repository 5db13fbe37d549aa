"""Picking rules: each picks its documented trial of a hand-made study; infeasible, pruned and dominated
trials never win; an unmet or malformed rule is one clear error."""

import math
import shutil
import warnings

import optuna
import pytest
from optuna.trial import TrialState, create_trial
from typer.testing import CliRunner

from kdsearch.analysis.front import feasible, pareto_trials
from kdsearch.analysis.pick import (Rule, accuracy_params_front, choose, knee, knee_distances, most_accurate_within,
                                    smallest_above)
from kdsearch.cli import app
from kdsearch.errors import KDSearchError
from kdsearch.runs.layout import RESULTS_FILE, final_dir

# number: (val accuracy, params, MACs, latency ms, constraint). Feasible Pareto members: 0, 1, 2, 3, 7.
TRIALS = {
    0: (0.80, 1_000, 10_000, 0.10, -0.9),
    1: (0.90, 2_000, 30_000, 0.20, -0.8),  # the knee (see test_knee_is_the_point_farthest_above_the_chord)
    2: (0.93, 10_000, 200_000, 0.50, -0.5),
    3: (0.95, 100_000, 1_000_000, 2.00, -0.1),  # the most accurate feasible student
    4: (0.99, 1_500, 5_000, 0.05, 0.5),  # over budget: would win every rule if it counted
    5: (0.85, 50_000, 500_000, 1.00, -0.2),  # dominated by trial 2
    7: (0.89, 3_000, 8_000, 0.30, -0.7),  # on the front only by MACs (trial 1 beats it on accuracy and params)
}
PRUNED = 6  # params 100, last val accuracy 0.99: would win too if it counted


@pytest.fixture(scope="module")
def study():
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["val_accuracy", "params", "macs"])
    for number in range(8):
        if number == PRUNED:
            study.add_trial(create_trial(state=TrialState.PRUNED, constraints={"max_params": -0.99},
                                         user_attrs={"params": 100, "macs": 1_000, "latency_ms": 0.01,
                                                     "arch": "tiny", "curve": [0.99], "pruned_at": 1}))
            continue
        acc, params, macs, latency, excess = TRIALS[number]
        study.add_trial(create_trial(values=[acc, params, macs], constraints={"max_params": excess},
                                     user_attrs={"params": params, "macs": macs, "latency_ms": latency,
                                                 "arch": f"conv[{number}]", "curve": [acc]}))
    return study


def test_the_hand_made_study_is_what_the_rules_assume(study):
    assert [t.number for t in study.trials] == list(range(8))
    assert sorted(t.number for t in pareto_trials(study)) == [0, 1, 2, 3, 7]
    assert [t.number for t in study.trials if not feasible(t)] == [4]


@pytest.mark.parametrize("rule,expected", [
    (Rule(min_accuracy=0.9), 1),  # 1, 2 and 3 qualify; 1 is the smallest (4 is smaller but over budget)
    (Rule(min_accuracy=0.92), 2),
    (Rule(min_accuracy=0.95), 3),  # exactly at the bar counts
    (Rule(min_accuracy=0.5), 0),
    (Rule(min_accuracy=0.85, max_macs=25_000), 7),  # the limits narrow the candidates: 1 has 30,000 MACs
    (Rule(max_params=50_000), 2),  # 0, 1, 2, 7 fit; 2 is the most accurate (5 is dominated, 4 over budget)
    (Rule(max_params=1_000_000), 3),
    (Rule(max_macs=9_000), 7),
    (Rule(max_latency_ms=0.25), 1),
    (Rule(max_params=5_000, max_macs=25_000), 7),  # limits combine: 1 is over the MACs limit
    (Rule(knee=True), 1),
])
def test_each_rule_picks_its_documented_trial(study, rule, expected):
    picked = choose(study, rule)
    assert picked.number == expected, picked.sentence
    assert picked.sentence.startswith(f"picked trial {expected}: ")


def test_reasons_say_why(study):
    assert choose(study, Rule(min_accuracy=0.9)).sentence == (
        "picked trial 1: the smallest Pareto student with val accuracy >= 90.00% (90.00%, 2,000 params)")
    assert choose(study, Rule(max_params=50_000, max_latency_ms=1)).sentence == (
        "picked trial 2: the most accurate Pareto student with <= 50,000 params, <= 1 ms latency "
        "(93.00%, 10,000 params, 0.5 ms)")
    assert "knee" in choose(study, Rule(knee=True)).reason and "trial 0 to trial 3" in choose(study, Rule(knee=True)).reason


def test_knee_is_the_point_farthest_above_the_chord(study):
    front = accuracy_params_front(pareto_trials(study))
    assert [t.number for t in front] == [0, 1, 2, 3]  # 7 is beaten on accuracy and params by 1
    # x = log10(params) over 3..5, y = accuracy over 0.80..0.95, both to [0, 1]; distance (y - x) / sqrt(2)
    want = [0.0, (0.10 / 0.15 - math.log10(2) / 2) / math.sqrt(2), (0.13 / 0.15 - 0.5) / math.sqrt(2), 0.0]
    assert knee_distances(front) == pytest.approx(want)
    assert knee(pareto_trials(study)).number == 1


def test_knee_of_a_front_without_a_bend_is_its_most_accurate_student(study):
    members = {t.number: t for t in pareto_trials(study)}
    assert knee([members[0], members[3]]).number == 3  # two students: both on the line
    assert knee([members[2]]).number == 2
    assert "only student" in knee([members[2]]).reason


def test_the_plain_functions_take_any_members(study):
    members = pareto_trials(study)
    assert smallest_above(members, 0.9).number == 1
    assert most_accurate_within(members, {"latency_ms": 0.25}).number == 1
    everyone = [t for t in study.trials if t.state == TrialState.COMPLETE]  # feasibility is the caller's choice here
    assert smallest_above(everyone, 0.9).number == 4


@pytest.mark.parametrize("rule,match", [
    (Rule(min_accuracy=0.96), r"no Pareto student has val accuracy >= 96.00% \(the most accurate has 95.00%, trial 3\)"),
    (Rule(max_params=500), r"no Pareto student has <= 500 params \(the least has 80.00%, 1,000 params\)"),
    (Rule(max_latency_ms=0.01), "no Pareto student has <= 0.01 ms latency"),
    (Rule(min_accuracy=0.9, max_macs=9_000), "val accuracy >= 90.00% and <= 9,000 MACs"),
])
def test_a_rule_no_student_meets_is_an_error(study, rule, match):
    with pytest.raises(KDSearchError, match=match):
        choose(study, rule)


def test_an_empty_study_has_nothing_to_pick():
    empty = optuna.create_study(directions=["maximize", "minimize"])
    with pytest.raises(KDSearchError, match="no complete trial"):
        choose(empty, Rule(knee=True))


@pytest.mark.parametrize("kwargs,match", [
    ({"min_accuracy": 90}, r"not a fraction in \(0, 1\]"),
    ({"min_accuracy": 1.01}, "not a fraction"),
    ({"min_accuracy": 0}, "not a fraction"),
    ({"min_accuracy": float("nan")}, "not a fraction"),
    ({"max_params": 0}, "--max-params: must be an integer >= 1"),
    ({"max_macs": 2.5}, "--max-macs: must be an integer"),
    ({"max_latency_ms": -1.0}, "--max-latency-ms: must be a number > 0"),
    ({"knee": True, "max_params": 10}, "--knee takes no other picking rule"),
])
def test_malformed_rules_are_refused(kwargs, match):
    with pytest.raises(KDSearchError, match=match):
        Rule(**kwargs)
    assert not Rule().given and Rule(max_macs=5).given


def test_no_rule_is_an_error(study):
    with pytest.raises(KDSearchError, match="no picking rule"):
        choose(study, Rule())


def test_cli_export_and_train_take_a_rule(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "knee"
    result = CliRunner().invoke(app, ["export", str(tiny_run), "--knee", "--out", str(out)])
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("picked trial ") and "front" in first, result.output
    number = int(first.split()[2].rstrip(":"))
    assert f"exported trial {number} " in result.output and (out / "student.onnx").is_file()

    for argv, match in [(["--min-accuracy", "1.01"], "not a fraction"),
                        (["--min-accuracy", "90"], "write 0.9 for 90%"),
                        (["--knee", "--trial", "0"], "not both"),
                        (["--max-params", "1"], "no Pareto student has <= 1 params"),
                        ([], "name the student to export")]:
        result = CliRunner().invoke(app, ["export", str(tiny_run), "--out", str(tmp_path / "x"), *argv])
        assert result.exit_code == 2 and match in result.output and result.output.count("\n") == 1, (argv, result.output)
    assert not (tmp_path / "x").exists()

    for argv in (["--knee", "--front"], ["--min-accuracy", "0.5", "--trials", "1,2"], ["--max-macs", "9", "--trial", "1"]):
        result = CliRunner().invoke(app, ["train", str(tiny_run), "--device", "cpu", *argv])
        assert result.exit_code == 2 and "not both" in result.output and result.output.count("\n") == 1, result.output

    copy = tmp_path / "run"  # final training in a copy: other tests expect no final training of some trials
    shutil.copytree(tiny_run, copy, ignore=shutil.ignore_patterns("final", "export"))
    result = CliRunner().invoke(app, ["train", str(copy), "--device", "cpu", "--knee", "--epochs", "1",
                                      "--lr", "0.01", "--no-baseline"])
    assert result.exit_code == 0 and result.output.startswith(f"picked trial {number}: "), result.output
    assert (final_dir(copy, number) / RESULTS_FILE).is_file()
