"""Pruner decisions on hand-built histories."""

from types import SimpleNamespace

from kdsearch.config import PrunerConfig
from kdsearch.pruning import CURVE, AshaPruner, MedianPruner, NoPruner, ParetoPruner, make_pruner


def trial(curve, params=0, latency=0.0, macs=0):
    return SimpleNamespace(user_attrs={CURVE: list(curve), "params": params, "latency_ms": latency, "macs": macs})


def hist(*curves):
    return [trial(c) for c in curves]


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


COSTS = {"params": 1000, "latency": 1.0}


def test_pareto_cheaper_and_better_competitor_prunes():
    p = ParetoPruner(cost_keys=("params", "latency"), margin=0.02, warmup_epochs=1)
    cheaper_better = trial([0.5, 0.80], params=900, latency=0.9)
    assert p.should_prune([cheaper_better], [0.4, 0.70], epochs=5, costs=COSTS)
    # within the margin: kept
    assert not p.should_prune([cheaper_better], [0.4, 0.79], epochs=5, costs=COSTS)
    # equal cost counts as "no larger, no slower"
    assert p.should_prune([trial([0.5, 0.8], params=1000, latency=1.0)], [0.4, 0.7], epochs=5, costs=COSTS)


def test_pareto_never_prunes_without_a_cheaper_competitor():
    p = ParetoPruner(cost_keys=("params", "latency"), margin=0.0, warmup_epochs=0)
    bigger = trial([0.99, 0.99, 0.99], params=50_000, latency=5.0)
    faster_but_larger = trial([0.99, 0.99, 0.99], params=2000, latency=0.5)
    smaller_but_slower = trial([0.99, 0.99, 0.99], params=500, latency=2.0)
    history = [bigger, faster_but_larger, smaller_but_slower]
    for epoch in (1, 2, 3):
        assert not p.should_prune(history, [0.1] * epoch, epochs=4, costs=COSTS)
    # an accuracy-only median rule would have killed the small student here
    assert MedianPruner(warmup_epochs=0, min_trials=3).should_prune(history, [0.1, 0.1], epochs=4, costs=COSTS)


def test_pareto_respects_warmup_rungs_and_cost_keys():
    cheaper_better = trial([0.9, 0.9, 0.9, 0.9], params=10, latency=9.0, macs=10)
    p = ParetoPruner(cost_keys=("params", "latency"), margin=0.0, warmup_epochs=2)
    assert not p.should_prune([cheaper_better], [0.1, 0.1], epochs=5, costs=COSTS)  # warm-up
    assert not p.should_prune([cheaper_better], [0.1, 0.1, 0.1], epochs=5, costs=COSTS)  # slower: not cheaper
    p_macs = ParetoPruner(cost_keys=("params", "macs"), margin=0.0, warmup_epochs=2, rungs=(4,))
    costs = {"params": 1000, "macs": 1000}
    assert not p_macs.should_prune([cheaper_better], [0.1] * 3, epochs=5, costs=costs)  # not a rung
    assert p_macs.should_prune([cheaper_better], [0.1] * 4, epochs=5, costs=costs)


def test_asha_keeps_the_top_third_at_rungs():
    p = AshaPruner(min_epochs=1, eta=3, min_trials=5)
    assert p.rung_epochs(10) == [1, 3, 9]
    history = hist([0.9], [0.8], [0.7], [0.6], [0.5])
    assert not p.should_prune(history, [0.85], epochs=10, costs={})  # 1 better, top 2 kept
    assert p.should_prune(history, [0.75], epochs=10, costs={})  # 2 better
    assert not p.should_prune(hist([0.9, 0.9], *[[0.5, 0.5]] * 5), [0.1, 0.1], epochs=10, costs={})  # 2 is no rung


def test_make_pruner_follows_the_objectives():
    p = make_pruner(PrunerConfig(name="pareto", margin=0.05), ["accuracy", "params", "macs"])
    assert isinstance(p, ParetoPruner) and p.cost_keys == ("params", "macs") and p.margin == 0.05
    assert isinstance(make_pruner(PrunerConfig(name="asha")), AshaPruner)
