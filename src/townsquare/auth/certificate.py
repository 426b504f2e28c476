"""
Device certificates: an account key's signature that a device key belongs to the account.

An account is an Ed25519 public key; each device has its own Ed25519 key (which
is also its MLS signature key). The account certifies a device by signing::

    DeviceCertificateTBS =
        "townsquare/v1/device-certificate" || 0x00     33 bytes, the domain separator
        || account_key                                 32 bytes, Ed25519 public key
        || device_key                                  32 bytes, Ed25519 public key
        || created_at                                  8 bytes, uint64 big-endian, Unix seconds

Every field has a fixed length, so the encoding is unambiguous without length
prefixes; the separator keeps this signature from ever being valid as any
other Townsquare or MLS signature (MLS's SignWithLabel content starts with a
length-prefixed ``"MLS 1.0 "`` label, which can never begin with ``t``).
"""

from __future__ import annotations

from dataclasses import dataclass

from townsquare.auth import keys
from townsquare.auth.errors import InvalidValue

__all__ = [
    "DEVICE_CERTIFICATE_LABEL",
    "DeviceCertificate",
    "certify_device",
    "device_certificate_tbs",
]

#: The domain separator at the start of every DeviceCertificateTBS.
DEVICE_CERTIFICATE_LABEL = b"townsquare/v1/device-certificate\x00"

_UINT64_LIMIT = 1 << 64


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceCertificate:
    """
    An account key's signature over a device key and the time the device was certified.

    Construction checks the form of every field; :meth:`verify` checks the signature.
    """

    account_key: bytes
    device_key: bytes
    created_at: int
    signature: bytes

    def __post_init__(self) -> None:
        """
        Check the form of every field.

        :raises InvalidKey: if a key is not 32 bytes.
        :raises InvalidValue: if ``created_at`` is not a uint64 or the signature is not
            64 bytes.
        """
        keys.check_public_key(self.account_key)
        keys.check_public_key(self.device_key)
        if not 0 <= self.created_at < _UINT64_LIMIT:
            raise InvalidValue("created_at must be a uint64 (Unix seconds)")
        if len(self.signature) != keys.SIGNATURE_BYTES:
            raise InvalidValue(f"a certificate signature is {keys.SIGNATURE_BYTES} bytes")

    def to_be_signed(self) -> bytes:
        """
        :returns: the encoded DeviceCertificateTBS that ``signature`` covers.
        """
        return device_certificate_tbs(self.account_key, self.device_key, self.created_at)

    def verify(self) -> None:
        """
        Check that the account key signed this certificate.

        :raises InvalidSignature: if the signature does not verify.
        """
        keys.verify(self.account_key, self.to_be_signed(), self.signature)


def device_certificate_tbs(account_key: bytes, device_key: bytes, created_at: int) -> bytes:
    """
    Encode a DeviceCertificateTBS.

    :param account_key: the account's 32-byte public key.
    :param device_key: the device's 32-byte public key.
    :param created_at: when the account certified the device, in Unix seconds.
    :returns: the bytes the account key signs.
    :raises InvalidKey: if a key is not 32 bytes.
    :raises InvalidValue: if ``created_at`` is not a uint64.
    """
    keys.check_public_key(account_key)
    keys.check_public_key(device_key)
    if not 0 <= created_at < _UINT64_LIMIT:
        raise InvalidValue("created_at must be a uint64 (Unix seconds)")
    return DEVICE_CERTIFICATE_LABEL + account_key + device_key + created_at.to_bytes(8, "big")


def certify_device(
    account_private_key: bytes, device_key: bytes, created_at: int
) -> DeviceCertificate:
    """
    Certify a device key with an account's private key.

    :param account_private_key: the account's 32-byte Ed25519 seed.
    :param device_key: the device's 32-byte public key.
    :param created_at: the time of certification, in Unix seconds (the caller's clock).
    :returns: the certificate.
    :raises UsageError: if ``account_private_key`` is not 32 bytes.
    :raises InvalidKey: if ``device_key`` is not 32 bytes.
    :raises InvalidValue: if ``created_at`` is not a uint64.
    """
    account_key = keys.public_key(account_private_key)
    tbs = device_certificate_tbs(account_key, device_key, created_at)
    return DeviceCertificate(
        account_key=account_key,
        device_key=device_key,
        created_at=created_at,
        signature=keys.sign(account_private_key, tbs),
    )
