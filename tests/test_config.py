"""Study files: defaults, overrides, and one clear error for every kind of mistake."""

from pathlib import Path

import pytest

from kdsearch.config import (DataConfig, PrunerConfig, SPACE_KINDS, SPACE_RULES, StudyConfig, TeacherConfig,
                             TrainConfig, config_from_dict, field_rules, load_config)
from kdsearch.errors import KDSearchError

STUDIES = Path(__file__).resolve().parents[1] / "studies"


@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_studies_load(path):
    """Each shipped study loads and searches something (a space with at least one range or choice)."""
    cfg = load_config(path)
    assert any(isinstance(v, list) for v in cfg.space.values()) and cfg.trials >= 1


def test_shipped_studies_have_their_own_names():
    """Two shipped studies of one name would share runs/<name>: the second would be refused as a resume with
    other settings, or, worse, add its trials to the first's study."""
    names = [load_config(path).name for path in sorted(STUDIES.glob("*.toml"))]
    assert len(names) == len(set(names)) and len(names) >= 5, names


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
    ("[space]\ndepth = [1, 2]\n", "unknown parameter"),
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


@pytest.mark.parametrize("text,setting,got", [
    ("[study]\ntrials = 0\n", "trials", "0"),
    ("[study]\nepochs = 0\n", "epochs", "0"),
    ("[study]\nname = ''\n", "name", "''"),
    ("[study]\nseed = -1\n", "seed", "-1"),
    ("[study]\ntimeout = -5\n", "timeout", "-5.0"),
    ("[study]\ntimeout = inf\n", "timeout", "inf"),
    ("[study]\nthreads = 0\n", "threads", "0"),
    ("[study]\nlatency_threads = 0\n", "latency_threads", "0"),
    ("[study]\nmax_params = 0\n", "max_params", "0"),
    ("[study]\nmax_macs = -1\n", "max_macs", "-1"),
    ("[study]\nmax_latency_ms = nan\n", "max_latency_ms", "nan"),
    ("[data]\nval_fraction = nan\n", "data.val_fraction", "nan"),
    ("[data]\nsubset = -1\n", "data.subset", "-1"),
    ("[data]\npad = -3\n", "data.pad", "-3"),
    ("[teacher]\nbatch_size = 0\n", "teacher.batch_size", "0"),
    ("[teacher]\nlr = 0\n", "teacher.lr", "0.0"),
    ("[teacher]\nlr = inf\n", "teacher.lr", "inf"),
    ("[teacher]\ninput_size = 0\n", "teacher.input_size", "0"),
    ("[teacher]\nepochs = -1\n", "teacher.epochs", "-1"),
    ("[train]\nbatch_size = 0\n", "train.batch_size", "0"),
    ("[train]\nweight_decay = -1e-4\n", "train.weight_decay", "-0.0001"),
    ("[train]\nlabel_smoothing = 2\n", "train.label_smoothing", "2.0"),
    ("[train]\nviews = 0\n", "train.views", "0"),
    ("[pruner]\nwarmup_epochs = -1\n", "pruner.warmup_epochs", "-1"),
    ("[pruner]\nwarmup_epochs = -0.5\n", "pruner.warmup_epochs", "-0.5"),
    ("[pruner]\nchecks_per_epoch = 0\n", "pruner.checks_per_epoch", "0"),
    ("[pruner]\nchecks_per_epoch = 1.5\n", "pruner.checks_per_epoch", "1.5"),
    ("[pruner]\nmin_trials = -2\n", "pruner.min_trials", "-2"),
    ("[pruner]\nmargin = -1.5\n", "pruner.margin", "-1.5"),
    ("[pruner]\nrungs = [0, 2]\n", "pruner.rungs", "[0, 2]"),
    ("[pruner]\nrungs = [1.5]\n", "pruner.rungs", "[1.5]"),
    ("[pruner]\neta = 1\n", "pruner.eta", "1"),
    ("[space]\ndropout = [0, 1.5]\n", "space.dropout", "[0, 1.5]"),
    ("[space]\ndropout = 1.0\n", "space.dropout", "1.0"),
    ("[space]\nchannels = [0.5, 8]\n", "space.channels", "[0.5, 8]"),
    ("[space]\nchannels = 8.0\n", "space.channels", "8.0"),
    ("[space]\nfc_width = [0, 64]\n", "space.fc_width", "[0, 64]"),
    ("[space]\nstages = 0\n", "space.stages", "0"),
    ("[space]\nconvs_per_stage = [1, 2.5]\n", "space.convs_per_stage", "[1, 2.5]"),
    ("[space]\nfc_layers = -1\n", "space.fc_layers", "-1"),
    ("[space]\nkernel_size = [0, 4]\n", "space.kernel_size", "[0, 4]"),
    ("[space]\nkernel_size = 4\n", "space.kernel_size", "4"),
    ("[space]\nkernel_size = [3.0]\n", "space.kernel_size", "[3.0]"),
    ("[space]\nbatch_norm = [1, 0]\n", "space.batch_norm", "[1, 0]"),
    ("[space]\ntemperature = [0, 4]\n", "space.temperature", "[0, 4]"),
    ("[space]\ntemperature = [1.0, inf]\n", "space.temperature", "[1.0, inf]"),
    ("[space]\nalpha = nan\n", "space.alpha", "nan"),
    ("[space]\nlr = [0, 0.01]\n", "space.lr", "[0, 0.01]"),
    ("[space]\nlr = [1e-3, 1e-2, 1e-1]\n", "space.lr", "[0.001, 0.01, 0.1]"),
])
def test_out_of_range_settings_are_refused_at_load(tmp_path, text, setting, got):
    """Each of these used to load fine and crash a trial after the teacher was fine-tuned."""
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(KDSearchError) as info:
        load_config(f)
    message = str(info.value)
    assert message.startswith(f"{setting}: ") and message.endswith(f"got {got}") and "\n" not in message


def test_range_edges_that_are_valid_still_load(tmp_path):
    f = tmp_path / "edges.toml"
    f.write_text("[study]\nseed = 0\ntimeout = 0.5\n[data]\npad = 0\nsubset = 0\n[teacher]\nepochs = 0\n"
                 "[train]\nweight_decay = 0\nlabel_smoothing = 0.1\n[pruner]\nwarmup_epochs = 0\nmin_trials = 0\n"
                 "margin = -1\nrungs = [0.25, 3]\neta = 2\n[space]\nfc_layers = 0\ndropout = 0\nkernel_size = [1, 3, 7]\n"
                 "batch_norm = false\ntemperature = 4\nalpha = [1, 1]\nchannels = 16\nlr = [1e-3, 1e-3]\n")
    cfg = load_config(f)
    assert (cfg.space["kernel_size"], cfg.pruner.rungs, cfg.data.pad) == ([1, 3, 7], [0.25, 3], 0)
    assert load_config(None).pruner.rungs is None  # unset: the pruner's own rungs


def test_every_numeric_setting_and_space_entry_has_a_rule():
    """A new int / float setting must get a bound in its annotation (and [space] keys in SPACE_RULES)."""
    sections = {"": StudyConfig, "data.": DataConfig, "teacher.": TeacherConfig,
                "train.": TrainConfig, "pruner.": PrunerConfig}
    numeric = {prefix + name for prefix, cls in sections.items() for name, f in cls.model_fields.items()
               if "int" in str(f.annotation) or "float" in str(f.annotation)}
    assert numeric <= set(field_rules()), numeric - set(field_rules())
    assert set(SPACE_RULES) == set(SPACE_KINDS)


def test_cli_refuses_a_bad_setting_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from kdsearch.cli import app

    f = tmp_path / "bad.toml"
    f.write_text("[data]\ndataset = 'digits'\n[train]\nbatch_size = 0\n")
    result = CliRunner().invoke(app, ["run", str(f), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "train.batch_size" in lines[0] and "got 0" in lines[0], result.output
    assert not (tmp_path / "run").exists()  # refused before any data or teacher work
    f.write_text("[data]\ndataset = 'digits'\n")
    result = CliRunner().invoke(app, ["run", str(f), "--timeout", "-1"])  # flags are checked the same way
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "timeout" in result.stderr, result.output
