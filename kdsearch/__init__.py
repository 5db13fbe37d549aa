"""kdsearch: find small, fast student CNNs by knowledge distillation and Optuna search."""

__version__ = "0.1.0"
