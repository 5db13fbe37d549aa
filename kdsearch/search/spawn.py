"""Worker processes that start fast and never import the caller's `__main__`.

**Fast.** Every worker (a search's supervised workers, final training's --jobs processes) is forked from
one fork server per parent process (multiprocessing's "forkserver" start method), a clean interpreter
that imported torch and kdsearch's worker modules once (`PRELOAD`). A spawned worker paid that import,
about 4-5 s on a 2-core CPU, every time it started; a forked one starts in a fraction of a second, and
the server's own start overlaps the parent's preparation (`start_worker_server`). The server never
touches CUDA or runs a thread pool (it only imports), so forking from it is as safe as spawning. A
forked child has the server's environment and the parent's working directory and sys.path (sent with
each start); it takes the parent's environment as it was at the start (`WorkerProcess`). Where
"forkserver" is not available (Windows), workers are spawned.

**No `__main__`.** multiprocessing's spawn and forkserver start methods re-import the parent's main
module in every child so that functions defined there can be unpickled. kdsearch's workers run
kdsearch's own functions only (the modules that registered student families are imported by name), so
they need nothing of `__main__`, and importing it does harm: a script that calls `kdsearch.run(...)`
at its top level, without an `if __name__ == "__main__":` guard, would start a study again in every
worker (which then fails to start its own workers: "worker processes died 5 times in a row"), and
under `python - <<EOF` the child looks for a file named '<stdin>'. So the main module is hidden while
a worker is launched (the preparation data the child receives then names no main module), as it is
in a notebook, where the main module has no file either. Optuna's and Ray Tune's APIs work in such
scripts; so does this.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import sys
import types
from collections.abc import Iterator
from typing import Any

# what a worker imports anyway before its first trial ends: once, in the fork server (an import that fails
# there is left to the worker). Beyond kdsearch's modules: torch._dynamo (every optimizer's first use imports
# it: about 2 s on the 2-core CPU), onnx and onnxruntime (a trial's latency), and the SQL layer of the study's
# storage (about 0.8 s); about 4 s a worker paid after its fork before this list named them.
PRELOAD = ["torch", "torch._dynamo", "onnx", "onnxruntime", "sqlalchemy.orm", "alembic.context",
           "kdsearch.search.supervise", "kdsearch.final.pool"]
FORKSERVER = "forkserver" in multiprocessing.get_all_start_methods()
_Context, _Process = ((multiprocessing.context.ForkServerContext, multiprocessing.context.ForkServerProcess)
                      if FORKSERVER else (multiprocessing.context.SpawnContext, multiprocessing.context.SpawnProcess))


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


class WorkerProcess(_Process):  # type: ignore[misc,valid-type]
    """A worker process: forked from the fork server (spawned where there is none), launched with the caller's
    main module hidden, with the caller's environment as it is when the process is made."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._environ = dict(os.environ)  # (pickled with the process: a forked child has the server's otherwise)

    def run(self) -> None:
        os.environ.clear()
        os.environ.update(self._environ)
        super().run()

    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        with main_module_hidden():
            return _Process._Popen(process_obj)


class WorkerContext(_Context):  # type: ignore[misc,valid-type]
    """The context every kdsearch worker process is started from."""

    Process = WorkerProcess


def start_worker_server() -> None:
    """Start the fork server now (it imports PRELOAD in the background), so that its start overlaps the
    parent's own work; idempotent, and a no-op where workers are spawned."""
    if FORKSERVER:
        with main_module_hidden():  # (the server is told the main module's path: none)
            multiprocessing.forkserver.set_forkserver_preload(PRELOAD)
            multiprocessing.forkserver.ensure_running()


def worker_context() -> WorkerContext:
    """The context every kdsearch worker process is started from (search workers, final training's --jobs)."""
    start_worker_server()
    return WorkerContext()
