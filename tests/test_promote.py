"""Promotion: the best students of each size band train again at a longer rung, where the front is read."""

import json

import pytest
from typer.testing import CliRunner

from kdsearch.analysis.front import pareto_trials
from kdsearch.cli import app
from kdsearch.runs.run import open_run
from kdsearch.search.promote import searched, size_band, to_promote
from kdsearch.runs.trial_attrs import rung_of
from kdsearch.search.pruners import finished_trials
from kdsearch.search.study import n_finished


def run(tmp_path, *extra):
    return CliRunner().invoke(app, [
        "run", "--dataset", "digits", "--teacher", "resnet20", "--no-pretrained", "--teacher-epochs", "1",
        "--epochs", "1", "--subset", "200", "--device", "cpu", "--run-dir", str(tmp_path / "run"), "--trials", "5",
        "--objectives", "accuracy,params,macs", "--in-process", "--promote", "1", "--promote-epochs", "2", *extra])


@pytest.mark.slow
def test_the_best_of_each_size_band_train_again_and_the_front_is_read_there(tmp_path, untimed):
    result = run(tmp_path, "--promote-by", "band")
    assert result.exit_code == 0, result.output
    study = open_run(tmp_path / "run").study
    short = [t for t in study.trials if searched(t)]
    rungs = [t for t in study.trials if rung_of(t)]
    bands = {size_band(t.user_attrs["params"]) for t in short}
    assert len(rungs) == len(bands) and "promoting the 1 most accurate student(s) of each size band" in result.output
    for band in bands:  # the promoted one is the band's most accurate short trial
        best = max((t for t in short if size_band(t.user_attrs["params"]) == band), key=lambda t: t.values[0])
        rung = next(t for t in rungs if rung_of(t)["from"] == best.number)
        assert rung.state.name == "COMPLETE" and rung.user_attrs["spec"] == best.user_attrs["spec"]
        assert len(rung.user_attrs["curve"]) == 2 and rung_of(rung)["epochs"] == 2 and rung_of(rung)["images"] == 0
        assert rung.user_attrs["alpha"] == best.user_attrs["alpha"] and rung.user_attrs["lr"] == best.user_attrs["lr"]
    from kdsearch.runs.layout import rung_checkpoint

    assert not any(rung_checkpoint(tmp_path / "run", rung_of(t)).exists() for t in rungs)  # removed once complete
    assert n_finished(study) == 5  # rung trials do not count toward --trials ...
    assert not any(rung_of(t) for t in finished_trials(study))  # ... nor enter the pruner's history
    front = pareto_trials(study)
    assert front and all(rung_of(t) for t in front)  # the front at the rung, never a mix of budgets
    # the same command again: everything promoted already, nothing trains
    again = run(tmp_path, "--promote-by", "band")
    assert again.exit_code == 0 and "promoting" not in again.output, again.output
    status = " ".join(CliRunner().invoke(app, ["status", str(tmp_path / "run")]).output.split())
    assert "5 of 5 trials finished" in status  # the status line counts as --trials does ...
    assert f"{len(rungs)} promoted student(s) trained at the rung" in status  # ... and names the rung apart
    assert len([t for t in open_run(tmp_path / "run").study.trials if rung_of(t)]) == len(rungs)
    assert to_promote(open_run(tmp_path / "run").study, 1, {"epochs": 2, "images": 0}, "band") == []
    # a rung trial retrains like any other, its search accuracy the rung's
    number = front[0].number
    trained = CliRunner().invoke(app, ["train", str(tmp_path / "run"), "--trial", str(number), "--epochs", "1",
                                       "--lr-grid", "1", "--device", "cpu", "--references", "none"])
    assert trained.exit_code == 0, trained.output
    stored = json.loads((tmp_path / "run" / "final" / f"{number:05d}" / "results.json").read_text())
    assert stored["trial"]["search_epochs"] == 2 and stored["trial"]["rung"]["from"] == rung_of(front[0])["from"]


def test_by_default_each_family_of_a_band_promotes_its_own_best():
    """Short trials misjudge families as a whole (a plain student led 3 epochs on a subset, a MobileNetV2-style
    one 10 on all images): each family's best of a band is promoted, not only the band's best two."""
    import optuna
    from optuna.distributions import FloatDistribution

    study = optuna.create_study(directions=["maximize", "minimize"])
    for number, (family, params, acc) in enumerate([("plain", 3000, 0.47), ("plain", 3100, 0.46),
                                                     ("inverted", 3200, 0.40), ("inverted", 2900, 0.41),
                                                     ("residual", 2600, 0.38), ("plain", 9000, 0.52)]):
        study.add_trial(optuna.trial.create_trial(
            values=[acc, params], params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
            user_attrs={"params": params, "spec": {"family": family}}))
    rung = {"epochs": 10, "images": 0}
    assert [t.number for t in to_promote(study, 1, rung, "band")] == [0, 5]  # band [2048, 4096): plain's best only
    assert sorted(t.number for t in to_promote(study, 1, rung)) == [0, 3, 4, 5]  # each family's best of each band
    assert sorted(t.number for t in to_promote(study, 2, rung, "band")) == [0, 1, 5]


def test_a_promotion_stopped_with_its_process_is_tried_again_and_one_that_failed_twice_is_not():
    """A rung trial killed with its process (a session's end) continues from its epoch checkpoint when promoted
    again, however often that happens; one that fails by an error of its own is tried once more."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState

    from kdsearch.runs.layout import rung_checkpoint
    from kdsearch.runs.trial_attrs import RUNG, STOPPED

    study = optuna.create_study(directions=["maximize", "minimize"])
    dist = {"x": FloatDistribution(0, 1)}
    for number, params in enumerate([3000, 9000]):
        study.add_trial(optuna.trial.create_trial(values=[0.5, params], params={"x": 0.5}, distributions=dist,
                                                  user_attrs={"params": params, "spec": {"family": "plain"}}))
    rung = {"epochs": 10, "images": 0}

    def failed(source: int, **attrs) -> None:
        study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, params={"x": 0.5}, distributions=dist,
                                                  user_attrs={RUNG: {**rung, "from": source}, **attrs}))

    for _ in range(3):
        failed(0, **{STOPPED: True})
    failed(1)
    assert [t.number for t in to_promote(study, 1, rung)] == [0, 1]
    failed(1)
    assert [t.number for t in to_promote(study, 1, rung)] == [0]
    assert rung_checkpoint("RUN", {**rung, "from": 0}) == rung_checkpoint("RUN", {**rung, "from": 0, "x": 1})
    assert rung_checkpoint("RUN", {**rung, "from": 0}) != rung_checkpoint("RUN", {"epochs": 20, "images": 0, "from": 0})


@pytest.mark.slow
def test_a_rung_trial_stopped_mid_training_continues_from_its_last_epoch(tmp_path, monkeypatch, untimed):
    import kdsearch.training.checkpoint as checkpoint
    from kdsearch.runs.layout import rung_checkpoint
    from kdsearch.runs.trial_attrs import RESUMED_AT
    from kdsearch.search.workers import fail_dead_trial

    monkeypatch.setattr(checkpoint, "SAVE_EVERY_S", 0.0)
    save = checkpoint.save

    def save_then_stop(resume, key, epoch, *args):  # the process stops right after the first epoch's checkpoint
        save(resume, key, epoch, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_stop)
    stopped = run(tmp_path, "--promote-by", "band", "--promote-epochs", "3")
    assert stopped.exit_code != 0
    study = open_run(tmp_path / "run").study
    [first] = [t for t in study.trials if rung_of(t)]  # the first promotion, stopped after its first epoch
    assert first.state.name == "RUNNING" and rung_checkpoint(tmp_path / "run", rung_of(first)).is_file()
    fail_dead_trial(study, first, "worker stopped (killed or lost)", retries=1)  # as the next run finds it
    monkeypatch.setattr(checkpoint, "save", save)
    again = run(tmp_path, "--promote-by", "band", "--promote-epochs", "3")
    assert again.exit_code == 0, again.output
    rungs = [t for t in open_run(tmp_path / "run").study.trials if rung_of(t) and t.state.name == "COMPLETE"]
    resumed = next(t for t in rungs if rung_of(t)["from"] == rung_of(first)["from"])
    assert resumed.user_attrs[RESUMED_AT] == 1 and len(resumed.user_attrs["curve"]) == 3
    assert "(continued from epoch 1)" in again.output
    assert not rung_checkpoint(tmp_path / "run", rung_of(first)).exists()
