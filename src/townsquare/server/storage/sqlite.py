"""
The SQLite backend: one database file in WAL mode in the relay's data folder.

Townsquare choice: the standard library's ``sqlite3`` on threads of our own,
not ``aiosqlite``. Each :class:`Storage` method is one synchronous function
that runs a whole transaction on a worker thread, so the event loop never
blocks and no transaction is ever held open across an ``await`` (where other
coroutines could interleave with it). All writes go through one thread and
one connection: SQLite admits one writer at a time anyway, and queueing writes
in process is fairer and cheaper than contending for the file lock
(``SQLITE_BUSY``). Reads run on a small pool of their own connections, which
WAL lets proceed while a write is in progress. Write transactions start with
``BEGIN IMMEDIATE``, so that even several processes sharing the file decide
each check-then-write (a nonce, a one-time KeyPackage) under the write lock.

Durability: writes that the relay acknowledges as stored (accounts, devices,
KeyPackages and their claims, groups and every log append) commit with
``synchronous = FULL``, so they survive a power cut, not only a crash of the
process. Request nonces, quota counters and cursors commit with ``NORMAL``
(a lost cursor only means a device is sent a few messages again, which it
recognises by their sequence numbers): WAL still keeps them across a crash of
the process, and the next FULL commit makes them durable too, since it syncs
the whole log before it; a power cut can lose the last few, which at worst
reopens a 300-second replay window that the signature's timestamp bounds. This
saves one disk flush (about 4 ms here) on every signed request. A nonce or quota
charge handed to an append (:class:`NonceUse`, :class:`QuotaCharge`) commits with
the append, durably, in its single transaction: one flush for the whole post.

There is no timeout on these awaits: they are not network calls, a started
transaction finishes (commits or rolls back) even if its caller is cancelled,
and ``busy_timeout`` bounds the wait for another process's lock.
"""

from __future__ import annotations

import asyncio
import hashlib
import queue
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

from townsquare.auth import DeviceCertificate
from townsquare.server.errors import (
    AccountExists,
    AttachmentExpired,
    AttachmentNotFound,
    CommitConflict,
    CursorAhead,
    DeviceExists,
    DeviceLimitReached,
    DeviceNotFound,
    DuplicateKeyPackage,
    GroupExists,
    InviteExists,
    InviteExpired,
    InviteNotFound,
    InviteUsedUp,
    JoinRequestsFull,
    KeyPackagesExhausted,
    KeyPackageStoreFull,
    LogPruned,
    MessageIdReused,
    NotAMember,
    RateLimited,
    ReplayedRequest,
    SchemaError,
    ServerError,
    StaleEpoch,
    StorageFailure,
    Unavailable,
    UnknownAccount,
    UnknownGroup,
    UnknownMemberDevice,
)
from townsquare.server.storage.interface import (
    AccountClaim,
    Appended,
    AttachmentRecord,
    ClaimedKeyPackage,
    Device,
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
    NonceUse,
    PendingWelcome,
    QuotaCharge,
    RetentionReport,
    StoredAttachment,
)
from townsquare.server.storage.migrations import Migration, load_migrations

__all__ = ["DATABASE_FILE_NAME", "SQLiteStorage"]

#: The database's file name inside the data folder (WAL adds ``-wal`` and ``-shm``).
DATABASE_FILE_NAME = "townsquare.sqlite3"

_T = TypeVar("_T")

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at INTEGER NOT NULL
)
"""


def _connect(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    # isolation_level=None: the module issues no implicit BEGIN or COMMIT; every
    # transaction here is begun and ended explicitly. check_same_thread=False:
    # a reader connection moves between pool threads, one thread at a time.
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    connection.execute("PRAGMA foreign_keys = ON")
    # FULL: a transaction the relay acknowledged survives a power cut, not only
    # a crash of the process (which NORMAL already survives in WAL mode).
    connection.execute("PRAGMA synchronous = FULL")
    return connection


def _write(
    connection: sqlite3.Connection,
    body: Callable[[sqlite3.Connection], _T],
    *,
    durable: bool = True,
) -> _T:
    if not durable:
        connection.execute("PRAGMA synchronous = NORMAL")
    try:
        connection.execute("BEGIN IMMEDIATE")
        try:
            result = body(connection)
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
    finally:
        if not durable:
            connection.execute("PRAGMA synchronous = FULL")
    return result


def _read(connection: sqlite3.Connection, body: Callable[[sqlite3.Connection], _T]) -> _T:
    # One deferred transaction, so that several SELECTs see one snapshot.
    connection.execute("BEGIN")
    try:
        return body(connection)
    finally:
        connection.execute("COMMIT")


def _device_from_row(row: sqlite3.Row | tuple[bytes, bytes, int, bytes, int]) -> Device:
    device_key, account_key, certified_at, signature, registered_at = row
    return Device(
        certificate=DeviceCertificate(
            account_key=bytes(account_key),
            device_key=bytes(device_key),
            created_at=int(certified_at),
            signature=bytes(signature),
        ),
        registered_at=int(registered_at),
    )


_DEVICE_COLUMNS = "device_key, account_key, certified_at, certificate_signature, registered_at"


class SQLiteStorage:
    """
    A :class:`~townsquare.server.storage.interface.Storage` in one SQLite file.
    """

    def __init__(self, data_dir: Path, *, readers: int = 4, busy_timeout_ms: int = 5000) -> None:
        """
        :param data_dir: the folder of the database file (created on :meth:`open`).
        :param readers: how many connections serve reads concurrently.
        :param busy_timeout_ms: how long to wait for another process's write lock.
        """
        self.path = data_dir / DATABASE_FILE_NAME
        self._data_dir = data_dir
        self._reader_count = readers
        self._busy_timeout_ms = busy_timeout_ms
        self._writer: sqlite3.Connection | None = None
        self._write_executor: ThreadPoolExecutor | None = None
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._read_executor: ThreadPoolExecutor | None = None

    # -- Life cycle -------------------------------------------------------------------

    async def open(self) -> None:
        """
        Create the folder and database if needed, switch to WAL and apply pending migrations.

        :raises StorageFailure: if the folder or database cannot be created or opened.
        :raises SchemaError: if it was written by a newer relay, or a migration is missing.
        """
        if self._writer is not None:
            return
        migrations = load_migrations("sqlite")
        write_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-write")
        read_executor = ThreadPoolExecutor(
            max_workers=self._reader_count, thread_name_prefix="sqlite-read"
        )
        loop = asyncio.get_running_loop()
        writer: sqlite3.Connection | None = None
        try:
            writer = await loop.run_in_executor(write_executor, self._open_writer)
            await loop.run_in_executor(write_executor, partial(self._migrate, writer, migrations))
            for _ in range(self._reader_count):
                reader = await loop.run_in_executor(
                    read_executor, partial(_connect, self.path, self._busy_timeout_ms)
                )
                self._readers.put(reader)
        except (sqlite3.Error, OSError, ServerError) as exc:
            if writer is not None:
                writer.close()
            self._close_readers()
            write_executor.shutdown()
            read_executor.shutdown()
            if isinstance(exc, sqlite3.Error | OSError):
                raise StorageFailure(f"cannot open {self.path}: {exc}") from exc
            raise
        self._writer = writer
        self._write_executor = write_executor
        self._read_executor = read_executor

    def _open_writer(self) -> sqlite3.Connection:
        self._data_dir.mkdir(parents=True, exist_ok=True)
        connection = _connect(self.path, self._busy_timeout_ms)
        # WAL is a property of the file: set once, it stays for every connection.
        connection.execute("PRAGMA journal_mode = WAL")
        return connection

    @staticmethod
    def _migrate(connection: sqlite3.Connection, migrations: Sequence[Migration]) -> None:
        connection.execute(_BOOTSTRAP)
        applied = {
            int(version)
            for (version,) in connection.execute("SELECT version FROM schema_migrations")
        }
        known = {migration.version for migration in migrations}
        newer = sorted(applied - known)
        if newer:
            raise SchemaError(
                f"the database has schema version {newer[-1]}, newer than this relay knows"
            )
        for migration in migrations:
            if migration.version not in applied:
                _write(connection, partial(_apply_migration, migration=migration))

    async def close(self) -> None:
        """
        Close every connection and stop the worker threads.
        """
        writer, self._writer = self._writer, None
        write_executor, self._write_executor = self._write_executor, None
        read_executor, self._read_executor = self._read_executor, None
        if read_executor is not None:
            read_executor.shutdown(wait=True)
        self._close_readers()
        if writer is not None and write_executor is not None:
            await asyncio.get_running_loop().run_in_executor(write_executor, writer.close)
        if write_executor is not None:
            write_executor.shutdown(wait=True)

    def _close_readers(self) -> None:
        while True:
            try:
                self._readers.get_nowait().close()
            except queue.Empty:
                return

    async def check_ready(self) -> None:
        """
        Run a trivial query on a reader connection.

        :raises Unavailable: if the store is not open.
        :raises StorageFailure: if the query fails.
        """
        await self._run_read(lambda conn: conn.execute("SELECT 1").fetchone())

    # -- Running transactions off the event loop ----------------------------------------

    async def _run_write(
        self, body: Callable[[sqlite3.Connection], _T], *, durable: bool = True
    ) -> _T:
        writer, executor = self._writer, self._write_executor
        if writer is None or executor is None:
            raise Unavailable("the store is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(
                executor, partial(_write, writer, body, durable=durable)
            )
        except sqlite3.Error as exc:
            raise StorageFailure(f"the database failed: {exc}") from exc

    async def _run_read(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        executor = self._read_executor
        if executor is None:
            raise Unavailable("the store is not open")

        def borrow() -> _T:
            connection = self._readers.get()
            try:
                return _read(connection, body)
            finally:
                self._readers.put(connection)

        try:
            return await asyncio.get_running_loop().run_in_executor(executor, borrow)
        except sqlite3.Error as exc:
            raise StorageFailure(f"the database failed: {exc}") from exc

    async def _run_write_after_nonce(
        self, nonce: NonceUse | None, body: Callable[[sqlite3.Connection], _T]
    ) -> _T:
        # One durable write transaction: the nonce, then ``body``. A refusal by ``body``
        # is rolled back to a savepoint after the nonce and the transaction commits,
        # so that a replay of a refused request is refused as a replay; the refusal is
        # handed back as a value (a commit happens only when the body returns) and
        # raised here, on the event loop.
        if nonce is None:
            return await self._run_write(body)
        outcome = await self._run_write(partial(_after_nonce, nonce=nonce, body=body))
        if isinstance(outcome, _Refusal):
            raise outcome.error
        return outcome

    # -- Accounts and devices ---------------------------------------------------------

    async def create_account(self, device: Device) -> None:
        """
        Register an account together with its first device.

        :raises AccountExists: if the account is registered.
        :raises DeviceExists: if the device is registered.
        """

        def body(conn: sqlite3.Connection) -> None:
            if conn.execute(
                "SELECT 1 FROM accounts WHERE account_key = ?", (device.account_key,)
            ).fetchone():
                raise AccountExists("an account with this key is already registered")
            _require_new_device(conn, device.device_key)
            conn.execute(
                "INSERT INTO accounts (account_key, registered_at) VALUES (?, ?)",
                (device.account_key, device.registered_at),
            )
            _insert_device(conn, device)

        await self._run_write(body)

    async def add_device(self, device: Device, *, max_devices: int) -> None:
        """
        Register another device of an existing account.

        :raises UnknownAccount: if the account is not registered.
        :raises DeviceExists: if the device is registered.
        :raises DeviceLimitReached: if the account has ``max_devices`` devices already.
        """

        def body(conn: sqlite3.Connection) -> None:
            if not conn.execute(
                "SELECT 1 FROM accounts WHERE account_key = ?", (device.account_key,)
            ).fetchone():
                raise UnknownAccount("no account has this key")
            _require_new_device(conn, device.device_key)
            (count,) = conn.execute(
                "SELECT count(*) FROM devices WHERE account_key = ?", (device.account_key,)
            ).fetchone()
            if count >= max_devices:
                raise DeviceLimitReached(f"an account may have at most {max_devices} devices")
            _insert_device(conn, device)

        await self._run_write(body)

    async def get_device(self, device_key: bytes) -> Device | None:
        """
        :returns: the device with this key, or ``None``.
        """

        def body(conn: sqlite3.Connection) -> Device | None:
            row = conn.execute(
                f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device_key = ?",  # noqa: S608
                (device_key,),
            ).fetchone()
            return None if row is None else _device_from_row(row)

        return await self._run_read(body)

    async def list_devices(self, account_key: bytes) -> tuple[Device, ...]:
        """
        :returns: an account's devices, in registration order.
        :raises UnknownAccount: if the account is not registered.
        """

        def body(conn: sqlite3.Connection) -> tuple[Device, ...]:
            if not conn.execute(
                "SELECT 1 FROM accounts WHERE account_key = ?", (account_key,)
            ).fetchone():
                raise UnknownAccount("no account has this key")
            return tuple(
                _device_from_row(row)
                for row in conn.execute(
                    f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE account_key = ?"  # noqa: S608
                    " ORDER BY id",
                    (account_key,),
                )
            )

        return await self._run_read(body)

    # -- Request nonces and quotas ----------------------------------------------------

    async def use_nonce(self, device_key: bytes, nonce: bytes, *, expires_at: int) -> None:
        """
        Record a nonce, refusing one this device used before.

        :raises ReplayedRequest: if the device used this nonce before.
        """
        use = NonceUse(device_key=device_key, nonce=nonce, expires_at=expires_at)
        await self._run_write(partial(_insert_nonce, use=use), durable=False)

    async def consume_quota(
        self,
        subject: bytes,
        action: str,
        *,
        now: int,
        window_seconds: int,
        limit: int,
        amount: int = 1,
    ) -> None:
        """
        Count uses of a rate-limited action.

        :raises RateLimited: if this window has fewer than ``amount`` uses left.
        :raises ValueError: if ``amount`` is below 1.
        """
        _check_amount(amount)
        charge = QuotaCharge(
            subject=subject,
            action=action,
            now=now,
            window_seconds=window_seconds,
            limit=limit,
            amount=amount,
        )
        await self._run_write(partial(_charge_quota, charge=charge), durable=False)

    async def check_quota(
        self,
        subject: bytes,
        action: str,
        *,
        now: int,
        window_seconds: int,
        limit: int,
        amount: int = 1,
    ) -> None:
        """
        Check, without counting, that ``amount`` uses would be accepted now.

        :raises RateLimited: if this window has fewer than ``amount`` uses left.
        :raises ValueError: if ``amount`` is below 1.
        """
        _check_amount(amount)
        charge = QuotaCharge(
            subject=subject,
            action=action,
            now=now,
            window_seconds=window_seconds,
            limit=limit,
            amount=amount,
        )
        await self._run_read(partial(_check_charge, charge=charge))

    async def purge_expired(self, now: int) -> int:
        """
        Delete expired nonces and quota windows that ended.

        Quota windows have different lengths per action, so a window is deleted only
        once it has been idle for a day, longer than any window the relay uses.

        :returns: how many records were deleted.
        """

        def body(conn: sqlite3.Connection) -> int:
            nonces = conn.execute(
                "DELETE FROM request_nonces WHERE expires_at < ?", (now,)
            ).rowcount
            quotas = conn.execute(
                "DELETE FROM quotas WHERE window_start < ?", (now - _QUOTA_RETENTION_SECONDS,)
            ).rowcount
            return int(nonces) + int(quotas)

        return await self._run_write(body, durable=False)

    # -- KeyPackages ------------------------------------------------------------------

    async def add_key_packages(
        self,
        device_key: bytes,
        *,
        one_time: Sequence[bytes],
        last_resort: bytes | None,
        now: int,
        max_stored: int,
    ) -> KeyPackageCount:
        """
        Store one-time KeyPackages and replace the last-resort one, all or nothing.

        :raises DeviceNotFound: if the device is not registered.
        :raises DuplicateKeyPackage: if a package is repeated or already stored.
        :raises KeyPackageStoreFull: if the device would store more than ``max_stored``.
        """
        uploads = [(hashlib.sha256(data).digest(), data, False) for data in one_time]
        if last_resort is not None:
            uploads.append((hashlib.sha256(last_resort).digest(), last_resort, True))
        if len({digest for digest, _, _ in uploads}) != len(uploads):
            raise DuplicateKeyPackage("the upload carries the same KeyPackage twice")

        def body(conn: sqlite3.Connection) -> KeyPackageCount:
            _require_device(conn, device_key)
            if last_resort is not None:
                conn.execute(
                    "DELETE FROM key_packages WHERE device_key = ? AND last_resort = 1",
                    (device_key,),
                )
            for digest, _, _ in uploads:
                if conn.execute(
                    "SELECT 1 FROM key_packages WHERE device_key = ? AND digest = ?",
                    (device_key, digest),
                ).fetchone():
                    raise DuplicateKeyPackage("a KeyPackage in the upload is already stored")
            stored = _count(conn, device_key).one_time
            if stored + len(one_time) > max_stored:
                raise KeyPackageStoreFull(
                    f"the device stores {stored} one-time KeyPackages; with {len(one_time)}"
                    f" more it would pass the limit of {max_stored}"
                )
            conn.executemany(
                "INSERT INTO key_packages"
                " (device_key, last_resort, digest, key_package, uploaded_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    (device_key, int(is_last_resort), digest, data, now)
                    for digest, data, is_last_resort in uploads
                ],
            )
            return _count(conn, device_key)

        return await self._run_write(body)

    async def count_key_packages(self, device_key: bytes) -> KeyPackageCount:
        """
        :returns: how many KeyPackages the device has stored.
        :raises DeviceNotFound: if the device is not registered.
        """

        def body(conn: sqlite3.Connection) -> KeyPackageCount:
            _require_device(conn, device_key)
            return _count(conn, device_key)

        return await self._run_read(body)

    async def claim_key_package(self, device_key: bytes) -> ClaimedKeyPackage:
        """
        Hand out the oldest one-time KeyPackage (deleting it), else the last-resort one.

        :raises DeviceNotFound: if the device is not registered.
        :raises KeyPackagesExhausted: if it has none.
        """

        def body(conn: sqlite3.Connection) -> ClaimedKeyPackage:
            _require_device(conn, device_key)
            claimed = _claim(conn, device_key)
            if claimed is None:
                raise KeyPackagesExhausted("the device has no KeyPackage left")
            return claimed

        return await self._run_write(body)

    async def claim_account_key_packages(self, account_key: bytes) -> AccountClaim:
        """
        Claim one KeyPackage of every device of an account, in one transaction.

        :raises UnknownAccount: if the account is not registered.
        """

        def body(conn: sqlite3.Connection) -> AccountClaim:
            if not conn.execute(
                "SELECT 1 FROM accounts WHERE account_key = ?", (account_key,)
            ).fetchone():
                raise UnknownAccount("no account has this key")
            device_keys = [
                bytes(key)
                for (key,) in conn.execute(
                    "SELECT device_key FROM devices WHERE account_key = ? ORDER BY id",
                    (account_key,),
                )
            ]
            claimed: list[ClaimedKeyPackage] = []
            exhausted: list[bytes] = []
            for device_key in device_keys:
                package = _claim(conn, device_key)
                if package is None:
                    exhausted.append(device_key)
                else:
                    claimed.append(package)
            return AccountClaim(
                account_key=account_key, claimed=tuple(claimed), exhausted=tuple(exhausted)
            )

        return await self._run_write(body)

    # -- Groups and their logs ----------------------------------------------------------

    async def create_group(self, group: NewGroup) -> GroupRecord:
        """
        Create a group at epoch 0 with its members.

        :raises GroupExists: if a group has this id.
        :raises UnknownMemberDevice: if a member is not a registered device.
        """

        def body(conn: sqlite3.Connection) -> GroupRecord:
            if _group(conn, group.group_id) is not None:
                raise GroupExists("a group with this id exists")
            for member in group.members:
                _require_registered(conn, member.device_key)
            conn.execute(
                "INSERT INTO groups"
                " (group_id, epoch, group_info, ratchet_tree, last_seq, created_at)"
                " VALUES (?, 0, ?, ?, 0, ?)",
                (group.group_id, group.group_info, group.ratchet_tree, group.created_at),
            )
            conn.executemany(
                "INSERT INTO group_devices (group_id, device_key, leaf_index, joined_seq)"
                " VALUES (?, ?, ?, 0)",
                [(group.group_id, m.device_key, m.leaf_index) for m in group.members],
            )
            return GroupRecord(
                group_id=group.group_id,
                epoch=0,
                group_info=group.group_info,
                ratchet_tree=group.ratchet_tree,
                last_seq=0,
                created_at=group.created_at,
            )

        return await self._run_write(body)

    async def load_group(
        self, group_id: bytes, *, device_key: bytes, proposals_after: int | None
    ) -> GroupSnapshot:
        """
        Read a group, a device's membership and the current epoch's later proposals.

        :raises UnknownGroup: if there is no such group.
        """

        def body(conn: sqlite3.Connection) -> GroupSnapshot:
            group = _require_group(conn, group_id)
            proposals: tuple[LogEntry, ...] = ()
            if proposals_after is not None:
                proposals = tuple(
                    _entry(row)
                    for row in conn.execute(
                        f"SELECT {_LOG_COLUMNS} FROM group_log"  # noqa: S608
                        " WHERE group_id = ? AND epoch = ? AND kind = 'proposal' AND seq > ?"
                        " ORDER BY seq",
                        (group_id, group.epoch, proposals_after),
                    )
                )
            return GroupSnapshot(
                group=group, member=_membership(conn, group_id, device_key), proposals=proposals
            )

        return await self._run_read(body)

    async def find_message(self, sender_device: bytes, client_message_id: bytes) -> LogEntry | None:
        """
        :returns: the entry a device sent with this client message id, or ``None``.
        """
        return await self._run_read(partial(_find, sender=sender_device, mid=client_message_id))

    async def get_commit(self, group_id: bytes, epoch: int) -> LogEntry | None:
        """
        :returns: the commit that ended ``epoch``, or ``None``.
        """
        return await self._run_read(partial(_commit_of, group_id=group_id, epoch=epoch))

    async def append_message(
        self,
        message: NewMessage,
        *,
        nonce: NonceUse | None = None,
        quota: QuotaCharge | None = None,
    ) -> Appended:
        """
        Record the nonce, then append an application message or proposal exactly once.

        :raises ReplayedRequest: if the nonce was used before.
        :raises UnknownGroup: if there is no such group.
        :raises MessageIdReused: if the id was used for another group or kind.
        :raises NotAMember: if the sender is not a member.
        :raises StaleEpoch: if the epoch is not current.
        :raises RateLimited: if the quota is used up.
        :raises ValueError: for a commit, or a quota amount below 1.
        """
        if message.kind is MessageKind.COMMIT:
            raise ValueError("append commits with append_commit")
        if quota is not None:
            _check_amount(quota.amount)

        def body(conn: sqlite3.Connection) -> Appended:
            epoch = _group_epoch(conn, message.group_id)
            original = _original(conn, message.group_id, message.kind, message)
            if original is not None:
                return Appended(entry=original, duplicate=True)
            _require_membership(conn, message.group_id, message.sender_device)
            if message.epoch != epoch:
                raise StaleEpoch(
                    f"the message is for epoch {message.epoch}; the group is at {epoch}",
                    epoch=epoch,
                )
            if quota is not None:
                _charge_quota(conn, quota)
            entry = _insert_entry(conn, message, message.kind)
            return Appended(entry=entry, duplicate=False)

        return await self._run_write_after_nonce(nonce, body)

    async def append_commit(
        self,
        commit: NewCommit,
        *,
        nonce: NonceUse | None = None,
        quota: QuotaCharge | None = None,
    ) -> Appended:
        """
        Record the nonce, then append a commit and move the group to the next epoch.

        :raises ReplayedRequest: if the nonce was used before.
        :raises UnknownGroup: if there is no such group.
        :raises MessageIdReused: if the id was used for another group or kind.
        :raises NotAMember: if the sender is not a member.
        :raises CommitConflict: if another commit ended this epoch.
        :raises StaleEpoch: if the epoch is in the future.
        :raises RateLimited: if the quota is used up.
        :raises InviteNotFound: if the invite is not the group's.
        :raises InviteExpired: if the invite has expired.
        :raises InviteUsedUp: if the invite is used up.
        :raises UnknownMemberDevice: if a member or recipient is not registered.
        :raises ValueError: if a device appears twice among the members, or for a quota
            amount below 1.
        """
        target = {member.device_key: member.leaf_index for member in commit.members}
        if len(target) != len(commit.members):
            raise ValueError("a device appears twice among the members")
        if quota is not None:
            _check_amount(quota.amount)

        def body(conn: sqlite3.Connection) -> Appended:
            epoch = _group_epoch(conn, commit.group_id)
            original = _original(conn, commit.group_id, MessageKind.COMMIT, commit)
            if original is not None:
                return Appended(entry=original, duplicate=True)
            if commit.invite_key is None:
                _require_membership(conn, commit.group_id, commit.sender_device)
            if commit.epoch < epoch:
                winner = _commit_of(conn, group_id=commit.group_id, epoch=commit.epoch)
                if winner is None:
                    # Every past epoch ended in a commit, but retention may have deleted
                    # it: the committer is far behind, and catching up (a fetch answered
                    # 410 log-pruned, then a resync) is all it can do.
                    raise StaleEpoch(
                        f"epoch {commit.epoch} has ended and its commit is no longer kept",
                        epoch=epoch,
                    )
                raise CommitConflict(
                    f"epoch {commit.epoch} was ended by the commit at seq {winner.seq}",
                    epoch=epoch,
                    winner_seq=winner.seq,
                    winner_epoch=winner.epoch,
                    winner=winner.message,
                )
            if commit.epoch > epoch:
                raise StaleEpoch(
                    f"the commit is for epoch {commit.epoch}; the group is at {epoch}",
                    epoch=epoch,
                )
            if quota is not None:
                _charge_quota(conn, quota)
            if commit.invite_key is not None:
                _use_invite(conn, commit.group_id, commit.invite_key, now=commit.received_at)
            entry = _insert_entry(conn, commit, MessageKind.COMMIT)
            conn.execute(
                "UPDATE groups SET epoch = ?, group_info = ?, ratchet_tree = ? WHERE group_id = ?",
                (commit.epoch + 1, commit.group_info, commit.ratchet_tree, commit.group_id),
            )
            removed = _replace_members(conn, commit.group_id, target, joined_seq=entry.seq)
            if removed and _resets_on_remove(conn, commit.group_id):
                conn.execute("DELETE FROM invites WHERE group_id = ?", (commit.group_id,))
            if commit.welcome is not None:
                _insert_welcome(conn, commit, commit_seq=entry.seq)
            return Appended(entry=entry, duplicate=False)

        return await self._run_write_after_nonce(nonce, body)

    # -- Invites ----------------------------------------------------------------------------

    async def create_invite(self, invite: NewInvite) -> InviteRecord:
        """
        Store a new invite of a group, created by a member device.

        :raises UnknownGroup: if there is no such group.
        :raises NotAMember: if the creator is not a member.
        :raises InviteExists: if an invite has this key.
        """

        def body(conn: sqlite3.Connection) -> InviteRecord:
            _require_group(conn, invite.group_id)
            _require_membership(conn, invite.group_id, invite.created_by)
            if _find_invite(conn, invite.invite_key) is not None:
                raise InviteExists("an invite with this key exists")
            conn.execute(
                f"INSERT INTO invites ({_INVITE_COLUMNS})"  # noqa: S608
                " VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)",
                (
                    invite.group_id,
                    invite.invite_key,
                    invite.created_by,
                    invite.sealed_group_info,
                    invite.expires_at,
                    invite.max_uses,
                    invite.created_at,
                    invite.created_at,
                ),
            )
            record = _find_invite(conn, invite.invite_key)
            assert record is not None  # noqa: S101 - just inserted
            return record

        return await self._run_write(body)

    async def get_invite(self, invite_key: bytes) -> InviteRecord | None:
        """
        :returns: the invite with this key, or ``None``.
        """
        return await self._run_read(partial(_find_invite, invite_key=invite_key))

    async def update_invite(
        self,
        group_id: bytes,
        invite_key: bytes,
        *,
        device_key: bytes,
        sealed_group_info: bytes,
        now: int,
    ) -> InviteRecord:
        """
        Replace an invite's sealed GroupInfo.

        :raises UnknownGroup: if there is no such group.
        :raises NotAMember: if the device is not a member.
        :raises InviteNotFound: if the group has no invite with this key.
        """

        def body(conn: sqlite3.Connection) -> InviteRecord:
            _require_group(conn, group_id)
            _require_membership(conn, group_id, device_key)
            invite = _find_invite(conn, invite_key)
            if invite is None or invite.group_id != group_id:
                raise InviteNotFound("the group has no invite with this key")
            conn.execute(
                "UPDATE invites SET sealed_group_info = ?, updated_at = ? WHERE invite_key = ?",
                (sealed_group_info, now, invite_key),
            )
            updated = _find_invite(conn, invite_key)
            assert updated is not None  # noqa: S101 - just updated
            return updated

        return await self._run_write(body)

    async def reset_invites(self, group_id: bytes, *, device_key: bytes) -> int:
        """
        Delete every invite of a group.

        :raises UnknownGroup: if there is no such group.
        :raises NotAMember: if the device is not a member.
        """

        def body(conn: sqlite3.Connection) -> int:
            _require_group(conn, group_id)
            _require_membership(conn, group_id, device_key)
            return conn.execute("DELETE FROM invites WHERE group_id = ?", (group_id,)).rowcount

        return await self._run_write(body)

    async def set_reset_invites_on_remove(
        self, group_id: bytes, *, device_key: bytes, enabled: bool
    ) -> None:
        """
        Set whether removing a member deletes the group's invites.

        :raises UnknownGroup: if there is no such group.
        :raises NotAMember: if the device is not a member.
        """

        def body(conn: sqlite3.Connection) -> None:
            _require_group(conn, group_id)
            _require_membership(conn, group_id, device_key)
            conn.execute(
                "UPDATE groups SET reset_invites_on_remove = ? WHERE group_id = ?",
                (int(enabled), group_id),
            )

        await self._run_write(body)

    async def put_join_request(self, request: JoinRequest, *, max_pending: int) -> JoinRequest:
        """
        Store a join request, replacing the same device's earlier one for the group.

        :raises UnknownGroup: if there is no such group.
        :raises JoinRequestsFull: if the group already has ``max_pending`` other requests.
        """

        def body(conn: sqlite3.Connection) -> JoinRequest:
            _require_group(conn, request.group_id)
            (others,) = conn.execute(
                "SELECT count(*) FROM join_requests WHERE group_id = ? AND device_key != ?",
                (request.group_id, request.device_key),
            ).fetchone()
            if int(others) >= max_pending:
                raise JoinRequestsFull("the group has too many join requests waiting")
            conn.execute(
                "INSERT OR REPLACE INTO join_requests"
                " (group_id, device_key, invite_key, key_package, sealed_note, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    request.group_id,
                    request.device_key,
                    request.invite_key,
                    request.key_package,
                    request.sealed_note,
                    request.created_at,
                ),
            )
            return request

        return await self._run_write(body)

    async def join_requests(self, group_id: bytes) -> tuple[JoinRequest, ...]:
        """
        :returns: the group's join requests from devices that are not members, oldest first.
        :raises UnknownGroup: if there is no such group.
        """

        def body(conn: sqlite3.Connection) -> tuple[JoinRequest, ...]:
            _require_group(conn, group_id)
            rows = conn.execute(
                f"{_WAITING_JOIN_REQUESTS} ORDER BY r.created_at, r.device_key",
                (group_id,),
            ).fetchall()
            return tuple(_join_request(group_id, row) for row in rows)

        return await self._run_read(body)

    async def get_join_request(self, group_id: bytes, device_key: bytes) -> JoinRequest | None:
        """
        :returns: the device's join request for the group, if one waits.
        :raises UnknownGroup: if there is no such group.
        """

        def body(conn: sqlite3.Connection) -> JoinRequest | None:
            _require_group(conn, group_id)
            row = conn.execute(
                f"{_WAITING_JOIN_REQUESTS} AND r.device_key = ?",
                (group_id, device_key),
            ).fetchone()
            return None if row is None else _join_request(group_id, row)

        return await self._run_read(body)

    async def delete_join_request(self, group_id: bytes, device_key: bytes) -> bool:
        """
        :returns: whether there was such a request (now deleted).
        """

        def body(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "DELETE FROM join_requests WHERE group_id = ? AND device_key = ?",
                (group_id, device_key),
            )
            return cursor.rowcount > 0

        return await self._run_write(body)

    async def get_reset_invites_on_remove(self, group_id: bytes) -> bool:
        """
        :returns: whether removing a member deletes the group's invites.
        :raises UnknownGroup: if there is no such group.
        """

        def body(conn: sqlite3.Connection) -> bool:
            _require_group(conn, group_id)
            return _resets_on_remove(conn, group_id)

        return await self._run_read(body)

    async def fetch_messages(
        self, group_id: bytes, *, device_key: bytes, after: int, limit: int
    ) -> LogPage:
        """
        Read a member's part of the log after ``after``.

        :raises UnknownGroup: if there is no such group.
        :raises NotAMember: if the device is not a member.
        """

        def body(conn: sqlite3.Connection) -> LogPage:
            group = _require_group(conn, group_id)
            member = _require_membership(conn, group_id, device_key)
            start = max(after, member.joined_seq)
            pruned_seq = _pruned_seq(conn, group_id)
            if start < pruned_seq:
                # Entries start + 1 .. pruned_seq may be deleted: serving what is left
                # would skip some silently, so the device is told to resync instead.
                raise LogPruned(
                    f"entries after seq {start} are no longer kept; the log is served"
                    f" from seq {pruned_seq + 1}",
                    first_seq=pruned_seq + 1,
                )
            entries = tuple(
                _entry(row)
                for row in conn.execute(
                    f"SELECT {_LOG_COLUMNS} FROM group_log"  # noqa: S608
                    " WHERE group_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                    (group_id, start, limit),
                )
            )
            return LogPage(
                group_id=group_id, epoch=group.epoch, last_seq=group.last_seq, entries=entries
            )

        return await self._run_read(body)

    async def list_welcomes(self, device_key: bytes, *, limit: int) -> tuple[PendingWelcome, ...]:
        """
        :returns: the Welcomes waiting for a device, oldest first.
        """

        def body(conn: sqlite3.Connection) -> tuple[PendingWelcome, ...]:
            return tuple(
                PendingWelcome(
                    group_id=bytes(group_id),
                    commit_seq=int(commit_seq),
                    epoch=int(epoch),
                    welcome=bytes(welcome),
                    ratchet_tree=bytes(tree),
                    created_at=int(created_at),
                )
                for group_id, commit_seq, epoch, welcome, tree, created_at in conn.execute(
                    "SELECT w.group_id, w.commit_seq, w.epoch, w.welcome, w.ratchet_tree,"
                    " w.created_at FROM welcome_recipients AS r"
                    " JOIN welcomes AS w ON w.id = r.welcome_id"
                    " WHERE r.device_key = ? ORDER BY w.id LIMIT ?",
                    (device_key, limit),
                )
            )

        return await self._run_read(body)

    # -- Retention ----------------------------------------------------------------------

    async def apply_retention(self, now: int, *, retention_seconds: int) -> RetentionReport:
        """
        Delete acknowledged and expired log entries, expired Welcomes and attachments.

        The positions of every group's member devices are read on a reader connection,
        which does not hold up writes; a position read there can only be behind the
        current one (cursors move forward, and a device that joins since starts after
        every entry then present), so deleting up to it is safe. Each group's deletion
        is then one short write transaction.

        :returns: how much was deleted.
        """
        cutoff = now - retention_seconds
        # Welcomes first: a commit is kept while its Welcome waits, so one that
        # expires now lets its commit go in this same round.
        welcomes, attachments, tombstones = await self._run_write(
            partial(_expire_welcomes_and_attachments, now=now, cutoff=cutoff), durable=False
        )
        plans = await self._run_read(partial(_retention_plans, cutoff=cutoff))
        log_entries = 0
        for group_id, pruned_seq in plans:
            log_entries += await self._run_write(
                partial(_prune_group, group_id=group_id, pruned_seq=pruned_seq), durable=False
            )
        return RetentionReport(
            log_entries=log_entries,
            welcomes=welcomes,
            attachments=attachments,
            tombstones=tombstones,
        )

    # -- Attachments ----------------------------------------------------------------------

    async def put_attachment(self, attachment: NewAttachment) -> StoredAttachment:
        """
        Store a blob under its SHA-256, once.

        :raises DeviceNotFound: if the uploader is not registered.
        :raises ValueError: if ``sha256`` is not the content's SHA-256.
        """
        # Hashed on a thread of its own: neither the event loop nor the single writer
        # thread should wait for 10 MiB to be hashed.
        content = attachment.content
        digest = await asyncio.to_thread(lambda: hashlib.sha256(content).digest())
        if digest != attachment.sha256:
            raise ValueError("sha256 is not the SHA-256 of the attachment's content")

        def body(conn: sqlite3.Connection) -> StoredAttachment:
            _require_device(conn, attachment.uploaded_by)
            row = conn.execute(
                "SELECT expires_at, content IS NOT NULL FROM attachments WHERE sha256 = ?",
                (attachment.sha256,),
            ).fetchone()
            if row is not None and bool(row[1]) and int(row[0]) > attachment.uploaded_at:
                # The same bytes, still kept: a retry, or the same file sent twice.
                conn.execute(
                    "UPDATE attachments SET expires_at = max(expires_at, ?) WHERE sha256 = ?",
                    (attachment.expires_at, attachment.sha256),
                )
                return StoredAttachment(
                    record=_attachment_record(conn, attachment.sha256), duplicate=True
                )
            # New, or expired (a tombstone, or bytes retention has not reached yet):
            # stored afresh, as if uploaded now.
            conn.execute(
                "INSERT INTO attachments"
                " (sha256, size, content, uploaded_by, uploaded_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (sha256) DO UPDATE SET content = excluded.content,"
                " size = excluded.size, uploaded_by = excluded.uploaded_by,"
                " uploaded_at = excluded.uploaded_at, expires_at = excluded.expires_at",
                (
                    attachment.sha256,
                    len(attachment.content),
                    attachment.content,
                    attachment.uploaded_by,
                    attachment.uploaded_at,
                    attachment.expires_at,
                ),
            )
            return StoredAttachment(
                record=_attachment_record(conn, attachment.sha256), duplicate=False
            )

        return await self._run_write(body)

    async def get_attachment(self, sha256: bytes, *, now: int) -> AttachmentRecord:
        """
        Read an attachment's record.

        :raises AttachmentNotFound: if no blob has this hash.
        :raises AttachmentExpired: if it has expired.
        """

        def body(conn: sqlite3.Connection) -> AttachmentRecord:
            _require_live_attachment(conn, sha256, now=now)
            return _attachment_record(conn, sha256)

        return await self._run_read(body)

    async def read_attachment(self, sha256: bytes, *, offset: int, length: int, now: int) -> bytes:
        """
        Read part of a blob through SQLite's incremental blob I/O.

        :raises AttachmentNotFound: if no blob has this hash.
        :raises AttachmentExpired: if it has expired.
        :raises ValueError: if ``offset`` or ``length`` is negative.
        """
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")

        def body(conn: sqlite3.Connection) -> bytes:
            rowid, size = _require_live_attachment(conn, sha256, now=now)
            if offset >= size or length == 0:
                return b""
            # Reads only the pages holding this part, not the whole blob.
            with conn.blobopen("attachments", "content", rowid, readonly=True) as blob:
                blob.seek(offset)
                return blob.read(min(length, size - offset))

        return await self._run_read(body)

    async def ack_cursor(self, group_id: bytes, *, device_key: bytes, seq: int, now: int) -> int:
        """
        Move a member's cursor forward and drop the Welcomes it has passed.

        :raises UnknownGroup: if there is no such group.
        :raises NotAMember: if the device is not a member.
        :raises CursorAhead: if ``seq`` is past the last entry.
        """

        def body(conn: sqlite3.Connection) -> int:
            group = _require_group(conn, group_id)
            _require_membership(conn, group_id, device_key)
            if seq > group.last_seq:
                raise CursorAhead(f"seq {seq} is past the log's last entry, {group.last_seq}")
            (cursor,) = conn.execute(
                "INSERT INTO cursors (device_key, group_id, acked_seq, updated_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (device_key, group_id) DO UPDATE SET"
                " acked_seq = max(acked_seq, excluded.acked_seq),"
                " updated_at = excluded.updated_at"
                " RETURNING acked_seq",
                (device_key, group_id, seq, now),
            ).fetchone()
            _drop_welcomes(conn, group_id, device_key, up_to=int(cursor))
            return int(cursor)

        return await self._run_write(body, durable=False)


# Quota rows idle this long are deleted: longer than any quota window.
_QUOTA_RETENTION_SECONDS = 86_400


# A group's join requests from devices that are not (yet) members: the group id is the
# first parameter.
_WAITING_JOIN_REQUESTS = (
    "SELECT r.device_key, r.invite_key, r.key_package, r.sealed_note, r.created_at"
    " FROM join_requests r WHERE r.group_id = ? AND NOT EXISTS ("
    "   SELECT 1 FROM group_devices m"
    "   WHERE m.group_id = r.group_id AND m.device_key = r.device_key)"
)


def _join_request(group_id: bytes, row: tuple[bytes, bytes, bytes, bytes, int]) -> JoinRequest:
    return JoinRequest(
        group_id=group_id,
        device_key=bytes(row[0]),
        invite_key=bytes(row[1]),
        key_package=bytes(row[2]),
        sealed_note=bytes(row[3]),
        created_at=int(row[4]),
    )


def _check_amount(amount: int) -> None:
    if amount < 1:
        raise ValueError("a quota is consumed one use at least")


def _quota_window(
    conn: sqlite3.Connection,
    subject: bytes,
    action: str,
    *,
    now: int,
    window_seconds: int,
) -> tuple[int, int]:
    # The current window's start and uses: a new, empty window once the last has ended.
    row = conn.execute(
        "SELECT window_start, used FROM quotas WHERE subject = ? AND action = ?",
        (subject, action),
    ).fetchone()
    if row is None or row[0] + window_seconds <= now:
        return now, 0
    return int(row[0]), int(row[1])


def _refuse_over_quota(
    action: str,
    window_start: int,
    used: int,
    *,
    now: int,
    window_seconds: int,
    limit: int,
    amount: int,
) -> None:
    if used + amount > limit:
        raise RateLimited(
            f"the {action} quota is {limit} per {window_seconds} s; {used} used, {amount} asked",
            retry_after=window_start + window_seconds - now,
        )


def _check_charge(conn: sqlite3.Connection, *, charge: QuotaCharge) -> tuple[int, int]:
    # The current window's start and uses, refusing the charge if it does not fit.
    window_start, used = _quota_window(
        conn,
        charge.subject,
        charge.action,
        now=charge.now,
        window_seconds=charge.window_seconds,
    )
    _refuse_over_quota(
        charge.action,
        window_start,
        used,
        now=charge.now,
        window_seconds=charge.window_seconds,
        limit=charge.limit,
        amount=charge.amount,
    )
    return window_start, used


def _charge_quota(conn: sqlite3.Connection, charge: QuotaCharge) -> None:
    window_start, used = _check_charge(conn, charge=charge)
    conn.execute(
        "INSERT INTO quotas (subject, action, window_start, used) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (subject, action)"
        " DO UPDATE SET window_start = excluded.window_start, used = excluded.used",
        (charge.subject, charge.action, window_start, used + charge.amount),
    )


def _insert_nonce(conn: sqlite3.Connection, use: NonceUse) -> None:
    inserted = conn.execute(
        "INSERT INTO request_nonces (device_key, nonce, expires_at) VALUES (?, ?, ?)"
        " ON CONFLICT (device_key, nonce) DO NOTHING",
        (use.device_key, use.nonce, use.expires_at),
    ).rowcount
    if inserted != 1:
        raise ReplayedRequest("this device already used this nonce")


@dataclass(frozen=True, slots=True)
class _Refusal:
    # A request refused after its nonce was recorded: what to raise once committed.
    error: ServerError


def _after_nonce(
    conn: sqlite3.Connection, *, nonce: NonceUse, body: Callable[[sqlite3.Connection], _T]
) -> _T | _Refusal:
    # A used nonce raises, and the caller's transaction rolls back whole: a replay
    # changes nothing. Past it, a refusal keeps the nonce and undoes everything else.
    _insert_nonce(conn, nonce)
    conn.execute("SAVEPOINT after_nonce")
    try:
        result = body(conn)
    except ServerError as refused:
        conn.execute("ROLLBACK TO after_nonce")
        conn.execute("RELEASE after_nonce")
        return _Refusal(refused)
    conn.execute("RELEASE after_nonce")
    return result


def _pruned_seq(conn: sqlite3.Connection, group_id: bytes) -> int:
    (pruned_seq,) = conn.execute(
        "SELECT pruned_seq FROM groups WHERE group_id = ?", (group_id,)
    ).fetchone()
    return int(pruned_seq)


def _retention_plans(conn: sqlite3.Connection, *, cutoff: int) -> list[tuple[bytes, int]]:
    # For each group with something to delete: how far its log may be pruned. A
    # member device's position is the later of its cursor and the commit that added
    # it (it is served nothing before that); a group without members needs nothing.
    plans: list[tuple[bytes, int]] = []
    for group_id, pruned_seq, last_seq, read_through, expired_through, leftovers in conn.execute(
        "SELECT g.group_id, g.pruned_seq, g.last_seq,"
        " (SELECT min(max(d.joined_seq, coalesce(c.acked_seq, 0)))"
        "  FROM group_devices AS d LEFT JOIN cursors AS c"
        "  ON c.group_id = d.group_id AND c.device_key = d.device_key"
        "  WHERE d.group_id = g.group_id),"
        " (SELECT max(l.seq) FROM group_log AS l"
        "  WHERE l.group_id = g.group_id AND l.received_at <= ?),"
        " EXISTS (SELECT 1 FROM group_log AS l"
        "  WHERE l.group_id = g.group_id AND l.seq <= g.pruned_seq)"
        " FROM groups AS g",
        (cutoff,),
    ):
        needed_from = int(last_seq) if read_through is None else int(read_through)
        expired = 0 if expired_through is None else int(expired_through)
        target = min(int(last_seq), max(int(pruned_seq), needed_from, expired))
        if target > int(pruned_seq) or bool(leftovers):
            plans.append((bytes(group_id), target))
    return plans


def _prune_group(conn: sqlite3.Connection, *, group_id: bytes, pruned_seq: int) -> int:
    conn.execute(
        "UPDATE groups SET pruned_seq = max(pruned_seq, ?) WHERE group_id = ?",
        (pruned_seq, group_id),
    )
    # Kept although pruned: the current epoch's proposals, which the relay replays
    # onto its public view to check the next commit, and a commit whose Welcome
    # still waits for a device (the Welcome refers to it; it goes with the Welcome).
    return int(
        conn.execute(
            "DELETE FROM group_log WHERE group_id = ?1"
            " AND seq <= (SELECT pruned_seq FROM groups WHERE group_id = ?1)"
            " AND NOT (kind = 'proposal'"
            "  AND epoch = (SELECT epoch FROM groups WHERE group_id = ?1))"
            " AND NOT EXISTS (SELECT 1 FROM welcomes AS w"
            "  WHERE w.group_id = ?1 AND w.commit_seq = group_log.seq)",
            (group_id,),
        ).rowcount
    )


def _expire_welcomes_and_attachments(
    conn: sqlite3.Connection, *, now: int, cutoff: int
) -> tuple[int, int, int]:
    # welcome_recipients go with their Welcome (ON DELETE CASCADE).
    welcomes = conn.execute("DELETE FROM welcomes WHERE created_at <= ?", (cutoff,)).rowcount
    attachments = conn.execute(
        "UPDATE attachments SET content = NULL WHERE expires_at <= ? AND content IS NOT NULL",
        (now,),
    ).rowcount
    # A tombstone answers 410 for one more retention period, then the hash is unknown.
    tombstones = conn.execute(
        "DELETE FROM attachments WHERE content IS NULL AND expires_at <= ?",
        (cutoff,),
    ).rowcount
    return int(welcomes), int(attachments), int(tombstones)


def _attachment_record(conn: sqlite3.Connection, sha256: bytes) -> AttachmentRecord:
    size, uploaded_by, uploaded_at, expires_at = conn.execute(
        "SELECT size, uploaded_by, uploaded_at, expires_at FROM attachments WHERE sha256 = ?",
        (sha256,),
    ).fetchone()
    return AttachmentRecord(
        sha256=sha256,
        size=int(size),
        uploaded_by=bytes(uploaded_by),
        uploaded_at=int(uploaded_at),
        expires_at=int(expires_at),
    )


def _require_live_attachment(
    conn: sqlite3.Connection, sha256: bytes, *, now: int
) -> tuple[int, int]:
    # The blob's rowid and size, if it is stored and unexpired.
    row = conn.execute(
        "SELECT id, size, expires_at, content IS NOT NULL FROM attachments WHERE sha256 = ?",
        (sha256,),
    ).fetchone()
    if row is None:
        raise AttachmentNotFound("no attachment has this hash")
    rowid, size, expires_at, has_content = row
    if int(expires_at) <= now or not has_content:
        raise AttachmentExpired("the attachment has expired and is no longer kept")
    return int(rowid), int(size)


_LOG_COLUMNS = "group_id, seq, epoch, kind, sender_device, client_message_id, message, received_at"


def _entry(row: tuple[bytes, int, int, str, bytes, bytes, bytes, int]) -> LogEntry:
    group_id, seq, epoch, kind, sender, mid, message, received_at = row
    return LogEntry(
        group_id=bytes(group_id),
        seq=int(seq),
        epoch=int(epoch),
        kind=MessageKind(kind),
        sender_device=bytes(sender),
        client_message_id=bytes(mid),
        message=bytes(message),
        received_at=int(received_at),
    )


def _group(conn: sqlite3.Connection, group_id: bytes) -> GroupRecord | None:
    row = conn.execute(
        "SELECT epoch, group_info, ratchet_tree, last_seq, created_at FROM groups"
        " WHERE group_id = ?",
        (group_id,),
    ).fetchone()
    if row is None:
        return None
    epoch, group_info, tree, last_seq, created_at = row
    return GroupRecord(
        group_id=group_id,
        epoch=int(epoch),
        group_info=bytes(group_info),
        ratchet_tree=bytes(tree),
        last_seq=int(last_seq),
        created_at=int(created_at),
    )


def _require_group(conn: sqlite3.Connection, group_id: bytes) -> GroupRecord:
    group = _group(conn, group_id)
    if group is None:
        raise UnknownGroup("no group has this id")
    return group


def _group_epoch(conn: sqlite3.Connection, group_id: bytes) -> int:
    # Appends need the epoch alone: a big group's GroupInfo and tree are hundreds of
    # kilobytes, not worth reading on every message.
    row = conn.execute("SELECT epoch FROM groups WHERE group_id = ?", (group_id,)).fetchone()
    if row is None:
        raise UnknownGroup("no group has this id")
    return int(row[0])


def _membership(conn: sqlite3.Connection, group_id: bytes, device_key: bytes) -> Membership | None:
    row = conn.execute(
        "SELECT leaf_index, joined_seq FROM group_devices WHERE group_id = ? AND device_key = ?",
        (group_id, device_key),
    ).fetchone()
    if row is None:
        return None
    return Membership(device_key=device_key, leaf_index=int(row[0]), joined_seq=int(row[1]))


def _require_membership(conn: sqlite3.Connection, group_id: bytes, device_key: bytes) -> Membership:
    member = _membership(conn, group_id, device_key)
    if member is None:
        raise NotAMember("the device is not a member of this group")
    return member


def _require_registered(conn: sqlite3.Connection, device_key: bytes) -> None:
    if not conn.execute("SELECT 1 FROM devices WHERE device_key = ?", (device_key,)).fetchone():
        raise UnknownMemberDevice("a member's leaf key is not a device registered on this relay")


def _find(conn: sqlite3.Connection, *, sender: bytes, mid: bytes) -> LogEntry | None:
    row = conn.execute(
        f"SELECT {_LOG_COLUMNS} FROM group_log"  # noqa: S608
        " WHERE sender_device = ? AND client_message_id = ?",
        (sender, mid),
    ).fetchone()
    return None if row is None else _entry(row)


def _commit_of(conn: sqlite3.Connection, *, group_id: bytes, epoch: int) -> LogEntry | None:
    row = conn.execute(
        f"SELECT {_LOG_COLUMNS} FROM group_log"  # noqa: S608
        " WHERE group_id = ? AND epoch = ? AND kind = 'commit'",
        (group_id, epoch),
    ).fetchone()
    return None if row is None else _entry(row)


def _original(
    conn: sqlite3.Connection, group_id: bytes, kind: MessageKind, message: NewMessage | NewCommit
) -> LogEntry | None:
    # Exactly once: the device's earlier entry with this id, whatever its epoch or
    # bytes (a retry re-encrypted for a newer epoch is still the same message).
    original = _find(conn, sender=message.sender_device, mid=message.client_message_id)
    if original is not None and (original.group_id != group_id or original.kind is not kind):
        raise MessageIdReused(
            f"this device used this client message id for a {original.kind} of another group"
            if original.group_id != group_id
            else f"this device used this client message id for a {original.kind}"
        )
    return original


def _insert_entry(
    conn: sqlite3.Connection, message: NewMessage | NewCommit, kind: MessageKind
) -> LogEntry:
    # The sequence number is read and advanced in the same write transaction
    # (BEGIN IMMEDIATE holds the database's write lock), so it has no gaps and no
    # two processes can give one number twice.
    (seq,) = conn.execute(
        "UPDATE groups SET last_seq = last_seq + 1 WHERE group_id = ? RETURNING last_seq",
        (message.group_id,),
    ).fetchone()
    entry = LogEntry(
        group_id=message.group_id,
        seq=int(seq),
        epoch=message.epoch,
        kind=kind,
        sender_device=message.sender_device,
        client_message_id=message.client_message_id,
        message=message.message,
        received_at=message.received_at,
    )
    conn.execute(
        f"INSERT INTO group_log ({_LOG_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
        (
            entry.group_id,
            entry.seq,
            entry.epoch,
            entry.kind.value,
            entry.sender_device,
            entry.client_message_id,
            entry.message,
            entry.received_at,
        ),
    )
    return entry


def _replace_members(
    conn: sqlite3.Connection, group_id: bytes, target: dict[bytes, int], *, joined_seq: int
) -> bool:
    current = {
        bytes(key): int(leaf)
        for key, leaf in conn.execute(
            "SELECT device_key, leaf_index FROM group_devices WHERE group_id = ?", (group_id,)
        )
    }
    removed = current.keys() - target.keys()
    added = target.keys() - current.keys()
    moved = {key for key in current.keys() & target.keys() if current[key] != target[key]}
    for key in removed:
        conn.execute(
            "DELETE FROM group_devices WHERE group_id = ? AND device_key = ?", (group_id, key)
        )
        _drop_welcomes(conn, group_id, key, up_to=None)
    # A device changes leaf only by an external commit that resyncs it, one per
    # commit, into a leaf that was blank or whose member was just deleted; so
    # these updates cannot collide on (group_id, leaf_index).
    for key in moved:
        conn.execute(
            "UPDATE group_devices SET leaf_index = ? WHERE group_id = ? AND device_key = ?",
            (target[key], group_id, key),
        )
    for key in added:
        _require_registered(conn, key)
    conn.executemany(
        "INSERT INTO group_devices (group_id, device_key, leaf_index, joined_seq)"
        " VALUES (?, ?, ?, ?)",
        [(group_id, key, target[key], joined_seq) for key in sorted(added)],
    )
    return bool(removed)


_INVITE_COLUMNS = (
    "group_id, invite_key, created_by, sealed_group_info, expires_at, max_uses, uses,"
    " created_at, updated_at"
)


def _invite(row: tuple[bytes, bytes, bytes, bytes, int, int, int, int, int]) -> InviteRecord:
    group_id, key, created_by, sealed, expires_at, max_uses, uses, created_at, updated_at = row
    return InviteRecord(
        group_id=bytes(group_id),
        invite_key=bytes(key),
        created_by=bytes(created_by),
        sealed_group_info=bytes(sealed),
        expires_at=int(expires_at),
        max_uses=int(max_uses),
        uses=int(uses),
        created_at=int(created_at),
        updated_at=int(updated_at),
    )


def _find_invite(conn: sqlite3.Connection, invite_key: bytes) -> InviteRecord | None:
    row = conn.execute(
        f"SELECT {_INVITE_COLUMNS} FROM invites WHERE invite_key = ?",  # noqa: S608
        (invite_key,),
    ).fetchone()
    return None if row is None else _invite(row)


def _use_invite(conn: sqlite3.Connection, group_id: bytes, invite_key: bytes, *, now: int) -> None:
    invite = _find_invite(conn, invite_key)
    if invite is None or invite.group_id != group_id:
        raise InviteNotFound("the group has no invite with this key")
    if invite.expires_at <= now:
        raise InviteExpired("the invite has expired")
    if invite.uses >= invite.max_uses:
        raise InviteUsedUp("the invite is used up")
    conn.execute("UPDATE invites SET uses = uses + 1 WHERE invite_key = ?", (invite_key,))


def _resets_on_remove(conn: sqlite3.Connection, group_id: bytes) -> bool:
    row = conn.execute(
        "SELECT reset_invites_on_remove FROM groups WHERE group_id = ?", (group_id,)
    ).fetchone()
    return bool(row[0])


def _insert_welcome(conn: sqlite3.Connection, commit: NewCommit, *, commit_seq: int) -> None:
    (welcome_id,) = conn.execute(
        "INSERT INTO welcomes"
        " (group_id, commit_seq, epoch, welcome, ratchet_tree, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        (
            commit.group_id,
            commit_seq,
            commit.epoch + 1,
            commit.welcome,
            commit.ratchet_tree,
            commit.received_at,
        ),
    ).fetchone()
    for device_key in commit.welcome_recipients:
        _require_registered(conn, device_key)
    conn.executemany(
        "INSERT INTO welcome_recipients (device_key, welcome_id) VALUES (?, ?)",
        [(device_key, welcome_id) for device_key in sorted(set(commit.welcome_recipients))],
    )


def _drop_welcomes(
    conn: sqlite3.Connection, group_id: bytes, device_key: bytes, *, up_to: int | None
) -> None:
    # A device's pending Welcomes of one group, of commits up to ``up_to`` (all if None);
    # then the Welcomes that no device waits for any more.
    limit = (1 << 62) if up_to is None else up_to
    conn.execute(
        "DELETE FROM welcome_recipients WHERE device_key = ? AND welcome_id IN ("
        " SELECT id FROM welcomes WHERE group_id = ? AND commit_seq <= ?)",
        (device_key, group_id, limit),
    )
    conn.execute(
        "DELETE FROM welcomes WHERE group_id = ? AND NOT EXISTS ("
        " SELECT 1 FROM welcome_recipients AS r WHERE r.welcome_id = welcomes.id)",
        (group_id,),
    )


def _statements(script: str) -> list[str]:
    """
    Split a migration script into statements, by SQLite's own notion of a complete one.
    """
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    leftover = [line.strip() for line in pending.splitlines()]
    if any(line and not line.startswith("--") for line in leftover):
        raise SchemaError("a migration ends with an incomplete statement")
    return statements


def _apply_migration(conn: sqlite3.Connection, *, migration: Migration) -> None:
    for statement in _statements(migration.sql):
        conn.execute(statement)
    conn.execute(
        "INSERT INTO schema_migrations (version, name, applied_at)"
        " VALUES (?, ?, CAST(strftime('%s', 'now') AS INTEGER))",
        (migration.version, migration.name),
    )


def _require_new_device(conn: sqlite3.Connection, device_key: bytes) -> None:
    if conn.execute("SELECT 1 FROM devices WHERE device_key = ?", (device_key,)).fetchone():
        raise DeviceExists("a device with this key is already registered")


def _require_device(conn: sqlite3.Connection, device_key: bytes) -> None:
    if not conn.execute("SELECT 1 FROM devices WHERE device_key = ?", (device_key,)).fetchone():
        raise DeviceNotFound("no device has this key")


def _insert_device(conn: sqlite3.Connection, device: Device) -> None:
    conn.execute(
        f"INSERT INTO devices ({_DEVICE_COLUMNS}) VALUES (?, ?, ?, ?, ?)",  # noqa: S608
        (
            device.device_key,
            device.account_key,
            device.certificate.created_at,
            device.certificate.signature,
            device.registered_at,
        ),
    )


def _count(conn: sqlite3.Connection, device_key: bytes) -> KeyPackageCount:
    one_time, last_resort = conn.execute(
        "SELECT count(*) FILTER (WHERE last_resort = 0), count(*) FILTER (WHERE last_resort = 1)"
        " FROM key_packages WHERE device_key = ?",
        (device_key,),
    ).fetchone()
    return KeyPackageCount(one_time=int(one_time), last_resort=bool(last_resort))


def _claim(conn: sqlite3.Connection, device_key: bytes) -> ClaimedKeyPackage | None:
    # The SELECT and DELETE run inside the caller's BEGIN IMMEDIATE transaction,
    # which holds the database's write lock: no other claim can pick the same row.
    row = conn.execute(
        "DELETE FROM key_packages WHERE id = ("
        " SELECT id FROM key_packages WHERE device_key = ? AND last_resort = 0"
        " ORDER BY id LIMIT 1"
        ") RETURNING key_package",
        (device_key,),
    ).fetchone()
    if row is not None:
        return ClaimedKeyPackage(
            device_key=device_key, key_package=bytes(row[0]), last_resort=False
        )
    row = conn.execute(
        "SELECT key_package FROM key_packages WHERE device_key = ? AND last_resort = 1",
        (device_key,),
    ).fetchone()
    if row is not None:
        return ClaimedKeyPackage(device_key=device_key, key_package=bytes(row[0]), last_resort=True)
    return None
