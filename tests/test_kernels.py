"""torch 2.14.1's CPU crash in the backward pass of 1x1, stride-2 convolutions on channels_last input
with odd batch sizes: kdsearch steps around it (kdsearch.models.kernels), and the reported example finishes."""

import copy
import json
import os
import subprocess
import sys

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState
from typer.testing import CliRunner

from kdsearch.cli import app
from kdsearch.models.kernels import SubsampledPointwise, avoid_crashing_kernels
from kdsearch.models.students.registry import build
from kdsearch.models.students.spec import StudentSpec
from kdsearch.runs.storage import make_storage

# (in channels, out channels, image size, batch): the shapes of the report
REPORTED = [(11, 10, 16, 55), (11, 10, 16, 127), (12, 10, 16, 55), (11, 10, 32, 55)]


def test_subsampled_pointwise_is_the_same_convolution():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(11, 10, 1, 2, bias=True)
    same = avoid_crashing_kernels(copy.deepcopy(conv))
    assert type(same) is SubsampledPointwise and same.state_dict().keys() == conv.state_dict().keys()
    for fmt in (torch.channels_last, torch.contiguous_format):
        x = torch.rand(55, 11, 15, 16).contiguous(memory_format=fmt)
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = conv(a), same(b)
        assert ya.shape == yb.shape and torch.allclose(ya, yb, atol=1e-6)
        (ya * ya).sum().backward()
        (yb * yb).sum().backward()
        assert torch.allclose(a.grad, b.grad, atol=1e-5)
        assert torch.allclose(conv.weight.grad, same.weight.grad, atol=1e-4)
        conv.zero_grad()
        same.zero_grad()
    with torch.no_grad():  # inference runs the convolution as it is
        assert torch.equal(conv(x), same(x))


def test_only_strided_unpadded_pointwise_convolutions_change():
    residual = build(StudentSpec(3, 10, 16, [11, 10], 1, 5, family="residual"))
    swapped = [m for m in residual.modules() if isinstance(m, SubsampledPointwise)]
    assert len(swapped) == 1 and swapped[0].in_channels == 11 and swapped[0].out_channels == 10  # the shortcut
    plain = build(StudentSpec(3, 10, 16, [8, 16], 1, 3))
    assert not [m for m in plain.modules() if isinstance(m, SubsampledPointwise)]
    keep = [torch.nn.Conv2d(4, 4, 1, 1), torch.nn.Conv2d(4, 4, 3, 2, 1), torch.nn.Conv2d(4, 4, 1, 2, padding=1)]
    assert all(type(avoid_crashing_kernels(m)) is torch.nn.Conv2d for m in keep)


TRAIN_SHAPES = """
import sys, torch
from kdsearch.models.students.registry import build
from kdsearch.models.students.spec import StudentSpec
for shape in sys.argv[1:]:
    c_in, c_out, size, batch = map(int, shape.split(","))
    model = build(StudentSpec(c_in, 10, size, [c_in, c_out], 1, 5, family="residual")).to(memory_format=torch.channels_last)
    model[1] = torch.nn.Identity()  # the stem keeps c_in channels: the first stride-2 shortcut is c_in -> c_out on size x size
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(2):
        x = torch.rand(batch, c_in, size, size).contiguous(memory_format=torch.channels_last)
        loss = torch.nn.functional.cross_entropy(model(x), torch.randint(0, 10, (batch,)))
        opt.zero_grad(); loss.backward(); opt.step()
    print("trained", shape, flush=True)
"""


def test_residual_students_train_the_reported_shapes():
    """In a subprocess: where the crash happens it kills that process, not the test run. One process for all
    the shapes (each start imports torch): the first shape without its line is where it crashed."""
    shapes = [",".join(map(str, shape)) for shape in REPORTED]
    out = subprocess.run([sys.executable, "-c", TRAIN_SHAPES, *shapes], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "2"})
    trained = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("trained")]
    assert out.returncode == 0 and trained == shapes, (f"crashed at {shapes[len(trained)]}" if len(trained) < len(shapes)
                                                       else "", out.returncode, out.stderr[-2000:])


VERBOSE = """
import torch
from kdsearch.models.students.registry import build
from kdsearch.models.students.spec import StudentSpec
model = build(StudentSpec(1, 2, 16, [11, 10], 1, 5, family="residual")).to(memory_format=torch.channels_last)
model(torch.rand(55, 1, 16, 16).contiguous(memory_format=torch.channels_last)).sum().backward()
"""


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this torch build")
def test_no_strided_pointwise_backward_runs_on_the_cpu():
    out = subprocess.run([sys.executable, "-c", VERBOSE], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "ONEDNN_VERBOSE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    backward = [line for line in out.stdout.splitlines() if "backward_data" in line]
    assert backward, "oneDNN ran no convolution backward: the check would be vacuous"
    assert not [line for line in backward if "kh1sh2" in line], backward


def image_folder(root, size=16, per_class=(31, 30), test=(5, 5)):
    """The reported folder: 16x16 PNGs, two classes, 61 training images, the first one grayscale."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, counts in (("train", per_class), ("test", test)):
        for c, name in enumerate(["a", "b"]):
            (root / split / name).mkdir(parents=True)
            for i in range(counts[c]):
                img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
                img[..., c] += 150
                pil = Image.fromarray(img)
                (pil.convert("L") if split == "train" and c == 0 and i == 0 else pil).save(root / split / name / f"{i}.png")
    return root


@pytest.mark.slow
def test_the_reported_16px_folder_finishes_its_trials(tmp_path, monkeypatch):
    """`kdsearch run --dataset imagefolder --data-dir FOLDER --teacher resnet20 --teacher-epochs 1 --trials 3
    --epochs 1 --views 2 --seed 0`: 55 training images, one batch of 55 (default batch size 128), residual students."""
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    folder = image_folder(tmp_path / "pngs")
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--dataset", "imagefolder", "--data-dir", str(folder), "--teacher",
                                      "resnet20", "--teacher-epochs", "1", "--trials", "3", "--epochs", "1",
                                      "--views", "2", "--seed", "0", "--device", "cpu", "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "55 train" in result.output
    info = json.loads((run_dir / "run.json").read_text())
    study = optuna.load_study(study_name=info["study_name"], storage=make_storage(info["storage"]))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert any(t.user_attrs["arch"].startswith("res[") for t in study.trials)
