"""Search quality per pruner: the same study with none, median, asha and pareto.

For each seed, every pruner runs the same trials: the random sampler draws the same student
and hyperparameters for trial i whatever happened to earlier trials, so a trial pruned under
one pruner is the very trial that ran to the end under `none`. Data, teacher and the
teacher-logit cache are built once and shared. Printed per pruner, relative to `none`:

- epochs trained (sum over trials) as a fraction of `none`;
- hypervolume of the final front of validation accuracy vs params, normalized (accuracy in
  [0, 1]; log10 params mapped from [2, 6] to [0, 1], clipped), reference point (acc 0, 1e6
  params), as a fraction of `none`;
- how many of the `none` front's smallest third of students the pruner killed.

    python benchmarks/bench_pruners.py studies/digits-demo.toml --seeds 0 1 2
    python benchmarks/bench_pruners.py studies/cifar10-resnet32-cpu.toml --subset 2000 --trials 12 --epochs 4
    python benchmarks/bench_pruners.py studies/digits-demo.toml --pruners pareto --set pruner.margin=0 --set pruner.warmup_epochs=2
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
import tomllib

import optuna
from optuna.trial import TrialState
from rich.console import Console

from kdsearch.config import load_config
from kdsearch.pruning import CURVE, make_pruner
from kdsearch.report import Point, front_2d, hypervolume_log, trial_points
from kdsearch.search import DIRECTIONS, objective, prepare

PRUNERS = ("none", "median", "asha", "pareto")
def front(study: optuna.Study) -> list[Point]:
    """The accuracy-vs-params front of complete trials (the report's step line)."""
    return front_2d(trial_points(study), "params")


def hypervolume(members: list[Point]) -> float:
    """The report's hypervolume on log10 params (from 100 to 1e6), reference point (1e6 params, accuracy 0)."""
    return hypervolume_log([(p.cost("params"), p.accuracy) for p in members], 1e6)


def run_one(ctx, cfg, pruner_name: str, seed: int) -> optuna.Study:
    ctx.cfg = cfg
    cfg.seed = seed
    cfg.pruner.name = pruner_name
    ctx.pruner = make_pruner(cfg.pruner, cfg.objectives)
    study = optuna.create_study(directions=[DIRECTIONS[o] for o in cfg.objectives],
                                sampler=optuna.samplers.RandomSampler(seed=seed))
    study.optimize(lambda t: objective(t, ctx), n_trials=cfg.trials)
    return study


def parse_set(item: str) -> tuple[str, object]:
    """'pruner.margin=0.01' -> ('pruner.margin', 0.01); the value is read as TOML, else as a string."""
    key, _, value = item.partition("=")
    try:
        return key, tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study_file")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--trials", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--subset", type=int)
    ap.add_argument("--run-dir", help="where teacher and logit cache live (default: a temporary folder)")
    ap.add_argument("--pruners", nargs="+", default=list(PRUNERS), choices=PRUNERS,
                    help="pruners to compare (none, the reference, always runs)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a study-file setting, e.g. pruner.margin=0 (repeatable)")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    console = Console()
    tmp = tempfile.mkdtemp(prefix="kdsearch-bench-")
    cfg = load_config(args.study_file, {"trials": args.trials, "epochs": args.epochs, "data.subset": args.subset,
                                        "run_dir": args.run_dir or tmp, "storage": f"sqlite:///{tmp}/bench.db",
                                        **dict(parse_set(item) for item in args.set)})
    ctx, _ = prepare(cfg, console)
    console.print(f"{cfg.trials} trials x {cfg.epochs} epochs, random sampler, seeds {args.seeds}, "
                  f"objectives {cfg.objectives}, pruner settings {cfg.pruner}")
    pruners = ["none"] + [p for p in PRUNERS if p in args.pruners and p != "none"]
    rows: dict[str, list[tuple[float, float, int, int]]] = {p: [] for p in pruners}
    for seed in args.seeds:
        studies = {}
        for name in pruners:
            start = time.perf_counter()
            studies[name] = run_one(ctx, cfg, name, seed)
            console.print(f"seed {seed} {name:7s} {time.perf_counter() - start:6.1f} s")
        base = studies["none"]
        base_epochs = sum(len(t.user_attrs.get(CURVE, [])) for t in base.trials)
        base_front = front(base)
        base_hv = hypervolume(base_front)
        small = {p.number for p in base_front[: math.ceil(len(base_front) / 3)]}  # sorted by params
        for name, study in studies.items():
            epochs = sum(len(t.user_attrs.get(CURVE, [])) for t in study.trials)
            killed = sum(1 for t in study.trials if t.number in small and t.state == TrialState.PRUNED)
            rows[name].append((epochs / base_epochs, hypervolume(front(study)) / base_hv, killed, len(small)))
            console.print(f"seed {seed} {name:7s} epochs {rows[name][-1][0]:6.1%}  hypervolume {rows[name][-1][1]:6.1%}"
                          f"  small front members killed {killed} of {len(small)}")
    console.print(f"\n{'pruner':8s} {'epochs vs none':>15s} {'hypervolume vs none':>20s} {'small front members killed':>28s}")
    for name, vals in rows.items():
        ep = statistics.mean(v[0] for v in vals)
        hv = statistics.mean(v[1] for v in vals)
        killed, total = sum(v[2] for v in vals), sum(v[3] for v in vals)
        console.print(f"{name:8s} {ep:15.1%} {hv:20.1%} {killed:>20d} of {total}")


if __name__ == "__main__":
    main()
