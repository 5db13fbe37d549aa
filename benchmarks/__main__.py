"""`python -m benchmarks list | NAME [ARGS]`: the suite's one entry point (benchmarks/__init__.py)."""

from __future__ import annotations

import importlib
import sys

from .suite import BENCHMARKS, listing

USAGE = "usage: python -m benchmarks {list,NAME} [ARGS]   (python -m benchmarks NAME --help)"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE + "\n\n" + listing())
        return
    name, rest = argv[0], argv[1:]
    if name == "list":
        print(listing())
        return
    if name not in BENCHMARKS:
        raise SystemExit(f"no benchmark {name!r}; `python -m benchmarks list` names them")
    importlib.import_module(f"{__package__}.{BENCHMARKS[name]}").main(rest)


if __name__ == "__main__":
    main()
