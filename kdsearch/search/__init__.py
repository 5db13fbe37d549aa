"""The search: the study (storage, sampler, resume guard), the objective, budgets, pruners, the trial loop, workers.

search.runner is the entry point (`kdsearch run`): it prepares the inputs once (search.inputs), then
runs the trials (search.trials) in supervised worker processes (search.supervise).
"""
