"""Budgets (--max-params, --max-macs, --max-latency-ms, --max-bytes): constraints, rejection, reachability."""

from __future__ import annotations

import itertools
import json
from typing import Any

import optuna
import torch

from ..config import StudyConfig
from ..data.splits import DataSplits
from ..errors import KDSearchError
from ..measure import latency
from ..measure.costs import count_macs, count_params
from ..models.students.registry import build
from ..models.students.space import sample_spec
from ..training.distill import resolve_device
from .cpu_share import quiet_cpu
from .pruners import PRUNED_AT
from .stand_ins import Cheapest


def budget_excess(cfg: StudyConfig, costs: dict[str, float]) -> dict[str, float]:
    """Relative excess over each budget that is set and measured (<= 0 within budget)."""
    budgets = {"max_params": ("params", cfg.max_params), "max_macs": ("macs", cfg.max_macs),
               "max_latency_ms": ("latency", cfg.max_latency_ms), "max_bytes": ("bytes", cfg.max_bytes)}
    return {name: costs[cost] / limit - 1.0 for name, (cost, limit) in budgets.items()
            if limit is not None and cost in costs}


def within_budgets(cfg: StudyConfig, model: torch.nn.Module, shape: tuple[int, ...]) -> bool:
    """Whether `model` meets the params and MACs budgets (MACs, slower to count, only where params do)."""
    if any(excess > 0 for excess in budget_excess(cfg, {"params": count_params(model)}).values()):
        return False
    if cfg.max_macs is None:
        return True
    return all(excess <= 0 for excess in budget_excess(cfg, {"macs": count_macs(model, shape)}).values())


def reject_over_budget(trial: optuna.Trial, cfg: StudyConfig, costs: dict[str, float]) -> None:
    """Record each budget's relative excess as an Optuna constraint (> 0: infeasible, so samplers learn
    the feasible region) and reject an over-budget student before it trains: the trial ends PRUNED at
    epoch 0 and does not count toward --trials (another student is sampled in its place)."""
    over = []
    for key, excess in budget_excess(cfg, costs).items():
        trial.set_constraint(key, excess)
        if excess > 0:
            over.append(key)
    if over:
        trial.set_user_attr(PRUNED_AT, 0)
        raise optuna.TrialPruned(f"over budget ({', '.join(over)}): rejected before training")


def cheapest_costs(cfg: StudyConfig, data: DataSplits, max_combinations: int = 256) -> dict[str, Any]:
    """The smallest params and MACs any student of the space can have (every numeric setting at its
    low end, every combination of the categorical ones), and the spec with the fewest MACs."""
    best: dict[str, Any] = {}
    pending, tried = [{}], set()
    while pending and len(tried) < max_combinations:
        choices = pending.pop()
        key = json.dumps(choices, sort_keys=True)
        if key in tried:
            continue
        tried.add(key)
        sampler = Cheapest(choices)
        study = optuna.create_study(sampler=sampler)
        spec = sample_spec(study.ask(), cfg.space, data.in_channels, data.num_classes, data.image_size,
                           list(data.mean), list(data.std))
        model = build(spec)
        params, macs = count_params(model), count_macs(model, (data.in_channels, data.image_size,
                                                                                data.image_size))
        best["params"] = min(best.get("params", params), params)
        if macs < best.get("macs", macs + 1):
            best["macs"], best["spec"] = macs, spec
        names = sorted(sampler.seen)  # every combination of the categorical parameters met so far
        for combo in itertools.product(*(range(sampler.seen[n]) for n in names)):
            pending.append(dict(zip(names, combo)))
    return best


def check_budgets_reachable(cfg: StudyConfig, data: DataSplits) -> None:
    """Exit 2 at once when no student of the space fits a budget (instead of rejecting forever)."""
    if cfg.max_params is None and cfg.max_macs is None and cfg.max_latency_ms is None and cfg.max_bytes is None:
        return
    low = cheapest_costs(cfg, data)
    limits = {"params": cfg.max_params, "macs": cfg.max_macs}
    for cost, limit in limits.items():
        if limit is not None and low[cost] > limit:
            raise KDSearchError(f"--max-{cost} {limit:,}: the space cannot meet it, its smallest student has "
                                f"{low[cost]:,} {cost} (lower [space] stages, channels, convs_per_stage, fc or "
                                "expand_ratio, or allow the plain family)")
    # a lower bound: a weight takes 4 bytes as float, at least 1 as int8, a batch-norm scale and shift
    # folded into a 4-byte bias 2 each
    least = low["params"] * (1 if cfg.bytes_format == "int8" else 2)
    if cfg.max_bytes is not None and least > cfg.max_bytes:
        raise KDSearchError(f"--max-bytes {cfg.max_bytes:,}: the space cannot meet it, its smallest student has "
                            f"{low['params']:,} params, at least {least:,} bytes as {cfg.bytes_format} (lower [space] "
                            "stages, channels, convs_per_stage, fc or expand_ratio" +
                            (", or --bytes-format int8)" if cfg.bytes_format == "float" else ")"))
    if cfg.max_latency_ms is not None:
        shape = (data.in_channels, data.image_size, data.image_size)
        with quiet_cpu(cfg.run_path):
            fastest = latency.student_latency(build(low["spec"]), shape, cfg.latency_runtime, cfg.latency_batch,
                                              cfg.latency_threads, device=resolve_device(cfg.device)).median_ms
        if fastest > cfg.max_latency_ms:
            raise KDSearchError(f"--max-latency-ms {cfg.max_latency_ms}: the space cannot meet it, its cheapest "
                                f"student takes {fastest:.3f} ms")
