"""The distillation loss, the replayable augmentation and the training loop."""

import json
import math

import pytest
import torch

from kdsearch.data.augment import apply_views, decode_view, identity_view, num_views, random_views
from kdsearch.training.distill import NonFiniteLoss, accuracy, kd_loss, make_optimizer, train_epoch


def test_kd_loss_matches_hand_computed_value():
    # student [1, 2, 0], teacher [0, 1, 0], label 1, T = 2, alpha = 0.5, worked out by hand:
    # p_t = softmax([0, .5, 0]) = [.2741, .4519, .2741]; q_s = softmax([.5, 1, 0]) = [.3072, .5065, .1863]
    # KL(p_t || q_s) = 0.0229272; CE = -log softmax([1, 2, 0])[1] = 0.4076060
    # loss = 0.5 * 4 * 0.0229272 + 0.5 * 0.4076060 = 0.2496574
    s = torch.tensor([[1.0, 2.0, 0.0]])
    t = torch.tensor([[0.0, 1.0, 0.0]])
    loss = kd_loss(s, t, torch.tensor([1]), temperature=2.0, alpha=0.5)
    assert loss.item() == pytest.approx(0.2496574037, abs=1e-6)


def test_kd_loss_is_batchmean_and_reduces_to_ce():
    torch.manual_seed(0)
    s, t, y = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    whole = kd_loss(s, t, y, temperature=3.0, alpha=0.7)
    per_sample = torch.stack([kd_loss(s[i:i + 1], t[i:i + 1], y[i:i + 1], 3.0, 0.7) for i in range(4)])
    assert whole.item() == pytest.approx(per_sample.mean().item(), rel=1e-5)
    ce = torch.nn.functional.cross_entropy(s, y)
    assert kd_loss(s, t, y, 3.0, 0.0).item() == pytest.approx(ce.item())
    assert kd_loss(s, None, y, 3.0, 0.9).item() == pytest.approx(ce.item())
    # alpha = 1: pure distillation, zero when student equals teacher
    assert kd_loss(t, t, y, 4.0, 1.0).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("pad,flip", [(0, False), (2, False), (4, True), (1, True)])
def test_views_replay_and_cover_every_offset(pad, flip):
    x = torch.randint(0, 255, (6, 3, 8, 8), dtype=torch.uint8)
    views = random_views(6, pad, flip, torch.Generator().manual_seed(1))
    a = apply_views(x, views, pad, flip)
    b = apply_views(x.clone(), views.clone(), pad, flip)
    assert torch.equal(a, b) and a.shape == x.shape
    ident = torch.full((6,), identity_view(pad, flip))
    assert torch.equal(apply_views(x, ident, pad, flip), x)
    dy, dx, flipped = decode_view(torch.arange(num_views(pad, flip)), pad, flip)
    assert len({(int(a), int(b), bool(c)) for a, b, c in zip(dy, dx, flipped)}) == num_views(pad, flip)


def test_view_is_the_expected_shift_and_flip():
    x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
    # pad 1, flip: view id = (dy * 3 + dx) * 2 + flipped; dy = 2, dx = 0 shifts the image up, right
    v = torch.tensor([(2 * 3 + 0) * 2 + 1])
    out = apply_views(x, v, 1, True)[0, 0]
    flipped = x[0, 0].flip(1)
    expected = torch.zeros(4, 4, dtype=torch.uint8)
    expected[:3, 1:] = flipped[1:, :3]
    assert torch.equal(out, expected)


def _toy(n=64):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (n,), generator=g)
    x = (y[:, None, None, None] * 200 + torch.randint(0, 40, (n, 1, 8, 8), generator=g)).to(torch.uint8)
    return x, y


def test_train_epoch_learns_and_flags_nan():
    from kdsearch.models.students.registry import build
    from kdsearch.models.students.spec import StudentSpec

    x, y = _toy()
    torch.manual_seed(0)
    model = build(StudentSpec(in_channels=1, num_classes=2, image_size=8, channels=[4]))
    opt, sched = make_optimizer(model, "adamw", 1e-2, 0.0, 5 * 4)
    for _ in range(5):
        train_epoch(model, x, y, opt, sched, batch_size=16, pad=1, flip=False, generator=torch.Generator().manual_seed(0))
    assert accuracy(model, x, y) > 0.9
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    with pytest.raises(NonFiniteLoss):
        train_epoch(model, x, y, opt, None, batch_size=16, pad=0, flip=False, generator=torch.Generator())


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_schedule_works_for_any_number_of_steps(kind):
    """Every step's lr is finite and at most the peak; a run too short for one-cycle's phases keeps the peak, a
    longer one comes near it and ends far below it (a schedule that never decayed, or overshot, fails here)."""
    model = torch.nn.Linear(2, 2)
    for total in range(1, 40):
        opt, sched = make_optimizer(model, kind, 0.1, 0.0, total)
        lrs = []
        for _ in range(total):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert all(math.isfinite(lr) and 0 < lr <= 0.1 + 1e-12 for lr in lrs), (total, lrs)
        if total < 8:
            assert lrs == [0.1] * total
        else:
            assert max(lrs) > 0.09 and lrs[-1] < 1e-3 and lrs[0] < max(lrs), (total, lrs)


def test_students_train_in_the_memory_format_measured_fastest_for_them_on_this_machine(tmp_path, monkeypatch):
    """On a CPU the faster layout of each architecture is timed once, kept in the cache folder (a later
    process reads it instead of timing again) and used by fit; on CUDA it is channels_last, untimed."""
    from kdsearch.models.students.registry import build
    from kdsearch.models.students.spec import StudentSpec
    from kdsearch.training import memory_format as mf
    from kdsearch.training.distill import Recipe, fit

    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path))
    monkeypatch.setattr(mf, "_CHOSEN", {})
    timed = []

    def fake_timing(model, sample, batch_size):  # channels_last wins where the first conv is 8 wide
        width = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).out_channels
        timed.append((width, tuple(sample), batch_size))
        return {"contiguous": 2.0, "channels_last": 1.0 if width == 8 else 3.0}

    monkeypatch.setattr(mf, "time_formats", fake_timing)

    def student(channels):
        return build(StudentSpec(in_channels=3, num_classes=4, image_size=8, family="plain", channels=channels))

    cpu = torch.device("cpu")
    assert mf.fast_memory_format(student([8, 12]), torch.device("cuda"), (3, 8, 8), 8) == torch.channels_last
    assert timed == []
    x, y = torch.randint(0, 255, (16, 3, 8, 8), dtype=torch.uint8), torch.randint(0, 4, (16,))
    for channels, expected in [([8, 12], torch.channels_last), ([6, 9], torch.contiguous_format)]:
        model = student(channels).to(memory_format=torch.channels_last)
        fit(model, x, y, Recipe(epochs=1, lr=0.01, batch_size=8), pad=1, flip=True, seed=0, x_val=x, y_val=y)
        assert mf.memory_format_of(model) == expected
        assert accuracy(model, x, y) >= 0  # predict feeds inputs in the model's format
    assert timed == [(8, (3, 8, 8), 8), (6, (3, 8, 8), 8)]
    saved = sorted(json.loads(f.read_text())["format"] for f in (tmp_path / "memory-format").glob("*.json"))
    assert saved == ["channels_last", "contiguous"]
    monkeypatch.setattr(mf, "_CHOSEN", {})  # as a new process on the same machine: read, not timed again
    assert mf.fast_memory_format(student([8, 12]), cpu, (3, 8, 8), 8) == torch.channels_last
    assert len(timed) == 2
    mf.fast_memory_format(student([8, 12]), cpu, (3, 8, 8), 16)  # another batch size is another question
    assert len(timed) == 3


def test_timing_the_layouts_leaves_the_network_and_the_random_state_as_they_were():
    from kdsearch.models.students.registry import build
    from kdsearch.models.students.spec import StudentSpec
    from kdsearch.training.memory_format import time_formats

    torch.manual_seed(0)
    model = build(StudentSpec(in_channels=3, num_classes=4, image_size=8, family="residual", channels=[8, 12],
                              fc=[16], dropout=0.5))  # (dropout draws from torch's generator)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    seconds = time_formats(model, (3, 8, 8), 4)
    assert set(seconds) == {"contiguous", "channels_last"} and all(t > 0 for t in seconds.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()) and model.training
    assert torch.equal(torch.get_rng_state(), rng)
