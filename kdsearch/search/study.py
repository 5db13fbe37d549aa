"""The study: sampler (reseeded per trial), directions, creating or resuming it, and what counts toward --trials."""

from __future__ import annotations

import warnings

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..config import StudyConfig
from ..errors import KDSearchError
from ..runs.storage import make_storage
from ..runs.trial_attrs import COST_ATTRS
from .fingerprint import check_resume
from ..runs.trial_attrs import rejected, repeated, rung_of


METRIC_NAMES = {"accuracy": "val_accuracy", **COST_ATTRS}

DIRECTIONS = {"accuracy": "maximize", "params": "minimize", "latency": "minimize", "macs": "minimize",
              "bytes": "minimize"}


class TrialSeeded(optuna.samplers.BaseSampler):
    """A sampler whose randomness for trial N depends on (seed, N) only.

    Workers that start together never draw the same students (their trials have different
    numbers), a resumed study never replays earlier draws, and one worker repeats exactly.
    """

    def __init__(self, base: optuna.samplers.BaseSampler, seed: int):
        self.base, self.seed = base, seed
        self._rngs = [r for r in (getattr(base, "_rng", None),
                                  getattr(getattr(base, "_random_sampler", None), "_rng", None),
                                  getattr(getattr(base, "_independent_sampler", None), "_rng", None)) if r is not None]
        if not self._rngs:
            raise TypeError(f"{type(base).__name__} exposes no random state to seed per trial")

    def infer_relative_search_space(self, study, trial):
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        for rng in self._rngs:
            rng.rng.seed((self.seed * 1_000_003 + trial.number) % 2**32)
        self.base.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()


def startup_trials(trials: int) -> int:
    """Random trials before TPE models the space: a quarter of the study, between 4 and 10
    (a fixed 10 would make a 12-trial study a random search)."""
    return min(10, max(4, trials // 4))


def make_sampler(name: str, seed: int, trials: int = 100) -> optuna.samplers.BaseSampler:
    if name == "nsga2":
        base = optuna.samplers.NSGAIISampler(seed=seed)
    elif name == "gp":
        base = optuna.samplers.GPSampler(seed=seed)
    elif name == "random":
        base = optuna.samplers.RandomSampler(seed=seed)
    else:
        # multivariate + group: the per-stage widths (channels_i, fc_width_i) exist only for some
        # depths, so they are modelled jointly within the group of trials that have them; the
        # constant liar counts trials running in other workers as bad, so they are not resampled
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            base = optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True, group=True,
                                              n_startup_trials=startup_trials(trials))
    return TrialSeeded(base, seed)


def open_study(cfg: StudyConfig, load_only: bool = False) -> optuna.Study:
    """Create the study, or load it when it exists (same name, same storage): that is resume."""
    storage = make_storage(cfg.storage_url)
    directions = [DIRECTIONS[o] for o in cfg.objectives]
    if load_only:
        return optuna.load_study(study_name=cfg.name, storage=storage)
    try:
        existing = optuna.load_study(study_name=cfg.name, storage=storage)
        if [d.name.lower() for d in existing.directions] != directions:
            raise KDSearchError(f"study {cfg.name!r} exists with other objectives; use another --study-name or --run-dir")
    except KeyError:
        pass
    study = optuna.create_study(study_name=cfg.name, storage=storage,
                                sampler=make_sampler(cfg.sampler, cfg.seed, cfg.trials),
                                directions=directions, load_if_exists=True)
    check_resume(study, cfg)  # (the settings are recorded by prepare, once the teacher and data are ready)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([METRIC_NAMES[o] for o in cfg.objectives])
    return study


def n_finished(study: optuna.Study) -> int:
    """Trials that count toward --trials (students that trained; over-budget rejections and repeats do not)."""
    return sum(counts(t) for t in study.get_trials(deepcopy=False))


def counts(trial: FrozenTrial) -> bool:
    """Whether a trial counts toward --trials: it trained a student (complete, or pruned while training);
    a student rejected over budget before training does not, nor a one-shot subnet proposed again, nor a
    promoted student's rung trial."""
    if rung_of(trial):
        return False
    return trial.state == TrialState.COMPLETE or (trial.state == TrialState.PRUNED and not (rejected(trial) or
                                                                                          repeated(trial)))
