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
KeyPackages and their claims) commit with ``synchronous = FULL``, so they
survive a power cut, not only a crash of the process. Request nonces and
quota counters commit with ``NORMAL``: WAL still keeps them across a crash of
the process, and the next FULL commit makes them durable too, since it syncs
the whole log before it; a power cut can lose the last few, which at worst
reopens a 300-second replay window that the signature's timestamp bounds. This
saves one disk flush (about 4 ms here) on every signed request.

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
from functools import partial
from pathlib import Path
from typing import TypeVar

from townsquare.auth import DeviceCertificate
from townsquare.server.errors import (
    AccountExists,
    DeviceExists,
    DeviceLimitReached,
    DeviceNotFound,
    DuplicateKeyPackage,
    KeyPackagesExhausted,
    KeyPackageStoreFull,
    RateLimited,
    ReplayedRequest,
    SchemaError,
    ServerError,
    StorageFailure,
    Unavailable,
    UnknownAccount,
)
from townsquare.server.storage.interface import (
    AccountClaim,
    ClaimedKeyPackage,
    Device,
    KeyPackageCount,
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

        def body(conn: sqlite3.Connection) -> None:
            inserted = conn.execute(
                "INSERT INTO request_nonces (device_key, nonce, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (device_key, nonce) DO NOTHING",
                (device_key, nonce, expires_at),
            ).rowcount
            if inserted != 1:
                raise ReplayedRequest("this device already used this nonce")

        await self._run_write(body, durable=False)

    async def consume_quota(
        self, subject: bytes, action: str, *, now: int, window_seconds: int, limit: int
    ) -> None:
        """
        Count one use of a rate-limited action.

        :raises RateLimited: if this window's uses are spent.
        """

        def body(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT window_start, used FROM quotas WHERE subject = ? AND action = ?",
                (subject, action),
            ).fetchone()
            if row is None or row[0] + window_seconds <= now:
                window_start, used = now, 0
            else:
                window_start, used = int(row[0]), int(row[1])
            if used >= limit:
                raise RateLimited(
                    f"at most {limit} {action} requests per {window_seconds} s",
                    retry_after=window_start + window_seconds - now,
                )
            conn.execute(
                "INSERT INTO quotas (subject, action, window_start, used) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (subject, action)"
                " DO UPDATE SET window_start = excluded.window_start, used = excluded.used",
                (subject, action, window_start, used + 1),
            )

        await self._run_write(body, durable=False)

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


# Quota rows idle this long are deleted: longer than any quota window.
_QUOTA_RETENTION_SECONDS = 86_400


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
