"""A trial that kills its process (a crashing native kernel, an abort, the OOM killer) fails alone, named;
the study goes on, and the same command neither retries it forever nor loses anything."""

import json
import signal
import sys

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from kdsearch.cli import app
from kdsearch.models.students.registry import FAMILIES
from kdsearch.runs.storage import make_storage
from kdsearch.search.supervise import describe_exit, family_modules
from kdsearch.search.workers import ERROR_ATTR, RETRY_ATTR

CRASHY = '''
"""A student family whose students kill their process with SIGSEGV as soon as they train."""
import os
import signal

import torch

from kdsearch.models.students.plain import build_plain
from kdsearch.models.students.registry import register_family


class Crashy(torch.nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        if self.training and torch.is_grad_enabled():
            os.kill(os.getpid(), signal.SIGSEGV)
        return self.body(x)


@register_family("crashy")
def build_crashy(spec):
    return Crashy(build_plain(spec))
'''


@pytest.fixture
def crashy(tmp_path, monkeypatch):
    """The 'crashy' family, registered here and (as every family from a module) in the worker processes."""
    src = tmp_path / "crashy_src"
    src.mkdir()
    (src / "crashy_family.py").write_text(CRASHY)
    monkeypatch.syspath_prepend(str(src))
    monkeypatch.setattr("kdsearch.models.students.registry.FAMILIES", dict(FAMILIES))
    monkeypatch.delitem(sys.modules, "crashy_family", raising=False)
    import crashy_family  # noqa: F401

    yield "crashy_family"
    sys.modules.pop("crashy_family", None)


def load(run_dir):
    info = json.loads((run_dir / "run.json").read_text())
    return optuna.load_study(study_name=info["study_name"], storage=make_storage(info["storage"]))


def argv(folder, run_dir, *extra):
    return ["run", "--dataset", "imagefolder", "--data-dir", str(folder), "--teacher", "resnet20", "--no-pretrained",
            "--teacher-epochs", "1", "--epochs", "1", "--views", "2", "--device", "cpu", "--threads", "1",
            "--run-dir", str(run_dir), "--study-name", "crash", "--pruner", "none", *extra]


@pytest.mark.slow
def test_a_trial_that_kills_its_process_fails_named_and_the_study_goes_on(folder, tmp_path, monkeypatch, crashy):
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    assert family_modules() == [crashy]  # what the workers import
    known = tmp_path / "known.json"
    known.write_text(json.dumps([{"spec": {"family": "crashy", "channels": [8], "kernel_size": 3},
                                  "temperature": 4.0, "alpha": 0.5, "lr": 0.01}]))
    run_dir = tmp_path / "run"
    cmd = argv(folder, run_dir, "--trials", "3", "--enqueue", str(known))
    result = CliRunner().invoke(app, cmd)
    assert result.exit_code == 0, result.output
    study = load(run_dir)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    # the crashing student (trial 0) and its one retry (trial 1): both failed, the signal named
    assert [t.number for t in failed] == [0, 1], [(t.number, t.state, t.user_attrs.get(ERROR_ATTR)) for t in study.trials]
    first, retry = failed
    assert first.user_attrs[ERROR_ATTR].startswith("process killed by SIGSEGV (signal 11)")
    assert "queued again (retry 1 of 1)" in first.user_attrs[ERROR_ATTR]
    assert retry.user_attrs[RETRY_ATTR] == 0 and retry.user_attrs["arch"] == first.user_attrs["arch"]
    assert "not retried: the same parameters already died in trial 0" in retry.user_attrs[ERROR_ATTR]
    assert "SIGSEGV" in result.output and "crashy[8]" in result.output
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3 and all(t.number > 1 for t in complete)  # every other trial complete
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert (run_dir / "crashes" / "trial-0.txt").read_text().startswith("Fatal Python error: Segmentation fault")
    before = {t.number: t.values for t in study.trials}

    again = CliRunner().invoke(app, cmd)  # the same command: done, nothing retried
    assert again.exit_code == 0 and "nothing to run" in again.output, again.output
    more = CliRunner().invoke(app, argv(folder, run_dir, "--trials", "4", "--enqueue", str(known)))
    assert more.exit_code == 0, more.output
    after = load(run_dir)
    assert len(after.trials) == 6 and [t.number for t in after.trials if t.state == TrialState.FAIL] == [0, 1]
    assert {t.number: t.values for t in after.trials if t.number < 5} == before  # nothing lost


def test_retries_zero_fails_at_once_and_retries_is_no_resume_setting(folder, tmp_path, monkeypatch, crashy):
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    known = tmp_path / "known.json"
    known.write_text(json.dumps([{"spec": {"family": "crashy", "channels": [8]}, "temperature": 4.0, "alpha": 0.5,
                                  "lr": 0.01}]))
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, argv(folder, run_dir, "--trials", "1", "--enqueue", str(known), "--retries", "0"))
    assert result.exit_code == 0, result.output
    study = load(run_dir)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[0].user_attrs[ERROR_ATTR] == "process killed by SIGSEGV (signal 11); not retried (retries = 0)"
    assert "retries" not in study.user_attrs["fingerprint"]


def test_describe_exit_names_the_signal():
    assert describe_exit(-signal.SIGSEGV) == "process killed by SIGSEGV (signal 11)"
    assert describe_exit(-signal.SIGABRT) == "process killed by SIGABRT (signal 6)"
    assert describe_exit(-signal.SIGKILL) == "process killed by SIGKILL (signal 9)"
    assert describe_exit(1) == "process exited with status 1"
