"""
This device's identity: an account key, a device key and the certificate binding them.

A device is created once per home (:meth:`Device.generate`) and stored in the
device scope of the :class:`~townsquare.client.core.store.ClientStore`. The
device key is also its MLS signature key (``docs/protocol.md``, Identity):
every KeyPackage and leaf node it publishes carries it, in a basic
credential whose identity is the key itself (RFC 9420 §5.3). The account key
certifies devices and does nothing else; the first device of an account
keeps it, so that it can certify the next.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Annotated

from townsquare import auth
from townsquare.auth.group_policy import GROUP_POLICY_EXTENSION
from townsquare.client.errors import StoreCorrupt
from townsquare.mls.ciphersuite import CipherSuite, Rng
from townsquare.mls.codec import U16, U64, Opaque, Struct
from townsquare.mls.credentials import BasicCredential, Credential
from townsquare.mls.errors import DecodeError, InvalidCredential
from townsquare.mls.key_package import default_capabilities
from townsquare.mls.leaf_node import Capabilities

__all__ = ["DEVICE_FORMAT_VERSION", "Device", "check_device_credential", "device_capabilities"]

#: The version of the stored device record.
DEVICE_FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class _DeviceRecord(Struct):
    format_version: Annotated[int, U16]
    account_private_key: Annotated[bytes, Opaque]
    device_private_key: Annotated[bytes, Opaque]
    created_at: Annotated[int, U64]
    signature: Annotated[bytes, Opaque]


@dataclass(frozen=True, slots=True, kw_only=True)
class Device:
    """
    A device's keys and its account's certificate of it.

    :param account_private_key: the account's Ed25519 seed (32 bytes).
    :param device_private_key: the device's Ed25519 seed, also its MLS signature key.
    :param certificate: the account's certificate of the device key.
    """

    account_private_key: bytes = field(repr=False)
    device_private_key: bytes = field(repr=False)
    certificate: auth.DeviceCertificate

    @classmethod
    def generate(cls, *, rng: Rng, created_at: int) -> Device:
        """
        Create a new account and its first device.

        :param rng: the randomness source (32 bytes per key).
        :param created_at: the certificate's time, Unix seconds.
        :returns: the device.
        """
        account_private_key = rng(auth.PRIVATE_KEY_BYTES)
        device_private_key = rng(auth.PRIVATE_KEY_BYTES)
        certificate = auth.certify_device(
            account_private_key, auth.public_key(device_private_key), created_at
        )
        return cls(
            account_private_key=account_private_key,
            device_private_key=device_private_key,
            certificate=certificate,
        )

    @property
    def account_key(self) -> bytes:
        """
        The account's public key.
        """
        return self.certificate.account_key

    @property
    def device_key(self) -> bytes:
        """
        The device's public key (its id on the relay and its MLS signature key).
        """
        return self.certificate.device_key

    @property
    def credential(self) -> BasicCredential:
        """
        The MLS credential of this device's leaves: a basic credential naming the device key.
        """
        return BasicCredential(self.device_key)

    def encode(self) -> bytes:
        """
        :returns: the stored form (secret: it holds both private keys).
        """
        return _DeviceRecord(
            format_version=DEVICE_FORMAT_VERSION,
            account_private_key=self.account_private_key,
            device_private_key=self.device_private_key,
            created_at=self.certificate.created_at,
            signature=self.certificate.signature,
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> Device:
        """
        Read a stored device back, checking that its keys and certificate fit together.

        :raises StoreCorrupt: if the record does not decode or does not verify.
        """
        try:
            record = _DeviceRecord.decode(data)
        except DecodeError as exc:
            raise StoreCorrupt("the device record does not decode") from exc
        if record.format_version != DEVICE_FORMAT_VERSION:
            raise StoreCorrupt(f"unknown device record format {record.format_version}")
        try:
            certificate = auth.DeviceCertificate(
                account_key=auth.public_key(record.account_private_key),
                device_key=auth.public_key(record.device_private_key),
                created_at=record.created_at,
                signature=record.signature,
            )
            certificate.verify()
        except auth.AuthError as exc:
            raise StoreCorrupt("the device record's keys do not fit its certificate") from exc
        return cls(
            account_private_key=record.account_private_key,
            device_private_key=record.device_private_key,
            certificate=certificate,
        )


def check_device_credential(credential: Credential, signature_key: bytes) -> None:
    """
    Townsquare's credential rule (RFC 9420 §5.3.1): a basic credential naming its own key.

    A leaf's credential is the device key it signs with, so a member is its
    device key, and no leaf can claim another device's identity.

    :raises InvalidCredential: if the credential is not basic or names another key.
    """
    if not isinstance(credential, BasicCredential) or not hmac.compare_digest(
        credential.identity, signature_key
    ):
        raise InvalidCredential("a Townsquare credential is the leaf's own signature key")


def device_capabilities(suite: CipherSuite) -> Capabilities:
    """
    The capabilities of every leaf a Townsquare device makes (RFC 9420 §7.2).

    They list the group policy extension, so that groups may carry it in their
    GroupContext (RFC 9420 §12.1.7: every member must support a GroupContext
    extension).
    """
    return default_capabilities(suite, extensions=(GROUP_POLICY_EXTENSION,))
