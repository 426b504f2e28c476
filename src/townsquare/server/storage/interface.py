"""
The relay's store: a ``typing.Protocol`` that every backend implements, and its records.

Each method is one database transaction: it happens entirely or not at all,
and every check that decides it (does the account exist, is the nonce new, is
a one-time KeyPackage left) is made inside that transaction, never in process
memory, so that several relay processes on one database agree.
``tests/unit/server/test_storage_contract.py`` is the contract every backend
passes.

Keys are raw bytes (32-byte Ed25519 public keys); times are whole Unix
seconds, given by the caller so that tests control the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from townsquare.auth import DeviceCertificate

__all__ = [
    "AccountClaim",
    "ClaimedKeyPackage",
    "Device",
    "KeyPackageCount",
    "Storage",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Device:
    """
    A registered device: its certificate, and when the relay registered it.
    """

    certificate: DeviceCertificate
    registered_at: int

    @property
    def device_key(self) -> bytes:
        """
        The device's Ed25519 public key, which is also its id.
        """
        return self.certificate.device_key

    @property
    def account_key(self) -> bytes:
        """
        The key of the account that certified the device.
        """
        return self.certificate.account_key


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyPackageCount:
    """
    How many KeyPackages a device has on the relay.
    """

    one_time: int
    last_resort: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedKeyPackage:
    """
    A KeyPackage handed out by a claim.
    """

    device_key: bytes
    key_package: bytes
    #: True when this is the device's last-resort package (handed out again, not consumed).
    last_resort: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountClaim:
    """
    The result of claiming a KeyPackage for every device of an account.
    """

    account_key: bytes
    claimed: tuple[ClaimedKeyPackage, ...]
    #: The devices that had no KeyPackage at all, not even a last-resort one.
    exhausted: tuple[bytes, ...]


class Storage(Protocol):
    """
    Where the relay keeps accounts, devices, nonces, quotas and KeyPackages.
    """

    async def open(self) -> None:
        """
        Connect and bring the schema up to date by applying every pending migration.

        :raises StorageFailure: if the database cannot be opened, or was written by a
            newer relay (``SchemaTooNew``).
        """
        ...

    async def close(self) -> None:
        """
        Release every connection; calling it twice, or before :meth:`open`, does nothing.
        """
        ...

    async def check_ready(self) -> None:
        """
        Check that the store answers queries.

        :raises Unavailable: if it is not open.
        :raises StorageFailure: if the database fails.
        """
        ...

    # -- Accounts and devices ---------------------------------------------------------

    async def create_account(self, device: Device) -> None:
        """
        Register an account (``device.account_key``) together with its first device.

        :param device: the first device; its ``registered_at`` is also the account's.
        :raises AccountExists: if the account is registered.
        :raises DeviceExists: if the device is registered (under any account).
        """
        ...

    async def add_device(self, device: Device, *, max_devices: int) -> None:
        """
        Register another device of an existing account.

        :param device: the device.
        :param max_devices: the most devices the account may have, this one included.
        :raises UnknownAccount: if the account is not registered.
        :raises DeviceExists: if the device is registered (under any account).
        :raises DeviceLimitReached: if the account already has ``max_devices`` devices.
        """
        ...

    async def get_device(self, device_key: bytes) -> Device | None:
        """
        :returns: the device with this key, or ``None`` if there is none.
        """
        ...

    async def list_devices(self, account_key: bytes) -> tuple[Device, ...]:
        """
        List an account's devices in the order they were registered.

        :param account_key: the account.
        :returns: its devices (at least one).
        :raises UnknownAccount: if the account is not registered.
        """
        ...

    # -- Request nonces and quotas ----------------------------------------------------

    async def use_nonce(self, device_key: bytes, nonce: bytes, *, expires_at: int) -> None:
        """
        Record that a device used a request nonce, refusing one it used before.

        :param device_key: the signing device.
        :param nonce: the request's nonce.
        :param expires_at: when the record may be deleted: once a request with this nonce
            would be refused as stale anyway.
        :raises ReplayedRequest: if this device already used this nonce (and the record
            has not been purged).
        """
        ...

    async def consume_quota(
        self, subject: bytes, action: str, *, now: int, window_seconds: int, limit: int
    ) -> None:
        """
        Count one use of a rate-limited action in a fixed window, refusing it over the limit.

        A refused use is not counted.

        :param subject: who acts (a device key).
        :param action: what is limited (``"claim"``).
        :param now: the current time.
        :param window_seconds: the length of a window; a new one starts at the first use
            after the previous one ended.
        :param limit: the most uses in one window.
        :raises RateLimited: if the window's uses are spent; ``retry_after`` says when it ends.
        """
        ...

    async def purge_expired(self, now: int) -> int:
        """
        Delete nonces whose ``expires_at`` has passed and quota windows that have ended.

        :param now: the current time.
        :returns: how many records were deleted.
        """
        ...

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
        Store a device's one-time KeyPackages and, if given, replace its last-resort one.

        Nothing is stored unless everything is.

        :param device_key: the owning device.
        :param one_time: encoded KeyPackages, each handed out at most once.
        :param last_resort: an encoded KeyPackage handed out when no one-time one is left.
        :param now: the upload time.
        :param max_stored: the most one-time KeyPackages the device may have stored.
        :returns: the device's counts after the upload.
        :raises DeviceNotFound: if the device is not registered.
        :raises DuplicateKeyPackage: if a package appears twice in the upload, or equals one
            the device has stored (other than the last-resort package it replaces).
        :raises KeyPackageStoreFull: if the device would have more than ``max_stored``.
        """
        ...

    async def count_key_packages(self, device_key: bytes) -> KeyPackageCount:
        """
        :returns: how many KeyPackages the device has stored.
        :raises DeviceNotFound: if the device is not registered.
        """
        ...

    async def claim_key_package(self, device_key: bytes) -> ClaimedKeyPackage:
        """
        Hand out one KeyPackage of a device: the oldest one-time package, which is deleted
        in the same transaction (so no two claims ever get the same one), or, only when
        none is left, the last-resort package, which stays.

        :param device_key: the device.
        :returns: the package.
        :raises DeviceNotFound: if the device is not registered.
        :raises KeyPackagesExhausted: if it has no package at all.
        """
        ...

    async def claim_account_key_packages(self, account_key: bytes) -> AccountClaim:
        """
        Claim one KeyPackage of every device of an account, in one transaction.

        :param account_key: the account.
        :returns: the packages, and the devices that had none.
        :raises UnknownAccount: if the account is not registered.
        """
        ...
