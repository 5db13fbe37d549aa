"""The names of a trial's user attributes: what the search writes on a trial and every later step reads.

One spelling for the writer (search/) and the readers (analysis/, reporting/, export/, the API). It lives
in runs/, which imports nothing of the package but errors.py, so that any sub-package may import it
without reaching into search/. Values are plain JSON (Optuna stores user attributes as JSON).
"""

from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial, TrialState

# what the student is, and what its sampled settings are
SPEC = "spec"  # the StudentSpec as a JSON object
ARCH = "arch"  # StudentSpec.summary(), e.g. "conv[16,32]x1 k3 bn | fc[]"

# its costs (objectives or budgets)
PARAMS = "params"
MACS = "macs"
BYTES = "bytes"  # the exported ONNX file's size (or its int8 model's), when an objective or budget
LATENCY_MS = "latency_ms"  # median batch latency (measure.latency.Timing.median_ms)
LATENCY_IQR_MS = "latency_iqr_ms"
LATENCY_DEVICE = "latency_device"  # set only when not timed on the CPU
LATENCY_QUIET = "latency_quiet"  # False when the study's other workers could not be paused for the timing
COST_ATTRS = {"params": PARAMS, "macs": MACS, "latency": LATENCY_MS, "bytes": BYTES}  # cost objective -> attribute

# its training
CURVE = "curve"  # validation accuracy after each epoch
CHECKS = "checks"  # (checks_per_epoch > 1) validation accuracy at each check
PRUNED_AT = "pruned_at"  # the epoch after which the trial was stopped (a fraction: mid-epoch; 0: over budget)
RUNG = "rung"  # a promoted student's trial (search.promote): {"epochs", "images" (0: all), "from": trial}
INHERITED = "inherited"  # (in a rung, one-shot) True: fine-tuned from the weights the subnet inherited
RESUMED_AT = "resumed_at"  # (a rung trial) the epoch it continued from, where an earlier attempt stopped
COMMAND = "command"  # (a rung trial) the `kdsearch run` command that promoted it (the search's own is run.json's)
ENQUEUED = "enqueued"  # a trial that evaluates a known student (--enqueue, a reference, a promotion)
ONESHOT = "oneshot"  # (one-shot) how its accuracy was measured: inherited weights ({"calibration_images", ...})
REPEAT_OF = "repeat_of"  # (one-shot) the earlier trial that scored the same subnet: this one was not scored again
FIRST_PASS = "first_pass"  # (one-shot) {"images", "accuracy", "seconds"}: the subnet on the first validation images

# the worker that ran it (search.workers)
WORKER = "worker"
SUPERVISOR = "supervisor"  # the worker id of the process supervising the trial's worker
HEARTBEAT = "heartbeat"
ERROR = "error"
RETRY_OF = "retry_of"
STOPPED = "stopped"  # True: it failed because its process stopped (killed, lost, a session's end), not by an error


# what they say, read the same way by the search and every reader after it

def rung_of(trial: FrozenTrial) -> dict | None:
    """A promoted trial's rung (its longer budget), None for the search's own trials."""
    return trial.user_attrs.get(RUNG)


def repeated(trial: FrozenTrial) -> bool:
    """A one-shot subnet the sampler proposed again: PRUNED untouched (search.evaluation.oneshot). It does not
    count toward --trials, and the report lists it apart from pruned trials."""
    return trial.state == TrialState.PRUNED and REPEAT_OF in trial.user_attrs


def rejected(trial: FrozenTrial) -> bool:
    """An over-budget student, stopped before it trained: PRUNED at epoch 0 (search.budgets.reject_over_budget).
    It does not count toward --trials, and the report lists it apart from pruned trials."""
    return trial.state == TrialState.PRUNED and trial.user_attrs.get(PRUNED_AT) == 0


def is_reference(attrs: dict[str, Any]) -> bool:
    """Whether trial user attributes `attrs` are those of an enqueued hand-written reference."""
    return "reference" in (attrs.get(ENQUEUED) or {})
