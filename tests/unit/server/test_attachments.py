"""
Attachments over HTTP: encrypted blobs uploaded, stored once by SHA-256, downloaded, expired.

A real app on a real SQLite file; blobs are encrypted with the SDK's own
``townsquare.client.attachments``. Every refused request is checked for its
problem type and against the whole database (the conftest tables and the
``attachments`` table, read from the file itself).
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from townsquare import auth
from townsquare.client import attachments as client_attachments
from townsquare.server import Limits
from townsquare.server.app import housekeep
from townsquare.server.storage import DATABASE_FILE_NAME, SQLiteStorage

pytestmark = pytest.mark.anyio

BLOB = "application/octet-stream"
HOUR = 3600


def b64u(data: bytes) -> str:
    return auth.encode_b64u(data)


def stored_attachments(relay) -> list[tuple[Any, ...]]:
    uri = f"file:{relay.data_dir / DATABASE_FILE_NAME}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
        return sorted(connection.execute("SELECT * FROM attachments").fetchall())


class Store:
    """The conftest snapshot and the attachments table, compared together."""

    def __init__(self, relay) -> None:
        self.relay = relay
        self.tables = relay.snapshot()
        self.attachments = stored_attachments(relay)

    def assert_unchanged(self, *, nonce_used: bool) -> None:
        self.relay.assert_unchanged(self.tables, nonce_used=nonce_used)
        assert stored_attachments(self.relay) == self.attachments


async def upload(relay, identity, blob: bytes, **kwargs: Any):
    headers = {"Content-Type": BLOB, **kwargs.pop("headers", {})}
    return await relay.client.post(
        "/v1/attachments",
        content=blob,
        headers=headers,
        auth=kwargs.pop("auth", relay.signer(identity)),
        **kwargs,
    )


async def download(relay, identity, sha256: bytes):
    return await relay.client.get(f"/v1/attachments/{b64u(sha256)}", auth=relay.signer(identity))


@contextlib.asynccontextmanager
async def other_process(relay) -> AsyncIterator[SQLiteStorage]:
    store = SQLiteStorage(relay.data_dir)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_an_encrypted_attachment_goes_up_and_comes_back(relay, new_identity):
    alice = await relay.register(new_identity())
    bob = await relay.register(new_identity())
    canary = b"attachment canary " + secrets.token_hex(8).encode()
    encrypted = client_attachments.encrypt_attachment(canary * 100, secrets.token_bytes)
    response = await upload(relay, alice, encrypted.blob)
    assert response.status_code == 201, response.text
    assert response.json() == {
        "hash": b64u(encrypted.sha256),
        "size": len(encrypted.blob),
        "expires_at": relay.clock.now() + 30 * 86_400,
    }
    ref = client_attachments.attachment_ref(
        encrypted, content_type="image/jpeg", relay_hash=auth.decode_b64u(response.json()["hash"])
    )
    fetched = await download(relay, bob, ref.blob_id)
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == BLOB
    assert int(fetched.headers["content-length"]) == len(encrypted.blob)
    assert client_attachments.decrypt_ref(ref, fetched.content) == canary * 100
    # The relay holds ciphertext only.
    database = (relay.data_dir / DATABASE_FILE_NAME).read_bytes()
    wal = relay.data_dir / f"{DATABASE_FILE_NAME}-wal"
    assert canary not in database
    assert not wal.exists() or canary not in wal.read_bytes()


async def test_a_blob_larger_than_one_read_comes_back_whole(relay, identity):
    await relay.register(identity)
    blob = secrets.token_bytes(600 * 1024)
    assert (await upload(relay, identity, blob)).status_code == 201
    fetched = await download(relay, identity, hashlib.sha256(blob).digest())
    assert fetched.content == blob


async def test_the_same_blob_is_stored_once(relay, new_identity):
    alice = await relay.register(new_identity())
    bob = await relay.register(new_identity())
    blob = secrets.token_bytes(1000)
    first = await upload(relay, alice, blob)
    relay.clock.advance(HOUR)
    again = await upload(relay, bob, blob)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["hash"] == first.json()["hash"]
    assert again.json()["expires_at"] == first.json()["expires_at"] + HOUR
    (row,) = stored_attachments(relay)
    assert row[1] == hashlib.sha256(blob).digest()


async def test_an_oversized_attachment_is_refused_before_it_is_read(
    relay_with, limits, identity, problem
):
    async with relay_with(replace(limits, max_attachment_bytes=1000)) as relay:
        await relay.register(identity)
        store = Store(relay)
        document = problem(await upload(relay, identity, b"x" * 1001), 413, "attachment-too-large")
        assert "1000" in document["detail"]
        store.assert_unchanged(nonce_used=False)
        # Exactly the limit is accepted.
        assert (await upload(relay, identity, b"x" * 1000)).status_code == 201


async def test_an_oversized_stream_without_a_length_is_refused(relay_with, limits, problem):
    async with relay_with(replace(limits, max_attachment_bytes=1000)) as relay:
        store = Store(relay)

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(5):
                yield b"y" * 300

        response = await relay.client.post(
            "/v1/attachments", content=chunks(), headers={"Content-Type": BLOB}
        )
        assert "content-length" not in response.request.headers
        problem(response, 413, "attachment-too-large")
        store.assert_unchanged(nonce_used=False)


async def test_other_routes_keep_the_general_body_limit(relay, identity, limits, problem):
    await relay.register(identity)
    body = b"{" + b" " * limits.max_body_bytes + b"}"
    response = await relay.client.post(
        "/v1/key-packages",
        content=body,
        headers={"Content-Type": "application/json"},
        auth=relay.signer(identity),
    )
    problem(response, 413, "body-too-large")


async def test_an_unsigned_upload_stores_nothing(relay, problem):
    store = Store(relay)
    response = await relay.client.post(
        "/v1/attachments", content=b"blob", headers={"Content-Type": BLOB}
    )
    problem(response, 401, "authentication-required")
    store.assert_unchanged(nonce_used=False)


async def test_an_upload_by_an_unknown_device_stores_nothing(relay, identity, problem):
    store = Store(relay)
    problem(await upload(relay, identity, b"blob"), 401, "unknown-device")
    store.assert_unchanged(nonce_used=False)


async def test_a_replayed_upload_is_refused(relay, identity, problem, sign):
    await relay.register(identity)
    nonce = secrets.token_bytes(auth.NONCE_BYTES)
    signer = sign(identity.device_private, relay.clock.now, lambda: nonce)
    assert (await upload(relay, identity, b"first", auth=signer)).status_code == 201
    store = Store(relay)
    problem(await upload(relay, identity, b"second", auth=signer), 409, "replayed-request")
    store.assert_unchanged(nonce_used=False)


async def test_an_upload_that_is_not_a_blob_is_refused(relay, identity, problem):
    await relay.register(identity)
    store = Store(relay)
    response = await upload(
        relay, identity, b'{"a": 1}', headers={"Content-Type": "application/json"}
    )
    problem(response, 400, "invalid-request")
    store.assert_unchanged(nonce_used=True)


async def test_an_unknown_hash_is_not_found(relay, identity, problem):
    await relay.register(identity)
    store = Store(relay)
    problem(
        await download(relay, identity, hashlib.sha256(b"never").digest()),
        404,
        "attachment-not-found",
    )
    store.assert_unchanged(nonce_used=True)


@pytest.mark.parametrize("text", ["abc", "A" * 44, "A" * 42 + "B"])
async def test_a_malformed_hash_is_refused(relay, identity, problem, text):
    await relay.register(identity)
    response = await relay.client.get(f"/v1/attachments/{text}", auth=relay.signer(identity))
    problem(response, 400, "invalid-request")


async def test_an_unsigned_download_is_refused(relay, identity, problem):
    await relay.register(identity)
    blob = b"private"
    assert (await upload(relay, identity, blob)).status_code == 201
    response = await relay.client.get(f"/v1/attachments/{b64u(hashlib.sha256(blob).digest())}")
    problem(response, 401, "authentication-required")


async def test_an_attachment_expires_then_is_forgotten(relay_with, limits, identity, problem):
    short = replace(limits, retention_seconds=HOUR)
    async with relay_with(short) as relay:
        await relay.register(identity)
        blob = b"a photo, encrypted"
        sha256 = hashlib.sha256(blob).digest()
        assert (await upload(relay, identity, blob)).json()[
            "expires_at"
        ] == relay.clock.now() + HOUR
        relay.clock.advance(HOUR)
        # Expired at once, before housekeeping has deleted anything.
        store = Store(relay)
        problem(await download(relay, identity, sha256), 410, "attachment-expired")
        store.assert_unchanged(nonce_used=True)
        async with other_process(relay) as other:
            await housekeep(other, relay.clock.now(), short)
        ((_, _, _, content, *_),) = stored_attachments(relay)
        assert content is None
        problem(await download(relay, identity, sha256), 410, "attachment-expired")
        relay.clock.advance(HOUR)
        async with other_process(relay) as other:
            await housekeep(other, relay.clock.now(), short)
        assert stored_attachments(relay) == []
        problem(await download(relay, identity, sha256), 404, "attachment-not-found")


async def test_uploads_count_against_a_byte_quota(relay_with, limits, identity, problem):
    tight = replace(
        limits,
        max_attachment_bytes=1000,
        attachment_bytes_per_window=2500,
        attachment_window_seconds=HOUR,
    )
    async with relay_with(tight) as relay:
        await relay.register(identity)
        for _ in range(2):
            assert (await upload(relay, identity, secrets.token_bytes(1000))).status_code == 201
        relay.clock.advance(10)
        store = Store(relay)
        refused = await upload(relay, identity, secrets.token_bytes(1000))
        document = problem(refused, 429, "rate-limited")
        assert document["retry_after"] == HOUR - 10
        assert refused.headers["retry-after"] == str(HOUR - 10)
        store.assert_unchanged(nonce_used=True)
        # What is left of the window still takes a smaller blob.
        assert (await upload(relay, identity, secrets.token_bytes(500))).status_code == 201
        relay.clock.advance(HOUR)
        assert (await upload(relay, identity, secrets.token_bytes(1000))).status_code == 201


@pytest.mark.parametrize(
    "changes",
    [
        {"max_attachment_bytes": 2000, "attachment_bytes_per_window": 1999},
        {"retention_seconds": 0},
        {"post_window_seconds": 0},
        {"attachment_window_seconds": -1},
    ],
)
async def test_limits_that_cannot_work_are_refused(changes):
    with pytest.raises(ValueError, match="must"):
        Limits(**changes)
