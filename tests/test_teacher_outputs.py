"""Teacher outputs that cannot teach: logits fp16 cannot hold, non-finite logits, a teacher at chance."""

from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from kdsearch.cli import app
from kdsearch.errors import KDSearchError
from kdsearch.runs.layout import logits_path
from kdsearch.search.objective import teacher_logits_finite
from kdsearch.training.logit_cache import build_or_load
from kdsearch.training.teacher import chance_note


class Scaled(nn.Module):
    """A 'teacher' whose logits are its input's channel means times `scale` (huge, or nan)."""

    def __init__(self, scale: float, classes: int = 3):
        super().__init__()
        self.scale, self.proj = scale, nn.Linear(3, classes)

    def forward(self, x):
        return self.proj(x.mean(dim=(2, 3))) * self.scale


def images(n=6):
    return torch.randint(0, 255, (n, 3, 8, 8), dtype=torch.uint8)


def test_logits_beyond_fp16_are_stored_in_float32_and_finite(tmp_path):
    torch.manual_seed(0)
    x = images()
    huge = build_or_load(Scaled(1e6), x, pad=1, flip=True, k=2, seed=0, key="huge", run_dir=tmp_path)
    assert huge.logits.dtype == torch.float32 and bool(torch.isfinite(huge.logits).all())
    assert float(huge.logits.abs().max()) > 65504  # fp16 would have made these inf
    again = build_or_load(Scaled(1e6), x, pad=1, flip=True, k=2, seed=0, key="huge", run_dir=tmp_path)
    assert not again.built and again.logits.dtype == torch.float32 and torch.equal(again.logits, huge.logits)
    usual = build_or_load(Scaled(1.0), x, pad=1, flip=True, k=2, seed=0, key="usual", run_dir=tmp_path)
    assert usual.logits.dtype == torch.float16  # the usual case keeps half the memory


def test_a_stored_cache_of_inf_is_rebuilt(tmp_path):
    x = images()
    path = logits_path(tmp_path, "old")
    path.parent.mkdir(parents=True)
    save_file({"views": torch.zeros(6, 2, dtype=torch.int32), "logits": torch.full((6, 2, 3), float("inf")).half()},
              str(path))  # what fp16 made of huge logits before
    cache = build_or_load(Scaled(1e6), x, pad=1, flip=True, k=2, seed=0, key="old", run_dir=tmp_path)
    assert cache.built and "rebuilt" in cache.note and bool(torch.isfinite(cache.logits).all())


def test_non_finite_teacher_logits_stop_at_the_cache_naming_the_teacher(tmp_path):
    with pytest.raises(KDSearchError, match=r"teacher inception_v3 gives non-finite logits \(nan or inf\) on 12 of 12"):
        build_or_load(Scaled(float("nan")), images(), pad=1, flip=True, k=2, seed=0, key="nan", run_dir=tmp_path,
                      teacher_name="inception_v3")
    assert not logits_path(tmp_path, "nan").exists()


def test_a_non_finite_loss_names_the_teacher_when_its_logits_are_the_cause():
    def ctx(model, cache=None):
        return SimpleNamespace(teacher_finite=None, cache=cache, teacher=SimpleNamespace(model=model),
                               x_train=images())

    assert not teacher_logits_finite(ctx(Scaled(float("inf"))))  # online teacher
    assert teacher_logits_finite(ctx(Scaled(1.0)))
    cached = SimpleNamespace(logits=torch.tensor([[[1.0, float("nan")]]]))
    assert not teacher_logits_finite(ctx(None, cached))


def test_chance_is_judged_against_the_most_common_class_on_enough_images():
    y = torch.arange(10).repeat(15)[:144]
    assert "is at chance on this data after 3 epoch(s) of training: val 10.42%" in chance_note(0.1042, y, 3)
    assert "untrained" in chance_note(0.11, y, 0)
    assert chance_note(0.30, y, 3) is None  # clearly better
    assert chance_note(0.10, y[:20], 3) is None  # 20 images cannot tell


def test_a_teacher_at_chance_after_training_stops_the_study_unless_asked(tmp_path, monkeypatch):
    """As `--teacher inception_v3 --teacher-epochs 3` on digits, ending at 10.42%: here training is skipped."""
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("kdsearch.training.teacher._train", lambda *a, **k: None)  # 'trained', still random: at chance
    cmd = ["run", "--dataset", "digits", "--teacher", "resnet20", "--no-pretrained", "--teacher-epochs", "1",
           "--trials", "1", "--epochs", "1", "--views", "2", "--subset", "200", "--device", "cpu",
           "--run-dir", str(tmp_path / "run")]
    stopped = CliRunner().invoke(app, cmd)
    assert stopped.exit_code == 2, stopped.output
    last = stopped.output.strip().splitlines()[-1]
    assert last.startswith("error: teacher resnet20 is at chance on this data after 1 epoch(s) of training"), last
    assert "--allow-chance-teacher" in last and not (tmp_path / "run" / "logits").exists()
    going = CliRunner().invoke(app, cmd + ["--allow-chance-teacher"])
    assert going.exit_code == 0, going.output
    assert "is at chance" in going.output  # the warning stays
