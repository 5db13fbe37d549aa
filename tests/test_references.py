"""Hand-written references: documented sizes, scaling to a budget, export, and training beside a trial."""

import json

import pytest
import torch
from typer.testing import CliRunner

from kdsearch.cli import REFERENCE_NAMES, app
from kdsearch.errors import KDSearchError
from kdsearch.export.onnx_file import verify_onnx, write_onnx
from kdsearch.final import LrPolicy, train_final
from kdsearch.models.students.references import REFERENCES, reference_spec, scaled_reference, spec_params
from kdsearch.models.students.registry import build
from kdsearch.runs.layout import RESULTS_FILE, final_dir, reference_dir
from kdsearch.runs.run import open_run


@pytest.mark.parametrize("name", list(REFERENCES))
def test_each_reference_builds_to_its_documented_size_and_exports(name, tmp_path):
    spec = reference_spec(name)  # 10 classes, 32-px RGB, the published width
    assert spec_params(spec) == REFERENCES[name].params
    assert spec.family == REFERENCES[name].family and spec.summary().split(" |")[0] in REFERENCES[name].about
    model = build(spec).eval()
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    write_onnx(model, spec, tmp_path / "r.onnx")
    assert verify_onnx(model, spec, tmp_path / "r.onnx") < 1e-4  # ONNX Runtime computes what PyTorch does


def test_the_documented_counts_match_the_readme_and_the_cli():
    assert REFERENCE_NAMES == tuple(REFERENCES)  # the CLI names them without importing torch
    readme = open("README.md").read()
    for name, ref in REFERENCES.items():
        assert f"`{name}`" in readme and f"{ref.params:,}" in readme


@pytest.mark.parametrize("name", list(REFERENCES))
@pytest.mark.parametrize("budget", [3_000, 15_472, 38_638, 200_000])
def test_scaled_to_the_largest_width_within_the_budget(name, budget):
    spec = scaled_reference(name, budget)
    width = spec.channels[0]
    assert spec_params(spec) <= budget < spec_params(reference_spec(name, width + 1))
    assert spec.channels == [width * r for r in REFERENCES[name].ratios]


def test_no_reference_fits_a_budget_below_width_one_and_unknown_names_are_refused():
    assert scaled_reference("resnet8", 100) is None
    with pytest.raises(KDSearchError, match="unknown reference 'resnet9'.*resnet8"):
        reference_spec("resnet9")


def test_train_trains_the_references_beside_the_trial(tiny_run, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    tiny_run = shutil.copytree(tiny_run, tmp_path / "run", ignore=shutil.ignore_patterns("final", "export"))
    run = open_run(tiny_run)  # a copy: the session's shared run keeps only what its CLI tests trained
    number = max((t for t in run.study.trials if t.user_attrs.get("params")), key=lambda t: t.user_attrs["params"]).number
    params = run.study.trials[number].user_attrs["params"]
    out = train_final(run, [number], epochs=1, seeds=[0, 1], policy=LrPolicy(grid=(1.0,)), device="cpu",
                      references=["resnet8", "vgg-tiny"])
    refs = out[number]["references"]
    assert set(refs) <= {"resnet8", "vgg-tiny"} and refs, f"no reference fits {params} params"
    trial = json.loads((final_dir(tiny_run, number) / RESULTS_FILE).read_text())
    for name, body in refs.items():
        stored = json.loads((reference_dir(tiny_run, number, name) / RESULTS_FILE).read_text())
        assert stored["runs"] == body["runs"]
        assert stored["setup"]["reference"] == name and stored["trial"]["for_trial"] == number
        assert stored["trial"]["params"] <= params  # at most the student's size ...
        # ... at the same arms, seeds, epochs, T, alpha and lr grid as the trial
        assert {(r["mode"], r["seed"]) for r in stored["runs"]} == {(r["mode"], r["seed"]) for r in trial["runs"]}
        for key in ("epochs", "temperature", "alpha", "lr", "views", "teacher_key", "train_images"):
            assert stored["setup"][key] == trial["setup"][key], key
    # the same command again: every model of the trial and the references is kept
    again = train_final(run, [number], epochs=1, seeds=[0, 1], policy=LrPolicy(grid=(1.0,)), device="cpu",
                        references=["resnet8", "vgg-tiny"])
    assert again[number]["references"].keys() == refs.keys()
    assert all(again[number]["references"][n]["runs"] == refs[n]["runs"] for n in refs)


def test_train_refuses_an_unknown_reference_before_any_work(tiny_run):
    result = CliRunner().invoke(app, ["train", str(tiny_run), "--trial", "3", "--references", "resnet8,lenet"])
    assert result.exit_code == 2 and "unknown reference 'lenet'" in result.output


def test_references_enqueue_into_a_study_and_stay_off_the_searchs_front(tmp_path, monkeypatch):
    from kdsearch.analysis.front import pareto_trials
    from kdsearch.runs.trial_attrs import is_reference

    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    known = tmp_path / "refs.json"
    known.write_text(json.dumps([{"reference": "resnet8", "width": 4},
                                 {"reference": "vgg-tiny", "max_params": 3000, "temperature": 4, "alpha": 0.9}]))
    result = CliRunner().invoke(app, [
        "run", "--dataset", "digits", "--teacher", "resnet20", "--no-pretrained", "--teacher-epochs", "1",
        "--epochs", "1", "--device", "cpu", "--run-dir", str(tmp_path / "run"), "--trials", "4", "--in-process",
        "--objectives", "accuracy,params,macs", "--enqueue", str(known)])
    assert result.exit_code == 0, result.output
    run = open_run(tmp_path / "run")
    first, second = run.study.trials[:2]
    assert first.user_attrs["arch"] == "res[4,8,16]x1 k3 | fc[]" and is_reference(first.user_attrs)
    assert "lr" in first.params and first.user_attrs["alpha"] == 0.9  # left to the space: lr sampled, alpha fixed
    vgg = scaled_reference("vgg-tiny", 3000, in_channels=1, num_classes=10, image_size=8)
    assert second.user_attrs["arch"] == vgg.summary() and second.user_attrs["alpha"] == 0.9
    assert second.user_attrs["params"] <= 3000
    front = pareto_trials(run.study)
    assert front and not any(is_reference(t.user_attrs) for t in front)  # the search's students only
    known.write_text(json.dumps([{"reference": "lenet"}]))
    bad = CliRunner().invoke(app, ["run", "--dataset", "digits", "--run-dir", str(tmp_path / "run"), "--enqueue", str(known)])
    assert bad.exit_code == 2 and "unknown reference 'lenet'" in bad.output
