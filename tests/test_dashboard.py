"""`kdsearch dashboard` as a real process: it serves the study over HTTP with each student's spec
and weights as trial artifacts and the report's figures, and Ctrl-C ends it with status 0."""

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from kdsearch.models.students.spec import StudentSpec
from kdsearch.reporting.dashboard import artifact_store, trials_with_artifacts, upload_students
from kdsearch.runs.layout import artifacts_dir
from kdsearch.runs.run import open_run

pytest.importorskip("optuna_dashboard")
KDSEARCH = Path(sys.executable).parent / "kdsearch"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> dict:
    """Poll until the server answers (it first attaches artifacts and saves figures)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"dashboard exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            return json.loads(get(url))
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"no answer from {url} in {timeout} s")


def test_dashboard_serves_the_study_with_artifacts_and_stops_on_ctrl_c(tiny_run):
    port = free_port()
    # As a foreground process: a shell that starts a job in the background (a CI script run
    # with `&`) makes it ignore SIGINT, and that disposition would be inherited here.
    proc = subprocess.Popen([str(KDSEARCH), "dashboard", str(tiny_run), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        base = f"http://127.0.0.1:{port}"
        studies = wait_for(f"{base}/api/studies", proc)["study_summaries"]
        study = next(s for s in studies if s["study_name"] == "tiny")
        detail = json.loads(get(f"{base}/api/studies/{study['study_id']}"))
        trials = detail["trials"]
        assert len(trials) == 6
        for t in trials:
            assert sorted(a["filename"] for a in t["artifacts"]) == ["spec.json", "student.safetensors"], t["number"]
        spec = next(a for a in trials[0]["artifacts"] if a["filename"] == "spec.json")
        body = get(f"{base}/artifacts/{study['study_id']}/{trials[0]['trial_id']}/{spec['artifact_id']}")
        assert StudentSpec.from_json(body.decode()).num_classes == 3
        ids = {g["id"] for g in detail["plotly_graph_objects"]}
        assert {"kdsearch-accuracy-vs-params", "kdsearch-hypervolume", "kdsearch-learning-curves"} <= ids
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, out
    assert out.strip().splitlines()[-1] == "dashboard stopped"


def test_students_are_attached_once(tiny_run):
    run = open_run(tiny_run)
    store = artifact_store(tiny_run)
    upload_students(run.study, store, tiny_run)  # whether or not the test above ran first
    assert upload_students(run.study, store, tiny_run) == 0
    finished = [t for t in run.study.trials if t.state.is_finished()]
    assert trials_with_artifacts(run.study) == {t._trial_id for t in finished}
    files = list((artifacts_dir(tiny_run)).iterdir())
    assert len(files) == 2 * len(finished)
