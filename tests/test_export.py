"""Export: spec + weights + ONNX that ONNX Runtime runs like PyTorch; bad requests get one line."""

import json
import os
import stat

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from kdsearch.cli import app
from kdsearch.errors import KDSearchError
from kdsearch.export.folder import export_trial, verify_onnx
from kdsearch.export.onnx_file import TOLERANCE, write_onnx
from kdsearch.models.students.io import load_student
from kdsearch.runs.layout import trial_dir
from kdsearch.runs.run import open_run


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_export_writes_a_verified_onnx_that_runs_like_pytorch(tiny_run, tmp_path, umask_022):
    out = tmp_path / "exp"
    result = CliRunner().invoke(app, ["export", str(tiny_run), "--trial", "0", "--out", str(out), "--weights", "search"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["MODEL_CARD.md", "export.json", "spec.json", "student.onnx",
                                                    "student.safetensors"]
    # the modes an ordinary open() and mkdir give under the umask, not tempfile's private 0600 and 0700
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in out.iterdir()} == {
        p.name: "0o644" for p in out.iterdir()}
    info = json.loads((out / "export.json").read_text())
    trial = open_run(tiny_run).study.trials[0]
    assert info["trial"] == 0 and info["weights"] == "search" and info["params"] == trial.user_attrs["params"]
    assert info["val_accuracy"] == trial.user_attrs["curve"][-1] and info["classes"] == ["blue", "green", "red"]
    assert info["onnx"]["max_abs_diff_vs_torch"] <= TOLERANCE
    model, spec = load_student(out)
    x = torch.rand(5, spec.in_channels, spec.image_size, spec.image_size)  # another batch size than at export
    got = ort.InferenceSession(str(out / "student.onnx")).run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4)
    searched, _ = load_student(trial_dir(tiny_run, 0))
    assert all(torch.equal(a, b) for a, b in zip(searched.state_dict().values(), model.state_dict().values()))


def test_verification_catches_an_onnx_file_of_other_weights(tiny_run, tmp_path):
    model, spec = load_student(trial_dir(tiny_run, 0))
    write_onnx(model, spec, tmp_path / "m.onnx")
    assert verify_onnx(model, spec, tmp_path / "m.onnx") <= TOLERANCE
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    with pytest.raises(KDSearchError, match="ONNX check failed"):
        verify_onnx(model, spec, tmp_path / "m.onnx")


def test_a_failed_export_keeps_the_previous_one(tiny_run, tmp_path, monkeypatch):
    out = tmp_path / "exp"
    run = open_run(tiny_run)
    export_trial(run, 1, out, weights="search")
    before = (out / "student.onnx").read_bytes()

    def broken(*args, **kwargs):
        raise KDSearchError("ONNX check failed: simulated")

    monkeypatch.setattr("kdsearch.export.folder.verify_onnx", broken)
    with pytest.raises(KDSearchError, match="simulated"):
        export_trial(run, 0, out, weights="search")
    assert (out / "student.onnx").read_bytes() == before and json.loads((out / "export.json").read_text())["trial"] == 1
    assert not (tmp_path / "exp.tmp").exists()


def test_corrupt_weights_are_one_clear_error(tiny_run, tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "spec.json").write_text((trial_dir(tiny_run, 0) / "spec.json").read_text())
    (folder / "student.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(KDSearchError, match="cannot load the student"):
        load_student(folder)
    with pytest.raises(KDSearchError, match="holds no student"):
        load_student(tmp_path)


def test_export_of_a_trial_whose_weights_are_not_there_says_why_and_what_to_do(tiny_run, tmp_path):
    """Issue 36: on a committed run (no search or final weights) export said `... holds no student (spec.json and
    student.safetensors)`, which reads as a broken install."""
    import shutil

    run = tmp_path / "committed"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("trials", "export", "final"))
    result = CliRunner().invoke(app, ["export", str(run), "--trial", "1"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "trial 1's weights are not in this run folder (its search student" in result.output
    assert "make the run yourself" in result.output
    assert "holds no student" not in result.output and not (run / "export").exists()


@pytest.mark.parametrize("argv,match", [
    (["--trial", "99"], "no trial 99"),
    (["--trial", "0", "--weights", "final"], "no final training yet"),
    (["--trial", "0", "--weights", "best"], "not one of auto, search, final"),
])
def test_bad_export_requests_exit_2_with_one_line(tiny_run, tmp_path, argv, match):
    result = CliRunner().invoke(app, ["export", str(tiny_run), "--out", str(tmp_path / "x"), *argv])
    assert result.exit_code == 2 and match in result.output and result.output.count("\n") == 1, result.output


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_atomic_files_and_temporary_folders_get_the_umasks_mode(tmp_path, mask):
    from kdsearch.runs.files import atomic_path, temp_folder, write_text_atomic

    old = os.umask(mask)
    try:
        write_text_atomic(tmp_path / "run.json", "{}")
        with atomic_path(tmp_path / "w.safetensors") as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp))  # safetensors writes the file anew, 0600
        folder = temp_folder(tmp_path, prefix=".x.")
        with open(tmp_path / "ordinary", "w"):
            pass
        (tmp_path / "ordinary-folder").mkdir()
    finally:
        os.umask(old)
    ordinary = stat.S_IMODE((tmp_path / "ordinary").stat().st_mode)
    assert ordinary == 0o666 & ~mask
    for name in ("run.json", "w.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == ordinary, name
    assert stat.S_IMODE(folder.stat().st_mode) == stat.S_IMODE((tmp_path / "ordinary-folder").stat().st_mode)


def test_an_export_folder_that_cannot_be_made_or_written_is_one_line_and_leaves_nothing(tiny_run, tmp_path,
                                                                                         monkeypatch):
    """Issue 36 (held-out faults): `export RUN --knee --out DIR` where DIR cannot be made ended in a traceback
    from the temporary folder; a full disk while writing too. One line, exit 2, no half-written folder."""
    (tmp_path / "a-file").write_text("x")
    through_a_file = CliRunner().invoke(app, ["export", str(tiny_run), "--knee", "--weights", "search",
                                              "--out", str(tmp_path / "a-file" / "exp")])
    assert through_a_file.exit_code == 2 and through_a_file.output.count("\n") == 2, through_a_file.output  # + pick
    assert "cannot make the export folder" in through_a_file.output

    def vanished(*a, **k):
        raise FileNotFoundError(2, "No such file or directory")

    with monkeypatch.context() as m:
        m.setattr("kdsearch.export.folder.temp_folder", vanished)
        gone = CliRunner().invoke(app, ["export", str(tiny_run), "--knee", "--weights", "search",
                                        "--out", str(tmp_path / "gone")])
    assert gone.exit_code == 2 and "cannot make the export folder" in gone.output and "Traceback" not in gone.output

    out = tmp_path / "exp"
    export_trial(open_run(tiny_run), 1, out, weights="search")
    before = (out / "export.json").read_text()

    def full_disk(model, spec, path, opset=18):
        path.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("kdsearch.export.folder.write_onnx", full_disk)
    full = CliRunner().invoke(app, ["export", str(tiny_run), "--knee", "--weights", "search", "--out", str(out)])
    assert full.exit_code == 2 and "No space left on device while writing" in full.output, full.output
    assert full.output.count("\n") == 2 and (out / "export.json").read_text() == before  # the earlier export stays
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "exp"]  # no temporary folder left
