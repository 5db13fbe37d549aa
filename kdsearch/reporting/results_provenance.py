"""The results document's "How it was made": commands, the code and machines, the study file, each said once.

A run's run.json records the kdsearch version of the command that first wrote it. For a run folder
made before run.json existed, that is a later command that found the search finished, not the
code that ran it; where git knows the recorded commit, its date tells the two apart (a commit
made after the search's last trial cannot have run it). Final training records its environment
per student; students that share one (all but the date) are listed together.
"""

from __future__ import annotations

import datetime
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import optuna

from ..runs.layout import run_file
from ..runs.trial_attrs import COMMAND, rung_of

COMMIT = re.compile(r"commit ([0-9a-f]{7,40})(-dirty)?")


def code_text(recorded: str) -> str:
    """'0.1.0 (commit 287dfde)' -> 'kdsearch 0.1.0, commit 287dfde'; a version kdsearch could not read is left out."""
    version, _, rest = recorded.partition(" (")
    commit = COMMIT.search(recorded)
    where = f"commit {commit.group(1)}{commit.group(2) or ''}" if commit else rest.rstrip(")")
    if version in ("", "unknown"):
        return f"kdsearch at {where}" if where else "kdsearch"
    return f"kdsearch {version}" + (f", {where}" if where else "")


def commit_time(recorded: str) -> datetime.datetime | None:
    """When the recorded commit was made, if this checkout's git knows it (else None)."""
    found = COMMIT.search(recorded)
    if not found:
        return None
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%cI", found.group(1)],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        return datetime.datetime.fromisoformat(out) if out else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def local(moment: datetime.datetime) -> datetime.datetime:
    """Optuna stores trial times as naive local times: make them comparable with a commit's."""
    return moment.astimezone() if moment.tzinfo is None else moment


def search_code_line(info: dict[str, Any], study: optuna.Study) -> str:
    """Which code ran the search, as far as run.json and the study's trial times can show it."""
    recorded = info.get("kdsearch")
    if not recorded:
        return ""
    code = code_text(recorded)
    made = commit_time(recorded)
    starts = [local(t.datetime_start) for t in study.trials if t.datetime_start]
    ends = [local(t.datetime_complete) for t in study.trials if t.datetime_complete]
    if made and ends and made > max(ends):
        return (f"- run.json names {code}, a commit made after the search's last trial finished: run.json was "
                "written by a later command, so it does not say which code ran the search.")
    if made and starts and made <= min(starts):
        return f"- The search ran with {code} (run.json)."
    return f"- run.json records {code}: the code that first wrote it, normally the search's own."


def environment_lines(finals: list[dict[str, Any]]) -> list[str]:
    """One line per distinct final-training environment (the date aside), with its students and dates."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for b in finals:
        env = b.get("environment")
        if env:
            key = json.dumps({k: v for k, v in env.items() if k != "date"}, sort_keys=True)
            groups.setdefault(key, []).append((b["setup"]["trial"], env.get("date", "")))
    lines = []
    for key, members in groups.items():
        env = json.loads(key)
        dates = sorted(d for _, d in members if d)
        when = "" if not dates else (f", finished {dates[0]}" if dates[0] == dates[-1] else
                                     f", finished between {dates[0]} and {dates[-1]}")
        who = ("every student" if len(groups) == 1 and len(members) == len(finals) else
               ("trial " if len(members) == 1 else "trials ") + ", ".join(str(n) for n, _ in sorted(members)))
        lines.append(f"- Final training ({who}) ran on {env['machine']}, device {env['device']}, {env['threads']} "
                     f"threads, torch {env['torch']}, Python {env['python']}, "
                     f"{code_text(env.get('kdsearch', '?'))}{when}.")
    return lines + ([""] if lines else [])


def study_file_lines(info: dict[str, Any]) -> list[str]:
    """The study file as the run recorded it, folded away (it is long), or the resolved config without one."""
    if not info.get("study_text"):
        return ["The resolved study configuration (run.json):", "", "```json",
                json.dumps(info.get("config", {}), indent=2), "```", ""]
    name = info.get("study_file") or "study file"
    here = Path(name)
    changed = here.is_file() and here.read_text() != info["study_text"]
    note = " (the repository's copy has changed since)" if changed else ""
    return [f"<details><summary>Study file <code>{name}</code> as the run recorded it in run.json{note}</summary>",
            "", "```toml", info["study_text"].rstrip(), "```", "", "</details>", ""]


def shown_command(command: str, run_dir: Path) -> str:
    """A recorded command with its run folder written as `kdsearch results` was given it, when that is a
    relative path: the absolute path of the machine that ran it reruns nowhere else."""
    if run_dir.is_absolute():
        return command
    rel = run_dir.as_posix()
    return re.sub(r"(?<!\S)/\S*/" + re.escape(rel) + r"(?=/|\s|$)", rel, command)


def provenance_section(run_dir: Path, study: optuna.Study, finals: list[dict[str, Any]],
                       search: bool = True) -> list[str]:
    """How a run was made: its commands, the search's code, final training's machines, the study file
    (without the search's parts when `search` is False: the document shows them for another folder)."""
    info = json.loads(run_file(run_dir).read_text())
    lines = ["### How it was made", ""]
    promoted = [t.user_attrs.get(COMMAND) for t in study.get_trials(deepcopy=False) if rung_of(t)] if search else []
    commands = list(dict.fromkeys([info.get("command") if search else None, *promoted,  # a later --promote too
                                   *(b.get("command") for b in finals)]))
    commands = [shown_command(c, run_dir) for c in commands if c]
    if commands:
        lines += ["```", *commands, "```", ""]
    code = search_code_line(info, study) if search else ""
    if code:
        lines += [code, ""]
    return lines + environment_lines(finals) + (study_file_lines(info) if search else [])
