"""End to end through the CLI on tiny generated data: run, resume, Pareto table, bad input."""

import json

import optuna
import pytest
import torch
from typer.testing import CliRunner

from kdsearch.cli import app
from kdsearch.errors import KDSearchError
from kdsearch.runs.layout import trial_dir
from kdsearch.runs.storage import make_storage
from kdsearch.search.pruners import finished_trials
from kdsearch.training.distill import NonFiniteLoss, fit

runner = CliRunner()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))


def args(folder, run_dir, *extra):
    return ["run", "--dataset", "imagefolder", "--data-dir", str(folder), "--teacher", "resnet20",
            "--no-pretrained", "--teacher-epochs", "1", "--epochs", "2", "--device", "cpu",
            "--run-dir", str(run_dir), "--study-name", "tiny", *extra]


def load(run_dir):
    info = json.loads((run_dir / "run.json").read_text())
    return optuna.load_study(study_name=info["study_name"], storage=make_storage(info["storage"]))


@pytest.mark.slow
def test_run_resume_and_report(folder, tmp_path):
    run_dir = tmp_path / "run"
    result = runner.invoke(app, args(folder, run_dir, "--trials", "3"))
    assert result.exit_code == 0, result.output
    assert "Pareto front" in result.output and "teacher resnet20" in result.output
    assert "estimate on cpu" in result.output and "teacher resnet20 training 1 epoch(s) ≈" in result.output
    assert "estimate: teacher logits for" in result.output and "estimate: 3 trials of a mid-size student" in result.output
    # an estimate, said to be one, with how it was made (issue 36: "at most" was not a bound)
    assert "at most" not in result.output and "from a few timed steps of it x its epochs x the trials" in result.output
    # the teacher-logit cache is built once, before the first trial, and shared by all trials
    assert result.output.count("teacher logits:") == 1 and "images built" in result.output
    assert len(list((run_dir / "logits").glob("*.safetensors"))) == 1
    study = load(run_dir)
    assert len(finished_trials(study)) == 3
    assert study.metric_names == ["val_accuracy", "params", "latency_ms"]
    assert study.user_attrs["teacher"]["name"] == "resnet20"
    for t in study.trials:
        assert (trial_dir(run_dir, t.number) / "student.safetensors").is_file()
        assert len(t.user_attrs["curve"]) >= 1

    # the same command again: the study already holds 3 finished trials, nothing runs and nothing is
    # prepared (no data, teacher or logit cache) or recorded
    attrs = load(run_dir).user_attrs
    result = runner.invoke(app, args(folder, run_dir, "--trials", "3"))
    assert result.exit_code == 0 and "nothing to run" in result.output
    assert "train," not in result.output and "teacher logits" not in result.output, result.output
    assert load(run_dir).user_attrs == attrs
    assert len(load(run_dir).trials) == 3
    # --trials 5 means five finished in all, not five more; the teacher comes from the cache
    result = runner.invoke(app, args(folder, run_dir, "--trials", "5"))
    assert result.exit_code == 0, result.output
    assert "(cached)" in result.output and "images loaded" in result.output
    # once trials are measured, the estimate is their median times the trials left
    assert "estimate: 2 trials left x " in result.output, result.output
    assert "a trial (the median of the 3 trial(s) measured so far) ≈" in result.output and "at most" not in result.output
    assert len(list((run_dir / "logits").glob("*.safetensors"))) == 1
    assert len(finished_trials(load(run_dir))) == 5

    result = runner.invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0 and "Pareto front" in result.output


def test_failed_trial_does_not_stop_the_study(folder, tmp_path, monkeypatch):
    real = fit
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 1:
            raise NonFiniteLoss("training loss became nan")
        return real(*a, **k)

    monkeypatch.setattr("kdsearch.search.evaluation.pertrial.fit", flaky)
    run_dir = tmp_path / "run"
    result = runner.invoke(app, args(folder, run_dir, "--trials", "2", "--pruner", "none", "--in-process"))
    assert result.exit_code == 0, result.output
    states = [t.state for t in load(run_dir).trials]
    assert states.count(optuna.trial.TrialState.FAIL) == 1
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2


@pytest.mark.slow
def test_repeatable_with_a_seed(folder, tmp_path):
    runs = []
    for name in ("a", "b"):
        result = runner.invoke(app, args(folder, tmp_path / name, "--trials", "2", "--seed", "3"))
        assert result.exit_code == 0, result.output
        runs.append([(t.params, t.user_attrs["curve"]) for t in load(tmp_path / name).trials])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("extra,match", [
    (["--dataset", "imagenet"], "not one of"),
    (["--teacher", "resnet9000"], "resnet9000"),
    (["--sampler", "grid"], "not one of"),
])
def test_bad_flags_exit_2_with_one_line(folder, tmp_path, extra, match):
    result = runner.invoke(app, args(folder, tmp_path / "r", "--trials", "1", *extra))
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and match in lines[0], result.output


@pytest.mark.parametrize("argv,match", [
    (["run", "--trails", "3"], "No such option: --trails"),
    (["run", "--trials", "many"], "Invalid value for '--trials'"),
    (["train"], "Missing argument"),
    (["export", "RUN", "--trial"], "requires an argument"),
    (["nosuchcommand"], "No such command"),
])
def test_usage_errors_are_one_line_and_exit_2(argv, match):
    """Issue 36: typer's usage errors were 4-6-line boxes where the README promises one line."""
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], result.output


def test_version_and_help():
    from kdsearch import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"kdsearch {__version__}"
    assert runner.invoke(app, ["run", "--help"]).exit_code == 0
    bare = runner.invoke(app, [])  # no command: the help, as before
    assert "Usage:" in bare.output and "run" in bare.output


def test_data_folder_without_train_exits_2(tmp_path):
    (tmp_path / "empty" / "test").mkdir(parents=True)
    result = runner.invoke(app, args(tmp_path / "empty", tmp_path / "r", "--trials", "1"))
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "has no train/ folder" in result.output and not (tmp_path / "r").exists()  # refused: nothing left


def test_bad_checkpoints_exit_2(folder, tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    result = runner.invoke(app, args(folder, tmp_path / "r1", "--trials", "1", "--teacher-weights", str(corrupt)))
    assert result.exit_code == 2, result.output
    from kdsearch.models.teachers.build import create_teacher

    wrong = tmp_path / "resnet20.pt"
    torch.save(create_teacher("resnet20", num_classes=3, in_channels=3, image_size=8, pretrained=False).state_dict(), wrong)
    result = runner.invoke(app, args(folder, tmp_path / "r2", "--trials", "1", "--teacher", "resnet32",
                                     "--teacher-weights", str(wrong)))
    assert result.exit_code == 2, result.output


def test_invalid_study_file_exits_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[study]\ntrials = -1\n")
    result = runner.invoke(app, ["run", str(bad)])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("error: trials: ") and "-1" in result.output, result.output  # names the setting


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["nsga2", "gp", "random"])
def test_other_samplers_and_online_teacher(folder, tmp_path, sampler):
    study_file = tmp_path / "s.toml"
    study_file.write_text("[study]\nobjectives = ['accuracy', 'params', 'macs']\n")
    result = runner.invoke(app, ["run", str(study_file)] + args(folder, tmp_path / "r", "--trials", "2",
                                                                   "--sampler", sampler, "--teacher-cache", "off")[1:])
    assert result.exit_code == 0, result.output
    assert "teacher logits" not in result.output  # online distillation: no cache built
    study = load(tmp_path / "r")
    assert study.metric_names == ["val_accuracy", "params", "macs"]
    assert len(finished_trials(study)) == 2


def test_budgets_reject_before_training_and_stay_off_the_front(folder, tmp_path, monkeypatch):
    trained = []
    real = fit
    monkeypatch.setattr("kdsearch.search.evaluation.pertrial.fit", lambda *a, **k: trained.append(1) or real(*a, **k))
    run_dir = tmp_path / "r"
    result = runner.invoke(app, args(folder, run_dir, "--trials", "3", "--max-params", "3000", "--in-process"))
    assert result.exit_code == 0, result.output
    study = load(run_dir)
    rejected = [t for t in study.trials if t.user_attrs.get("pruned_at") == 0]
    assert rejected and len(trained) == 3  # only the students within budget were trained
    for t in rejected:
        assert t.state == optuna.trial.TrialState.PRUNED and t.constraints["max_params"] > 0
    from kdsearch.analysis.front import pareto_trials

    front = pareto_trials(study)
    assert front and all(t.user_attrs["params"] <= 3000 for t in front)


def test_pruned_trials_keep_their_curve_and_never_reach_the_front(folder, tmp_path, monkeypatch):
    class EveryOtherTrial:
        """Prunes every second trial after its first epoch (the seam any pruner plugs into)."""

        def should_prune(self, history, curve, epochs, costs):
            return len(history) % 2 == 1 and len(curve) == 1

    monkeypatch.setattr("kdsearch.search.inputs.make_pruner", lambda *a: EveryOtherTrial())
    run_dir = tmp_path / "r"
    result = runner.invoke(app, args(folder, run_dir, "--trials", "4", "--epochs", "3", "--in-process"))
    assert result.exit_code == 0, result.output
    study = load(run_dir)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert [t.number for t in pruned] == [1, 3]
    for t in pruned:
        assert len(t.user_attrs["curve"]) == t.user_attrs["pruned_at"] == 1
        assert (trial_dir(run_dir, t.number) / "student.safetensors").is_file()
    from kdsearch.analysis.front import pareto_trials

    front = pareto_trials(study)
    assert front and all(t.state == optuna.trial.TrialState.COMPLETE for t in front)


def test_storage_urls(tmp_path):
    journal = make_storage(str(tmp_path / "study.log"))
    assert isinstance(journal, optuna.storages.JournalStorage)
    study = optuna.create_study(storage=journal, study_name="j", directions=["maximize", "minimize"])
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), 1.0), n_trials=2)
    assert len(optuna.load_study(study_name="j", storage=make_storage(f"journal:{tmp_path / 'study.log'}")).trials) == 2
    assert isinstance(make_storage(f"sqlite:///{tmp_path / 'x.db'}"), optuna.storages.RDBStorage)
    with pytest.raises(KDSearchError, match="cannot open storage"):
        make_storage("nosuchdb://user@host/db")


# ------------------------------------------------------------------------------ bad input: one line, exit 2, no teacher work


def one_line_exit_2(result, match):
    assert result.exit_code == 2 and match in result.output, result.output
    assert result.output.count("\n") == 1, result.output  # the error line only


def test_a_run_folder_that_is_a_file_is_one_line(folder, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    one_line_exit_2(runner.invoke(app, args(folder, path, "--trials", "1")), "is a file, not a folder")
    one_line_exit_2(runner.invoke(app, args(folder, path / "run", "--trials", "1")), "part of its path is a file")
    assert path.read_text() == "mine" and not (tmp_path / "cache").exists()


def test_a_dataset_with_one_class_is_one_line(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        (tmp_path / "one" / split / "cat").mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(tmp_path / "one" / split / "cat" / f"{i}.png")
    result = runner.invoke(app, args(tmp_path / "one", tmp_path / "r", "--trials", "1"))
    one_line_exit_2(result, "has 1 class(es) with training images (cat); a classifier needs at least 2")
    assert not (tmp_path / "r" / "teachers").exists()


def test_a_subset_smaller_than_the_classes_is_one_line(tmp_path):
    result = runner.invoke(app, ["run", "--dataset", "digits", "--subset", "5", "--teacher", "resnet20",
                                 "--no-pretrained", "--device", "cpu", "--run-dir", str(tmp_path / "r")])
    one_line_exit_2(result, "--subset 5: fewer images than the 10 classes of digits")
    assert not (tmp_path / "r" / "teachers").exists()


def test_a_trial_interrupted_while_it_trains_is_failed_with_the_reason(folder, tmp_path, monkeypatch):
    """Ctrl-C during a trial: Optuna fails it; the trial says it was interrupted (status showed
    "no reason recorded"), and the run exits as interrupted, keeping the study."""
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("kdsearch.search.evaluation.pertrial.fit", interrupted)
    run_dir = tmp_path / "run"
    result = runner.invoke(app, args(folder, run_dir, "--trials", "2", "--pruner", "none", "--in-process"))
    assert result.exit_code != 0 and "interrupted" in result.output, result.output
    trial, = load(run_dir).trials
    assert trial.state == optuna.trial.TrialState.FAIL
    assert trial.user_attrs["error"].startswith("interrupted while it trained")
    status = runner.invoke(app, ["status", str(run_dir)])
    assert "failed trial 0: interrupted while it trained" in " ".join(status.output.split()), status.output


def test_resuming_with_another_seed_or_sampler_is_refused_in_one_line(tiny_run, folder):
    """The seed decides the split, the subset and the teacher's and cache's keys: a resume under another one
    would mix two experiments (issue 36). The sampler is guarded alike. Nothing in the run folder changes."""
    before = {p: p.stat().st_mtime_ns for p in tiny_run.rglob("*") if p.name not in (".lock", "run.log")}
    same = ["run", str(tiny_run.parent / "tiny.toml"), "--dataset", "imagefolder", "--data-dir", str(folder),
            "--teacher", "resnet20", "--no-pretrained", "--teacher-epochs", "1", "--epochs", "2", "--device", "cpu",
            "--run-dir", str(tiny_run), "--study-name", "tiny", "--trials", "7"]
    for extra, match in ([["--seed", "1"], "was run with other settings: seed 0 (now 1)"],
                         [["--sampler", "random"], 'sampler "tpe" (now "random")']):
        refused = runner.invoke(app, same + extra)
        assert refused.exit_code == 2 and match in refused.output and refused.output.count("\n") == 1, refused.output
    assert {p: p.stat().st_mtime_ns for p in tiny_run.rglob("*") if p.name not in (".lock", "run.log")} == before
    assert len(load(tiny_run).trials) == 6


def test_a_study_stored_before_the_seed_was_guarded_keeps_the_seed_it_ran_with(tmp_path):
    from kdsearch.config import load_config
    from kdsearch.search.fingerprint import FINGERPRINT_ATTR, check_resume, fingerprint

    cfg = load_config(overrides={"seed": 3, "sampler": "random"})
    study = optuna.create_study(directions=["maximize"])
    study.set_user_attr(FINGERPRINT_ATTR, {k: v for k, v in fingerprint(cfg).items() if k not in ("seed", "sampler")})
    study.set_user_attr("config", cfg.to_dict())  # what prepare recorded: the seed it ran with
    check_resume(study, cfg)
    with pytest.raises(KDSearchError, match="seed 3 \\(now 0\\)"):
        check_resume(study, load_config(overrides={"sampler": "random"}))
    with pytest.raises(KDSearchError, match='sampler "random" \\(now "tpe"\\)'):
        check_resume(study, load_config(overrides={"seed": 3}))


def test_a_refused_run_leaves_nothing_behind(tmp_path, monkeypatch):
    """Issue 36: CIFAR-10 absent offline (the download fails after torchvision made the data folder), an unknown
    teacher, a missing teacher file: each is one line and exit 2, and no run folder, study.db or data folder stays."""
    import os
    from urllib.error import URLError

    monkeypatch.chdir(tmp_path)

    def offline(url, download_root, *a, **k):
        os.makedirs(download_root, exist_ok=True)  # as torchvision does before it downloads
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", offline)
    base = ["run", "--teacher", "resnet20", "--no-pretrained", "--teacher-epochs", "1", "--epochs", "1", "--trials", "1",
            "--device", "cpu", "--run-dir", "runs/x"]
    result = runner.invoke(app, [*base, "--dataset", "cifar10", "--data-dir", "data/cifar"])
    assert result.exit_code == 2 and "could not be downloaded" in result.output, result.output
    assert not {"runs", "data"} & set(os.listdir(tmp_path)), os.listdir(tmp_path)

    def no_data(*a, **k):
        raise AssertionError("the data was loaded before the teacher was checked")

    monkeypatch.setattr("kdsearch.search.inputs.load_data", no_data)
    for extra, match in ([["--teacher", "resnet9000"], "unknown teacher 'resnet9000'"],
                         [["--teacher-weights", "nope.pt"], "teacher weights not found: nope.pt"]):
        result = runner.invoke(app, [*base, "--dataset", "digits", *extra])
        assert result.exit_code == 2 and match in result.output and result.output.count("\n") == 1, result.output
        assert not {"runs", "data"} & set(os.listdir(tmp_path)), os.listdir(tmp_path)


def test_a_run_folder_on_a_full_disk_is_one_line_and_keeps_nothing_half_written(tmp_path, monkeypatch):
    """Issue 36 (held-out faults): a run folder on a full disk ended in `SafetensorError: ... No space left on
    device` (exit 1). Now one line and exit 2; no temporary file is left, and a new folder with no work goes."""
    import os

    monkeypatch.chdir(tmp_path)

    def full_disk(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"half")  # what a full disk leaves of the file
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("kdsearch.training.teacher.save_file", full_disk)
    result = runner.invoke(app, ["run", "--dataset", "digits", "--teacher", "resnet20", "--no-pretrained",
                                 "--teacher-epochs", "0", "--allow-chance-teacher", "--trials", "1", "--epochs", "1",
                                 "--device", "cpu", "--run-dir", "runs/full"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "No space left on device while writing" in lines[0] and "teachers" in lines[0], lines
    assert "Traceback" not in result.output and not (tmp_path / "runs").exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")], os.listdir(tmp_path)


def test_the_search_never_sees_the_test_split(tmp_path, monkeypatch):
    """Issue 36: with the test split's images and labels corrupted, every trial of a seeded search has the same
    values (and curve) as with the real ones: only the teacher's test accuracy, which is reported, changes."""
    import dataclasses

    from kdsearch.data.splits import Split

    real_load = __import__("kdsearch.search.inputs", fromlist=["load_data"]).load_data

    def corrupted(*a, **k):
        data = real_load(*a, **k)
        test = Split(torch.zeros_like(data.test.x), (data.test.y + 1) % data.num_classes)
        return dataclasses.replace(data, test=test)

    base = ["run", "--dataset", "digits", "--subset", "300", "--teacher", "resnet20", "--no-pretrained",
            "--teacher-epochs", "1", "--trials", "2", "--epochs", "2", "--views", "2", "--device", "cpu",
            "--threads", "1", "--objectives", "accuracy,params,macs", "--pruner", "none", "--in-process"]
    studies = {}
    for name in ("real", "corrupted"):
        with monkeypatch.context() as m:
            if name == "corrupted":
                m.setattr("kdsearch.search.inputs.load_data", corrupted)
            result = runner.invoke(app, [*base, "--run-dir", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        studies[name] = load(tmp_path / name)
    real, bad = studies["real"], studies["corrupted"]
    assert bad.user_attrs["teacher"]["test_accuracy"] != real.user_attrs["teacher"]["test_accuracy"]  # it was used
    assert len(real.trials) == 2 and all(t.values for t in real.trials)
    assert [t.values for t in real.trials] == [t.values for t in bad.trials]
    assert [t.user_attrs["curve"] for t in real.trials] == [t.user_attrs["curve"] for t in bad.trials]
    assert [t.params for t in real.trials] == [t.params for t in bad.trials]
