"""Worker processes that never import the caller's `__main__`.

multiprocessing's spawn start method re-imports the parent's main module in every child so that
functions defined there can be unpickled. kdsearch's workers run kdsearch's own functions only (the
modules that registered student families are imported by name), so they need nothing of `__main__`,
and importing it does harm: a script that calls `kdsearch.run(...)` at its top level, without an
`if __name__ == "__main__":` guard, would start a study again in every worker (which then fails to
start its own workers: "worker processes died 5 times in a row"), and under `python - <<EOF` the
child looks for a file named '<stdin>'. So the main module is hidden while a worker is launched
(the preparation data the child receives then names no main module), as it is in a notebook, where
the main module has no file either. Optuna's and Ray Tune's APIs work in such scripts; so does this.
"""

from __future__ import annotations

import contextlib
import multiprocessing.context
import sys
import types
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def main_module_hidden() -> Iterator[None]:
    """While the block runs, `sys.modules["__main__"]` is an empty module (no file, no spec)."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


class WorkerProcess(multiprocessing.context.SpawnProcess):
    """A spawned process launched with the caller's main module hidden (only while it is launched)."""

    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        with main_module_hidden():
            return multiprocessing.context.SpawnProcess._Popen(process_obj)


class WorkerContext(multiprocessing.context.SpawnContext):
    """The spawn context, whose processes never import the caller's `__main__`."""

    Process = WorkerProcess


def worker_context() -> WorkerContext:
    """The context every kdsearch worker process is started from (search workers, final training's --jobs)."""
    return WorkerContext()
