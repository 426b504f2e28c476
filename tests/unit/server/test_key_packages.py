"""
POST /v1/key-packages, GET /v1/key-packages/count and the two claim endpoints.
"""

from __future__ import annotations

import asyncio

import pytest

from townsquare import auth
from townsquare.mls.framing import MLSMessage, PrivateMessage
from townsquare.mls.registries import ContentType, ProtocolVersion
from townsquare.server import Limits

pytestmark = pytest.mark.anyio

UPLOAD = "/v1/key-packages"
COUNT = "/v1/key-packages/count"


def claim_path(identity) -> str:
    return f"/v1/devices/{identity.device_id}/key-packages/claim"


def account_claim_path(identity) -> str:
    return f"/v1/accounts/{identity.account_id}/key-packages/claim"


async def test_upload_then_count(relay, identity):
    await relay.register(identity)
    response = await relay.upload(identity, 3, last_resort=True)
    assert response.status_code == 200
    assert response.json() == {"one_time": 3, "last_resort": True}
    response = await relay.client.get(COUNT, auth=relay.signer(identity))
    assert response.json() == {"one_time": 3, "last_resort": True}


async def test_claims_drain_one_time_packages_then_serve_the_last_resort(
    relay, identity, new_identity, make_key_package
):
    await relay.register(identity)
    claimer = await relay.register(new_identity())
    one_time = [make_key_package(identity.device_private) for _ in range(2)]
    last_resort = make_key_package(identity.device_private)
    response = await relay.client.post(
        UPLOAD,
        json={
            "one_time": [auth.encode_b64u(p) for p in one_time],
            "last_resort": auth.encode_b64u(last_resort),
        },
        auth=relay.signer(identity),
    )
    assert response.status_code == 200
    handed_out = []
    for _ in range(4):
        response = await relay.client.post(claim_path(identity), auth=relay.signer(claimer))
        assert response.status_code == 200
        body = response.json()
        assert body["device_key"] == identity.device_id
        handed_out.append((auth.decode_b64u(body["key_package"]), body["last_resort"]))
    assert handed_out == [
        (one_time[0], False),
        (one_time[1], False),
        (last_resort, True),
        (last_resort, True),
    ]
    response = await relay.client.get(COUNT, auth=relay.signer(identity))
    assert response.json() == {"one_time": 0, "last_resort": True}


async def test_a_device_with_nothing_left_is_exhausted(relay, identity, new_identity, problem):
    await relay.register(identity)
    claimer = await relay.register(new_identity())
    await relay.upload(identity, 1)
    assert (await relay.client.post(claim_path(identity), auth=relay.signer(claimer))).is_success
    before = relay.snapshot()
    response = await relay.client.post(claim_path(identity), auth=relay.signer(claimer))
    problem(response, 409, "key-packages-exhausted")
    relay.assert_unchanged(before, nonce_used=True, quota_used=True)


async def test_claiming_for_an_unknown_device_is_refused(relay, identity, new_identity, problem):
    await relay.register(identity)
    before = relay.snapshot()
    response = await relay.client.post(claim_path(new_identity()), auth=relay.signer(identity))
    problem(response, 404, "device-not-found")
    relay.assert_unchanged(before, nonce_used=True, quota_used=True)


async def test_account_claim_returns_one_package_per_device(relay, identity, new_identity):
    await relay.register(identity)
    phone = await relay.add_device(identity.another_device())
    tablet = await relay.add_device(identity.another_device())
    claimer = await relay.register(new_identity())
    await relay.upload(identity, 2)
    await relay.upload(tablet, 0, last_resort=True)
    response = await relay.client.post(account_claim_path(identity), auth=relay.signer(claimer))
    assert response.status_code == 200
    body = response.json()
    assert body["account_key"] == identity.account_id
    assert [(p["device_key"], p["last_resort"]) for p in body["key_packages"]] == [
        (identity.device_id, False),
        (tablet.device_id, True),
    ]
    assert body["exhausted"] == [phone.device_id]
    for claimed in body["key_packages"]:
        MLSMessage.decode(auth.decode_b64u(claimed["key_package"]))


async def test_account_claim_for_an_unknown_account_is_refused(
    relay, identity, new_identity, problem
):
    await relay.register(identity)
    before = relay.snapshot()
    response = await relay.client.post(
        account_claim_path(new_identity()), auth=relay.signer(identity)
    )
    problem(response, 404, "unknown-account")
    relay.assert_unchanged(before, nonce_used=True, quota_used=True)


async def test_claims_are_rate_limited_per_claimer(relay, identity, new_identity, problem, limits):
    await relay.register(identity)
    claimer = await relay.register(new_identity())
    await relay.upload(identity, limits.claims_per_window, last_resort=True)
    for _ in range(limits.claims_per_window):
        response = await relay.client.post(claim_path(identity), auth=relay.signer(claimer))
        assert response.status_code == 200
    before = relay.snapshot()
    response = await relay.client.post(claim_path(identity), auth=relay.signer(claimer))
    document = problem(response, 429, "rate-limited")
    assert response.headers["retry-after"] == str(limits.claim_window_seconds)
    assert document["retry_after"] == limits.claim_window_seconds
    relay.assert_unchanged(before, nonce_used=True)
    # Another claimer has its own quota, and the window ends.
    other = await relay.register(new_identity())
    assert (await relay.client.post(claim_path(identity), auth=relay.signer(other))).is_success
    relay.clock.advance(limits.claim_window_seconds)
    assert (await relay.client.post(claim_path(identity), auth=relay.signer(claimer))).is_success


async def test_concurrent_claims_never_hand_out_a_package_twice(relay_with, new_identity):
    async with relay_with(Limits(claims_per_window=1000, max_stored_key_packages=100)) as relay:
        owner = await relay.register(new_identity())
        claimers = [await relay.register(new_identity()) for _ in range(2)]
        await relay.upload(owner, 4, last_resort=True)
        responses = await asyncio.gather(
            *(
                relay.client.post(claim_path(owner), auth=relay.signer(claimers[i % 2]))
                for i in range(6)
            )
        )
    bodies = [r.json() for r in responses]
    one_time = [b["key_package"] for b in bodies if not b["last_resort"]]
    last_resort = {b["key_package"] for b in bodies if b["last_resort"]}
    assert len(one_time) == 4
    assert len(set(one_time)) == 4
    assert len(last_resort) == 1
    assert sum(b["last_resort"] for b in bodies) == 2


# -- Refused uploads -------------------------------------------------------------------


async def upload_refused(relay, identity, body, problem, *, status, code):
    before = relay.snapshot()
    response = await relay.client.post(UPLOAD, json=body, auth=relay.signer(identity))
    problem(response, status, code)
    relay.assert_unchanged(before, nonce_used=True)
    return response


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00\x01\x00\x05", id="truncated"),
        pytest.param(b"garbage" * 10, id="garbage"),
    ],
)
async def test_bytes_that_are_not_an_mls_message_are_refused(relay, identity, problem, data):
    await relay.register(identity)
    body = {"one_time": [auth.encode_b64u(data)]}
    await upload_refused(relay, identity, body, problem, status=422, code="invalid-key-package")


async def test_a_key_package_with_trailing_bytes_is_refused(
    relay, identity, problem, make_key_package
):
    await relay.register(identity)
    data = make_key_package(identity.device_private) + b"\x00"
    body = {"one_time": [auth.encode_b64u(data)]}
    await upload_refused(relay, identity, body, problem, status=422, code="invalid-key-package")


async def test_an_mls_message_that_is_not_a_key_package_is_refused(
    relay, identity, problem, make_key_package
):
    await relay.register(identity)
    # A valid MLSMessage of another kind: a PrivateMessage.
    private = MLSMessage(
        ProtocolVersion.MLS10,
        PrivateMessage(
            group_id=b"g",
            epoch=0,
            content_type=ContentType.APPLICATION,
            authenticated_data=b"",
            encrypted_sender_data=b"x",
            ciphertext=b"y",
        ),
    ).encode()
    body = {"one_time": [auth.encode_b64u(private)]}
    response = await upload_refused(
        relay, identity, body, problem, status=422, code="invalid-key-package"
    )
    assert "MLS_PRIVATE_MESSAGE" in response.json()["detail"]


async def test_another_devices_key_package_is_refused(
    relay, identity, new_identity, problem, make_key_package
):
    await relay.register(identity)
    stranger = new_identity()
    body = {"one_time": [auth.encode_b64u(make_key_package(stranger.device_private))]}
    await upload_refused(relay, identity, body, problem, status=422, code="key-package-not-owned")


async def test_a_key_package_with_a_bad_signature_is_refused(
    relay, identity, new_identity, problem, make_key_package
):
    await relay.register(identity)
    # The leaf names the device's key, but someone else signed the package.
    forged = make_key_package(identity.device_private, signer_private=new_identity().device_private)
    body = {"one_time": [auth.encode_b64u(forged)]}
    await upload_refused(relay, identity, body, problem, status=422, code="invalid-key-package")


async def test_one_bad_package_refuses_the_whole_upload(
    relay, identity, new_identity, problem, make_key_package
):
    await relay.register(identity)
    good = [auth.encode_b64u(make_key_package(identity.device_private)) for _ in range(2)]
    bad = auth.encode_b64u(make_key_package(new_identity().device_private))
    body = {"one_time": [*good, bad]}
    await upload_refused(relay, identity, body, problem, status=422, code="key-package-not-owned")
    body = {"one_time": good, "last_resort": bad}
    await upload_refused(relay, identity, body, problem, status=422, code="key-package-not-owned")


async def test_a_duplicate_key_package_is_refused(relay, identity, problem, make_key_package):
    await relay.register(identity)
    package = auth.encode_b64u(make_key_package(identity.device_private))
    await upload_refused(
        relay,
        identity,
        {"one_time": [package, package]},
        problem,
        status=409,
        code="duplicate-key-package",
    )
    assert (
        await relay.client.post(UPLOAD, json={"one_time": [package]}, auth=relay.signer(identity))
    ).is_success
    await upload_refused(
        relay, identity, {"one_time": [package]}, problem, status=409, code="duplicate-key-package"
    )


async def test_an_upload_past_the_store_limit_is_refused(relay, identity, problem, limits):
    await relay.register(identity)
    assert (await relay.upload(identity, limits.max_stored_key_packages - 1)).is_success
    before = relay.snapshot()
    response = await relay.upload(identity, 2)
    problem(response, 409, "key-package-store-full")
    relay.assert_unchanged(before, nonce_used=True)


async def test_too_many_key_packages_in_one_upload_are_refused(relay, identity, problem):
    await relay.register(identity)
    body = {"one_time": [auth.encode_b64u(bytes([i])) for i in range(101)]}
    response = await upload_refused(
        relay, identity, body, problem, status=413, code="too-many-items"
    )
    assert "100" in response.json()["detail"]


async def test_a_key_package_over_the_size_limit_is_refused(relay, identity, problem):
    await relay.register(identity)
    body = {"one_time": [auth.encode_b64u(b"\x00" * (8 * 1024 + 3))]}
    await upload_refused(relay, identity, body, problem, status=413, code="field-too-large")


async def test_a_key_package_that_is_not_base64url_is_refused(relay, identity, problem):
    await relay.register(identity)
    await upload_refused(
        relay, identity, {"one_time": ["a+b/"]}, problem, status=400, code="invalid-request"
    )


async def test_a_key_package_failing_rfc_9420_10_1_is_refused(relay, identity, problem):
    """The relay applies §10.1 and §7.3 too: expired, reused init key, unsigned leaf."""
    from dataclasses import replace

    from townsquare.mls.ciphersuite import get_cipher_suite
    from townsquare.mls.leaf_node import Lifetime

    from .conftest import NOW, device_bundle, seeded_rng

    await relay.register(identity)
    suite = get_cipher_suite(1)
    good = device_bundle(identity, seeded_rng(b"kp")).key_package

    def signed(package):  # type: ignore[no-untyped-def]
        return replace(
            package,
            signature=suite.sign_with_label(
                identity.device_private, b"KeyPackageTBS", package.to_be_signed()
            ),
        )

    def signed_leaf(leaf):  # type: ignore[no-untyped-def]
        return replace(
            leaf,
            signature=suite.sign_with_label(
                identity.device_private, b"LeafNodeTBS", leaf.to_be_signed()
            ),
        )

    expired = signed(
        replace(good, leaf_node=signed_leaf(replace(good.leaf_node, lifetime=Lifetime(0, NOW - 1))))
    )
    reused = signed(replace(good, init_key=good.leaf_node.encryption_key))
    unsigned_leaf = signed(replace(good, leaf_node=replace(good.leaf_node, signature=bytes(64))))
    for package, error in (
        (expired, "LifetimeInvalid"),
        (reused, "InitKeyReused"),
        (unsigned_leaf, "InvalidSignature"),
    ):
        data = MLSMessage(ProtocolVersion.MLS10, package).encode()
        body = {"one_time": [auth.encode_b64u(data)]}
        response = await upload_refused(
            relay, identity, body, problem, status=422, code="invalid-key-package"
        )
        assert error in response.json()["detail"], response.json()["detail"]
