"""Teachers: registry, checkpoint loading (safe by default), adaptation, fine-tuning cache."""

from __future__ import annotations

import argparse
import json
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from kdsearch.config import TeacherConfig
from kdsearch.data.splits import DataSplits, Split
from kdsearch.errors import KDSearchError
from kdsearch.models.teachers.build import build_teacher, create_teacher
from kdsearch.models.teachers.cifar_resnet import CifarResNet
from kdsearch.models.teachers.normalization import IMAGENET_MEAN, IMAGENET_STD
from kdsearch.models.teachers.registry import teacher_names
from kdsearch.models.teachers.wrapper import TeacherNet
from kdsearch.training import distill
from kdsearch.training.teacher import prepare_teacher

SHARED_TEACHERS = Path(__file__).resolve().parents[2] / "shared" / "teachers"


def make_data(n_train: int = 40, n_val: int = 10, n_test: int = 10, size: int = 8, channels: int = 3,
              classes: int = 2, seed: int = 0) -> DataSplits:
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        return Split(torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g),
                     torch.randint(0, classes, (n,), generator=g))

    return DataSplits(name="tiny", train=split(n_train), val=split(n_val), test=split(n_test),
                      classes=[f"c{i}" for i in range(classes)], mean=(0.5,) * channels, std=(0.29,) * channels,
                      flip=True, pad=1)


@pytest.fixture
def offline(monkeypatch):
    """ImageNet downloads fail, as on a machine without internet (and the tests stay fast)."""
    def no_download(name):
        raise urllib.error.URLError("Name or service not known")
    monkeypatch.setattr("kdsearch.models.teachers.from_registry._imagenet_body", no_download)


@pytest.fixture
def fake_imagenet(monkeypatch):
    """'Pretrained' bodies: torchvision models with random weights and 1000 classes."""
    def body(name):
        return torchvision.models.get_model(name, weights=None)
    monkeypatch.setattr("kdsearch.models.teachers.from_registry._imagenet_body", body)


@pytest.fixture
def no_latency(monkeypatch):
    """Skip the (timed, so slow) latency measurement where a test is about something else."""
    monkeypatch.setattr("kdsearch.training.teacher.teacher_latency", lambda *args, **kwargs: 1.0)


# ------------------------------------------------------------------------------ registry


@pytest.mark.parametrize("name", teacher_names())
def test_every_registered_teacher_builds_and_runs(name, offline):
    if name in ("resnet101", "resnet110"):
        pytest.skip("same builder as resnet50 / resnet56, only bigger")
    model = create_teacher(name, num_classes=10, in_channels=3, image_size=32, pretrained=False).eval()
    assert isinstance(model, TeacherNet)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 32, 32))
    assert out.shape == (1, 10)
    assert model.input_size == (75 if name == "inception_v3" else 32)
    if name == "inception_v3":  # train mode returns a tensor too (no auxiliary head)
        model.train()
        assert isinstance(model(torch.rand(2, 3, 32, 32)), torch.Tensor)


def test_cifar_resnet_layout_matches_akamaster():
    body = CifarResNet(20)
    keys = list(body.state_dict())
    assert keys[0] == "conv1.weight" and keys[-1] == "linear.bias"
    assert "layer3.2.bn2.running_var" in keys and not any("shortcut" in k for k in keys)
    assert sum(p.numel() for p in body.parameters()) == 269_722  # "0.27M", the count akamaster prints for resnet20


def test_small_image_stem_from_scratch(offline):
    model, info = build_teacher("resnet18", num_classes=10, in_channels=3, image_size=32, pretrained=True)
    assert info.source == "random" and any("ImageNet weights" in n for n in info.notes)
    assert model.body.conv1.kernel_size == (3, 3) and isinstance(model.body.maxpool, nn.Identity)
    assert model.input_size == 32
    assert torch.allclose(model.mean.flatten(), torch.full((3,), 0.5))  # the data's stats, not ImageNet's


def test_unknown_name():
    with pytest.raises(KDSearchError, match="resnet20"):
        create_teacher("vgg16", 10)


def test_inception_input_size_too_small():
    with pytest.raises(KDSearchError, match="75"):
        build_teacher("inception_v3", num_classes=10, input_size=64)


# ------------------------------------------------------------------------------ grayscale


def test_grayscale_small_stem_resnet():
    model, info = build_teacher("resnet20", num_classes=10, in_channels=1, image_size=28,
                                         mean=(0.13,), std=(0.31,))
    assert model.in_channels_repeat == 1 and model.body.conv1.in_channels == 1
    assert model.eval()(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_grayscale_pretrained_stem_is_repeated(fake_imagenet):
    model, info = build_teacher("resnet18", num_classes=10, in_channels=1, image_size=28, pretrained=True)
    assert info.source == "imagenet" and info.head_replaced
    assert any("head replaced (1000 -> 10 classes)" in n for n in info.notes)
    assert model.in_channels_repeat == 3 and model.input_size == 224
    assert model.body.conv1.kernel_size == (7, 7)
    assert torch.allclose(model.mean.flatten(), torch.tensor(IMAGENET_MEAN))
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 1, 28, 28)).shape == (1, 10)


def test_pretrained_input_size_override(fake_imagenet):
    model, info = build_teacher("resnet18", num_classes=10, image_size=32, pretrained=True, input_size=64)
    assert model.input_size == 64 and info.input_size == 64


# ------------------------------------------------------------------------------ checkpoint files


def resnet20_checkpoint(path: Path, num_classes: int = 10, extra: dict | None = None) -> nn.Module:
    torch.manual_seed(1)
    body = CifarResNet(20, num_classes)
    for m in body.modules():  # non-trivial BN statistics, so a loading slip shows in the outputs
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    sd = {f"module.{k}": v for k, v in body.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": sd, "best_prec1": 90.0, **(extra or {})}, path)
    return body.eval()


def test_load_checkpoint_with_module_prefix(tmp_path):
    path = tmp_path / "r20.th"
    original = resnet20_checkpoint(path)
    model, info = build_teacher("resnet20", num_classes=10, image_size=32, weights=str(path))
    assert info.source == "file" and not info.head_replaced and info.fits_data and not info.notes
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        expected = original((x - mean) / std)
        assert torch.allclose(model.eval()(x), expected, atol=1e-5)


def test_load_safetensors(tmp_path):
    from safetensors.torch import save_file

    body = CifarResNet(20)
    save_file({k: v.contiguous() for k, v in body.state_dict().items()}, str(tmp_path / "r20.safetensors"))
    model, info = build_teacher("resnet20", num_classes=10, weights=str(tmp_path / "r20.safetensors"))
    assert torch.equal(model.body.linear.weight, body.linear.weight)


def test_corrupt_file(tmp_path):
    for i, content in enumerate([b"\x80\x02garbage", bytes(range(256)) * 4, b"", b"hello"]):
        path = tmp_path / f"bad{i}.pt"
        path.write_bytes(content)
        with pytest.raises(KDSearchError, match="corrupt|not a"):
            build_teacher("resnet20", num_classes=10, weights=str(path))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nope")
    with pytest.raises(KDSearchError, match="safetensors"):
        build_teacher("resnet20", num_classes=10, weights=str(bad))
    with pytest.raises(KDSearchError, match="not found"):
        build_teacher("resnet20", num_classes=10, weights=str(tmp_path / "missing.pt"))


def test_not_a_state_dict(tmp_path):
    torch.save({"epoch": 3, "acc": 0.9}, tmp_path / "meta.pt")
    with pytest.raises(KDSearchError, match="no state dict"):
        build_teacher("resnet20", num_classes=10, weights=str(tmp_path / "meta.pt"))


def test_wrong_architecture(tmp_path):
    resnet20_checkpoint(tmp_path / "r20.th")
    with pytest.raises(KDSearchError, match=r"resnet32.*missing layer1\.3"):
        build_teacher("resnet32", num_classes=10, weights=str(tmp_path / "r20.th"))
    with pytest.raises(KDSearchError, match="does not fit the resnet18"):
        build_teacher("resnet18", num_classes=10, weights=str(tmp_path / "r20.th"))


def test_other_class_count_replaces_head(tmp_path):
    original = resnet20_checkpoint(tmp_path / "r20c100.th", num_classes=100)
    model, info = build_teacher("resnet20", num_classes=10, weights=str(tmp_path / "r20c100.th"))
    assert info.head_replaced and not info.fits_data
    assert any("head replaced (100 -> 10 classes)" in n for n in info.notes)
    assert model.body.linear.out_features == 10
    assert torch.equal(model.body.conv1.weight, original.conv1.weight)


def test_unsafe_pickle_needs_trust(tmp_path):
    path = tmp_path / "with_args.th"
    original = resnet20_checkpoint(path, extra={"args": argparse.Namespace(lr=0.1)})
    with pytest.raises(KDSearchError, match="--trust-pickle"):
        build_teacher("resnet20", num_classes=10, weights=str(path))
    model, _ = build_teacher("resnet20", num_classes=10, weights=str(path), trust_pickle=True)
    assert torch.equal(model.body.linear.weight, original.linear.weight)


# ------------------------------------------------------------------------------ prepare_teacher


def test_prepare_teacher_trains_then_caches(tmp_path, monkeypatch):
    data = make_data()
    cfg = TeacherConfig(name="resnet20", pretrained=False, epochs=1, batch_size=16)
    first = prepare_teacher(cfg, data, tmp_path, torch.device("cpu"), seed=0)
    assert not first.from_cache and first.epochs_trained == 1
    assert 0.0 <= first.val_accuracy <= 1.0 and 0.0 <= first.test_accuracy <= 1.0
    assert first.params > 0 and first.macs > 0 and first.latency_ms > 0
    assert not first.model.training and not any(p.requires_grad for p in first.model.parameters())
    files = sorted(p.name for p in (tmp_path / "teachers").iterdir())
    assert files == [f"{first.key}.json", f"{first.key}.safetensors"]  # no temporary files left
    meta = json.loads((tmp_path / "teachers" / f"{first.key}.json").read_text())
    assert meta["val_accuracy"] == first.val_accuracy and meta["name"] == "resnet20"
    d = first.to_dict()
    assert "model" not in d and d["key"] == first.key
    json.dumps(d)

    def no_training(*args, **kwargs):
        raise AssertionError("trained although the teacher was cached")
    monkeypatch.setattr(distill, "train_epoch", no_training)
    second = prepare_teacher(cfg, data, tmp_path, torch.device("cpu"), seed=0)
    assert second.from_cache and second.key == first.key
    assert second.val_accuracy == first.val_accuracy and second.test_accuracy == first.test_accuracy
    x = torch.rand(3, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(first.model(x), second.model(x), rtol=1e-4, atol=1e-4)  # conv algorithms may differ


def test_the_teacher_is_timed_as_its_study_times_students(tmp_path, monkeypatch):
    """Same runtime, batch and threads as the students (so "of teacher" ratios compare like with like);
    a cached teacher is timed again only when those differ; an ONNX failure falls back to eager, noted."""
    from kdsearch.measure import latency as lat
    data = make_data(n_train=16, n_val=4, n_test=4)
    cfg = TeacherConfig(name="resnet20", pretrained=False, epochs=0)
    calls = []
    real = lat.student_latency

    def recording(model, shape, runtime="onnxruntime", batch=1, threads=1, graph=None, device=None):
        calls.append((runtime, batch, threads))
        return real(model, shape, runtime, batch, threads, graph, device)
    monkeypatch.setattr("kdsearch.training.teacher.student_latency", recording)
    first = prepare_teacher(cfg, data, tmp_path, torch.device("cpu"), seed=0, latency_runtime="onnxruntime",
                            latency_batch=2)
    assert calls == [("onnxruntime", 2, 1)] and first.latency_ms > 0
    meta = json.loads((tmp_path / "teachers" / f"{first.key}.json").read_text())
    assert (meta["latency_runtime"], meta["latency_batch"], meta["latency_threads"]) == ("onnxruntime", 2, 1)
    again = prepare_teacher(cfg, data, tmp_path, torch.device("cpu"), seed=0, latency_runtime="onnxruntime",
                            latency_batch=2)
    assert again.from_cache and again.latency_ms == first.latency_ms and len(calls) == 1  # not timed again
    eager = prepare_teacher(cfg, data, tmp_path, torch.device("cpu"), seed=0, latency_runtime="torch")
    assert eager.from_cache and calls[-1] == ("torch", 1, 1)
    assert json.loads((tmp_path / "teachers" / f"{first.key}.json").read_text())["latency_device"] == "cpu"

    def no_onnx(model, shape, runtime="onnxruntime", *args, **kwargs):
        if runtime == "onnxruntime":
            raise RuntimeError("exporter says no")
        return real(model, shape, runtime, *args, **kwargs)
    monkeypatch.setattr("kdsearch.training.teacher.student_latency", no_onnx)
    fallback = prepare_teacher(cfg, data, tmp_path / "other", torch.device("cpu"), seed=0)
    assert fallback.latency_ms > 0
    assert any("eager PyTorch" in n and "exporter says no" in n for n in fallback.notes)


@pytest.mark.parametrize("damage", ["metadata", "weights", "foreign"])
def test_a_damaged_teacher_cache_is_prepared_again_with_a_note(tmp_path, no_latency, damage):
    data = make_data(n_train=16, n_val=4, n_test=4)
    cfg = TeacherConfig(name="resnet20", pretrained=False, epochs=1, batch_size=8)
    first = prepare_teacher(cfg, data, tmp_path, torch.device("cpu"), seed=0)
    meta, weights = (tmp_path / "teachers" / f"{first.key}{ext}" for ext in (".json", ".safetensors"))
    if damage == "metadata":
        meta.write_text("{}")
    elif damage == "weights":
        weights.write_bytes(weights.read_bytes()[:64])
    else:  # readable weights of another model: nothing of them may leak into the teacher
        from safetensors.torch import save_file
        save_file({"w": torch.zeros(3)}, str(weights))
    again = prepare_teacher(cfg, data, tmp_path, torch.device("cpu"), seed=0)
    assert not again.from_cache and again.key == first.key and any("unusable" in n for n in again.notes)
    x = torch.rand(3, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(first.model(x), again.model(x), rtol=1e-4, atol=1e-4)  # same start, same training
    third = prepare_teacher(cfg, data, tmp_path, torch.device("cpu"), seed=0)
    assert third.from_cache and not any("unusable" in n for n in third.notes)


def test_a_truncated_checkpoint_is_one_clear_error(tmp_path):
    path = tmp_path / "r20.th"
    resnet20_checkpoint(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(KDSearchError, match="corrupt|not a"):
        build_teacher("resnet20", num_classes=10, weights=str(path))


def test_prepare_teacher_key_changes_with_settings(tmp_path, no_latency):
    data = make_data(n_train=16, n_val=4, n_test=4)
    cfg = TeacherConfig(name="resnet20", pretrained=False, epochs=0)
    a = prepare_teacher(cfg, data, tmp_path, torch.device("cpu"), seed=0)
    b = prepare_teacher(cfg, data, tmp_path, torch.device("cpu"), seed=1)
    assert a.key != b.key
    assert a.epochs_trained == 0 and any("untrained on this data" in n for n in a.notes)


def test_prepare_teacher_auto_epochs_for_fitting_checkpoint(tmp_path, no_latency):
    resnet20_checkpoint(tmp_path / "r20.th", num_classes=2)
    data = make_data(n_train=16, n_val=4, n_test=4)
    cfg = TeacherConfig(name="resnet20", weights=str(tmp_path / "r20.th"))  # epochs=None: auto
    result = prepare_teacher(cfg, data, tmp_path / "run", torch.device("cpu"), seed=0)
    assert result.epochs_trained == 0 and not result.notes


# ------------------------------------------------------------------------------ the real checkpoints


@pytest.mark.shared
@pytest.mark.parametrize("depth", [20, 32])
def test_shared_akamaster_checkpoints(depth):
    path = SHARED_TEACHERS / f"cifar10-resnet{depth}-akamaster.th"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    model, info = build_teacher(f"resnet{depth}", num_classes=10, image_size=32, weights=str(path))
    assert info.fits_data and not info.notes  # weights_only=True loads them: no --trust-pickle needed
    with torch.no_grad():
        out = model.eval()(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
