"""
Ed25519 (RFC 8032) as Townsquare uses it: raw 32-byte keys, 64-byte signatures.

Accounts and devices are Ed25519 public keys. Private keys are the 32-byte
seeds of RFC 8032 §5.1.5; they never leave the device that made them.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature as _CryptographyInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from townsquare.auth.errors import InvalidKey, InvalidSignature, UsageError

__all__ = [
    "PRIVATE_KEY_BYTES",
    "PUBLIC_KEY_BYTES",
    "SIGNATURE_BYTES",
    "check_public_key",
    "generate_private_key",
    "public_key",
    "sign",
    "verify",
]

#: The length of an Ed25519 private key (its seed), RFC 8032 §5.1.5.
PRIVATE_KEY_BYTES = 32
#: The length of an encoded Ed25519 public key, RFC 8032 §5.1.5.
PUBLIC_KEY_BYTES = 32
#: The length of an Ed25519 signature, RFC 8032 §5.1.6.
SIGNATURE_BYTES = 64


def generate_private_key() -> bytes:
    """
    Generate a private key from the operating system's randomness.

    :returns: a 32-byte Ed25519 seed.
    """
    return Ed25519PrivateKey.generate().private_bytes_raw()


def _load_private(private_key: bytes) -> Ed25519PrivateKey:
    if len(private_key) != PRIVATE_KEY_BYTES:
        raise UsageError(f"an Ed25519 private key is {PRIVATE_KEY_BYTES} bytes")
    return Ed25519PrivateKey.from_private_bytes(private_key)


def public_key(private_key: bytes) -> bytes:
    """
    Compute the public key of a private key.

    :param private_key: a 32-byte Ed25519 seed.
    :returns: the 32-byte public key.
    :raises UsageError: if ``private_key`` is not 32 bytes.
    """
    return _load_private(private_key).public_key().public_bytes_raw()


def sign(private_key: bytes, message: bytes) -> bytes:
    """
    Sign a message (RFC 8032 §5.1.6).

    :param private_key: a 32-byte Ed25519 seed.
    :param message: the bytes to sign.
    :returns: the 64-byte signature.
    :raises UsageError: if ``private_key`` is not 32 bytes.
    """
    return _load_private(private_key).sign(message)


def check_public_key(key: bytes) -> None:
    """
    Check that bytes have the form of an Ed25519 public key.

    :param key: the candidate.
    :raises InvalidKey: if it is not 32 bytes.
    """
    if len(key) != PUBLIC_KEY_BYTES:
        raise InvalidKey(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes, not {len(key)}")


def verify(key: bytes, message: bytes, signature: bytes) -> None:
    """
    Verify a signature (RFC 8032 §5.1.7).

    :param key: the 32-byte public key.
    :param message: the bytes that were signed.
    :param signature: the signature.
    :raises InvalidKey: if ``key`` is not 32 bytes.
    :raises InvalidSignature: if the signature is not 64 bytes or does not verify, including
        when ``key`` is not a point on the curve.
    """
    check_public_key(key)
    if len(signature) != SIGNATURE_BYTES:
        raise InvalidSignature(f"an Ed25519 signature is {SIGNATURE_BYTES} bytes")
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
    except _CryptographyInvalidSignature as exc:
        raise InvalidSignature("the Ed25519 signature does not verify") from exc
