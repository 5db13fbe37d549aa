"""Final training: the chosen students retrained with and without their teacher, fairly, resumable."""

import io
import json
import math
import os
import shutil

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file
from typer.testing import CliRunner

from kdsearch.analysis.front import pareto_trials
from kdsearch.analysis.stats import t_interval
from kdsearch.cli import app
from kdsearch.final import LrPolicy, chosen_trial, headline, train_final
from kdsearch.runs.layout import RESULTS_FILE, final_dir, model_dir
from kdsearch.runs.run import open_run
from kdsearch.training.distill import NonFiniteLoss, fit

TRIAL = 3  # the export tests assume trial 0 has no final training


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))


def train(run, *argv):
    return CliRunner().invoke(app, ["train", str(run), "--device", "cpu", *argv])


def weights(run, number, mode, seed, lr):
    return load_file(str(model_dir(run, number, mode, seed, lr) / "student.safetensors"))


def test_train_with_and_without_teacher_then_resume_and_export(tiny_run, tmp_path, cache_env):
    result = train(tiny_run, "--trial", str(TRIAL), "--epochs", "2", "--lr-grid", "1")
    assert result.exit_code == 0, result.output
    assert "0 model(s) already done" in result.output and "distillation adds" in result.output
    assert "one seed: no interval" in result.output and "the trial's learning rate for every arm" in result.output
    assert "estimate: 3 model(s), 6 epochs in all on" in result.output  # said before the hours a CPU may take
    stored = json.loads((final_dir(tiny_run, TRIAL) / RESULTS_FILE).read_text())
    runs = {r["mode"]: r for r in stored["runs"]}
    assert set(runs) == {"kd", "ce", "ce-all"}  # distilled, the control (same views) and ordinary training
    assert all(len(r["curve"]) == 2 and 0 <= r["test_accuracy"] <= 1 for r in runs.values())
    assert stored["setup"]["epochs"] == 2 and stored["environment"]["torch"]
    assert stored["setup"]["train_images"] == open_run(tiny_run).study.user_attrs["data"]["train"]  # no val images
    for base in ("ce", "ce-all"):
        gain = stored["summary"]["gain"][base]
        assert gain["mean"] == pytest.approx(runs["kd"]["test_accuracy"] - runs[base]["test_accuracy"])
        assert gain["n"] == 1 and math.isnan(gain["low"])
    assert headline(stored["summary"]["gain"]) == "ce-all"
    assert f"{100 * stored['summary']['gain']['ce-all']['mean']:+.2f} points from one seed" in result.output
    lr = runs["kd"]["lr"]
    kd, ce = weights(tiny_run, TRIAL, "kd", 0, lr), weights(tiny_run, TRIAL, "ce", 0, lr)
    assert any(not (kd[k] == ce[k]).all() for k in kd)  # the teacher changed what was learned

    again = train(tiny_run, "--trial", str(TRIAL), "--epochs", "2", "--lr-grid", "1")  # kept, not retrained
    assert again.exit_code == 0 and "3 model(s) already done" in again.output, again.output
    assert "estimate:" not in again.output
    assert json.loads((final_dir(tiny_run, TRIAL) / RESULTS_FILE).read_text())["runs"] == stored["runs"]

    out = tmp_path / "exp"
    exported = CliRunner().invoke(app, ["export", str(tiny_run), "--trial", str(TRIAL), "--out", str(out)])
    assert exported.exit_code == 0 and "final weights" in exported.output, exported.output
    info = json.loads((out / "export.json").read_text())
    assert info["weights"] == "final" and info["test_accuracy"] == runs["kd"]["test_accuracy"] and info["epochs"] == 2


def test_views_gives_the_distilled_arm_more_cached_views_and_retrains_when_changed(tiny_run, cache_env):
    number = 1
    first = train(tiny_run, "--trial", str(number), "--epochs", "1", "--lr-grid", "1", "--views", "3",
                  "--no-baseline", "--no-all-views-baseline")
    assert first.exit_code == 0 and "0 model(s) already done" in first.output, first.output
    assert "3 views x" in first.output  # the cache the distilled arm draws from
    stored = json.loads((final_dir(tiny_run, number) / RESULTS_FILE).read_text())
    assert stored["setup"]["views"] == 3
    threads = torch.get_num_threads()
    try:  # --threads says where it runs, not what it trains: the model is kept
        same = train(tiny_run, "--trial", str(number), "--epochs", "1", "--lr-grid", "1", "--views", "3",
                     "--no-baseline", "--no-all-views-baseline", "--threads", "1")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert same.exit_code == 0 and "1 model(s) already done" in same.output, same.output
    other = train(tiny_run, "--trial", str(number), "--epochs", "1", "--lr-grid", "1", "--no-baseline",
                  "--no-all-views-baseline")  # the study's views (2): another setup, retrained
    assert other.exit_code == 0 and "0 model(s) already done" in other.output, other.output
    assert json.loads((final_dir(tiny_run, number) / RESULTS_FILE).read_text())["setup"]["views"] == 2
    # ... and what the other setup finished is kept beside it, never overwritten
    said = " ".join(other.output.split())
    assert "other settings (views 3 -> 2): moved to earlier-" in said
    # (the folder it names: other tests on the shared tiny run may have put aside earlier setups of this trial)
    earlier = final_dir(tiny_run, number) / said.split("moved to ", 1)[1].split("/", 1)[0]
    assert json.loads((earlier / RESULTS_FILE).read_text())["setup"]["views"] == 3
    assert (earlier / model_dir(tiny_run, number, "kd", 0, stored["runs"][0]["lr"]).name / "student.safetensors").is_file()


def test_with_alpha_zero_both_arms_end_identical(tiny_run, cache_env, monkeypatch):
    """Same init, batches, views, lr choice and schedule: a distilled arm with alpha = 0 *is* the baseline.

    Any asymmetry between the arms (other views, another batch order, another lr grid or
    schedule) changes the weights and fails this. The all-views baseline is the control: it
    differs only in its views, and its weights differ.
    """
    real = chosen_trial

    def alpha_zero(study, number):
        spec, hp = real(study, number)
        return spec, {**hp, "alpha": 0.0}

    monkeypatch.setattr("kdsearch.final.train.chosen_trial", alpha_zero)
    number = 4
    out = train_final(open_run(tiny_run), [number], epochs=2, seeds=[0, 1], all_views=True,
                            policy=LrPolicy(grid=(0.5, 1.0, 2.0)), device="cpu")[number]
    arms = out["summary"]["arms"]
    assert arms["kd"]["lr"] == arms["ce"]["lr"]  # the same learning-rate choice
    assert len([r for r in out["runs"] if r["mode"] == "kd"]) == 4  # 3 lr candidates at seed 0, then seed 1
    for seed in (0, 1):
        kd = weights(tiny_run, number, "kd", seed, arms["kd"]["lr"])
        ce = weights(tiny_run, number, "ce", seed, arms["ce"]["lr"])
        assert kd.keys() == ce.keys() and all((kd[k] == ce[k]).all() for k in kd)
    assert out["summary"]["gain"]["ce"]["differences"] == [0.0, 0.0]
    all_views = weights(tiny_run, number, "ce-all", 0, arms["ce-all"]["lr"])
    same_lr = weights(tiny_run, number, "ce", 0, arms["ce-all"]["lr"])
    assert any(not (all_views[k] == same_lr[k]).all() for k in all_views if all_views[k].is_floating_point())


def test_front_retrains_every_pareto_member(tiny_run, tmp_path, cache_env):
    run = tmp_path / "front"  # a copy: the shared run's trial 0 stays without final training (test_export)
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("final", "export"))
    result = train(run, "--front", "--epochs", "1", "--lr", "0.01", "--no-baseline", "--no-all-views-baseline")
    assert result.exit_code == 0, result.output
    members = [t.number for t in pareto_trials(open_run(run).study)]
    assert members
    for number in members:
        stored = json.loads((final_dir(run, number) / RESULTS_FILE).read_text())
        assert [(r["mode"], r["lr"], r["seed"]) for r in stored["runs"]] == [("kd", 0.01, 0)]
        assert list(stored["summary"]["arms"]) == ["kd"] and stored["summary"]["arms"]["kd"]["lr"] == 0.01
        assert stored["lr_policy"]["fixed"] == 0.01 and "one fixed learning rate" in stored["lr_policy"]["text"]


def test_a_diverging_arm_is_recorded_as_failed_and_the_others_go_on(tiny_run, cache_env, monkeypatch):
    real = fit

    def diverge_without_cache(model, x, y, recipe, **kw):  # ordinary training (fresh views) diverges
        if kw.get("cache") is None:
            raise NonFiniteLoss("training loss became nan (try a lower learning rate)")
        return real(model, x, y, recipe, **kw)

    monkeypatch.setattr("kdsearch.final.models.fit", diverge_without_cache)
    number = 2
    result = train(tiny_run, "--trial", str(number), "--epochs", "1", "--lr", "0.01", "--seeds", "0,1")
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "failed: NonFiniteLoss: training loss became nan" in result.output
    stored = json.loads((final_dir(tiny_run, number) / RESULTS_FILE).read_text())
    failed = [r for r in stored["runs"] if r["error"]]
    assert [(r["mode"], r["seed"]) for r in failed] == [("ce-all", 0), ("ce-all", 1)]
    assert all(math.isnan(r["test_accuracy"]) and r["curve"] == [] for r in failed)
    summary = stored["summary"]
    assert set(summary["arms"]) == {"kd", "ce"} and set(summary["failed"]["ce-all"]) == {"0", "1"}
    assert summary["gain"]["ce"]["n"] == 2 and "ce-all" not in summary["gain"]
    again = train(tiny_run, "--trial", str(number), "--epochs", "1", "--lr", "0.01", "--seeds", "0,1")
    assert "6 model(s) already done" in again.output  # a failure is a result: not retried on every rerun


def test_paired_t_interval():
    ci = t_interval([0.01, 0.02, 0.03])  # mean 0.02, sd 0.01, t(0.975, 2) = 4.3027
    assert ci.mean == pytest.approx(0.02) and ci.high - ci.mean == pytest.approx(4.302653 * 0.01 / math.sqrt(3))
    assert ci.spans_zero  # low = -0.0048: three seeds this spread cannot show the effect
    assert not t_interval([0.020, 0.021, 0.019]).spans_zero and t_interval([0.5]).spans_zero


@pytest.mark.parametrize("argv,match", [
    (["--trial", "3", "--epochs", "0"], "at least 1"),
    (["--trial", "3", "--seeds", "a,b"], "comma list"),
    (["--trials", "3,x"], "comma list"),
    (["--trial", "3", "--lr-grid", "1,-2"], "must be positive"),
    (["--trial", "3", "--epochs", "2", "--lr-probe-epochs", "2"], "fewer than --epochs (2)"),
    (["--trial", "3", "--views", "0"], "train.views: must be an integer >= 1"),
    (["--front", "--trial", "3"], "not both"),
    ([], "name the students"),
    (["--trial", "42"], "no trial 42"),
    (["--trial", "3", "--inherit"], "inherited weights are a one-shot run's"),
])
def test_bad_train_requests_exit_2_with_one_line(tiny_run, cache_env, argv, match):
    result = train(tiny_run, *argv)
    assert result.exit_code == 2 and match in result.output and result.output.count("\n") == 1, result.output


def test_lr_probes_choose_the_lr_then_every_seed_trains_the_full_budget(tiny_run, tmp_path, cache_env):
    """--lr-probe-epochs 1: the candidates train one epoch (no test read, no weights kept), the best on
    validation is the arm's lr, and seed 0 trains again at it for the full budget, as seed 1 does."""
    run = tmp_path / "probes"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("final", "export"))
    console = Console(file=io.StringIO(), width=200)
    out = train_final(open_run(run), [4], epochs=2, seeds=[0, 1], policy=LrPolicy(grid=(0.5, 2.0), probe_epochs=1),
                      baseline=False, all_views=False, device="cpu", threads=1, console=console)[4]
    # left at the start: 2 one-epoch probes, then 2 seeds of 2 epochs
    assert "estimate: 4 model(s), 6 epochs in all" in console.file.getvalue()
    probes = [r for r in out["runs"] if r["probe"]]
    full = [r for r in out["runs"] if not r["probe"]]
    assert len(probes) == 2 and all(len(r["curve"]) == 1 and math.isnan(r["test_accuracy"]) for r in probes)
    best = max(probes, key=lambda r: r["curve"][-1])["lr"]  # (a tie would go to the lr nearest the trial's)
    assert out["summary"]["arms"]["kd"]["lr"] == best and out["summary"]["arms"]["kd"]["seeds"] == [0, 1]
    assert sorted((r["seed"], r["lr"], len(r["curve"])) for r in full) == [(0, best, 2), (1, best, 2)]
    assert all(0 <= r["test_accuracy"] <= 1 for r in full)
    assert not any(model_dir(run, 4, "kd", 0, r["lr"]).exists() for r in probes if r["lr"] != best)
    assert out["lr_policy"]["probe_epochs"] == 1 and "after 1-epoch probes" in out["lr_policy"]["text"]


def test_jobs_train_side_by_side_what_one_process_trains(tiny_run, tmp_path, cache_env):
    """--jobs 2: the lr candidates, then every arm and seed, in two processes: the same models and results."""
    out = {}
    for jobs in (1, 2):
        run = tmp_path / f"jobs{jobs}"
        shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("final", "export"))
        out[jobs] = train_final(open_run(run), [4], epochs=1, seeds=[0, 1], policy=LrPolicy(grid=(0.5, 1.0)),
                                baseline=False, device="cpu", threads=1, jobs=jobs)[4]
    key = lambda r: (r["mode"], r["seed"], r["lr"])  # noqa: E731
    one, two = sorted(out[1]["runs"], key=key), sorted(out[2]["runs"], key=key)
    assert len(one) == 6  # 2 arms x 2 lr candidates at seed 0, then the chosen lr at seed 1
    assert [(key(a), a["curve"], a["test_accuracy"]) for a in one] == [(key(b), b["curve"], b["test_accuracy"])
                                                                        for b in two]
    assert out[1]["summary"] == out[2]["summary"]
    for r in two:
        a, b = (weights(tmp_path / f"jobs{j}", 4, r["mode"], r["seed"], r["lr"]) for j in (1, 2))
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_model_stopped_part_way_continues_from_its_last_epoch(tiny_run, tmp_path, cache_env, monkeypatch):
    """An interrupted `train` keeps the model in progress (an epoch checkpoint in the trial's folder, which
    `kdsearch status` shows); the same command continues it from there, to the model and results an
    uninterrupted run gives, and removes the file."""
    import kdsearch.final.models as models
    import kdsearch.training.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "SAVE_EVERY_S", 0.0)  # every epoch (a minute apart in real use)
    args = dict(epochs=3, seeds=[0], policy=LrPolicy(grid=(1.0,)), baseline=False, all_views=False, device="cpu",
                threads=1)
    runs = {}
    for name in ("whole", "stopped"):
        runs[name] = tmp_path / name
        shutil.copytree(tiny_run, runs[name], ignore=shutil.ignore_patterns("final", "export"))
    whole = train_final(open_run(runs["whole"]), [4], **args)[4]["runs"][0]
    real_fit = models.fit

    def killed_in_epoch_3(*a, **kw):
        def on_epoch(epoch, loss, curve):
            if epoch == 3:
                raise KeyboardInterrupt
        return real_fit(*a, on_epoch=on_epoch, **kw)

    monkeypatch.setattr(models, "fit", killed_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train_final(open_run(runs["stopped"]), [4], **args)
    partial = list(final_dir(runs["stopped"], 4).glob("*.partial.pt"))
    assert [p.name for p in partial] == [f"kd-lr{whole['lr']:.4g}-seed0.partial.pt"]
    status = CliRunner().invoke(app, ["status", str(runs["stopped"])])
    assert status.exit_code == 0, status.output
    assert (f"final training of trial 4: 0 model(s) and 0 lr probe(s) recorded; in progress: kd-lr{whole['lr']:.4g}-seed0 "
            "at epoch 2/3") in " ".join(status.output.split())
    monkeypatch.setattr(models, "fit", real_fit)
    again = train_final(open_run(runs["stopped"]), [4], **args)[4]["runs"][0]
    assert again["resumed_at"] == 2 and whole["resumed_at"] == 0
    assert (again["curve"], again["test_accuracy"]) == (whole["curve"], whole["test_accuracy"])
    a, b = (weights(runs[n], 4, "kd", 0, whole["lr"]) for n in ("whole", "stopped"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not partial[0].exists()


def test_jobs_processes_share_the_cores_and_the_parent_prepares_on_all_of_them(monkeypatch):
    """--jobs N on a CPU: each process gets its share of the cores unless --threads says otherwise; the
    parent keeps them all for what it prepares before (the teacher's logit cache), since nothing else runs then."""
    from types import SimpleNamespace

    import kdsearch.final.pool as pool

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    for threads, device, want in ((None, "cpu", 4), (3, "cpu", 3), (None, "cuda", None)):
        cfg = SimpleNamespace(threads=threads, to_dict=lambda t=threads: {"threads": t, "name": "x"})
        ctx = SimpleNamespace(cfg=cfg, device=torch.device(device))
        assert pool.worker_config(ctx, 2) == {"threads": want, "name": "x"}
    # what the parent measures for them (the estimate, the layout) it measures at their thread count
    ctx = SimpleNamespace(cfg=SimpleNamespace(threads=None, to_dict=lambda: {"threads": None}), device=torch.device("cpu"))
    before = torch.get_num_threads()
    with pool.as_a_job(ctx, 2):
        assert torch.get_num_threads() == 4
    assert torch.get_num_threads() == before


def test_an_arm_whose_every_lr_candidate_diverges_is_failed_and_the_others_train_every_seed(
        tiny_run, tmp_path, cache_env, monkeypatch):
    """Ordinary training diverges at every lr of the grid: its probes are recorded as failed, it trains no
    model (there is no lr to train it at), and the other arms go on to every seed."""
    real = fit

    def diverge_without_cache(model, x, y, recipe, **kw):
        if kw.get("cache") is None:
            raise NonFiniteLoss("training loss became nan (try a lower learning rate)")
        return real(model, x, y, recipe, **kw)

    monkeypatch.setattr("kdsearch.final.models.fit", diverge_without_cache)
    run = tmp_path / "diverging"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("final", "export"))
    console = Console(file=io.StringIO(), width=200)
    out = train_final(open_run(run), [4], epochs=2, seeds=[0, 1], policy=LrPolicy(grid=(0.5, 2.0), probe_epochs=1),
                      device="cpu", threads=1, console=console)[4]
    # 3 arms x 2 probes, then 3 arms x 2 seeds, before anything is known about divergence
    assert "estimate: 12 model(s), 18 epochs in all" in console.file.getvalue()
    by_arm = {m: sorted((r["seed"], r["probe"] or 0, bool(r["error"])) for r in out["runs"] if r["mode"] == m)
              for m in ("kd", "ce", "ce-all")}
    assert by_arm["ce-all"] == [(0, 1, True), (0, 1, True)]
    assert by_arm["kd"] == by_arm["ce"] == [(0, 0, False), (0, 1, False), (0, 1, False), (1, 0, False)]
    assert set(out["summary"]["arms"]) == {"kd", "ce"} and "ce-all" not in out["summary"]["gain"]


def test_the_estimate_times_training_steps_not_the_layout_choice(tiny_run, tmp_path, cache_env, monkeypatch):
    """The one-time timing of a new student's memory layouts happens before the estimate's timed steps
    (inside them it made a 70-minute training look like ten hours)."""
    import kdsearch.search.estimate as estimate
    import kdsearch.training.memory_format as mf

    monkeypatch.setattr(mf, "_CHOSEN", {})
    timing, inside = [], []
    real_layouts, real_wall = mf.time_formats, estimate.wall_seconds
    monkeypatch.setattr(mf, "time_formats", lambda *a: inside.append(bool(timing)) or real_layouts(*a))

    def timed(fn, device):
        timing.append(1)
        try:
            return real_wall(fn, device)
        finally:
            timing.pop()

    monkeypatch.setattr(estimate, "wall_seconds", timed)
    run = tmp_path / "estimate"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("final", "export"))
    train_final(open_run(run), [4], epochs=1, seeds=[0], policy=LrPolicy(grid=(1.0,)), baseline=False,
                all_views=False, device="cpu", threads=1, console=Console(file=io.StringIO()))
    assert inside == [False]  # timed once, before the estimate's steps


def test_temperature_and_alpha_given_to_train_retrain_the_distilled_arm_only(tiny_run, tmp_path, cache_env,
                                                                             monkeypatch):
    """`train --temperature/--alpha` replaces the trial's T and alpha in the distilled arm: the arms without a
    teacher (alpha 0) keep their models, the distilled arm of the search's settings is put aside, and the
    export, the results table and RESULTS.md say which settings it trained with."""
    import kdsearch.final.models as models

    run = tmp_path / "given"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("final", "export"))
    first = train(run, "--trial", "4", "--epochs", "1", "--lr-grid", "1", "--references", "none")
    assert first.exit_code == 0, first.output
    before = json.loads((final_dir(run, 4) / RESULTS_FILE).read_text())
    searched = {k: before["setup"][k] for k in ("temperature", "alpha")}
    trained = []
    real = models.recipe_from
    monkeypatch.setattr(models, "recipe_from", lambda *a: trained.append(a[3:]) or real(*a))

    given = train(run, "--trial", "4", "--epochs", "1", "--lr-grid", "1", "--temperature", "3", "--alpha", "0.5",
                  "--references", "none")
    said = " ".join(given.output.split())
    assert given.exit_code == 0 and "2 model(s) already done" in said, given.output
    assert f"T 3, alpha 0.5 (given; the search's T {searched['temperature']:.3g}" in said
    assert f"alpha {searched['alpha']!r} -> 0.5" in said and "the arms without a teacher" in said
    assert trained == [(3.0, 0.5)]  # one model trained: the distilled one, at the given settings
    after = json.loads((final_dir(run, 4) / RESULTS_FILE).read_text())
    assert after["setup"] | searched == before["setup"]
    assert (after["setup"]["temperature"], after["setup"]["alpha"]) == (3.0, 0.5)
    kept = lambda body: [r for r in body["runs"] if r["mode"] != "kd"]  # noqa: E731
    assert kept(after) == kept(before) and len(after["runs"]) == 3
    assert after["summary"]["arms"]["kd"]["label"] == "distilled (T 3, alpha 0.5, given to train)"
    earlier, = final_dir(run, 4).glob("earlier-*")  # the search's distilled arm, kept beside
    lr = before["runs"][0]["lr"]
    assert (earlier / model_dir(run, 4, "kd", 0, lr).name / "student.safetensors").is_file()
    assert json.loads((earlier / RESULTS_FILE).read_text()) == before
    assert all(model_dir(run, 4, m, 0, lr).is_dir() for m in ("kd", "ce", "ce-all"))

    again = train(run, "--trial", "4", "--epochs", "1", "--lr-grid", "1", "--temperature", "3", "--alpha", "0.5",
                  "--references", "none")
    assert again.exit_code == 0 and "3 model(s) already done" in " ".join(again.output.split()) and len(trained) == 1

    exported = CliRunner().invoke(app, ["export", str(run), "--trial", "4", "--out", str(tmp_path / "exp")])
    assert exported.exit_code == 0, exported.output
    assert {k: json.loads((tmp_path / "exp" / "export.json").read_text())[k] for k in searched} == \
        {"temperature": 3.0, "alpha": 0.5}
    card = " ".join((tmp_path / "exp" / "MODEL_CARD.md").read_text().split())
    assert "temperature T 3, alpha 0.5 (the weight of the teacher's soft targets; given to `kdsearch train`" in card
    page = tmp_path / "RESULTS.md"
    written = CliRunner().invoke(app, ["results", str(run), "--out", str(page), "--figures", str(tmp_path / "f")])
    assert written.exit_code == 0, written.output
    assert "distilled at T 3, alpha 0.5 (given to `train`; the search's T" in page.read_text()


@pytest.mark.parametrize("argv, match", [(["--alpha", "1.5"], "--alpha must be in [0, 1], not 1.5"),
                                         (["--temperature", "0"], "--temperature must be a positive number")])
def test_a_given_temperature_or_alpha_out_of_range_is_one_line(tiny_run, cache_env, argv, match):
    result = train(tiny_run, "--trial", "3", *argv)
    assert result.exit_code == 2 and match in result.output and result.output.count("\n") == 1, result.output


def test_an_interrupted_train_says_what_it_keeps(tiny_run, tmp_path, cache_env, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("kdsearch.final.models.train_one", interrupted)
    result = train(tiny_run, "--trial", "5", "--epochs", "1", "--lr-grid", "1", "--no-baseline", "--no-all-views-baseline")
    said = " ".join(result.output.split())
    assert result.exit_code == 130 and "a model in progress continues from its last saved epoch" in said, said
    assert "trial is marked failed" not in said  # (what `run` says: train fails no trial)


def test_an_estimate_on_a_busy_cpu_says_it_may_take_longer(monkeypatch):
    """Timed beside other work, and shared with it later: the estimate says so rather than promise minutes."""
    from kdsearch.search.estimate import busy

    cores = os.cpu_count() or 1
    monkeypatch.setattr(os, "getloadavg", lambda: (cores + 1.5, 0.0, 0.0))
    assert f"load {cores + 1.5:.1f} on {cores} cores: it may take longer" in busy(torch.device("cpu"))
    assert busy(torch.device("cuda")) == ""  # (a GPU's speed does not follow the CPU's load)
    monkeypatch.setattr(os, "getloadavg", lambda: (cores - 0.5, 0.0, 0.0))
    assert busy(torch.device("cpu")) == ""


def test_fair_by_default_a_view_per_epoch_and_the_lr_chosen_on_probes(tiny_run, tmp_path, cache_env):
    """Without --views, a budget longer than the study's cached views gets one view per epoch (the distilled arm
    sees fresh views as ordinary training does); without --lr-probe-epochs, each arm's lr comes from probes of a
    fifth of the budget, so no compared model is itself the best of the candidates."""
    run = tmp_path / "fair"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("final", "export"))
    result = train(run, "--trial", "4", "--epochs", "5", "--lr-grid", "0.5,1", "--references", "none",
                   "--no-baseline")
    assert result.exit_code == 0, result.output
    stored = json.loads((final_dir(run, 4) / RESULTS_FILE).read_text())
    assert stored["setup"]["views"] == 5 and "teacher views: 5 cached per image, one per epoch" in result.output
    assert stored["lr_policy"]["probe_epochs"] == 1
    probes = [r for r in stored["runs"] if r["probe"]]
    full = [r for r in stored["runs"] if not r["probe"]]
    assert len(probes) == 4 and all(len(r["curve"]) == 1 for r in probes)  # 2 arms x 2 candidates, 1 epoch each
    assert {r["mode"] for r in full} == {"kd", "ce-all"} and all(len(r["curve"]) == 5 for r in full)
    # asked for: the candidates at the full budget, and the study's views
    again = train(run, "--trial", "4", "--epochs", "5", "--lr-grid", "0.5,1", "--references", "none",
                  "--no-baseline", "--lr-probe-epochs", "0", "--views", "2")
    assert again.exit_code == 0, again.output
    stored = json.loads((final_dir(run, 4) / RESULTS_FILE).read_text())
    assert stored["setup"]["views"] == 2 and "probe_epochs" not in stored["lr_policy"]
    assert not any(r["probe"] for r in stored["runs"])
