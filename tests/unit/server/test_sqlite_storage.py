"""
What the SQLite backend adds to the contract: WAL, recorded migrations, schema checks.
"""

from __future__ import annotations

import contextlib
import sqlite3

import pytest

from townsquare.server.errors import SchemaError, StorageFailure
from townsquare.server.storage import DATABASE_FILE_NAME, SQLiteStorage
from townsquare.server.storage.migrations import load_migrations
from townsquare.server.storage.sqlite import _statements

pytestmark = pytest.mark.anyio


def read(path, sql):
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return connection.execute(sql).fetchall()


async def test_open_creates_the_folder_a_wal_database_and_records_migrations(tmp_path):
    data = tmp_path / "a" / "b"
    storage = SQLiteStorage(data)
    await storage.open()
    try:
        path = data / DATABASE_FILE_NAME
        assert read(path, "PRAGMA journal_mode") == [("wal",)]
        versions = read(path, "SELECT version, name FROM schema_migrations ORDER BY version")
        assert versions == [(m.version, m.name) for m in load_migrations("sqlite")]
        assert versions[0] == (1, "directory")
    finally:
        await storage.close()


async def test_reopening_applies_nothing_twice(tmp_path):
    for _ in range(2):
        storage = SQLiteStorage(tmp_path)
        await storage.open()
        await storage.close()
    versions = read(tmp_path / DATABASE_FILE_NAME, "SELECT version FROM schema_migrations")
    assert versions == [(m.version,) for m in load_migrations("sqlite")]
    assert len(versions) >= 2


async def test_a_database_from_a_newer_relay_is_refused(tmp_path):
    storage = SQLiteStorage(tmp_path)
    await storage.open()
    await storage.close()
    with contextlib.closing(sqlite3.connect(tmp_path / DATABASE_FILE_NAME)) as connection:
        connection.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
        connection.commit()
    newer = SQLiteStorage(tmp_path)
    with pytest.raises(SchemaError, match="999"):
        await newer.open()
    await newer.close()


async def test_a_database_that_cannot_be_opened_is_a_storage_failure(tmp_path):
    (tmp_path / DATABASE_FILE_NAME).mkdir()
    storage = SQLiteStorage(tmp_path)
    with pytest.raises(StorageFailure):
        await storage.open()
    await storage.close()


async def test_close_before_open_does_nothing(tmp_path):
    await SQLiteStorage(tmp_path).close()


def test_migrations_are_numbered_from_one_without_gaps():
    migrations = load_migrations("sqlite")
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert all(m.sql.strip() for m in migrations)


def test_statements_split_on_complete_statements_only():
    script = "-- a comment; with a semicolon\nCREATE TABLE t (x TEXT DEFAULT ';');\n\nSELECT 1;\n"
    assert _statements(script) == [
        "-- a comment; with a semicolon\nCREATE TABLE t (x TEXT DEFAULT ';');",
        "SELECT 1;",
    ]
    assert _statements("SELECT 1;\n-- trailing comment\n") == ["SELECT 1;"]


def test_an_incomplete_last_statement_is_a_schema_error():
    with pytest.raises(SchemaError):
        _statements("SELECT 1;\nCREATE TABLE t (x")


async def test_a_data_folder_that_cannot_be_created_is_a_storage_failure(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    storage = SQLiteStorage(tmp_path / "file" / "data")
    with pytest.raises(StorageFailure):
        await storage.open()


async def test_the_schema_itself_refuses_a_second_commit_for_an_epoch(tmp_path):
    # The backstop under the transaction's own check: a partial unique index.
    storage = SQLiteStorage(tmp_path)
    await storage.open()
    await storage.close()
    with contextlib.closing(sqlite3.connect(tmp_path / DATABASE_FILE_NAME)) as connection:
        connection.execute("PRAGMA foreign_keys = OFF")
        row = "INSERT INTO group_log (group_id, seq, epoch, kind, sender_device,"
        row += " client_message_id, message, received_at) VALUES (x'01', ?, 3, ?, x'02', ?, x'', 0)"
        connection.execute(row, (1, "commit", b"a"))
        connection.execute(row, (2, "application", b"b"))
        connection.execute(row, (3, "application", b"c"))
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            connection.execute(row, (4, "commit", b"d"))
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            connection.execute(row, (5, "application", b"a"))
