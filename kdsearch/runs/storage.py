"""The Optuna storage a run's study lives in, from its URL."""

from __future__ import annotations

import optuna

from ..errors import KDSearchError


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL: RDB (SQLite, PostgreSQL, MySQL), a journal file (*.log,
    *.journal or journal:PATH) or Optuna's gRPC storage proxy (grpc://host:port). Liveness of
    workers is kdsearch's own (kdsearch.search.workers), the same on every storage."""
    try:
        if url.startswith("journal:") or url.endswith((".log", ".journal")):
            path = url.removeprefix("journal:")
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
        if url.startswith("grpc://"):
            host, _, port = url.removeprefix("grpc://").rpartition(":")
            return optuna.storages.GrpcStorageProxy(host=host or "localhost", port=int(port))
        engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None  # workers wait, not fail
        return optuna.storages.RDBStorage(url, engine_kwargs=engine)
    except Exception as exc:  # bad URL, unreachable server, missing driver
        raise KDSearchError(f"cannot open storage {url!r}: {str(exc).splitlines()[0]}") from None
