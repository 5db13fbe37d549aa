"""`kdsearch status`: where a study stands, without touching it.

Trials by state, the running ones with their worker, age and last heartbeat (and whether that
worker is alive, when it runs on this machine), recent failures with their reasons, the front so
far, whether the teacher and its logit cache are ready in the run folder, and how far final training
(`kdsearch train`) has come: the models recorded and those in progress.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table

from ..analysis.front import TRIAL_STATES, trial_state
from ..runs.layout import PARTIAL_LOGITS_SUFFIX, PARTIAL_SUFFIX, RESULTS_FILE, teachers_dir
from ..runs.run import Run
from ..runs.trial_attrs import rung_of
from ..search.study import n_finished
from ..search.workers import ERROR_ATTR, HEARTBEAT_ATTR, WORKER_ATTR, is_alive
from ..training.checkpoint import progress_of
from .tables import front_facts, pareto_table, teacher_facts


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def show_status(run: Run, console: Console) -> None:
    study = run.study
    trials = study.get_trials(deepcopy=False)
    counts = Counter("waiting" if t.state == TrialState.WAITING else trial_state(t) for t in trials)
    target = run.config.get("trials")
    done = n_finished(study)  # as --trials counts: rejections, repeats and promotions (rung trials) do not
    rungs = sum(1 for t in trials if rung_of(t) and t.state == TrialState.COMPLETE)
    console.print(f"study [cyan]{study.study_name}[/]: {done} of {target or '?'} trials finished ("
                  + ", ".join(f"{counts[k]} {k}" for k in (*TRIAL_STATES, "waiting") if counts[k]) + ")"
                  + (f"; {rungs} promoted student(s) trained at the rung" if rungs else ""), highlight=False)
    now = time.time()
    running = [t for t in trials if t.state == TrialState.RUNNING]
    if running:
        table = Table(title="running trials")
        for col in ("trial", "worker", "alive", "started", "heartbeat", "epochs done", "architecture"):
            table.add_column(col)
        for t in running:
            worker = t.user_attrs.get(WORKER_ATTR)
            alive = is_alive(run.run_dir, worker)
            beat = t.user_attrs.get(HEARTBEAT_ATTR)
            start = t.datetime_start.timestamp() if t.datetime_start else now  # Optuna stores local time
            table.add_row(str(t.number), worker or "?", {True: "yes", False: "no (dead)", None: "?"}[alive],
                          _ago(now - start) + " ago", _ago(now - beat) + " ago" if beat else "",
                          str(len(t.user_attrs.get("curve", []))), t.user_attrs.get("arch", ""))
        console.print(table)
    failed = [t for t in trials if t.state == TrialState.FAIL][-5:]
    for t in failed:
        console.print(f"failed trial {t.number}: {t.user_attrs.get(ERROR_ATTR, 'no reason recorded')}", highlight=False)
    teacher = study.user_attrs.get("teacher")
    if run.run_dir is not None:
        ready = teacher and (teachers_dir(run.run_dir) / f"{teacher['key']}.json").is_file()
        files = sorted((run.run_dir / "logits").glob("*.safetensors")) if (run.run_dir / "logits").is_dir() else []
        building = [p for p in files if p.name.endswith(PARTIAL_LOGITS_SUFFIX)]
        caches = [f"{p.name} ({p.stat().st_size / 2**20:.1f} MiB)" for p in files if p not in building]
        caches += [f"{p.name[:-len(PARTIAL_LOGITS_SUFFIX)]} being built ({p.stat().st_size / 2**20:.1f} MiB so far, "
                   f"saved {_ago(now - p.stat().st_mtime)} ago)" for p in building]
        console.print(f"teacher: {teacher['name'] + ', test ' + format(teacher['test_accuracy'], '.2%') if teacher else 'not prepared yet'}"
                      f"{' (weights ready in the run folder)' if ready else ''}; teacher-logit cache: "
                      + (", ".join(caches) or "not built yet"), highlight=False)
        for line in _final_training(run.run_dir, now):
            console.print(line, highlight=False)
    if counts["complete"]:
        console.print(pareto_table(study))


def status_facts(run: Run) -> dict[str, Any]:
    """What `status` shows, as JSON values (`kdsearch status --json`): trial counts, the running trials
    (ages in seconds), the last failures, the teacher and its logit caches, final training, the front."""
    study, now = run.study, time.time()
    trials = study.get_trials(deepcopy=False)
    counts = Counter("waiting" if t.state == TrialState.WAITING else trial_state(t) for t in trials)
    running = []
    for t in (t for t in trials if t.state == TrialState.RUNNING):
        beat = t.user_attrs.get(HEARTBEAT_ATTR)
        running.append({"trial": t.number, "worker": t.user_attrs.get(WORKER_ATTR),
                        "alive": is_alive(run.run_dir, t.user_attrs.get(WORKER_ATTR)),
                        "started_s_ago": round(now - t.datetime_start.timestamp(), 1) if t.datetime_start else None,
                        "heartbeat_s_ago": round(now - beat, 1) if beat else None,
                        "epochs_done": len(t.user_attrs.get("curve", [])), "arch": t.user_attrs.get("arch")})
    caches: list[dict[str, Any]] = []
    if run.run_dir is not None and (run.run_dir / "logits").is_dir():
        for p in sorted((run.run_dir / "logits").glob("*.safetensors")):
            caches.append({"file": p.name, "bytes": p.stat().st_size, "complete": not p.name.endswith(PARTIAL_LOGITS_SUFFIX)})
    teacher = study.user_attrs.get("teacher")
    return {"study": study.study_name, "run_dir": str(run.run_dir) if run.run_dir is not None else None,
            "target": run.config.get("trials"), "finished": counts["complete"] + counts["pruned"],
            "states": {k: counts[k] for k in (*TRIAL_STATES, "waiting")},
            "running": running,
            "failed": [{"trial": t.number, "error": t.user_attrs.get(ERROR_ATTR)}
                       for t in trials if t.state == TrialState.FAIL][-5:],
            "teacher": teacher_facts(study), "teacher_ready": bool(
                teacher and run.run_dir is not None and (teachers_dir(run.run_dir) / f"{teacher['key']}.json").is_file()),
            "logit_caches": caches,
            "final_training": _final_training(run.run_dir, now) if run.run_dir is not None else [],
            "front": front_facts(study)}


def _final_training(run_dir: Path, now: float) -> list[str]:
    """A line per retrained trial: the models recorded, and those in progress with their last saved epoch."""
    lines = []
    for folder in sorted((Path(run_dir) / "final").glob("[0-9]*")):
        results = folder / RESULTS_FILE
        runs = json.loads(results.read_text()).get("runs", []) if results.is_file() else []
        probes = sum(1 for r in runs if r.get("probe"))
        partial = []
        for p in sorted(folder.glob(f"*{PARTIAL_SUFFIX}")):
            done = progress_of(p)
            where = f"epoch {done[0]}/{done[1]}" if done else "unreadable"
            partial.append(f"{p.name[:-len(PARTIAL_SUFFIX)]} at {where}, saved {_ago(now - p.stat().st_mtime)} ago")
        lines.append(f"final training of trial {int(folder.name)}: {len(runs) - probes} model(s) and {probes} lr probe(s) "
                     "recorded" + (f"; in progress: {'; '.join(partial)}" if partial else ""))
    return lines
