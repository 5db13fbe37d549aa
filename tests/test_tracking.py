"""Callbacks and trackers see every trial a run finishes; RUN/run.log keeps what it printed; an image folder
of mixed sizes trains once resized (--image-size)."""

import json
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import kdsearch
from kdsearch.cli import app
from kdsearch.config import DataConfig
from kdsearch.data.datasets import load_data
from kdsearch.errors import KDSearchError
from kdsearch.search.tracking import trial_record

SIZES = [(8, 8), (12, 9), (10, 14), (16, 16)]  # width x height: mixed, and some not square


def mixed_folder(root, sizes=SIZES):
    """3 classes whose colour gives the class away, in images of the given sizes."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 6)):
        for c, name in enumerate(["red", "green", "blue"]):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                w, h = sizes[i % len(sizes)]
                img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
                img[..., c] += 150
                Image.fromarray(img).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))


def settings(run_dir, data_dir, **extra):
    return {"data__dataset": "imagefolder", "data__data_dir": str(data_dir), "teacher__name": "resnet20",
            "teacher__pretrained": False, "teacher__epochs": 1, "epochs": 2, "device": "cpu", "threads": 1,
            "train__views": 2, "pruner__name": "none", "run_dir": str(run_dir), "name": "tracked", **extra}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A 3-trial study on a mixed-size image folder (resized to 8x8), in a worker process, with a callback and
    MLflow tracking to a local store."""
    pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("tracked")
    seen = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KDSEARCH_CACHE", str(root / "cache"))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'store.db'}")
        study = kdsearch.run(callbacks=[lambda study, trial: seen.append((study.study_name, trial))],
                             **settings(root / "run", mixed_folder(root / "imgs"), trials=3, tracking="mlflow",
                                        data__image_size=8, train__batch_size=16))
    return root, study, seen


def test_a_callback_receives_every_trial(tracked):
    _, study, seen = tracked
    assert sorted(t.number for _, t in seen) == [t.number for t in study.trials] == [0, 1, 2]
    assert {name for name, _ in seen} == {"tracked"}
    got = {t.number: t for _, t in seen}
    for t in study.trials:  # the trial as stored, finished
        assert got[t.number].state == t.state and got[t.number].values == t.values
        assert got[t.number].user_attrs["curve"] == t.user_attrs["curve"]


def test_mlflow_records_each_trial_with_its_curve(tracked):
    from mlflow import MlflowClient

    root, study, _ = tracked
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'store.db'}")
    experiment = client.get_experiment_by_name("tracked")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["trial 0", "trial 1", "trial 2"]
    for t in study.trials:
        run = runs[f"trial {t.number}"]
        assert run.info.status == "FINISHED" and run.data.tags["optuna.trial"] == str(t.number)
        assert run.data.params["arch"] == t.user_attrs["arch"]
        assert all(run.data.params[k] == str(v) for k, v in t.params.items())
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == \
            [(i, pytest.approx(v)) for i, v in enumerate(t.user_attrs["curve"], start=1)]
        assert run.data.metrics["params"] == t.user_attrs["params"] == t.values[1]
        assert run.data.metrics["latency_ms"] == pytest.approx(t.user_attrs["latency_ms"])


def test_a_mixed_size_folder_trains_after_resizing(tracked):
    root, study, _ = tracked
    assert study.user_attrs["data"]["train"] > 0 and len(study.trials) == 3
    assert all(t.user_attrs["spec"]["image_size"] == 8 and t.user_attrs["curve"] for t in study.trials)
    config = json.loads((root / "run" / "run.json").read_text())["config"]
    assert config["data"]["image_size"] == 8 and config["train"]["batch_size"] == 16


def test_run_log_keeps_what_the_run_printed(tracked):
    root, study, _ = tracked
    log = (root / "run" / "run.log").read_text()
    assert "INFO    $ " in log and "teacher resnet20: val" in log and "tracking each trial in MLflow" in log
    for t in study.trials:  # printed by the worker process, logged by it
        assert f"trial {t.number:3d} complete val" in log


def test_resuming_with_another_batch_size_is_refused_like_the_study_file_setting(tracked, capsys):
    root, _, _ = tracked
    with pytest.raises(KDSearchError, match=r"train.batch_size 16 \(now 32\)"):
        kdsearch.run(**settings(root / "run", root / "imgs", trials=4, data__image_size=8, train__batch_size=32))
    log = (root / "run" / "run.log").read_text()
    assert "ERROR   error: study 'tracked' was run with other settings" in log  # a resumed run appends


def test_callback_stop_starts_no_new_trial_in_process(tmp_path):
    def stop_after_first(study, trial):
        study.stop()

    study = kdsearch.run(callbacks=[stop_after_first], in_process=True,
                         **settings(tmp_path / "run", mixed_folder(tmp_path / "imgs", [(8, 8)]), trials=3, epochs=1))
    assert len(study.trials) == 1
    with pytest.raises(KDSearchError, match="not callable"):
        kdsearch.run(callbacks=[42], **settings(tmp_path / "r2", tmp_path / "imgs", trials=1))


def test_mixed_sizes_without_image_size_is_one_line(tmp_path):
    folder = mixed_folder(tmp_path / "mixed")
    with pytest.raises(KDSearchError, match=r"is 12x9 but .* is 8x8: pass --image-size N"):
        load_data(DataConfig(dataset="imagefolder", data_dir=str(folder)))
    wide = mixed_folder(tmp_path / "wide", [(12, 9)])
    with pytest.raises(KDSearchError, match=r"is 12x9, not square: pass --image-size N"):
        load_data(DataConfig(dataset="imagefolder", data_dir=str(wide)))
    data = load_data(DataConfig(dataset="imagefolder", data_dir=str(wide), image_size=6))
    assert tuple(data.train.x.shape[1:]) == (3, 6, 6) and data.image_size == 6
    digits = load_data(DataConfig(dataset="digits", image_size=12))  # any dataset: resized after decoding
    assert tuple(digits.test.x.shape[1:]) == (1, 12, 12)


def test_a_missing_tracker_package_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--dataset", "digits", "--run-dir", str(run_dir), "--tracking", "wandb"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "pip install 'kdsearch[tracking-wandb]'" in result.output and not run_dir.exists()
    result = CliRunner().invoke(app, ["run", "--dataset", "digits", "--run-dir", str(run_dir), "--tracking", "comet"])
    assert result.exit_code == 2 and "'comet' is not one of none, mlflow, wandb, tensorboard" in result.output


def test_trial_record_leaves_out_rejected_students():
    import optuna

    from kdsearch.search.pruners import PRUNED_AT

    study = optuna.create_study()
    for epoch in (0, 1):  # rejected over budget before training; pruned after an epoch
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs={PRUNED_AT: epoch}))
    assert trial_record(study.trials[0]) is None and trial_record(study.trials[1])["state"] == "pruned"


def toy_study():
    """Two finished trials as a search stores them (one complete, one pruned after two epochs)."""
    import optuna

    study = optuna.create_study(study_name="toy", directions=["maximize", "minimize"])
    for i, state in enumerate([optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]):
        curve = [0.5, 0.6, 0.7][: 3 - i]
        study.add_trial(optuna.trial.create_trial(
            state=state, values=[curve[-1], 1000] if i == 0 else None, params={"width": 8 + i},
            distributions={"width": optuna.distributions.IntDistribution(4, 64)},
            user_attrs={"curve": curve, "params": 1000 + i, "arch": f"conv[{8 + i}]", "temperature": 2.0,
                        "alpha": 0.5, "lr": 0.1, "latency_ms": 0.5, "pruned_at": 2 if i else None}))
    return study


def track(name, tmp_path):
    from rich.console import Console

    from kdsearch.config import load_config
    from kdsearch.search.tracking import make_tracker

    tracker = make_tracker(load_config(None, {"tracking": name, "run_dir": str(tmp_path), "name": "toy"}), Console())
    study = toy_study()
    for trial in study.trials:
        tracker(study, trial)
    tracker.close()
    assert not tracker.warned
    return study


def test_tensorboard_logs_each_trial_where_installed(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    study = track("tensorboard", tmp_path)
    for t in study.trials:
        events = EventAccumulator(str(tmp_path / "tensorboard" / f"trial-{t.number:05d}")).Reload()
        curve = [(e.step, e.value) for e in events.Scalars("val_accuracy")]
        assert curve == [(i, pytest.approx(v)) for i, v in enumerate(t.user_attrs["curve"], start=1)]
        assert events.Scalars("params")[0].value == t.user_attrs["params"]


def test_wandb_logs_each_trial_offline_where_installed(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    track("wandb", tmp_path)
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 2
