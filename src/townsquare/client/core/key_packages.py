"""
The device's KeyPackage pool: the private halves of the KeyPackages it published (RFC 9420 §10).

A joiner needs the init and encryption private keys of the KeyPackage a
Welcome was made for, so each KeyPackage is written to the device scope
before it is uploaded, and found again by its KeyPackageRef (RFC 9420 §5.2)
when a Welcome names it. One-time packages are deleted once a Welcome used
them; the last-resort package stays until a newer one replaces it.

Record layout (device scope)::

    kp/<ref hex>        one KeyPackage with its private keys (_KeyPackageRecord)

Flow::

    generate ──► kp/<ref> (uploaded = 0) ──► POST /v1/key-packages ──► uploaded = 1
                                  (a crash in between: the same packages are uploaded again;
                                   a duplicate-key-package answer means they are there)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from townsquare.client.core.device import Device, device_capabilities
from townsquare.client.errors import StoreCorrupt
from townsquare.mls.ciphersuite import CipherSuite, Rng
from townsquare.mls.codec import U8, Opaque, Struct
from townsquare.mls.errors import DecodeError
from townsquare.mls.framing import MLSMessage
from townsquare.mls.group_store import GroupStore
from townsquare.mls.key_package import (
    KeyPackage,
    KeyPackageBundle,
    generate_key_package,
    key_package_ref,
)
from townsquare.mls.leaf_node import Lifetime
from townsquare.mls.registries import ProtocolVersion

__all__ = ["KEY_PACKAGE_PREFIX", "KeyPackagePool", "PooledKeyPackage"]

KEY_PACKAGE_PREFIX = "kp/"
#: A KeyPackage is valid from this long before it was made, for peers whose clocks lag.
_NOT_BEFORE_SLACK_SECONDS = 3600


@dataclass(frozen=True, slots=True, kw_only=True)
class _KeyPackageRecord(Struct):
    key_package: Annotated[bytes, Opaque]
    init_private_key: Annotated[bytes, Opaque]
    encryption_private_key: Annotated[bytes, Opaque]
    last_resort: Annotated[int, U8]
    uploaded: Annotated[int, U8]


@dataclass(frozen=True, slots=True, kw_only=True)
class PooledKeyPackage:
    """
    One KeyPackage of the pool with its private keys and upload state.
    """

    ref: bytes
    bundle: KeyPackageBundle
    last_resort: bool
    uploaded: bool

    @property
    def message(self) -> bytes:
        """
        The KeyPackage as an encoded MLSMessage, as the relay takes it.
        """
        return MLSMessage(ProtocolVersion.MLS10, self.bundle.key_package).encode()

    def _record(self) -> bytes:
        bundle = self.bundle
        return _KeyPackageRecord(
            key_package=bundle.key_package.encode(),
            init_private_key=bundle.init_private_key,
            encryption_private_key=bundle.encryption_private_key,
            last_resort=int(self.last_resort),
            uploaded=int(self.uploaded),
        ).encode()


def _key(ref: bytes) -> str:
    return f"{KEY_PACKAGE_PREFIX}{ref.hex()}"


class KeyPackagePool:
    """
    The KeyPackages of one device, in its device scope.
    """

    __slots__ = ("_device", "_store", "_suite")

    def __init__(self, store: GroupStore, device: Device, suite: CipherSuite) -> None:
        """
        :param store: the device scope.
        :param device: the device (its key signs every KeyPackage).
        :param suite: the cipher suite of the packages.
        """
        self._store = store
        self._device = device
        self._suite = suite

    def _decode(self, key: str, value: bytes) -> PooledKeyPackage:
        try:
            record = _KeyPackageRecord.decode(value)
            key_package = KeyPackage.decode(record.key_package)
        except DecodeError as exc:
            raise StoreCorrupt(f"record {key!r} does not decode") from exc
        bundle = KeyPackageBundle(
            key_package=key_package,
            init_private_key=record.init_private_key,
            encryption_private_key=record.encryption_private_key,
            signature_private_key=self._device.device_private_key,
        )
        return PooledKeyPackage(
            ref=bytes.fromhex(key[len(KEY_PACKAGE_PREFIX) :]),
            bundle=bundle,
            last_resort=bool(record.last_resort),
            uploaded=bool(record.uploaded),
        )

    def all(self) -> list[PooledKeyPackage]:
        """
        :returns: every KeyPackage in the pool, by ref.
        :raises StoreCorrupt: if a record does not decode.
        """
        return [self._decode(k, v) for k, v in self._store.scan(KEY_PACKAGE_PREFIX)]

    def find(self, ref: bytes) -> PooledKeyPackage | None:
        """
        :returns: the KeyPackage whose KeyPackageRef is ``ref``, or ``None``.
        :raises StoreCorrupt: if its record does not decode.
        """
        key = _key(ref)
        value = self._store.get(key)
        return None if value is None else self._decode(key, value)

    def bundle(self, *, rng: Rng, now: int, lifetime_seconds: int) -> KeyPackageBundle:
        """
        Make a KeyPackage of this device without storing it (for a group it creates).

        :param rng: the randomness source.
        :param now: Unix seconds.
        :param lifetime_seconds: how long it stays valid.
        :returns: the bundle.
        """
        return generate_key_package(
            self._suite,
            credential=self._device.credential,
            signature_private_key=self._device.device_private_key,
            rng=rng,
            lifetime=Lifetime(
                not_before=max(0, now - _NOT_BEFORE_SLACK_SECONDS),
                not_after=now + lifetime_seconds,
            ),
            capabilities=device_capabilities(self._suite),
        )

    def generate(
        self, count: int, *, last_resort: bool, rng: Rng, now: int, lifetime_seconds: int
    ) -> list[PooledKeyPackage]:
        """
        Make ``count`` one-time KeyPackages (and a last-resort one if asked) and store them.

        Everything is written in one batch, not yet marked uploaded.

        :returns: the new packages.
        :raises Exception: whatever the store raises; nothing is stored then.
        """
        made = [
            self._pooled(
                self.bundle(rng=rng, now=now, lifetime_seconds=lifetime_seconds), last_resort=False
            )
            for _ in range(count)
        ]
        if last_resort:
            made.append(
                self._pooled(
                    self.bundle(rng=rng, now=now, lifetime_seconds=lifetime_seconds),
                    last_resort=True,
                )
            )
        self._store.apply({_key(p.ref): p._record() for p in made}, ())
        return made

    def _pooled(self, bundle: KeyPackageBundle, *, last_resort: bool) -> PooledKeyPackage:
        return PooledKeyPackage(
            ref=key_package_ref(self._suite, bundle.key_package),
            bundle=bundle,
            last_resort=last_resort,
            uploaded=False,
        )

    def mark_uploaded(self, packages: Sequence[PooledKeyPackage]) -> None:
        """
        Record that the relay stored ``packages``.

        A replaced last-resort package is kept: a Welcome made for it may still be on its way.

        :raises Exception: whatever the store raises.
        """
        puts = {
            _key(p.ref): PooledKeyPackage(
                ref=p.ref, bundle=p.bundle, last_resort=p.last_resort, uploaded=True
            )._record()
            for p in packages
        }
        self._store.apply(puts, ())

    def consume(self, package: PooledKeyPackage) -> None:
        """
        Forget a one-time KeyPackage that a Welcome used (a last-resort one is kept).

        :raises Exception: whatever the store raises.
        """
        if not package.last_resort:
            self._store.apply({}, (_key(package.ref),))
