"""The progress bar every long step shows (with time left), and how a duration reads in an estimate."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar(console: Console, transient: bool = True, every: float = 30.0) -> Progress | LineProgress:
    """A rich Progress with an estimate of the time left; a LineProgress when the console is no terminal."""
    if not (console.is_terminal or console.is_jupyter):
        return LineProgress(console, every)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), console=console, transient=transient)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float = 0.0
    initial: float = 0.0  # done before this process (a resumed training): not part of its rate
    start: float = field(default_factory=lambda: time.monotonic())
    last: float = field(default_factory=lambda: time.monotonic())


class LineProgress:
    """The subset of rich.progress.Progress kdsearch uses, printing lines instead of a live bar."""

    def __init__(self, console: Console, every: float = 30.0):
        self.console, self.every = console, every
        self._tasks: dict[int, _Task] = {}
        self._next = 0

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self._tasks.clear()

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **_) -> int:
        self._next += 1
        self._tasks[self._next] = _Task(description, total, float(completed), float(completed))
        return self._next

    def update(self, task_id: int, *, completed: float | None = None, advance: float | None = None,
               description: str | None = None, total: float | None = None, **_) -> None:
        task = self._tasks.get(task_id)
        if task is None:
            return
        if description is not None:
            task.description = description
        if total is not None:
            task.total = total
        if completed is not None:
            task.completed = float(completed)
        if advance is not None:
            task.completed += advance
        now = time.monotonic()
        if now - task.last >= self.every:
            task.last = now
            self._say(task, now)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def remove_task(self, task_id: int) -> None:
        task = self._tasks.pop(task_id, None)
        if task is not None and time.monotonic() - task.start >= self.every:
            self._say(task, time.monotonic(), done=True)

    def _say(self, task: _Task, now: float, done: bool = False) -> None:
        spent = now - task.start
        if task.total:
            share = min(task.completed / task.total, 1.0)
            rate = (task.completed - task.initial) / spent if spent > 0 else 0.0  # this process's own pace
            left = (f", about {_clock((task.total - task.completed) / rate)} left"
                    if rate > 0 and share < 1 and not done else "")
            where = f"{task.completed:,.0f}/{task.total:,.0f} ({share:.0%})"
        else:
            where, left = f"{task.completed:,.0f}", ""
        self.console.print(f"{task.description}: {where}, {_clock(spent)} elapsed{left}", highlight=False)


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


SLOW_S = 600  # estimates above this come with what would shorten them
