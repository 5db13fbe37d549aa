"""Subnet evaluation: what scoring one subnet of a one-shot study costs, per family, and two ways to cut it.

A one-shot trial scores a subnet with the weights it inherits: its batch norm recalibrated on 2,000
training images, then a validation pass (kdsearch.training.subnet_eval), so this cost decides how many
students a CPU-hour sees. The subnets are drawn at random from the subnet spaces a one-shot study
builds for the given budgets (the CIFAR-10 study's by default: the default space, 93,000 params,
15M MACs) on CIFAR-10-shaped random images (timings do not depend on the pixels or the weights). The
baseline is kdsearch's evaluation as it runs (contiguous layout, 5,000 validation images); against it,
per subnet and in interleaved rounds: the same in the channels_last layout, and a first pass on
`--first-pass` validation images (what a two-stage evaluation would pay for every subnet before
scoring the promising ones on all). Recalibration and validation are also timed apart. The ratio is
baseline time / variant time: above 1, the variant is faster. `--sandwich-steps N` also times N steps of
the family's supernet training (the sandwich rule: largest, smallest and two random subnets, `--batch-size`,
the default recipe's SGD) and gives an epoch's time on `--train-images` images, so that a one-shot
study's cost (supernet epochs plus subnets scored) can be set against the per-trial search's. With
--out, one row per subnet, and one per family for the supernet steps.

`--replay RUN` measures screening ([study] screen) on a finished one-shot run instead, from what its trials
recorded (each subnet's first-pass accuracy and seconds beside its full evaluation): the screening rule
replayed in trial order says which subnets it would have stopped after their first pass, how many of them
are on the run's front (what screening would have lost), and the evaluation time it would have saved;
beside it, how well the first pass ranks subnets (Kendall tau against the full validation accuracy, over
all pairs and within size bands). With --out, one row.

    python -m benchmarks subnet-eval --threads 1 --subnets 3 --rounds 3 --out benchmarks/results/subnet-eval
    python -m benchmarks subnet-eval --threads 1 --subnets 0 --sandwich-steps 5 --out benchmarks/results/subnet-eval
    python -m benchmarks subnet-eval --replay results/cifar10-resnet32-oneshot --out benchmarks/results/subnet-eval
"""

from __future__ import annotations

import argparse
import random
from math import nan
import statistics
from types import SimpleNamespace

import torch
from optuna.trial import TrialState

from kdsearch.config import StudyConfig
from kdsearch.measure.costs import count_macs, count_params
from kdsearch.models.students.registry import build
from kdsearch.models.students.supernet import Subnets, extract
from kdsearch.search.budgets import within_budgets
from kdsearch.search.evaluation.oneshot import CALIBRATION_IMAGES, LAYOUTS, subnet_space
from kdsearch.training.distill import accuracy, eval_batch_size, make_optimizer, recipe_from, steps_per_epoch
from kdsearch.training.memory_format import fast_memory_format
from kdsearch.training.sandwich import sandwich, sandwich_step
from kdsearch.training.subnet_eval import inherit, recalibrate

from .harness import ResultFile, interleaved, random_images, timed

CIFAR = SimpleNamespace(in_channels=3, num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)


def in_budget_subnets(cfg: StudyConfig, family: str, n: int, seed: int):
    """The family's subnet space for the budgets and n random subnets within them (with their params)."""
    space = subnet_space(cfg, CIFAR, family)
    rng, out = random.Random(seed), []
    for _ in range(200 * n):
        if len(out) == n:
            break
        spec = space.sample(rng)
        model = build(spec)
        if within_budgets(cfg, model, (3, 32, 32)):
            out.append((spec, {"params": count_params(model), "macs": count_macs(model, (3, 32, 32))}))
    return space, out


def score(supernet, spec, x_calib, x_val, y_val, layout: torch.memory_format) -> float:
    """kdsearch's evaluation (extract, recalibrate, validate) with the student and images in `layout`."""
    student = inherit(supernet, spec, x_calib, layout)
    return accuracy(student, x_val.contiguous(memory_format=layout), y_val, eval_batch_size(x_val.device))


def sandwich_seconds(space, steps: int, batch: int, seed: int, layout: torch.memory_format) -> float:
    """Median seconds of one supernet training step (forward and backward of the sandwich's subnets, then the
    optimizer's step) on random images, labels and teacher logits in `layout`, after one warm-up step."""
    supernet = build(space.largest()).train().to(memory_format=layout)
    subnets = Subnets(supernet)
    recipe = recipe_from(StudyConfig().train, 1, 0.2, 4.0, 0.9)
    opt, _ = make_optimizer(supernet, recipe.optimizer, recipe.lr, recipe.weight_decay, steps + 1, recipe.schedule,
                            recipe.warmup)
    g = torch.Generator().manual_seed(seed)
    images, targets = torch.rand(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g)
    images = images.contiguous(memory_format=layout)
    logits = torch.randn(batch, 10, generator=g)

    def step(i: int) -> None:
        opt.zero_grad(set_to_none=True)
        sandwich_step(subnets, sandwich(space, i, seed, 2), images, targets, logits, recipe)
        opt.step()
    step(0)
    return statistics.median(timed(lambda i=i: step(i)) for i in range(1, steps + 1))


def replay(run_dir: str) -> dict:
    """Screening replayed on a one-shot run's scored subnets (those with a recorded first pass), in trial order:
    a subnet is stopped when a subnet kept before it beats its first pass by the margin (oneshot.dominating)."""
    from kdsearch.analysis.front import pareto_trials
    from kdsearch.runs.run import open_run
    from kdsearch.runs.trial_attrs import FIRST_PASS
    from kdsearch.search.evaluation.oneshot import SCREEN_MARGIN, dominating
    from scipy.stats import kendalltau

    from .fidelity import within_band_kendall

    run = open_run(run_dir)
    objectives = run.config["objectives"]
    i = objectives.index("accuracy")
    scored = [t for t in run.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if FIRST_PASS in t.user_attrs]
    if not scored:
        raise SystemExit(f"{run_dir}: no scored subnet with a recorded first pass (a one-shot run of kdsearch >= this)")
    kept, stopped = [], []
    for t in scored:
        costs = {o: t.values[j] for j, o in enumerate(objectives) if j != i}
        first = t.user_attrs[FIRST_PASS]["accuracy"]
        (stopped if dominating(kept, objectives, costs, first + SCREEN_MARGIN) is not None else kept).append(t)
    front = {t.number for t in pareto_trials(run.study)}
    full_s = sum(t.user_attrs["eval_seconds"] for t in scored)
    saved_s = sum(t.user_attrs["eval_seconds"] - t.user_attrs[FIRST_PASS]["seconds"] for t in stopped)
    first = {t.number: t.user_attrs[FIRST_PASS]["accuracy"] for t in scored}
    full = {t.number: t.values[i] for t in scored}
    params = {t.number: t.user_attrs["params"] for t in scored}
    band, pairs = within_band_kendall(first, full, params)
    baseline, _ = within_band_kendall(params, full, params)
    return {"subnets": len(scored), "stopped": len(stopped), "front": len(front),
            "front_stopped": sorted(front & {t.number for t in stopped}), "eval_s": full_s, "saved_s": saved_s,
            "first_pass_images": scored[0].user_attrs[FIRST_PASS]["images"], "margin": SCREEN_MARGIN,
            "kendall": kendalltau(list(first.values()), list(full.values())).statistic if len(scored) > 1 else nan,
            "within_band_kendall": band, "band_pairs": pairs, "params_baseline": baseline}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks subnet-eval", description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--families", nargs="+", default=["residual", "inverted"])
    ap.add_argument("--subnets", type=int, default=4, help="random in-budget subnets per family")
    ap.add_argument("--max-params", type=int, default=93000)
    ap.add_argument("--max-macs", type=int, default=15_000_000)
    ap.add_argument("--val-images", type=int, default=5000)
    ap.add_argument("--calibration-images", type=int, default=CALIBRATION_IMAGES)
    ap.add_argument("--first-pass", type=int, default=1000, help="validation images of a first pass")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sandwich-steps", type=int, default=0, help="also time N supernet training steps per family")
    ap.add_argument("--train-images", type=int, default=45000, help="images of a supernet epoch (for its time)")
    ap.add_argument("--batch-size", type=int, default=128, help="of the supernet steps (the default recipe's)")
    ap.add_argument("--out", help="append one row per subnet to OUT/results.jsonl")
    ap.add_argument("--replay", metavar="RUN", help="replay screening on a finished one-shot run instead")
    args = ap.parse_args(argv)
    if args.replay:
        row = replay(args.replay)
        print(f"{args.replay}: {row['subnets']} subnets scored; screening on a {row['first_pass_images']:,}-image "
              f"first pass (margin {row['margin']:.1%}) would have stopped {row['stopped']} "
              f"({row['stopped'] / row['subnets']:.0%}), {len(row['front_stopped'])} of the {row['front']} front "
              f"members among them {row['front_stopped']}, and saved {row['saved_s'] / 60:.1f} of "
              f"{row['eval_s'] / 60:.1f} evaluation minutes ({row['saved_s'] / row['eval_s']:.0%})")
        print(f"first pass vs full validation accuracy: Kendall {row['kendall']:.3f}; within size bands (< 2x) "
              f"{row['within_band_kendall']:.3f} over {row['band_pairs']} pairs (parameter-count baseline "
              f"{row['params_baseline']:.3f})")
        if args.out:
            ResultFile(args.out, "subnet-eval", argv).append({"replay": args.replay, **row}, {})
        return
    torch.set_num_threads(args.threads)
    cfg = StudyConfig.model_validate({"max_params": args.max_params, "max_macs": args.max_macs})
    g = torch.Generator().manual_seed(args.seed)
    x_calib, _ = random_images(args.calibration_images, generator=g)
    x_val, y_val = random_images(args.val_images, generator=g)
    results = ResultFile(args.out, "subnet-eval", argv) if args.out else None
    settings = {k: getattr(args, k) for k in ("threads", "max_params", "max_macs", "val_images",
                                              "calibration_images", "first_pass", "rounds", "seed")}
    contiguous, channels_last = torch.contiguous_format, torch.channels_last
    print(f"torch {torch.__version__}, {args.threads} threads; per subnet, median of {args.rounds} interleaved rounds: "
          f"recalibration on {args.calibration_images} images + validation on {args.val_images} (baseline), "
          f"ratio = baseline / variant")
    print(f"{'family':9s} {'params':>7s} {'MACs':>10s} {'base s':>7s} {'recal s':>7s} {'val s':>6s} "
          f"{'x ch_last':>9s} {'x first':>8s}  subnet")
    for family in args.families:
        space, subnets = in_budget_subnets(cfg, family, args.subnets, args.seed)
        supernet = build(space.largest()).eval()
        base_times = []
        for spec, costs in subnets:
            student = extract(supernet, spec)
            score(supernet, spec, x_calib, x_val[:256], y_val[:256], contiguous)  # warm-up
            times = interleaved({
                "baseline": lambda: score(supernet, spec, x_calib, x_val, y_val, contiguous),
                "channels_last": lambda: score(supernet, spec, x_calib, x_val, y_val, channels_last),
                "first_pass": lambda: score(supernet, spec, x_calib, x_val[:args.first_pass], y_val[:args.first_pass],
                                            contiguous),
                "recalibration": lambda: recalibrate(student, x_calib),
                "validation": lambda: accuracy(student, x_val, y_val, eval_batch_size(x_val.device)),
            }, args.rounds)
            med = {k: t.median for k, t in times.items()}
            base = med["baseline"]
            base_times.append(base)
            print(f"{family:9s} {costs['params']:7,d} {costs['macs']:10,d} {base:7.2f} {med['recalibration']:7.2f} "
                  f"{med['validation']:6.2f} {base / med['channels_last']:8.2f}x {base / med['first_pass']:7.2f}x  "
                  f"{spec.summary()}")
            if results:
                results.append({"family": family, "subnet": spec.summary(), **costs,
                                **{k: t.as_dict() for k, t in times.items()},
                                "ratio_channels_last": base / med["channels_last"],
                                "ratio_first_pass": base / med["first_pass"]},
                               {**settings, "largest": space.largest().summary()})
        if base_times:
            print(f"{family}: {statistics.median(base_times):.2f} s a subnet (median), about "
                  f"{3600 / statistics.median(base_times):,.0f} subnets per hour at {args.threads} thread(s); "
                  f"supernet {space.largest().summary()}")
        if args.sandwich_steps:  # in each layout; kdsearch trains in the one fast_memory_format picks here
            chosen = fast_memory_format(supernet, torch.device("cpu"), (3, 32, 32), args.batch_size)
            for layout in (contiguous, channels_last):
                per_step = sandwich_seconds(space, args.sandwich_steps, args.batch_size, args.seed, layout)
                epoch_s = per_step * steps_per_epoch(args.train_images, args.batch_size)
                name = LAYOUTS[layout] + (" (chosen)" if layout == chosen else "")
                print(f"{family} supernet {space.largest().summary()} ({count_params(supernet):,} params), {name}: "
                      f"{per_step:.2f} s a sandwich step, {epoch_s / 60:.0f} min an epoch on "
                      f"{args.train_images:,} images")
                if results:
                    results.append({"family": family, "supernet": space.largest().summary(),
                                    "supernet_params": count_params(supernet), "layout": LAYOUTS[layout],
                                    "chosen": layout == chosen, "sandwich_step_s": per_step, "epoch_s": epoch_s},
                                   {**settings, "sandwich_steps": args.sandwich_steps,
                                    "train_images": args.train_images, "batch_size": args.batch_size})
