"""
Request authentication at the HTTP edge: each way a signature can fail, and replay.

A request refused here must change nothing at all, not even the nonce table.
Posting a message records its nonce in the append's own transaction; a replay
of a post is refused as one whether the post was stored or refused.
"""

from __future__ import annotations

import json
import secrets

import pytest

from townsquare import auth
from townsquare.server.auth import Authenticator
from townsquare.server.errors import Unavailable
from townsquare.server.storage import Device, SQLiteStorage

from .test_delivery import two_member_group

pytestmark = pytest.mark.anyio

COUNT = "/v1/key-packages/count"
NOW = 1_767_225_600


async def test_a_signed_request_is_accepted_and_its_nonce_recorded(relay, identity):
    await relay.register(identity)
    signer = relay.signer(identity)
    response = await relay.client.get(COUNT, auth=signer)
    assert response.status_code == 200
    assert response.json() == {"one_time": 0, "last_resort": False}
    nonce = auth.decode_b64u(signer.last_headers["Townsquare-Nonce"])
    assert (identity.device_key, nonce, relay.clock.now() + 300) in relay.snapshot()[
        "request_nonces"
    ]


async def test_an_unsigned_request_is_refused(relay, identity, problem):
    await relay.register(identity)
    before = relay.snapshot()
    problem(await relay.client.get(COUNT), 401, "authentication-required")
    assert relay.snapshot() == before


@pytest.mark.parametrize(
    "header",
    ["Townsquare-Device", "Townsquare-Timestamp", "Townsquare-Nonce", "Townsquare-Signature"],
)
async def test_each_missing_header_is_refused(relay, identity, problem, header):
    await relay.register(identity)
    headers = auth.sign_request(
        device_private_key=identity.device_private,
        method="GET",
        target=COUNT,
        body=b"",
        timestamp=relay.clock.now(),
        nonce=b"\x01" * 16,
    )
    del headers[header]
    before = relay.snapshot()
    problem(await relay.client.get(COUNT, headers=headers), 401, "authentication-required")
    assert relay.snapshot() == before


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Townsquare-Device", "not-base64url!"),
        ("Townsquare-Device", "AAAA"),
        ("Townsquare-Timestamp", "01767225600"),
        ("Townsquare-Timestamp", "+1767225600"),
        ("Townsquare-Timestamp", "1767225600.0"),
        ("Townsquare-Timestamp", "99999999999999999999"),
        ("Townsquare-Nonce", "AAAAAAAAAAAAAAAAAAAAAA=="),
        ("Townsquare-Nonce", "AAAA"),
        ("Townsquare-Signature", "AAAA"),
    ],
)
async def test_each_malformed_header_is_refused(relay, identity, problem, header, value):
    await relay.register(identity)
    headers = auth.sign_request(
        device_private_key=identity.device_private,
        method="GET",
        target=COUNT,
        body=b"",
        timestamp=relay.clock.now(),
        nonce=b"\x01" * 16,
    )
    headers[header] = value
    before = relay.snapshot()
    problem(await relay.client.get(COUNT, headers=headers), 401, "malformed-authentication")
    assert relay.snapshot() == before


async def test_a_repeated_header_is_refused(relay, identity, problem):
    await relay.register(identity)
    headers = list(
        auth.sign_request(
            device_private_key=identity.device_private,
            method="GET",
            target=COUNT,
            body=b"",
            timestamp=relay.clock.now(),
            nonce=b"\x01" * 16,
        ).items()
    )
    headers.append(("Townsquare-Nonce", auth.encode_b64u(b"\x02" * 16)))
    before = relay.snapshot()
    problem(await relay.client.get(COUNT, headers=headers), 401, "malformed-authentication")
    assert relay.snapshot() == before


async def test_an_unknown_device_is_refused(relay, identity, problem):
    before = relay.snapshot()
    response = await relay.client.get(COUNT, auth=relay.signer(identity))
    problem(response, 401, "unknown-device")
    assert relay.snapshot() == before


async def test_a_signature_by_another_key_is_refused(relay, identity, new_identity, problem):
    await relay.register(identity)
    forger = new_identity()
    headers = auth.sign_request(
        device_private_key=forger.device_private,
        method="GET",
        target=COUNT,
        body=b"",
        timestamp=relay.clock.now(),
        nonce=b"\x01" * 16,
    )
    headers["Townsquare-Device"] = identity.device_id
    before = relay.snapshot()
    problem(await relay.client.get(COUNT, headers=headers), 401, "bad-signature")
    assert relay.snapshot() == before


@pytest.mark.parametrize(
    ("signed", "sent"),
    [
        pytest.param(("GET", COUNT, b""), ("GET", COUNT + "?x=1", b""), id="query-added"),
        pytest.param(
            ("GET", COUNT, b""),
            ("GET", "/v1/accounts/" + "A" * 43 + "/devices", b""),
            id="other-path",
        ),
        pytest.param(
            ("POST", "/v1/key-packages", b'{"one_time":[]}'),
            ("POST", "/v1/key-packages", b'{"one_time": []}'),
            id="other-body",
        ),
        pytest.param(
            ("GET", "/v1/key-packages", b""),
            ("POST", "/v1/key-packages", b""),
            id="other-method",
        ),
    ],
)
async def test_a_signature_over_another_request_is_refused(relay, identity, problem, signed, sent):
    await relay.register(identity)
    method, target, body = signed
    headers = auth.sign_request(
        device_private_key=identity.device_private,
        method=method,
        target=target,
        body=body,
        timestamp=relay.clock.now(),
        nonce=b"\x01" * 16,
    )
    method, target, body = sent
    before = relay.snapshot()
    response = await relay.client.request(
        method,
        target,
        content=body,
        headers={**headers, "content-type": "application/json"},
    )
    problem(response, 401, "bad-signature")
    assert relay.snapshot() == before


async def test_the_signed_target_includes_the_query(relay, identity):
    await relay.register(identity)
    response = await relay.client.get(COUNT + "?refresh=1", auth=relay.signer(identity))
    assert response.status_code == 200


@pytest.mark.parametrize("offset", [-301, 301, -10_000, 10_000])
async def test_a_stale_timestamp_is_refused(relay, identity, sign, problem, offset):
    await relay.register(identity)
    before = relay.snapshot()
    signer = sign(identity.device_private, lambda: relay.clock.now() + offset)
    problem(await relay.client.get(COUNT, auth=signer), 401, "stale-timestamp")
    assert relay.snapshot() == before


@pytest.mark.parametrize("offset", [-300, 300])
async def test_a_timestamp_at_the_edge_of_the_window_is_accepted(relay, identity, sign, offset):
    await relay.register(identity)
    signer = sign(identity.device_private, lambda: relay.clock.now() + offset)
    assert (await relay.client.get(COUNT, auth=signer)).status_code == 200


async def test_a_replayed_request_is_refused(relay, identity, problem):
    await relay.register(identity)
    signer = relay.signer(identity)
    assert (await relay.client.get(COUNT, auth=signer)).status_code == 200
    before = relay.snapshot()
    response = await relay.client.get(COUNT, headers=signer.last_headers)
    problem(response, 409, "replayed-request")
    assert relay.snapshot() == before


async def test_a_replayed_registration_is_refused(relay, identity, problem):
    signer = relay.signer(identity)
    body = identity.registration()
    assert (await relay.client.post("/v1/accounts", json=body, auth=signer)).status_code == 201
    before = relay.snapshot()
    response = await relay.client.post("/v1/accounts", json=body, headers=signer.last_headers)
    problem(response, 409, "replayed-request")
    assert relay.snapshot() == before


async def test_a_replay_after_the_nonce_expired_is_refused_as_stale(relay, identity, problem):
    # Purged nonces cannot be replayed: by then the timestamp is out of the window.
    await relay.register(identity)
    signer = relay.signer(identity)
    assert (await relay.client.get(COUNT, auth=signer)).status_code == 200
    relay.clock.advance(301)
    before = relay.snapshot()
    response = await relay.client.get(COUNT, headers=signer.last_headers)
    problem(response, 401, "stale-timestamp")
    relay.assert_unchanged(before, nonce_used=False)


async def test_a_forged_request_does_not_use_up_the_nonce(relay, identity, new_identity, problem):
    await relay.register(identity)
    nonce = b"\x05" * 16
    forged = auth.sign_request(
        device_private_key=new_identity().device_private,
        method="GET",
        target=COUNT,
        body=b"",
        timestamp=relay.clock.now(),
        nonce=nonce,
    )
    forged["Townsquare-Device"] = identity.device_id
    before = relay.snapshot()
    problem(await relay.client.get(COUNT, headers=forged), 401, "bad-signature")
    relay.assert_unchanged(before, nonce_used=False)
    genuine = auth.sign_request(
        device_private_key=identity.device_private,
        method="GET",
        target=COUNT,
        body=b"",
        timestamp=relay.clock.now(),
        nonce=nonce,
    )
    assert (await relay.client.get(COUNT, headers=genuine)).status_code == 200


async def test_signatures_are_checked_before_the_schema(relay, identity, problem):
    # docs/protocol.md: JSON syntax (step 1) comes first, the schema (step 7) last.
    await relay.register(identity)
    before = relay.snapshot()
    response = await relay.client.post("/v1/key-packages", json={"one_time": "not a list"})
    problem(response, 401, "authentication-required")
    response = await relay.client.get("/v1/accounts/not-a-key/devices")
    problem(response, 401, "authentication-required")
    response = await relay.client.post(
        "/v1/key-packages", content=b"{", headers={"content-type": "application/json"}
    )
    problem(response, 400, "invalid-request")
    assert relay.snapshot() == before


# -- Posting a message: the nonce is recorded with the append ------------------------


def _post_body(message: bytes, message_id: bytes | None = None) -> bytes:
    return json.dumps(
        {
            "client_message_id": auth.encode_b64u(
                message_id if message_id is not None else secrets.token_bytes(16)
            ),
            "message": auth.encode_b64u(message),
        }
    ).encode()


async def _post_and_replay(relay, identity, group_id: bytes, body: bytes):
    """Post ``body`` signed, then send the very same request again: its bytes and headers."""
    target = f"/v1/groups/{auth.encode_b64u(group_id)}/messages"
    content_type = {"content-type": "application/json"}
    signer = relay.signer(identity)
    first = await relay.client.post(target, content=body, headers=content_type, auth=signer)
    before = relay.snapshot()
    replay = await relay.client.post(
        target, content=body, headers={**content_type, **signer.last_headers}
    )
    return first, replay, before


async def test_a_replayed_post_of_a_message_is_refused_and_stores_nothing(
    relay, mls, new_identity, problem
):
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    body = _post_body(group_a.encrypt(b"once", rng=mls.rng))
    first, replay, before = await _post_and_replay(relay, alice, group_a.group_id, body)
    assert first.status_code == 201, first.text
    problem(replay, 409, "replayed-request")
    assert relay.snapshot() == before


async def test_a_replayed_post_that_was_refused_is_refused_as_a_replay(
    relay, mls, new_identity, problem
):
    alice, bob, group_a, group_b = await two_member_group(relay, mls, new_identity)
    late = group_b.encrypt(b"sent at epoch 1", rng=mls.rng)
    pending = group_a.commit(rng=mls.rng, force_path=True)
    assert (await relay.post_commit(alice, pending)).status_code == 201
    before = relay.snapshot()
    first, replay, after_first = await _post_and_replay(
        relay, bob, group_a.group_id, _post_body(late)
    )
    problem(first, 409, "stale-epoch")
    relay.assert_unchanged(before, nonce_used=True)
    problem(replay, 409, "replayed-request")
    assert relay.snapshot() == after_first


async def test_a_replayed_post_refused_before_the_store_is_refused_as_a_replay(
    relay, mls, new_identity, problem
):
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    before = relay.snapshot()
    first, replay, after_first = await _post_and_replay(
        relay, alice, group_a.group_id, _post_body(b"\x00\x01")
    )
    problem(first, 400, "malformed-mls")
    relay.assert_unchanged(before, nonce_used=True)
    problem(replay, 409, "replayed-request")
    assert relay.snapshot() == after_first


async def test_a_replayed_commit_is_refused_as_a_replay(relay, mls, new_identity, problem):
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    pending = group_a.commit(rng=mls.rng, force_path=True)
    body = json.dumps(
        {
            "client_message_id": auth.encode_b64u(secrets.token_bytes(16)),
            "message": auth.encode_b64u(pending.commit),
            "group_info": auth.encode_b64u(pending.group_info),
        }
    ).encode()
    first, replay, before = await _post_and_replay(relay, alice, group_a.group_id, body)
    assert first.status_code == 201, first.text
    problem(replay, 409, "replayed-request")
    assert relay.snapshot() == before


async def test_a_post_whose_body_fails_the_schema_leaves_its_nonce_unused(
    relay, mls, new_identity, problem
):
    # docs/protocol.md: on this route the nonce is recorded with the append, after the
    # schema; a body refused by the schema changes nothing, so its replay is refused alike.
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    before = relay.snapshot()
    body = json.dumps({"client_message_id": "not base64url!", "message": "AAAA"}).encode()
    first, replay, _ = await _post_and_replay(relay, alice, group_a.group_id, body)
    problem(first, 400, "invalid-request")
    problem(replay, 400, "invalid-request")
    relay.assert_unchanged(before, nonce_used=False)


# -- The device cache ----------------------------------------------------------------


class _Clock:
    def now(self) -> int:
        return NOW


async def _registered(storage: SQLiteStorage) -> bytes:
    device_private = auth.generate_private_key()
    certificate = auth.certify_device(
        auth.generate_private_key(), auth.public_key(device_private), NOW
    )
    await storage.create_account(Device(certificate=certificate, registered_at=NOW))
    return device_private


async def _verify(authenticator: Authenticator, device_private: bytes) -> bytes:
    headers = auth.sign_request(
        device_private_key=device_private,
        method="GET",
        target=COUNT,
        body=b"",
        timestamp=NOW,
        nonce=secrets.token_bytes(auth.NONCE_BYTES),
    )
    verified = await authenticator.authenticate_deferring_nonce(
        method="GET",
        target=COUNT,
        body=b"",
        headers={name.lower(): [value] for name, value in headers.items()},
    )
    return verified.device.device_key


async def test_devices_are_served_from_a_bounded_cache(tmp_path):
    # Seen through the store: once it is closed, only cached devices still verify.
    storage = SQLiteStorage(tmp_path)
    await storage.open()
    first, second = await _registered(storage), await _registered(storage)
    authenticator = Authenticator(storage, _Clock(), clock_skew_seconds=300, device_cache_size=1)
    uncached = Authenticator(storage, _Clock(), clock_skew_seconds=300, device_cache_size=0)
    for device_private in (first, second):
        await _verify(authenticator, device_private)
        await _verify(uncached, device_private)
    await storage.close()
    assert await _verify(authenticator, second) == auth.public_key(second)
    with pytest.raises(Unavailable):
        await _verify(authenticator, first)
    with pytest.raises(Unavailable):
        await _verify(uncached, second)


async def test_a_device_registered_after_it_was_refused_is_accepted(relay, identity, problem):
    # Unknown devices are not cached.
    problem(await relay.client.get(COUNT, auth=relay.signer(identity)), 401, "unknown-device")
    await relay.register(identity)
    assert (await relay.client.get(COUNT, auth=relay.signer(identity))).status_code == 200
