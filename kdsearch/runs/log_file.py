"""RUN/run.log: what a run printed (settings, data, teacher, estimates, each trial, warnings, errors), with times.

Every line a console prints while `run_log` is open is appended to the run's log file through Python
logging, as plain text: the lines of `kdsearch run` and of its worker processes (each appends its own),
Python warnings, and the error or interruption that ended it. Progress bars are not logged (their
lines are redrawn many times a second). A resumed run appends to the same file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console, ConsoleRenderable, RenderHook
from rich.table import Table
from rich.text import Text

from ..errors import KDSearchError


LOG_FILE = "run.log"
LOGGER = logging.getLogger("kdsearch.run")
WIDTH = 200  # the log's lines: wide, so a table's rows stay on one line
FORMAT = "%(asctime)s %(levelname)-7s %(message)s"


def log_path(run_dir: Path) -> Path:
    return Path(run_dir) / LOG_FILE


class LogHook(RenderHook):
    """Logs the text of each line or table a console prints (a rich render hook sees every print)."""

    def process_renderables(self, renderables: list[ConsoleRenderable]) -> list[ConsoleRenderable]:
        for renderable in renderables:
            if isinstance(renderable, (Text, Table)):  # not a live progress bar's redraw (Control, Group)
                log_renderable(renderable)
        return renderables


def log_renderable(renderable: Text | Table) -> None:
    plain = io.StringIO()
    Console(file=plain, width=WIDTH, color_system=None, force_terminal=False, force_jupyter=False,
            soft_wrap=isinstance(renderable, Text)).print(renderable)
    warn = isinstance(renderable, Text) and any(word in str(span.style) for span in renderable.spans
                                                for word in ("yellow", "red"))
    level = logging.WARNING if warn or plain.getvalue().lstrip().lower().startswith("warning") else logging.INFO
    for line in plain.getvalue().rstrip("\n").splitlines():
        if line.strip():
            LOGGER.log(level, line.rstrip())


@contextlib.contextmanager
def run_log(run_dir: Path, console: Console, errors: bool = True) -> Iterator[None]:
    """Append what `console` prints (and Python's warnings, and with `errors` the error that ends the block)
    to RUN/run.log. The run folder must exist. (A worker process passes errors=False: its supervisor logs them.)"""
    handler = logging.FileHandler(log_path(run_dir), mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False  # the user sees the console's lines already
    hook = LogHook()
    console.push_render_hook(hook)
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        LOGGER.warning(" ".join(warnings.formatwarning(message, category, filename, lineno, line).split()))
        shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    except KDSearchError as exc:
        if errors:
            LOGGER.error(f"error: {exc}")
        raise
    except KeyboardInterrupt:
        if errors:
            LOGGER.warning("interrupted")
        raise
    except Exception as exc:
        if errors:
            LOGGER.error(f"crashed: {type(exc).__name__}: {exc}")
        raise
    finally:
        warnings.showwarning = shown
        console.pop_render_hook()  # ours: a progress bar's hook, pushed after it, is gone with its bar
        LOGGER.removeHandler(handler)
        handler.close()
