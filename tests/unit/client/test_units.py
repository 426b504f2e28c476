"""
The small parts of the client core: device records, backoff, outbox and message records,
group status transitions, and the rule that the core does no I/O.
"""

from __future__ import annotations

import ast
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from townsquare import auth, wire
from townsquare.client.core.device import Device, check_device_credential
from townsquare.client.core.groups import GroupStatus, check_transition, decode_status
from townsquare.client.core.messages import (
    StoredMessage,
    decode_message_record,
    encode_message_record,
)
from townsquare.client.core.outbox import (
    CommitIntent,
    EntryKind,
    OutboxEntry,
    decode_entry,
    encode_entry,
)
from townsquare.client.core.retry import Backoff, Slot
from townsquare.client.errors import StoreCorrupt
from townsquare.mls.credentials import BasicCredential, X509Credential
from townsquare.mls.errors import InvalidCredential

CORE = Path(__file__).parents[3] / "src" / "townsquare" / "client" / "core"
BANNED = ("asyncio", "socket", "sqlite3", "httpx", "websockets", "ssl", "http", "urllib", "time")


def rng_from(seed: bytes):
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        counter += 1
        return hashlib.sha512(seed + counter.to_bytes(4, "big")).digest()[:n]

    return rng


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_the_core_imports_no_io(path: Path) -> None:
    # Stand-in for the import-linter contract: no asyncio, sockets, sqlite3 or HTTP.
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in BANNED, f"{path.name} imports {name}"
            assert not name.startswith("townsquare.client.driver"), path.name
            assert not name.startswith("townsquare.server"), path.name


def test_device_round_trips_and_verifies() -> None:
    device = Device.generate(rng=rng_from(b"d"), created_at=1_767_225_600)
    again = Device.decode(device.encode())
    assert again == device
    assert again.device_key == auth.public_key(device.device_private_key)
    assert "private" not in repr(device).replace("private_key=", "")
    check_device_credential(device.credential, device.device_key)
    with pytest.raises(InvalidCredential):
        check_device_credential(BasicCredential(b"other"), device.device_key)
    with pytest.raises(InvalidCredential):
        check_device_credential(X509Credential(()), device.device_key)


@pytest.mark.parametrize("damage", ["truncate", "version", "swap-key"])
def test_a_damaged_device_record_is_corrupt(damage: str) -> None:
    device = Device.generate(rng=rng_from(b"d"), created_at=1_767_225_600)
    data = device.encode()
    if damage == "truncate":
        data = data[:-3]
    elif damage == "version":
        data = b"\x00\x07" + data[2:]
    else:
        other = Device.generate(rng=rng_from(b"o"), created_at=1)
        data = data.replace(device.device_private_key, other.device_private_key)
    with pytest.raises(StoreCorrupt):
        Device.decode(data)


def test_backoff_grows_caps_and_jitters() -> None:
    backoff = Backoff(initial_seconds=1.0, max_seconds=8.0)
    rng = rng_from(b"j")
    for failures, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 8.0), (1000, 8.0)]:
        delays = [backoff.delay(failures, rng) for _ in range(50)]
        assert all(base / 2 <= d <= base for d in delays)
        assert len(set(delays)) > 1
    slot = Slot(wanted=True)
    assert slot.due(0.0)
    slot.start(7)
    assert not slot.due(100.0)
    slot.failed(10.0, backoff, rng, retry_after=30.0)
    assert slot.wanted
    assert slot.not_before == 40.0
    assert not slot.due(39.0)
    assert slot.due(40.0)
    slot.start(8)
    slot.done()
    assert (slot.failures, slot.in_flight, slot.ready(0.0)) == (0, None, True)


def test_outbox_entries_round_trip() -> None:
    entry = OutboxEntry(
        number=9,
        kind=EntryKind.COMMIT,
        client_message_id=b"\x01" * 16,
        epoch=None,
        intent=CommitIntent(add_accounts=(b"a" * 32,), remove_devices=(b"r" * 32,), update=1),
    )
    assert decode_entry(9, encode_entry(entry)) == entry
    built = entry.built(epoch=4, message=b"m", digest=b"d", group_info=b"gi", welcome=b"w")
    assert decode_entry(9, encode_entry(built)) == built
    assert built.client_message_id == entry.client_message_id
    rebuilt = built.built(epoch=5, message=b"n", digest=b"e", client_message_id=b"\x02" * 16)
    assert rebuilt.sent_digests == (b"d", b"e")
    assert rebuilt.group_info == b"gi"
    assert rebuilt.welcome is None


def test_message_records_round_trip() -> None:
    text = wire.Text(
        "你好", message_id=wire.MessageId(b"\x03" * 16), sent_at=datetime(2026, 1, 1, tzinfo=UTC)
    )
    data = wire.encode(text)
    stored = StoredMessage(
        group_id=b"g",
        seq=5,
        sender=b"s" * 32,
        sender_leaf=2,
        epoch=3,
        own=True,
        message=text,
        data=data,
    )
    again = decode_message_record(b"g", encode_message_record(stored))
    assert again == stored
    assert (again.kind, again.text, again.message_id) == ("text", "你好", b"\x03" * 16)
    assert again.named("bob").sender_name == "bob"


def test_group_status_transitions_follow_the_table() -> None:
    check_transition(GroupStatus.CREATING, GroupStatus.ACTIVE)
    check_transition(GroupStatus.LEAVING, GroupStatus.LEFT)
    for old, new in [
        (GroupStatus.REMOVED, GroupStatus.ACTIVE),
        (GroupStatus.CREATING, GroupStatus.LEAVING),
        (GroupStatus.LEFT, GroupStatus.LEAVING),
    ]:
        with pytest.raises(RuntimeError):
            check_transition(old, new)
    with pytest.raises(StoreCorrupt):
        decode_status(b"\x09")
    assert GroupStatus.LEFT.closed
    assert not GroupStatus.LEAVING.closed
