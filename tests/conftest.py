"""Fixtures shared by the test files."""

import os
from pathlib import Path

import pytest
import torch

from kdsearch.measure.costs import count_params
from kdsearch.measure.latency import Timing
from kdsearch.search.supervise import threads_each

SHARED = Path(__file__).resolve().parents[2] / "shared"


# the cores shared among pytest-xdist's workers (one thread each on 2 cores), as kdsearch shares them
# among its own workers: more threads than cores slows every test
THREADS = threads_each(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
# and the processes the tests start (`kdsearch` commands, study workers forked from the fork server, scripts)
# default to as many: a run without --threads would otherwise use every core beside the other test process
os.environ["OMP_NUM_THREADS"] = str(THREADS)


@pytest.fixture(autouse=True)
def torch_threads():
    """Each test starts with THREADS: a run with `threads` sets the count for the whole process (as the
    CLI does), and a later test in the same worker would record and train with it."""
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(THREADS)


@pytest.fixture(scope="session")
def shared() -> Path:
    """The ../shared folder (real CIFAR-10 data, teachers); tests that need it skip when absent."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent")
    return SHARED


@pytest.fixture(scope="session")
def folder(tmp_path_factory) -> Path:
    """3 classes of 8x8 RGB images whose colour gives the class away (learnable in a few steps)."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 10)):
        for c, name in enumerate(["red", "green", "blue"]):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 60, (8, 8, 3), dtype=np.uint8)
                img[..., c] += 150
                Image.fromarray(img).save(root / split / name / f"{i}.png")
    return root


class PruneTrialTwo:
    """Prunes trial 2 after its first epoch, so a tiny run always has a pruned trial."""

    def should_prune(self, history, curve, epochs, costs):
        return len(history) == 2 and len(curve) == 1


@pytest.fixture
def untimed(tmp_path, monkeypatch) -> None:
    """A study run by a test, in-process: its own kdsearch cache, and latencies not timed (about 1 s a student;
    such tests read the study, not latencies)."""
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("kdsearch.measure.latency.student_latency",
                        lambda model, shape, runtime="onnxruntime", batch=1, threads=1, graph=None, device=None:
                        Timing(0.01, 0.001, 1, runtime, batch, threads))


@pytest.fixture(scope="session")
def tiny_run(folder, tmp_path_factory) -> Path:
    """A finished 6-trial study (5 complete, trial 2 pruned) made through the CLI, for report and dashboard tests.

    Shared by the session: tests may add files to it (report, test accuracies, artifacts) but
    must not depend on whether another test did so first.
    """
    from typer.testing import CliRunner

    from kdsearch.cli import app

    def fake_latency(model, input_shape):
        """Timing takes ~1 s a model; these tests read the study, they do not need real latencies."""
        return 0.01 + count_params(model) / 1e6

    def fake_timing(model, input_shape, runtime="onnxruntime", batch=1, threads=1, graph=None, device=None):
        return Timing(fake_latency(model, input_shape), 0.001, 1, runtime, batch, threads)

    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    study_file = run_dir.parent / "tiny.toml"
    # a small teacher-logit cache, small batches (6 steps an epoch: students learn, accuracies spread) and
    # plain students only (the report's figures and importances are checked on them)
    # T and alpha searched (the default fixes them): their spread keeps the tiny students' accuracies apart,
    # which the report's importances need
    study_file.write_text('[train]\nviews = 2\nbatch_size = 16\n\n[space]\nfamily = "plain"\n'
                          'temperature = [1.0, 10.0]\nalpha = [0.0, 1.0]\n')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KDSEARCH_CACHE", str(run_dir.parent / "cache"))
        mp.setattr("kdsearch.search.inputs.make_pruner", lambda *a: PruneTrialTwo())
        mp.setattr("kdsearch.measure.latency.student_latency", fake_timing)
        mp.setattr("kdsearch.training.teacher.teacher_latency", lambda model, shape, *a: fake_latency(model, shape))
        result = CliRunner().invoke(app, [
            "run", str(study_file), "--dataset", "imagefolder", "--data-dir", str(folder), "--teacher", "resnet20",
            "--no-pretrained", "--teacher-epochs", "1", "--epochs", "2", "--device", "cpu",
            "--run-dir", str(run_dir), "--study-name", "tiny", "--trials", "6", "--in-process"])  # patched here
    assert result.exit_code == 0, result.output
    return run_dir


def pytest_collection_modifyitems(items):
    """Tests marked slow first: the test processes share them out at the start, instead of one process
    running the last long test while the other waits (about half a minute of the suite's wall time)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
