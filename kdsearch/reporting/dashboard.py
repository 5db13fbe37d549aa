"""`kdsearch dashboard`: optuna-dashboard on a run's storage, with each student as trial artifacts.

Artifacts live in RUN/artifacts (optuna.artifacts.FileSystemArtifactStore). Optuna's
`upload_artifact` records a trial's artifact in a trial system attribute, and RDB storages
refuse to update a trial once it has finished (UpdateFinishedTrialError). optuna-dashboard also
reads a trial's artifacts from study system attributes "dashboard:artifacts:<trial_id>:<id>" (the
layout of its own upload route before Optuna had artifacts), so finished trials get their spec
and weights that way, once, at dashboard start. The report's figures are saved into the study
with optuna_dashboard.save_plotly_graph_object and show on the study page.
"""

from __future__ import annotations

import json
import mimetypes
import os
import threading
import uuid
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial
from optuna_dashboard import save_plotly_graph_object
from rich.console import Console

from ..analysis.front import trial_points
from ..analysis.holdout import load_test_accuracies
from ..errors import KDSearchError
from ..runs.layout import STUDENT_FILES, artifacts_dir, trial_dir
from ..runs.run import Run
from .figures import report_figures


TRIAL_ARTIFACT_PREFIX = "dashboard:artifacts:"  # + "<trial_id>:<artifact_id>", in study system attrs


def artifact_store(run_dir: Path) -> FileSystemArtifactStore:
    artifacts_dir(run_dir).mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(artifacts_dir(run_dir))


def trials_with_artifacts(study: optuna.Study) -> set[int]:
    """Trial ids that already have artifacts, in either place the dashboard looks."""
    attrs = study._storage.get_study_system_attrs(study._study_id)
    ids = {int(k[len(TRIAL_ARTIFACT_PREFIX):].split(":")[0]) for k in attrs if k.startswith(TRIAL_ARTIFACT_PREFIX)}
    return ids | {t._trial_id for t in study.get_trials(deepcopy=False)
                  if any(k.startswith("artifacts:") for k in t.system_attrs)}


def attach(study: optuna.Study, store: FileSystemArtifactStore, trial: FrozenTrial, path: Path, run_dir: Path) -> str:
    """Put one file in the store and list it under the (finished) trial; returns the artifact id."""
    artifact_id = str(uuid.uuid4())
    try:  # a student file never changes once written (replaced atomically): a hard link saves a copy
        os.link(path, artifacts_dir(run_dir) / artifact_id)
    except OSError:
        with open(path, "rb") as f:
            store.write(artifact_id, f)
    mimetype, encoding = mimetypes.guess_type(path.name)
    meta = {"artifact_id": artifact_id, "filename": path.name, "encoding": encoding,
            "mimetype": mimetype or ("application/json" if path.suffix == ".json" else "application/octet-stream")}
    study._storage.set_study_system_attr(study._study_id, f"{TRIAL_ARTIFACT_PREFIX}{trial._trial_id}:{artifact_id}",
                                         json.dumps(meta))
    return artifact_id


def upload_students(study: optuna.Study, store: FileSystemArtifactStore, run_dir: Path) -> int:
    """Attach spec.json and the weights of every trial that has them and no artifacts yet."""
    done, count = trials_with_artifacts(study), 0
    for trial in study.get_trials(deepcopy=False):
        files = [trial_dir(run_dir, trial.number) / name for name in STUDENT_FILES]
        if trial._trial_id in done or not trial.state.is_finished() or not all(f.is_file() for f in files):
            continue
        for f in files:
            attach(study, store, trial, f, run_dir)
        count += 1
    return count


def publish_figures(run: Run) -> list[str]:
    """Save the report's figures (not importance: the dashboard has its own) into the study."""
    points = trial_points(run.study, load_test_accuracies(run.run_dir) or None)
    figures, _ = report_figures(run.study, points, importance=False)
    return [save_plotly_graph_object(run.study, fig, graph_object_id=f"kdsearch-{name}") for name, fig in figures.items()]


class QuietHandler(WSGIRequestHandler):
    """No log line per request, no reverse DNS lookups."""

    def log_request(self, *args, **kwargs) -> None:
        pass

    def address_string(self) -> str:
        return self.client_address[0]


def dashboard_app(run: Run, console: Console):
    """Attach the students, save the figures, and return the optuna-dashboard WSGI app."""
    try:
        import optuna_dashboard  # slow to import: only `kdsearch dashboard` needs it
    except ImportError:
        raise KDSearchError("the dashboard needs optuna-dashboard: pip install optuna-dashboard") from None
    store = None
    if run.run_dir is not None:
        store = artifact_store(run.run_dir)
        n = upload_students(run.study, store, run.run_dir)
        console.print(f"artifacts: {n} new students attached ({artifacts_dir(run.run_dir)})", highlight=False)
    else:
        console.print("[yellow]run folder not found: no student artifacts[/]")
    publish_figures(run)
    return optuna_dashboard.wsgi(run.study._storage, artifact_store=store)


def serve_until_interrupted(server: WSGIServer) -> None:
    """Serve from a worker thread; Ctrl-C lands in this (main) thread and shuts the server down.

    Serving in the main thread would let a Ctrl-C that arrives during a request be swallowed by
    wsgiref's catch-all error handler (the dashboard polls every few seconds), so it could be lost.
    """
    worker = threading.Thread(target=server.serve_forever, name="dashboard", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.5)
    except KeyboardInterrupt:
        server.shutdown()  # waits for the request in flight, then serve_forever returns
    finally:
        server.server_close()


def serve(run: Run, host: str = "127.0.0.1", port: int = 8080, console: Console | None = None) -> None:
    """Prepare artifacts and figures, then serve until Ctrl-C, which ends it cleanly."""
    console = console or Console()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        app = dashboard_app(run, console)
        try:
            server = make_server(host, port, app, WSGIServer, QuietHandler)
        except OSError as exc:
            raise KDSearchError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (try another --port)") from None
    except KeyboardInterrupt:
        console.print("dashboard stopped", highlight=False)
        return
    console.print(f"optuna-dashboard for study {run.study.study_name} on http://{host}:{port}/dashboard/ "
                  "(Ctrl-C stops it)", highlight=False)
    serve_until_interrupted(server)
    console.print("dashboard stopped", highlight=False)
