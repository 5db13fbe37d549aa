"""Latency where the student runs (ONNX Runtime by default) with its spread, a quiet CPU to time it on,
the `bytes` cost and budget, and int8 students from `kdsearch export --int8`."""

import json
import threading
import time

import optuna
import pytest
import torch
from optuna.trial import TrialState
from typer.testing import CliRunner

from kdsearch.cli import app
from kdsearch.config import LEGACY_STUDY, config_from_dict, load_config
from kdsearch.errors import KDSearchError
from kdsearch.export.int8 import INT8_FILE
from kdsearch.measure.latency import BLOCKS, student_latency
from kdsearch.search.cpu_share import TrainingShare, quiet_cpu, training_share
from kdsearch.measure.onnx_graph import onnx_bytes
from kdsearch.models.students.io import load_student
from kdsearch.models.students.registry import build
from kdsearch.models.students.spec import StudentSpec
from kdsearch.runs.storage import make_storage
from kdsearch.search.pruners import PRUNED_AT
from kdsearch.search.study import counts

runner = CliRunner()
STUDENT = {"spec": {"channels": [16, 32], "convs_per_stage": 1, "kernel_size": 3, "batch_norm": True},
           "temperature": 4.0, "alpha": 0.0, "lr": 0.2}


def digits_args(run_dir, *extra):
    """A digits study whose teacher is untrained (0 epochs, so at chance: allowed) and cached for one view:
    fast to prepare."""
    return ["run", "--dataset", "digits", "--teacher", "resnet20", "--no-pretrained", "--teacher-epochs", "0",
            "--allow-chance-teacher", "--views", "1", "--device", "cpu", "--threads", "1", "--run-dir", str(run_dir), "--study-name", "lat",
            *extra]


def load(run_dir):
    info = json.loads((run_dir / "run.json").read_text())
    return optuna.load_study(study_name=info["study_name"], storage=make_storage(info["storage"]))


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """One known student (trained without its teacher, alpha 0) on digits, 10 epochs, int8 bytes as a cost."""
    root = tmp_path_factory.mktemp("digits")
    known = root / "known.json"
    known.write_text(json.dumps([STUDENT]))
    study_file = root / "s.toml"
    study_file.write_text("[train]\nbatch_size = 64\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KDSEARCH_CACHE", str(root / "cache"))
        result = runner.invoke(app, digits_args(root / "run", str(study_file), "--trials", "1", "--epochs", "10",
                                                "--enqueue", str(known), "--objectives", "accuracy,bytes,latency",
                                                "--bytes-format", "int8"))
    assert result.exit_code == 0, result.output
    return root / "run"


def test_a_study_records_its_onnxruntime_latency_and_spread(digits_run):
    study = load(digits_run)
    (trial,) = study.trials
    attrs = trial.user_attrs
    assert trial.state == TrialState.COMPLETE and attrs["arch"].startswith("conv[16,32]x1 k3 bn")
    assert 0 < attrs["latency_ms"] < 50 and 0 <= attrs["latency_iqr_ms"] < attrs["latency_ms"]
    assert trial.values[2] == attrs["latency_ms"] and trial.values[1] == attrs["bytes"]
    assert "latency_quiet" not in attrs  # timed while no other worker of the study trained
    cfg = study.user_attrs["config"]
    assert (cfg["latency_runtime"], cfg["latency_batch"], cfg["bytes_format"]) == ("onnxruntime", 1, "int8")
    assert study.user_attrs["fingerprint"]["latency_runtime"] == "onnxruntime"
    assert study.metric_names == ["val_accuracy", "bytes", "latency_ms"]


def test_the_resume_guard_refuses_another_runtime_and_old_studies_compare_as_torch(digits_run, tmp_path, monkeypatch):
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    same = [str(digits_run.parent / "s.toml"), "--trials", "1", "--epochs", "10", "--objectives", "accuracy,bytes,latency", "--bytes-format", "int8"]
    result = runner.invoke(app, digits_args(digits_run, *same, "--latency-runtime", "torch"))
    assert result.exit_code == 2 and 'latency_runtime "onnxruntime" (now "torch")' in result.output, result.output
    result = runner.invoke(app, digits_args(digits_run, *same, "--latency-batch", "4"))
    assert result.exit_code == 2 and "latency_batch 1 (now 4)" in result.output, result.output
    # a study stored before the setting existed measured eager PyTorch: it compares as "torch"
    study = load(digits_run)
    stored = study.user_attrs["fingerprint"]
    study.set_user_attr("fingerprint", {k: v for k, v in stored.items() if k != "latency_runtime"})
    try:
        result = runner.invoke(app, digits_args(digits_run, *same))
        assert result.exit_code == 2 and 'latency_runtime "torch" (now "onnxruntime")' in result.output
        result = runner.invoke(app, digits_args(digits_run, *same, "--latency-runtime", "torch"))
        assert result.exit_code == 0 and "nothing to run" in result.output, result.output
    finally:
        study.set_user_attr("fingerprint", stored)
    assert LEGACY_STUDY == {"latency_runtime": "torch"}
    old_run = load_config().to_dict()
    del old_run["latency_runtime"]  # a run.json written before the setting
    assert config_from_dict(old_run).latency_runtime == "torch"


def test_export_int8_on_digits_is_smaller_and_as_accurate(digits_run, tmp_path):
    out = tmp_path / "exp"
    result = runner.invoke(app, ["export", str(digits_run), "--trial", "0", "--out", str(out), "--int8"])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "export.json").read_text())
    q = info["int8"]
    assert (out / INT8_FILE).stat().st_size == q["int8_bytes"] < q["float_bytes"] == info["onnx"]["bytes"]
    assert q["float_val_accuracy"] > 0.8, q  # a trained student, so the comparison means something
    assert abs(q["int8_val_accuracy"] - q["float_val_accuracy"]) <= 0.02, q
    assert q["float_val_accuracy"] == pytest.approx(info["val_accuracy"], abs=1e-6)  # the same model as PyTorch's
    assert "float_test_accuracy" not in q  # search weights: the test split stays unread
    assert q["int8_latency_ms"] > 0 and q["float_latency_ms"] > 0 and q["calibration_images"] == 256
    # the bytes the search recorded before training are the int8 file's, to a few dozen bytes of scales
    assert abs(load(digits_run).trials[0].user_attrs["bytes"] - q["int8_bytes"]) <= 0.002 * q["int8_bytes"]
    assert "int8: " in result.output and "val accuracy int8" in result.output and "points" in result.output


def test_a_student_that_cannot_be_quantized_is_one_clear_line(digits_run, tmp_path, monkeypatch):
    import onnxruntime.quantization as q

    def broken(*args, **kwargs):
        raise ValueError("Unsupported op: SomeCustomOp\n  with a long\n  traceback-like message")

    monkeypatch.setattr(q, "quantize_static", broken)
    out = tmp_path / "exp"
    result = runner.invoke(app, ["export", str(digits_run), "--trial", "0", "--out", str(out), "--int8"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "trial 0: cannot quantize to int8: ValueError: Unsupported op: SomeCustomOp" in result.output
    assert "Traceback" not in result.output and not out.exists()  # nothing half-written


def test_max_bytes_rejects_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    limit = 20_000
    result = runner.invoke(app, digits_args(tmp_path / "run", "--trials", "3", "--epochs", "1", "--max-bytes",
                                            str(limit), "--objectives", "accuracy,bytes"))
    assert result.exit_code == 0, result.output
    study = load(tmp_path / "run")
    trained = [t for t in study.trials if counts(t)]
    rejected = [t for t in study.trials if t.state == TrialState.PRUNED and t.user_attrs.get(PRUNED_AT) == 0]
    assert len(trained) == 3 and all(t.user_attrs["bytes"] <= limit for t in trained)
    assert rejected and all(t.user_attrs["bytes"] > limit for t in rejected)
    assert all("latency_ms" not in t.user_attrs and "curve" not in t.user_attrs for t in rejected)  # never timed
    assert all(t.constraints["max_bytes"] > 0 for t in rejected)
    model, spec = load_student(tmp_path / "run" / "trials" / f"{trained[0].number:05d}")
    shape = (spec.in_channels, spec.image_size, spec.image_size)
    assert trained[0].user_attrs["bytes"] == len(onnx_bytes(model, shape))  # the file export writes
    impossible = runner.invoke(app, digits_args(tmp_path / "run2", "--trials", "1", "--max-bytes", "100"))
    assert impossible.exit_code == 2 and "--max-bytes 100: the space cannot meet it" in impossible.output
    assert not (tmp_path / "run2" / "teachers").exists()


@pytest.mark.parametrize("text,match", [
    ('[study]\nlatency_runtime = "tensorrt"\n', "latency_runtime: 'tensorrt' is not one of onnxruntime, torch"),
    ("[study]\nlatency_batch = 0\n", "latency_batch: must be an integer >= 1"),
    ("[study]\nmax_bytes = 0\n", "max_bytes: must be an integer >= 1"),
    ('[study]\nbytes_format = "int4"\n', "bytes_format: 'int4' is not one of float, int8"),
    ('[study]\nobjectives = ["accuracy", "bytes"]\n', None),
])
def test_latency_and_bytes_settings_are_checked_at_load(tmp_path, text, match):
    path = tmp_path / "s.toml"
    path.write_text(text)
    if match is None:
        assert load_config(path).objectives == ["accuracy", "bytes"]
        return
    with pytest.raises(KDSearchError, match=match):
        load_config(path)


def test_onnxruntime_latency_of_the_exported_graph_with_its_spread():
    spec = StudentSpec(channels=[8, 16], in_channels=3, num_classes=10, image_size=16)
    model = build(spec).eval()
    shape = (3, 16, 16)
    timing = student_latency(model, shape, "onnxruntime", batch=2, threads=1)
    assert timing.runtime == "onnxruntime" and timing.batch == 2 and timing.blocks == BLOCKS
    assert timing.median_ms > 0 and 0 <= timing.iqr_ms and timing.spread >= 0
    eager = student_latency(model, shape, "torch")
    assert eager.runtime == "torch" and eager.median_ms > 0


def test_timing_waits_until_training_workers_pause(tmp_path):
    """A worker times only while the study's other workers on this machine are between steps."""
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    steps, stop = [], threading.Event()

    def train():  # another worker: steps of work, each starting at a forward pass of the student
        with training_share(tmp_path, model):
            began = []  # a hook after the share's: when the step's computation starts
            model.register_forward_pre_hook(lambda module, args: began.append(time.perf_counter()))
            while not stop.is_set():
                model(torch.rand(32, 64)).sum().backward()
                time.sleep(0.005)  # the rest of the step (optimizer, data)
                steps.append((began[-1], time.perf_counter()))

    worker = threading.Thread(target=train)
    worker.start()
    try:
        time.sleep(0.1)
        with quiet_cpu(tmp_path, wait_s=10) as quiet:
            held = time.perf_counter()
            time.sleep(0.2)
            released = time.perf_counter()
        time.sleep(0.1)
    finally:
        stop.set()
        worker.join()
    assert quiet["quiet"]
    assert any(end < held for _, end in steps) and any(start > released for start, _ in steps)
    assert not any(start < released and end > held for start, end in steps), "a step ran while timing"


def test_a_timer_does_not_wait_forever_for_a_worker_that_never_pauses(tmp_path):
    with TrainingShare(tmp_path):  # holds its share and never reaches a checkpoint
        start = time.perf_counter()
        with quiet_cpu(tmp_path, wait_s=0.2) as quiet:
            pass
    assert not quiet["quiet"] and time.perf_counter() - start < 2


def test_int8_of_a_final_trained_student_is_checked_on_test_and_shown_by_results(tiny_run, tmp_path, monkeypatch):
    import shutil


    run = tmp_path / "run"  # a copy: the shared run's final trainings belong to other tests
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("final", "export", "artifacts"))
    info = json.loads((run / "run.json").read_text())
    info["storage"] = f"sqlite:///{run / 'study.db'}"
    (run / "run.json").write_text(json.dumps(info))
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    trained = runner.invoke(app, ["train", str(run), "--trial", "0", "--epochs", "2", "--seeds", "0", "--lr-grid", "1",
                                  "--no-baseline", "--no-all-views-baseline", "--device", "cpu"])
    assert trained.exit_code == 0, trained.output
    result = runner.invoke(app, ["export", str(run), "--trial", "0", "--int8"])
    assert result.exit_code == 0, result.output
    exported = json.loads((run / "export" / "00000" / "export.json").read_text())
    q = exported["int8"]
    assert exported["weights"] == "final" and {"float_test_accuracy", "int8_test_accuracy"} <= set(q)
    assert "test accuracy int8" in result.output
    monkeypatch.setattr("kdsearch.reporting.results.export_images", lambda figures, folder, fmt="png": ([], "no exporter"))
    out = tmp_path / "R.md"
    assert runner.invoke(app, ["results", str(run), "--out", str(out)]).exit_code == 0
    text = out.read_text()
    assert "### int8 students" in text and "through ONNX Runtime on the CPU, batch 1, 1 thread(s)" in text
    row = next(line for line in text.split("### int8 students")[1].splitlines() if line.startswith("| 0 |"))
    assert f"| {q['float_bytes']:,} | {q['int8_bytes']:,} | {100 * q['float_test_accuracy']:.2f}% | " in row
