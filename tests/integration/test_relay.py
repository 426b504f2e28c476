"""
The real ``townsquare serve`` over HTTP: registration, signatures, limits, KeyPackages, restarts.

Every refused request is checked for its RFC 9457 problem type and against a
snapshot of the relay's database file, read while the relay runs.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import signal
import sqlite3
import subprocess
import sys

import httpx
import pytest

from townsquare import auth
from townsquare.server.storage import DATABASE_FILE_NAME

pytestmark = pytest.mark.integration

COUNT = "/v1/key-packages/count"
UPLOAD = "/v1/key-packages"


def register(client, identity) -> None:
    response = client.post("/v1/accounts", json=identity.registration(), auth=identity.signer())
    assert response.status_code == 201, response.text


def add_device(client, identity) -> None:
    response = client.post("/v1/devices", json=identity.registration(), auth=identity.signer())
    assert response.status_code == 201, response.text


def upload(client, identity, packages, *, last_resort=None):
    body = {"one_time": [auth.encode_b64u(p) for p in packages]}
    if last_resort is not None:
        body["last_resort"] = auth.encode_b64u(last_resort)
    return client.post(UPLOAD, json=body, auth=identity.signer())


def claim(client, claimer, owner):
    return client.post(f"/v1/devices/{owner.device_id}/key-packages/claim", auth=claimer.signer())


def test_healthz_and_openapi(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    spec = client.get("/openapi.json").json()
    assert spec["info"]["title"] == "Townsquare relay"
    assert "/v1/accounts" in spec["paths"]


def test_register_add_a_device_and_list_them(client, new_identity):
    alice = new_identity()
    register(client, alice)
    phone = alice.another_device()
    add_device(client, phone)
    response = client.get(f"/v1/accounts/{alice.account_id}/devices", auth=phone.signer())
    assert response.status_code == 200
    devices = response.json()["devices"]
    assert [d["certificate"]["device_key"] for d in devices] == [alice.device_id, phone.device_id]


def test_a_replayed_request_is_refused(client, relay_process, new_identity, problem):
    alice = new_identity()
    register(client, alice)
    signer = alice.signer()
    assert client.get(COUNT, auth=signer).status_code == 200
    before = relay_process.snapshot()
    problem(client.get(COUNT, headers=signer.last_headers), 409, "replayed-request")
    assert relay_process.snapshot() == before


@pytest.mark.parametrize("offset", [-400, 400])
def test_a_stale_timestamp_is_refused(client, relay_process, new_identity, problem, offset):
    alice = new_identity()
    register(client, alice)
    before = relay_process.snapshot()
    problem(client.get(COUNT, auth=alice.signer(offset)), 401, "stale-timestamp")
    assert relay_process.snapshot() == before


def test_an_unknown_device_is_refused(client, relay_process, new_identity, problem):
    before = relay_process.snapshot()
    problem(client.get(COUNT, auth=new_identity().signer()), 401, "unknown-device")
    assert relay_process.snapshot() == before


def test_a_bad_signature_is_refused(client, relay_process, new_identity, problem):
    alice = new_identity()
    register(client, alice)
    signer = alice.signer()
    client.get(COUNT, auth=signer)
    headers = dict(signer.last_headers)
    headers["Townsquare-Nonce"] = auth.encode_b64u(b"\x09" * 16)
    before = relay_process.snapshot()
    problem(client.get(COUNT, headers=headers), 401, "bad-signature")
    assert relay_process.snapshot() == before


def test_an_oversized_body_is_refused(client, relay_process, new_identity, problem):
    alice = new_identity()
    register(client, alice)
    before = relay_process.snapshot()
    body = b'{"one_time": ["' + b"A" * (256 * 1024) + b'"]}'
    response = client.post(
        UPLOAD, content=body, headers={"content-type": "application/json"}, auth=alice.signer()
    )
    problem(response, 413, "body-too-large")
    assert relay_process.snapshot() == before


def test_an_oversized_streamed_body_is_refused(client, relay_process, problem):
    before = relay_process.snapshot()

    def chunks():
        for _ in range(300):
            yield b"x" * 1024

    response = client.post(
        "/v1/accounts", content=chunks(), headers={"content-type": "application/json"}
    )
    problem(response, 413, "body-too-large")
    assert relay_process.snapshot() == before


def test_key_packages_upload_claim_last_resort_and_draining(
    client, relay_process, new_identity, make_key_package, problem
):
    owner, claimer = new_identity(), new_identity()
    register(client, owner)
    register(client, claimer)
    one_time = [make_key_package(owner.device_private) for _ in range(3)]
    last_resort = make_key_package(owner.device_private)
    response = upload(client, owner, one_time, last_resort=last_resort)
    assert response.json() == {"one_time": 3, "last_resort": True}

    handed_out = [claim(client, claimer, owner).json() for _ in range(5)]
    assert [auth.decode_b64u(h["key_package"]) for h in handed_out] == [
        *one_time,
        last_resort,
        last_resort,
    ]
    assert [h["last_resort"] for h in handed_out] == [False, False, False, True, True]
    assert client.get(COUNT, auth=owner.signer()).json() == {"one_time": 0, "last_resort": True}

    # Topping up puts one-time packages ahead of the last-resort one again.
    fresh = make_key_package(owner.device_private)
    assert upload(client, owner, [fresh]).json() == {"one_time": 1, "last_resort": True}
    assert auth.decode_b64u(claim(client, claimer, owner).json()["key_package"]) == fresh

    # Another device's package, or bytes that are not a KeyPackage, change nothing.
    stranger = new_identity()
    before = relay_process.snapshot()
    response = upload(client, owner, [make_key_package(stranger.device_private)])
    problem(response, 422, "key-package-not-owned")
    relay_process.assert_unchanged(before, nonce_used=True)
    before = relay_process.snapshot()
    problem(upload(client, owner, [b"not mls"]), 422, "invalid-key-package")
    relay_process.assert_unchanged(before, nonce_used=True)


def test_a_device_with_no_key_package_is_exhausted(client, relay_process, new_identity, problem):
    owner, claimer = new_identity(), new_identity()
    register(client, owner)
    register(client, claimer)
    before = relay_process.snapshot()
    problem(claim(client, claimer, owner), 409, "key-packages-exhausted")
    relay_process.assert_unchanged(before, nonce_used=True, quota_used=True)


def test_concurrent_claims_never_hand_out_a_package_twice(
    relay_process, new_identity, make_key_package
):
    owner = new_identity()
    claimers = [new_identity() for _ in range(4)]
    with httpx.Client(base_url=relay_process.url, timeout=10.0) as setup:
        for identity in (owner, *claimers):
            register(setup, identity)
        packages = [make_key_package(owner.device_private) for _ in range(16)]
        last_resort = make_key_package(owner.device_private)
        assert upload(setup, owner, packages, last_resort=last_resort).status_code == 200

    def claim_with_own_connection(index):
        with httpx.Client(base_url=relay_process.url, timeout=10.0) as own:
            response = claim(own, claimers[index % len(claimers)], owner)
            assert response.status_code == 200, response.text
            return response.json()

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(claim_with_own_connection, range(24)))
    one_time = [auth.decode_b64u(r["key_package"]) for r in results if not r["last_resort"]]
    assert sorted(one_time) == sorted(packages)
    assert [auth.decode_b64u(r["key_package"]) for r in results if r["last_resort"]] == [
        last_resort
    ] * 8


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_a_restart_keeps_the_data(own_relay_process, new_identity, make_key_package, how):
    relay = own_relay_process
    alice = new_identity()
    with httpx.Client(base_url=relay.url, timeout=10.0) as client:
        register(client, alice)
        packages = [make_key_package(alice.device_private) for _ in range(2)]
        assert upload(client, alice, packages).status_code == 200
    if how == "sigterm":
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert relay.stop() in {0, -signal.SIGTERM}
        assert "Application shutdown complete" in relay.log()
    else:
        relay.kill()
    relay.start()
    with httpx.Client(base_url=relay.url, timeout=10.0) as client:
        assert client.get(COUNT, auth=alice.signer()).json() == {
            "one_time": 2,
            "last_resort": False,
        }
        claimed = claim(client, alice, alice).json()
        assert auth.decode_b64u(claimed["key_package"]) == packages[0]


def test_ctrl_c_stops_the_relay_cleanly(own_relay_process):
    stop_signal = signal.SIGINT
    relay = own_relay_process
    assert relay.process is not None
    relay.process.send_signal(stop_signal)
    # uvicorn shuts down gracefully (the lifespan closes the store), then
    # re-raises the signal it caught, as a well-behaved process does.
    assert relay.process.wait(timeout=15) in {0, -stop_signal}
    relay.process = None
    assert "Application shutdown complete" in relay.log()


def test_a_database_from_a_newer_relay_stops_the_start(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with contextlib.closing(sqlite3.connect(data / DATABASE_FILE_NAME)) as connection:
        connection.execute(
            "CREATE TABLE schema_migrations"
            " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
        )
        connection.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
        connection.commit()
    result = subprocess.run(
        [sys.executable, "-m", "townsquare.cli", "serve", "--data", str(data), "--port", "0"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert b"schema version 999" in result.stdout + result.stderr
