"""
Attachments on the device: encrypted under a fresh key, checked by SHA-256, then decrypted.

Also the two relay requests that carry them (``relay_api``): a raw blob up,
a raw blob down.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from townsquare import auth, wire
from townsquare.client import attachments
from townsquare.client.core import relay_api as api
from townsquare.client.errors import (
    AttachmentDecryptionFailed,
    AttachmentHashMismatch,
    AttachmentSizeMismatch,
    InvalidAttachmentKey,
    InvalidMessage,
    ProtocolError,
)

DATA = "村口的水渠今天修好了".encode() * 10


def counting_rng(seed: int = 0) -> Callable[[int], bytes]:
    state = seed

    def rng(n: int) -> bytes:
        nonlocal state
        out = bytes((state + i) % 256 for i in range(n))
        state += n
        return out

    return rng


def flip(data: bytes, at: int) -> bytes:
    mutable = bytearray(data)
    mutable[at] ^= 0x01
    return bytes(mutable)


def test_an_attachment_round_trips():
    encrypted = attachments.encrypt_attachment(DATA, secrets.token_bytes)
    assert len(encrypted.blob) == len(DATA) + attachments.ATTACHMENT_TAG_BYTES
    assert encrypted.sha256 == hashlib.sha256(encrypted.blob).digest()
    assert DATA not in encrypted.blob
    assert attachments.decrypt_attachment(encrypted.blob, encrypted.key, encrypted.sha256) == DATA


def test_the_blob_is_aes_256_gcm_with_a_zero_nonce_and_the_label():
    # The format the web client implements with WebCrypto, checked against the
    # primitive directly: key from the rng, 12 zero bytes of nonce, the label as AAD.
    encrypted = attachments.encrypt_attachment(DATA, counting_rng(7))
    assert encrypted.key == bytes(range(7, 39))
    expected = AESGCM(encrypted.key).encrypt(bytes(12), DATA, b"townsquare/v1/attachment")
    assert encrypted.blob == expected


def test_each_attachment_gets_a_fresh_key():
    rng = counting_rng()
    first = attachments.encrypt_attachment(DATA, rng)
    second = attachments.encrypt_attachment(DATA, rng)
    assert first.key != second.key
    assert first.blob != second.blob
    assert first.sha256 != second.sha256


def test_an_empty_file_is_an_attachment_too():
    encrypted = attachments.encrypt_attachment(b"", secrets.token_bytes)
    assert len(encrypted.blob) == attachments.ATTACHMENT_TAG_BYTES
    assert attachments.decrypt_attachment(encrypted.blob, encrypted.key, encrypted.sha256) == b""


def test_a_changed_blob_fails_its_hash_before_decryption():
    encrypted = attachments.encrypt_attachment(DATA, secrets.token_bytes)
    with pytest.raises(AttachmentHashMismatch):
        attachments.decrypt_attachment(flip(encrypted.blob, 0), encrypted.key, encrypted.sha256)


def test_a_forged_blob_with_its_own_hash_fails_its_tag():
    # Whoever forges a blob cannot change the hash inside the signed, encrypted
    # message; even with a matching hash, the tag does not verify.
    encrypted = attachments.encrypt_attachment(DATA, secrets.token_bytes)
    forged = flip(encrypted.blob, 3)
    with pytest.raises(AttachmentDecryptionFailed):
        attachments.decrypt_attachment(forged, encrypted.key, hashlib.sha256(forged).digest())


def test_the_wrong_key_fails_the_tag():
    encrypted = attachments.encrypt_attachment(DATA, secrets.token_bytes)
    with pytest.raises(AttachmentDecryptionFailed):
        attachments.decrypt_attachment(encrypted.blob, bytes(32), encrypted.sha256)


@pytest.mark.parametrize(("key_length", "hash_length"), [(16, 32), (33, 32), (32, 31), (32, 0)])
def test_keys_and_hashes_of_the_wrong_length_are_usage_errors(key_length, hash_length):
    encrypted = attachments.encrypt_attachment(DATA, secrets.token_bytes)
    with pytest.raises(InvalidAttachmentKey):
        attachments.decrypt_attachment(
            encrypted.blob, bytes(key_length), encrypted.sha256[:hash_length].ljust(hash_length)
        )


def test_an_rng_that_returns_a_short_key_is_a_usage_error():
    with pytest.raises(InvalidAttachmentKey):
        attachments.encrypt_attachment(DATA, lambda n: bytes(n - 1))


def test_secrets_never_reach_a_repr():
    encrypted = attachments.encrypt_attachment(DATA, counting_rng(200))
    ref = attachments.attachment_ref(encrypted, content_type="image/jpeg")
    for value in (encrypted, ref):
        assert encrypted.key.hex() not in repr(value)
        assert repr(encrypted.key) not in repr(value)


def test_the_reference_fits_the_wire_and_survives_a_message():
    encrypted = attachments.encrypt_attachment(DATA, secrets.token_bytes)
    ref = attachments.attachment_ref(
        encrypted, content_type="image/jpeg", relay_hash=encrypted.sha256
    )
    assert (ref.blob_id, ref.sha256, ref.key, ref.size) == (
        encrypted.sha256,
        encrypted.sha256,
        encrypted.key,
        len(encrypted.blob),
    )
    message = wire.Attachment(
        ref,
        caption="修好了",
        message_id=wire.MessageId(secrets.token_bytes(16)),
        sent_at=datetime(2026, 3, 1, tzinfo=UTC),
    )
    received = wire.decode(wire.encode(message))
    assert isinstance(received, wire.Attachment)
    assert attachments.decrypt_ref(received.ref, encrypted.blob) == DATA


def test_a_relay_hash_that_is_not_the_blobs_is_refused():
    encrypted = attachments.encrypt_attachment(DATA, secrets.token_bytes)
    with pytest.raises(AttachmentHashMismatch):
        attachments.attachment_ref(
            encrypted, content_type="image/jpeg", relay_hash=hashlib.sha256(b"x").digest()
        )


def test_a_bad_content_type_is_an_invalid_message():
    encrypted = attachments.encrypt_attachment(DATA, secrets.token_bytes)
    with pytest.raises(InvalidMessage):
        attachments.attachment_ref(encrypted, content_type="Not A Type")


def test_a_blob_of_another_length_than_its_reference_is_refused():
    encrypted = attachments.encrypt_attachment(DATA, secrets.token_bytes)
    ref = attachments.attachment_ref(encrypted, content_type="image/jpeg")
    with pytest.raises(AttachmentSizeMismatch):
        attachments.decrypt_ref(ref, encrypted.blob + b"\x00")


# -- The relay requests ---------------------------------------------------------------


def test_an_upload_is_the_raw_blob():
    request = api.upload_attachment(9, b"\x00\x01blob")
    assert (request.request_id, request.method, request.target) == (9, "POST", "/v1/attachments")
    assert request.body == b"\x00\x01blob"
    assert request.content_type == "application/octet-stream"


def test_a_download_names_the_hash():
    sha256 = hashlib.sha256(b"blob").digest()
    request = api.download_attachment(3, sha256)
    assert (request.method, request.target) == (
        "GET",
        f"/v1/attachments/{auth.encode_b64u(sha256)}",
    )
    assert request.body == b""
    assert request.content_type is None


def test_the_upload_answer_is_read():
    sha256 = hashlib.sha256(b"blob").digest()
    answer = api.Response(
        status=201,
        body=json.dumps(
            {"hash": auth.encode_b64u(sha256), "size": 4, "expires_at": 1_767_225_600}
        ).encode(),
    )
    assert api.parse_uploaded_attachment(answer) == api.UploadedAttachment(sha256, 4, 1_767_225_600)


@pytest.mark.parametrize(
    "value",
    [
        {"size": 4, "expires_at": 1},
        {"hash": auth.encode_b64u(b"short"), "size": 4, "expires_at": 1},
        {"hash": auth.encode_b64u(bytes(32)), "size": -1, "expires_at": 1},
        {"hash": "not base64url!", "size": 4, "expires_at": 1},
    ],
)
def test_a_malformed_upload_answer_is_a_protocol_error(value):
    with pytest.raises(ProtocolError):
        api.parse_uploaded_attachment(api.Response(status=201, body=json.dumps(value).encode()))


def test_a_downloaded_blob_must_be_octet_stream():
    blob = api.Response(status=200, body=b"bytes", content_type="application/octet-stream")
    assert api.parse_attachment_blob(blob) == b"bytes"
    with pytest.raises(ProtocolError):
        api.parse_attachment_blob(api.Response(status=200, body=b"{}", content_type="text/html"))
