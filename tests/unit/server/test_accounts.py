"""
POST /v1/accounts, POST /v1/devices, GET /v1/accounts/{account_key}/devices.

Every refused request is checked against a snapshot of the database file: a
request refused after authentication leaves only its nonce behind; one refused
before leaves nothing.
"""

from __future__ import annotations

import pytest

from townsquare import auth

pytestmark = pytest.mark.anyio

NOW = 1_767_225_600


async def test_register_account_answers_the_device(relay, identity):
    response = await relay.client.post(
        "/v1/accounts", json=identity.registration(), auth=relay.signer(identity)
    )
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {**identity.registration(), "registered_at": NOW}
    state = relay.snapshot()
    assert state["accounts"] == [(identity.account_key, NOW)]
    assert len(state["devices"]) == 1
    assert len(state["request_nonces"]) == 1


async def test_list_devices_returns_certificates_the_client_can_verify(relay, new_identity):
    first = await relay.register(new_identity())
    second = await relay.add_device(first.another_device())
    response = await relay.client.get(
        f"/v1/accounts/{first.account_id}/devices", auth=relay.signer(second)
    )
    assert response.status_code == 200
    body = response.json()
    assert body["account_key"] == first.account_id
    assert [d["certificate"]["device_key"] for d in body["devices"]] == [
        first.device_id,
        second.device_id,
    ]
    for device in body["devices"]:
        certificate = auth.DeviceCertificate(
            account_key=auth.decode_b64u(device["certificate"]["account_key"]),
            device_key=auth.decode_b64u(device["certificate"]["device_key"]),
            created_at=device["certificate"]["created_at"],
            signature=auth.decode_b64u(device["certificate"]["signature"]),
        )
        certificate.verify()


async def test_any_registered_device_may_list_another_account(relay, new_identity):
    alice = await relay.register(new_identity())
    bob = await relay.register(new_identity())
    response = await relay.client.get(
        f"/v1/accounts/{alice.account_id}/devices", auth=relay.signer(bob)
    )
    assert response.status_code == 200
    assert len(response.json()["devices"]) == 1


async def test_registering_an_existing_account_is_refused(relay, identity, problem):
    await relay.register(identity)
    before = relay.snapshot()
    newcomer = identity.another_device()
    response = await relay.client.post(
        "/v1/accounts", json=newcomer.registration(), auth=relay.signer(newcomer)
    )
    problem(response, 409, "account-exists")
    relay.assert_unchanged(before, nonce_used=True)


async def test_registering_a_device_of_another_account_is_refused(
    relay, new_identity, identity, problem
):
    await relay.register(identity)
    thief = new_identity()
    # Another account certifies the already-registered device key.
    stolen = auth.certify_device(thief.account_private, identity.device_key, NOW)
    before = relay.snapshot()
    response = await relay.client.post(
        "/v1/accounts",
        json={
            "certificate": {
                "account_key": thief.account_id,
                "device_key": identity.device_id,
                "created_at": NOW,
                "signature": auth.encode_b64u(stolen.signature),
            }
        },
        auth=relay.signer(identity),
    )
    problem(response, 409, "device-exists")
    relay.assert_unchanged(before, nonce_used=True)


async def test_a_registration_signed_by_another_key_is_refused(
    relay, identity, new_identity, problem
):
    before = relay.snapshot()
    response = await relay.client.post(
        "/v1/accounts", json=identity.registration(), auth=relay.signer(new_identity())
    )
    problem(response, 401, "signer-mismatch")
    relay.assert_unchanged(before, nonce_used=True)
    assert relay.snapshot()["accounts"] == []


@pytest.mark.parametrize("case", ["wrong-signer", "future", "account-is-device", "tampered"])
async def test_an_invalid_certificate_is_refused(relay, identity, new_identity, problem, case):
    registration = identity.registration()
    certificate = registration["certificate"]
    if case == "wrong-signer":
        other = auth.certify_device(new_identity().account_private, identity.device_key, NOW)
        certificate["signature"] = auth.encode_b64u(other.signature)
    elif case == "future":
        registration = identity.registration(created_at=NOW + 301)
    elif case == "account-is-device":
        same = auth.certify_device(identity.device_private, identity.device_key, NOW)
        registration = {
            "certificate": {
                "account_key": identity.device_id,
                "device_key": identity.device_id,
                "created_at": NOW,
                "signature": auth.encode_b64u(same.signature),
            }
        }
    else:
        certificate["created_at"] = NOW - 1
    before = relay.snapshot()
    response = await relay.client.post(
        "/v1/accounts", json=registration, auth=relay.signer(identity)
    )
    problem(response, 422, "invalid-certificate")
    relay.assert_unchanged(before, nonce_used=True)


async def test_a_certificate_dated_within_the_clock_skew_is_accepted(relay, identity):
    response = await relay.client.post(
        "/v1/accounts",
        json=identity.registration(created_at=NOW + 300),
        auth=relay.signer(identity),
    )
    assert response.status_code == 201


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda body: body.pop("certificate"), id="missing-certificate"),
        pytest.param(lambda body: body.update(extra=1), id="extra-field"),
        pytest.param(lambda body: body["certificate"].update(created_at="1"), id="time-as-text"),
        pytest.param(lambda body: body["certificate"].update(created_at=-1), id="negative-time"),
        pytest.param(lambda body: body["certificate"].update(created_at=True), id="time-as-bool"),
        pytest.param(
            lambda body: body["certificate"].update(
                account_key=body["certificate"]["account_key"] + "="
            ),
            id="padded-key",
        ),
        pytest.param(
            lambda body: body["certificate"].update(
                account_key=body["certificate"]["account_key"][:-1] + "B"
            ),
            id="non-canonical-key",
        ),
        pytest.param(
            lambda body: body["certificate"].update(signature="AAAA"), id="short-signature"
        ),
        pytest.param(lambda body: body["certificate"].update(device_key=7), id="key-as-number"),
    ],
)
async def test_a_malformed_registration_is_refused(relay, identity, problem, mutate):
    body = identity.registration()
    mutate(body)
    before = relay.snapshot()
    response = await relay.client.post("/v1/accounts", json=body, auth=relay.signer(identity))
    problem(response, 400, "invalid-request")
    # The signature was checked before the schema, so the nonce is used.
    relay.assert_unchanged(before, nonce_used=True)


async def test_a_body_that_is_not_json_is_refused(relay, identity, problem):
    before = relay.snapshot()
    response = await relay.client.post(
        "/v1/accounts",
        content=b"{not json",
        headers={"content-type": "application/json"},
        auth=relay.signer(identity),
    )
    problem(response, 400, "invalid-request")
    relay.assert_unchanged(before, nonce_used=False)


async def test_a_body_without_a_json_content_type_is_refused(relay, identity, problem):
    before = relay.snapshot()
    response = await relay.client.post(
        "/v1/accounts",
        content=b"{}",
        headers={"content-type": "text/plain"},
        auth=relay.signer(identity),
    )
    problem(response, 400, "invalid-request")
    relay.assert_unchanged(before, nonce_used=True)


async def test_add_device_then_it_can_sign(relay, identity):
    await relay.register(identity)
    phone = await relay.add_device(identity.another_device())
    response = await relay.client.get("/v1/key-packages/count", auth=relay.signer(phone))
    assert response.status_code == 200


async def test_add_device_to_an_unknown_account_is_refused(relay, identity, problem):
    before = relay.snapshot()
    response = await relay.client.post(
        "/v1/devices", json=identity.registration(), auth=relay.signer(identity)
    )
    problem(response, 404, "unknown-account")
    relay.assert_unchanged(before, nonce_used=True)


async def test_adding_a_registered_device_is_refused(relay, identity, problem):
    await relay.register(identity)
    before = relay.snapshot()
    response = await relay.client.post(
        "/v1/devices", json=identity.registration(), auth=relay.signer(identity)
    )
    problem(response, 409, "device-exists")
    relay.assert_unchanged(before, nonce_used=True)


async def test_adding_a_device_over_the_limit_is_refused(relay, identity, problem, limits):
    await relay.register(identity)
    for _ in range(limits.max_devices_per_account - 1):
        await relay.add_device(identity.another_device())
    extra = identity.another_device()
    before = relay.snapshot()
    response = await relay.client.post(
        "/v1/devices", json=extra.registration(), auth=relay.signer(extra)
    )
    problem(response, 409, "device-limit-reached")
    relay.assert_unchanged(before, nonce_used=True)


async def test_add_device_signed_by_an_existing_device_is_refused(relay, identity, problem):
    # The request must come from the new device itself: that proves it holds its key.
    await relay.register(identity)
    phone = identity.another_device()
    before = relay.snapshot()
    response = await relay.client.post(
        "/v1/devices", json=phone.registration(), auth=relay.signer(identity)
    )
    problem(response, 401, "signer-mismatch")
    relay.assert_unchanged(before, nonce_used=True)


async def test_list_devices_of_an_unknown_account_is_refused(
    relay, identity, new_identity, problem
):
    await relay.register(identity)
    before = relay.snapshot()
    response = await relay.client.get(
        f"/v1/accounts/{new_identity().account_id}/devices", auth=relay.signer(identity)
    )
    problem(response, 404, "unknown-account")
    relay.assert_unchanged(before, nonce_used=True)


@pytest.mark.parametrize("key", ["short", "A" * 42 + "B", "A" * 44])
async def test_list_devices_with_a_malformed_key_is_refused(relay, identity, problem, key):
    await relay.register(identity)
    before = relay.snapshot()
    response = await relay.client.get(f"/v1/accounts/{key}/devices", auth=relay.signer(identity))
    problem(response, 400, "invalid-request")
    relay.assert_unchanged(before, nonce_used=True)
