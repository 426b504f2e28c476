"""
The Storage contract: every backend passes these tests, through the Protocol alone.

Backends are listed in BACKENDS; the PostgreSQL backend joins with its own
entry (skipped unless its TOWNSQUARE_TEST_* variable is set). Every refused
operation is checked to leave the store as it was. The delivery part (groups,
logs, Welcomes, cursors) uses opaque bytes for MLS messages: the store orders
and keeps them, the delivery service checks them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from townsquare import auth
from townsquare.server.errors import (
    AccountExists,
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
    KeyPackagesExhausted,
    KeyPackageStoreFull,
    MessageIdReused,
    NotAMember,
    RateLimited,
    ReplayedRequest,
    StaleEpoch,
    Unavailable,
    UnknownAccount,
    UnknownGroup,
    UnknownMemberDevice,
)
from townsquare.server.storage import (
    ClaimedKeyPackage,
    Device,
    GroupMember,
    InviteRecord,
    KeyPackageCount,
    LogEntry,
    Membership,
    MessageKind,
    NewCommit,
    NewGroup,
    NewInvite,
    NewMessage,
    SQLiteStorage,
    Storage,
)
from townsquare.server.storage.interface import NonceUse, QuotaCharge

pytestmark = pytest.mark.anyio

NOW = 1_767_225_600

#: Each backend: a factory of a handle on the store identified by a folder. Two
#: handles made from one folder share one store, as two relay processes would.
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


def make_device(account_private: bytes | None = None, *, registered_at: int = NOW) -> Device:
    account = account_private if account_private is not None else auth.generate_private_key()
    device_key = auth.public_key(auth.generate_private_key())
    return Device(
        certificate=auth.certify_device(account, device_key, NOW - 10),
        registered_at=registered_at,
    )


async def account_with_devices(storage: Storage, count: int = 1) -> list[Device]:
    account = auth.generate_private_key()
    first = make_device(account)
    await storage.create_account(first)
    devices = [first]
    for i in range(1, count):
        device = make_device(account, registered_at=NOW + i)
        await storage.add_device(device, max_devices=10)
        devices.append(device)
    return devices


async def state(storage: Storage, devices: list[Device]) -> dict[bytes, object]:
    """What the Protocol can see of these devices and their accounts."""
    seen: dict[bytes, object] = {}
    for device in devices:
        seen[device.account_key] = await storage.list_devices(device.account_key)
        seen[device.device_key] = await storage.count_key_packages(device.device_key)
    return seen


def packages(n: int, tag: bytes = b"kp") -> list[bytes]:
    return [tag + b"-" + str(i).encode() for i in range(n)]


# -- Life cycle ----------------------------------------------------------------------


async def test_check_ready_before_open_raises_unavailable(backend, tmp_path):
    store = backend(tmp_path)
    with pytest.raises(Unavailable):
        await store.check_ready()


async def test_check_ready_after_close_raises_unavailable(storage):
    await storage.check_ready()
    await storage.close()
    with pytest.raises(Unavailable):
        await storage.check_ready()
    await storage.close()


async def test_open_twice_is_harmless(storage):
    await storage.open()
    await storage.check_ready()


async def test_data_survives_close_and_reopen(backend, tmp_path):
    store = backend(tmp_path)
    await store.open()
    (device,) = await account_with_devices(store)
    await store.add_key_packages(
        device.device_key, one_time=packages(2), last_resort=b"lr", now=NOW, max_stored=10
    )
    await store.use_nonce(device.device_key, b"n" * 16, expires_at=NOW + 300)
    await store.close()

    reopened = backend(tmp_path)
    await reopened.open()
    try:
        assert await reopened.get_device(device.device_key) == device
        assert await reopened.count_key_packages(device.device_key) == KeyPackageCount(
            one_time=2, last_resort=True
        )
        with pytest.raises(ReplayedRequest):
            await reopened.use_nonce(device.device_key, b"n" * 16, expires_at=NOW + 300)
    finally:
        await reopened.close()


# -- Accounts and devices ------------------------------------------------------------


async def test_create_account_then_read_it_back(storage):
    device = make_device()
    await storage.create_account(device)
    assert await storage.get_device(device.device_key) == device
    assert await storage.list_devices(device.account_key) == (device,)


async def test_get_unknown_device_is_none(storage):
    assert await storage.get_device(b"\x07" * 32) is None


async def test_create_existing_account_is_refused_and_changes_nothing(storage):
    (first,) = await account_with_devices(storage)
    before = await state(storage, [first])
    # The same account key as `first`, with a new device.
    again = Device(
        certificate=auth.DeviceCertificate(
            account_key=first.account_key,
            device_key=auth.public_key(auth.generate_private_key()),
            created_at=NOW,
            signature=b"\x00" * 64,
        ),
        registered_at=NOW,
    )
    with pytest.raises(AccountExists):
        await storage.create_account(again)
    assert await state(storage, [first]) == before
    assert await storage.get_device(again.device_key) is None


async def test_create_account_with_a_registered_device_is_refused(storage):
    (first,) = await account_with_devices(storage)
    before = await state(storage, [first])
    other_account = auth.generate_private_key()
    clash = Device(
        certificate=auth.certify_device(other_account, first.device_key, NOW),
        registered_at=NOW,
    )
    with pytest.raises(DeviceExists):
        await storage.create_account(clash)
    assert await state(storage, [first]) == before
    with pytest.raises(UnknownAccount):
        await storage.list_devices(clash.account_key)


async def test_add_device_lists_devices_in_registration_order(storage):
    devices = await account_with_devices(storage, 3)
    assert await storage.list_devices(devices[0].account_key) == tuple(devices)


async def test_add_device_to_unknown_account_is_refused(storage):
    device = make_device()
    with pytest.raises(UnknownAccount):
        await storage.add_device(device, max_devices=10)
    assert await storage.get_device(device.device_key) is None


async def test_add_registered_device_is_refused(storage):
    devices = await account_with_devices(storage, 2)
    before = await state(storage, devices)
    with pytest.raises(DeviceExists):
        await storage.add_device(devices[1], max_devices=10)
    assert await state(storage, devices) == before


async def test_add_device_over_the_limit_is_refused(storage):
    devices = await account_with_devices(storage, 2)
    before = await state(storage, devices)
    extra = Device(
        certificate=auth.DeviceCertificate(
            account_key=devices[0].account_key,
            device_key=auth.public_key(auth.generate_private_key()),
            created_at=NOW,
            signature=b"\x00" * 64,
        ),
        registered_at=NOW,
    )
    with pytest.raises(DeviceLimitReached):
        await storage.add_device(extra, max_devices=2)
    assert await state(storage, devices) == before
    assert await storage.get_device(extra.device_key) is None


async def test_list_devices_of_unknown_account_is_refused(storage):
    with pytest.raises(UnknownAccount):
        await storage.list_devices(b"\x01" * 32)


# -- Nonces and quotas ---------------------------------------------------------------


async def test_a_nonce_is_single_use_per_device(storage):
    await storage.use_nonce(b"\x01" * 32, b"n" * 16, expires_at=NOW)
    with pytest.raises(ReplayedRequest):
        await storage.use_nonce(b"\x01" * 32, b"n" * 16, expires_at=NOW)
    # Another device may draw the same nonce.
    await storage.use_nonce(b"\x02" * 32, b"n" * 16, expires_at=NOW)


async def test_purge_keeps_nonces_until_they_expire(storage):
    await storage.use_nonce(b"\x01" * 32, b"a" * 16, expires_at=NOW)
    await storage.use_nonce(b"\x01" * 32, b"b" * 16, expires_at=NOW + 1)
    assert await storage.purge_expired(NOW) == 0
    with pytest.raises(ReplayedRequest):
        await storage.use_nonce(b"\x01" * 32, b"a" * 16, expires_at=NOW)
    assert await storage.purge_expired(NOW + 1) == 1
    await storage.use_nonce(b"\x01" * 32, b"a" * 16, expires_at=NOW + 500)
    with pytest.raises(ReplayedRequest):
        await storage.use_nonce(b"\x01" * 32, b"b" * 16, expires_at=NOW + 1)


async def test_quota_allows_the_limit_then_refuses_until_the_window_ends(storage):
    for _ in range(3):
        await storage.consume_quota(b"s", "claim", now=NOW, window_seconds=60, limit=3)
    with pytest.raises(RateLimited) as refused:
        await storage.consume_quota(b"s", "claim", now=NOW + 10, window_seconds=60, limit=3)
    assert refused.value.retry_after == 50
    # Other subjects and actions have their own windows.
    await storage.consume_quota(b"t", "claim", now=NOW, window_seconds=60, limit=3)
    await storage.consume_quota(b"s", "other", now=NOW, window_seconds=60, limit=3)
    # A new window starts once the old one has ended.
    await storage.consume_quota(b"s", "claim", now=NOW + 60, window_seconds=60, limit=3)


async def test_a_refused_use_is_not_counted(storage):
    await storage.consume_quota(b"s", "claim", now=NOW, window_seconds=60, limit=1)
    for second in range(1, 5):
        with pytest.raises(RateLimited):
            await storage.consume_quota(b"s", "claim", now=NOW + second, window_seconds=60, limit=1)
    await storage.consume_quota(b"s", "claim", now=NOW + 60, window_seconds=60, limit=1)
    with pytest.raises(RateLimited) as refused:
        await storage.consume_quota(b"s", "claim", now=NOW + 61, window_seconds=60, limit=1)
    assert refused.value.retry_after == 59


# -- KeyPackages ---------------------------------------------------------------------


async def test_upload_and_count(storage):
    (device,) = await account_with_devices(storage)
    assert await storage.count_key_packages(device.device_key) == KeyPackageCount(
        one_time=0, last_resort=False
    )
    count = await storage.add_key_packages(
        device.device_key, one_time=packages(3), last_resort=None, now=NOW, max_stored=10
    )
    assert count == KeyPackageCount(one_time=3, last_resort=False)
    count = await storage.add_key_packages(
        device.device_key, one_time=(), last_resort=b"lr", now=NOW, max_stored=10
    )
    assert count == KeyPackageCount(one_time=3, last_resort=True)
    assert await storage.count_key_packages(device.device_key) == count


async def test_upload_for_unknown_device_is_refused(storage):
    with pytest.raises(DeviceNotFound):
        await storage.add_key_packages(
            b"\x01" * 32, one_time=packages(1), last_resort=None, now=NOW, max_stored=10
        )
    with pytest.raises(DeviceNotFound):
        await storage.count_key_packages(b"\x01" * 32)


async def test_upload_with_a_package_twice_stores_nothing(storage):
    (device,) = await account_with_devices(storage)
    before = await state(storage, [device])
    with pytest.raises(DuplicateKeyPackage):
        await storage.add_key_packages(
            device.device_key, one_time=[b"a", b"b", b"a"], last_resort=None, now=NOW, max_stored=10
        )
    with pytest.raises(DuplicateKeyPackage):
        await storage.add_key_packages(
            device.device_key, one_time=[b"a"], last_resort=b"a", now=NOW, max_stored=10
        )
    assert await state(storage, [device]) == before


async def test_upload_of_a_stored_package_stores_nothing(storage):
    (device,) = await account_with_devices(storage)
    await storage.add_key_packages(
        device.device_key, one_time=[b"a"], last_resort=b"lr", now=NOW, max_stored=10
    )
    before = await state(storage, [device])
    with pytest.raises(DuplicateKeyPackage):
        await storage.add_key_packages(
            device.device_key, one_time=[b"b", b"a"], last_resort=b"lr2", now=NOW, max_stored=10
        )
    assert await state(storage, [device]) == before
    claimed = await storage.claim_key_package(device.device_key)
    assert claimed.key_package == b"a"


async def test_reuploading_the_same_last_resort_replaces_it(storage):
    (device,) = await account_with_devices(storage)
    for _ in range(2):
        count = await storage.add_key_packages(
            device.device_key, one_time=(), last_resort=b"lr", now=NOW, max_stored=10
        )
        assert count == KeyPackageCount(one_time=0, last_resort=True)


async def test_upload_over_the_store_limit_stores_nothing(storage):
    (device,) = await account_with_devices(storage)
    await storage.add_key_packages(
        device.device_key, one_time=packages(3), last_resort=None, now=NOW, max_stored=5
    )
    before = await state(storage, [device])
    with pytest.raises(KeyPackageStoreFull):
        await storage.add_key_packages(
            device.device_key,
            one_time=packages(3, b"more"),
            last_resort=b"lr",
            now=NOW,
            max_stored=5,
        )
    assert await state(storage, [device]) == before
    count = await storage.add_key_packages(
        device.device_key, one_time=packages(2, b"more"), last_resort=None, now=NOW, max_stored=5
    )
    assert count == KeyPackageCount(one_time=5, last_resort=False)


async def test_claims_hand_out_one_time_packages_oldest_first_then_the_last_resort(storage):
    (device,) = await account_with_devices(storage)
    await storage.add_key_packages(
        device.device_key, one_time=[b"1", b"2"], last_resort=b"lr", now=NOW, max_stored=10
    )
    await storage.add_key_packages(
        device.device_key, one_time=[b"3"], last_resort=None, now=NOW, max_stored=10
    )
    claims = [await storage.claim_key_package(device.device_key) for _ in range(5)]
    assert [(c.key_package, c.last_resort) for c in claims] == [
        (b"1", False),
        (b"2", False),
        (b"3", False),
        (b"lr", True),
        (b"lr", True),
    ]
    assert all(c.device_key == device.device_key for c in claims)
    assert await storage.count_key_packages(device.device_key) == KeyPackageCount(
        one_time=0, last_resort=True
    )


async def test_claim_with_nothing_left_is_refused(storage):
    (device,) = await account_with_devices(storage)
    await storage.add_key_packages(
        device.device_key, one_time=[b"1"], last_resort=None, now=NOW, max_stored=10
    )
    await storage.claim_key_package(device.device_key)
    with pytest.raises(KeyPackagesExhausted):
        await storage.claim_key_package(device.device_key)


async def test_claim_for_unknown_device_is_refused(storage):
    with pytest.raises(DeviceNotFound):
        await storage.claim_key_package(b"\x01" * 32)


async def test_account_claim_takes_one_per_device_and_lists_the_exhausted(storage):
    devices = await account_with_devices(storage, 3)
    await storage.add_key_packages(
        devices[0].device_key, one_time=[b"a1", b"a2"], last_resort=None, now=NOW, max_stored=10
    )
    await storage.add_key_packages(
        devices[2].device_key, one_time=(), last_resort=b"c-lr", now=NOW, max_stored=10
    )
    claim = await storage.claim_account_key_packages(devices[0].account_key)
    assert claim.account_key == devices[0].account_key
    assert claim.claimed == (
        ClaimedKeyPackage(device_key=devices[0].device_key, key_package=b"a1", last_resort=False),
        ClaimedKeyPackage(device_key=devices[2].device_key, key_package=b"c-lr", last_resort=True),
    )
    assert claim.exhausted == (devices[1].device_key,)
    assert await storage.count_key_packages(devices[0].device_key) == KeyPackageCount(
        one_time=1, last_resort=False
    )


async def test_account_claim_for_unknown_account_is_refused(storage):
    with pytest.raises(UnknownAccount):
        await storage.claim_account_key_packages(b"\x01" * 32)


async def test_concurrent_claims_never_hand_out_a_package_twice(backend, tmp_path):
    # Two handles on one store, as two relay processes: the database itself,
    # not one process's queue, must keep every one-time package single-use.
    async with contextlib.AsyncExitStack() as stack:
        handles = []
        for _ in range(2):
            handle = backend(tmp_path)
            await handle.open()
            stack.push_async_callback(handle.close)
            handles.append(handle)
        (device,) = await account_with_devices(handles[0])
        await handles[0].add_key_packages(
            device.device_key, one_time=packages(8), last_resort=b"lr", now=NOW, max_stored=50
        )
        claims = await asyncio.gather(
            *(handles[i % 2].claim_key_package(device.device_key) for i in range(12))
        )
    one_time = [c.key_package for c in claims if not c.last_resort]
    assert sorted(one_time) == sorted(packages(8))
    assert [c.key_package for c in claims if c.last_resort] == [b"lr"] * 4


# -- Groups and their logs -----------------------------------------------------------


GROUP = b"G" * 32


async def devices(storage: Storage, count: int) -> list[bytes]:
    keys = []
    for _ in range(count):
        (device,) = await account_with_devices(storage)
        keys.append(device.device_key)
    return keys


async def group_of(storage: Storage, creator: bytes, group_id: bytes = GROUP) -> None:
    await storage.create_group(
        NewGroup(
            group_id=group_id,
            group_info=b"info-0",
            ratchet_tree=b"tree-0",
            members=(GroupMember(creator, 0),),
            created_at=NOW,
        )
    )


def message(
    sender: bytes,
    *,
    epoch: int = 0,
    kind: MessageKind = MessageKind.APPLICATION,
    body: bytes | None = None,
    mid: bytes | None = None,
    group_id: bytes = GROUP,
) -> NewMessage:
    return NewMessage(
        group_id=group_id,
        epoch=epoch,
        kind=kind,
        sender_device=sender,
        client_message_id=mid if mid is not None else auth.generate_private_key()[:16],
        message=body if body is not None else b"ciphertext-" + auth.generate_private_key()[:4],
        received_at=NOW,
    )


def commit(
    sender: bytes,
    members: list[tuple[bytes, int]],
    *,
    epoch: int = 0,
    body: bytes | None = None,
    mid: bytes | None = None,
    welcome: bytes | None = None,
    recipients: tuple[bytes, ...] = (),
) -> NewCommit:
    return NewCommit(
        group_id=GROUP,
        epoch=epoch,
        sender_device=sender,
        client_message_id=mid if mid is not None else auth.generate_private_key()[:16],
        message=body if body is not None else f"commit-{epoch}".encode(),
        received_at=NOW + 1,
        group_info=f"info-{epoch + 1}".encode(),
        ratchet_tree=f"tree-{epoch + 1}".encode(),
        members=tuple(GroupMember(key, leaf) for key, leaf in members),
        welcome=welcome,
        welcome_recipients=recipients,
    )


async def group_state(storage: Storage, keys: list[bytes]) -> dict[object, object]:
    """What the Protocol can see of GROUP from these devices."""
    seen: dict[object, object] = {}
    for key in keys:
        snapshot = await storage.load_group(GROUP, device_key=key, proposals_after=0)
        seen[key] = snapshot
        seen[(key, "welcomes")] = await storage.list_welcomes(key, limit=100)
        if snapshot.member is not None:
            seen[(key, "log")] = await storage.fetch_messages(
                GROUP, device_key=key, after=0, limit=1000
            )
    return seen


async def test_create_group_and_load_it(storage):
    alice, bob = await devices(storage, 2)
    record = await storage.create_group(
        NewGroup(
            group_id=GROUP,
            group_info=b"info",
            ratchet_tree=b"tree",
            members=(GroupMember(alice, 0),),
            created_at=NOW,
        )
    )
    assert (record.group_id, record.epoch, record.last_seq) == (GROUP, 0, 0)
    snapshot = await storage.load_group(GROUP, device_key=alice, proposals_after=None)
    assert snapshot.group == record
    assert snapshot.member == Membership(device_key=alice, leaf_index=0, joined_seq=0)
    assert snapshot.proposals == ()
    other = await storage.load_group(GROUP, device_key=bob, proposals_after=0)
    assert other.member is None


async def test_create_group_twice_is_refused(storage):
    (alice,) = await devices(storage, 1)
    await group_of(storage, alice)
    before = await group_state(storage, [alice])
    with pytest.raises(GroupExists):
        await group_of(storage, alice)
    assert await group_state(storage, [alice]) == before


async def test_create_group_of_an_unregistered_device_is_refused(storage):
    with pytest.raises(UnknownMemberDevice):
        await group_of(storage, b"\x05" * 32)
    with pytest.raises(UnknownGroup):
        await storage.load_group(GROUP, device_key=b"\x05" * 32, proposals_after=None)


async def test_unknown_group_is_refused_everywhere(storage):
    (alice,) = await devices(storage, 1)
    with pytest.raises(UnknownGroup):
        await storage.load_group(GROUP, device_key=alice, proposals_after=None)
    with pytest.raises(UnknownGroup):
        await storage.append_message(message(alice))
    with pytest.raises(UnknownGroup):
        await storage.append_commit(commit(alice, [(alice, 0)]))
    with pytest.raises(UnknownGroup):
        await storage.fetch_messages(GROUP, device_key=alice, after=0, limit=10)
    with pytest.raises(UnknownGroup):
        await storage.ack_cursor(GROUP, device_key=alice, seq=0, now=NOW)
    assert await storage.get_commit(GROUP, 0) is None


async def test_appends_are_numbered_from_one_without_gaps(storage):
    (alice,) = await devices(storage, 1)
    await group_of(storage, alice)
    sent = [message(alice) for _ in range(3)]
    appended = [await storage.append_message(m) for m in sent]
    assert [a.entry.seq for a in appended] == [1, 2, 3]
    assert not any(a.duplicate for a in appended)
    page = await storage.fetch_messages(GROUP, device_key=alice, after=0, limit=10)
    assert page.entries == tuple(a.entry for a in appended)
    assert [e.message for e in page.entries] == [m.message for m in sent]
    assert (page.epoch, page.last_seq) == (0, 3)
    assert await storage.find_message(alice, sent[1].client_message_id) == appended[1].entry


async def test_a_retry_returns_the_original_and_stores_nothing(storage):
    (alice,) = await devices(storage, 1)
    await group_of(storage, alice)
    first = await storage.append_message(message(alice, mid=b"m" * 16, body=b"one"))
    before = await group_state(storage, [alice])
    # The same id, even with other bytes (re-encrypted), is the same message.
    again = await storage.append_message(message(alice, mid=b"m" * 16, body=b"two"))
    assert again.duplicate
    assert again.entry == first.entry
    assert await group_state(storage, [alice]) == before


async def test_a_message_id_reused_for_another_group_or_kind_is_refused(storage):
    (alice,) = await devices(storage, 1)
    await group_of(storage, alice)
    await group_of(storage, alice, group_id=b"H" * 32)
    await storage.append_message(message(alice, mid=b"m" * 16))
    before = await group_state(storage, [alice])
    with pytest.raises(MessageIdReused):
        await storage.append_message(message(alice, mid=b"m" * 16, group_id=b"H" * 32))
    with pytest.raises(MessageIdReused):
        await storage.append_message(message(alice, mid=b"m" * 16, kind=MessageKind.PROPOSAL))
    with pytest.raises(MessageIdReused):
        await storage.append_commit(commit(alice, [(alice, 0)], mid=b"m" * 16))
    assert await group_state(storage, [alice]) == before


async def test_a_non_member_cannot_append(storage):
    alice, bob = await devices(storage, 2)
    await group_of(storage, alice)
    before = await group_state(storage, [alice, bob])
    with pytest.raises(NotAMember):
        await storage.append_message(message(bob))
    with pytest.raises(NotAMember):
        await storage.append_commit(commit(bob, [(alice, 0), (bob, 1)]))
    with pytest.raises(NotAMember):
        await storage.fetch_messages(GROUP, device_key=bob, after=0, limit=10)
    with pytest.raises(NotAMember):
        await storage.ack_cursor(GROUP, device_key=bob, seq=0, now=NOW)
    assert await group_state(storage, [alice, bob]) == before


async def test_a_message_for_another_epoch_is_refused(storage):
    (alice,) = await devices(storage, 1)
    await group_of(storage, alice)
    await storage.append_commit(commit(alice, [(alice, 0)]))
    before = await group_state(storage, [alice])
    for epoch in (0, 2):
        with pytest.raises(StaleEpoch) as refused:
            await storage.append_message(message(alice, epoch=epoch))
        assert refused.value.epoch == 1
    assert await group_state(storage, [alice]) == before


async def test_append_message_refuses_a_commit(storage):
    (alice,) = await devices(storage, 1)
    await group_of(storage, alice)
    with pytest.raises(ValueError, match="append_commit"):
        await storage.append_message(message(alice, kind=MessageKind.COMMIT))


async def test_a_commit_moves_the_group_on_atomically(storage):
    alice, bob, carol = await devices(storage, 3)
    await group_of(storage, alice)
    await storage.append_message(message(alice))
    appended = await storage.append_commit(
        commit(
            alice, [(alice, 0), (bob, 1), (carol, 2)], welcome=b"welcome", recipients=(bob, carol)
        )
    )
    assert appended.entry.seq == 2
    assert appended.entry.kind is MessageKind.COMMIT
    snapshot = await storage.load_group(GROUP, device_key=bob, proposals_after=None)
    group = snapshot.group
    assert (group.epoch, group.group_info, group.ratchet_tree, group.last_seq) == (
        1,
        b"info-1",
        b"tree-1",
        2,
    )
    assert snapshot.member == Membership(device_key=bob, leaf_index=1, joined_seq=2)
    for key in (bob, carol):
        (welcome,) = await storage.list_welcomes(key, limit=10)
        assert (welcome.group_id, welcome.commit_seq, welcome.epoch) == (GROUP, 2, 1)
        assert (welcome.welcome, welcome.ratchet_tree) == (b"welcome", b"tree-1")
    assert await storage.list_welcomes(alice, limit=10) == ()
    assert await storage.get_commit(GROUP, 0) == appended.entry
    # A device that joined is served nothing before its commit.
    page = await storage.fetch_messages(GROUP, device_key=bob, after=0, limit=10)
    assert page.entries == ()
    await storage.append_message(message(bob, epoch=1))
    page = await storage.fetch_messages(GROUP, device_key=bob, after=0, limit=10)
    assert [e.seq for e in page.entries] == [3]


async def test_a_commit_that_removes_a_device_drops_its_cursor_and_welcomes(storage):
    alice, bob = await devices(storage, 2)
    await group_of(storage, alice)
    await storage.append_commit(
        commit(alice, [(alice, 0), (bob, 1)], welcome=b"w", recipients=(bob,))
    )
    await storage.ack_cursor(GROUP, device_key=alice, seq=1, now=NOW)
    await storage.append_commit(commit(alice, [(alice, 0)], epoch=1))
    assert (await storage.load_group(GROUP, device_key=bob, proposals_after=None)).member is None
    assert await storage.list_welcomes(bob, limit=10) == ()
    with pytest.raises(NotAMember):
        await storage.fetch_messages(GROUP, device_key=bob, after=0, limit=10)
    # Added again later, the device starts afresh at the new commit.
    await storage.append_commit(commit(alice, [(alice, 0), (bob, 3)], epoch=2))
    member = (await storage.load_group(GROUP, device_key=bob, proposals_after=None)).member
    assert member == Membership(device_key=bob, leaf_index=3, joined_seq=3)


async def test_a_commit_may_move_a_device_to_another_leaf(storage):
    alice, bob = await devices(storage, 2)
    await group_of(storage, alice)
    await storage.append_commit(commit(alice, [(alice, 0), (bob, 1)]))
    await storage.append_commit(commit(bob, [(alice, 0), (bob, 2)], epoch=1))
    member = (await storage.load_group(GROUP, device_key=bob, proposals_after=None)).member
    assert member == Membership(device_key=bob, leaf_index=2, joined_seq=1)


async def test_a_commit_for_a_past_epoch_gets_the_winner(storage):
    alice, bob = await devices(storage, 2)
    await group_of(storage, alice)
    await storage.append_commit(commit(alice, [(alice, 0), (bob, 1)], body=b"first"))
    winner = await storage.append_commit(commit(alice, [(alice, 0), (bob, 1)], epoch=1))
    before = await group_state(storage, [alice, bob])
    with pytest.raises(CommitConflict) as refused:
        await storage.append_commit(commit(bob, [(bob, 1)], epoch=1, body=b"late"))
    conflict = refused.value
    assert (conflict.epoch, conflict.winner_seq, conflict.winner_epoch) == (2, 2, 1)
    assert conflict.winner == winner.entry.message
    assert conflict.extensions()["winner"] == {
        "seq": 2,
        "epoch": 1,
        "message": auth.encode_b64u(winner.entry.message),
    }
    with pytest.raises(StaleEpoch):
        await storage.append_commit(commit(bob, [(bob, 1)], epoch=5))
    assert await group_state(storage, [alice, bob]) == before


async def test_a_commit_adding_an_unregistered_device_stores_nothing(storage):
    (alice,) = await devices(storage, 1)
    await group_of(storage, alice)
    stranger = b"\x09" * 32
    before = await group_state(storage, [alice])
    with pytest.raises(UnknownMemberDevice):
        await storage.append_commit(commit(alice, [(alice, 0), (stranger, 1)]))
    with pytest.raises(UnknownMemberDevice):
        await storage.append_commit(
            commit(alice, [(alice, 0)], welcome=b"w", recipients=(stranger,))
        )
    assert await group_state(storage, [alice]) == before


async def test_a_retried_commit_returns_the_original(storage):
    alice, bob = await devices(storage, 2)
    await group_of(storage, alice)
    first = await storage.append_commit(commit(alice, [(alice, 0), (bob, 1)], mid=b"c" * 16))
    before = await group_state(storage, [alice, bob])
    again = await storage.append_commit(commit(alice, [(alice, 0), (bob, 1)], mid=b"c" * 16))
    assert again.duplicate
    assert again.entry == first.entry
    assert await group_state(storage, [alice, bob]) == before


async def test_load_group_replays_only_the_current_epochs_later_proposals(storage):
    (alice,) = await devices(storage, 1)
    await group_of(storage, alice)
    await storage.append_message(message(alice, kind=MessageKind.PROPOSAL))
    await storage.append_commit(commit(alice, [(alice, 0)]))
    proposals = [
        (await storage.append_message(message(alice, epoch=1, kind=MessageKind.PROPOSAL))).entry
        for _ in range(2)
    ]
    await storage.append_message(message(alice, epoch=1))
    snapshot = await storage.load_group(GROUP, device_key=alice, proposals_after=0)
    assert snapshot.proposals == tuple(proposals)
    snapshot = await storage.load_group(GROUP, device_key=alice, proposals_after=proposals[0].seq)
    assert snapshot.proposals == (proposals[1],)
    assert all(isinstance(p, LogEntry) for p in snapshot.proposals)


async def test_the_cursor_moves_forward_only_and_drops_passed_welcomes(storage):
    alice, bob = await devices(storage, 2)
    await group_of(storage, alice)
    await storage.append_message(message(alice))
    await storage.append_commit(
        commit(alice, [(alice, 0), (bob, 1)], welcome=b"w", recipients=(bob,))
    )
    assert await storage.ack_cursor(GROUP, device_key=bob, seq=1, now=NOW) == 1
    assert len(await storage.list_welcomes(bob, limit=10)) == 1
    assert await storage.ack_cursor(GROUP, device_key=bob, seq=2, now=NOW) == 2
    assert await storage.list_welcomes(bob, limit=10) == ()
    assert await storage.ack_cursor(GROUP, device_key=bob, seq=0, now=NOW) == 2
    before = await group_state(storage, [alice, bob])
    with pytest.raises(CursorAhead):
        await storage.ack_cursor(GROUP, device_key=bob, seq=3, now=NOW)
    assert await group_state(storage, [alice, bob]) == before


async def test_welcomes_are_listed_oldest_first_up_to_the_limit(storage):
    alice, bob = await devices(storage, 2)
    for index in range(3):
        group_id = bytes([index]) * 32
        await group_of(storage, alice, group_id=group_id)
        await storage.append_commit(
            replace_group(
                commit(alice, [(alice, 0), (bob, 1)], welcome=bytes([index]), recipients=(bob,)),
                group_id,
            )
        )
    welcomes = await storage.list_welcomes(bob, limit=2)
    assert [w.welcome for w in welcomes] == [b"\x00", b"\x01"]


def replace_group(new_commit: NewCommit, group_id: bytes) -> NewCommit:
    return replace(new_commit, group_id=group_id)


async def test_fetch_honours_after_and_limit(storage):
    (alice,) = await devices(storage, 1)
    await group_of(storage, alice)
    for _ in range(5):
        await storage.append_message(message(alice))
    page = await storage.fetch_messages(GROUP, device_key=alice, after=1, limit=2)
    assert [e.seq for e in page.entries] == [2, 3]
    assert page.last_seq == 5
    page = await storage.fetch_messages(GROUP, device_key=alice, after=5, limit=2)
    assert page.entries == ()


async def test_two_handles_racing_for_one_epoch_store_one_commit(backend, tmp_path):
    # Two handles on one store, as two relay processes: the database itself
    # decides which commit ends the epoch, and the loser is told the winner.
    async with contextlib.AsyncExitStack() as stack:
        handles = []
        for _ in range(2):
            handle = backend(tmp_path)
            await handle.open()
            stack.push_async_callback(handle.close)
            handles.append(handle)
        alice, bob = await devices(handles[0], 2)
        await group_of(handles[0], alice)
        await handles[0].append_commit(commit(alice, [(alice, 0), (bob, 1)]))
        racers = [
            commit(alice, [(alice, 0), (bob, 1)], epoch=1, body=b"alice's"),
            commit(bob, [(alice, 0), (bob, 1)], epoch=1, body=b"bob's"),
        ]
        results = await asyncio.gather(
            *(handles[i].append_commit(racers[i]) for i in range(2)), return_exceptions=True
        )
        winners = [r for r in results if not isinstance(r, BaseException)]
        losers = [r for r in results if isinstance(r, BaseException)]
        assert len(winners) == 1
        assert len(losers) == 1
        assert isinstance(losers[0], CommitConflict)
        assert losers[0].winner == winners[0].entry.message
        assert losers[0].winner_seq == winners[0].entry.seq == 2
        group = (await handles[1].load_group(GROUP, device_key=alice, proposals_after=None)).group
        assert (group.epoch, group.last_seq) == (2, 2)


async def test_two_handles_appending_at_once_number_without_gaps(backend, tmp_path):
    async with contextlib.AsyncExitStack() as stack:
        handles = []
        for _ in range(2):
            handle = backend(tmp_path)
            await handle.open()
            stack.push_async_callback(handle.close)
            handles.append(handle)
        (alice,) = await devices(handles[0], 1)
        await group_of(handles[0], alice)
        same = message(alice, mid=b"s" * 16)
        results = await asyncio.gather(
            *(handles[i % 2].append_message(message(alice)) for i in range(10)),
            *(handles[i % 2].append_message(same) for i in range(4)),
        )
    seqs = [r.entry.seq for r in results[:10]]
    retried = results[10:]
    assert sorted([*seqs, retried[0].entry.seq]) == list(range(1, 12))
    assert len({r.entry.seq for r in retried}) == 1
    assert sum(not r.duplicate for r in retried) == 1


async def test_groups_and_logs_survive_close_and_reopen(backend, tmp_path):
    store = backend(tmp_path)
    await store.open()
    alice, bob = await devices(store, 2)
    await group_of(store, alice)
    await store.append_commit(
        commit(alice, [(alice, 0), (bob, 1)], welcome=b"w", recipients=(bob,))
    )
    sent = await store.append_message(message(bob, epoch=1))
    await store.close()
    reopened = backend(tmp_path)
    await reopened.open()
    try:
        page = await reopened.fetch_messages(GROUP, device_key=alice, after=0, limit=10)
        assert [e.seq for e in page.entries] == [1, 2]
        assert page.entries[1] == sent.entry
        assert len(await reopened.list_welcomes(bob, limit=10)) == 1
    finally:
        await reopened.close()


# -- Invites ---------------------------------------------------------------------------


def new_invite(creator: bytes, *, key: bytes = b"K" * 32, max_uses: int = 2) -> NewInvite:
    return NewInvite(
        group_id=GROUP,
        invite_key=key,
        created_by=creator,
        sealed_group_info=b"sealed-0",
        expires_at=NOW + 100,
        max_uses=max_uses,
        created_at=NOW,
    )


async def test_an_invite_is_created_read_refreshed_and_reset(storage):
    alice, bob = await devices(storage, 2)
    await group_of(storage, alice)
    record = await storage.create_invite(new_invite(alice))
    assert record == InviteRecord(
        group_id=GROUP,
        invite_key=b"K" * 32,
        created_by=alice,
        sealed_group_info=b"sealed-0",
        expires_at=NOW + 100,
        max_uses=2,
        uses=0,
        created_at=NOW,
        updated_at=NOW,
    )
    assert await storage.get_invite(b"K" * 32) == record
    assert await storage.get_invite(b"X" * 32) is None
    with pytest.raises(InviteExists):
        await storage.create_invite(new_invite(alice))
    with pytest.raises(NotAMember):
        await storage.create_invite(new_invite(bob, key=b"L" * 32))
    updated = await storage.update_invite(
        GROUP, b"K" * 32, device_key=alice, sealed_group_info=b"sealed-1", now=NOW + 5
    )
    assert (updated.sealed_group_info, updated.updated_at) == (b"sealed-1", NOW + 5)
    with pytest.raises(NotAMember):
        await storage.update_invite(
            GROUP, b"K" * 32, device_key=bob, sealed_group_info=b"x", now=NOW
        )
    with pytest.raises(InviteNotFound):
        await storage.update_invite(
            GROUP, b"X" * 32, device_key=alice, sealed_group_info=b"x", now=NOW
        )
    with pytest.raises(NotAMember):
        await storage.reset_invites(GROUP, device_key=bob)
    assert await storage.reset_invites(GROUP, device_key=alice) == 1
    assert await storage.get_invite(b"K" * 32) is None
    with pytest.raises(UnknownGroup):
        await storage.create_invite(replace(new_invite(alice), group_id=b"other-group-id!!"))


async def test_an_invited_external_commit_uses_the_invite_in_its_transaction(storage):
    alice, bob, carol = await devices(storage, 3)
    await group_of(storage, alice)
    await storage.create_invite(new_invite(alice, max_uses=1))
    joined = replace(commit(bob, [(alice, 0), (bob, 1)]), invite_key=b"K" * 32)
    appended = await storage.append_commit(joined)
    assert appended.entry.seq == 1
    invite = await storage.get_invite(b"K" * 32)
    assert invite is not None
    assert invite.uses == 1
    member = (await storage.load_group(GROUP, device_key=bob, proposals_after=None)).member
    assert member == Membership(device_key=bob, leaf_index=1, joined_seq=1)
    # Used up: nothing changes.
    before = await group_state(storage, [alice, bob, carol])
    used_up = replace(
        commit(carol, [(alice, 0), (bob, 1), (carol, 2)], epoch=1), invite_key=b"K" * 32
    )
    with pytest.raises(InviteUsedUp):
        await storage.append_commit(used_up)
    with pytest.raises(InviteNotFound):
        await storage.append_commit(replace(used_up, invite_key=b"X" * 32))
    # Without an invite, a non-member's commit is refused as before.
    with pytest.raises(NotAMember):
        await storage.append_commit(replace(used_up, invite_key=None))
    assert await group_state(storage, [alice, bob, carol]) == before
    # Expired (at or before received_at): nothing changes.
    await storage.create_invite(replace(new_invite(alice, key=b"E" * 32), expires_at=NOW + 1))
    with pytest.raises(InviteExpired):
        await storage.append_commit(replace(used_up, invite_key=b"E" * 32))
    expired = await storage.get_invite(b"E" * 32)
    assert expired is not None
    assert expired.uses == 0
    assert await group_state(storage, [alice, bob, carol]) == before


async def test_a_commit_that_removes_a_device_resets_the_invites_by_default(storage):
    alice, bob = await devices(storage, 2)
    await group_of(storage, alice)
    await storage.append_commit(commit(alice, [(alice, 0), (bob, 1)]))
    await storage.create_invite(new_invite(bob))
    # Moving a device (a resync) removes nobody: the invites stay.
    await storage.append_commit(commit(bob, [(alice, 0), (bob, 2)], epoch=1))
    assert await storage.get_invite(b"K" * 32) is not None
    assert await storage.get_reset_invites_on_remove(GROUP) is True
    await storage.append_commit(commit(alice, [(alice, 0)], epoch=2))
    assert await storage.get_invite(b"K" * 32) is None


async def test_the_reset_on_remove_can_be_turned_off(storage):
    alice, bob = await devices(storage, 2)
    await group_of(storage, alice)
    await storage.append_commit(commit(alice, [(alice, 0), (bob, 1)]))
    with pytest.raises(NotAMember):
        await storage.set_reset_invites_on_remove(GROUP, device_key=b"Z" * 32, enabled=False)
    await storage.set_reset_invites_on_remove(GROUP, device_key=alice, enabled=False)
    assert await storage.get_reset_invites_on_remove(GROUP) is False
    await storage.create_invite(new_invite(alice))
    await storage.append_commit(commit(alice, [(alice, 0)], epoch=1))
    assert await storage.get_invite(b"K" * 32) is not None
    with pytest.raises(UnknownGroup):
        await storage.get_reset_invites_on_remove(b"other-group-id!!")


# -- A post in one transaction: its nonce and quota with the append ------------------


def nonce_of(device: bytes, tag: bytes = b"n") -> NonceUse:
    return NonceUse(device_key=device, nonce=tag * 16, expires_at=NOW + 300)


def post_quota(device: bytes, *, limit: int = 3, now: int = NOW) -> QuotaCharge:
    return QuotaCharge(
        subject=device, action="post-message", now=now, window_seconds=60, limit=limit
    )


async def assert_nonce_used(storage: Storage, nonce: NonceUse) -> None:
    with pytest.raises(ReplayedRequest):
        await storage.use_nonce(nonce.device_key, nonce.nonce, expires_at=nonce.expires_at)


async def assert_quota_used(storage: Storage, device: bytes, used: int) -> None:
    """The device's post quota has exactly ``used`` uses in the window of NOW."""
    charge = post_quota(device)
    await storage.check_quota(
        device, charge.action, now=NOW, window_seconds=charge.window_seconds, limit=used + 1
    )
    if used:
        with pytest.raises(RateLimited):
            await storage.check_quota(
                device, charge.action, now=NOW, window_seconds=charge.window_seconds, limit=used
            )


async def test_an_append_records_its_nonce_and_charges_its_quota_in_one_go(storage):
    alice, bob = await devices(storage, 2)
    await group_of(storage, alice)
    sent = message(alice)
    appended = await storage.append_message(sent, nonce=nonce_of(alice), quota=post_quota(alice))
    assert (appended.entry.seq, appended.duplicate) == (1, False)
    assert await storage.find_message(alice, sent.client_message_id) == appended.entry
    await assert_nonce_used(storage, nonce_of(alice))
    await assert_quota_used(storage, alice, 1)
    committed = await storage.append_commit(
        commit(alice, [(alice, 0), (bob, 1)]),
        nonce=nonce_of(alice, b"c"),
        quota=post_quota(alice),
    )
    assert committed.entry.seq == 2
    await assert_nonce_used(storage, nonce_of(alice, b"c"))
    await assert_quota_used(storage, alice, 2)


async def test_a_replayed_nonce_refuses_the_append_and_records_nothing(storage):
    (alice,) = await devices(storage, 1)
    await group_of(storage, alice)
    await storage.append_message(message(alice), nonce=nonce_of(alice), quota=post_quota(alice))
    before = await group_state(storage, [alice])
    with pytest.raises(ReplayedRequest):
        await storage.append_message(message(alice), nonce=nonce_of(alice), quota=post_quota(alice))
    with pytest.raises(ReplayedRequest):
        await storage.append_commit(
            commit(alice, [(alice, 0)]), nonce=nonce_of(alice), quota=post_quota(alice)
        )
    assert await group_state(storage, [alice]) == before
    await assert_quota_used(storage, alice, 1)


async def test_a_refused_append_keeps_its_nonce_and_stores_nothing_else(storage):
    alice, bob = await devices(storage, 2)
    await group_of(storage, alice)
    await group_of(storage, alice, group_id=b"H" * 32)
    await storage.append_commit(commit(alice, [(alice, 0)]))
    await storage.append_message(message(alice, epoch=1, mid=b"m" * 16), quota=post_quota(alice))
    before = await group_state(storage, [alice, bob])
    refusals = [
        (StaleEpoch, message(alice, epoch=0), alice),
        (NotAMember, message(bob, epoch=1), bob),
        (MessageIdReused, message(alice, mid=b"m" * 16, group_id=b"H" * 32), alice),
        (UnknownGroup, message(alice, group_id=b"I" * 32), alice),
    ]
    for i, (error, refused, sender) in enumerate(refusals):
        nonce = nonce_of(sender, bytes([i]))
        with pytest.raises(error):
            await storage.append_message(refused, nonce=nonce, quota=post_quota(sender))
        await assert_nonce_used(storage, nonce)
    assert await group_state(storage, [alice, bob]) == before
    await assert_quota_used(storage, alice, 1)
    await assert_quota_used(storage, bob, 0)


async def test_a_post_over_the_quota_is_refused_and_keeps_its_nonce(storage):
    (alice,) = await devices(storage, 1)
    await group_of(storage, alice)
    for _ in range(2):
        await storage.append_message(message(alice), quota=post_quota(alice, limit=2))
    before = await group_state(storage, [alice])
    late = nonce_of(alice, b"l")
    with pytest.raises(RateLimited) as refused:
        await storage.append_message(
            message(alice), nonce=late, quota=post_quota(alice, limit=2, now=NOW + 15)
        )
    assert refused.value.retry_after == 45
    await assert_nonce_used(storage, late)
    with pytest.raises(RateLimited):
        await storage.append_commit(
            commit(alice, [(alice, 0)]),
            nonce=nonce_of(alice, b"c"),
            quota=post_quota(alice, limit=2),
        )
    await assert_nonce_used(storage, nonce_of(alice, b"c"))
    assert await group_state(storage, [alice]) == before
    await assert_quota_used(storage, alice, 2)
    # The next window takes it.
    appended = await storage.append_message(
        message(alice), quota=post_quota(alice, limit=2, now=NOW + 60)
    )
    assert appended.entry.seq == 3


async def test_a_commit_refused_after_its_writes_keeps_only_its_nonce(storage):
    # The unregistered member is found after the entry, the epoch and the quota were
    # written: all of it is rolled back to the nonce.
    (alice,) = await devices(storage, 1)
    await group_of(storage, alice)
    before = await group_state(storage, [alice])
    nonce = nonce_of(alice)
    with pytest.raises(UnknownMemberDevice):
        await storage.append_commit(
            commit(alice, [(alice, 0), (b"\x09" * 32, 1)]), nonce=nonce, quota=post_quota(alice)
        )
    await assert_nonce_used(storage, nonce)
    assert await group_state(storage, [alice]) == before
    await assert_quota_used(storage, alice, 0)


async def test_a_retry_is_answered_uncharged_even_when_the_quota_is_spent(storage):
    (alice,) = await devices(storage, 1)
    await group_of(storage, alice)
    original = await storage.append_message(
        message(alice, mid=b"m" * 16), quota=post_quota(alice, limit=1)
    )
    before = await group_state(storage, [alice])
    retry = nonce_of(alice, b"r")
    again = await storage.append_message(
        message(alice, mid=b"m" * 16, body=b"re-encrypted"),
        nonce=retry,
        quota=post_quota(alice, limit=1),
    )
    assert again.duplicate
    assert again.entry == original.entry
    await assert_nonce_used(storage, retry)
    await assert_quota_used(storage, alice, 1)
    assert await group_state(storage, [alice]) == before
    with pytest.raises(RateLimited):
        await storage.append_message(message(alice), quota=post_quota(alice, limit=1))


async def test_the_quota_counts_only_new_entries(storage):
    alice, bob = await devices(storage, 2)
    await group_of(storage, alice)
    committed = await storage.append_commit(
        commit(alice, [(alice, 0), (bob, 1)], mid=b"c" * 16), quota=post_quota(alice)
    )
    await storage.append_message(message(alice, epoch=1, mid=b"m" * 16), quota=post_quota(alice))
    for _ in range(3):
        await storage.append_message(
            message(alice, epoch=1, mid=b"m" * 16), quota=post_quota(alice)
        )
        retried = await storage.append_commit(
            commit(alice, [(alice, 0), (bob, 1)], mid=b"c" * 16), quota=post_quota(alice)
        )
        assert retried.entry == committed.entry
    await assert_quota_used(storage, alice, 2)
    await storage.append_message(message(alice, epoch=1), quota=post_quota(alice))
    await assert_quota_used(storage, alice, 3)
    await assert_quota_used(storage, bob, 0)


async def test_an_append_refuses_a_quota_amount_below_one(storage):
    (alice,) = await devices(storage, 1)
    await group_of(storage, alice)
    before = await group_state(storage, [alice])
    nothing = replace(post_quota(alice), amount=0)
    with pytest.raises(ValueError, match="one use"):
        await storage.append_message(message(alice), nonce=nonce_of(alice), quota=nothing)
    with pytest.raises(ValueError, match="one use"):
        await storage.append_commit(commit(alice, [(alice, 0)]), quota=nothing)
    assert await group_state(storage, [alice]) == before
    await storage.use_nonce(alice, nonce_of(alice).nonce, expires_at=NOW + 300)
