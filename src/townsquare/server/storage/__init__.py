"""
The relay's storage: the :class:`Storage` protocol, its records and its backends.

Backends: :class:`SQLiteStorage` (the default, one file in WAL mode in the data
folder); a PostgreSQL backend joins later and must pass the same contract tests
(``tests/unit/server/test_storage_contract.py``). Schema changes are numbered
migrations in ``migrations/`` (see :mod:`townsquare.server.storage.migrations`).

Draft of the delivery tables (not yet a migration; the delivery service will
settle them)::

    groups        (group_id BLOB PK, epoch INTEGER, public_group BLOB,
                   next_seq INTEGER, created_at INTEGER)
    group_devices (group_id, device_key, leaf_index, PK (group_id, device_key))
    group_log     (group_id, seq INTEGER, epoch INTEGER, content_type INTEGER,
                   sender_device BLOB, client_message_id BLOB, message BLOB,
                   received_at INTEGER,
                   PK (group_id, seq), UNIQUE (sender_device, client_message_id))
    commits       (group_id, epoch, seq, PK (group_id, epoch))   -- one commit per epoch
    cursors       (device_key, group_id, acked_seq, PK (device_key, group_id))

An append reads ``groups.next_seq`` and ``epoch`` and writes the log row and the
new ``next_seq`` in one write transaction (``BEGIN IMMEDIATE`` on SQLite,
``SELECT ... FOR UPDATE`` on the group row on PostgreSQL), so the sequence
number and the epoch check are decided by the database, never in memory.
"""

from __future__ import annotations

from townsquare.server.storage.interface import (
    AccountClaim,
    ClaimedKeyPackage,
    Device,
    KeyPackageCount,
    Storage,
)
from townsquare.server.storage.sqlite import DATABASE_FILE_NAME, SQLiteStorage

__all__ = [
    "DATABASE_FILE_NAME",
    "AccountClaim",
    "ClaimedKeyPackage",
    "Device",
    "KeyPackageCount",
    "SQLiteStorage",
    "Storage",
]
