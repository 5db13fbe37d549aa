"""Writing files so that an interruption (Ctrl-C, a killed worker, a full disk) never leaves half
of one, and two workers writing the same file never mix their bytes: every file kdsearch writes
goes through here (unique temporary sibling, fsync, rename, cleanup on error).

The temporary files and folders are made by `tempfile`, which makes them private (0600 and 0700);
they are given the mode an ordinary `open()` or `mkdir` would (0666 or 0777 less the umask) before
they are renamed into place, so a report, a run.json or an export can be read by whoever may read
the folder (a web server, a colleague), as the user's umask says.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import disk_full, disk_full_error


def current_umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux: /proc), since
    setting it to read it back races with threads that create files meanwhile."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode `open(path, "w")` gives a new file."""
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    """The mode `mkdir` gives a new folder."""
    return 0o777 & ~current_umask()


def new_folders(path: Path) -> Path | None:
    """The outermost of `path` and its parents that does not exist yet (what making `path` would create), so
    that a command refused before it did any work can remove what it made; None when `path` exists."""
    path = Path(path).absolute()
    missing = None
    while not path.exists() and path != path.parent:
        missing, path = path, path.parent
    return missing


def temp_folder(parent: Path, prefix: str, suffix: str = "") -> Path:
    """A new, unique folder in `parent` with an ordinary folder's mode (not tempfile's 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    os.chmod(path, folder_mode())
    return path


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a unique temporary path beside `path`; on success it is fsynced and renamed over `path`,
    on any error it is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, file_mode())  # after the body: a writer may have replaced the file (safetensors makes it 0600)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as exc:
        if disk_full(exc):  # one line, whatever library wrote (safetensors, torch.save, onnx), not its traceback
            raise disk_full_error(str(path)) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))
