"""
/v1/ws: the challenge, authentication, subscriptions and the notices a device is pushed.

Driven in process by Starlette's TestClient (HTTP and WebSocket on one app);
the frames parser is also tested on its own.
"""

from __future__ import annotations

import contextlib
import secrets
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from starlette.exceptions import StarletteDeprecationWarning
from starlette.websockets import WebSocketDisconnect

with warnings.catch_warnings():
    # Starlette 1.x asks for its httpx fork (httpx2) and warns when it runs on httpx,
    # which the project pins; the test client works the same on either.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from townsquare import auth
from townsquare.mls.proposals import Add, Remove
from townsquare.server import Limits, Settings, create_app
from townsquare.server.errors import FieldTooLarge, InvalidRequest, TooManyItems
from townsquare.server.fanout import Lagged, MessageNotice, RemovedNotice, WelcomeNotice
from townsquare.server.storage import MessageKind, SQLiteStorage
from townsquare.server.websocket import (
    AuthFrame,
    SubscribeFrame,
    UnsubscribeFrame,
    notice_frame,
    parse_client_frame,
)

NOW = 1_767_225_600


class Clock:
    def now(self) -> int:
        return NOW


def b64u(data: bytes) -> str:
    return auth.encode_b64u(data)


@dataclass
class App:
    client: TestClient
    sign: object

    def signer(self, identity):
        return self.sign(identity.device_private, Clock().now)

    def register(self, identity):
        response = self.client.post(
            "/v1/accounts", json=identity.registration(), auth=self.signer(identity)
        )
        assert response.status_code == 201, response.text
        return identity

    def post(self, identity, group_id, message, *, welcome=None, group_info=None):
        body = {"client_message_id": b64u(secrets.token_bytes(16)), "message": b64u(message)}
        if welcome is not None:
            body["welcome"] = b64u(welcome)
        if group_info is not None:
            body["group_info"] = b64u(group_info)
        response = self.client.post(
            f"/v1/groups/{b64u(group_id)}/messages", json=body, auth=self.signer(identity)
        )
        assert response.status_code == 201, response.text
        return response.json()

    def commit(self, identity, group, pending):
        posted = self.post(
            identity,
            group.group_id,
            pending.commit,
            welcome=pending.welcome,
            group_info=pending.group_info,
        )
        group.merge(pending.staged)
        return posted

    def create(self, identity, group):
        response = self.client.post(
            "/v1/groups",
            json={"group_info": b64u(group.group_info())},
            auth=self.signer(identity),
        )
        assert response.status_code == 201, response.text

    @contextlib.contextmanager
    def connect(self, identity, *, groups=()) -> Iterator[object]:
        with self.client.websocket_connect("/v1/ws") as ws:
            authenticate(ws, identity)
            assert ws.receive_json() == {"type": "ready", "device": identity.device_id}
            if groups:
                ws.send_json({"type": "subscribe", "groups": [b64u(g) for g in groups]})
                reply = ws.receive_json()
                assert reply == {
                    "type": "subscribed",
                    "groups": [b64u(g) for g in groups],
                    "refused": [],
                }
            yield ws


def authenticate(ws, identity, *, timestamp=NOW, body=None):
    challenge = ws.receive_json()
    assert challenge["type"] == "challenge"
    signed = auth.decode_b64u(challenge["challenge"])
    assert len(signed) == 32
    headers = auth.sign_request(
        device_private_key=identity.device_private,
        method="GET",
        target="/v1/ws",
        body=signed if body is None else body,
        timestamp=timestamp,
        nonce=secrets.token_bytes(auth.NONCE_BYTES),
    )
    ws.send_json({"type": "auth", "headers": headers})


def closed_with(ws) -> tuple[int, dict[str, object]]:
    """The problem in the error frame, and the close code that follows it."""
    frame = ws.receive_json()
    assert frame["type"] == "error"
    problem = frame["problem"]
    assert problem["type"] == f"urn:townsquare:problem:{problem['code']}"
    with pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    return closed.value.code, problem


@pytest.fixture
def app(tmp_path, sign) -> Iterator[App]:
    limits = Limits(websocket_auth_timeout_seconds=0.2, websocket_queue_size=4)
    application = create_app(
        Settings(data_dir=tmp_path, limits=limits), storage=SQLiteStorage(tmp_path), clock=Clock()
    )
    with TestClient(application, base_url="http://relay.test") as client:
        yield App(client=client, sign=sign)


# -- Frames ----------------------------------------------------------------------------------


def test_parse_client_frames():
    group = b"g" * 16
    assert parse_client_frame('{"type":"subscribe","groups":["' + b64u(group) + '"]}') == (
        SubscribeFrame((group,))
    )
    assert parse_client_frame('{"type":"unsubscribe","groups":[]}') == UnsubscribeFrame(())
    frame = parse_client_frame('{"type":"auth","headers":{"Townsquare-Device":"x"}}')
    assert frame == AuthFrame({"townsquare-device": ("x",)})


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("not json", InvalidRequest),
        ("[]", InvalidRequest),
        ('{"type":"hello"}', InvalidRequest),
        ('{"type":"subscribe","groups":"x"}', InvalidRequest),
        ('{"type":"subscribe","groups":["AAAA"]}', InvalidRequest),
        ('{"type":"subscribe","groups":[],"extra":1}', InvalidRequest),
        ('{"type":"auth","headers":{"a":1}}', InvalidRequest),
        ('{"type":"subscribe","groups":[' + ",".join(['"x"'] * 257) + "]}", TooManyItems),
        ('{"type":"auth","headers":{"a":"' + "x" * 70_000 + '"}}', FieldTooLarge),
    ],
)
def test_malformed_frames_are_refused(text, error):
    with pytest.raises(error):
        parse_client_frame(text)


def test_notice_frames():
    group = b"g" * 16
    message = MessageNotice(
        group_id=group, seq=3, epoch=1, kind=MessageKind.APPLICATION, message=b"m"
    )
    assert notice_frame(message) == {
        "type": "message",
        "group": b64u(group),
        "seq": 3,
        "epoch": 1,
        "kind": "application",
        "message": b64u(b"m"),
    }
    large = MessageNotice(group_id=group, seq=4, epoch=1, kind=MessageKind.COMMIT, message=None)
    assert "message" not in notice_frame(large)
    assert notice_frame(RemovedNotice(group_id=group, seq=5)) == {
        "type": "removed",
        "group": b64u(group),
        "seq": 5,
    }
    assert notice_frame(WelcomeNotice(group_id=group, seq=6))["type"] == "welcome"
    assert notice_frame(Lagged()) == {"type": "lagged"}


# -- Authentication --------------------------------------------------------------------------


def test_a_device_authenticates_by_signing_the_challenge(app, new_identity):
    alice = app.register(new_identity())
    with app.connect(alice):
        pass


@pytest.mark.parametrize(
    ("how", "code"),
    [
        ("other-challenge", "bad-signature"),
        ("stale", "stale-timestamp"),
        ("unregistered", "unknown-device"),
    ],
)
def test_a_failed_authentication_closes_with_4401(app, new_identity, how, code):
    alice = new_identity() if how == "unregistered" else app.register(new_identity())
    with app.client.websocket_connect("/v1/ws") as ws:
        authenticate(
            ws,
            alice,
            timestamp=NOW - 400 if how == "stale" else NOW,
            body=b"\x00" * 32 if how == "other-challenge" else None,
        )
        close_code, error = closed_with(ws)
    assert close_code == 4401
    assert error["code"] == code
    assert error["status"] == 401


@pytest.mark.parametrize(
    "frame",
    [{"type": "subscribe", "groups": []}, {"type": "auth"}, {"type": "auth", "headers": {}}],
)
def test_a_first_frame_that_is_not_a_valid_auth_closes(app, frame):
    with app.client.websocket_connect("/v1/ws") as ws:
        ws.receive_json()
        ws.send_json(frame)
        close_code, error = closed_with(ws)
    assert close_code in (4400, 4401)
    assert error["code"] in ("invalid-request", "authentication-required")


def test_a_binary_frame_closes_with_4400(app):
    with app.client.websocket_connect("/v1/ws") as ws:
        ws.receive_json()
        ws.send_bytes(b"\x00")
        close_code, error = closed_with(ws)
    assert (close_code, error["code"]) == (4400, "invalid-request")


def test_no_auth_in_time_closes_with_4408(app):
    with app.client.websocket_connect("/v1/ws") as ws:
        ws.receive_json()
        close_code, error = closed_with(ws)
    assert close_code == 4408
    assert error["code"] == "invalid-request"


def test_a_second_auth_closes_the_connection(app, new_identity):
    alice = app.register(new_identity())
    with app.connect(alice) as ws:
        ws.send_json({"type": "auth", "headers": {}})
        close_code, error = closed_with(ws)
    assert (close_code, error["code"]) == (4400, "invalid-request")


# -- Subscriptions and notices ---------------------------------------------------------------


def test_members_are_pushed_messages_welcomes_and_removals(app, mls, new_identity):
    alice = app.register(new_identity())
    bob = app.register(new_identity())
    group_a = mls.group(alice)
    app.create(alice, group_a)
    with app.connect(alice, groups=[group_a.group_id]) as alice_ws, app.connect(bob) as bob_ws:
        add = group_a.commit(rng=mls.rng, proposals=[Add(mls.bundle(bob).key_package)])
        posted = app.commit(alice, group_a, add)
        assert bob_ws.receive_json() == {
            "type": "welcome",
            "group": b64u(group_a.group_id),
            "seq": posted["seq"],
        }
        commit_notice = alice_ws.receive_json()
        assert commit_notice["kind"] == "commit"
        assert commit_notice["seq"] == 1
        # Commits up to push_inline_max_bytes travel whole.
        assert auth.decode_b64u(commit_notice["message"]) == add.commit

        bob_ws.send_json({"type": "subscribe", "groups": [b64u(group_a.group_id)]})
        assert bob_ws.receive_json()["groups"] == [b64u(group_a.group_id)]
        hello = group_a.encrypt(b"hello", rng=mls.rng)
        app.post(alice, group_a.group_id, hello)
        for ws in (alice_ws, bob_ws):
            pushed = ws.receive_json()
            assert pushed == {
                "type": "message",
                "group": b64u(group_a.group_id),
                "seq": 2,
                "epoch": 1,
                "kind": "application",
                "message": b64u(hello),
            }

        remove = group_a.commit(rng=mls.rng, proposals=[Remove(1)])
        app.commit(alice, group_a, remove)
        assert bob_ws.receive_json() == {
            "type": "removed",
            "group": b64u(group_a.group_id),
            "seq": 3,
        }
        assert alice_ws.receive_json()["seq"] == 3
        app.post(alice, group_a.group_id, group_a.encrypt(b"after bob", rng=mls.rng))
        assert alice_ws.receive_json()["seq"] == 4
        # Bob hears nothing more; subscribing again is refused.
        bob_ws.send_json({"type": "subscribe", "groups": [b64u(group_a.group_id)]})
        assert bob_ws.receive_json() == {
            "type": "subscribed",
            "groups": [],
            "refused": [{"group": b64u(group_a.group_id), "code": "not-a-member"}],
        }


def test_subscribing_to_an_unknown_group_or_as_a_stranger_is_refused(app, mls, new_identity):
    alice = app.register(new_identity())
    carol = app.register(new_identity())
    group = mls.group(alice)
    app.create(alice, group)
    unknown = b"u" * 16
    with app.connect(carol) as ws:
        ws.send_json({"type": "subscribe", "groups": [b64u(group.group_id), b64u(unknown)]})
        assert ws.receive_json() == {
            "type": "subscribed",
            "groups": [],
            "refused": [
                {"group": b64u(group.group_id), "code": "not-a-member"},
                {"group": b64u(unknown), "code": "unknown-group"},
            ],
        }


def test_unsubscribe_stops_the_notices(app, mls, new_identity):
    alice = app.register(new_identity())
    group = mls.group(alice)
    app.create(alice, group)
    with app.connect(alice, groups=[group.group_id]) as ws:
        ws.send_json({"type": "unsubscribe", "groups": [b64u(group.group_id)]})
        assert ws.receive_json() == {"type": "unsubscribed", "groups": [b64u(group.group_id)]}
        app.post(alice, group.group_id, group.encrypt(b"x", rng=mls.rng))
        ws.send_json({"type": "subscribe", "groups": []})
        assert ws.receive_json() == {"type": "subscribed", "groups": [], "refused": []}
