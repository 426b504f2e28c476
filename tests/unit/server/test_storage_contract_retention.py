"""
The Storage contract, continued: retention, attachments, checked quotas and join requests.

The same pattern as ``test_storage_contract.py`` (every backend in BACKENDS,
through the Protocol alone, opaque bytes for MLS messages); kept in its own
module so that the two can grow apart. Every refused operation is checked to
leave what the Protocol can see as it was.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from townsquare import auth
from townsquare.server.errors import (
    AttachmentExpired,
    AttachmentNotFound,
    DeviceNotFound,
    LogPruned,
    RateLimited,
    StaleEpoch,
    UnknownGroup,
)
from townsquare.server.storage import (
    Device,
    GroupMember,
    JoinRequest,
    MessageKind,
    NewCommit,
    NewGroup,
    NewMessage,
    SQLiteStorage,
    Storage,
)
from townsquare.server.storage.interface import NewAttachment, RetentionReport

pytestmark = pytest.mark.anyio

NOW = 1_767_225_600
DAY = 86_400
RETENTION = 30 * DAY
GROUP = b"G" * 32

BACKENDS: dict[str, Callable[[Path], Storage]] = {
    "sqlite": SQLiteStorage,
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Callable[[Path], Storage]:
    return BACKENDS[request.param]


@pytest.fixture
async def storage(backend, tmp_path) -> AsyncIterator[Storage]:
    store = backend(tmp_path)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def devices(storage: Storage, count: int) -> list[bytes]:
    keys = []
    for _ in range(count):
        account = auth.generate_private_key()
        device_key = auth.public_key(auth.generate_private_key())
        await storage.create_account(
            Device(
                certificate=auth.certify_device(account, device_key, NOW - 10),
                registered_at=NOW,
            )
        )
        keys.append(device_key)
    return keys


async def group_of(storage: Storage, members: list[bytes]) -> None:
    await storage.create_group(
        NewGroup(
            group_id=GROUP,
            group_info=b"info-0",
            ratchet_tree=b"tree-0",
            members=tuple(GroupMember(key, leaf) for leaf, key in enumerate(members)),
            created_at=NOW,
        )
    )


def message(
    sender: bytes,
    *,
    epoch: int = 0,
    kind: MessageKind = MessageKind.APPLICATION,
    at: int = NOW,
) -> NewMessage:
    return NewMessage(
        group_id=GROUP,
        epoch=epoch,
        kind=kind,
        sender_device=sender,
        client_message_id=auth.generate_private_key()[:16],
        message=b"ciphertext-" + auth.generate_private_key()[:4],
        received_at=at,
    )


def commit(
    sender: bytes,
    members: list[bytes],
    *,
    epoch: int,
    at: int = NOW,
    welcome_for: tuple[bytes, ...] = (),
) -> NewCommit:
    return NewCommit(
        group_id=GROUP,
        epoch=epoch,
        sender_device=sender,
        client_message_id=auth.generate_private_key()[:16],
        message=f"commit-{epoch}".encode(),
        received_at=at,
        group_info=f"info-{epoch + 1}".encode(),
        ratchet_tree=f"tree-{epoch + 1}".encode(),
        members=tuple(GroupMember(key, leaf) for leaf, key in enumerate(members)),
        welcome=b"welcome" if welcome_for else None,
        welcome_recipients=welcome_for,
    )


async def seqs(storage: Storage, device: bytes, *, after: int) -> list[int]:
    page = await storage.fetch_messages(GROUP, device_key=device, after=after, limit=500)
    return [entry.seq for entry in page.entries]


async def retain(storage: Storage, now: int = NOW) -> RetentionReport:
    return await storage.apply_retention(now, retention_seconds=RETENTION)


# -- Retention of the log ---------------------------------------------------------------


async def test_retention_of_an_empty_store_deletes_nothing(storage):
    assert await retain(storage) == RetentionReport(
        log_entries=0, welcomes=0, attachments=0, tombstones=0
    )


async def test_entries_every_member_has_acknowledged_are_deleted(storage):
    alice, bob = await devices(storage, 2)
    await group_of(storage, [alice, bob])
    for _ in range(4):
        await storage.append_message(message(alice))
    await storage.ack_cursor(GROUP, device_key=alice, seq=4, now=NOW)
    await storage.ack_cursor(GROUP, device_key=bob, seq=2, now=NOW)
    assert (await retain(storage)).log_entries == 2
    # Bob reads on from his cursor; Alice's cursor passed everything he has not.
    assert await seqs(storage, bob, after=2) == [3, 4]
    assert await seqs(storage, alice, after=4) == []
    # A fetch from before what is kept is refused, with where the log now starts.
    with pytest.raises(LogPruned) as pruned:
        await seqs(storage, bob, after=1)
    assert pruned.value.first_seq == 3
    # Nothing more goes until Bob moves on; then the rest does.
    assert (await retain(storage)).log_entries == 0
    await storage.ack_cursor(GROUP, device_key=bob, seq=4, now=NOW)
    assert (await retain(storage)).log_entries == 2


async def test_a_device_without_a_cursor_holds_the_log_from_when_it_joined(storage):
    alice, bob = await devices(storage, 2)
    await group_of(storage, [alice, bob])
    await storage.append_message(message(alice))
    await storage.ack_cursor(GROUP, device_key=alice, seq=1, now=NOW)
    assert (await retain(storage)).log_entries == 0
    assert await seqs(storage, bob, after=0) == [1]


async def test_numbering_goes_on_after_pruning(storage):
    (alice,) = await devices(storage, 1)
    await group_of(storage, [alice])
    for _ in range(3):
        await storage.append_message(message(alice))
    await storage.ack_cursor(GROUP, device_key=alice, seq=3, now=NOW)
    await retain(storage)
    appended = await storage.append_message(message(alice))
    assert appended.entry.seq == 4
    page = await storage.fetch_messages(GROUP, device_key=alice, after=3, limit=10)
    assert (page.last_seq, [e.seq for e in page.entries]) == (4, [4])


async def test_entries_older_than_the_retention_time_go_unacknowledged(storage):
    alice, bob = await devices(storage, 2)
    await group_of(storage, [alice, bob])
    await storage.append_message(message(alice, at=NOW))
    await storage.append_message(message(alice, at=NOW + DAY))
    assert (await retain(storage, NOW + RETENTION - 1)).log_entries == 0
    assert (await retain(storage, NOW + RETENTION)).log_entries == 1
    with pytest.raises(LogPruned) as pruned:
        await seqs(storage, bob, after=0)
    assert pruned.value.first_seq == 2
    assert await seqs(storage, bob, after=1) == [2]


async def test_a_device_that_left_does_not_hold_the_log_back(storage):
    alice, bob = await devices(storage, 2)
    await group_of(storage, [alice, bob])
    await storage.append_message(message(alice))
    await storage.append_commit(commit(alice, [alice], epoch=0))
    await storage.ack_cursor(GROUP, device_key=alice, seq=2, now=NOW)
    assert (await retain(storage)).log_entries == 2


async def test_the_current_epochs_proposals_are_kept_until_a_commit_ends_it(storage):
    alice, bob = await devices(storage, 2)
    await group_of(storage, [alice, bob])
    await storage.append_message(message(bob, kind=MessageKind.PROPOSAL))
    await storage.append_message(message(alice))
    for device in (alice, bob):
        await storage.ack_cursor(GROUP, device_key=device, seq=2, now=NOW)
    assert (await retain(storage)).log_entries == 1
    # The relay still replays the proposal onto its view, but no member is served it.
    snapshot = await storage.load_group(GROUP, device_key=alice, proposals_after=0)
    assert [p.seq for p in snapshot.proposals] == [1]
    with pytest.raises(LogPruned):
        await seqs(storage, alice, after=0)
    await storage.append_commit(commit(alice, [alice, bob], epoch=0))
    for device in (alice, bob):
        await storage.ack_cursor(GROUP, device_key=device, seq=3, now=NOW)
    assert (await retain(storage)).log_entries == 2


async def test_a_commit_is_kept_while_its_welcome_waits(storage):
    alice, bob = await devices(storage, 2)
    await group_of(storage, [alice])
    await storage.append_commit(commit(alice, [alice, bob], epoch=0, welcome_for=(bob,)))
    await storage.ack_cursor(GROUP, device_key=alice, seq=1, now=NOW)
    # Bob's position is the commit that added him, so seq 1 may go, but not while
    # its Welcome waits for him.
    assert (await retain(storage)).log_entries == 0
    assert [w.commit_seq for w in await storage.list_welcomes(bob, limit=10)] == [1]
    await storage.ack_cursor(GROUP, device_key=bob, seq=1, now=NOW)
    assert (await retain(storage)).log_entries == 1


async def test_welcomes_expire_after_the_retention_time(storage):
    alice, bob = await devices(storage, 2)
    await group_of(storage, [alice])
    await storage.append_commit(commit(alice, [alice, bob], epoch=0, welcome_for=(bob,)))
    await storage.ack_cursor(GROUP, device_key=alice, seq=1, now=NOW)
    report = await retain(storage, NOW + RETENTION)
    assert (report.welcomes, report.log_entries) == (1, 1)
    assert await storage.list_welcomes(bob, limit=10) == ()


async def test_a_commit_for_an_epoch_whose_commit_was_pruned_is_stale(storage):
    alice, bob = await devices(storage, 2)
    await group_of(storage, [alice, bob])
    await storage.append_commit(commit(alice, [alice, bob], epoch=0))
    await storage.append_commit(commit(alice, [alice, bob], epoch=1))
    for device in (alice, bob):
        await storage.ack_cursor(GROUP, device_key=device, seq=2, now=NOW)
    await retain(storage)
    assert await storage.get_commit(GROUP, 0) is None
    with pytest.raises(StaleEpoch) as stale:
        await storage.append_commit(commit(bob, [alice, bob], epoch=0))
    assert stale.value.epoch == 2
    assert (
        await storage.load_group(GROUP, device_key=bob, proposals_after=None)
    ).group.last_seq == 2


# -- Checked quotas -------------------------------------------------------------------


async def test_check_quota_counts_nothing(storage):
    for _ in range(5):
        await storage.check_quota(b"s", "post", now=NOW, window_seconds=60, limit=1)
    await storage.consume_quota(b"s", "post", now=NOW, window_seconds=60, limit=1)
    with pytest.raises(RateLimited) as refused:
        await storage.check_quota(b"s", "post", now=NOW + 20, window_seconds=60, limit=1)
    assert refused.value.retry_after == 40
    await storage.check_quota(b"s", "post", now=NOW + 60, window_seconds=60, limit=1)


async def test_a_quota_counts_amounts(storage):
    await storage.consume_quota(b"s", "bytes", now=NOW, window_seconds=60, limit=100, amount=60)
    await storage.check_quota(b"s", "bytes", now=NOW, window_seconds=60, limit=100, amount=40)
    with pytest.raises(RateLimited):
        await storage.check_quota(b"s", "bytes", now=NOW, window_seconds=60, limit=100, amount=41)
    with pytest.raises(RateLimited):
        await storage.consume_quota(b"s", "bytes", now=NOW, window_seconds=60, limit=100, amount=41)
    # The refused amount was not counted.
    await storage.consume_quota(b"s", "bytes", now=NOW, window_seconds=60, limit=100, amount=40)


@pytest.mark.parametrize("amount", [0, -1])
async def test_a_quota_amount_below_one_is_a_usage_error(storage, amount):
    with pytest.raises(ValueError, match="one use"):
        await storage.check_quota(b"s", "x", now=NOW, window_seconds=60, limit=5, amount=amount)
    with pytest.raises(ValueError, match="one use"):
        await storage.consume_quota(b"s", "x", now=NOW, window_seconds=60, limit=5, amount=amount)


# -- Attachments ------------------------------------------------------------------------


def blob_of(content: bytes, uploader: bytes, *, at: int = NOW) -> NewAttachment:
    return NewAttachment(
        sha256=hashlib.sha256(content).digest(),
        content=content,
        uploaded_by=uploader,
        uploaded_at=at,
        expires_at=at + RETENTION,
    )


async def test_an_attachment_is_stored_and_read_back_in_parts(storage):
    (alice,) = await devices(storage, 1)
    content = bytes(range(256)) * 40
    stored = await storage.put_attachment(blob_of(content, alice))
    assert not stored.duplicate
    record = await storage.get_attachment(stored.record.sha256, now=NOW)
    assert record == stored.record
    assert (record.size, record.uploaded_by, record.expires_at) == (
        len(content),
        alice,
        NOW + RETENTION,
    )
    parts = [
        await storage.read_attachment(record.sha256, offset=offset, length=1000, now=NOW)
        for offset in range(0, record.size, 1000)
    ]
    assert b"".join(parts) == content
    assert (
        await storage.read_attachment(record.sha256, offset=len(content), length=9, now=NOW) == b""
    )


async def test_an_empty_attachment_is_stored(storage):
    (alice,) = await devices(storage, 1)
    stored = await storage.put_attachment(blob_of(b"", alice))
    assert stored.record.size == 0
    assert await storage.read_attachment(stored.record.sha256, offset=0, length=10, now=NOW) == b""


async def test_the_same_blob_is_stored_once_and_kept_longer(storage):
    alice, bob = await devices(storage, 2)
    first = await storage.put_attachment(blob_of(b"same bytes", alice))
    again = await storage.put_attachment(blob_of(b"same bytes", bob, at=NOW + DAY))
    assert again.duplicate
    assert again.record == first.record.__class__(
        sha256=first.record.sha256,
        size=first.record.size,
        uploaded_by=alice,
        uploaded_at=NOW,
        expires_at=NOW + DAY + RETENTION,
    )


async def test_an_unknown_attachment_is_not_found(storage):
    missing = hashlib.sha256(b"never uploaded").digest()
    with pytest.raises(AttachmentNotFound):
        await storage.get_attachment(missing, now=NOW)
    with pytest.raises(AttachmentNotFound):
        await storage.read_attachment(missing, offset=0, length=1, now=NOW)


async def test_an_attachment_of_an_unknown_device_stores_nothing(storage):
    upload = blob_of(b"orphan", auth.public_key(auth.generate_private_key()))
    with pytest.raises(DeviceNotFound):
        await storage.put_attachment(upload)
    with pytest.raises(AttachmentNotFound):
        await storage.get_attachment(upload.sha256, now=NOW)


async def test_an_attachment_whose_hash_is_not_its_contents_is_a_usage_error(storage):
    (alice,) = await devices(storage, 1)
    upload = blob_of(b"real", alice)
    forged = NewAttachment(
        sha256=hashlib.sha256(b"other").digest(),
        content=upload.content,
        uploaded_by=alice,
        uploaded_at=NOW,
        expires_at=NOW + RETENTION,
    )
    with pytest.raises(ValueError, match="SHA-256"):
        await storage.put_attachment(forged)
    with pytest.raises(AttachmentNotFound):
        await storage.get_attachment(forged.sha256, now=NOW)


async def test_a_negative_read_is_a_usage_error(storage):
    (alice,) = await devices(storage, 1)
    stored = await storage.put_attachment(blob_of(b"abc", alice))
    with pytest.raises(ValueError, match="negative"):
        await storage.read_attachment(stored.record.sha256, offset=-1, length=1, now=NOW)


async def test_an_attachment_expires_then_is_forgotten(storage):
    (alice,) = await devices(storage, 1)
    stored = await storage.put_attachment(blob_of(b"photo", alice))
    sha256 = stored.record.sha256
    expiry = stored.record.expires_at
    # Expired as soon as its time comes, before retention deletes the bytes.
    with pytest.raises(AttachmentExpired):
        await storage.get_attachment(sha256, now=expiry)
    report = await retain(storage, expiry)
    assert (report.attachments, report.tombstones) == (1, 0)
    with pytest.raises(AttachmentExpired):
        await storage.read_attachment(sha256, offset=0, length=5, now=expiry - 1)
    # The tombstone answers "expired" for one more retention period, then goes.
    report = await retain(storage, expiry + RETENTION)
    assert (report.attachments, report.tombstones) == (0, 1)
    with pytest.raises(AttachmentNotFound):
        await storage.get_attachment(sha256, now=expiry + RETENTION)


async def test_an_expired_attachment_uploaded_again_is_stored_afresh(storage):
    alice, bob = await devices(storage, 2)
    stored = await storage.put_attachment(blob_of(b"photo", alice))
    later = stored.record.expires_at + 5
    await retain(storage, later)
    again = await storage.put_attachment(blob_of(b"photo", bob, at=later))
    assert not again.duplicate
    assert (again.record.uploaded_by, again.record.expires_at) == (bob, later + RETENTION)
    content = await storage.read_attachment(stored.record.sha256, offset=0, length=99, now=later)
    assert content == b"photo"


async def test_attachments_survive_close_and_reopen(backend, tmp_path):
    store = backend(tmp_path)
    await store.open()
    (alice,) = await devices(store, 1)
    stored = await store.put_attachment(blob_of(b"kept", alice))
    await store.close()
    reopened = backend(tmp_path)
    await reopened.open()
    try:
        assert await reopened.get_attachment(stored.record.sha256, now=NOW) == stored.record
    finally:
        await reopened.close()


# -- Join requests -------------------------------------------------------------------------


def join_request(device: bytes, *, at: int = NOW) -> JoinRequest:
    return JoinRequest(
        group_id=GROUP,
        device_key=device,
        invite_key=b"I" * 32,
        key_package=b"key-package-of-" + device[:4],
        sealed_note=b"sealed-note",
        created_at=at,
    )


async def test_a_waiting_join_request_is_read_back_until_it_is_deleted(storage):
    admin, newcomer, other = await devices(storage, 3)
    await group_of(storage, [admin])
    assert await storage.get_join_request(GROUP, newcomer) is None
    stored = await storage.put_join_request(join_request(newcomer), max_pending=10)
    assert await storage.get_join_request(GROUP, newcomer) == stored
    assert await storage.get_join_request(GROUP, other) is None
    assert await storage.delete_join_request(GROUP, newcomer)
    assert await storage.get_join_request(GROUP, newcomer) is None


async def test_a_join_request_from_a_member_no_longer_waits(storage):
    admin, newcomer = await devices(storage, 2)
    await group_of(storage, [admin])
    await storage.put_join_request(join_request(newcomer), max_pending=10)
    await storage.append_commit(commit(admin, [admin, newcomer], epoch=0, welcome_for=(newcomer,)))
    # Added before the admin deleted the request: it is not waiting any more.
    assert await storage.get_join_request(GROUP, newcomer) is None
    assert await storage.join_requests(GROUP) == ()


async def test_reading_a_join_request_of_an_unknown_group_is_refused(storage):
    (device,) = await devices(storage, 1)
    with pytest.raises(UnknownGroup):
        await storage.get_join_request(GROUP, device)
