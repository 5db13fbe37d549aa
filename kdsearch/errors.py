"""The one error type for user mistakes: the CLI prints its message on one line and exits 2."""

from __future__ import annotations


class KDSearchError(Exception):
    """A problem with the user's input (flags, study file, data, checkpoint), not a bug."""
