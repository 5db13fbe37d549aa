"""Any teacher: timm models, factory functions, and the teacher's input normalization as a setting."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from kdsearch.config import NORMALIZE, TeacherConfig, load_config
from kdsearch.data.splits import DataSplits, Split
from kdsearch.errors import KDSearchError
from kdsearch.measure.costs import count_params
from kdsearch.models.teachers.build import build_teacher
from kdsearch.models.teachers.normalization import IMAGENET_MEAN, NORMALIZE_PRESETS
from kdsearch.training.teacher import prepare_teacher

from test_teachers import make_data, resnet20_checkpoint

FACTORY_MODULE = "kd_any_teacher_factories"  # written into tmp_path by the `factories` fixture

FACTORIES = '''
import torch
from torch import nn


def small(num_classes, in_channels):
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))


def declared(num_classes, in_channels):
    model = small(num_classes, in_channels)
    model.kdsearch_mean = (0.25,) * in_channels
    model.kdsearch_std = [0.5] * in_channels
    model.kdsearch_input_size = 12
    return model


def too_many(num_classes, in_channels):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes + 1))


def crashes(num_classes, in_channels):
    raise RuntimeError("no such\\nbackbone")


def not_a_module(num_classes, in_channels):
    return "a string"


NOT_CALLABLE = 3
'''


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


@pytest.fixture
def factories(tmp_path, monkeypatch):
    folder = tmp_path / "factory_src"
    folder.mkdir()
    (folder / f"{FACTORY_MODULE}.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, FACTORY_MODULE, raising=False)
    yield FACTORY_MODULE
    sys.modules.pop(FACTORY_MODULE, None)


@pytest.fixture
def fast_latency(monkeypatch):

    def fake(model, input_shape):
        return 0.01 + count_params(model) / 1e6
    monkeypatch.setattr("kdsearch.training.teacher.teacher_latency", lambda model, shape, *a: fake(model, shape))


@pytest.fixture
def no_latency(monkeypatch):
    monkeypatch.setattr("kdsearch.training.teacher.teacher_latency", lambda *args, **kwargs: 1.0)


# ------------------------------------------------------------------------------ the default stays what it was


def test_default_teacher_cache_keys_are_unchanged(tmp_path, no_latency):
    """Pinned keys observed before normalize/timm/factory existed: running studies keep their cached teachers."""
    data = make_data(n_train=16, n_val=4, n_test=4)
    cpu = torch.device("cpu")
    random_init = prepare_teacher(TeacherConfig(name="resnet20", pretrained=False, epochs=0), data,
                                           tmp_path / "a", cpu, seed=0)
    assert random_init.key == "fdc83d8e367d1546"
    assert random_init.normalization["what"] == "the data's statistics"
    assert torch.allclose(random_init.model.mean.flatten(), torch.full((3,), 0.5))
    assert not any("normaliz" in n for n in random_init.notes)  # the default stays silent
    resnet20_checkpoint(tmp_path / "r20.th", num_classes=2)
    from_file = prepare_teacher(TeacherConfig(name="resnet20", weights=str(tmp_path / "r20.th")), data,
                                         tmp_path / "b", cpu, seed=0)
    assert from_file.key == "21efd3eb529c18d1" and not from_file.notes
    assert torch.allclose(from_file.model.mean.flatten(), torch.tensor(IMAGENET_MEAN))
    # an explicit setting equal to what "auto" chose is still a new setting: a new key part
    explicit = prepare_teacher(TeacherConfig(name="resnet20", weights=str(tmp_path / "r20.th"),
                                                      normalize="imagenet"), data, tmp_path / "b", cpu, seed=0)
    assert explicit.key != from_file.key
    assert any("normalizing teacher input with imagenet statistics" in n for n in explicit.notes)
    meta = json.loads((tmp_path / "b" / "teachers" / f"{explicit.key}.json").read_text())
    assert meta["normalization"]["setting"] == "imagenet"


def test_presets_and_explicit_values():
    assert set(NORMALIZE) == {"auto", "data", "none", *NORMALIZE_PRESETS}
    kw = dict(num_classes=3, image_size=8, mean=(0.3,) * 3, std=(0.2,) * 3)
    expected = {"cifar10": (0.4914, 0.2470), "cifar100": (0.5071, 0.2673), "imagenet": (0.485, 0.229),
                "data": (0.3, 0.2), "none": (0.0, 1.0)}
    for setting, (m0, s0) in expected.items():
        model, info = build_teacher("resnet20", normalize=setting, **kw)
        assert model.mean.flatten()[0].item() == pytest.approx(m0) and model.std.flatten()[0].item() == pytest.approx(s0)
        assert info.notes, setting
    model, info = build_teacher("resnet20", normalize="cifar10", norm_mean=(0.1, 0.2, 0.3),
                                         norm_std=(0.4, 0.5, 0.6), **kw)  # explicit values win
    assert model.mean.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3]) and info.normalization == "the given mean/std"
    gray, _ = build_teacher("resnet20", num_classes=3, in_channels=1, image_size=8, normalize="none")
    assert gray.mean.flatten().tolist() == [0.0] and gray.std.flatten().tolist() == [1.0]


# ------------------------------------------------------------------------------ bad settings: one line each


@pytest.mark.parametrize("overrides, match", [
    ({"teacher.normalize": "imagenet1k"}, "teacher.normalize: 'imagenet1k' is not one of auto, imagenet"),
    ({"teacher.mean": [0.5, 0.5, 0.5], "teacher.std": [0.2, 0.0, 0.2]}, "teacher.std: every entry must be"),
    ({"teacher.mean": [0.5, float("nan"), 0.5], "teacher.std": [0.2, 0.2, 0.2]}, "teacher.mean: every entry"),
    ({"teacher.mean": [0.5, 0.5, 0.5]}, "give both"),
])
def test_bad_normalization_settings_are_refused_at_load(overrides, match):
    with pytest.raises(KDSearchError, match=match) as exc:
        load_config(None, overrides)
    one_line(exc)


def test_bad_normalization_when_building():
    with pytest.raises(KDSearchError, match="teacher.mean has 2 values; the teacher takes 3-channel") as exc:
        build_teacher("resnet20", num_classes=3, image_size=8, norm_mean=(0.5, 0.5), norm_std=(1.0, 1.0))
    one_line(exc)
    with pytest.raises(KDSearchError, match="std > 0"):
        build_teacher("resnet20", num_classes=3, image_size=8, norm_mean=(0.5,) * 3, norm_std=(1.0, 0.0, 1.0))
    with pytest.raises(KDSearchError, match="is for 3-channel input"):
        build_teacher("resnet20", num_classes=3, in_channels=1, image_size=8, normalize="cifar10")
    with pytest.raises(KDSearchError, match="not one of"):
        build_teacher("resnet20", num_classes=3, image_size=8, normalize="bogus")


def test_cli_refuses_a_bad_normalize_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from kdsearch.cli import app

    for flags, match in ((["--teacher-normalize", "imagenett"], "teacher.normalize"),
                         (["--teacher-mean", "0.5,0.5,0.5", "--teacher-std", "0.2,0,0.2"], "teacher.std")):
        result = CliRunner().invoke(app, ["run", "--dataset", "digits", *flags, "--run-dir", str(tmp_path / "run")])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and match in lines[0], result.output
        assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("attr, match", [
    ("too_many", r"returns \(2, 4\) for a batch of 2 images of 3x8x8; expected logits of shape \(2, 3\)"),
    ("crashes", "failed for num_classes=3, in_channels=3 .RuntimeError: no such backbone"),
    ("not_a_module", "returned a str, not a torch nn.Module"),
    ("NOT_CALLABLE", "is not callable"),
    ("missing", "has no attribute 'missing'"),
])
def test_bad_factories_are_one_clear_line(factories, attr, match):
    name = f"{factories}:{attr}"
    with pytest.raises(KDSearchError, match=match) as exc:
        build_teacher(name, num_classes=3, image_size=8)
    assert name in one_line(exc)


def test_an_unimportable_factory_is_one_clear_line(tmp_path, monkeypatch):
    with pytest.raises(KDSearchError, match=r"cannot import no_such_pkg\.models .ModuleNotFoundError") as exc:
        build_teacher("no_such_pkg.models:teacher", num_classes=3)
    one_line(exc)
    (tmp_path / "kd_broken_factory.py").write_text("import torch\nraise ValueError('broken\\nmodule')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(KDSearchError, match="cannot import kd_broken_factory .ValueError: broken module") as exc:
        build_teacher("kd_broken_factory:teacher", num_classes=3)
    one_line(exc)
    with pytest.raises(KDSearchError, match="expected package.module:function"):
        build_teacher("just_a_module:", num_classes=3)


def test_timm_missing_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError
    with pytest.raises(KDSearchError, match=r"timm, which is not installed: pip install 'kdsearch\[timm\]'") as exc:
        build_teacher("timm:resnet18", num_classes=3)
    one_line(exc)


# ------------------------------------------------------------------------------ factory teachers


def test_factory_declared_attributes_and_settings(factories, tmp_path):
    model, info = build_teacher(f"{factories}:declared", num_classes=3, image_size=8)
    assert model.input_size == 12 and info.source == "random"
    assert model.mean.flatten().tolist() == [0.25] * 3 and model.std.flatten().tolist() == [0.5] * 3
    model, info = build_teacher(f"{factories}:declared", num_classes=3, image_size=8, input_size=16,
                                         normalize="none")  # the settings win over the declared values
    assert model.input_size == 16 and model.mean.flatten().tolist() == [0.0] * 3
    model, info = build_teacher(f"{factories}:small", num_classes=3, image_size=8, mean=(0.3,) * 3,
                                         std=(0.2,) * 3)
    assert model.input_size == 8 and model.mean.flatten().tolist() == pytest.approx([0.3] * 3)  # auto: the data's
    # --teacher-weights loads strictly
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.body.state_dict().items()}}, tmp_path / "f.pt")
    loaded, info = build_teacher(f"{factories}:small", num_classes=3, image_size=8, weights=str(tmp_path / "f.pt"))
    assert info.source == "file" and torch.equal(loaded.body[-1].weight, model.body[-1].weight)
    with pytest.raises(KDSearchError, match="does not fit the .*:small architecture: shape mismatch") as exc:
        build_teacher(f"{factories}:small", num_classes=5, image_size=8, weights=str(tmp_path / "f.pt"))
    one_line(exc)


# ------------------------------------------------------------------------------ timm teachers


TIMM_MODEL = "test_resnet"  # timm's tiny test ResNet: builds in milliseconds on a CPU


def test_timm_teacher_random_file_and_offline(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    model, info = build_teacher(f"timm:{TIMM_MODEL}", num_classes=3, image_size=8, mean=(0.3,) * 3,
                                         std=(0.2,) * 3)
    assert info.source == "random" and model.input_size == 8 and not info.head_replaced
    assert model.mean.flatten().tolist() == pytest.approx([0.3] * 3)  # random init: the data's statistics

    body = timm.create_model(TIMM_MODEL, num_classes=5)
    torch.save({"model": {f"module.{k}": v for k, v in body.state_dict().items()}}, tmp_path / "t.pth")
    model, info = build_teacher(f"timm:{TIMM_MODEL}", num_classes=3, image_size=8,
                                         weights=str(tmp_path / "t.pth"))
    assert info.source == "file" and info.head_replaced and model.input_size == 8
    assert any("head replaced (5 -> 3 classes)" in n for n in info.notes)
    assert torch.equal(model.body.conv1[0].weight, body.conv1[0].weight)
    cfg = body.pretrained_cfg  # auto + trained weights: timm's pretrained_cfg statistics
    assert model.mean.flatten().tolist() == pytest.approx(list(cfg["mean"]))
    assert model.std.flatten().tolist() == pytest.approx(list(cfg["std"]))

    real = timm.create_model

    def offline(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real(name, pretrained=False, **kwargs)
    monkeypatch.setattr(timm, "create_model", offline)
    model, info = build_teacher(f"timm:{TIMM_MODEL}", num_classes=3, image_size=8, pretrained=True)
    assert info.source == "random" and any("could not load pretrained weights" in n for n in info.notes)

    def fake_pretrained(name, pretrained=False, **kwargs):
        return real(name, pretrained=False, **kwargs)  # "pretrained": timm's own classes and input size
    monkeypatch.setattr(timm, "create_model", fake_pretrained)
    model, info = build_teacher(f"timm:{TIMM_MODEL}", num_classes=3, in_channels=1, image_size=8,
                                         pretrained=True)
    assert info.source == "pretrained" and info.head_replaced and model.in_channels_repeat == 3
    assert model.input_size == cfg["input_size"][-1]
    with pytest.raises(KDSearchError, match="unknown timm model 'resnet9000'"):
        build_teacher("timm:resnet9000", num_classes=3)


# ------------------------------------------------------------------------------ end to end through the CLI


def run_cli(folder, tmp_path, monkeypatch, teacher: str, *flags: str):
    from typer.testing import CliRunner

    from kdsearch.cli import app

    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "run", "--dataset", "imagefolder", "--data-dir", str(folder), "--teacher", teacher, *flags,
        "--teacher-epochs", "1", "--epochs", "1", "--trials", "2", "--views", "2", "--device", "cpu",
        "--run-dir", str(run_dir), "--study-name", "x"])
    assert result.exit_code == 0, result.output
    metas = [json.loads(p.read_text()) for p in (run_dir / "teachers").glob("*.json")]
    assert len(metas) == 1 and metas[0]["name"] == teacher and metas[0]["epochs_trained"] == 1
    return result, metas[0]


def test_timm_teacher_end_to_end(folder, tmp_path, monkeypatch, fast_latency):
    pytest.importorskip("timm")
    result, meta = run_cli(folder, tmp_path, monkeypatch, f"timm:{TIMM_MODEL}", "--no-pretrained")
    assert f"teacher timm:{TIMM_MODEL}: val" in result.output
    assert meta["normalization"]["what"] == "the data's statistics" and meta["input_size"] == 8


def test_factory_teacher_end_to_end(folder, tmp_path, monkeypatch, fast_latency, factories):
    result, meta = run_cli(folder, tmp_path, monkeypatch, f"{factories}:small", "--teacher-normalize", "cifar10")
    assert f"teacher {factories}:small: val" in result.output
    assert "normalizing teacher input with cifar10 statistics" in " ".join(result.output.split())
    assert meta["normalization"]["setting"] == "cifar10"
    assert meta["normalization"]["mean"] == pytest.approx(list(NORMALIZE_PRESETS["cifar10"][0]))


# ------------------------------------------------------------------------------ the matching normalization matters


def colour_data(seed: int = 0) -> DataSplits:
    """3 classes of 8x8 RGB images whose dominant channel gives the class away."""
    g = torch.Generator().manual_seed(seed)

    def split(n_per_class: int) -> Split:
        y = torch.arange(3).repeat_interleave(n_per_class)
        x = torch.randint(0, 60, (len(y), 3, 8, 8), generator=g)
        x[torch.arange(len(y)), y] += 150
        return Split(x.to(torch.uint8), y)

    train = split(40)
    mean = tuple((train.x.float() / 255).mean(dim=(0, 2, 3)).tolist())
    std = tuple((train.x.float() / 255).std(dim=(0, 2, 3)).tolist())
    return DataSplits(name="colour", train=train, val=split(20), test=split(20), classes=["r", "g", "b"],
                      mean=mean, std=std, flip=True, pad=1)


def test_a_checkpoint_scores_only_under_its_own_normalization(tmp_path, no_latency):
    """Trained under extreme statistics, a teacher keeps its accuracy only when the setting matches them."""
    data, cpu = colour_data(), torch.device("cpu")
    # per-channel offsets unlike any preset's; 5 epochs settle the BN running statistics (checked on
    # seeds 0-7: the matching setting scores 1.0, every preset at most 0.68)
    trained_under = {"mean": [0.7, 0.1, 0.9], "std": [0.1, 0.1, 0.1]}
    trained = prepare_teacher(TeacherConfig(name="resnet20", pretrained=False, epochs=5, batch_size=16,
                                                     lr=0.05, **trained_under), data, tmp_path / "train", cpu, seed=0)
    assert trained.val_accuracy >= 0.9, trained.val_accuracy
    ckpt = tmp_path / "colour-resnet20.pt"
    torch.save({"state_dict": trained.model.body.state_dict()}, ckpt)

    def score(**normalization) -> float:
        cfg = TeacherConfig(name="resnet20", weights=str(ckpt), epochs=0, **normalization)
        return prepare_teacher(cfg, data, tmp_path / "score", cpu, seed=0).val_accuracy

    matching = score(**trained_under)
    assert matching == pytest.approx(trained.val_accuracy)
    for other in ({"normalize": "imagenet"}, {"normalize": "auto"}, {"normalize": "cifar10"}, {"normalize": "data"}):
        assert score(**other) <= matching - 0.2, other
