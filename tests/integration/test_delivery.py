"""
Delivery through the real ``townsquare serve``: MLS groups, Welcomes, messages, removal, push.

Two devices run real ``townsquare.mls.group.Group`` clients over HTTP (signed
with the real clock) and the WebSocket (the ``websockets`` client), against
a relay subprocess on SQLite. Afterwards the relay's files are searched for
the words sent: the relay holds ciphertext only.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from townsquare import auth
from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.credentials import BasicCredential
from townsquare.mls.framing import MLSMessage
from townsquare.mls.group import Group
from townsquare.mls.key_package import KeyPackageBundle, generate_key_package, key_package_ref
from townsquare.mls.leaf_node import Lifetime
from townsquare.mls.proposals import Add, Remove
from townsquare.mls.registries import ProtocolVersion

pytestmark = pytest.mark.integration

RECEIVE_TIMEOUT_SECONDS = 10.0
SUITE = get_cipher_suite(1)


def b64u(data: bytes) -> str:
    return auth.encode_b64u(data)


def seeded_rng(seed: bytes) -> Callable[[int], bytes]:
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
            counter += 1
        return out[:n]

    return rng


class Device:
    """One device: its identity, its KeyPackage bundles, and an HTTP client for the relay."""

    def __init__(self, identity, client: httpx.Client, rng: Callable[[int], bytes]) -> None:
        self.identity = identity
        self.client = client
        self.rng = rng
        self.bundles: dict[bytes, KeyPackageBundle] = {}

    def register(self) -> Device:
        response = self.client.post(
            "/v1/accounts", json=self.identity.registration(), auth=self.identity.signer()
        )
        assert response.status_code == 201, response.text
        return self

    def bundle(self) -> KeyPackageBundle:
        bundle = generate_key_package(
            SUITE,
            credential=BasicCredential(self.identity.device_key),
            signature_private_key=self.identity.device_private,
            rng=self.rng,
            lifetime=Lifetime(0, 2**64 - 1),
        )
        self.bundles[key_package_ref(SUITE, bundle.key_package)] = bundle
        return bundle

    def upload_key_packages(self, count: int) -> None:
        packages = [
            b64u(MLSMessage(ProtocolVersion.MLS10, self.bundle().key_package).encode())
            for _ in range(count)
        ]
        response = self.client.post(
            "/v1/key-packages", json={"one_time": packages}, auth=self.identity.signer()
        )
        assert response.status_code == 200, response.text

    def claim(self, other: Device):
        response = self.client.post(
            f"/v1/devices/{other.identity.device_id}/key-packages/claim",
            auth=self.identity.signer(),
        )
        assert response.status_code == 200, response.text
        return MLSMessage.decode(auth.decode_b64u(response.json()["key_package"])).body

    def post(self, group_id: bytes, message: bytes, **extra: bytes | None) -> httpx.Response:
        body = {"client_message_id": b64u(secrets.token_bytes(16)), "message": b64u(message)}
        body.update({k: b64u(v) for k, v in extra.items() if v is not None})
        return self.client.post(
            f"/v1/groups/{b64u(group_id)}/messages", json=body, auth=self.identity.signer()
        )

    def fetch(self, group_id: bytes, after: int = 0) -> httpx.Response:
        return self.client.get(
            f"/v1/groups/{b64u(group_id)}/messages?after={after}", auth=self.identity.signer()
        )

    def join(self) -> Group:
        response = self.client.get("/v1/welcomes", auth=self.identity.signer())
        assert response.status_code == 200, response.text
        (welcome,) = response.json()["welcomes"]
        welcome_bytes = auth.decode_b64u(welcome["welcome"])
        refs = {s.new_member for s in MLSMessage.decode(welcome_bytes).body.secrets}
        (ref,) = refs & set(self.bundles)
        group = Group.join(
            welcome_bytes,
            self.bundles[ref],
            ratchet_tree=auth.decode_b64u(welcome["ratchet_tree"]),
        )
        ack = self.client.post(
            f"/v1/groups/{b64u(group.group_id)}/cursor",
            json={"seq": welcome["commit_seq"]},
            auth=self.identity.signer(),
        )
        assert ack.status_code == 200, ack.text
        return group


@contextmanager
def push(relay_url: str, identity) -> Iterator[ClientConnection]:
    """A WebSocket authenticated as the device."""
    with connect(relay_url.replace("http://", "ws://") + "/v1/ws") as ws:
        challenge = json.loads(ws.recv(timeout=RECEIVE_TIMEOUT_SECONDS))
        assert challenge["type"] == "challenge"
        headers = auth.sign_request(
            device_private_key=identity.device_private,
            method="GET",
            target="/v1/ws",
            body=auth.decode_b64u(challenge["challenge"]),
            timestamp=int(time.time()),
            nonce=secrets.token_bytes(auth.NONCE_BYTES),
        )
        ws.send(json.dumps({"type": "auth", "headers": headers}))
        assert json.loads(ws.recv(timeout=RECEIVE_TIMEOUT_SECONDS)) == {
            "type": "ready",
            "device": identity.device_id,
        }
        yield ws


def receive(ws: ClientConnection) -> dict[str, object]:
    frame: dict[str, object] = json.loads(ws.recv(timeout=RECEIVE_TIMEOUT_SECONDS))
    return frame


def subscribe(ws: ClientConnection, group_id: bytes) -> dict[str, object]:
    ws.send(json.dumps({"type": "subscribe", "groups": [b64u(group_id)]}))
    reply = receive(ws)
    assert reply["type"] == "subscribed"
    return reply


@pytest.fixture
def devices(relay_process, new_identity, request) -> Iterator[Callable[[], Device]]:
    rng = seeded_rng(request.node.nodeid.encode())
    clients: list[httpx.Client] = []

    def make() -> Device:
        client = httpx.Client(base_url=relay_process.url, timeout=10.0)
        clients.append(client)
        return Device(new_identity(), client, rng).register()

    yield make
    for client in clients:
        client.close()


def test_a_group_conversation_through_the_relay(relay_process, devices):
    alice, bob = devices(), devices()
    bob.upload_key_packages(2)
    group_a = Group.create(alice.bundle(), group_id=alice.rng(32), rng=alice.rng)
    group_id = group_a.group_id
    created = alice.client.post(
        "/v1/groups",
        json={"group_info": b64u(group_a.group_info())},
        auth=alice.identity.signer(),
    )
    assert created.status_code == 201, created.text
    canaries = ["canary-" + secrets.token_hex(8), "金丝雀" + secrets.token_hex(4)]

    with (
        push(relay_process.url, alice.identity) as alice_ws,
        push(relay_process.url, bob.identity) as bob_ws,
    ):
        assert subscribe(alice_ws, group_id)["groups"] == [b64u(group_id)]

        # Alice adds Bob with a KeyPackage claimed from the relay; his device is told.
        add = group_a.commit(rng=alice.rng, proposals=[Add(alice.claim(bob))])
        posted = alice.post(group_id, add.commit, welcome=add.welcome, group_info=add.group_info)
        assert posted.status_code == 201, posted.text
        group_a.merge(add.staged)
        assert receive(bob_ws) == {"type": "welcome", "group": b64u(group_id), "seq": 1}
        assert receive(alice_ws)["kind"] == "commit"
        group_b = bob.join()
        assert subscribe(bob_ws, group_id)["groups"] == [b64u(group_id)]

        # Both talk; each is pushed the other's message whole, and decrypts it.
        hello = group_a.encrypt(canaries[0].encode(), rng=alice.rng)
        assert alice.post(group_id, hello).status_code == 201
        for ws in (alice_ws, bob_ws):
            pushed = receive(ws)
            assert (pushed["type"], pushed["seq"], pushed["kind"]) == ("message", 2, "application")
        assert group_b.process(auth.decode_b64u(pushed["message"])).data == canaries[0].encode()
        reply = group_b.encrypt(canaries[1].encode(), rng=bob.rng)
        assert bob.post(group_id, reply).status_code == 201
        pushed = receive(alice_ws)
        assert group_a.process(auth.decode_b64u(pushed["message"])).data == canaries[1].encode()
        assert receive(bob_ws)["seq"] == 3

        # Bob's own fetch starts after the commit that added him.
        page = bob.fetch(group_id).json()
        assert [m["seq"] for m in page["messages"]] == [2, 3]

        # Alice removes Bob: his device is told, then hears and reads nothing more.
        remove = group_a.commit(rng=alice.rng, proposals=[Remove(group_b.own_leaf)])
        response = alice.post(group_id, remove.commit, group_info=remove.group_info)
        assert response.status_code == 201, response.text
        group_a.merge(remove.staged)
        assert receive(bob_ws) == {"type": "removed", "group": b64u(group_id), "seq": 4}
        assert receive(alice_ws)["seq"] == 4
        after = group_a.encrypt(b"after bob left", rng=alice.rng)
        assert alice.post(group_id, after).status_code == 201
        assert receive(alice_ws)["seq"] == 5
        refused = subscribe(bob_ws, group_id)
        assert refused["refused"] == [{"group": b64u(group_id), "code": "not-a-member"}]
        assert bob.fetch(group_id).json()["code"] == "not-a-member"
        with pytest.raises(TimeoutError):
            bob_ws.recv(timeout=0.2)

    # Nothing readable on the relay: not the words, in the database, its WAL or the log.
    for path in [*relay_process.data_dir.iterdir(), relay_process.log_path]:
        data = path.read_bytes()
        for canary in canaries:
            assert canary.encode() not in data, path


def test_two_commits_racing_for_one_epoch(relay_process, devices):
    alice, bob = devices(), devices()
    group_a = Group.create(alice.bundle(), group_id=alice.rng(32), rng=alice.rng)
    response = alice.client.post(
        "/v1/groups", json={"group_info": b64u(group_a.group_info())}, auth=alice.identity.signer()
    )
    assert response.status_code == 201
    add = group_a.commit(rng=alice.rng, proposals=[Add(bob.bundle().key_package)])
    assert alice.post(
        group_a.group_id, add.commit, welcome=add.welcome, group_info=add.group_info
    ).is_success
    group_a.merge(add.staged)
    group_b = bob.join()
    racers = [
        (alice, group_a.commit(rng=alice.rng, force_path=True)),
        (bob, group_b.commit(rng=bob.rng, force_path=True)),
    ]

    def send(racer):
        device, pending = racer
        return device.post(group_a.group_id, pending.commit, group_info=pending.group_info)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        responses = list(pool.map(send, racers))
    assert sorted(r.status_code for r in responses) == [201, 409]
    won = next(i for i, r in enumerate(responses) if r.status_code == 201)
    conflict = responses[1 - won].json()
    assert conflict["code"] == "commit-conflict"
    assert conflict["winner"] == {
        "seq": 2,
        "epoch": 1,
        "message": b64u(racers[won][1].commit),
    }


def test_a_websocket_with_a_bad_signature_is_closed(relay_process, devices):
    alice = devices()
    with connect(relay_process.url.replace("http://", "ws://") + "/v1/ws") as ws:
        receive(ws)
        headers = auth.sign_request(
            device_private_key=alice.identity.device_private,
            method="GET",
            target="/v1/ws",
            body=b"not the challenge",
            timestamp=int(time.time()),
            nonce=secrets.token_bytes(auth.NONCE_BYTES),
        )
        ws.send(json.dumps({"type": "auth", "headers": headers}))
        error = receive(ws)
        assert error["type"] == "error"
        assert error["problem"]["code"] == "bad-signature"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=RECEIVE_TIMEOUT_SECONDS)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401
