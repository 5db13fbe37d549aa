"""Several workers, killed workers, changed settings, failing trials: the study never lies, never loses work.

These tests start real `kdsearch run` processes on tiny generated data. With KDSEARCH_TEST_POSTGRES
set to a database URL (`.ci/run` starts a PostgreSQL server and sets it) the worker tests also run
against PostgreSQL.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from safetensors.torch import save_file
from kdsearch.cli import app
from kdsearch.runs.layout import trial_dir
from kdsearch.runs.storage import make_storage
from kdsearch.search.study import make_sampler
from kdsearch.search.trials import MAX_CONSECUTIVE_FAILURES
from kdsearch.search.workers import ERROR_ATTR, RETRY_ATTR
from kdsearch.training.distill import fit

KDSEARCH = str(Path(sys.executable).with_name("kdsearch"))
POSTGRES = os.environ.get("KDSEARCH_TEST_POSTGRES")
# the PostgreSQL case shows as skipped, with the reason, when no server is named (not silently left out)
STORAGES = ["default", pytest.param("postgres", marks=pytest.mark.skipif(
    not POSTGRES, reason="KDSEARCH_TEST_POSTGRES names no PostgreSQL database (.ci/run starts one and sets it)"))]


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "KDSEARCH_CACHE": str(tmp_path / "cache")}


def argv(folder, run_dir, *extra, storage=None, name="w"):
    return ["run", "--dataset", "imagefolder", "--data-dir", str(folder), "--teacher", "resnet20", "--no-pretrained",
            "--teacher-epochs", "1", "--device", "cpu", "--threads", "1", "--run-dir", str(run_dir),
            "--study-name", name, *(["--storage", storage] if storage else []), *extra]


def storage_url(kind, tmp_path):
    if kind == "default":
        return None
    name = f"kd_{tmp_path.name[-20:].replace('-', '_')}_{os.getpid()}"  # a fresh study name per test
    return POSTGRES, name


def load(run_dir):
    info = json.loads((run_dir / "run.json").read_text())
    return optuna.load_study(study_name=info["study_name"], storage=make_storage(info["storage"]))


def finished(study):
    return [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def assert_no_duplicates(study):
    params = [json.dumps(t.params, sort_keys=True) for t in study.trials if t.params and RETRY_ATTR not in t.user_attrs]
    assert len(params) == len(set(params)), params


@pytest.mark.slow
@pytest.mark.parametrize("kind", STORAGES)
def test_two_workers_finish_exactly_the_trials_and_build_the_teacher_once(folder, tmp_path, env, kind):
    run_dir = tmp_path / "run"
    extra = storage_url(kind, tmp_path)
    storage, name = extra if extra else (None, "w")
    out = subprocess.run([KDSEARCH, *argv(folder, run_dir, "--trials", "6", "--epochs", "2", "--workers", "2",
                                          storage=storage, name=name)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    study = load(run_dir)
    assert len(finished(study)) == 6 and not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert_no_duplicates(study)
    workers = {t.user_attrs.get("worker") for t in finished(study)}
    assert len(workers) == 2, workers  # both workers trained students
    text = out.stdout
    teacher_lines = [line for line in text.splitlines() if line.startswith("teacher resnet20:")]
    # prepared once by the supervisor; its workers load the teacher and cache quietly from the run folder
    assert len(teacher_lines) == 1 and "(cached)" not in teacher_lines[0], text
    assert text.count("images built") == 1 and "starting 2 workers" in text, text
    assert len(list((run_dir / "teachers").glob("*.json"))) == 1 and len(list((run_dir / "logits").iterdir())) == 1


@pytest.mark.slow
def test_two_commands_started_together_share_one_study(folder, tmp_path, env):
    """The reported failure: two `kdsearch run` on a fresh folder at once (schema, teacher, seeds)."""
    run_dir = tmp_path / "run"
    cmd = [KDSEARCH, *argv(folder, run_dir, "--trials", "6", "--epochs", "2")]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    study = load(run_dir)
    assert len(finished(study)) == 6
    assert_no_duplicates(study)
    both = "\n".join(outs)
    assert sum(line.startswith("teacher resnet20:") and "(cached)" not in line for line in both.splitlines()) == 1


def wait_for_running_trial(run_dir, after_finished, timeout=300):
    """Poll until a trial is training (its worker and its sampled student recorded) after `after_finished`
    finished ones. A trial killed before its parameters are all sampled has nothing complete to re-queue:
    under load that moment is long enough to hit, and the test is about a trial that was training."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if (run_dir / "run.json").is_file():
            try:
                study = load(run_dir)
            except Exception:  # noqa: BLE001  (the schema may be half made)
                study = None
            if study is not None and len(finished(study)) >= after_finished:
                running = [t for t in study.trials if t.state == TrialState.RUNNING
                           and "worker" in t.user_attrs and "spec" in t.user_attrs]
                if running:
                    return
        time.sleep(0.3)
    raise AssertionError("no running trial appeared")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_a_killed_worker_loses_nothing_and_the_same_command_finishes(folder, tmp_path, env, sig):
    run_dir = tmp_path / "run"
    cmd = [KDSEARCH, *argv(folder, run_dir, "--trials", "3", "--epochs", "20", "--pruner", "none")]
    # SIGINT at its default, as in a terminal: a job started in the background (CI) inherits it ignored
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for_running_trial(run_dir, after_finished=1)  # a trial still to go after it: the signal lands mid-study
    assert proc.poll() is None
    (running,) = [t for t in load(run_dir).trials if t.state == TrialState.RUNNING]
    worker = int(running.user_attrs["worker"].rsplit(":", 1)[1])  # host:pid
    proc.send_signal(sig)
    if sig == signal.SIGKILL:  # its worker dies with it at once (it is the fork server's child, not the command's)
        time.sleep(0.5)
        assert not Path(f"/proc/{worker}").exists() or "Z" in Path(f"/proc/{worker}/stat").read_text().split()[2]
    output = proc.communicate(timeout=120)[0]
    study = load(run_dir)
    before = {t.number: t.values for t in finished(study)}
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "the same command resumes" in output, output
        (hit,) = [t for t in study.trials if t.state == TrialState.FAIL]  # the running trial, marked at once
    else:
        assert proc.returncode == -signal.SIGKILL
        (hit,) = [t for t in study.trials if t.state == TrialState.RUNNING]  # left behind by the dead worker
    number = hit.number

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    study = load(run_dir)
    killed = study.trials[number]
    assert killed.state == TrialState.FAIL
    if sig == signal.SIGKILL:
        assert "stopped" in killed.user_attrs[ERROR_ATTR] and f"trial(s) {number}" in again.stdout
    assert {t.number: t.values for t in finished(study) if t.number in before} == before  # intact
    assert len(finished(study)) == 3
    assert all((trial_dir(run_dir, n) / "student.safetensors").is_file() for n in before)
    if sig == signal.SIGKILL:  # its parameters were queued again and trained
        assert any(t.user_attrs.get(RETRY_ATTR) == number and t.params == killed.params for t in finished(study))


def test_any_error_fails_only_its_trial_and_a_full_disk_damages_nothing(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    real = save_file
    calls = {"n": 0}

    def flaky_disk(tensors, path, metadata=None):
        calls["n"] += 1
        if calls["n"] == 2:
            Path(path).write_bytes(b"half")  # the partial write a full disk leaves behind
            raise OSError(28, "No space left on device")
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr("kdsearch.models.students.io.save_file", flaky_disk)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, argv(folder, run_dir, "--trials", "3", "--epochs", "1", "--pruner", "none",
                                          "--in-process"))  # the patched disk is this process's
    assert result.exit_code == 0, result.output
    study = load(run_dir)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and "No space left on device" in failed[0].user_attrs[ERROR_ATTR]
    assert "No space left on device" in result.output
    assert len(finished(study)) == 3
    assert not list(run_dir.rglob("*.tmp"))  # no temporary left
    for t in finished(study):
        assert (trial_dir(run_dir, t.number) / "student.safetensors").read_bytes()[:4] != b"half"


def test_a_systematic_error_stops_the_study_with_one_clear_line(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))

    def broken(*a, **k):
        raise ValueError("a bug in every trial")

    monkeypatch.setattr("kdsearch.search.evaluation.pertrial.fit", broken)
    result = CliRunner().invoke(app, argv(folder, tmp_path / "run", "--trials", "20", "--epochs", "1", "--in-process"))
    assert result.exit_code == 2
    assert f"the last {MAX_CONSECUTIVE_FAILURES} trials failed (last error: ValueError: a bug in every trial)" \
        in result.output


def test_resume_with_settings_that_change_a_trial_exits_2_and_names_them(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    first = CliRunner().invoke(app, argv(folder, run_dir, "--trials", "1", "--epochs", "1"))
    assert first.exit_code == 0, first.output
    changed = CliRunner().invoke(app, argv(folder, run_dir, "--trials", "2", "--epochs", "2", "--views", "3"))
    assert changed.exit_code == 2 and "epochs 1 (now 2)" in changed.output and "train.views 16 (now 3)" in changed.output
    assert changed.output.count("\n") == 1, changed.output
    fine = CliRunner().invoke(app, argv(folder, run_dir, "--trials", "2", "--epochs", "1", "--timeout", "600"))
    assert fine.exit_code == 0, fine.output  # trials, timeout, threads may change
    other = CliRunner().invoke(app, argv(folder, run_dir, "--trials", "1", "--epochs", "1", name="other"))
    assert other.exit_code == 2 and "holds study 'w'" in other.output


def test_trial_seeded_sampler_differs_per_trial_and_repeats():
    def draws(seed, numbers):
        study = optuna.create_study(sampler=make_sampler("tpe", seed))
        out = []
        for _ in numbers:
            t = study.ask()
            out.append(t.suggest_float("x", 0, 1))
            study.tell(t, 0.0)
        return out

    a, b = draws(0, range(4)), draws(0, range(4))
    assert a == b and len(set(a)) == 4  # repeatable, and no two trials alike
    assert draws(1, range(4)) != a
    for name in ("tpe", "nsga2", "gp", "random"):
        make_sampler(name, 0)  # every sampler exposes a random state to seed per trial


def test_status_shows_states_running_workers_failures_and_teacher(folder, tmp_path, monkeypatch):
    import socket

    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    assert CliRunner().invoke(app, argv(folder, run_dir, "--trials", "2", "--epochs", "1")).exit_code == 0
    study = load(run_dir)
    dead = study.ask()  # a trial whose worker (on this machine) is gone
    dead.set_user_attr("worker", f"{socket.gethostname()}:999999")
    failed = study.ask()
    failed.set_user_attr(ERROR_ATTR, "ValueError: broken")
    study.tell(failed, state=TrialState.FAIL)
    result = CliRunner().invoke(app, ["status", str(run_dir)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "2 of 2 trials finished" in out and "1 failed" in out and "1 running" in out
    assert "999999" in out and "no (dead)" in out and "failed trial 3: ValueError: broken" in out
    assert "teacher: resnet20" in out and "weights ready" in out and ".safetensors (" in out
    assert "Pareto front" in out


def test_out_of_memory_fails_only_its_trial(folder, tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    real, calls = fit, {"n": 0}

    def oom_once(*a, **k):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*a, **k)

    monkeypatch.setattr("kdsearch.search.evaluation.pertrial.fit", oom_once)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, argv(folder, run_dir, "--trials", "2", "--epochs", "1", "--in-process"))
    assert result.exit_code == 0, result.output
    study = load(run_dir)
    (failed,) = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed.user_attrs[ERROR_ATTR].startswith("OutOfMemoryError: CUDA out of memory")
    assert len(finished(study)) == 2


def test_unreachable_storage_is_one_line_before_any_work(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, argv(folder, tmp_path / "run", "--trials", "1",
                                          storage="postgresql://nobody@127.0.0.1:1/none"))
    assert result.exit_code == 2 and "cannot open storage" in result.output and result.output.count("\n") == 1
    assert not (tmp_path / "cache").exists()  # no data was loaded


def test_a_damaged_run_json_is_refused_by_readers_and_rewritten_by_run(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    assert CliRunner().invoke(app, argv(folder, run_dir, "--trials", "1", "--epochs", "1")).exit_code == 0
    (run_dir / "run.json").write_text('{"study_name": "w", "stor')
    report = CliRunner().invoke(app, ["status", str(run_dir)])
    assert report.exit_code == 2 and "is damaged" in report.output
    rerun = CliRunner().invoke(app, argv(folder, run_dir, "--trials", "2", "--epochs", "1"))
    assert rerun.exit_code == 0, rerun.output
    assert len(finished(load(run_dir))) == 2


def test_workers_must_be_positive(folder, tmp_path):
    result = CliRunner().invoke(app, argv(folder, tmp_path / "run", "--workers", "0"))
    assert result.exit_code == 2 and "--workers: must be at least 1" in result.output
    assert not (tmp_path / "run").exists()


def test_a_fixed_typo_is_not_a_changed_resume(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    typo = argv(folder, run_dir, "--trials", "1", "--epochs", "1")
    typo[typo.index("resnet20")] = "resnet9000"
    bad = CliRunner().invoke(app, typo)
    assert bad.exit_code == 2 and "resnet9000" in bad.output
    fixed = CliRunner().invoke(app, argv(folder, run_dir, "--trials", "1", "--epochs", "1"))
    assert fixed.exit_code == 0, fixed.output


@pytest.mark.slow
def test_grpc_proxy_storage_runs_a_study(folder, tmp_path, env):
    """Optuna's gRPC storage proxy in front of a database, as the multi-machine recipe says."""
    pytest.importorskip("grpc")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = f"sqlite:///{tmp_path / 'behind-proxy.db'}"
    server = subprocess.Popen([sys.executable, "-c", "import optuna; optuna.storages.run_grpc_proxy_server("
                               f"optuna.storages.RDBStorage({db!r}), host='127.0.0.1', port={port})"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end:  # until the proxy listens
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        run_dir = tmp_path / "run"
        out = subprocess.run([KDSEARCH, *argv(folder, run_dir, "--trials", "2", "--epochs", "1",
                                              storage=f"grpc://127.0.0.1:{port}")],
                             env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        study = optuna.load_study(study_name="w", storage=db)  # the trials are in the database behind it
        assert len(finished(study)) == 2
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_study_recorded_before_a_setting_existed_resumes_with_its_default(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    assert CliRunner().invoke(app, argv(folder, run_dir, "--trials", "1", "--epochs", "1")).exit_code == 0
    study = load(run_dir)
    old = {k: v for k, v in study.user_attrs["fingerprint"].items() if k != "teacher.normalize"}
    study.set_user_attr("fingerprint", old)  # as a study made before `normalize` existed stored it
    resumed = CliRunner().invoke(app, argv(folder, run_dir, "--trials", "2", "--epochs", "1"))
    assert resumed.exit_code == 0, resumed.output
    other = CliRunner().invoke(app, argv(folder, run_dir, "--trials", "3", "--epochs", "1",
                                         "--teacher-normalize", "cifar10"))
    assert other.exit_code == 2 and 'teacher.normalize "auto" (now "cifar10")' in other.output
