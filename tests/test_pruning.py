"""Pruner decisions on hand-built histories."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from kdsearch.config import PrunerConfig, load_config
from kdsearch.config.schema import PRUNERS
from kdsearch.measure.costs import count_params
from kdsearch.measure.latency import Timing
from kdsearch.search.estimate import validation_passes
from kdsearch.search.pruners import (AshaPruner, CHECKS, CURVE, PRUNED_AT, MedianPruner, MoAshaPruner, NoPruner,
                                     ParetoPruner, checks_at, crowding_distances, epochs_trained, make_pruner,
                                     nondominated_ranks, pruned_at, replay, rung_at)


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
    p = ParetoPruner(cost_keys=("params", "latency"), margin=0.02, warmup_epochs=1, rungs=())
    cheaper_better = trial([0.5, 0.80], params=900, latency=0.9)
    assert p.should_prune([cheaper_better], [0.4, 0.70], epochs=5, costs=COSTS)
    # within the margin: kept
    assert not p.should_prune([cheaper_better], [0.4, 0.79], epochs=5, costs=COSTS)
    # equal cost counts as "no larger, no slower"
    assert p.should_prune([trial([0.5, 0.8], params=1000, latency=1.0)], [0.4, 0.7], epochs=5, costs=COSTS)


def test_pareto_never_prunes_without_a_cheaper_competitor():
    p = ParetoPruner(cost_keys=("params", "latency"), margin=0.0, warmup_epochs=0, rungs=())
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
    p = ParetoPruner(cost_keys=("params", "latency"), margin=0.0, warmup_epochs=2, rungs=())
    assert not p.should_prune([cheaper_better], [0.1, 0.1], epochs=5, costs=COSTS)  # warm-up
    assert not p.should_prune([cheaper_better], [0.1, 0.1, 0.1], epochs=5, costs=COSTS)  # slower: not cheaper
    p_macs = ParetoPruner(cost_keys=("params", "macs"), margin=0.0, warmup_epochs=2, rungs=(4,))
    costs = {"params": 1000, "macs": 1000}
    assert not p_macs.should_prune([cheaper_better], [0.1] * 3, epochs=5, costs=costs)  # not a rung
    assert p_macs.should_prune([cheaper_better], [0.1] * 4, epochs=5, costs=costs)


def test_pareto_defaults_check_a_quarter_and_half_way_and_ask_for_a_one_point_lead():
    p = ParetoPruner()  # the shipped defaults: rungs 0.25 and 0.5 of the epochs, margin -0.01
    cheaper = trial([0.5] * 12, params=900, latency=0.9)
    checked = [e for e in range(1, 13) if p.should_prune([cheaper], [0.4] * e, epochs=12, costs=COSTS)]
    assert checked == [3, 6]  # 0.25 and 0.5 of 12 epochs; every other epoch is left alone
    assert p.should_prune([cheaper], [0.505] * 3, epochs=12, costs=COSTS)  # ahead, but by less than a point
    assert not p.should_prune([cheaper], [0.515] * 3, epochs=12, costs=COSTS)  # earns its size
    assert not p.should_prune([trial([0.9] * 12, params=2000)], [0.1] * 3, epochs=12, costs=COSTS)  # larger
    assert [rung_at(r, 10) for r in (0.25, 0.5, 0.05, 4)] == [3, 5, 1, 4]  # halves round up, never epoch 0


def test_asha_keeps_the_top_third_at_rungs():
    p = AshaPruner(min_epochs=1, eta=3, min_trials=5)
    assert p.rung_epochs(10) == [1, 3, 9]
    assert AshaPruner(rungs=(0.5, 0.2)).rung_epochs(10) == [2, 5]  # fractions of the epochs, sorted
    history = hist([0.9], [0.8], [0.7], [0.6], [0.5])
    assert not p.should_prune(history, [0.85], epochs=10, costs={})  # 1 better, top 2 kept
    assert p.should_prune(history, [0.75], epochs=10, costs={})  # 2 better
    assert not p.should_prune(hist([0.9, 0.9], *[[0.5, 0.5]] * 5), [0.1, 0.1], epochs=10, costs={})  # 2 is no rung


def test_nondominated_ranks_and_crowding():
    # minimized: (0,2) (1,1) (2,0) form the first front; (2,2) is dominated by (1,1); (3,3) by all
    assert nondominated_ranks([(0, 2), (1, 1), (2, 0), (2, 2), (3, 3)]) == [0, 0, 0, 1, 2]
    assert nondominated_ranks([(1, 1), (1, 1)]) == [0, 0]  # equal points do not dominate each other
    d = crowding_distances([(0, 2), (1, 1), (2, 0)])
    assert d[0] == d[2] == float("inf") and d[1] == 2.0


def test_moasha_keeps_small_students_that_accuracy_alone_would_cut():
    history = [trial([0.9], params=50_000, latency=5.0), trial([0.8], params=40_000, latency=4.0),
               trial([0.7], params=30_000, latency=3.0), trial([0.6], params=20_000, latency=2.0),
               trial([0.5], params=10_000, latency=1.0)]
    small = {"params": 1_000, "latency": 0.5}
    assert AshaPruner(min_epochs=1, eta=3, min_trials=5).should_prune(history, [0.3], epochs=10, costs=small)
    p = MoAshaPruner(min_epochs=1, eta=3, min_trials=5)
    assert not p.should_prune(history, [0.3], epochs=10, costs=small)  # the smallest: a front boundary
    # dominated by a trial that is smaller, faster and more accurate: the last front, cut
    assert p.should_prune(history, [0.4], epochs=10, costs={"params": 60_000, "latency": 6.0})
    assert not p.should_prune(history[:3], [0.4], epochs=10, costs={"params": 60_000, "latency": 6.0})  # too few
    assert not p.should_prune(history, [0.4, 0.4], epochs=10, costs={"params": 60_000, "latency": 6.0})  # no rung


def test_make_pruner_follows_the_objectives():
    p = make_pruner(PrunerConfig(name="pareto", margin=0.05), ["accuracy", "params", "macs"])
    assert isinstance(p, ParetoPruner) and p.cost_keys == ("params", "macs") and p.margin == 0.05
    assert isinstance(make_pruner(PrunerConfig(name="asha")), AshaPruner)
    assert make_pruner(PrunerConfig()).rungs == (0.25, 0.5)  # the pareto pruner's own rungs
    assert make_pruner(PrunerConfig(rungs=[])).rungs == ()  # every epoch after warm-up
    assert make_pruner(PrunerConfig(rungs=[2, 0.5])).rungs == (2, 0.5)
    moasha = make_pruner(PrunerConfig(name="moasha", eta=2), ["accuracy", "params", "macs"])
    assert isinstance(moasha, MoAshaPruner) and moasha.cost_keys == ("params", "macs") and moasha.eta == 2


def test_checks_within_epochs_count_in_checks():
    """checks_per_epoch k: settings in epochs become k checks each; fractions of the trial stay fractions."""
    p = make_pruner(PrunerConfig(checks_per_epoch=4, warmup_epochs=0.5))
    assert p.warmup_epochs == 2 and p.rungs == (0.25, 0.5)
    assert make_pruner(PrunerConfig(checks_per_epoch=4, rungs=[2, 0.5])).rungs == (8, 0.5)
    assert make_pruner(PrunerConfig(name="asha", checks_per_epoch=3)).min_epochs == 3
    # a 2-epoch trial at 4 checks per epoch: a quarter of it is check 2, after warm-up (1 check)
    p = make_pruner(PrunerConfig(checks_per_epoch=4, warmup_epochs=0.25), ["accuracy", "params"])
    cheap = trial([0.5, 0.6], params=100)
    cheap.user_attrs[CHECKS] = [0.30, 0.50, 0.55, 0.60, 0.60, 0.61, 0.62, 0.63]
    assert p.should_prune([cheap], [0.2, 0.3], epochs=8, costs={"params": 1000})  # at 0.5 epoch, behind
    assert not p.should_prune([cheap], [0.2], epochs=8, costs={"params": 1000})  # check 1: warm-up
    assert not p.should_prune([cheap], [0.2, 0.3], epochs=8, costs={"params": 50})  # nothing as small
    assert pruned_at(2, 4) == 0.5 and pruned_at(4, 4) == 1 and isinstance(pruned_at(4, 4), int)
    from kdsearch.training.distill import check_steps

    assert check_steps(8, 4) == [2, 4, 6] and check_steps(8, 1) == []
    assert check_steps(2, 4) == [1, 1, 2]  # fewer steps than checks: a step carries several


def test_checks_at_reads_fewer_checks_from_more():
    from optuna.trial import TrialState, create_trial

    t = create_trial(state=TrialState.COMPLETE, values=[0.6], user_attrs={
        CURVE: [0.4, 0.6], CHECKS: [0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.58, 0.6]})
    assert checks_at(t, 4) == t.user_attrs[CHECKS] and checks_at(t, 2) == [0.2, 0.4, 0.55, 0.6]
    assert checks_at(t, 1) == [0.4, 0.6]
    with pytest.raises(ValueError, match="not a multiple of 3"):
        checks_at(t, 3)
    pruned = create_trial(state=TrialState.PRUNED, user_attrs={CURVE: [0.4], CHECKS: [0.1] * 6, PRUNED_AT: 1.5})
    assert epochs_trained(pruned) == 1.5 and epochs_trained(t) == 2


@pytest.mark.slow
def test_replay_gives_what_live_studies_with_each_pruner_ran(folder, tmp_path, monkeypatch):
    """The pruner benchmark replays one unpruned study under each pruner: that must equal running it."""
    import optuna
    from optuna.trial import TrialState
    from rich.console import Console

    from kdsearch.search.evaluation import prepare_evaluation
    from kdsearch.search.objective import objective
    from kdsearch.search.runner import prepare
    from kdsearch.search.study import DIRECTIONS

    def fake_latency(model, input_shape):  # timing is noise; sizes are exact
        return 0.01 + count_params(model) / 1e6

    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("kdsearch.training.teacher.teacher_latency", lambda model, shape, *a: fake_latency(model, shape))
    monkeypatch.setattr("kdsearch.measure.latency.student_latency", lambda model, shape, *a, **k: Timing(
        fake_latency(model, shape), 0.0, 1, "onnxruntime", 1, 1))
    cfg = load_config(None, {
        "data.dataset": "imagefolder", "data.data_dir": str(folder), "teacher.name": "resnet20",
        "teacher.pretrained": False, "teacher.epochs": 1, "epochs": 4, "trials": 8, "device": "cpu",
        "run_dir": str(tmp_path / "run"), "train.views": 2, "train.batch_size": 16, "space.family": "plain",
        # T and alpha searched (the default fixes them): their spread gives the pruners students to stop
        "space.temperature": [1.0, 10.0], "space.alpha": [0.0, 1.0]})
    ctx, _ = prepare(cfg, Console(quiet=True))

    def live(pruner):
        ctx.pruner = pruner
        study = optuna.create_study(directions=[DIRECTIONS[o] for o in cfg.objectives],
                                    sampler=optuna.samplers.RandomSampler(seed=0))
        evaluate = prepare_evaluation(ctx, Console(quiet=True)).evaluate
        study.optimize(lambda t: objective(t, ctx, evaluate), n_trials=cfg.trials)
        return study.trials

    def ending(trials):
        return [(t.state, t.user_attrs[CURVE]) for t in trials]

    unpruned = live(NoPruner())
    costs = ("params", "latency")
    for pruner in (ParetoPruner(cost_keys=costs, margin=0.0, warmup_epochs=0), MedianPruner(warmup_epochs=0, min_trials=2),
                   MoAshaPruner(cost_keys=costs, eta=2, min_trials=2)):
        expected = live(pruner)
        assert any(t.state == TrialState.PRUNED for t in expected), pruner  # the comparison is not vacuous
        assert ending(replay(unpruned, pruner, cfg.epochs)) == ending(expected), pruner

    # with checks within epochs (2 per epoch): they only observe (the same curves unpruned), pruning
    # stops trials mid-epoch, and replay gives it too, from checks recorded at 2 or read at 1 per epoch
    ctx.cfg = cfg.model_copy(update={"pruner": cfg.pruner.model_copy(update={"checks_per_epoch": 2})})
    checked = live(NoPruner())
    assert ending(checked) == ending(unpruned) and all(len(t.user_attrs[CHECKS]) == 8 for t in checked)
    assert all(t.user_attrs[CHECKS][1::2] == t.user_attrs[CURVE] for t in checked)
    pareto = ParetoPruner(cost_keys=costs, margin=0.0, warmup_epochs=1, rungs=(0.25, 0.5))  # checks 2 and 4 of 8
    expected = live(pareto)
    assert any(t.user_attrs.get(PRUNED_AT) == 1 for t in expected)  # a check at an epoch's end
    # it looks at no mid-epoch check (checks 1, 3, ...): those are not measured (a validation pass each)
    assert all(c is None for t in expected for c in t.user_attrs[CHECKS][0::2])
    with_checks = [(t.state, t.user_attrs[CURVE], t.user_attrs.get(CHECKS), t.user_attrs.get(PRUNED_AT)) for t in expected]
    assert [(t.state, t.user_attrs[CURVE], t.user_attrs.get(CHECKS), t.user_attrs.get(PRUNED_AT))
            for t in replay(checked, pareto, cfg.epochs, 2)] == with_checks
    halves = ParetoPruner(cost_keys=costs, margin=-0.5, warmup_epochs=0, rungs=(0.125,))  # check 1 of 8: half an epoch
    expected = live(halves)
    assert any(t.user_attrs.get(PRUNED_AT) == 0.5 for t in expected) and all(
        t.user_attrs[CURVE] == [] for t in expected if t.user_attrs.get(PRUNED_AT) == 0.5)
    assert ending(replay(checked, halves, cfg.epochs, 2)) == ending(expected)
    assert ending(replay(checked, MedianPruner(warmup_epochs=0, min_trials=2), cfg.epochs)) == ending(
        replay(unpruned, MedianPruner(warmup_epochs=0, min_trials=2), cfg.epochs))  # read at 1 per epoch


def test_the_readmes_worked_example():
    """docs/search.md, "Pruning": the shipped defaults at epoch 3 of 12, decision by decision."""
    p = make_pruner(PrunerConfig(), ["accuracy", "params", "latency"])
    history = [trial([0.5, 0.7, 0.910] + [0.95] * 9, params=40_000, latency=0.60),  # A
               trial([0.5, 0.7, 0.800] + [0.85] * 9, params=3_000, latency=0.30)]  # B
    decide = {name: p.should_prune(history, [0.3, 0.4, acc], epochs=12, costs={"params": params, "latency": ms})
              for name, params, ms, acc in [("C", 2_000, 0.25, 0.550), ("D", 5_000, 0.35, 0.700),
                                            ("E", 50_000, 0.70, 0.915), ("F", 50_000, 0.70, 0.930)]}
    assert decide == {"C": False, "D": True, "E": True, "F": False}


def test_a_trial_measures_only_the_checks_its_pruner_looks_at():
    """The v2 CIFAR-10 study: 4 checks per epoch over 3 epochs, but pareto looks at checks 2, 4 and 6 only,
    so a trial makes 5 validation passes (3 epoch ends, 2 mid-epoch), not 12; unpruned, it records all."""
    study = Path(__file__).resolve().parents[1] / "studies" / "cifar10-resnet32-v2.toml"
    cfg = load_config(str(study), {})
    p = make_pruner(cfg.pruner, cfg.objectives)
    assert [c for c in range(1, 13) if p.looks_at(c, 12)] == [2, 4, 6]
    assert validation_passes(cfg) == 5
    assert validation_passes(load_config(str(study), {"pruner.name": "none"})) == 12



def test_the_resume_guard_compares_only_the_pruner_settings_the_pruner_reads(tmp_path):
    """A study searched with --pruner none resumes after its [pruner] settings were chosen by replaying
    it (none reads none of them); checks per epoch, and a pareto pruner's own settings, still count."""
    import optuna

    from kdsearch.errors import KDSearchError
    from kdsearch.search.fingerprint import FINGERPRINT_ATTR, check_resume, fingerprint

    def study_with(**pruner):
        study = optuna.create_study(directions=["maximize"])
        study.set_user_attr(FINGERPRINT_ATTR, fingerprint(load_config(overrides=pruner)))
        return study

    unpruned = study_with(**{"pruner.name": "none", "pruner.checks_per_epoch": 4})
    check_resume(unpruned, load_config(overrides={"pruner.name": "none", "pruner.checks_per_epoch": 4,
                                                  "pruner.warmup_epochs": 0.25, "pruner.rungs": [0.5]}))
    with pytest.raises(KDSearchError, match="checks_per_epoch"):
        check_resume(unpruned, load_config(overrides={"pruner.name": "none"}))
    pareto = study_with(**{"pruner.name": "pareto"})
    check_resume(pareto, load_config(overrides={"pruner.name": "pareto", "pruner.eta": 2}))  # asha's setting
    with pytest.raises(KDSearchError, match="margin"):
        check_resume(pareto, load_config(overrides={"pruner.name": "pareto", "pruner.margin": 0.02}))


@pytest.mark.parametrize("name", PRUNERS)
def test_the_guards_list_of_what_each_pruner_reads_matches_make_pruner(name):
    """PRUNER_READS (the resume guard) and make_pruner say the same thing twice: a setting changes the
    pruner built exactly when the guard counts it, so the two cannot drift apart unnoticed."""
    from kdsearch.search.fingerprint import PRUNER_READS

    changed = {"warmup_epochs": 2, "min_trials": 7, "margin": 0.05, "rungs": [0.2, 0.6], "eta": 4}
    assert set(changed) == set(PrunerConfig.model_fields) - {"name", "checks_per_epoch"}
    base = make_pruner(PrunerConfig(name=name))
    for key, value in changed.items():
        differs = make_pruner(PrunerConfig(name=name, **{key: value})) != base
        assert differs == (key in PRUNER_READS[name]), (name, key)
