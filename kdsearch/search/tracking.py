"""--tracking mlflow|wandb|tensorboard: each trial's settings, learning curve and objectives in a tracker.

A tracker is a callback of the run (search.callbacks): the process that started the run logs each
trial its workers finish, one tracker run (MLflow, W&B) or one folder (TensorBoard) per trial:
- settings: the trial's sampled parameters, its architecture, T, alpha and lr, and its state;
- the learning curve: validation accuracy after each epoch, as `val_accuracy` at steps 1..epochs;
- the objectives and costs: params, macs, latency_ms, bytes (as known), and the final val_accuracy.
Over-budget students rejected before training are not logged (a tight budget rejects many).

optuna-integration's MLflowCallback and WeightsAndBiasesCallback log parameters and final values but
not a curve (kdsearch keeps it as a trial attribute, not as Optuna intermediate values), so each
tracker here uses its own client. Each is an optional extra: without it, one line names the install.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.markup import escape

from ..config import StudyConfig
from ..errors import KDSearchError
from ..runs.trial_attrs import BYTES, LATENCY_MS, MACS, PARAMS
from .objective import Surplus
from ..runs.trial_attrs import CURVE, rejected, repeated
from .workers import ERROR_ATTR


PACKAGES = {"mlflow": "mlflow", "wandb": "wandb", "tensorboard": "torch.utils.tensorboard"}
SETTINGS = ("arch", "temperature", "alpha", "lr")  # trial attributes logged as settings besides Optuna's params
COSTS = (PARAMS, MACS, LATENCY_MS, BYTES)


def trial_record(trial: FrozenTrial) -> dict[str, Any] | None:
    """What a tracker logs of a trial; None for one not worth a tracker run (rejected over budget, a repeat, surplus)."""
    error = trial.user_attrs.get(ERROR_ATTR) or ""
    if rejected(trial) or repeated(trial) or error.startswith(Surplus.__name__):
        return None
    attrs = trial.user_attrs
    state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(trial.state, "failed")
    settings = {**trial.params, **{k: attrs[k] for k in SETTINGS if k in attrs}}
    curve = [float(v) for v in attrs.get(CURVE) or []]
    metrics = {k: float(attrs[k]) for k in COSTS if isinstance(attrs.get(k), (int, float))}
    if curve:
        metrics["val_accuracy"] = curve[-1]
    return {"name": f"trial {trial.number}", "number": trial.number, "state": state, "settings": settings,
            "curve": curve, "metrics": metrics, "error": error or None,
            "start": trial.datetime_start, "end": trial.datetime_complete}


class Tracker:
    """A callback that logs each trial (trial_record) and warns, without stopping the run, when it cannot."""

    name = ""

    def __init__(self, cfg: StudyConfig, console: Console):
        self.cfg, self.console = cfg, console
        self.warned = False

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        record = trial_record(trial)
        if record is None:
            return
        try:
            self.log(study.study_name, record)
        except Exception as exc:  # noqa: BLE001  (a tracker that is down never stops the search)
            if not self.warned:
                self.console.print(f"[yellow]warning: {self.name} tracking failed on trial {trial.number} "
                                   f"({escape(type(exc).__name__)}: {escape(str(exc).splitlines()[0][:200])}); "
                                   "the search goes on[/]", highlight=False)
                self.warned = True

    def log(self, study_name: str, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush what the tracker buffers (called once the run ends)."""

    def where(self) -> str:
        """Where the trials go, as the start of the run says it."""
        return ""


def _millis(when: Any) -> int | None:
    return int(when.timestamp() * 1000) if when is not None else None


class MLflowTracker(Tracker):
    """One MLflow run per trial in the experiment named after the study, through MlflowClient (no active-run
    state: a notebook's own mlflow.start_run is left alone). The store: MLFLOW_TRACKING_URI, else RUN/mlflow.db."""

    name = "mlflow"

    def __init__(self, cfg: StudyConfig, console: Console, mlflow: Any):
        super().__init__(cfg, console)
        self.mlflow = mlflow
        default = f"sqlite:///{(cfg.run_path / 'mlflow.db').resolve()}"
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or default
        self.artifacts = (cfg.run_path / "mlflow-artifacts").resolve().as_uri() if self.uri == default else None
        self.client = None
        self.experiment: str | None = None

    def where(self) -> str:
        return f"MLflow experiment {self.cfg.name!r} at {self.uri}"

    def _experiment(self, study_name: str) -> str:
        if self.client is None:
            for name in ("mlflow", "alembic"):  # its store's first-use messages are no news to the user
                logging.getLogger(name).setLevel(logging.WARNING)
            self.client = self.mlflow.MlflowClient(tracking_uri=self.uri)
        if self.experiment is None:
            found = self.client.get_experiment_by_name(study_name)
            self.experiment = found.experiment_id if found is not None else \
                self.client.create_experiment(study_name, artifact_location=self.artifacts)
        return self.experiment

    def log(self, study_name: str, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param  # the optional extra (checked by make_tracker)

        experiment = self._experiment(study_name)
        client = self.client
        run = client.create_run(experiment, run_name=record["name"], start_time=_millis(record["start"]),
                                tags={"optuna.study": study_name, "optuna.trial": str(record["number"]),
                                      "kdsearch.state": record["state"]}
                                | ({"kdsearch.error": record["error"][:500]} if record["error"] else {}))
        now = _millis(record["end"]) or 0
        metrics = [Metric("val_accuracy", v, now, step) for step, v in enumerate(record["curve"], start=1)]
        metrics += [Metric(k, v, now, 0) for k, v in record["metrics"].items() if k != "val_accuracy"]
        params = [Param(k, str(v)[:6000]) for k, v in record["settings"].items()]
        client.log_batch(run.info.run_id, metrics=metrics, params=params)
        status = {"complete": "FINISHED", "pruned": "KILLED"}.get(record["state"], "FAILED")
        client.set_terminated(run.info.run_id, status=status, end_time=_millis(record["end"]))


class WandbTracker(Tracker):
    """One W&B run per trial, grouped by the study, in project WANDB_PROJECT (else the study name); W&B's
    own settings (WANDB_MODE=offline, WANDB_ENTITY, WANDB_DIR) apply; its files go to the run folder."""

    name = "wandb"

    def __init__(self, cfg: StudyConfig, console: Console, wandb: Any):
        super().__init__(cfg, console)
        self.wandb = wandb
        self.project = os.environ.get("WANDB_PROJECT") or cfg.name

    def where(self) -> str:
        return f"W&B project {self.project!r} (group {self.cfg.name!r})"

    def log(self, study_name: str, record: dict[str, Any]) -> None:
        run = self.wandb.init(project=self.project, group=study_name, name=record["name"], job_type="trial",
                              config={**record["settings"], "state": record["state"]},
                              dir=os.environ.get("WANDB_DIR") or str(self.cfg.run_path), reinit="create_new",
                              settings=self.wandb.Settings(silent=True))  # not a screenful per trial
        try:
            for step, value in enumerate(record["curve"], start=1):
                run.log({"val_accuracy": value, "epoch": step}, step=step)
            run.summary.update(record["metrics"])
        finally:
            run.finish(exit_code=0 if record["state"] != "failed" else 1)


class TensorBoardTracker(Tracker):
    """One event folder per trial under RUN/tensorboard/ (`tensorboard --logdir RUN/tensorboard`): the curve as
    val_accuracy by epoch, the costs as scalars, the settings with the objectives as hparams."""

    name = "tensorboard"

    def __init__(self, cfg: StudyConfig, console: Console, tensorboard: Any):
        super().__init__(cfg, console)
        self.writer_class = tensorboard.SummaryWriter
        self.folder = cfg.run_path / "tensorboard"

    def where(self) -> str:
        return f"TensorBoard logs in {self.folder}"

    def log(self, study_name: str, record: dict[str, Any]) -> None:
        writer = self.writer_class(log_dir=str(self.folder / f"trial-{record['number']:05d}"))
        try:
            for step, value in enumerate(record["curve"], start=1):
                writer.add_scalar("val_accuracy", value, step)
            for key, value in record["metrics"].items():
                if key != "val_accuracy":
                    writer.add_scalar(key, value, 0)
            hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in record["settings"].items()}
            writer.add_hparams(hparams | {"state": record["state"]},
                               {f"hparam/{k}": v for k, v in record["metrics"].items()}, run_name=".")
        finally:
            writer.close()


CLASSES: dict[str, type[Tracker]] = {"mlflow": MLflowTracker, "wandb": WandbTracker, "tensorboard": TensorBoardTracker}


def make_tracker(cfg: StudyConfig, console: Console) -> Tracker | None:
    """The run's tracker ([study] tracking, --tracking), or None; a missing package is one line naming the extra."""
    name = cfg.tracking
    if name == "none":
        return None
    try:
        module = importlib.import_module(PACKAGES[name])
    except ImportError as exc:
        raise KDSearchError(f"--tracking {name} needs {name} ({exc}): pip install 'kdsearch[tracking-{name}]'") from None
    return CLASSES[name](cfg, console, module)


def tracking_note(tracker: Tracker) -> str:
    return f"tracking each trial in {tracker.where()}"
