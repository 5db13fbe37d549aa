"""StudentSpec JSON round-trip, the builder's shapes, and sampling from a trial."""

import optuna
import pytest
import torch

from kdsearch.config import DEFAULT_SPACE
from kdsearch.errors import KDSearchError
from kdsearch.measure.costs import count_macs, count_params
from kdsearch.models.students.registry import build
from kdsearch.models.students.space import sample_spec
from kdsearch.models.students.spec import StudentSpec


def test_spec_round_trips_through_json():
    spec = StudentSpec(in_channels=3, num_classes=10, image_size=32, channels=[16, 32, 64], convs_per_stage=2,
                       kernel_size=5, batch_norm=False, fc=[128, 64], dropout=0.25, mean=[0.5] * 3, std=[0.2] * 3)
    assert StudentSpec.from_json(spec.to_json()) == spec
    assert spec.summary() == "conv[16,32,64]x2 k5 | fc[128,64] drop0.25"
    with pytest.raises(KDSearchError):
        StudentSpec.from_json('{"channels": [8]}')


@pytest.mark.parametrize("size,channels,stages", [(32, 3, [8, 16, 32]), (8, 1, [4, 8, 8, 8]), (28, 1, [6])])
def test_builder_shapes(size, channels, stages):
    spec = StudentSpec(in_channels=channels, num_classes=7, image_size=size, channels=stages, fc=[20])
    model = build(spec)
    out = model(torch.rand(3, channels, size, size))
    assert out.shape == (3, 7)


def test_params_and_macs_are_exact_for_a_known_net():
    # 1 -> 4 conv 3x3 without BN (bias), 8x8 input, pool, GAP, linear 4 -> 2
    spec = StudentSpec(in_channels=1, num_classes=2, image_size=8, channels=[4], batch_norm=False)
    model = build(spec)
    assert count_params(model) == (9 * 4 + 4) + (4 * 2 + 2)
    # conv: 8*8 positions * 4 out * 9 MACs; linear: 4*2 (bias, pooling and ReLU are not MACs)
    assert count_macs(model, (1, 8, 8)) == 8 * 8 * 4 * 9 + 4 * 2


def test_sampled_specs_respect_the_space():
    space = dict(DEFAULT_SPACE, stages=[2, 3], channels=[8, 16], kernel_size=[3], fc_layers=0)
    study = optuna.create_study(directions=["maximize"], sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        trial = study.ask()
        spec = sample_spec(trial, space, 3, 10, 32, [0.5] * 3, [0.25] * 3)
        assert 2 <= len(spec.channels) <= 3 and all(8 <= c <= 16 for c in spec.channels)
        assert spec.kernel_size == 3 and spec.fc == [] and spec.dropout == 0.0
        assert "kernel_size" not in trial.params and "fc_layers" not in trial.params
        assert spec.family in DEFAULT_SPACE["family"]  # the default space samples every family
        assert build(spec)(torch.rand(1, 3, 32, 32)).shape == (1, 10)
        study.tell(trial, 0.0)
