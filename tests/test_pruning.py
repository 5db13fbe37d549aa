"""The median pruner's decisions on hand-built histories."""

from types import SimpleNamespace

from kdsearch.pruning import CURVE, MedianPruner, NoPruner


def hist(*curves):
    return [SimpleNamespace(user_attrs={CURVE: list(c)}) for c in curves]


def test_median_prunes_below_median_after_warmup():
    p = MedianPruner(warmup_epochs=1, min_trials=3)
    history = hist([0.5, 0.8, 0.9], [0.5, 0.7, 0.9], [0.4, 0.6, 0.8])
    assert p.should_prune(history, [0.1, 0.5], epochs=3, costs={})  # 0.5 < median 0.7
    assert not p.should_prune(history, [0.1, 0.75], epochs=3, costs={})
    assert not p.should_prune(history, [0.1], epochs=3, costs={})  # warm-up
    assert not p.should_prune(history, [0.1, 0.1, 0.1], epochs=3, costs={})  # last epoch: nothing to save
    assert not p.should_prune(history[:2], [0.1, 0.5], epochs=3, costs={})  # too few peers
    assert not NoPruner().should_prune(history, [0.0, 0.0], epochs=3, costs={})


def test_median_only_counts_trials_that_reached_the_epoch():
    p = MedianPruner(warmup_epochs=0, min_trials=2)
    history = hist([0.9], [0.9], [0.2, 0.3], [0.2, 0.4])
    assert not p.should_prune(history, [0.5, 0.36], epochs=5, costs={})  # median of 0.3, 0.4 = 0.35
    assert p.should_prune(history, [0.5, 0.34], epochs=5, costs={})
