"""The training recipe: optimizers and their parameter groups, schedules, label smoothing inside the KD
loss, the weight average, zero-initialized residual blocks, and the settings that choose them."""

import json

import optuna
import pytest
import torch

from kdsearch.config import LEGACY_TRAIN, StudyConfig, TrainConfig, config_from_dict, load_config
from kdsearch.errors import KDSearchError
from kdsearch.measure.costs import count_params
from kdsearch.models.students.zero_init import zero_init_last_bn
from kdsearch.models.students.inverted import InvertedResidual
from kdsearch.models.students.registry import build
from kdsearch.models.students.residual import BasicBlock
from kdsearch.models.students.space import sample_spec
from kdsearch.models.students.spec import StudentSpec
from kdsearch.training.distill import (DEFAULT_WEIGHT_DECAY, Recipe, accuracy, fit, kd_loss, lr_factor,
                                       make_optimizer, recipe_from)


def _res(**kw):
    return build(StudentSpec(in_channels=3, num_classes=10, image_size=32, channels=[16, 32], family="residual", **kw))


@pytest.mark.parametrize("kind,cls", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
def test_optimizer_decays_conv_and_linear_weights_only(kind, cls):
    model = _res()
    opt, _ = make_optimizer(model, kind, 0.1, None, 100, "linear", 0.2)
    assert isinstance(opt, cls)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == DEFAULT_WEIGHT_DECAY[kind] and no_decay["weight_decay"] == 0.0
    bn_and_bias = {id(p) for m in model.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Linear))
                   for name, p in m.named_parameters() if name == "bias" or isinstance(m, torch.nn.BatchNorm2d)}
    assert {id(p) for p in no_decay["params"]} == bn_and_bias
    assert all(p.ndim > 1 for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    if kind == "sgd":
        assert decay["nesterov"] and decay["momentum"] == 0.9
    opt, _ = make_optimizer(model, kind, 0.1, 1e-3, 100, "linear", 0.2)
    assert opt.param_groups[0]["weight_decay"] == 1e-3  # an explicit value wins


def test_adamw_default_decay_shrinks_weights_noticeably_unlike_the_old_5e_4():
    # decoupled decay multiplies by lr: with lr 5e-3 the old 5e-4 shrank a weight by 2.5e-6 per step
    for wd, least in ((None, 1e-4), (5e-4, None)):
        p = torch.nn.Parameter(torch.ones(4, 4))
        opt, _ = make_optimizer(torch.nn.ModuleList([torch.nn.Linear(4, 4)]), "adamw", 5e-3, wd, 10, "linear", 0.0)
        opt = torch.optim.AdamW([{"params": [p], "weight_decay": opt.param_groups[0]["weight_decay"]}], lr=5e-3)
        p.grad = torch.zeros_like(p)
        opt.step()
        shrink = 1 - p.detach()[0, 0].item()
        assert (shrink > least) if least else (shrink < 1e-5)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedules_warm_up_to_the_peak_then_decay_to_zero(schedule):
    total, warmup = 100, 0.2
    f = lr_factor(schedule, warmup, total)
    values = [f(s) for s in range(total)]
    assert values[0] == pytest.approx(1 / 20) and values[19] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(values[:20], values[1:20]))  # rising
    assert all(a >= b for a, b in zip(values[20:], values[21:]))  # falling
    assert values[-1] < 0.05 and f(total) == pytest.approx(0.0)
    if schedule == "linear":
        assert f(60) == pytest.approx(0.5)
    model = torch.nn.Linear(2, 2)
    opt, sched = make_optimizer(model, "sgd", 0.4, 0.0, total, schedule, warmup)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(lrs) == pytest.approx(0.4) and lrs[0] == pytest.approx(0.4 / 20)


def test_label_smoothing_applies_to_the_ce_term_only():
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    smooth_ce = torch.nn.functional.cross_entropy(s, y, label_smoothing=0.1)
    kd_only = kd_loss(s, t, y, 4.0, 1.0)
    assert kd_loss(s, t, y, 4.0, 1.0, label_smoothing=0.1).item() == pytest.approx(kd_only.item())
    mixed = kd_loss(s, t, y, 4.0, 0.3, label_smoothing=0.1)
    assert mixed.item() == pytest.approx((0.3 * kd_only + 0.7 * smooth_ce).item(), rel=1e-6)
    assert mixed.item() != pytest.approx(kd_loss(s, t, y, 4.0, 0.3).item(), rel=1e-4)


def _toy(n=96):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (n,), generator=g)
    x = (y[:, None, None, None] * 120 + torch.randint(0, 120, (n, 3, 8, 8), generator=g)).to(torch.uint8)
    return x, y


def test_the_weight_average_is_evaluated_and_kept():
    x, y = _toy()
    spec = StudentSpec(in_channels=3, num_classes=2, image_size=8, channels=[8, 8], family="residual")
    runs = {}
    for ema in (0.0, 0.9):
        torch.manual_seed(0)
        model = build(spec)
        recipe = Recipe(epochs=3, lr=0.05, batch_size=16, optimizer="sgd", schedule="linear", warmup=0.2, ema=ema)
        curve = fit(model, x, y, recipe, pad=1, flip=False, seed=0, x_val=x, y_val=y)
        assert accuracy(model, x, y) == pytest.approx(curve[-1])  # the kept model is the one evaluated
        runs[ema] = {k: v.clone() for k, v in model.state_dict().items()}
    plain, averaged = runs[0.0], runs[0.9]
    assert not torch.equal(plain["stem.0.weight"], averaged["stem.0.weight"])
    # the batch-norm statistics are averaged too (use_buffers), not left at the last step's
    assert not torch.equal(plain["stem.1.running_mean"], averaged["stem.1.running_mean"])


def test_the_weight_average_warms_up_and_then_decays_slowly():
    """The first update copies the weights; the n-th moves the average by 1 - min(decay, (1 + n) / (10 + n))
    toward them (timm's warm-up). An inverted decay, or none, gives other numbers at every step."""
    from kdsearch.training.distill import warmed_decay, weight_average

    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = weight_average(model, 0.9)
    ema.update_parameters(model)  # the first update: a copy of the (zero) weights
    with torch.no_grad():
        model.weight.fill_(1.0)
    expected = 0.0
    for n in range(1, 40):
        ema.update_parameters(model)
        d = min(0.9, (1 + n) / (10 + n))
        expected = d * expected + (1 - d)
        assert ema.module.weight.item() == pytest.approx(expected, abs=1e-6), n
    assert warmed_decay(0.9, 1) == pytest.approx(2 / 11) and warmed_decay(0.9, 1000) == 0.9
    # after one update the average is mostly the new weights (9/11), not mostly the start (0.1 without warm-up)
    first = weight_average(torch.nn.Linear(1, 1, bias=False), 0.999)
    start = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(start.weight)
    first.update_parameters(start)
    with torch.no_grad():
        start.weight.fill_(1.0)
    first.update_parameters(start)
    assert first.module.weight.item() == pytest.approx(9 / 11)


def test_residual_blocks_start_as_identities_with_zero_init():
    torch.manual_seed(0)
    model = _res(convs_per_stage=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    zero_init_last_bn(model)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 4 and all(torch.count_nonzero(b.conv2[1].weight) == 0 for b in blocks)
    model.eval()
    x = torch.relu(torch.randn(2, 16, 8, 8))
    identity_block = blocks[1]  # stride 1, same width: the block is relu(x) = x for x >= 0
    assert torch.allclose(identity_block(x), x)
    changed = {k for k in before if not torch.equal(before[k], model.state_dict()[k])}
    assert changed == {f"stages.{i}.{j}.conv2.1.weight" for i in range(2) for j in range(2)}
    inv = build(StudentSpec(in_channels=3, num_classes=10, image_size=32, channels=[16, 16], convs_per_stage=2,
                            family="inverted", expand_ratio=4))
    zero_init_last_bn(inv)
    for m in inv.modules():
        if isinstance(m, InvertedResidual):
            assert (torch.count_nonzero(m.project[1].weight) == 0) == m.residual


def test_fit_applies_zero_init_only_when_asked():
    x, y = _toy()
    spec = StudentSpec(in_channels=3, num_classes=2, image_size=8, channels=[8], convs_per_stage=2, family="residual")
    for zero in (False, True):
        torch.manual_seed(0)
        model = build(spec)
        seen = []
        fit(model, x, y, Recipe(epochs=1, lr=0.0, batch_size=16, optimizer="sgd", schedule="linear",
                                zero_init_residual=zero), pad=0, flip=False, seed=0,
            on_epoch=lambda *a, m=model: seen.append(m.stages[0][0].conv2[1].weight.abs().sum().item()))
        assert (seen[0] == 0.0) == zero  # lr 0: the weights stay as initialized


def test_train_settings_reach_the_recipe_and_are_validated(tmp_path):
    cfg = load_config(overrides={"train.optimizer": "adamw", "train.ema": 0.99, "train.schedule": "cosine"})
    r = recipe_from(cfg.train, epochs=3, lr=0.01, temperature=4.0, alpha=0.5)
    assert (r.optimizer, r.schedule, r.ema, r.temperature, r.alpha) == ("adamw", "cosine", 0.99, 4.0, 0.5)
    assert r.label_smoothing == TrainConfig().label_smoothing and r.zero_init_residual is TrainConfig().zero_init_residual
    for key, value, match in (("train.optimizer", "adam", "train.optimizer: 'adam' is not one of sgd, adamw"),
                              ("train.schedule", "step", "train.schedule"), ("train.ema", 1.0, "train.ema"),
                              ("train.warmup", -0.1, "train.warmup")):
        with pytest.raises(KDSearchError, match=match):
            load_config(overrides={key: value})


def test_the_lr_range_follows_the_optimizer_unless_given(tmp_path):
    assert load_config().space["lr"] == [0.05, 0.5]
    assert load_config(overrides={"train.optimizer": "adamw"}).space["lr"] == [1e-3, 1e-2]
    f = tmp_path / "s.toml"
    f.write_text('[train]\noptimizer = "adamw"\n[space]\nlr = [0.002, 0.004]\n')
    assert load_config(f).space["lr"] == [0.002, 0.004]
    assert load_config(overrides={"space.lr": [0.1, 0.2]}).space["lr"] == [0.1, 0.2]
    # one rule in one place: a StudyConfig built in Python gets the same ranges as a study file (issue 36)
    assert StudyConfig().space["lr"] == [0.05, 0.5]
    assert StudyConfig(train={"optimizer": "adamw"}).space["lr"] == [1e-3, 1e-2]
    assert StudyConfig(train=TrainConfig(optimizer="adamw")).space["lr"] == [1e-3, 1e-2]
    assert StudyConfig(space={"lr": [0.2, 0.3]}).space == {"lr": [0.2, 0.3]}  # a space given whole is kept as is
    assert StudyConfig(space={"alpha": 0.5}).space["lr"] == [0.05, 0.5]


def test_a_stored_run_without_the_settings_keeps_the_recipe_it_ran_with():
    stored = StudyConfig().to_dict()
    for key in ("optimizer", "schedule", "warmup", "ema", "zero_init_residual"):
        del stored["train"][key]
    cfg = config_from_dict(stored)
    for key in ("optimizer", "schedule", "warmup", "ema", "zero_init_residual"):
        assert getattr(cfg.train, key) == LEGACY_TRAIN[key]


def test_resume_guard_treats_the_recipe_as_part_of_a_trials_meaning(tmp_path):
    from kdsearch.search.fingerprint import FINGERPRINT_ATTR, check_resume, fingerprint

    cfg = load_config(overrides={"run_dir": str(tmp_path)})
    study = optuna.create_study(directions=["maximize"])
    study.set_user_attr(FINGERPRINT_ATTR, fingerprint(cfg))
    check_resume(study, cfg)
    with pytest.raises(KDSearchError, match='train.optimizer "sgd" \\(now "adamw"\\)'):
        check_resume(study, load_config(overrides={"train.optimizer": "adamw", "space.lr": cfg.space["lr"]}))
    # a study stored before the settings existed ran with AdamW and one-cycle: today's defaults are refused
    old = study.user_attrs[FINGERPRINT_ATTR]
    old = {k: v for k, v in old.items() if k not in ("train.optimizer", "train.schedule", "train.warmup",
                                                     "train.ema", "train.zero_init_residual")}
    legacy = optuna.create_study(directions=["maximize"])
    legacy.set_user_attr(FINGERPRINT_ATTR, json.loads(json.dumps(old)))
    with pytest.raises(KDSearchError, match='train.optimizer "adamw" \\(now "sgd"\\)'):
        check_resume(legacy, cfg)


def _fixed(params):
    return optuna.trial.FixedTrial(params)


def test_resnet8_and_a_mobilenetv2_style_net_are_points_of_the_default_space():
    space = StudyConfig().space
    common = {"convs_per_stage": 1, "kernel_size": 3, "fc_layers": 0, "temperature": 4.0, "alpha": 0.5,
              "lr": 0.1, "stages": 3, "width": 16, "growth": 2.0}
    res8 = sample_spec(_fixed({**common, "family": "residual"}), space, 3, 10, 32, [0.5] * 3, [0.25] * 3)
    assert res8.summary() == "res[16,32,64]x1 k3 | fc[]"
    assert count_params(build(res8)) == 78_042  # MLPerf Tiny's ResNet-8
    mbv2 = sample_spec(_fixed({**common, "family": "inverted", "convs_per_stage": 2, "expand_ratio": 6,
                               "growth": 1.5}), space, 3, 10, 32, [0.5] * 3, [0.25] * 3)
    assert mbv2.summary() == "inv[16,24,36]x2 e6 k3 | fc[]"
    # FixedTrial does not check ranges: every value is inside the default space's
    for key in ("convs_per_stage", "stages", "width", "expand_ratio", "fc_layers"):
        low, high = space[key]
        assert low <= {**common, "convs_per_stage": 2, "expand_ratio": 6}[key] <= high, key
    assert {"residual", "inverted"} <= set(space["family"]) and {1.5, 2.0} <= set(space["growth"])
    assert 3 in space["kernel_size"]


def test_widths_grow_with_depth_and_a_channels_space_samples_as_before(tmp_path):
    space = StudyConfig().space
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        spec = sample_spec(study.ask(), space, 3, 10, 32, [0.5] * 3, [0.25] * 3)
        assert spec.channels == sorted(spec.channels)
    f = tmp_path / "s.toml"
    f.write_text("[space]\nchannels = [4, 64]\nstages = 3\n")
    old_space = load_config(f).space
    assert "width" not in old_space and "growth" not in old_space
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    spec = sample_spec(trial, old_space, 3, 10, 32, [0.5] * 3, [0.25] * 3)
    assert spec.channels == [trial.params[f"channels_{i}"] for i in range(3)]
    f.write_text("[space]\nchannels = [4, 64]\nwidth = [8, 16]\n")
    with pytest.raises(KDSearchError, match="either channels"):
        load_config(f)
