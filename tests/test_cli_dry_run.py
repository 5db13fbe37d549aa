"""`kdsearch run --dry-run`: the resolved settings (a study file that gives the same run), the data, the teacher
and the estimate; no run folder is made or touched; the run's refusals are the same one line."""

import os

import pytest
from typer.testing import CliRunner

from kdsearch.cli import app
from kdsearch.config import load_config

runner = CliRunner()
TINY = ["--dataset", "digits", "--teacher", "resnet20", "--no-pretrained", "--teacher-epochs", "1", "--epochs", "1",
        "--trials", "2", "--device", "cpu", "--views", "2"]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    # the teacher's timing probe (a warm-up and two timed steps, as a run's) takes seconds on a busy CPU
    monkeypatch.setattr("kdsearch.search.dry_run.probe_speed",
                        lambda *a, train, **kw: {"infer_s_per_image": 1e-4} | ({"train_s_per_step": 0.01} if train else {}))


def settings_of(output: str) -> str:
    """The study file --dry-run prints (from [study] to the line before the run folder's)."""
    text = output[output.index("[study]"):]
    return text[:text.index("\nrun folder ")]


def test_dry_run_prints_settings_data_teacher_and_estimate_and_touches_no_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default run folder would be runs/<name> here
    result = runner.invoke(app, ["run", *TINY, "--batch-size", "32", "--image-size", "10", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "runs").exists() and sorted(os.listdir(tmp_path)) == ["cache"]
    out = result.output
    assert "run folder runs/kdsearch: new" in out
    assert "data digits: " in out and "10 classes, 1x10x10" in out
    assert "teacher resnet20: random initialization" in out and "trained 1 epoch(s)" in out
    assert "estimate on cpu (" in out and "teacher training ≈ 0 s" in out and "teacher logits: 2 views x" in out and "estimate: 2 trials of a mid-size" in out
    study_file = tmp_path / "printed.toml"
    study_file.write_text(settings_of(out))
    printed = load_config(study_file)
    assert printed.train.batch_size == 32 and printed.data.image_size == 10
    want = load_config(None, {"data.dataset": "digits", "teacher.name": "resnet20", "teacher.pretrained": False,
                              "teacher.epochs": 1, "epochs": 1, "trials": 2, "device": "cpu", "train.views": 2,
                              "train.batch_size": 32, "data.image_size": 10})
    assert printed.to_dict() == want.to_dict()  # the whole resolved config, as a study file


def test_a_oneshot_dry_run_says_what_trains_instead_of_a_per_trial_estimate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["run", *TINY, "--strategy", "oneshot", "--promote", "1", "--dry-run"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "one-shot: a supernet per family trains 1 epochs by the sandwich rule" in out
    assert "estimate: 2 trials" not in out  # no student trains per trial
    assert "most accurate student(s) of each size band and family" in out
    assert "are fine-tuned from their inherited weights for" in out and "a trial's training" not in out


def test_dry_run_on_an_existing_run_says_it_resumes_and_refuses_what_the_run_refuses(tiny_run, folder):
    before = {p: p.stat().st_mtime_ns for p in tiny_run.rglob("*")}
    same = ["run", str(tiny_run.parent / "tiny.toml"), "--dataset", "imagefolder", "--data-dir", str(folder),
            "--teacher", "resnet20", "--no-pretrained", "--teacher-epochs", "1", "--epochs", "2", "--device", "cpu",
            "--run-dir", str(tiny_run), "--study-name", "tiny", "--trials", "6", "--dry-run"]
    result = runner.invoke(app, same)
    assert result.exit_code == 0, result.output
    assert f"run folder {tiny_run}: resumes study 'tiny'" in result.output and "6 of 6 trials finished" in result.output
    assert "a run trains none" in result.output
    for extra, match in ([["--epochs", "5"], "was run with other settings: epochs 2 (now 5)"],
                         [["--batch-size", "32"], "train.batch_size 16 (now 32)"],
                         [["--study-name", "other"], "holds study 'tiny', not 'other'"]):
        refused = runner.invoke(app, same + extra)
        assert refused.exit_code == 2 and match in refused.output and refused.output.count("\n") == 1, refused.output
    assert {p: p.stat().st_mtime_ns for p in tiny_run.rglob("*")} == before


CIFAR = ["--dataset", "cifar10", "--teacher", "resnet20", "--no-pretrained", "--teacher-epochs", "1", "--epochs", "1",
         "--trials", "2", "--device", "cpu"]


def test_a_dry_run_refuses_data_a_run_could_not_download_and_a_missing_teacher_file(tmp_path, monkeypatch):
    """Issue 36: offline, with CIFAR-10 absent, --dry-run said "a run downloads it" and exit 0, and said nothing
    of a missing teacher.weights file; the run then failed. Every input is checked; nothing is written."""
    monkeypatch.chdir(tmp_path)
    data = ["--data-dir", str(tmp_path / "data")]
    monkeypatch.setattr("kdsearch.search.dry_run.download_problem",
                        lambda name: "https://example/cifar.tar.gz cannot be reached (offline)")
    offline = runner.invoke(app, ["run", *CIFAR, *data, "--dry-run"])
    assert offline.exit_code == 2 and offline.output.count("\n") == 1, offline.output
    assert "cifar10 is not in" in offline.output and "a run could not download it" in offline.output
    # reachable: the dry run says the run downloads it, and still checks the teacher's file
    monkeypatch.setattr("kdsearch.search.dry_run.download_problem", lambda name: None)
    online = runner.invoke(app, ["run", *CIFAR, *data, "--dry-run"])
    assert online.exit_code == 0, online.output
    assert "a run downloads it first" in online.output and "teacher resnet20: random initialization" in online.output
    missing = runner.invoke(app, ["run", *CIFAR, *data, "--teacher-weights", str(tmp_path / "nope.pt"), "--dry-run"])
    assert missing.exit_code == 2 and "teacher weights not found" in missing.output, missing.output
    assert missing.output.count("\n") == 1
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")  # there but unreadable: the run's own refusal
    bad = runner.invoke(app, ["run", *CIFAR, *data, "--teacher-weights", str(tmp_path / "bad.pt"), "--dry-run"])
    assert bad.exit_code == 2 and "corrupt or not a PyTorch checkpoint" in bad.output, bad.output
    # with digits (here) the missing file is refused the same way, before the data is described
    digits = runner.invoke(app, ["run", *TINY, "--teacher-weights", str(tmp_path / "nope.pt"), "--dry-run"])
    assert digits.exit_code == 2 and "teacher weights not found" in digits.output, digits.output
    assert not {"runs", "data"} & set(os.listdir(tmp_path))  # no run folder, no data folder
