"""
The relay's storage: the :class:`Storage` protocol, its records and its backends.

Backends: :class:`SQLiteStorage` (the default, one file in WAL mode in the data
folder); a PostgreSQL backend joins later and must pass the same contract tests
(``tests/unit/server/test_storage_contract.py``). Schema changes are numbered
migrations in ``migrations/`` (see :mod:`townsquare.server.storage.migrations`):
``0001_directory`` (accounts, devices, nonces, quotas, KeyPackages),
``0002_delivery``, ``0003_invites``, ``0004_retention_attachments`` (the
log's pruned prefix, attachment blobs) and ``0005_join_requests``::

    groups             (group_id UNIQUE, epoch, group_info, ratchet_tree, last_seq,
                        created_at)
    group_devices      (group_id, device_key, leaf_index, joined_seq,
                        PK (group_id, device_key), UNIQUE (group_id, leaf_index))
    group_log          (group_id, seq, epoch, kind, sender_device, client_message_id,
                        message, received_at,
                        UNIQUE (group_id, seq), UNIQUE (sender_device, client_message_id))
        + UNIQUE (group_id, epoch) WHERE kind = 'commit'   -- one commit per epoch
    welcomes           (group_id, commit_seq, epoch, welcome, ratchet_tree, created_at)
    welcome_recipients (device_key, welcome_id)
    cursors            (device_key, group_id, acked_seq, updated_at)

An append reads ``groups.last_seq`` and ``epoch`` and writes the log row, the
new ``last_seq`` and (for a commit) the next epoch, GroupInfo, tree, members
and Welcome in one write transaction (``BEGIN IMMEDIATE`` on SQLite; on
PostgreSQL, ``SELECT ... FOR UPDATE`` on the group row), so the sequence
number and the epoch check are decided by the database, never in memory.
"""

from __future__ import annotations

from townsquare.server.storage.interface import (
    AccountClaim,
    Appended,
    AttachmentRecord,
    ClaimedKeyPackage,
    Device,
    GroupMember,
    GroupRecord,
    GroupSnapshot,
    InviteRecord,
    JoinRequest,
    KeyPackageCount,
    LogEntry,
    LogPage,
    Membership,
    MessageKind,
    NewAttachment,
    NewCommit,
    NewGroup,
    NewInvite,
    NewMessage,
    PendingWelcome,
    RetentionReport,
    Storage,
    StoredAttachment,
)
from townsquare.server.storage.sqlite import DATABASE_FILE_NAME, SQLiteStorage

__all__ = [
    "DATABASE_FILE_NAME",
    "AccountClaim",
    "Appended",
    "AttachmentRecord",
    "ClaimedKeyPackage",
    "Device",
    "GroupMember",
    "GroupRecord",
    "GroupSnapshot",
    "InviteRecord",
    "JoinRequest",
    "KeyPackageCount",
    "LogEntry",
    "LogPage",
    "Membership",
    "MessageKind",
    "NewAttachment",
    "NewCommit",
    "NewGroup",
    "NewInvite",
    "NewMessage",
    "PendingWelcome",
    "RetentionReport",
    "SQLiteStorage",
    "Storage",
    "StoredAttachment",
]
