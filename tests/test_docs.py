"""The documentation holds: its links resolve, the commands the README shows exist with their flags,
the study-file keys it lists are the schema's, and its quick start and walk-through run on small data."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import torch
from typer.main import get_command
from typer.testing import CliRunner

from kdsearch.cli import app
from kdsearch.config import load_config
from kdsearch.config.schema import StudyConfig
from kdsearch.config.space import SPACE_KINDS
from kdsearch.models.teachers.build import build_teacher
from kdsearch.models.teachers.normalization import IMAGENET_MEAN, NORMALIZE_PRESETS
from kdsearch.models.teachers.registry import get_arch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, ROOT / "RESULTS.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMANDS = get_command(app).commands
WALK_THROUGH = ROOT / "studies" / "cifar10-own-teacher.toml"


# ------------------------------------------------------------------------------------- reading Markdown

def prose(text: str) -> str:
    """The text without HTML comments (notes for maintainers, not shown)."""
    return re.sub(r"<!--.*?-->", "", text, flags=re.S)


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block and every indented block (language '')."""
    blocks, lines, i = [], prose(text).splitlines(), 0
    while i < len(lines):
        fence = re.match(r"\s*```(\w*)", lines[i])
        if fence:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```"))
            blocks.append((fence.group(1), "\n".join(lines[i + 1:end])))
            i = end + 1
        elif lines[i].startswith("    ") and (i == 0 or not lines[i - 1].strip()):
            end = i
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                end += 1
            blocks.append(("", "\n".join(line[4:] for line in lines[i:end])))
            i = end
        else:
            i += 1
    return blocks


def without_code(text: str) -> str:
    """The prose: fenced and indented blocks removed (links inside them are not links)."""
    text = re.sub(r"```.*?```", "", prose(text), flags=re.S)
    return "\n".join(line for line in text.splitlines() if not line.startswith("    "))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in without_code(path.read_text()).splitlines():
        if m := re.match(r"#{1,6}\s+(.*)", line):
            base = slug(m.group(1))
            out.add(base if base not in seen else f"{base}-{seen[base]}")
            seen[base] = seen.get(base, 0) + 1
    return out


def command_lines(text: str) -> list[str]:
    """Every `kdsearch ...` line of the code blocks (continuations joined, comments dropped)."""
    out = []
    for lang, body in code_blocks(text):
        if lang in ("python", "toml", "json"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            if line.lstrip().startswith("kdsearch "):
                out.append(shlex.join(shlex.split(line, comments=True)))
    return out


def section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else len(text)]


# ------------------------------------------------------------------------------------- links

@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", without_code(page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists():
            broken.append(target)
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target} (no heading with that anchor)")
    assert not broken, f"{page.name}: {broken}"


def test_the_slug_is_githubs():
    assert slug("torch.compile: does it pay for itself in a trial?") == "torchcompile-does-it-pay-for-itself-in-a-trial"
    assert slug("What distillation buys: `kdsearch results` and RESULTS.md") == \
        "what-distillation-buys-kdsearch-results-and-resultsmd"


# ------------------------------------------------------------------------------------- commands

def parse(line: str, name: str, args: list[str], strict: bool) -> None:
    """click's parser on `kdsearch NAME ARGS`: unknown options always fail; strictly, values and missing
    arguments too (typer carries its own click, hence the broad except)."""
    try:
        COMMANDS[name].make_context(name, list(args), resilient_parsing=not strict)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"{line}: {type(exc).__name__}: {getattr(exc, 'format_message', exc.__str__)()}")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_shown_parses(page):
    """Each `kdsearch ...` line of a page's code blocks: the subcommand exists and click accepts its
    flags; lines without placeholders (shell variables) are parsed strictly, values and all."""
    lines = command_lines(page.read_text())
    if page == README:
        assert len(lines) >= 10 and any(" export " in f" {line} " for line in lines)
    for line in lines:
        name, *args = shlex.split(line)[1:]
        assert name in COMMANDS, f"{line}: no command {name!r}"
        parse(line, name, args, strict=False)
        if not any("$" in a for a in args):
            parse(line, name, args, strict=True)


def test_every_inline_command_names_its_own_flags():
    """`kdsearch ...` in the prose and tables, synopses too (`[--epochs E]`, `--trial N \\| RULE`): the
    subcommand exists and every flag is its own; concrete ones parse strictly."""
    spans = re.findall(r"`(kdsearch [^`]+)`", without_code(README.read_text()))
    assert len(spans) >= 8
    for span in spans:
        name, *rest = span.split()[1:]
        assert name in COMMANDS, f"{span}: no command {name!r}"
        own = {opt for p in COMMANDS[name].params for opt in (*p.opts, *p.secondary_opts)}
        flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", span))
        assert flags <= own, f"{span}: {sorted(flags - own)} are not options of kdsearch {name}"
        if rest and not re.search(r"[\[\]|]|\.\.\.|\b[A-Z]+\b", span):  # a concrete command line
            parse(span, name, shlex.split(span)[2:], strict=True)


def test_the_readmes_picking_example_is_what_the_committed_run_picks():
    """The quick start quotes `kdsearch export results/digits-demo --min-accuracy 0.95`'s first line."""
    from kdsearch.analysis.pick import Rule, choose
    from kdsearch.runs.run import open_run

    text = " ".join(README.read_text().split())
    quoted = re.search(r"`kdsearch export (\S+) --min-accuracy ([\d.]+)` prints `(picked trial [^`]+)`", text)
    run = open_run(ROOT / quoted.group(1))
    assert choose(run.study, Rule(min_accuracy=float(quoted.group(2)))).sentence == quoted.group(3)


def test_every_flag_the_readme_names_exists():
    """Every `--flag` in the README (tables and prose too) is an option of a kdsearch command."""
    known = {opt for cmd in [*COMMANDS.values(), get_command(app)] for p in cmd.params
             for opt in (*p.opts, *p.secondary_opts)} | {"--help"}
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", prose(README.read_text())))
    assert named and not named - known, sorted(named - known)


def test_the_readmes_study_file_keys_are_the_schemas():
    block = next(body for _, body in code_blocks(README.read_text()) if body.lstrip().startswith("[study]"))
    listed: dict[str, set[str]] = {}
    for line in block.splitlines():
        if m := re.match(r"\s*\[(\w+)\]\s+(.*)", line):
            current = listed.setdefault(m.group(1), set())
            line = m.group(2)
        current |= {w for w in re.findall(r"[a-z_]+", line.split("(")[0])}
    sections = {"data", "teacher", "train", "pruner"}
    assert listed["study"] == set(StudyConfig.model_fields) - sections - {"space"}
    for name in sections:
        assert listed[name] == set(StudyConfig.model_fields[name].annotation.model_fields), name
    assert listed["space"] | {"channels"} == set(SPACE_KINDS)


# ------------------------------------------------------------------------------------- quick start, walk-through

def fake_timing(model, input_shape, runtime="onnxruntime", batch=1, threads=1, graph=None, device=None):
    """Timing takes about a second a student; these tests run the commands, not the timer."""
    from kdsearch.measure.costs import count_params
    from kdsearch.measure.latency import Timing

    return Timing(0.01 + count_params(model) / 1e6, 0.001, 1, runtime, batch, threads)


@pytest.fixture
def quick(monkeypatch, tmp_path):
    """Run CLI commands from the repository root, caches in tmp, latency timing stubbed."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("kdsearch.measure.latency.student_latency", fake_timing)
    monkeypatch.setattr("kdsearch.training.teacher.teacher_latency", lambda *args, **kwargs: 0.01)

    def invoke(words: list[str]) -> str:
        assert words[0] == "kdsearch"
        result = CliRunner().invoke(app, words[1:])
        assert result.exit_code == 0, f"{shlex.join(words)}:\n{result.output}"
        return result.output
    return invoke


# appended to each command (click takes an option's last value): tiny trial, epoch and seed counts
TINY = {"run": ["--trials", "2", "--epochs", "1", "--views", "2", "--device", "cpu", "--allow-chance-teacher",
                "--in-process"],
        "train": ["--epochs", "1", "--seeds", "0", "--lr-grid", "1", "--device", "cpu"],
        "export": [], "report": []}
PICK = ["--min-accuracy", "0.01"]  # a rule every tiny front meets, in place of the README's 0.95


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of the README's Python API section, in order."""
    return re.findall(r"```python\n(.*?)```", section(text, "Python API"), re.S)


# keyword settings added to the README's kdsearch.run and kdsearch.retrain calls (tiny counts, as TINY)
TINY_RUN = {"epochs": 1, "teacher__epochs": 2, "train__views": 2, "device": "cpu", "teacher__allow_chance": True,
            "in_process": True}
TINY_RETRAIN = {"epochs": 1, "seeds": [0], "lr_grid": [1], "device": "cpu"}


@pytest.mark.slow
def test_the_readme_quick_start_then_every_python_example_runs_in_order_on_a_fresh_clone(quick, tmp_path,
                                                                                         monkeypatch, capsys):
    """Issue 36: the quick start's commands as written (run -> report -> export -> train -> export), then every
    Python API example of the README, in order, in a folder laid out as a fresh clone (the study files, no runs/),
    with tiny counts. The second example used to be refused after the quick start (`data.subset 0 (now 500)`)."""
    import shutil

    import kdsearch

    pytest.importorskip("pandas")
    pytest.importorskip("mlflow")
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "studies", clone / "studies")
    monkeypatch.chdir(clone)
    lines = command_lines(section(README.read_text(), "Quick start"))
    assert [shlex.split(line)[1] for line in lines] == ["run", "report", "export", "train", "export"]
    run_dir = clone / "runs" / "digits-demo"
    exported = []
    for line in lines:
        words = shlex.split(line)
        extra = TINY[words[1]] + (PICK if "--min-accuracy" in words else [])
        extra += ["--teacher-epochs", "2"] if words[1] == "run" else []
        out = quick(words + extra)
        if words[1] == "export":
            exported.append(int(re.search(r"picked trial (\d+): ", out).group(1)))
    assert (run_dir / "report.html").is_file() and exported[0] == exported[1]
    info = json.loads((run_dir / "export" / f"{exported[0]:05d}" / "export.json").read_text())
    assert info["trial"] == exported[0] and info["weights"] == "final"  # the second export: retrained weights
    assert (run_dir / "final" / f"{exported[0]:05d}" / "results.json").is_file()

    real_run, real_retrain = kdsearch.run, kdsearch.retrain
    monkeypatch.setattr(kdsearch, "run", lambda *a, **kw: real_run(*a, **{**kw, **TINY_RUN}))
    monkeypatch.setattr(kdsearch, "retrain", lambda *a, **kw: real_retrain(*a, **{**kw, **TINY_RETRAIN}))
    blocks = python_blocks(README.read_text())
    assert len(blocks) == 2 and "runs/digits-demo" in blocks[0] and "kdsearch.run(" in blocks[1]
    capsys.readouterr()
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md, Python API example {i + 1}", "exec"), namespace)
    printed = capsys.readouterr().out
    study = namespace["study"]
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials) == 8
    assert all(re.search(rf"^{n} \[", printed, re.M) for n in (5, 6, 7)), printed  # the callback saw trials 5-7
    assert (clone / "runs" / "digits-subset" / "mlflow.db").is_file()
    assert list(namespace["results"]) and (clone / namespace["folder"]).parent == run_dir / "export"


def test_the_walk_through_shows_its_study_file_and_the_file_loads():
    shown = next(body for lang, body in code_blocks(section(README.read_text(), "CIFAR-10 with your own teacher"))
                 if lang == "toml")
    assert shown.strip() in WALK_THROUGH.read_text()  # the README quotes the file as it is
    cfg = load_config(WALK_THROUGH)
    assert cfg.data.dataset == "cifar10" and cfg.teacher.normalize == "cifar10" and cfg.teacher.epochs == 0


def test_the_walk_through_normalization_trap(tmp_path):
    """What step 4 says: with a weights file, a named teacher's default is ImageNet's mean/std; the
    study file's setting gives CIFAR-10's."""
    cfg = load_config(WALK_THROUGH)
    checkpoint = tmp_path / "teacher.pt"
    torch.save({"state_dict": get_arch(cfg.teacher.name).build(10, 3, True).state_dict()}, checkpoint)
    _, auto = build_teacher(cfg.teacher.name, num_classes=10, image_size=32, weights=str(checkpoint))
    _, chosen = build_teacher(cfg.teacher.name, num_classes=10, image_size=32, weights=str(checkpoint),
                              normalize=cfg.teacher.normalize)
    assert auto.mean == IMAGENET_MEAN and not auto.notes  # silently
    assert chosen.mean == NORMALIZE_PRESETS["cifar10"][0]


def test_the_walk_through_study_runs_on_a_small_image_folder(quick, folder, tmp_path):
    """Step 5's commands on the walk-through's study file, with a tiny image folder and a checkpoint of its
    architecture standing in for CIFAR-10 and your teacher (an untrained one: hence --allow-chance-teacher)."""
    cfg = load_config(WALK_THROUGH)
    checkpoint = tmp_path / "teacher.pt"
    torch.save(get_arch(cfg.teacher.name).build(3, 3, True).state_dict(), checkpoint)
    step = section(README.read_text(), "CIFAR-10 with your own teacher").split("**5.")[1]
    lines = command_lines(step)
    assert [shlex.split(line)[1] for line in lines] == ["run", "report", "train", "export"]
    run_dir = tmp_path / "own"
    for line in lines:
        words = shlex.split(line.replace("runs/cifar10-own-teacher", str(run_dir)).replace("my-teacher.toml",
                                                                                            str(WALK_THROUGH)))
        extra = list(TINY[words[1]])  # a copy: += on TINY's own list would leak into the next test's commands
        if words[1] == "run":
            extra += ["--dataset", "imagefolder", "--data-dir", str(folder), "--teacher-weights", str(checkpoint),
                      "--run-dir", str(run_dir)]
        quick(words + extra)
    assert list((run_dir / "export").iterdir())
