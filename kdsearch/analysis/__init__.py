"""Analysis of a finished study: the Pareto front, hypervolume, picking rules, statistics, test accuracy."""
