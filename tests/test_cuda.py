"""The GPU path: same views and logits as on the CPU, bf16 training, a whole run on CUDA.

Skipped where there is no CUDA device; run on a lent GPU with scripts/gpu/gpu.sh.
"""

import json

import optuna
import pytest
import torch
from typer.testing import CliRunner

from kdsearch.cli import app
from kdsearch.data.augment import apply_views, num_views, random_views, to_float
from kdsearch.measure.latency import student_latency
from kdsearch.models.students.registry import build
from kdsearch.models.students.spec import StudentSpec
from kdsearch.training.distill import accuracy, make_optimizer, train_epoch
from kdsearch.training.logit_cache import build_or_load

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
CUDA = torch.device("cuda")


def images(n=64, size=8):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def test_a_view_id_gives_the_same_tensor_on_cpu_and_gpu():
    x = images()
    views = torch.arange(len(x)) % num_views(2, True)
    cpu = apply_views(x, views, 2, True)  # the view itself: the same pixels, exactly
    gpu = apply_views(x.to(CUDA), views.to(CUDA), 2, True)
    assert torch.equal(cpu, gpu.cpu())
    # uint8 -> float: CUDA divides by a scalar as a multiply by its reciprocal (within one ulp of the
    # CPU's true division; seen on an H200, torch 2.11)
    torch.testing.assert_close(to_float(cpu), to_float(gpu).cpu(), rtol=1.2e-7, atol=0.0)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(random_views(10, 2, True, g1), random_views(10, 2, True, g2))  # drawn on the CPU


def test_cache_on_the_gpu_matches_a_fresh_forward(tmp_path):
    x = images().to(CUDA)
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Flatten(),
                                  torch.nn.Linear(4 * 64, 5)).to(CUDA).eval()
    cache = build_or_load(teacher, x, pad=1, flip=True, k=3, seed=0, key="k", run_dir=tmp_path)
    assert cache.logits.device.type == "cuda" and cache.views.device.type == "cuda"
    idx = torch.tensor([0, 5, 63])
    views, logits = cache.draw(idx, torch.Generator().manual_seed(1))
    with torch.no_grad():
        fresh = teacher(apply_views(to_float(x[idx.to(CUDA)]), views, 1, True))
    torch.testing.assert_close(logits.float(), fresh, atol=5e-2, rtol=5e-2)  # bf16 autocast + fp16 storage


def test_bf16_training_on_the_gpu_learns():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (256,), generator=g)
    x = torch.randint(0, 60, (256, 3, 8, 8), dtype=torch.uint8, generator=g)
    x[torch.arange(256), y] += 150  # the brightest channel is the class
    x, y = x.to(CUDA), y.to(CUDA)
    model = build(StudentSpec(in_channels=3, num_classes=3, image_size=8, channels=[8], fc=[])).to(
        CUDA, memory_format=torch.channels_last)
    opt, sched = make_optimizer(model, "adamw", 1e-2, 0.0, 5 * 8)
    for _ in range(5):
        loss = train_epoch(model, x, y, opt, sched, batch_size=32, pad=1, flip=True,
                           generator=torch.Generator().manual_seed(0))
    assert loss == loss and accuracy(model, x, y) > 0.9


def test_a_whole_run_on_cuda(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, [
        "run", "--dataset", "imagefolder", "--data-dir", str(folder), "--teacher", "resnet20", "--no-pretrained",
        "--teacher-epochs", "1", "--epochs", "2", "--trials", "2", "--device", "cuda",
        "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "cuda" in result.output


def test_torch_latency_is_timed_on_the_gpu_the_study_trains_on(folder, tmp_path, monkeypatch):
    model = build(StudentSpec(in_channels=3, num_classes=3, image_size=8, channels=[8], fc=[]))
    timing = student_latency(model, (3, 8, 8), "torch", batch=4, device=CUDA)
    assert timing.device == "cuda" and timing.median_ms > 0 and timing.runtime == "torch"
    assert next(model.parameters()).device.type == "cpu"  # timed on a copy
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, [
        "run", "--dataset", "imagefolder", "--data-dir", str(folder), "--teacher", "resnet20", "--no-pretrained",
        "--teacher-epochs", "1", "--epochs", "1", "--trials", "2", "--device", "cuda", "--latency-runtime", "torch",
        "--run-dir", str(tmp_path / "run"), "--in-process"])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    assert all(t.user_attrs["latency_device"] == "cuda" for t in study.trials if "latency_ms" in t.user_attrs)
    meta = [json.loads(p.read_text()) for p in (tmp_path / "run" / "teachers").glob("*.json")]
    assert [m["latency_device"] for m in meta] == ["cuda"]  # the teacher too, as its students
