"""Student families (plain, residual, inverted): sampling, building, training, exact costs, JSON, ONNX."""

import json
import re

import optuna
import pytest
import torch
from torch import nn

from kdsearch.config import DEFAULT_SPACE, load_config
from kdsearch.errors import KDSearchError
from kdsearch.export.onnx_file import verify_onnx, write_onnx
from kdsearch.measure.costs import count_macs, count_params
from kdsearch.models.students.layers import Normalize
from kdsearch.models.students.registry import FAMILIES, build
from kdsearch.models.students.space import effective_space, sample_spec
from kdsearch.models.students.spec import StudentSpec

FAMILY_NAMES = ["plain", "residual", "inverted"]
# One FixedTrial per family: exactly the parameters that family samples from DEFAULT_SPACE
# (batch_norm only for plain, expand_ratio only for inverted; dropout only with an FC layer).
FIXED = {
    "plain": {"family": "plain", "stages": 2, "width": 8, "growth": 2.0, "fc_layers": 1, "fc_width_0": 24,
              "convs_per_stage": 2, "kernel_size": 5, "batch_norm": False, "dropout": 0.1},
    "residual": {"family": "residual", "stages": 2, "width": 8, "growth": 2.0, "fc_layers": 1,
                 "fc_width_0": 24, "convs_per_stage": 2, "kernel_size": 3, "dropout": 0.1},
    "inverted": {"family": "inverted", "stages": 3, "width": 8, "growth": 1.5,
                 "fc_layers": 0, "convs_per_stage": 2, "kernel_size": 5, "expand_ratio": 3},
}
MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]


def sampled(family: str, image_size: int = 16) -> StudentSpec:
    return sample_spec(optuna.trial.FixedTrial(FIXED[family]), DEFAULT_SPACE, 3, 5, image_size, MEAN, STD)


def shapes(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def test_the_registry_holds_one_builder_per_family():
    assert list(FAMILIES) == FAMILY_NAMES == DEFAULT_SPACE["family"]
    assert [f.__name__ for f in FAMILIES.values()] == ["build_plain", "build_residual", "build_inverted"]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_a_sampled_student_of_each_family_runs_and_trains(family):
    spec = sampled(family)
    assert spec.family == family and spec.batch_norm == (family != "plain")
    assert spec.expand_ratio == (3 if family == "inverted" else 1)
    torch.manual_seed(0)
    model = build(spec)
    x, y = torch.rand(16, 3, 16, 16), torch.randint(0, 5, (16,))
    assert model(x).shape == (16, 5)
    model.eval()  # channels_last gives the same logits
    with torch.no_grad():
        cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        torch.testing.assert_close(cl, model.to(memory_format=torch.contiguous_format)(x), atol=1e-5, rtol=1e-5)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_spec_round_trips_through_json_and_rebuilds_the_same_state_dict(family):
    spec = sampled(family)
    again = StudentSpec.from_json(spec.to_json())
    assert again == spec and json.loads(spec.to_json())["family"] == family
    model = build(spec)
    rebuilt = build(again)
    assert shapes(rebuilt) == shapes(model)
    rebuilt.load_state_dict(model.state_dict())  # strict: same keys and shapes


def test_summaries_name_the_family():
    assert sampled("plain").summary() == "conv[8,16]x2 k5 | fc[24] drop0.10"
    assert sampled("residual").summary() == "res[8,16]x2 k3 | fc[24] drop0.10"
    assert sampled("inverted").summary() == "inv[8,12,18]x2 e3 k5 | fc[]"
    bn = StudentSpec(in_channels=3, num_classes=10, image_size=32, channels=[16, 32], convs_per_stage=2, fc=[64])
    assert bn.summary() == "conv[16,32]x2 k3 bn | fc[64]"


def test_residual_params_and_macs_are_exact():
    # 3x8x8 input, channels [4, 8], one block per stage, 3x3, no FC layer, 10 classes; convs have no bias,
    # each BN has 2 params per channel (running stats are buffers); bias, BN, ReLU, adds and pooling are no MACs.
    spec = StudentSpec(in_channels=3, num_classes=10, image_size=8, channels=[4, 8], family="residual")
    model = build(spec)
    stem = 3 * 4 * 9 + 2 * 4
    block0 = (4 * 4 * 9 + 2 * 4) * 2  # 4 -> 4, stride 1: identity shortcut
    block1 = (4 * 8 * 9 + 2 * 8) + (8 * 8 * 9 + 2 * 8) + (4 * 8 + 2 * 8)  # 4 -> 8, stride 2: 1x1 projection
    head = 8 * 10 + 10
    assert count_params(model) == stem + block0 + block1 + head == 1454
    macs = (8 * 8 * 4 * 3 * 9  # stem at 8x8
            + 2 * 8 * 8 * 4 * 4 * 9  # block 0: two 4 -> 4 convs at 8x8
            + 4 * 4 * 8 * 4 * 9 + 4 * 4 * 8 * 8 * 9 + 4 * 4 * 8 * 4  # block 1 at 4x4: conv1, conv2, projection
            + 8 * 10)  # classifier
    assert count_macs(model, (3, 8, 8)) == macs == 39760


def test_inverted_params_and_macs_are_exact():
    # 3x8x8 input, channels [4, 8], one block per stage, expand_ratio 2 (hidden = 2 x block input), 3x3 depthwise.
    spec = StudentSpec(in_channels=3, num_classes=10, image_size=8, channels=[4, 8], family="inverted",
                       expand_ratio=2)
    model = build(spec)
    stem = 3 * 4 * 9 + 2 * 4
    block0 = (4 * 8 + 2 * 8) + (8 * 9 + 2 * 8) + (8 * 4 + 2 * 4)  # expand 4->8, depthwise 8, project 8->4 (+ input)
    block1 = (4 * 8 + 2 * 8) + (8 * 9 + 2 * 8) + (8 * 8 + 2 * 8)  # expand 4->8, depthwise 8 stride 2, project 8->8
    head = 8 * 10 + 10
    assert count_params(model) == stem + block0 + block1 + head == 598
    macs = (8 * 8 * 4 * 3 * 9  # stem at 8x8
            + 8 * 8 * 8 * 4 + 8 * 8 * 8 * 9 + 8 * 8 * 4 * 8  # block 0 at 8x8: expand, depthwise, project
            + 8 * 8 * 8 * 4 + 4 * 4 * 8 * 9 + 4 * 4 * 8 * 8  # block 1: expand at 8x8, depthwise and project at 4x4
            + 8 * 10)  # classifier
    assert count_macs(model, (3, 8, 8)) == macs == 19920
    # expand_ratio 1 drops the expansion conv, as in MobileNetV2's first block
    one = build(StudentSpec(in_channels=3, num_classes=10, image_size=8, channels=[4, 8], family="inverted"))
    assert count_params(one) == stem + (4 * 9 + 8 + 4 * 4 + 8) + (4 * 9 + 8 + 4 * 8 + 16) + head


def test_residual_and_inverted_keep_the_shape_where_they_should():
    for family in ("residual", "inverted"):
        model = build(StudentSpec(in_channels=1, num_classes=3, image_size=7, channels=[4, 4, 6, 6],
                                  convs_per_stage=2, kernel_size=5, family=family, expand_ratio=2))
        seen = []
        for stage in model.stages:
            stage.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[1:])))
        assert model(torch.rand(2, 1, 7, 7)).shape == (2, 3)
        assert seen == [(4, 7, 7), (4, 4, 4), (6, 2, 2), (6, 1, 1)]  # stride 2 from the second stage on
    res = build(StudentSpec(in_channels=1, num_classes=3, image_size=8, channels=[4, 4], family="residual"))
    assert [type(b.shortcut).__name__ for s in res.stages for b in s] == ["Identity", "Sequential"]  # stride 2
    inv = build(StudentSpec(in_channels=1, num_classes=3, image_size=8, channels=[4, 4, 6], convs_per_stage=2,
                            family="inverted", expand_ratio=2))
    assert [b.residual for s in inv.stages for b in s] == [True, True, False, True, False, True]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_onnx_export_of_each_family_matches_pytorch(family, tmp_path):
    spec = sampled(family)
    torch.manual_seed(1)
    model = build(spec).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so folding them is checked too
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    write_onnx(model, spec, tmp_path / "s.onnx")
    assert verify_onnx(model, spec, tmp_path / "s.onnx") <= 1e-4


# A spec saved before families existed (no family, no expand_ratio) and what it built then.
OLD_SPEC = ('{"batch_norm": true, "channels": [8, 16], "convs_per_stage": 2, "dropout": 0.1, "fc": [32], '
            '"image_size": 32, "in_channels": 3, "kernel_size": 5, "mean": [0.5, 0.5, 0.5], "num_classes": 10, '
            '"std": [0.25, 0.25, 0.25]}')


def _bn(i: int, c: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{i}.{k}", (c,)) for k in ("weight", "bias", "running_mean", "running_var")] + [
        (f"{i}.num_batches_tracked", ())]


OLD_STATE = ([("0.mean", (1, 3, 1, 1)), ("0.std", (1, 3, 1, 1)), ("1.weight", (8, 3, 5, 5))] + _bn(2, 8)
             + [("4.weight", (8, 8, 5, 5))] + _bn(5, 8) + [("8.weight", (16, 8, 5, 5))] + _bn(9, 16)
             + [("11.weight", (16, 16, 5, 5))] + _bn(12, 16)
             + [("17.weight", (32, 16)), ("17.bias", (32,)), ("20.weight", (10, 32)), ("20.bias", (10,))])


def old_build(spec: StudentSpec) -> nn.Sequential:
    """students.build as it was before families (frozen copy): the plain family must match it exactly."""
    layers: list[nn.Module] = [Normalize(spec.mean or [0.5] * spec.in_channels, spec.std or [0.25] * spec.in_channels)]
    c_in, size = spec.in_channels, spec.image_size
    for c_out in spec.channels:
        for _ in range(spec.convs_per_stage):
            layers.append(nn.Conv2d(c_in, c_out, spec.kernel_size, padding=spec.kernel_size // 2,
                                    bias=not spec.batch_norm))
            if spec.batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
            c_in = c_out
        if size >= 2:
            layers.append(nn.MaxPool2d(2))
            size //= 2
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    for width in spec.fc:
        layers += [nn.Linear(c_in, width), nn.ReLU(inplace=True)]
        if spec.dropout > 0:
            layers.append(nn.Dropout(spec.dropout))
        c_in = width
    layers.append(nn.Linear(c_in, spec.num_classes))
    return nn.Sequential(*layers)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_an_old_spec_without_family_builds_exactly_as_before(batch_norm):
    old = json.loads(OLD_SPEC) | {"batch_norm": batch_norm}
    spec = StudentSpec.from_json(json.dumps(old))
    assert (spec.family, spec.expand_ratio) == ("plain", 1)
    assert spec.summary() == "conv[8,16]x2 k5" + (" bn" if batch_norm else "") + " | fc[32] drop0.10"
    torch.manual_seed(3)
    model = build(spec)
    torch.manual_seed(3)
    reference = old_build(spec)
    if batch_norm:
        assert shapes(model) == OLD_STATE
    assert shapes(model) == shapes(reference) and count_params(model) == count_params(reference)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    assert str(model) == str(reference)
    x = torch.rand(2, 3, 32, 32)
    model.eval(), reference.eval()
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_a_space_without_family_samples_plain_students_as_before():
    """An old run's stored space has no family key: its trials stay plain, drawn in the same order."""
    old_space = {k: v for k, v in DEFAULT_SPACE.items() if k not in ("family", "expand_ratio")}
    draws = []
    for space in (old_space, dict(DEFAULT_SPACE, family="plain"), dict(DEFAULT_SPACE, family=["plain"])):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
        specs = []
        for _ in range(5):
            trial = study.ask()
            specs.append(sample_spec(trial, space, 3, 10, 32, MEAN, STD))
            assert "family" not in trial.params and "expand_ratio" not in trial.params
            study.tell(trial, 0.0)
        draws.append(specs)
    assert all(s.family == "plain" for s in draws[0]) and draws[0] == draws[1] == draws[2]


def test_default_space_samples_every_family_with_its_own_parameters():
    space = dict(DEFAULT_SPACE, stages=[1, 2], channels=[4, 8], fc_layers=[0, 1], fc_width=[4, 8])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        spec = sample_spec(trial, space, 3, 4, 8, MEAN, STD)
        seen.add(spec.family)
        assert trial.params["family"] == spec.family
        assert ("batch_norm" in trial.params) == (spec.family == "plain")
        assert ("expand_ratio" in trial.params) == (spec.family == "inverted")
        assert spec.family == "inverted" or spec.expand_ratio == 1
        if spec.family == "inverted":
            assert 2 <= spec.expand_ratio <= 6
        assert build(spec)(torch.rand(2, 3, 8, 8)).shape == (2, 4)
        study.tell(trial, 0.0)
    assert seen == set(FAMILY_NAMES)


def test_tpe_searches_a_mixed_space():
    space = dict(DEFAULT_SPACE, family=["residual", "inverted"], stages=[1, 2], channels=[4, 8], fc_layers=0)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=4, constant_liar=True))
    for _ in range(8):
        trial = study.ask()
        spec = sample_spec(trial, space, 1, 2, 8, [0.5], [0.25])
        assert spec.family in ("residual", "inverted")
        study.tell(trial, float(count_params(build(spec))))


@pytest.mark.parametrize("value,families", [('"plain"', "plain"),
                                             ('["residual", "inverted"]', ["residual", "inverted"])])
def test_a_study_file_may_restrict_the_families(tmp_path, value, families):
    f = tmp_path / "s.toml"
    f.write_text(f"[space]\nfamily = {value}\nexpand_ratio = [1, 4]\n")
    cfg = load_config(f)
    assert cfg.space["family"] == families and cfg.space["expand_ratio"] == [1, 4]
    assert load_config().space["family"] == FAMILY_NAMES  # a study without the key searches every family


@pytest.mark.parametrize("text,got", [
    ('family = ["residual", "dense"]', "['residual', 'dense']"),
    ('family = "vgg"', "'vgg'"),
])
def test_an_unknown_family_is_refused_at_load(tmp_path, text, got):
    f = tmp_path / "bad.toml"
    f.write_text(f"[space]\n{text}\n")
    with pytest.raises(KDSearchError) as info:
        load_config(f)
    message = str(info.value)
    bad = "dense" if "dense" in text else "vgg"
    assert message.startswith(f"space.family: unknown student family '{bad}'") and "\n" not in message
    assert "known: plain, residual, inverted" in message and message.endswith(f"got {got}")


@pytest.mark.parametrize("text,match", [
    ("family = []", "space.family: the list of choices is empty"),
    ("family = 3", "space.family: the value must be a student family name, got 3"),
    ("expand_ratio = [0, 4]", "space.expand_ratio: low and high must be an integer >= 1, got [0, 4]"),
])
def test_bad_family_settings_are_refused_at_load(tmp_path, text, match):
    f = tmp_path / "bad.toml"
    f.write_text(f"[space]\n{text}\n")
    with pytest.raises(KDSearchError, match=re.escape(match)):
        load_config(f)


def test_specs_that_no_family_can_build_are_one_clear_error():
    base = dict(in_channels=1, num_classes=2, image_size=8, channels=[4])
    with pytest.raises(KDSearchError, match="unknown student family 'dense' .known: plain, residual, inverted"):
        build(StudentSpec.from_json(json.dumps(base | {"family": "dense"})))
    with pytest.raises(KDSearchError, match="residual students always use batch norm"):
        build(StudentSpec(**base, family="residual", batch_norm=False))
    with pytest.raises(KDSearchError, match="expand_ratio >= 1"):
        build(StudentSpec(**base, family="inverted", expand_ratio=0))


def test_effective_space_lets_an_old_plain_run_compare_with_todays_space():
    old = {k: v for k, v in DEFAULT_SPACE.items() if k not in ("family", "expand_ratio")}
    assert effective_space(old) == effective_space(dict(DEFAULT_SPACE, family="plain")) == old | {"family": "plain"}
    assert effective_space(old) != effective_space(DEFAULT_SPACE)  # all families now: another search
    assert "batch_norm" not in effective_space(dict(DEFAULT_SPACE, family=["residual", "inverted"]))
    assert "expand_ratio" in effective_space(dict(DEFAULT_SPACE, family=["residual", "inverted"]))
