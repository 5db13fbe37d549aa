"""One-shot supernets: subnets share the largest's weights, extract exactly, train by the sandwich rule."""

import random

import pytest
import torch
from torch import nn

from kdsearch.errors import KDSearchError
from kdsearch.export.onnx_file import verify_onnx, write_onnx
from kdsearch.models.students.registry import build
from kdsearch.models.students.spec import StudentSpec
from kdsearch.models.students.supernet import SubnetSpace, Subnets, extract
from kdsearch.training.sandwich import sandwich, sandwich_step, train_supernet
from kdsearch.training.subnet_eval import evaluate, recalibrate
from kdsearch.training.checkpoint import Resume
from kdsearch.training.distill import Recipe, fit, kd_loss


def space(family: str) -> SubnetSpace:
    base = StudentSpec(3, 10, 16, [8, 16], family=family)
    return SubnetSpace(base, widths=((4, 6, 8), (8, 12, 16)), depths=(1, 2), kernels=(3, 5), expands=(2, 3))


def randomize_norms(model: nn.Module) -> None:
    """Batch-norm statistics and affine parameters far from their initial values (so slices matter)."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=g))


@pytest.mark.parametrize("family", ["residual", "inverted"])
def test_an_extracted_subnet_computes_what_the_supernet_computes_for_it(family):
    s = space(family)
    torch.manual_seed(0)
    supernet = build(s.largest())
    randomize_norms(supernet)
    subnets = Subnets(supernet)
    x = torch.rand(4, 3, 16, 16)
    rng = random.Random(0)
    for spec in [s.smallest(), s.largest()] + [s.sample(rng) for _ in range(6)]:
        student = extract(supernet, spec)
        with torch.no_grad():
            inside = subnets.forward(spec, x, train=False)
            alone = student.eval()(x)
        assert torch.allclose(inside, alone, atol=1e-5), spec.summary()
        # and after the same recalibration on the same images
        calib = (torch.rand(32, 3, 16, 16) * 255).to(torch.uint8)
        recalibrate(student, calib)
        twin = recalibrate(extract(supernet, spec), calib)
        assert all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), twin.state_dict().values()))
    assert s.largest().summary().startswith("res[8,16]x[2,2] k[5,5]" if family == "residual" else "inv[8,16]x[2,2] e[3,3]")


def test_recalibration_gives_a_subnets_own_batch_statistics():
    s = space("residual")
    student = extract(build(s.largest()), s.smallest())
    randomize_norms(student)
    calib = (torch.rand(64, 3, 16, 16) * 255).to(torch.uint8)
    recalibrate(student, calib, batch_size=16)
    stem_conv, stem_bn = student.stem[0], student.stem[1]
    with torch.no_grad():
        features = stem_conv(student.normalize(calib.float() / 255))
    assert torch.allclose(stem_bn.running_mean, features.mean(dim=(0, 2, 3)), atol=1e-5)
    assert not student.training


@pytest.mark.parametrize("family", ["residual", "inverted"])
def test_a_subnet_scores_the_same_in_either_memory_layout(family):
    """The layout only changes the speed (a one-shot study scores each family in the faster one)."""
    s = space(family)
    supernet = build(s.largest())
    randomize_norms(supernet)
    g = torch.Generator().manual_seed(0)
    calib = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8, generator=g)
    x = torch.randint(0, 256, (48, 3, 16, 16), dtype=torch.uint8, generator=g)
    spec = s.sample(random.Random(2))
    acc, plain = evaluate(supernet, spec, calib, x, torch.zeros(48, dtype=torch.long))
    acc_cl, last = evaluate(supernet, spec, calib, x, torch.zeros(48, dtype=torch.long), torch.channels_last)
    assert last.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        a, b = plain(x.float() / 255), last((x.float() / 255).contiguous(memory_format=torch.channels_last))
    assert torch.allclose(a, b, atol=1e-5) and acc == acc_cl


@pytest.mark.parametrize("family", ["residual", "inverted"])
def test_every_extracted_spec_builds_exports_and_trains(family, tmp_path):
    s = space(family)
    supernet = build(s.largest())
    rng = random.Random(3)
    for k, spec in enumerate([s.smallest()] + [s.sample(rng) for _ in range(2)]):
        assert s.contains(spec) and StudentSpec.from_json(spec.to_json()) == spec
        student = extract(supernet, spec).eval()
        write_onnx(student, spec, tmp_path / f"{k}.onnx")
        assert verify_onnx(student, spec, tmp_path / f"{k}.onnx") < 1e-4
    x, y = (torch.rand(64, 3, 16, 16) * 255).to(torch.uint8), torch.randint(0, 10, (64,))
    curve = fit(extract(supernet, spec), x, y, Recipe(epochs=1, lr=0.05, batch_size=16, optimizer="sgd"), pad=2,
                flip=True, seed=0, x_val=x, y_val=y)
    assert len(curve) == 1


def test_only_residual_and_inverted_have_supernets_and_foreign_specs_are_refused():
    with pytest.raises(KDSearchError, match="plain family has no supernet"):
        SubnetSpace(StudentSpec(3, 10, 16, [8]), widths=((8,),))
    s = space("residual")
    with pytest.raises(KDSearchError, match="not a subnet"):
        extract(build(s.largest()), StudentSpec(3, 10, 16, [32, 16], family="residual"))


def test_the_sandwich_step_adds_the_largests_and_the_in_place_distilled_gradients():
    s = space("inverted")
    torch.manual_seed(0)
    supernet = build(s.largest())
    subnets = Subnets(supernet)
    x, y = torch.rand(8, 3, 16, 16), torch.randint(0, 10, (8,))
    teacher = torch.randn(8, 10)
    recipe = Recipe(epochs=1, lr=0.1, batch_size=8, temperature=4.0, alpha=0.9, label_smoothing=0.1)
    big, small = s.largest(), s.smallest()
    sandwich_step(subnets, [big, small], x, y, teacher, recipe)
    got = {n: p.grad.clone() for n, p in supernet.named_parameters()}
    # by hand: the largest against the teacher, the smallest against the largest's predictions
    supernet.zero_grad(set_to_none=True)
    logits = subnets.forward(big, x)
    kd_loss(logits, teacher, y, 4.0, 0.9, 0.1).backward()
    first = {n: p.grad.clone() for n, p in supernet.named_parameters()}
    supernet.zero_grad(set_to_none=True)
    kd_loss(subnets.forward(small, x), logits.detach(), y, 1.0, 1.0).backward()
    second = {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in supernet.named_parameters()}
    for name in got:
        assert torch.allclose(got[name], first[name] + second[name], atol=1e-6), name
    # the smallest reaches only its slice: the stem's last channels get the largest's gradient alone
    w = small.channels[0]
    assert torch.equal(second["stem.0.weight"][w:], torch.zeros_like(second["stem.0.weight"][w:]))
    assert sandwich(s, 5, 0, 2)[:2] == [big, small] and sandwich(s, 5, 0, 2) == sandwich(s, 5, 0, 2)


class Stop(Exception):
    pass


@pytest.mark.parametrize("family", ["residual", "inverted"])
def test_the_budget_bounds_the_thinnest_subnet_at_full_width_not_the_supernet(family):
    """A 20,000-params budget on digits-sized data with the default space (four stages, widths up to 64 x2 per
    stage): the thinnest subnet at full width fits it, just (10% more width would not), while the supernet and
    its deepest subnets are over it (a trial rejects and redraws those) and every stage keeps some width."""
    from types import SimpleNamespace

    from kdsearch.config import StudyConfig
    from kdsearch.measure.costs import count_params
    from kdsearch.search.evaluation.oneshot import subnet_space

    cfg = StudyConfig.model_validate({"max_params": 20000})
    data = SimpleNamespace(in_channels=1, num_classes=10, image_size=8, mean=(0.5,), std=(0.5,))
    s = subnet_space(cfg, data, family)
    n = s.stages
    assert n == 4 and s.depths == (1, 2) and s.kernels == (3, 5)

    def params(widths, depth, kernel, expand):
        return count_params(build(s.spec(widths, [depth] * n, [kernel] * n, [expand] * n)))

    full = [max(w) for w in s.widths]
    assert params(full, 1, 3, min(s.expands)) <= 20000 < params([round(w * 1.1) + 1 for w in full], 1, 3, min(s.expands))
    assert count_params(build(s.largest())) > 20000
    assert min(full) >= 4  # (fitting the largest itself left the first stage 2 channels wide)


def test_a_resumed_supernet_training_continues_bit_exactly(tmp_path):
    s = space("residual")
    x, y = (torch.rand(96, 3, 16, 16) * 255).to(torch.uint8), torch.randint(0, 10, (96,))
    recipe = Recipe(epochs=3, lr=0.05, batch_size=32, optimizer="sgd", schedule="linear", warmup=0.2)
    whole = train_supernet(s, x, y, recipe, pad=2, flip=True, seed=0, n_random=1)

    def stop_after_two(epoch, loss, seconds):
        if epoch == 2:
            raise Stop

    resume = Resume(tmp_path / "supernet.pt", {"space": "test"}, every_s=0.0)
    with pytest.raises(Stop):
        train_supernet(s, x, y, recipe, pad=2, flip=True, seed=0, n_random=1, resume=resume, on_epoch=stop_after_two)
    resume = Resume(tmp_path / "supernet.pt", {"space": "test"}, every_s=0.0)
    again = train_supernet(s, x, y, recipe, pad=2, flip=True, seed=0, n_random=1, resume=resume)
    assert resume.resumed_at == 1  # stopped before epoch 2 was saved: it continues from epoch 1's checkpoint
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), again.state_dict().values()))
    accuracy, student = evaluate(again, s.smallest(), x[:32], x, y)
    assert 0 <= accuracy <= 1 and student.stem[0].out_channels == 4


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")  # the fidelity table on tiny data: tied accuracies
def test_a_oneshot_study_evaluates_subnets_and_exports_one(tmp_path, monkeypatch, capsys, untimed):
    import json as json_
    import shutil

    from typer.testing import CliRunner

    from kdsearch.cli import app
    from kdsearch.search.evaluation.oneshot import supernet_path
    from kdsearch.search.study import n_finished
    from kdsearch.runs.run import open_run
    from kdsearch.runs.trial_attrs import FIRST_PASS, ONESHOT as ONESHOT_ATTR, REPEAT_OF, rejected, repeated

    argv = ["run", "--dataset", "digits", "--teacher", "resnet20", "--no-pretrained", "--teacher-epochs", "1",
            "--epochs", "1", "--device", "cpu", "--run-dir", str(tmp_path / "run"), "--strategy", "oneshot",
            "--trials", "8", "--objectives", "accuracy,params,macs", "--max-params", "20000", "--views", "2",
            "--subset", "400"]
    # two supervised workers: one trains the supernets (the other waits for it, then loads them), both evaluate
    result = CliRunner().invoke(app, argv + ["--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "the plain family has no supernet" in result.output and "training the residual supernet" in result.output
    assert "waiting for another worker to finish training the" in result.output
    assert result.output.count("training the residual supernet (") == 1  # trained once
    study = open_run(tmp_path / "run").study
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 8 and all(ONESHOT_ATTR in t.user_attrs and t.user_attrs["params"] <= 20000 for t in done)
    assert {t.user_attrs["spec"]["family"] for t in done} <= {"residual", "inverted"}
    assert all(t.user_attrs["alpha"] == 0.9 and "alpha" not in t.params for t in done)  # fixed, not sampled
    assert supernet_path(tmp_path / "run", "residual").is_file() and supernet_path(tmp_path / "run", "inverted").is_file()
    # more subnets in this process: the supernets load, nothing is trained again
    # ... with a subnet proposed again (enqueued: a sampler's repeat) and screening on a first pass of 40 of
    # the 144 validation images, with no margin
    first_run = len(open_run(tmp_path / "run").study.trials)
    open_run(tmp_path / "run").study.enqueue_trial(done[0].params)
    monkeypatch.setattr("kdsearch.search.evaluation.oneshot.FIRST_PASS_IMAGES", 40)
    monkeypatch.setattr("kdsearch.search.evaluation.oneshot.SCREEN_MARGIN", 0.0)
    more = CliRunner().invoke(app, [("12" if a == "8" else a) for a in argv] + ["--in-process", "--screen"])
    assert more.exit_code == 0 and "training the" not in more.output, more.output
    assert "1 subnet(s) proposed again were not scored again" in more.output
    trials = open_run(tmp_path / "run").study.trials
    again = [t for t in trials if REPEAT_OF in t.user_attrs]
    assert len(again) == 1 and again[0].user_attrs[REPEAT_OF] == done[0].number and again[0].state.name == "PRUNED"
    assert n_finished(open_run(tmp_path / "run").study) == 12  # the repeat does not count
    later = [t for t in trials[first_run:] if t.state.name in ("COMPLETE", "PRUNED") and not (rejected(t) or repeated(t))]
    assert later and all(t.user_attrs[FIRST_PASS]["images"] == 40 for t in later)
    for t in later:  # stopped after the first pass only where a scored subnet no larger in params and MACs beat it
        first = t.user_attrs[FIRST_PASS]["accuracy"]
        beaten = any(o.values[0] > first and o.values[1] <= t.user_attrs["params"] and o.values[2] <= t.user_attrs["macs"]
                     for o in trials if o.state.name == "COMPLETE" and o.number < t.number)
        assert (t.state.name == "PRUNED") == beaten, (t.number, first)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert all(ONESHOT_ATTR in t.user_attrs for t in done)
    # the benchmark's replay of screening, on the subnets this run kept, stops none of them
    from benchmarks.subnet_eval import replay

    if any(FIRST_PASS in t.user_attrs for t in done):  # (screening with no margin may have stopped every one)
        row = replay(str(tmp_path / "run"))
        assert row["subnets"] == sum(FIRST_PASS in t.user_attrs for t in done) and row["stopped"] == 0
    else:
        with pytest.raises(SystemExit, match="no scored subnet with a recorded first pass"):
            replay(str(tmp_path / "run"))
    # the fidelity benchmark's picks from a band: its least and most accurate subnets and between
    from benchmarks.fidelity import oneshot_students

    inside = sorted(t.values[0] for t in done if 10000 < t.user_attrs["params"] <= 20000)
    picked = [proxy["val_accuracy"] for *_, proxy in oneshot_students(str(tmp_path / "run"), [20000], 3)]
    assert picked == sorted(picked) and (not inside or (picked[0], picked[-1]) == (inside[0], inside[-1]))
    exported = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "--knee", "--out", str(tmp_path / "exp")])
    assert exported.exit_code == 0, exported.output
    info = json_.loads((tmp_path / "exp" / "export.json").read_text())
    assert (tmp_path / "exp" / "student.onnx").is_file() and info["trial"] in {t.number for t in done}
    # fine-tuning the inherited weights: at a vanishing lr the trained student keeps them (a fresh init would not)
    from kdsearch.models.students.io import load_student
    from kdsearch.runs.layout import arm_dir, final_dir, trial_dir

    n = done[0].number
    saved, _ = load_student(trial_dir(tmp_path / "run", n))
    shutil.rmtree(trial_dir(tmp_path / "run", n))  # a committed run keeps its supernets, not its subnets' weights
    tuned = CliRunner().invoke(app, ["train", str(tmp_path / "run"), "--trial", str(n), "--inherit", "--epochs", "1",
                                     "--lr", "1e-9", "--no-baseline", "--no-all-views-baseline"])
    assert tuned.exit_code == 0, tuned.output
    assert "extracted again from the" in tuned.output  # the same subnet: supernet, spec and calibration images
    restored = load_student(trial_dir(tmp_path / "run", n))[0].state_dict()
    assert all(torch.allclose(v.float(), restored[k].float(), atol=1e-5) for k, v in saved.state_dict().items())
    folder = final_dir(tmp_path / "run", n) / "inherited"
    assert json_.loads((folder / "results.json").read_text())["setup"]["init"] == "inherited"
    inherited, _ = load_student(trial_dir(tmp_path / "run", n))
    kept, _ = load_student(arm_dir(folder, "kd", 0, 1e-9))
    weights = {k: v for k, v in inherited.state_dict().items() if k.endswith("weight")}
    assert weights and all(torch.allclose(v, kept.state_dict()[k], atol=1e-6) for k, v in weights.items())
    assert not (final_dir(tmp_path / "run", n) / "references").exists()  # nothing to inherit: not trained beside it
    written = CliRunner().invoke(app, ["results", str(tmp_path / "run"), "--out", str(tmp_path / "RESULTS.md")])
    assert written.exit_code == 0, written.output
    document = (tmp_path / "RESULTS.md").read_text()
    assert "inherit from supernets trained 1 epoch(s))" in document
    assert "### Inherited weights fine-tuned" in document and f"\n| {n} | " in document
    # its search cost: every scored subnet and repeat counted once; the supernets' time from the run's log
    from benchmarks.run_times import search_cost

    cost = search_cost(tmp_path / "run")
    scored = [t for t in trials if ONESHOT_ATTR in t.user_attrs and not (rejected(t) or repeated(t))]  # screened too
    assert cost["strategy"] == "oneshot" and cost["subnets_scored"] == len(scored) and cost["repeats"] == len(again)
    assert cost["supernet_thread_hours"] is not None and cost["thread_hours"] >= cost["supernet_thread_hours"] > 0
    # the fidelity benchmark on this run (its own study): each picked subnet fine-tuned from the weights it
    # inherited (which score as the run scored it), from scratch for as many epochs, and at the final budget
    from benchmarks.__main__ import main as bench
    from benchmarks.harness import load_rows

    out = tmp_path / "fid"
    for folder in ("teachers", "logits"):  # the run's prepared teacher and logits: the supernets' key needs them
        shutil.copytree(tmp_path / "run" / folder, out / "run" / folder)
    bench(["fidelity", "--oneshot", str(tmp_path / "run"), "--bands", "20000", "10000", "5000", "2500",
           "1250", "--per-band", "1", "--final-epochs", "2",
           "--finetune", "1", "--proxies", "100000x1", "--out", str(out)])
    got = load_rows(out / "results.jsonl")
    accuracy = {t.number: t.values[0] for t in done}
    tuned = [r for r in got if r["budget"] == "inherited+1"]
    assert tuned and {r["student"] for r in tuned} == {r["student"] for r in got if r["budget"] == "inherited"}
    for r in tuned:  # the supernet reloaded and recalibrated: the subnet as the run scored it (one image of layout rounding)
        assert abs(r["inherited_val_accuracy"] - accuracy[int(r["student"].split("-t")[1])]) <= 1 / 144 + 1e-9
    budgets = [r["budget"] for r in got if r["budget"] != "inherited"]
    final = budgets[-1]
    assert final.endswith("x2") and budgets.index(final) == len(budgets) - len(tuned)  # the final budget last
    capsys.readouterr()
    bench(["fidelity", "--oneshot", str(tmp_path / "run"), "--final-epochs", "2", "--out", str(out), "--markdown"])
    table = capsys.readouterr().out
    assert f"| inherited+1 | {final.replace('x2', 'x1')} | {len(tuned)} |" in table
    assert f"| inherited+1 | {final} | {len(tuned)} |" in table


def test_the_first_pass_is_a_stratified_part_of_validation_and_the_two_passes_score_each_image_once():
    from kdsearch.search.evaluation.oneshot import FIRST_PASS_IMAGES, split_validation

    y = torch.arange(5000) % 10
    x = torch.arange(5000).view(-1, 1, 1, 1).expand(-1, 1, 2, 2)  # each image its index
    val = split_validation(x, y, seed=0)
    assert len(val.y_first) == FIRST_PASS_IMAGES and torch.bincount(val.y_first).tolist() == [100] * 10
    seen = torch.cat([val.x_first[:, 0, 0, 0], val.x_rest[:, 0, 0, 0]]).sort().values
    assert torch.equal(seen, torch.arange(5000))  # every image once
    assert torch.equal(val.y_rest, y[val.x_rest[:, 0, 0, 0]])  # labels stay with their images
    small = split_validation(x[:1500], y[:1500], seed=0)  # under twice the first pass: one pass
    assert len(small.y_first) == 1500 and len(small.y_rest) == 0


def test_a_repeat_is_found_among_scored_subnets_and_screening_needs_a_subnet_no_larger_in_any_cost():
    import optuna

    from kdsearch.runs.trial_attrs import PRUNED_AT
    from kdsearch.search.evaluation.oneshot import dominating, scored_before

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    dist = {"w": optuna.distributions.CategoricalDistribution([4, 8, 16])}
    study.add_trial(optuna.trial.create_trial(params={"w": 8}, distributions=dist, values=[0.70, 5000, 9e6]))
    study.add_trial(optuna.trial.create_trial(params={"w": 16}, distributions=dist, state=optuna.trial.TrialState.PRUNED,
                                              user_attrs={PRUNED_AT: 0}))  # rejected over budget: not scored

    def proposing(w: int) -> optuna.Trial:
        study.enqueue_trial({"w": w})
        trial = study.ask()
        trial.suggest_categorical("w", [4, 8, 16])
        return trial

    assert scored_before(proposing(8)) == 0
    assert scored_before(proposing(4)) is None
    over = proposing(16)
    assert scored_before(over) is None  # the earlier one was rejected over budget, not scored
    objectives = ["accuracy", "params", "macs"]
    scored = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert dominating(scored, objectives, {"params": 5000, "macs": 9e6}, 0.69) == 0
    assert dominating(scored, objectives, {"params": 5000, "macs": 9e6}, 0.70) is None  # not more accurate
    assert dominating(scored, objectives, {"params": 4999, "macs": 9e6}, 0.50) is None  # trial 0 is larger
    assert dominating(scored, objectives, {"params": 9000, "macs": 8e6}, 0.50) is None  # more MACs


def test_every_strategy_a_study_file_names_is_an_evaluation_of_the_search():
    """The seam: config.schema checks a study file's strategy against its names, the search plugs each in."""
    from kdsearch.config.schema import STRATEGIES as NAMES
    from kdsearch.search.evaluation import DRY_RUN, STRATEGIES, TRIALS

    assert set(NAMES) == set(STRATEGIES) == set(TRIALS) == set(DRY_RUN)


@pytest.mark.slow
def test_a_oneshot_promotion_fine_tunes_the_subnet_from_its_inherited_weights(tmp_path, monkeypatch, untimed):
    from typer.testing import CliRunner

    from kdsearch.cli import app
    from kdsearch.models.students.io import load_student
    from kdsearch.runs.layout import WEIGHTS_FILE, trial_dir
    from kdsearch.runs.run import open_run
    from kdsearch.runs.trial_attrs import INHERITED, rung_of
    from kdsearch.search.evaluation import pertrial
    from kdsearch.search.promote import to_promote

    run_dir, study_file = tmp_path / "run", tmp_path / "study.toml"
    study_file.write_text('[space]\nfamily = ["residual"]\nstages = [1, 2]\n')  # one supernet, a small one
    argv = ["run", str(study_file), "--dataset", "digits", "--teacher", "resnet20", "--no-pretrained", "--teacher-epochs",
            "1", "--epochs", "1", "--device", "cpu", "--run-dir", str(run_dir), "--strategy", "oneshot", "--trials", "4",
            "--objectives", "accuracy,params,macs", "--max-params", "8000", "--views", "2", "--subset", "400",
            "--in-process"]
    assert (result := CliRunner().invoke(app, argv)).exit_code == 0, result.output
    rung = {"epochs": 1, "images": 0}
    chosen = to_promote(open_run(run_dir).study, 1, rung)
    assert chosen
    (trial_dir(run_dir, chosen[0].number) / WEIGHTS_FILE).unlink()  # as a committed run has it: supernets only
    starts = []
    real_fit = pertrial.fit

    def fit(model, *args, **kwargs):  # the weights each rung trial's training starts from
        starts.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(pertrial, "fit", fit)
    monkeypatch.setattr("sys.argv", ["kdsearch", *argv, "--promote", "1", "--promote-epochs", "1"])  # as typed
    result = CliRunner().invoke(app, argv + ["--promote", "1", "--promote-epochs", "1"])
    assert result.exit_code == 0, result.output
    assert "from their inherited weights" in " ".join(result.output.split())
    assert f"trial {chosen[0].number}: its subnet extracted again" in " ".join(result.output.split())
    rungs = [t for t in open_run(run_dir).study.trials if rung_of(t)]
    assert len(rungs) == len(chosen) == len(starts)
    for t, start in zip(rungs, starts):
        assert rung_of(t)[INHERITED] is True and t.state.name == "COMPLETE"
        inherited = load_student(trial_dir(run_dir, rung_of(t)["from"]))[0].state_dict()
        assert all(torch.equal(start[k], inherited[k]) for k in inherited)  # fine-tuned, not from scratch ...
        tuned = load_student(trial_dir(run_dir, t.number))[0].state_dict()
        assert not all(torch.equal(tuned[k], inherited[k]) for k in inherited)  # ... and trained
    from kdsearch.final.students import inherited_weights

    # `train --inherit` on a promoted subnet starts from what the subnet it promotes inherited
    number = rungs[0].number
    assert inherited_weights(open_run(run_dir), [number])[number] == trial_dir(run_dir, rung_of(rungs[0])["from"])
    markdown = CliRunner().invoke(app, ["results", str(run_dir), "--out", str(tmp_path / "R.md")])
    assert markdown.exit_code == 0, markdown.output
    document = (tmp_path / "R.md").read_text()
    assert "fine-tuned from the weights they inherit" in document
    assert "--promote 1 --promote-epochs 1" in document  # how it was made: the command that promoted, too
