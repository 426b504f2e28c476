"""
The device's store on disk: one SQLite database in the home folder, a scope per group.

:class:`SqliteClientStore` implements the core's
:class:`~townsquare.client.core.store.ClientStore` by composition over
:class:`~townsquare.storage.sqlite_group_store.SqliteGroupStore` (WAL,
``synchronous=FULL``: a batch is on disk when ``apply`` returns). The device
scope is ``b"device"``; a group's scope is ``b"group:"`` and its id. SQLite
errors become :class:`~townsquare.client.errors.StoreFailed`, the error the
core knows how to recover from (it reloads the group from disk).

One process at a time: a :class:`SqliteClientStore` holds an exclusive lock
on the file ``<database>.lock`` beside the database from opening to
:meth:`~SqliteClientStore.close`, and a second one waits for it. The core
keeps each group's MLS state in memory between batches; two processes over
one home (two ``townsquare send`` at once) would both encrypt from the same
state, with the same ratchet generation, so the same key and nonce, for
different messages, and members could decrypt only one of them.

For crash tests, the store is where the failpoint ``while-processing-commit``
fires (:mod:`~townsquare.client.driver.failpoints`): just before the
``COMMIT`` of a transaction, when the driver has armed it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import time
from collections.abc import Collection, Mapping
from pathlib import Path

from townsquare.client.driver import failpoints
from townsquare.client.errors import StoreCorrupt, StoreFailed
from townsquare.mls.errors import UsageError as MLSUsageError
from townsquare.mls.group_store import GroupStore
from townsquare.storage.sqlite_group_store import SqliteGroupStore, connect

if sys.platform != "win32":
    import fcntl

__all__ = ["DATABASE_FILE_NAME", "SqliteClientStore"]

#: The database's name in the home folder.
DATABASE_FILE_NAME = "client.sqlite3"
#: How long opening a store waits for another process to close it, in seconds.
LOCK_TIMEOUT_SECONDS = 120.0
_LOCK_POLL_SECONDS = 0.05
_DEVICE_SCOPE = b"device"
_GROUP_SCOPE = b"group:"


class _Scope:
    """
    One scope, with SQLite's errors turned into the core's.
    """

    __slots__ = ("_inner",)

    def __init__(self, inner: SqliteGroupStore) -> None:
        self._inner = inner

    def get(self, key: str) -> bytes | None:
        try:
            return self._inner.get(key)
        except sqlite3.Error as exc:
            raise StoreFailed(f"reading the store failed: {exc}") from exc

    def scan(self, prefix: str) -> list[tuple[str, bytes]]:
        try:
            return self._inner.scan(prefix)
        except sqlite3.Error as exc:
            raise StoreFailed(f"reading the store failed: {exc}") from exc

    def apply(self, puts: Mapping[str, bytes], deletes: Collection[str]) -> None:
        try:
            self._inner.apply(puts, deletes)
        except sqlite3.Error as exc:
            raise StoreFailed(f"writing the store failed: {exc}") from exc


def _lock(path: Path, timeout: float) -> int:
    """
    Open ``path`` and take an exclusive ``flock`` on it, waiting up to ``timeout`` seconds.

    :returns: the locked file descriptor (closing it releases the lock).
    :raises StoreFailed: if the file cannot be opened or another process holds it too long.
    """
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreFailed(f"cannot open {path}: {exc}") from exc
    if sys.platform == "win32":  # pragma: no cover - no flock; one process at a time is on trust
        return descriptor
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(descriptor)
                raise StoreFailed(
                    f"{path.parent} is in use by another process (waited {timeout:g} s)"
                ) from None
            time.sleep(_LOCK_POLL_SECONDS)
        except OSError as exc:
            os.close(descriptor)
            raise StoreFailed(f"cannot lock {path}: {exc}") from exc
        else:
            return descriptor


def _before_statement(statement: str) -> None:
    # SqliteGroupStore.apply ends each batch with an explicit COMMIT statement.
    if statement == "COMMIT":
        failpoints.reached_commit()


class SqliteClientStore:
    """
    A :class:`~townsquare.client.core.store.ClientStore` in one SQLite file.
    """

    __slots__ = ("_connection", "_lock", "_path")

    def __init__(self, path: str | Path, *, lock_timeout: float = LOCK_TIMEOUT_SECONDS) -> None:
        """
        Open (creating if needed) the database at ``path``, once another process has closed it.

        :param lock_timeout: the most to wait for another process's store over ``path``.
        :raises StoreCorrupt: if the file is not a database of a schema this code reads.
        :raises StoreFailed: if it cannot be opened, or another process keeps it open.
        """
        self._path = Path(path)
        self._lock = _lock(self._path.with_name(self._path.name + ".lock"), lock_timeout)
        try:
            self._connection = connect(self._path)
        except MLSUsageError as exc:
            os.close(self._lock)
            raise StoreCorrupt(str(exc)) from exc
        except sqlite3.DatabaseError as exc:
            os.close(self._lock)
            raise StoreCorrupt(f"{self._path} is not a Townsquare database: {exc}") from exc
        except sqlite3.Error as exc:
            os.close(self._lock)
            raise StoreFailed(f"cannot open {self._path}: {exc}") from exc
        if failpoints.enabled(failpoints.WHILE_PROCESSING_COMMIT):
            # Only in crash tests: a trace callback sees each statement before it runs,
            # so the process can die inside an open transaction, its writes not committed.
            self._connection.set_trace_callback(_before_statement)

    @property
    def path(self) -> Path:
        """
        The database file.
        """
        return self._path

    def device_records(self) -> GroupStore:
        """
        :returns: the device scope.
        """
        return _Scope(SqliteGroupStore(self._connection, _DEVICE_SCOPE))

    def group_records(self, group_id: bytes) -> GroupStore:
        """
        :returns: the scope of ``group_id``.
        """
        return _Scope(SqliteGroupStore(self._connection, _GROUP_SCOPE + group_id))

    def group_ids(self) -> list[bytes]:
        """
        :returns: the ids of the groups with records, sorted.
        :raises StoreFailed: if the database cannot be read.
        """
        # Scopes are BLOBs compared bytewise: b"group;" is the first value past
        # every b"group:..." scope.
        try:
            rows = self._connection.execute(
                "SELECT DISTINCT scope FROM group_records WHERE scope >= ? AND scope < ? "
                "ORDER BY scope",
                (_GROUP_SCOPE, b"group;"),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreFailed(f"reading the store failed: {exc}") from exc
        return [bytes(row[0])[len(_GROUP_SCOPE) :] for row in rows]

    def close(self) -> None:
        """
        Close the database and let another process open it.
        """
        try:
            self._connection.close()
        finally:
            with contextlib.suppress(OSError):
                os.close(self._lock)
