"""Epoch checkpoints: a training stopped part-way continues from its last saved epoch, bit for bit."""

import pytest
import torch

from kdsearch.models.students.registry import build
from kdsearch.models.students.spec import StudentSpec
from kdsearch.training.checkpoint import Resume
from kdsearch.training.distill import Recipe, fit


def _toy(n=64):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (n,), generator=g)
    x = (y[:, None, None, None] * 120 + torch.randint(0, 120, (n, 3, 8, 8), generator=g)).to(torch.uint8)
    return x, y


# dropout (torch's global random state), a weight average, momentum and a per-step schedule: every kind of
# state the rest of a training depends on
SPEC = StudentSpec(in_channels=3, num_classes=2, image_size=8, channels=[8, 8], family="residual", fc=[16],
                   dropout=0.3)


class Stop(Exception):
    pass


def _fit(recipe, resume=None, stop_after=None, checks=False):
    x, y = _toy()
    torch.manual_seed(0)
    model = build(SPEC)
    seen = []

    def on_epoch(epoch, loss, curve):
        if epoch == stop_after:
            raise Stop  # as a killed process: whatever was saved before this epoch's end is what survives

    curve = fit(model, x, y, recipe, pad=1, flip=True, seed=3, x_val=x, y_val=y, on_epoch=on_epoch, resume=resume,
                on_check=(lambda i, c: seen.append(list(c))) if checks else None, checks_per_epoch=2 if checks else 1)
    return model, curve, seen


@pytest.mark.parametrize("schedule,ema", [("linear", 0.9), ("onecycle", 0.0)])
def test_a_stopped_training_continues_from_its_last_epoch_as_if_never_stopped(tmp_path, schedule, ema):
    recipe = Recipe(epochs=4, lr=0.05, batch_size=16, optimizer="sgd" if ema else "adamw", schedule=schedule,
                    ema=ema, label_smoothing=0.1)
    whole, whole_curve, whole_checks = _fit(recipe, checks=True)
    resume = Resume(tmp_path / "m.partial.pt", {"student": "toy"}, every_s=0)
    with pytest.raises(Stop):
        _fit(recipe, resume, stop_after=3, checks=True)  # epochs 1 and 2 saved; killed during epoch 3's end
    assert resume.path.is_file()
    again = Resume(resume.path, {"student": "toy"}, every_s=0)
    model, curve, checks = _fit(recipe, again, checks=True)
    assert again.resumed_at == 2
    assert curve == whole_curve
    assert checks[-1] == whole_checks[-1]  # the checks of the saved epochs come back too
    for k, v in whole.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert not resume.path.with_name(resume.path.name + ".tmp").exists()


def test_a_checkpoint_of_another_training_or_a_damaged_one_starts_over(tmp_path):
    recipe = Recipe(epochs=2, lr=0.05, batch_size=16)
    path = tmp_path / "m.partial.pt"
    with pytest.raises(Stop):
        _fit(recipe, Resume(path, {"student": "toy"}, every_s=0), stop_after=2)  # epoch 1 saved
    other = Resume(path, {"student": "another"}, every_s=0)  # the caller's key differs
    _fit(recipe, other)
    assert other.resumed_at == 0
    longer = Resume(path, {"student": "another"}, every_s=0)  # the same caller's key, another recipe:
    _fit(Recipe(epochs=3, lr=0.05, batch_size=16), longer)  # fit's own part of the key
    assert longer.resumed_at == 0
    path.write_bytes(b"not a checkpoint")
    damaged = Resume(path, {"student": "another"}, every_s=0)
    _fit(recipe, damaged)
    assert damaged.resumed_at == 0


def test_saves_wait_every_s_and_the_last_epoch_is_never_saved(tmp_path):
    recipe = Recipe(epochs=2, lr=0.05, batch_size=16)
    never = Resume(tmp_path / "a.pt", {}, every_s=3600)
    _fit(recipe, never)
    assert not never.path.exists()  # an hour has not passed since the start
    each = Resume(tmp_path / "b.pt", {}, every_s=0)
    _fit(recipe, each)
    assert torch.load(each.path, weights_only=True)["epoch"] == 1  # after epoch 1 of 2; the caller keeps the end
