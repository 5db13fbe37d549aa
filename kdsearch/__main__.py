"""`python -m kdsearch ...`: the CLI without its console script (e.g. from a source checkout)."""

from kdsearch.cli import app

app()
