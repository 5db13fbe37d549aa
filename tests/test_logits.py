"""The teacher-logit cache: exact per view, keyed by everything it depends on, built once."""

import pytest
import torch
from torch import nn

from kdsearch.data.augment import apply_views, identity_view, num_views, to_float
from kdsearch.training.logit_cache import build_or_load, choose_views, logit_cache_key as cache_key


def teacher() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()


def data(n=20):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, 6, 6), dtype=torch.uint8, generator=g), torch.randint(0, 5, (n,), generator=g)


def test_cached_logits_equal_a_fresh_forward_on_the_same_view(tmp_path):
    x, y = data()
    t = teacher()
    cache = build_or_load(t, x, pad=1, flip=True, k=4, seed=0, key="k", run_dir=tmp_path, batch_size=7)
    assert cache.built and cache.views.shape == (20, 4) and cache.logits.dtype == torch.float16
    assert (cache.views[:, 0] == identity_view(1, True)).all()  # the plain image is always cached
    idx = torch.tensor([3, 3, 11, 0, 19])
    views, logits = cache.draw(idx, torch.Generator().manual_seed(5))
    fresh = t(apply_views(to_float(x[idx]), views, 1, True))
    torch.testing.assert_close(logits.float(), fresh, atol=1e-2, rtol=1e-2)  # fp16 storage
    again = build_or_load(t, x, pad=1, flip=True, k=4, seed=0, key="k", run_dir=tmp_path)
    assert not again.built and torch.equal(again.logits, cache.logits) and torch.equal(again.views, cache.views)


def test_an_interrupted_build_continues_where_it_stopped(tmp_path):
    """A long build saves what it has; killed mid-way, the next build continues from there (the
    batches before it are not recomputed) and gives the logits an uninterrupted build gives."""
    x, _ = data()
    whole = build_or_load(teacher(), x, pad=1, flip=True, k=4, seed=0, key="whole", run_dir=tmp_path, batch_size=7)

    class Counted(nn.Module):  # the teacher, counting its batches, killed at batch `dies_at`
        def __init__(self, dies_at=0):
            super().__init__()
            self.t, self.calls, self.dies_at = teacher(), 0, dies_at

        def forward(self, images):
            self.calls += 1
            if self.calls == self.dies_at:
                raise RuntimeError("killed")
            return self.t(images)

    with pytest.raises(RuntimeError, match="killed"):  # at its 6th batch of 12, saving after each
        build_or_load(Counted(dies_at=6), x, pad=1, flip=True, k=4, seed=0, key="k", run_dir=tmp_path, batch_size=7,
                      save_every_s=0)
    assert (tmp_path / "logits" / "k.partial.safetensors").is_file() and not (tmp_path / "logits" / "k.safetensors").exists()
    resumed = Counted()
    cache = build_or_load(resumed, x, pad=1, flip=True, k=4, seed=0, key="k", run_dir=tmp_path, batch_size=7)
    assert resumed.calls == 12 - 5  # batches 6 to 12: the five saved ones are not run again
    assert cache.built and torch.equal(cache.logits, whole.logits) and torch.equal(cache.views, whole.views)
    assert not (tmp_path / "logits" / "k.partial.safetensors").exists()


def test_all_views_when_k_covers_them():
    v = choose_views(3, 100, pad=1, flip=False, seed=0)
    assert v.shape == (3, num_views(1, False)) and (v == torch.arange(9)).all()
    v = choose_views(50, 5, pad=2, flip=True, seed=0)
    assert all(len(set(row.tolist())) == 5 for row in v)


def test_key_changes_with_teacher_data_and_augmentation():
    x, y = data()
    base = cache_key("teacherA", x, y, 1, True, 4, 0)
    assert base == cache_key("teacherA", x.clone(), y.clone(), 1, True, 4, 0)
    x2 = x.clone()
    x2[0, 0, 0, 0] ^= 1
    others = {cache_key("teacherB", x, y, 1, True, 4, 0), cache_key("teacherA", x2, y, 1, True, 4, 0),
              cache_key("teacherA", x, y, 2, True, 4, 0), cache_key("teacherA", x, y, 1, False, 4, 0),
              cache_key("teacherA", x, y, 1, True, 8, 0)}
    assert base not in others and len(others) == 5


def test_a_damaged_cache_is_rebuilt_with_a_note(tmp_path):
    x, _ = data()
    t = teacher()
    good = build_or_load(t, x, pad=1, flip=True, k=4, seed=0, key="k", run_dir=tmp_path)
    good.path.write_bytes(good.path.read_bytes()[:100])  # truncated, as a killed copy would leave it
    again = build_or_load(t, x, pad=1, flip=True, k=4, seed=0, key="k", run_dir=tmp_path)
    assert again.built and "unreadable" in again.note and torch.equal(again.logits, good.logits)
    assert not build_or_load(t, x, pad=1, flip=True, k=4, seed=0, key="k", run_dir=tmp_path).note


class Recording(nn.Module):
    """A tiny student that records the images it is shown."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 5))
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.body(x)


def test_training_through_the_cache_pairs_each_shown_view_with_its_own_logits(tmp_path, monkeypatch):
    """Issue 36: train_epoch with the logit cache, on the CPU. Each image the student is shown must come with the
    teacher's logits of exactly that view: drawing fresh views while keeping cached logits fails here."""
    import kdsearch.training.distill as distill

    x, y = data()
    t = teacher()
    cache = build_or_load(t, x, pad=1, flip=True, k=3, seed=0, key="k", run_dir=tmp_path)
    pairs = []
    real_loss = distill.kd_loss

    def spy(logits, t_logits, labels, *a, **k):
        pairs.append(t_logits)
        return real_loss(logits, t_logits, labels, *a, **k)

    monkeypatch.setattr(distill, "kd_loss", spy)
    student = Recording()
    opt, sched = distill.make_optimizer(student, "sgd", 0.01, 0.0, 3 * 2)
    g = torch.Generator().manual_seed(4)
    for _ in range(3):
        distill.train_epoch(student, x, y, opt, sched, batch_size=8, pad=1, flip=True, generator=g, cache=cache,
                            temperature=4.0, alpha=0.5)
    assert len(student.seen) == len(pairs) == 3 * 2
    distinct = 0
    with torch.no_grad():
        for images, t_logits in zip(student.seen, pairs):
            assert t_logits is not None
            torch.testing.assert_close(t_logits.float(), t(images), atol=1e-2, rtol=1e-2)  # that view's logits
            distinct += len({tuple(row.tolist()) for row in t_logits.float().round(decimals=2)})
    assert distinct > 8  # several views and images, not one repeated view


def test_with_every_view_cached_the_control_trains_as_ordinary_training(tmp_path):
    """A cache that holds every view draws each view as ordinary training does: the control arm (no teacher, cached
    views) and ordinary training (fresh views) train the same model, which `kdsearch train` says under its table.
    With fewer views cached they differ."""
    import kdsearch.training.distill as distill

    x, y = data()
    weights = {}
    for name, k in (("all", num_views(1, True)), ("fewer", 3), ("none", None)):
        cache = build_or_load(teacher(), x, pad=1, flip=True, k=k, seed=0, key=name, run_dir=tmp_path) if k else None
        student = Recording()
        opt, sched = distill.make_optimizer(student, "sgd", 0.05, 0.0, 4)
        g = torch.Generator().manual_seed(9)
        for _ in range(2):
            distill.train_epoch(student, x, y, opt, sched, batch_size=8, pad=1, flip=True, generator=g, cache=cache)
        weights[name] = torch.cat([p.detach().flatten() for p in student.parameters()])
    assert torch.equal(weights["all"], weights["none"])
    assert not torch.equal(weights["fewer"], weights["none"])


def test_the_final_table_says_why_the_control_and_ordinary_rows_are_identical():
    from kdsearch.final import final_table

    arm = {"lr": 0.01, "seeds": [0, 1], "test": {"0": 0.9, "1": 0.92}, "test_mean": 0.91, "test_sd": 0.01,
           "val_mean": 0.9, "retained": 0.95}
    results = {"teacher": {"name": "resnet20", "val_accuracy": 0.97, "test_accuracy": 0.96},
               "setup": {"views": 9}, "lr_policy": {"text": "lr 0.01"},
               "summary": {"arms": {"kd": {**arm, "label": "distilled", "test": {"0": 0.93, "1": 0.94}},
                                    "ce": {**arm, "label": "control"}, "ce-all": {**arm, "label": "ordinary"}},
                           "gain": {}}}
    assert "the same model here: the teacher's cache holds all 9 views" in final_table(
        "trial 2", results, every_view_cached=True).caption
    # equal rows by chance (tiny data: both at 100%) with fewer views cached: not the same model, no note
    assert "the same model" not in final_table("trial 2", results, every_view_cached=False).caption
    del results["summary"]["arms"]["ce-all"]  # no ordinary arm: nothing to explain
    assert "the same model" not in final_table("trial 2", results, every_view_cached=True).caption
