"""Two stand-in samplers that draw one typical student without searching: the cheapest and a mid-space one.

The budget check (search.budgets) walks the cheapest students of the space; the time estimate
(search.estimate) times a mid-space one.
"""

from __future__ import annotations

import optuna


class Cheapest(optuna.samplers.BaseSampler):
    """Every numeric parameter at its low end, each categorical one at the index given (or the first)."""

    def __init__(self, choices: dict[str, int]):
        self.choices, self.seen = choices, {}

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, name, dist):
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            self.seen[name] = len(dist.choices)
            return dist.choices[self.choices.get(name, 0)]
        return dist.low


class Middle(Cheapest):
    """Every numeric parameter in the middle of its range (geometric for log ranges): a typical student."""

    def sample_independent(self, study, trial, name, dist):
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            return dist.choices[0]
        mid = (dist.low * dist.high) ** 0.5 if getattr(dist, "log", False) else (dist.low + dist.high) / 2
        return int(round(mid)) if isinstance(dist, optuna.distributions.IntDistribution) else mid
