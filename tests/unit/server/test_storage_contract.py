"""
The Storage contract: every backend passes these tests, through the Protocol alone.

Backends are listed in BACKENDS; the PostgreSQL backend joins with its own
entry (skipped unless its TOWNSQUARE_TEST_* variable is set). Every refused
operation is checked to leave the store as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from townsquare import auth
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
    Unavailable,
    UnknownAccount,
)
from townsquare.server.storage import (
    ClaimedKeyPackage,
    Device,
    KeyPackageCount,
    SQLiteStorage,
    Storage,
)

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
