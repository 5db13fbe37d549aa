"""The one error type for user mistakes: the CLI prints its message on one line and exits 2."""

from __future__ import annotations

import errno


class KDSearchError(Exception):
    """A problem with the user's input (flags, study file, data, checkpoint), not a bug."""


DISK_FULL = ("No space left on device", "StorageFull", "database or disk is full", "Disk quota exceeded")


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or an exception it was raised from) says the disk is full: an OSError with ENOSPC or
    EDQUOT, or a library's wrapping of one (safetensors' SafetensorError, SQLite's "database or disk is full")."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(exc) for text in DISK_FULL):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def disk_full_error(where: str) -> KDSearchError:
    """The one line a full disk gets: where the write failed, and that finished work is kept."""
    return KDSearchError(f"No space left on device while writing {where}: free some space there (or give another "
                         "--run-dir / --out) and run the same command again; nothing half-written was kept, "
                         "finished work is")
