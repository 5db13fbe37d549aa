"""Search quality per pruner: one unpruned study per seed, replayed under every pruner.

For each seed, the study runs once without pruning (the random sampler, seeded per trial
number, so trial i is the same student whatever happened before it, and its training seed
comes from the study seed and its number). `kdsearch.search.pruners.replay` then gives exactly what a
study with each pruner would have run (tests/test_pruning.py checks replay against live
studies), so every pruner and setting is compared on the very same trials, at the cost of one
study per seed. The unpruned studies are kept in OUT/unpruned.db (resumable: an interrupted
benchmark continues where it stopped; a new pruner can be measured on them without training).

Printed per pruner, relative to `none`:
- epochs trained (sum over trials) as a fraction of `none`;
- hypervolume of the final front of validation accuracy vs params, normalized (accuracy in
  [0, 1]; log10 params mapped from [2, 6] to [0, 1], clipped), reference point (acc 0, 1e6
  params), as a fraction of `none`, and its absolute value;
- how many of the `none` front's smallest third of students the pruner killed.

Pruners use the shipped defaults (`[pruner]` of kdsearch.config.PrunerConfig) unless
`--study-pruner` takes the study file's; a variant adds settings: `pareto:margin=0,warmup_epochs=2`.
Checks within epochs: run the unpruned studies with them (`--set pruner.checks_per_epoch=4`); a
variant then replays any divisor of it (`pareto:checks_per_epoch=2,warmup_epochs=0.5`).

OUT/summary.json keeps the per-seed figures and, since the suite, the run's provenance (machine,
command, commit: benchmarks.harness).

    python -m benchmarks pruners studies/digits-demo.toml --trials 40 --out bench-out/digits
    python -m benchmarks pruners studies/cifar10-resnet32-cpu.toml --subset 2000 --trials 40 --epochs 4 --out DIR
    python -m benchmarks pruners studies/digits-demo.toml --out DIR --pruners none pareto:margin=0
    python -m benchmarks pruners --run RUN --out DIR --pruners pareto pareto:checks_per_epoch=4,warmup_epochs=0.5
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from pathlib import Path

import optuna
from optuna.trial import TrialState
from rich.console import Console

from kdsearch.analysis.front import Point, front_2d, trial_points
from kdsearch.analysis.hypervolume import hypervolume_log
from kdsearch.config import PrunerConfig, config_from_dict, load_config
from kdsearch.runs.run import open_run
from kdsearch.search.evaluation import pertrial
from kdsearch.search.objective import objective
from kdsearch.search.pruners import epochs_trained, make_pruner, replay
from kdsearch.search.runner import prepare
from kdsearch.search.study import DIRECTIONS, TrialSeeded

from .harness import command, git_commit, machine, parse_set

PRUNERS = ("none", "median", "asha", "moasha", "pareto")


def as_study(trials, directions: list[str]) -> optuna.Study:
    """The trials in an in-memory study, numbered 0, 1, ... in list order (the report reads studies)."""
    study = optuna.create_study(directions=directions)
    study.add_trials(trials)
    return study


def front(study: optuna.Study) -> list[Point]:
    """The accuracy-vs-params front of complete trials (the report's step line)."""
    return front_2d(trial_points(study), "params")


def hypervolume(members: list[Point]) -> float:
    """Hypervolume on log10 params (from 100 to 1e6), reference point (1e6 params, accuracy 0): the report's
    function with a fixed reference, where the report uses the teacher's size."""
    return hypervolume_log([(p.cost("params"), p.accuracy) for p in members], 1e6)


def pruner_config(variant: str, base: PrunerConfig) -> PrunerConfig:
    """'pareto:margin=0,warmup_epochs=2,rungs=[1,2]' -> the base settings with that name and those changes."""
    name, _, settings = variant.partition(":")
    changes = dict(parse_set(s) for s in re.split(r",(?![^\[]*\])", settings) if s)  # not inside [a,b]
    return base.model_copy(update={"name": name, **changes})


def unpruned_study(cfg, seed: int, out: Path, console: Console, ctx_holder: dict) -> list:
    """The seed's study without pruning, from OUT/unpruned.db, run (or finished) first if needed."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{out / 'unpruned.db'}")
    study = optuna.create_study(storage=storage, study_name=f"{cfg.name}-seed{seed}", load_if_exists=True,
                                directions=[DIRECTIONS[o] for o in cfg.objectives],
                                sampler=TrialSeeded(optuna.samplers.RandomSampler(seed=seed), seed))
    study.set_user_attr("objectives", cfg.objectives)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # left by an interrupted run
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if done < cfg.trials:
        if "ctx" not in ctx_holder:
            ctx_holder["ctx"], _ = prepare(cfg, console, record=False)
        ctx = ctx_holder["ctx"]
        ctx.cfg = cfg.model_copy(update={"seed": seed, "trials": 10**9})  # the trial seed; no surplus check here
        ctx.pruner = make_pruner(PrunerConfig(name="none"))
        trained = pertrial.prepare(ctx, console)  # (the replay needs every student trained, curves and all)
        console.print(f"seed {seed}: {done} of {cfg.trials} unpruned trials stored, running the rest")
        while done < cfg.trials:
            study.optimize(lambda t: objective(t, ctx, trained.evaluate), n_trials=cfg.trials - done)
            done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
            if len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))) > cfg.trials:
                raise SystemExit(f"seed {seed}: more failed trials than --trials; see the study's `error` attributes")
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    return sorted(trials, key=lambda t: t.number)[: cfg.trials]


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks pruners", description=__doc__.splitlines()[0])
    ap.add_argument("study_file", nargs="?", help="the study to run unpruned (not with --run)")
    ap.add_argument("--run", help="instead: replay a kdsearch run searched with --pruner none (its study, as it ran)")
    ap.add_argument("--out", required=True, help="folder for the unpruned studies and summary.json")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--trials", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--subset", type=int)
    ap.add_argument("--run-dir", help="where teacher and logit cache live (default: OUT/run)")
    ap.add_argument("--pruners", nargs="+", default=list(PRUNERS), help="pruners or variants (name:key=value,...)")
    ap.add_argument("--study-pruner", action="store_true", help="pruner settings from the study file, not the defaults")
    ap.add_argument("--markdown", action="store_true", help="also print the table, and each seed, as markdown")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a study-file setting, e.g. space.family=\"plain\" (repeatable)")
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    console = Console(width=150)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.run:  # a finished search without pruning: replayed as it ran (with TPE, an estimate: see replay)
        run = open_run(args.run)
        if run.config["pruner"]["name"] != "none":
            raise SystemExit(f"{args.run} was searched with the {run.config['pruner']['name']} pruner: replay needs --pruner none")
        cfg = config_from_dict(run.config)
        args.seeds = [cfg.seed]
    elif not args.study_file:
        raise SystemExit("give a study file, or --run RUN")
    else:
        cfg = load_config(args.study_file, {"trials": args.trials, "epochs": args.epochs, "data.subset": args.subset,
                                            "run_dir": args.run_dir or str(out / "run"),
                                            **dict(parse_set(item) for item in args.set)})
    base = cfg.pruner if args.study_pruner else PrunerConfig()
    variants = ["none"] + [v for v in args.pruners if v != "none"]
    console.print(f"{cfg.trials} trials x {cfg.epochs} epochs, random sampler, seeds {args.seeds}, objectives "
                  f"{cfg.objectives}, pruner settings ({'study file' if args.study_pruner else 'shipped defaults'}) {base}")
    rows: dict[str, list[dict]] = {v: [] for v in variants}
    ctx_holder: dict = {}
    for seed in args.seeds:
        unpruned = run.study.trials if args.run else unpruned_study(cfg, seed, out, console, ctx_holder)
        directions = [DIRECTIONS[o] for o in cfg.objectives]
        base_epochs = sum(epochs_trained(t) for t in unpruned)
        base_front = front(as_study(unpruned, directions))
        base_hv = hypervolume(base_front)
        small = {p.number for p in base_front[: math.ceil(len(base_front) / 3)]}  # sorted by params
        for variant in variants:
            pc = pruner_config(variant, base)
            ended = as_study(replay(unpruned, make_pruner(pc, cfg.objectives), cfg.epochs, pc.checks_per_epoch),
                             directions)
            epochs = sum(epochs_trained(t) for t in ended.trials)  # a check within an epoch counts its fraction
            members = front(ended)
            hv = hypervolume(members)
            killed = sum(1 for t in ended.trials if t.number in small and t.state == TrialState.PRUNED)
            rows[variant].append({"seed": seed, "epochs": epochs / base_epochs, "hv": hv / base_hv, "hv_abs": hv,
                                  "killed": killed, "small": len(small), "front": len(members)})
            console.print(f"seed {seed} {variant:24s} epochs {epochs / base_epochs:6.1%}  hypervolume "
                          f"{hv / base_hv:6.1%} ({hv:.4f})  small front members killed {killed} of {len(small)}")
    console.print(f"\n{'pruner':24s} {'epochs vs none':>15s} {'hypervolume vs none':>20s} {'hypervolume':>12s} "
                  f"{'small front members killed':>28s}")
    summary = {"study_file": args.study_file, "run": args.run, "trials": cfg.trials, "epochs": cfg.epochs, "seeds": args.seeds,
               "objectives": cfg.objectives, "base_pruner": base.model_dump(), "sets": args.set, "rows": rows,
               "provenance": {"machine": machine(), "command": command("pruners", argv), "commit": git_commit()}}
    for variant, vals in rows.items():
        ep, hv, hv_abs, killed, total = aggregate(vals)
        console.print(f"{variant:24s} {ep:15.1%} {hv:20.1%} {hv_abs:12.4f} {killed:>20d} of {total}")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    if args.markdown:
        print(markdown(rows))


def aggregate(vals: list[dict]) -> tuple[float, float, float, int, int]:
    """One variant over the seeds: mean epochs and hypervolume vs none, mean hypervolume, and the
    small front members killed of those there were."""
    return (statistics.mean(v["epochs"] for v in vals), statistics.mean(v["hv"] for v in vals),
            statistics.mean(v["hv_abs"] for v in vals), sum(v["killed"] for v in vals), sum(v["small"] for v in vals))


def markdown(rows: dict[str, list[dict]], labels: dict[str, str] | None = None) -> str:
    """The summary table as BENCHMARKS.md shows it, then each variant's epochs / hypervolume per seed.
    `labels`: a variant's name in the table where it is not its own (e.g. "**pareto** (the default)")."""
    labels = labels or {}
    lines = ["| pruner | epochs vs none | hypervolume vs none | hypervolume | small front members killed |",
             "|---|---|---|---|---|"]
    for variant, vals in rows.items():
        ep, hv, hv_abs, killed, total = aggregate(vals)
        lines.append(f"| {labels.get(variant, variant)} | {ep:.1%} | {hv:.1%} | {hv_abs:.4f} | {killed} of {total} |")
    lines.append("")
    lines += [f"{variant}, per seed: " + ", ".join(f"{v['epochs']:.1%} / {v['hv']:.1%}" for v in vals)
              for variant, vals in rows.items() if variant != "none"]
    return "\n".join(lines)


def load_summary(folder: Path) -> dict:
    return json.loads((Path(folder) / "summary.json").read_text())
