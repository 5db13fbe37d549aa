"""Does searching every student family find a better front than plain students alone?

Reads two folders written by the pruners benchmark for the same study, trials, epochs and seeds: one
over the default space (plain, residual and inverted students) and one with
`--set space.family="plain"`. For each seed it replays both unpruned studies under the shipped
default pruner (or `--pruner`), and prints each front of validation accuracy vs params with its
hypervolume (benchmarks.pruners.hypervolume: on log10 params, reference 1e6 params, not the report's
teacher size), then the mean hypervolume per space. With `--out DIR`, each space and seed is also a row
of DIR/results.jsonl (its front and hypervolume, the two folders, the pruner), which BENCHMARKS.md's
tables are made from.

    python -m benchmarks families benchmarks/results/pruners-cifar10 benchmarks/results/pruners-cifar10-plain --epochs 4
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import optuna
from rich.console import Console
from rich.table import Table

from kdsearch.config import PrunerConfig
from kdsearch.search.pruners import make_pruner, replay
from kdsearch.search.study import DIRECTIONS

from .harness import ResultFile
from .pruners import as_study, front, hypervolume, pruner_config


def studies(folder: Path) -> dict[str, optuna.Study]:
    """The unpruned studies of a pruners benchmark folder, by seed ('seed0', ...)."""
    url = f"sqlite:///{folder / 'unpruned.db'}"
    return {s.study_name.rsplit("-", 1)[-1]: optuna.load_study(study_name=s.study_name, storage=url)
            for s in optuna.get_all_study_summaries(url)}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks families", description=__doc__.splitlines()[0])
    ap.add_argument("all_families", type=Path)
    ap.add_argument("plain", type=Path)
    ap.add_argument("--pruner", default=PrunerConfig().name, help="replayed pruner (default: the shipped default)")
    ap.add_argument("--epochs", type=int, required=True, help="epochs per trial of the studies")
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--out", type=Path, help="also append each space's front per seed to OUT/results.jsonl")
    args = ap.parse_args(argv)
    results = ResultFile(args.out, "families", argv) if args.out else None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    console = Console(width=150)
    folders = {"all families": args.all_families, "plain only": args.plain}
    spaces = {name: studies(folder) for name, folder in folders.items()}

    def complete(study: optuna.Study) -> int:
        return sum(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False))

    # seeds that both spaces finished (a benchmark still running has later seeds part done)
    seeds = sorted(seed for seed in set.intersection(*(set(s) for s in spaces.values()))
                   if all(complete(by_seed[seed]) >= args.trials for by_seed in spaces.values()))
    hvs: dict[str, list[float]] = {name: [] for name in spaces}
    for seed in seeds:
        for name, by_seed in spaces.items():
            study = by_seed[seed]
            objectives = study.user_attrs.get("objectives", ["accuracy", "params", "latency"])  # the pruners benchmark records them
            trials = sorted((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.number)[: args.trials]
            pc = pruner_config(args.pruner, PrunerConfig())
            ended = as_study(replay(trials, make_pruner(pc, objectives), args.epochs),
                             [DIRECTIONS[o] for o in objectives])
            members = front(ended)
            hv = hypervolume(members)
            hvs[name].append(hv)
            if results:
                results.append({"space": name, "seed": seed, "pruner": args.pruner, "epochs": args.epochs,
                                "trials": len(trials), "folder": str(folders[name]), "hypervolume": hv,
                                "front": [[p.cost("params"), p.accuracy, p.attrs.get("arch", "")] for p in members]},
                               {"all_families": str(args.all_families), "plain": str(args.plain)})
            table = Table(title=f"{seed}, {name}: {len(trials)} trials, pruner {args.pruner}, hypervolume {hv:.4f}")
            for col in ("params", "val acc", "architecture"):
                table.add_column(col)
            for p in members:
                table.add_row(f"{p.cost('params'):,.0f}", f"{p.accuracy:.2%}", str(p.attrs.get("arch", "")))
            console.print(table)
    for name, values in hvs.items():
        console.print(f"{name:14s} hypervolume mean {statistics.mean(values):.4f} over {len(values)} seeds "
                      f"({', '.join(f'{v:.4f}' for v in values)})")
