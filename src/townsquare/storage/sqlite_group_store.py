"""
A :class:`~townsquare.mls.group_store.GroupStore` over SQLite: one database file, many groups.

Every group's records live in one table, keyed by ``(scope, key)`` where the
scope names the group (its MLS group id, say). :meth:`SqliteGroupStore.apply`
is one transaction, so a batch is stored whole or not at all, whatever
moment the process or the power dies at.

Townsquare choice: the database runs in WAL mode with ``synchronous=FULL``.
WAL lets readers proceed during a write; FULL makes each transaction durable
once it returns (NORMAL could lose the last transactions on power loss,
which here could mean reusing a ratchet generation that a sent message
already used). Phones lose power; one extra fsync per batch is the price.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Mapping
from os import PathLike

from townsquare.mls.errors import UsageError
from townsquare.mls.group_store import check_batch, check_prefix

__all__ = ["SCHEMA_VERSION", "SqliteGroupStore", "connect"]

#: The schema version this module creates and reads (``PRAGMA user_version``).
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS group_records (
    scope BLOB NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID
"""


def connect(path: str | PathLike[str]) -> sqlite3.Connection:
    """
    Open (creating if needed) a database of group records, in WAL mode with full sync.

    :param path: the database file.
    :returns: a connection in autocommit mode (each :meth:`SqliteGroupStore.apply`
        opens its own transaction).
    :raises UsageError: if the database has a newer schema than this code knows.
    :raises sqlite3.Error: if the file cannot be opened or is not a database.
    """
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise UsageError(f"database schema {version} is newer than this code's")
        if version < SCHEMA_VERSION:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(_SCHEMA)
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            connection.execute("COMMIT")
    except BaseException:
        connection.close()
        raise
    return connection


def _upper_bound(prefix: str) -> str:
    # Keys are printable ASCII (check_batch), so every key that starts with
    # ``prefix`` sorts before ``prefix`` with its last character incremented.
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class SqliteGroupStore:
    """
    The records of one group (one scope) in a SQLite database.
    """

    __slots__ = ("_connection", "_scope")

    def __init__(self, connection: sqlite3.Connection, scope: bytes) -> None:
        """
        Use the records of ``scope`` in a database opened by :func:`connect`.

        :param connection: the connection (shared by the stores of all groups).
        :param scope: the group's name in the table, such as its group id.
        """
        self._connection = connection
        self._scope = scope

    def get(self, key: str) -> bytes | None:
        """
        :returns: the value stored under ``key``, or ``None``.
        """
        row = self._connection.execute(
            "SELECT value FROM group_records WHERE scope = ? AND key = ?", (self._scope, key)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def scan(self, prefix: str) -> list[tuple[str, bytes]]:
        """
        :returns: every record whose key starts with ``prefix``, sorted by key.
        :raises UsageError: if ``prefix`` is not printable ASCII.
        """
        check_prefix(prefix)
        if prefix:
            rows = self._connection.execute(
                "SELECT key, value FROM group_records WHERE scope = ? AND key >= ? AND key < ? "
                "ORDER BY key",
                (self._scope, prefix, _upper_bound(prefix)),
            ).fetchall()
        else:
            rows = self._connection.execute(
                "SELECT key, value FROM group_records WHERE scope = ? ORDER BY key",
                (self._scope,),
            ).fetchall()
        return [(str(key), bytes(value)) for key, value in rows]

    def apply(self, puts: Mapping[str, bytes], deletes: Collection[str]) -> None:
        """
        Store ``puts`` and remove ``deletes`` in one transaction.

        :raises UsageError: if the batch breaks
            :func:`~townsquare.mls.group_store.check_batch`; nothing is written.
        :raises sqlite3.Error: if the database fails; the transaction is rolled back.
        """
        check_batch(puts, deletes)
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.executemany(
                "DELETE FROM group_records WHERE scope = ? AND key = ?",
                [(self._scope, key) for key in deletes],
            )
            connection.executemany(
                "INSERT INTO group_records (scope, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value",
                [(self._scope, key, value) for key, value in puts.items()],
            )
            connection.execute("COMMIT")
        except BaseException:
            # SQLite may already have rolled back (after an I/O error, say).
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
