"""Which students a short GPU lease retrains, and for how many epochs (used by gpu_resnet50.sh).

Students: for each divisor N given, the most accurate feasible Pareto member with at most 1/N
of the teacher's params (duplicates dropped). Epochs: as many as fit `--seconds` for one
process running its 2 arms x `--seeds` models, from the seconds per epoch its own search trial
took (times `--slowdown` for processes sharing the GPU), between --min-epochs and --max-epochs.
Prints one line: "TRIALS EPOCHS", e.g. "12,5,31 24".

    python scripts/gpu/gpu_plan.py results/cifar10-resnet50 --divisors 10,30,100 --seconds 150
"""

from __future__ import annotations

import argparse
import math

from kdsearch import api
from kdsearch.runs.trial_attrs import CURVE


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--divisors", default="10,30,100")
    ap.add_argument("--seconds", type=float, default=150.0, help="wall-clock budget of each trial's process")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--slowdown", type=float, default=1.5)
    ap.add_argument("--min-epochs", type=int, default=4)
    ap.add_argument("--max-epochs", type=int, default=60)
    args = ap.parse_args()

    r = api.open_run(args.run)
    teacher_params = r.study.user_attrs["teacher"]["params"]
    front = api.front(r)
    picks: list[int] = []
    for n in (int(d) for d in args.divisors.split(",")):
        fit = front[front["params"] <= teacher_params / n]
        if len(fit):
            number = int(fit.sort_values("val_accuracy", ascending=False).iloc[0]["number"])
            if number not in picks:
                picks.append(number)
    if not picks:
        raise SystemExit("no feasible Pareto member to retrain")
    per_epoch = []
    for t in r.study.get_trials(deepcopy=False):
        if t.number in picks and t.datetime_complete and t.datetime_start:
            epochs = max(len(t.user_attrs.get(CURVE, [])), 1)  # kdsearch keeps the curve, not intermediate values
            per_epoch.append((t.datetime_complete - t.datetime_start).total_seconds() / epochs)
    slowest = max(per_epoch) * args.slowdown
    epochs = math.floor(args.seconds / (2 * args.seeds * slowest))
    print(",".join(map(str, picks)), max(args.min_epochs, min(args.max_epochs, epochs)))


if __name__ == "__main__":
    main()
