"""
The device's store: the same contract for the in-memory fake and SQLite on disk.

Plus a real SQLite write failure in the middle of a session: the core raises
StoreFailed, reloads the group from disk, and carries on as if the call had
never happened.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from townsquare.client.core import Client, ClientConfig, GroupStatus, MemoryClientStore
from townsquare.client.core.store import ClientStore
from townsquare.client.driver import SqliteClientStore
from townsquare.client.errors import StoreCorrupt, StoreFailed
from townsquare.mls.errors import UsageError


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ClientStore]:
    if request.param == "memory":
        yield MemoryClientStore()
        return
    sqlite = SqliteClientStore(tmp_path / "client.sqlite3")
    try:
        yield sqlite
    finally:
        sqlite.close()


def test_scopes_are_separate_and_listed(store: ClientStore) -> None:
    assert store.group_ids() == []
    store.device_records().apply({"device": b"d"}, ())
    store.group_records(b"\x02" * 16).apply({"app/x": b"2"}, ())
    store.group_records(b"\x01" * 16).apply({"app/x": b"1", "app/y": b""}, ())
    store.group_records(b"\x03" * 16)  # a scope without records is not listed
    assert store.group_ids() == [b"\x01" * 16, b"\x02" * 16]
    assert store.group_records(b"\x01" * 16).get("app/x") == b"1"
    assert store.group_records(b"\x02" * 16).scan("app/") == [("app/x", b"2")]
    assert store.device_records().get("app/x") is None
    assert store.group_records(b"\x01" * 16).get("device") is None


def test_batches_are_all_or_nothing(store: ClientStore) -> None:
    scope = store.group_records(b"\x01" * 16)
    scope.apply({"a": b"1", "b": b"2"}, ())
    with pytest.raises(UsageError):
        scope.apply({"c": b"3", "bad key": b"4"}, ())
    assert scope.scan("") == [("a", b"1"), ("b", b"2")]
    scope.apply({"c": b"3"}, ("a", "missing"))
    assert scope.scan("") == [("b", b"2"), ("c", b"3")]
    store.group_records(b"\x01" * 16).apply({}, ("b", "c"))
    assert store.group_ids() == []


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "client.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreCorrupt):
        SqliteClientStore(path)


def test_a_failed_sqlite_write_changes_nothing_and_the_session_goes_on(tmp_path: Path) -> None:
    store = SqliteClientStore(tmp_path / "client.sqlite3")
    import secrets

    client = Client(store, rng=secrets.token_bytes, config=ClientConfig())
    client.initialize(display_name="alice", now=time.time())
    group_id = client.create_group(title="村", now=time.time())
    before = store.group_records(group_id).scan("")
    epoch_before = client.group(group_id).epoch
    store._connection.execute("PRAGMA query_only=ON")  # every write now fails
    with pytest.raises(StoreFailed):
        client.send_text(group_id, "lost with the failed write", now=time.time())
    assert store.group_records(group_id).scan("") == before
    assert len(client.queued(group_id)) == 2  # the title and our profile, as before
    store._connection.execute("PRAGMA query_only=OFF")
    client.send_text(group_id, "written", now=time.time())
    assert client.group(group_id).epoch == epoch_before
    assert client.group(group_id).status == GroupStatus.CREATING
    reopened = Client(store, rng=secrets.token_bytes)
    assert len(reopened.queued(group_id)) == len(client.queued(group_id)) == 3
    store.close()
