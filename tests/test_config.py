"""Study files: defaults, overrides, and one clear error for every kind of mistake."""

from pathlib import Path

import pytest

from kdsearch.config import config_from_dict, load_config
from kdsearch.errors import KDSearchError

STUDIES = Path(__file__).resolve().parents[1] / "studies"


@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_studies_load(path):
    cfg = load_config(path)
    assert cfg.trials >= 1 and cfg.space


def test_cli_overrides_beat_the_file(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('[study]\nname = "a"\ntrials = 5\n[data]\ndataset = "digits"\n[space]\nalpha = 0.5\n')
    cfg = load_config(f, {"trials": 9, "data.subset": 100, "teacher.name": "resnet20", "epochs": None})
    assert (cfg.name, cfg.trials, cfg.data.subset, cfg.teacher.name, cfg.space["alpha"]) == ("a", 9, 100, "resnet20", 0.5)
    assert cfg.run_path == Path("runs/a") and cfg.storage_url.startswith("sqlite:///")


@pytest.mark.parametrize("text,match", [
    ("[study\nname='x'", "invalid study file"),
    ("[study]\ntrails = 3\n", "unknown key 'trails'"),
    ("[studdy]\n", "unknown section"),
    ("[study]\ntrials = 'many'\n", "expected int"),
    ("[data]\ndataset = 'imagenet'\n", "not one of"),
    ("[space]\nchannels = [64, 8]\n", "above high"),
    ("[space]\nwidth = [1, 2]\n", "unknown parameter"),
    ("[space]\nalpha = [0.0, 2.0]\n", "alpha"),
    ("[study]\nobjectives = ['params', 'accuracy']\n", "first objective"),
    ("[data]\nval_fraction = 1.5\n", "val_fraction"),
])
def test_invalid_study_files_raise_one_clear_error(tmp_path, text, match):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(KDSearchError, match=match) as info:
        load_config(f)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.toml")), ids=lambda p: p.name)
def test_config_round_trips_through_its_dict(path):
    """run.json stores cfg.to_dict(); `kdsearch train` rebuilds the config from it."""
    cfg = load_config(path, {"trials": 7, "pruner.margin": 0.05})
    assert config_from_dict(cfg.to_dict()) == cfg
    broken = cfg.to_dict()
    broken["train"]["batch_size"] = "big"
    with pytest.raises(KDSearchError, match="batch_size"):
        config_from_dict(broken)


def test_missing_study_file():
    with pytest.raises(KDSearchError, match="not found"):
        load_config("nope.toml")
