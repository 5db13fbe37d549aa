"""`kdsearch run`: prepare the study and its inputs once, then run the trials until the study has enough.

Data flows one way: config -> data -> teacher -> study. Everything a run produces lives in its
run folder (storage, teacher cache, per-trial weights), so re-running the same command resumes.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState
from rich.console import Console

from ..config import StudyConfig
from ..errors import KDSearchError
from ..models.teachers.build import check_teacher_name
from ..progress import progress_bar
from ..runs.log_file import LOGGER, run_log
from ..runs.provenance import command_line, environment
from ..runs.run_file import check_run_folder, forget_refused_run, make_run_folder, new_folders, write_run_file
from .budgets import check_budgets_reachable
from .callbacks import Callback, TrialFeed, check_callbacks
from .enqueue import enqueue_students, load_enqueue
from .estimate import estimate_search
from .evaluation import prepare_evaluation, trials_text
from .fingerprint import FINGERPRINT_ATTR, fingerprint
from .inputs import TrialContext, check_teacher_teaches, prepare_inputs
from .promote import promote
from .spawn import start_worker_server
from .study import n_finished, open_study
from .supervise import supervise
from .tracking import Tracker, make_tracker, tracking_note
from .trials import run_trials
from .workers import alive, recover_dead_trials, run_lock


def prepare(cfg: StudyConfig, console: Console, study_file: Path | None = None,
            record: bool = True) -> tuple[TrialContext, optuna.Study]:
    """Everything before the first trial: the study (opened first: a bad storage URL fails before
    any teacher work), the training inputs, then the run's facts recorded in the study."""
    make_run_folder(cfg.run_path)
    check_run_folder(cfg)
    check_teacher_name(cfg.teacher.name, cfg.teacher.weights)  # before the data: a typo is no minutes' wait
    with run_lock(cfg.run_path, console, "creating the study"):  # two new workers: one creates the schema
        study = open_study(cfg)
    ctx = prepare_inputs(cfg, console, check=lambda data: check_budgets_reachable(cfg, data),
                         check_teacher=lambda teacher, data: check_teacher_teaches(cfg, teacher, data))
    if record:  # the command and study file (a worker process started by --workers has its parent's)
        with run_lock(cfg.run_path, console, "writing run.json"):
            write_run_file(cfg, study_file)
    data = ctx.data
    if FINGERPRINT_ATTR not in study.user_attrs:  # prepared without error: these settings are the study's now
        study.set_user_attr(FINGERPRINT_ATTR, fingerprint(cfg))
    for key, value in {"teacher": ctx.teacher.to_dict(), "config": cfg.to_dict(), "cpu_threads": torch.get_num_threads(),
                       "latency_threads": cfg.latency_threads, "device": str(ctx.device),
                       "environment": environment(ctx.device),  # where latency was measured (the model card says)
                       "data": {"name": data.name, "train": len(ctx.train), "val": len(data.val),
                                "test": len(data.test), "classes": data.classes}}.items():
        study.set_user_attr(key, value)
    return ctx, study


def _finished(cfg: StudyConfig, console: Console) -> optuna.Study | None:
    """The study, when it already holds its trials and none is in flight: then nothing is prepared (no data,
    teacher or logit cache: rebuilding a cache only to run nothing took minutes) and nothing is recorded.
    Its settings are still checked against the command's (the resume guard, in open_study)."""
    with run_lock(cfg.run_path, console, "creating the study"):
        study = open_study(cfg)
    in_flight = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
    if in_flight or (done := n_finished(study)) < cfg.trials:
        return None
    _nothing_to_run(console, done, cfg.trials)
    return study


def _nothing_to_run(console: Console, done: int, trials: int) -> None:
    console.print(f"study already has {done} finished trials (target {trials}): nothing to run")


def run_search(cfg: StudyConfig, console: Console | None = None, study_file: Path | None = None,
               workers: int = 1, record: bool = True, enqueue: str | Path | None = None,
               in_process: bool = False, callbacks: list[Callback] | None = None) -> optuna.Study:
    """Run (or resume) the study until it holds `cfg.trials` finished trials (all workers together).

    The study, teacher and teacher-logit cache are prepared here; then the trials run in
    `workers` supervised worker processes (kdsearch.search.supervise; one GPU each when several are
    visible), so a trial that kills its process fails alone. `in_process` runs them in this
    process instead (for debugging: breakpoints work; a crash then ends the run). `callbacks`
    (Optuna's (study, frozen_trial) -> None) and the tracker ([study] tracking) see each trial
    this run finishes, in this process (search.callbacks). What it prints is also appended to RUN/run.log.
    """
    console = console or Console()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is reported in one line, below
    if in_process and workers > 1:
        raise KDSearchError("--in-process runs the trials in one process: drop --workers or --in-process")
    callbacks = check_callbacks(callbacks)
    tracker = make_tracker(cfg, console)  # a missing package: one line, before any work
    entries = load_enqueue(enqueue) if enqueue else []
    if entries and cfg.strategy == "oneshot":
        raise KDSearchError("--enqueue: a one-shot study evaluates subnets of its supernets, not given students "
                            "(enqueue them into a per-trial study)")
    created = new_folders(cfg.run_path)
    try:
        make_run_folder(cfg.run_path)
        check_run_folder(cfg)
        with run_log(cfg.run_path, console):
            LOGGER.info(f"$ {command_line()}")
            try:
                study = _run_search(cfg, console, study_file, workers, record, enqueue, entries, in_process,
                                    callbacks + ([tracker] if tracker else []), tracker)
                if cfg.promote and n_finished(study) >= cfg.trials:  # the search's trials done: its best go on
                    with alive(cfg.run_path):
                        promote(cfg, study, console)
                return study
            finally:
                if tracker is not None:
                    tracker.close()
    except KDSearchError:  # refused (an unknown teacher, data it cannot load...): a new folder with no work goes
        forget_refused_run(created, cfg.run_path)
        raise


def _run_search(cfg: StudyConfig, console: Console, study_file: Path | None, workers: int, record: bool,
                enqueue: str | Path | None, entries: list, in_process: bool, callbacks: list[Callback],
                tracker: Tracker | None) -> optuna.Study:
    if not entries and (study := _finished(cfg, console)) is not None:
        return study
    if not in_process:
        start_worker_server()  # it imports torch and kdsearch beside the preparation, for the workers to fork from
    ctx, study = prepare(cfg, console, study_file, record)
    feed = TrialFeed(callbacks, study) if callbacks else None
    if tracker is not None:
        console.print(tracking_note(tracker), highlight=False)
    if entries:
        new = enqueue_students(study, entries, ctx.data)
        console.print(f"{new} known student(s) queued from {enqueue} (evaluated first)" if new else
                      f"the students in {enqueue} are queued already", highlight=False)
    with alive(cfg.run_path):
        recovered = recover_dead_trials(study, cfg.run_path, retries=cfg.retries)
        if recovered:
            console.print(f"[yellow]trial(s) {', '.join(map(str, recovered))} of stopped workers marked failed; "
                          "their parameters are queued again unless they were retried already[/]", highlight=False)
        done = n_finished(study)
        if done >= cfg.trials:  # (_finished saw trials in flight; other workers may have finished it since)
            _nothing_to_run(console, done, cfg.trials)
            return study
        console.print(f"running until {cfg.trials} trials are finished ({done} already), {trials_text(cfg)}",
                      highlight=False)
        if in_process:
            evaluation = prepare_evaluation(ctx, console)  # (in workers, each prepares its own: search.trials)
            if evaluation.trains:
                estimate_search(ctx, cfg.trials - done, console, study)
            with progress_bar(console) as progress:
                ctx.progress = progress
                run_trials(study, ctx, progress, progress.add_task("trials", total=cfg.trials, completed=done),
                           feed=feed, evaluation=evaluation)
            return study
        device = ctx.device
        del ctx  # the workers load the prepared data, teacher and cache themselves
        if device.type == "cuda":
            torch.cuda.empty_cache()

        supervise(cfg, study, workers, console, feed=feed)
    return study
