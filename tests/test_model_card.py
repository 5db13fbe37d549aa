"""`kdsearch export --arm ce` exports final training's baseline; every export has a MODEL_CARD.md whose numbers
are the run's own (run.json, the study's records, results.json, export.json)."""

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from kdsearch.cli import app
from kdsearch.models.students.io import load_student
from kdsearch.runs.layout import RESULTS_FILE, export_dir, final_dir, model_dir
from kdsearch.runs.run import open_run

runner = CliRunner()
TRIAL = 1


@pytest.fixture(scope="module")
def trained(tiny_run, tmp_path_factory):
    """A copy of the tiny run (other tests' final training stays apart) with trial 1 retrained, all three arms."""
    run_dir = tmp_path_factory.mktemp("card") / "run"
    shutil.copytree(tiny_run, run_dir)
    shutil.rmtree(run_dir / "final", ignore_errors=True)  # what other tests trained: only trial 1's, here
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KDSEARCH_CACHE", str(run_dir.parent / "cache"))
        result = runner.invoke(app, ["train", str(run_dir), "--trial", str(TRIAL), "--epochs", "1", "--lr", "0.05",
                                     "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return run_dir, json.loads((final_dir(run_dir, TRIAL) / RESULTS_FILE).read_text())


def front_matter(card: str) -> dict:
    head = card.split("---\n")[1]
    return {k: json.loads(v) for k, v in (line.split(": ", 1) for line in head.splitlines())}


def test_export_arm_ce_exports_the_baseline(trained):
    run_dir, results = trained
    result = runner.invoke(app, ["export", str(run_dir), "--trial", str(TRIAL), "--arm", "ce"])
    assert result.exit_code == 0, result.output
    out = export_dir(run_dir, TRIAL, "ce")
    assert out.name == f"{TRIAL:05d}-ce" and "exported trial 1 ce (control: no teacher" in result.output
    info = json.loads((out / "export.json").read_text())
    ce = next(r for r in results["runs"] if r["mode"] == "ce")
    assert (info["arm"], info["weights"], info["alpha"], info["temperature"]) == ("ce", "final", 0.0, None)
    assert info["test_accuracy"] == ce["test_accuracy"] and info["val_accuracy"] == ce["curve"][-1]
    exported, _ = load_student(out)
    baseline, _ = load_student(model_dir(run_dir, TRIAL, "ce", ce["seed"], ce["lr"]))
    distilled, _ = load_student(model_dir(run_dir, TRIAL, "kd", ce["seed"], ce["lr"]))
    same = lambda a, b: all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))  # noqa: E731
    assert same(exported, baseline) and not same(exported, distilled)
    card = (out / "MODEL_CARD.md").read_text()
    assert "trained without a teacher" in card and "This model was trained without it" in card
    assert f"| test | {ce['test_accuracy']:.2%} | these weights (final training, seed {ce['seed']}), read once |" in card


def test_the_model_card_numbers_are_the_run_files(trained):
    run_dir, results = trained
    result = runner.invoke(app, ["export", str(run_dir), "--trial", str(TRIAL)])
    assert result.exit_code == 0, result.output
    out = export_dir(run_dir, TRIAL)
    card, info = (out / "MODEL_CARD.md").read_text(), json.loads((out / "export.json").read_text())
    study = open_run(run_dir).study
    trial, attrs, run_json = study.trials[TRIAL], study.user_attrs, json.loads((run_dir / "run.json").read_text())
    kd = next(r for r in results["runs"] if r["mode"] == "kd")
    head = front_matter(card)
    assert head["params"] == trial.user_attrs["params"] == results["trial"]["params"]
    assert head["macs"] == trial.user_attrs["macs"] and head["latency_ms"] == trial.user_attrs["latency_ms"]
    assert head["onnx_bytes"] == (out / "student.onnx").stat().st_size == info["onnx"]["bytes"]
    assert head["weights_bytes"] == (out / "student.safetensors").stat().st_size
    assert head["val_accuracy"] == kd["curve"][-1] and head["test_accuracy"] == kd["test_accuracy"]
    expected = [  # each as the card writes it
        f"{trial.user_attrs['params']:,} parameters", f"{trial.user_attrs['macs']:,} multiply-accumulates",
        f"`student.onnx` {info['onnx']['bytes']:,} bytes", f"`student.safetensors` {head['weights_bytes']:,} bytes",
        f"| validation | {trial.user_attrs['curve'][-1]:.2%} | the search's trial, 2 epoch(s) |",
        f"| validation | {kd['curve'][-1]:.2%} | these weights (final training, seed 0) |",
        f"| test | {kd['test_accuracy']:.2%} | these weights (final training, seed 0), read once |",
        f"| test | {results['summary']['arms']['kd']['test_mean']:.2%} | mean over seeds 0 of this arm |",
        f"| validation | {attrs['teacher']['val_accuracy']:.2%} | teacher resnet20 |",
        f"| test | {attrs['teacher']['test_accuracy']:.2%} | teacher resnet20 |",
        f"{attrs['teacher']['params']:,} parameters, trained 1 epoch(s) on this data",
        f"{attrs['data']['train']:,} training images", f"{attrs['data']['val']:,} validation images",
        f"{attrs['data']['test']:,} test images", f"Final training used {results['setup']['train_images']:,}",
        f"Latency {trial.user_attrs['latency_ms']:.3f} ms", f"on {attrs['environment']['machine']}",
        f"temperature T {trial.user_attrs['temperature']:.4g}, alpha {trial.user_attrs['alpha']:.4g}",
        f"the search's peak learning rate {trial.user_attrs['lr']:.4g}",
        f"final training, 1 epoch(s) (the search trained 2), seed 0, learning rate {kd['lr']:.4g}",
        f"batch size {results['setup']['batch_size']}", f"{100 * results['summary']['gain']['ce']['mean']:+.2f} points over ce",
        "input `images`: float32, N x 3 x 8 x 8".lower(), "8x8 images", run_json["command"], run_json["kdsearch"],
    ]
    missing = [e for e in expected if e not in card and e not in card.lower()]
    assert not missing, (missing, card)


@pytest.mark.parametrize("argv,match", [
    (["--trial", str(TRIAL), "--arm", "ce", "--weights", "search"], "the search trains distilled students only"),
    (["--trial", "0", "--arm", "ce"], "trial 0 has no final training yet"),
    (["--trial", str(TRIAL), "--arm", "teacher"], "--arm: 'teacher' is not one of kd, ce, ce-all"),
])
def test_bad_arm_requests_exit_2_with_one_line(trained, tmp_path, argv, match):
    run_dir, _ = trained
    result = runner.invoke(app, ["export", str(run_dir), "--out", str(tmp_path / "x"), *argv])
    assert result.exit_code == 2 and match in result.output and result.output.count("\n") == 1, result.output
    assert not (tmp_path / "x").exists()
