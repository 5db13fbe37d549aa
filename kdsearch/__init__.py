"""kdsearch: find small, fast student CNNs by knowledge distillation and Optuna search.

The Python API (kdsearch/api.py) is re-exported here: run, open_run, trials, front,
load_student and retrain. Its export function is `kdsearch.api.export`: the name
`kdsearch.export` is the export package. Importing kdsearch stays cheap: torch, optuna and
pandas are imported when a function is called.
"""

__version__ = "0.1.0"

from . import api  # noqa: E402
from .api import front, load_student, open_run, retrain, run, trials  # noqa: E402

__all__ = ["api", "front", "load_student", "open_run", "retrain", "run", "trials", "__version__"]
