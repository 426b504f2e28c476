"""
Attachments, encrypted on the device: a fresh key per file, AES-256-GCM, addressed by SHA-256.

The sending device encrypts the file with a key of its own drawing, uploads the
ciphertext (the *blob*) to the relay, and sends the key and the blob's SHA-256
inside an MLS application message (:class:`townsquare.wire.AttachmentRef`).
The relay stores the blob under its SHA-256 (``docs/protocol.md``,
Attachments), so the hash in the message is also the blob's id there. A
receiver downloads the blob, checks its length and SHA-256 against the
message (the relay could otherwise swap one blob for another), and only then
decrypts it::

    data ──encrypt_attachment(data, rng)──▶ blob, key, sha256
         ──upload blob──▶ relay: sha256 ──▶ AttachmentRef(blob_id=sha256, key, sha256)
    AttachmentRef ──download blob_id──▶ blob ──decrypt_attachment──▶ data

The cipher is AES-256-GCM (NIST SP 800-38D), which browsers' WebCrypto offers
too, so the web client decrypts the same blobs. The blob is the ciphertext
followed by the 16-byte tag; the additional data is :data:`ATTACHMENT_AAD`.

This module is pure: no I/O, and randomness comes from the injected ``rng``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from townsquare import wire
from townsquare.client.errors import (
    AttachmentDecryptionFailed,
    AttachmentHashMismatch,
    AttachmentSizeMismatch,
    InvalidAttachmentKey,
    InvalidMessage,
)

__all__ = [
    "ATTACHMENT_AAD",
    "ATTACHMENT_KEY_BYTES",
    "ATTACHMENT_TAG_BYTES",
    "EncryptedAttachment",
    "attachment_ref",
    "decrypt_attachment",
    "decrypt_ref",
    "encrypt_attachment",
]

#: The length of an attachment key: AES-256, and the wire's ``key`` field.
ATTACHMENT_KEY_BYTES = wire.KEY_BYTES
#: The length of the GCM tag at the end of every blob.
ATTACHMENT_TAG_BYTES = 16
#: The additional authenticated data of every blob: a label, so that a key of this
#: scheme never opens a ciphertext made for another purpose.
ATTACHMENT_AAD = b"townsquare/v1/attachment"

# Townsquare choice: a fixed all-zero nonce. GCM fails badly if one key encrypts two
# messages under one nonce, but here each key is drawn fresh for one attachment and
# encrypts nothing else, so the (key, nonce) pair is never reused; a random nonce
# would only add 12 bytes to each blob. Never reuse an attachment key.
_NONCE = bytes(12)


@dataclass(frozen=True, slots=True)
class EncryptedAttachment:
    """
    An attachment ready to upload: the blob, its key, and the blob's SHA-256.

    :param blob: the ciphertext and tag, what the relay stores.
    :param key: the 32-byte key (never shown in ``repr``).
    :param sha256: SHA-256 of ``blob``: its id on the relay and its check.
    """

    blob: bytes = field(repr=False)
    key: bytes = field(repr=False)
    sha256: bytes


def encrypt_attachment(data: bytes, rng: Callable[[int], bytes]) -> EncryptedAttachment:
    """
    Encrypt a file under a key drawn for it alone.

    :param data: the file's bytes.
    :param rng: the source of randomness (``secrets.token_bytes`` in production).
    :returns: the blob, its key and its SHA-256.
    :raises InvalidAttachmentKey: if ``rng`` returns a key of the wrong length.
    """
    key = rng(ATTACHMENT_KEY_BYTES)
    _check_length(key, ATTACHMENT_KEY_BYTES, "key")
    blob = AESGCM(key).encrypt(_NONCE, data, ATTACHMENT_AAD)
    return EncryptedAttachment(blob=blob, key=key, sha256=hashlib.sha256(blob).digest())


def decrypt_attachment(blob: bytes, key: bytes, expected_hash: bytes) -> bytes:
    """
    Check a downloaded blob against the hash its message gives, then decrypt it.

    :param blob: the bytes the relay returned.
    :param key: the key from the message.
    :param expected_hash: the SHA-256 from the message.
    :returns: the file's bytes.
    :raises InvalidAttachmentKey: if ``key`` or ``expected_hash`` is not 32 bytes.
    :raises AttachmentHashMismatch: if the blob's SHA-256 is not ``expected_hash``.
    :raises AttachmentDecryptionFailed: if the tag does not verify under ``key``.
    """
    _check_length(key, ATTACHMENT_KEY_BYTES, "key")
    _check_length(expected_hash, wire.SHA256_BYTES, "hash")
    if not hmac.compare_digest(hashlib.sha256(blob).digest(), expected_hash):
        raise AttachmentHashMismatch("the blob's SHA-256 is not the one in its message")
    try:
        return AESGCM(key).decrypt(_NONCE, blob, ATTACHMENT_AAD)
    except InvalidTag as exc:
        raise AttachmentDecryptionFailed("the blob does not open with its message's key") from exc


def attachment_ref(
    encrypted: EncryptedAttachment, *, content_type: str, relay_hash: bytes | None = None
) -> wire.AttachmentRef:
    """
    Build the wire reference to an uploaded attachment.

    :param encrypted: what :func:`encrypt_attachment` returned.
    :param content_type: the file's media type (``image/jpeg``).
    :param relay_hash: the ``hash`` the relay answered the upload with, if at hand: it
        must be the blob's SHA-256, which is then the ``blob_id``.
    :returns: the reference, whose ``blob_id`` and ``sha256`` are both the blob's SHA-256.
    :raises AttachmentHashMismatch: if ``relay_hash`` is not the blob's SHA-256.
    :raises InvalidMessage: if ``content_type`` breaks the wire's rule for it.
    """
    if relay_hash is not None and not hmac.compare_digest(relay_hash, encrypted.sha256):
        raise AttachmentHashMismatch("the relay stored the blob under another hash")
    try:
        return wire.AttachmentRef(
            encrypted.sha256,
            content_type,
            len(encrypted.blob),
            key=encrypted.key,
            sha256=encrypted.sha256,
        )
    except wire.UsageError as exc:
        raise InvalidMessage(str(exc)) from exc


def decrypt_ref(ref: wire.AttachmentRef, blob: bytes) -> bytes:
    """
    Check a downloaded blob against its reference (length, then hash), then decrypt it.

    :param ref: the reference from the message.
    :param blob: the bytes downloaded for ``ref.blob_id``.
    :returns: the file's bytes.
    :raises AttachmentSizeMismatch: if the blob's length is not ``ref.size``.
    :raises AttachmentHashMismatch: if its SHA-256 is not ``ref.sha256``.
    :raises AttachmentDecryptionFailed: if the tag does not verify under ``ref.key``.
    """
    if len(blob) != ref.size:
        raise AttachmentSizeMismatch(f"the blob is {len(blob)} bytes; its message says {ref.size}")
    return decrypt_attachment(blob, ref.key, ref.sha256)


def _check_length(value: bytes, length: int, what: str) -> None:
    if len(value) != length:
        raise InvalidAttachmentKey(f"an attachment {what} is {length} bytes, not {len(value)}")
