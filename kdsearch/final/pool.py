"""`kdsearch train --jobs N`: the models that can run at once trained side by side in N spawned processes,
each loading the prepared inputs (data, teacher, logit cache) at its share of the cores."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import Progress

from ..config import config_from_dict
from ..errors import KDSearchError
from ..models.students.registry import build
from ..models.students.spec import StudentSpec
from ..search.inputs import TrialContext, prepare_inputs
from ..search.spawn import worker_context
from ..search.supervise import family_modules, threads_each
from ..training.memory_format import fast_memory_format
from .arms import FinalRun
from .models import _train_and_save


_WORKER: dict[str, Any] = {}  # in a --jobs process: its prepared inputs
Item = tuple[str, int, float, "int | None"]  # a model to train: arm, seed, lr, probe epochs (None: the full budget)


def _start_worker(cfg: dict[str, Any], imports: list[str]) -> None:
    """A --jobs process: the same inputs as its parent (data, teacher, logit cache), loaded, not rebuilt."""
    for module in imports:  # student families registered outside kdsearch
        importlib.import_module(module)
    ctx = prepare_inputs(config_from_dict(cfg), Console(quiet=True))
    _WORKER.update(ctx=ctx, test=(ctx.data.test.x.to(ctx.device), ctx.data.test.y.to(ctx.device)))


def _train_in_worker(folder: str, spec: str, hp: dict[str, float], mode: str, seed: int, lr: float,
                     probe: int | None, epochs: int, init: str | None) -> FinalRun:
    return _train_and_save(Path(folder), _WORKER["ctx"], StudentSpec.from_json(spec), hp, mode, seed, lr,
                           probe, epochs, *_WORKER["test"], None, Path(init) if init else None)


def job_threads(ctx: TrialContext, jobs: int) -> int | None:
    """A --jobs process's CPU threads: --threads if given, else on a CPU its share of the cores, as search
    workers have (the parent prepared the teacher and its logit cache on all of them first)."""
    if ctx.cfg.threads is None and ctx.device.type == "cpu":
        return threads_each(jobs)
    return ctx.cfg.threads


def worker_config(ctx: TrialContext, jobs: int) -> dict[str, Any]:
    """A --jobs process's config: the run's, at the process's thread count."""
    return {**ctx.cfg.to_dict(), "threads": job_threads(ctx, jobs)}


@contextlib.contextmanager
def as_a_job(ctx: TrialContext, jobs: int) -> Iterator[None]:
    """This process at a --jobs process's thread count, for what it measures on their behalf (the parent
    prepares on all the cores; a timing at that count would not say how the processes run)."""
    before = torch.get_num_threads()
    torch.set_num_threads((job_threads(ctx, jobs) if jobs > 1 else None) or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def choose_layout(ctx: TrialContext, spec: StudentSpec, jobs: int) -> None:
    """Time the student's memory layouts here, as a --jobs process, before the processes start: each then
    reads the choice (training.memory_format) instead of timing it beside the others at once, where two
    of them could choose differently and train arms of one seed in different layouts."""
    with as_a_job(ctx, jobs), torch.random.fork_rng(devices=[]):  # (building it draws initial weights)
        fast_memory_format(build(spec).to(ctx.device), ctx.device, tuple(ctx.x_train.shape[1:]), ctx.cfg.train.batch_size)


def _train_side_by_side(folder: Path, ctx: TrialContext, label: str, spec: StudentSpec, hp: dict[str, float],
                        epochs: int, plan: Callable[[], list[Item]], record: Callable[[FinalRun, Progress], None],
                        jobs: int, progress: Progress, init: Path | None = None) -> None:
    """Train what `plan` says is left in `jobs` processes at once (spawned: safe with CUDA), recording each
    model as it finishes; the lr candidates come first, so the seeds' arms are planned once they are in."""
    task = progress.add_task(f"{label}: models in {jobs} processes", total=len(plan()))
    choose_layout(ctx, spec, jobs)
    context = worker_context()  # spawned (safe with CUDA), never importing the caller's __main__
    try:
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker,
                                 initargs=(worker_config(ctx, jobs), family_modules())) as pool:
            running: dict[Any, Item] = {}
            finished_models = 0
            while True:
                for item in plan():
                    if item not in running.values():
                        running[pool.submit(_train_in_worker, str(folder), spec.to_json(), hp, *item, epochs,
                                            str(init) if init else None)] = item
                progress.update(task, total=finished_models + len(running))
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    del running[future]
                    record(future.result(), progress)
                    finished_models += 1
                    progress.advance(task)
    except BrokenProcessPool as exc:
        raise KDSearchError(f"a --jobs training process died ({exc}); the models it finished are kept: "
                            "run the same command to continue (with fewer --jobs if memory ran out)") from None
    finally:
        progress.remove_task(task)
