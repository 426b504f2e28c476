"""
The device's store on disk: one SQLite database in the home folder, a scope per group.

:class:`SqliteClientStore` implements the core's
:class:`~townsquare.client.core.store.ClientStore` by composition over
:class:`~townsquare.storage.sqlite_group_store.SqliteGroupStore` (WAL,
``synchronous=FULL``: a batch is on disk when ``apply`` returns). The device
scope is ``b"device"``; a group's scope is ``b"group:"`` and its id. SQLite
errors become :class:`~townsquare.client.errors.StoreFailed`, the error the
core knows how to recover from (it reloads the group from disk).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Mapping
from pathlib import Path

from townsquare.client.errors import StoreCorrupt, StoreFailed
from townsquare.mls.errors import UsageError as MLSUsageError
from townsquare.mls.group_store import GroupStore
from townsquare.storage.sqlite_group_store import SqliteGroupStore, connect

__all__ = ["DATABASE_FILE_NAME", "SqliteClientStore"]

#: The database's name in the home folder.
DATABASE_FILE_NAME = "client.sqlite3"
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


class SqliteClientStore:
    """
    A :class:`~townsquare.client.core.store.ClientStore` in one SQLite file.
    """

    __slots__ = ("_connection", "_path")

    def __init__(self, path: str | Path) -> None:
        """
        Open (creating if needed) the database at ``path``.

        :raises StoreCorrupt: if the file is not a database of a schema this code reads.
        :raises StoreFailed: if it cannot be opened.
        """
        self._path = Path(path)
        try:
            self._connection = connect(self._path)
        except MLSUsageError as exc:
            raise StoreCorrupt(str(exc)) from exc
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupt(f"{self._path} is not a Townsquare database: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreFailed(f"cannot open {self._path}: {exc}") from exc

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
        Close the database.
        """
        self._connection.close()
