"""The `kdsearch` command: thin wrappers that parse flags, load the config and call one function.

User mistakes (KDSearchError) print one line and exit 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

try:
    from typer._click import exceptions as click_errors  # typer >= 0.2x carries its own click
except ImportError:  # pragma: no cover - older typer: click's own
    from click import exceptions as click_errors
from rich.console import Console
from rich.markup import escape

from .errors import KDSearchError, disk_full, disk_full_error

class OneLineErrors(TyperGroup):
    """Click's usage errors (an unknown flag, a missing argument, a value of the wrong type) as one line and
    exit 2, as every other refusal, instead of typer's 4-6-line box."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as exc:  # `kdsearch` alone: the help, as before
            exc.show()
            sys.exit(exc.exit_code)
        except click_errors.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see {ctx.command_path} --help)" if isinstance(exc, click_errors.UsageError) and ctx else ""
            typer.echo(f"error: {' '.join(exc.format_message().split())}{hint}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


# Each command imports what it needs when it runs (torch, optuna, plotly take seconds): `kdsearch --help`
# and a mistyped flag answer at once.
app = typer.Typer(help="Find small, fast student CNNs by knowledge distillation and Optuna search.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False, cls=OneLineErrors)
# Wide when piped to a log: the Pareto table's architecture column stays on one line.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def user_errors(fn):
    """Print a KDSearchError as one line and exit 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KDSearchError as exc:
            err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except Exception as exc:
            if not disk_full(exc):  # a bug keeps its traceback
                raise
            err_console.print(f"[red]error:[/] {escape(str(disk_full_error('the run or output folder')))}",
                              highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print(f"interrupted: everything finished is kept{INTERRUPTED.get(fn.__name__, '')}; "
                              "the same command resumes", highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
    return wrapper


# what an interruption leaves in progress, by command
INTERRUPTED = {"run": " (a running trial is marked failed)",
               "train": " (a model in progress continues from its last saved epoch)"}


Opt = typer.Option


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"kdsearch {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, Opt("--version", callback=_version, is_eager=True, help="Print kdsearch's version and exit.")] = False,
) -> None:
    """Find small, fast student CNNs by knowledge distillation and Optuna search."""


@app.command()
@user_errors
def run(
    study_file: Annotated[Optional[Path], typer.Argument(help="TOML study definition (see studies/).")] = None,
    teacher: Annotated[Optional[str], Opt(help="Teacher: resnet18/34/50/101, inception_v3, resnet20/32/44/56/110, timm:NAME (pip install 'kdsearch[timm]') or package.module:factory.")] = None,
    teacher_weights: Annotated[Optional[str], Opt(help="Checkpoint file for the teacher architecture.")] = None,
    trust_pickle: Annotated[Optional[bool], Opt("--trust-pickle", help="Allow full unpickling of a trusted teacher checkpoint.")] = None,
    teacher_epochs: Annotated[Optional[int], Opt(help="Epochs to train/fine-tune the teacher on the data (default: auto).")] = None,
    teacher_input_size: Annotated[Optional[int], Opt(help="Input size the teacher sees (images are resized).")] = None,
    no_pretrained: Annotated[Optional[bool], Opt("--no-pretrained", help="Do not try ImageNet weights.")] = None,
    teacher_normalize: Annotated[Optional[str], Opt(help="Teacher input normalization: auto (default), imagenet, cifar10, cifar100, data or none.")] = None,
    teacher_mean: Annotated[Optional[str], Opt(help="Teacher input mean per channel, e.g. 0.5,0.5,0.5 (with --teacher-std; wins over --teacher-normalize).")] = None,
    teacher_std: Annotated[Optional[str], Opt(help="Teacher input std per channel (with --teacher-mean).")] = None,
    dataset: Annotated[Optional[str], Opt(help="cifar10, cifar100, mnist, fashion-mnist, svhn, imagefolder, digits.")] = None,
    data_dir: Annotated[Optional[str], Opt(help="Dataset root, or the imagefolder folder / .tar.gz.")] = None,
    val_fraction: Annotated[Optional[float], Opt(help="Validation split carved from the training data.")] = None,
    subset: Annotated[Optional[int], Opt(help="Train students on a stratified subset of N images.")] = None,
    image_size: Annotated[Optional[int], Opt(help="Resize every image to N x N ([data] image_size; needed for image folders of mixed or non-square sizes).")] = None,
    trials: Annotated[Optional[int], Opt(help="The study ends with N finished trials (not N more).")] = None,
    epochs: Annotated[Optional[int], Opt(help="Training epochs per student.")] = None,
    strategy: Annotated[Optional[str], Opt(help="pertrial (default: each student trained from scratch) or oneshot (supernets trained once for --epochs, each trial a subnet evaluated with inherited weights).")] = None,
    screen: Annotated[Optional[bool], Opt("--screen/--no-screen", help="(oneshot) Stop scoring a subnet after its first 1,000 validation images when a scored subnet as small is over 3 standard errors more accurate.")] = None,
    promote: Annotated[Optional[int], Opt(help="Then train the N most accurate students of each size band (within 2x in params) and family again at a longer rung, where the front is read (one-shot: fine-tuned from their inherited weights; 0: off).")] = None,
    promote_epochs: Annotated[Optional[int], Opt(help="The rung's epochs (default 10).")] = None,
    promote_images: Annotated[Optional[int], Opt(help="The rung's training images (default 0: all of the training split).")] = None,
    promote_by: Annotated[Optional[str], Opt(help="family (default: the best of each size band and family) or band (of each size band, every family at once).")] = None,
    sampler: Annotated[Optional[str], Opt(help="tpe, nsga2, gp or random.")] = None,
    pruner: Annotated[Optional[str], Opt(help="pareto (default), median, asha, moasha or none.")] = None,
    max_params: Annotated[Optional[int], Opt(help="Budget: reject students with more params, untrained.")] = None,
    max_macs: Annotated[Optional[int], Opt(help="Budget: reject students with more MACs, untrained.")] = None,
    max_latency_ms: Annotated[Optional[float], Opt(help="Budget: reject students slower than this (ms).")] = None,
    max_bytes: Annotated[Optional[int], Opt(help="Budget: reject students whose ONNX file is larger (see --bytes-format), untrained.")] = None,
    bytes_format: Annotated[Optional[str], Opt(help="The bytes cost: size of the float ONNX file (float) or of the int8 one (int8).")] = None,
    latency_runtime: Annotated[Optional[str], Opt(help="Where latency is measured: onnxruntime (CPU, the exported graph; default) or torch (eager PyTorch, CPU).")] = None,
    latency_batch: Annotated[Optional[int], Opt(help="Images per timed call (default 1).")] = None,
    objectives: Annotated[Optional[str], Opt(help="Comma list, e.g. accuracy,params,latency or accuracy,params,macs or accuracy,bytes.")] = None,
    seed: Annotated[Optional[int], Opt(help="Seed for splits, sampler and training.")] = None,
    timeout: Annotated[Optional[float], Opt(help="Stop starting new trials after this many seconds.")] = None,
    device: Annotated[Optional[str], Opt(help="auto, cpu, cuda or mps.")] = None,
    threads: Annotated[Optional[int], Opt(help="CPU threads for training (set once, recorded).")] = None,
    views: Annotated[Optional[int], Opt(help="Teacher logits cached for K augmentation views per image.")] = None,
    batch_size: Annotated[Optional[int], Opt(help="Students' training batch size ([train] batch_size; a study resumes only with its first value).")] = None,
    teacher_cache: Annotated[Optional[str], Opt(help="on (cached teacher logits) or off (teacher runs online).")] = None,
    storage: Annotated[Optional[str], Opt(help="Optuna storage URL (default: SQLite in the run folder).")] = None,
    study_name: Annotated[Optional[str], Opt(help="Study name (default: from the study file, or 'kdsearch').")] = None,
    run_dir: Annotated[Optional[str], Opt(help="Run folder (default: runs/<study-name>).")] = None,
    workers: Annotated[int, Opt(help="Worker processes sharing the study on this machine (one per GPU when several).")] = 1,
    enqueue: Annotated[Optional[Path], Opt(help="JSON list of known students (spec, temperature, alpha, lr) to evaluate first.")] = None,
    retries: Annotated[Optional[int], Opt(help="Times the parameters of a trial whose process died (a crash, the OOM killer) are tried again (default 1).")] = None,
    allow_chance_teacher: Annotated[Optional[bool], Opt("--allow-chance-teacher", help="Distill from a teacher that scores at chance on validation (default: stop).")] = None,
    in_process: Annotated[bool, Opt("--in-process", help="Run the trials in this process, unsupervised (debugging: breakpoints work; a crash ends the run).")] = False,
    dry_run: Annotated[bool, Opt("--dry-run", help="Print the resolved settings, the data and teacher it would use and the time estimate, then exit (writes no run folder).")] = False,
    tracking: Annotated[Optional[str], Opt(help="Also log each trial (settings, curve, objectives) to mlflow, wandb or tensorboard (optional extras: pip install 'kdsearch[tracking-mlflow]').")] = None,
) -> None:
    """Run (or resume) a distillation search and print its Pareto front."""
    from .config import load_config
    from .reporting.tables import pareto_table
    from .runs.log_file import run_log
    from .search.runner import run_search

    overrides = {
        "name": study_name, "trials": trials, "epochs": epochs, "sampler": sampler, "seed": seed,
        "strategy": strategy, "screen": screen, "promote": promote, "promote_epochs": promote_epochs, "promote_images": promote_images, "promote_by": promote_by,
        "timeout": timeout, "device": device, "threads": threads, "storage": storage, "run_dir": run_dir,
        "retries": retries, "teacher.allow_chance": allow_chance_teacher, "tracking": tracking,
        "objectives": objectives.split(",") if objectives else None,
        "pruner.name": pruner, "max_params": max_params, "max_macs": max_macs, "max_latency_ms": max_latency_ms,
        "max_bytes": max_bytes, "bytes_format": bytes_format, "latency_runtime": latency_runtime,
        "latency_batch": latency_batch,
        "teacher.name": teacher, "teacher.weights": teacher_weights, "teacher.trust_pickle": trust_pickle,
        "teacher.epochs": teacher_epochs, "teacher.input_size": teacher_input_size,
        "teacher.pretrained": False if no_pretrained else None, "teacher.normalize": teacher_normalize,
        "teacher.mean": list(_float_list("--teacher-mean", teacher_mean)) if teacher_mean else None,
        "teacher.std": list(_float_list("--teacher-std", teacher_std)) if teacher_std else None,
        "data.dataset": dataset, "data.data_dir": data_dir, "data.val_fraction": val_fraction, "data.subset": subset,
        "data.image_size": image_size,
    }
    if teacher_cache not in (None, "on", "off"):
        raise KDSearchError(f"--teacher-cache: {teacher_cache!r} is not one of on, off")
    overrides["train.views"] = views
    overrides["train.batch_size"] = batch_size
    overrides["train.teacher_cache"] = None if teacher_cache is None else teacher_cache == "on"
    cfg = load_config(study_file, overrides)
    if workers < 1:
        raise KDSearchError(f"--workers: must be at least 1, got {workers}")
    if dry_run:
        from .search.dry_run import dry_run as describe
        from .search.tracking import make_tracker

        make_tracker(cfg, console)  # a missing tracker package: the run's one line
        describe(cfg, console)
        return
    study = run_search(cfg, console, study_file, workers=workers, enqueue=enqueue, in_process=in_process)
    with run_log(cfg.run_path, console):
        console.print(pareto_table(study))


@app.command()
@user_errors
def report(
    run_dir: Annotated[Optional[Path], typer.Argument(help="A run folder (holds run.json).")] = None,
    storage: Annotated[Optional[str], Opt(help="Optuna storage URL, instead of a run folder.")] = None,
    study_name: Annotated[Optional[str], Opt(help="Study name in --storage.")] = None,
    out: Annotated[Optional[Path], Opt(help="HTML file to write (default: RUN/report.html).")] = None,
    test: Annotated[bool, Opt("--test/--no-test", help="Also measure and show the Pareto members' test accuracy (pick on validation, report test).")] = False,
    images: Annotated[bool, Opt("--images", help="Also write each figure as an image (needs kaleido).")] = False,
    image_format: Annotated[str, Opt(help="png or svg (with --images).")] = "png",
    as_json: Annotated[bool, Opt("--json", help="Print the teacher and the Pareto front as JSON on stdout (what is said besides goes to stderr).")] = False,
) -> None:
    """Print the Pareto table of a run and write its self-contained HTML report."""
    from .reporting.report import write_report
    from .runs.run import open_run

    if image_format not in ("png", "svg"):
        raise KDSearchError(f"--image-format: {image_format!r} is not one of png, svg")
    run = open_run(run_dir, storage, study_name)
    facts = write_report(run, out, test=test, images=images, image_format=image_format,
                         console=err_console if as_json else console, table=not as_json)
    if as_json:
        typer.echo(json.dumps(facts, indent=2))


@app.command()
@user_errors
def status(
    run_dir: Annotated[Optional[Path], typer.Argument(help="A run folder (holds run.json).")] = None,
    storage: Annotated[Optional[str], Opt(help="Optuna storage URL, instead of a run folder.")] = None,
    study_name: Annotated[Optional[str], Opt(help="Study name in --storage.")] = None,
    as_json: Annotated[bool, Opt("--json", help="Print it as JSON (trial counts, running and failed trials, teacher, caches, final training, front).")] = False,
) -> None:
    """Where a study stands: trials by state, running trials and their workers, failures, the front so far."""
    from .runs.run import open_run
    from .reporting.status import show_status, status_facts

    run = open_run(run_dir, storage, study_name)
    if as_json:
        typer.echo(json.dumps(status_facts(run), indent=2))
    else:
        show_status(run, console)


@app.command()
@user_errors
def dashboard(
    run_dir: Annotated[Optional[Path], typer.Argument(help="A run folder (holds run.json).")] = None,
    storage: Annotated[Optional[str], Opt(help="Optuna storage URL, instead of a run folder.")] = None,
    study_name: Annotated[Optional[str], Opt(help="Study name in --storage.")] = None,
    port: Annotated[int, Opt(help="Port to listen on.")] = 8080,
    host: Annotated[str, Opt(help="Address to bind (0.0.0.0 exposes it to the network).")] = "127.0.0.1",
) -> None:
    """Serve optuna-dashboard on a run, with each trial's spec and weights and the report's figures."""
    from .reporting.dashboard import serve
    from .runs.run import open_run

    serve(open_run(run_dir, storage, study_name), host=host, port=port, console=console)


def _int_list(flag: str, text: str | None) -> list[int] | None:
    try:
        return [int(s) for s in text.split(",")] if text else None
    except ValueError:
        raise KDSearchError(f"{flag}: {text!r} is not a comma list of integers") from None


def _float_list(flag: str, text: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(","))
    except ValueError:
        raise KDSearchError(f"{flag}: {text!r} is not a comma list of numbers") from None


# kdsearch.models.students.references.REFERENCES, named here without importing torch (tests/test_references.py
# checks that the two agree)
REFERENCE_NAMES = ("resnet8", "mobilenetv2-tiny", "vgg-tiny")


def _references(text: str) -> list[str] | None:
    """--references: None for all, [] for none, else the names (checked by train_final)."""
    text = text.strip()
    if text == "all":
        return None
    return [] if text in ("none", "") else [s.strip() for s in text.split(",")]


RULE_HELP = {  # picking rules: `train` and `export` take one instead of trial numbers (kdsearch/analysis/pick.py)
    "min_accuracy": "Rule: the smallest Pareto student with val accuracy >= A (a fraction, e.g. 0.9).",
    "max_params": "Rule: the most accurate Pareto student with at most N params (limits combine).",
    "max_macs": "Rule: the most accurate Pareto student with at most N MACs (limits combine).",
    "max_latency_ms": "Rule: the most accurate Pareto student with latency at most X ms (limits combine).",
    "knee": "Rule: the knee of the val accuracy vs log10(params) front.",
}


def _picked(run, rule, numbers_given: bool) -> int | None:
    """The trial a picking rule chooses (the choice and its reason printed), or None without a rule."""
    from .analysis.pick import choose

    if not rule.given:
        return None
    if numbers_given:
        raise KDSearchError("give a picking rule or --trial/--trials/--front, not both")
    picked = choose(run.study, rule)
    console.print(picked.sentence, highlight=False)
    return picked.number


@app.command()
@user_errors
def train(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (holds run.json).")],
    trial: Annotated[Optional[int], Opt(help="One trial number to retrain (see the Pareto table).")] = None,
    trials: Annotated[Optional[str], Opt(help="Comma list of trial numbers, e.g. 3,9,20.")] = None,
    front: Annotated[bool, Opt("--front", help="Retrain every feasible Pareto member.")] = False,
    min_accuracy: Annotated[Optional[float], Opt(help=RULE_HELP["min_accuracy"])] = None,
    max_params: Annotated[Optional[int], Opt(help=RULE_HELP["max_params"])] = None,
    max_macs: Annotated[Optional[int], Opt(help=RULE_HELP["max_macs"])] = None,
    max_latency_ms: Annotated[Optional[float], Opt(help=RULE_HELP["max_latency_ms"])] = None,
    knee: Annotated[bool, Opt("--knee", help=RULE_HELP["knee"])] = False,
    epochs: Annotated[Optional[int], Opt(help="Training epochs (default: 4x the search's epochs).")] = None,
    seeds: Annotated[Optional[str], Opt(help="Comma list of seeds, e.g. 0,1,2 (default: the study's seed).")] = None,
    baseline: Annotated[bool, Opt("--baseline/--no-baseline", help="Also the control: no teacher, on the teacher's cached views.")] = True,
    all_views_baseline: Annotated[bool, Opt("--all-views-baseline/--no-all-views-baseline", help="Also ordinary training: no teacher, fresh views every epoch (the headline baseline).")] = True,
    lr: Annotated[Optional[float], Opt(help="One fixed learning rate for every arm (instead of --lr-grid).")] = None,
    lr_grid: Annotated[str, Opt(help="Each arm picks its lr on validation from the trial's lr times these.")] = "0.5,1,2",
    lr_probe_epochs: Annotated[Optional[int], Opt(help="Choose each arm's lr from probes of N epochs (first seed), then train every seed the full --epochs (default: probes of 1/5 of --epochs when that is at least one epoch; 0: the candidates train the full budget and the first seed's result is the chosen one).")] = None,
    subset: Annotated[bool, Opt("--subset/--full-data", help="Keep the search's training subset instead of the full split.")] = False,
    device: Annotated[Optional[str], Opt(help="auto, cpu, cuda or mps (default: the run's).")] = None,
    batch_size: Annotated[Optional[int], Opt(help="Training batch size of every arm (default: the run's [train] batch_size).")] = None,
    views: Annotated[Optional[int], Opt(help="Teacher views cached per image for the distilled arm (default: one per epoch where --epochs exceeds the run's [train] views, so it sees fresh views as ordinary training does).")] = None,
    threads: Annotated[Optional[int], Opt(help="CPU threads for training (default: the run's; with --jobs on a CPU, the cores shared out).")] = None,
    jobs: Annotated[int, Opt(help="Train this many models at once, each in its own process on the device (arms, seeds, lr candidates).")] = 1,
    temperature: Annotated[Optional[float], Opt(help="The distilled arm's temperature T instead of the trial's (the arms without a teacher are kept).")] = None,
    alpha: Annotated[Optional[float], Opt(help="The distilled arm's loss weight alpha in [0, 1] instead of the trial's: how much the teacher counts.")] = None,
    inherit: Annotated[bool, Opt("--inherit", help="(one-shot runs) Start every model from the subnet's inherited weights: fine-tuning, in RUN/final/<trial>/inherited/ (no references beside it).")] = False,
    references: Annotated[str, Opt(help=f"Hand-written references trained beside each student by the same arms and recipe, each scaled to the largest width with at most the student's parameters: a comma list of {', '.join(REFERENCE_NAMES)}; all; or none.")] = "all",
) -> None:
    """Retrain chosen students at full budget, with the teacher and without: what distillation adds."""
    from .analysis.pick import Rule
    from .final import LrPolicy, train_final
    from .runs.run import open_run

    numbers = ([trial] if trial is not None else []) + (_int_list("--trials", trials) or [])
    policy = LrPolicy(grid=_float_list("--lr-grid", lr_grid), fixed=lr, probe_epochs=lr_probe_epochs)
    rule = Rule(min_accuracy, max_params, max_macs, max_latency_ms, knee)
    if rule.given and (front or numbers):
        raise KDSearchError("give a picking rule or --trial/--trials/--front, not both")
    if front and numbers:
        raise KDSearchError("give --front or trial numbers, not both")
    run = open_run(run_dir)
    picked = _picked(run, rule, front or bool(numbers))
    numbers = [picked] if picked is not None else numbers
    train_final(run, numbers, front=front, epochs=epochs, seeds=_int_list("--seeds", seeds),
                baseline=baseline, all_views=all_views_baseline, policy=policy, full_data=not subset, device=device,
                batch_size=batch_size, views=views, threads=threads, jobs=jobs, temperature=temperature, alpha=alpha,
                references=_references(references), inherit=inherit, console=console)


@app.command()
@user_errors
def results(
    run_dirs: Annotated[list[Path], typer.Argument(help="One or more run folders.")],
    out: Annotated[Path, Opt(help="Markdown file to write.")] = Path("RESULTS.md"),
    figures: Annotated[Optional[Path], Opt(help="Folder for the figures (default: <out>-figures).")] = None,
    preface: Annotated[Optional[Path], Opt(help="Markdown placed before the runs (the question, what was not run).")] = None,
) -> None:
    """Write a Markdown results document (teacher, front, final training, figure, provenance) from runs."""
    from .runs.provenance import command_line
    from .reporting.results import write_results

    write_results(run_dirs, out, figures, command=command_line(), console=console, preface=preface)


@app.command()
@user_errors
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (holds run.json).")],
    trial: Annotated[Optional[int], Opt(help="Trial number to export (see the Pareto table), or give a rule.")] = None,
    out: Annotated[Optional[Path], Opt(help="Folder to write (default: RUN/export/<trial in five digits>, with -ce or -ce-all for a baseline arm).")] = None,
    weights: Annotated[str, Opt(help="auto (final training's if any, else the search's), search or final.")] = "auto",
    opset: Annotated[int, Opt(help="ONNX opset version.")] = 18,
    min_accuracy: Annotated[Optional[float], Opt(help=RULE_HELP["min_accuracy"])] = None,
    max_params: Annotated[Optional[int], Opt(help=RULE_HELP["max_params"])] = None,
    max_macs: Annotated[Optional[int], Opt(help=RULE_HELP["max_macs"])] = None,
    max_latency_ms: Annotated[Optional[float], Opt(help=RULE_HELP["max_latency_ms"])] = None,
    knee: Annotated[bool, Opt("--knee", help=RULE_HELP["knee"])] = False,
    int8: Annotated[bool, Opt("--int8", help="Also write student.int8.onnx (static int8, calibrated on training images) and check its accuracy, size and latency.")] = False,
    arm: Annotated[str, Opt(help="kd: the distilled student; ce or ce-all: final training's baseline without a teacher (on the teacher's cached views, or ordinary training).")] = "kd",
) -> None:
    """Export a student: spec.json, student.safetensors, student.onnx (checked against PyTorch) and MODEL_CARD.md."""
    from .export.folder import export_trial
    from .analysis.pick import Rule
    from .runs.run import open_run

    rule = Rule(min_accuracy, max_params, max_macs, max_latency_ms, knee)
    if rule.given and trial is not None:
        raise KDSearchError("give a picking rule or --trial, not both")
    if not rule.given and trial is None:
        raise KDSearchError("name the student to export: --trial N, or a rule (--min-accuracy, --max-params, "
                            "--max-macs, --max-latency-ms, --knee)")
    run = open_run(run_dir)
    trial = _picked(run, rule, False) if rule.given else trial
    done = export_trial(run, trial, out, weights=weights, opset=opset, int8=int8, arm=arm)
    what = f"trial {trial}" + (f" {arm} ({done.info['arm_label']})" if arm != "kd" else "")
    console.print(f"exported {what} ({done.source} weights) to {done.folder}: spec.json, student.safetensors, "
                  f"student.onnx (ONNX Runtime matches PyTorch within {done.max_abs_diff:.1e})"
                  + (", student.int8.onnx" if int8 else "") + ", export.json, MODEL_CARD.md", highlight=False)
    if int8:
        from .export.int8 import int8_lines

        for line in int8_lines(done.info["int8"]):
            console.print(line, highlight=False)


def main() -> None:  # pragma: no cover - console-script entry
    sys.exit(app())
