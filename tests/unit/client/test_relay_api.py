"""
The relay API as values: request shapes, and answers that are malformed or out of order.
"""

from __future__ import annotations

import json

import pytest

from townsquare import auth
from townsquare.client.core import relay_api as api
from townsquare.client.errors import ProtocolError


def answer(value: object, status: int = 200, content_type: str = api.JSON) -> api.Response:
    body = value if isinstance(value, bytes) else json.dumps(value).encode()
    return api.Response(status=status, body=body, content_type=content_type)


def b64(data: bytes) -> str:
    return auth.encode_b64u(data)


def test_requests_have_the_documented_shape() -> None:
    group_id = b"\x01" * 16
    post = api.post_message(1, group_id, b"\x02" * 16, b"mls", welcome=b"w", group_info=b"gi")
    assert post.method == "POST"
    assert post.target == f"/v1/groups/{b64(group_id)}/messages"
    assert json.loads(post.body) == {
        "client_message_id": b64(b"\x02" * 16),
        "message": b64(b"mls"),
        "welcome": b64(b"w"),
        "group_info": b64(b"gi"),
    }
    assert post.content_type == "application/json"
    plain = api.post_message(2, group_id, b"\x02" * 16, b"mls")
    assert set(json.loads(plain.body)) == {"client_message_id", "message"}
    fetch = api.fetch_log(3, group_id, 41, 100)
    assert fetch.target == f"/v1/groups/{b64(group_id)}/messages?after=41&limit=100"
    assert fetch.body == b""
    assert fetch.content_type is None
    cursor = api.ack_cursor(4, group_id, 7)
    assert (cursor.method, json.loads(cursor.body)) == ("POST", {"seq": 7})
    assert json.loads(api.create_group(5, b"gi").body) == {"group_info": b64(b"gi")}
    upload = api.upload_key_packages(6, [b"a"], None)
    assert json.loads(upload.body) == {"one_time": [b64(b"a")]}
    account = b"\x03" * 32
    claim = api.claim_account_key_packages(7, account)
    assert claim.target == f"/v1/accounts/{b64(account)}/key-packages/claim"


def test_log_pages_are_read_in_order() -> None:
    page = api.parse_log(
        answer(
            {
                "group_id": "x",
                "epoch": 1,
                "last_seq": 9,
                "messages": [{"seq": 5, "message": b64(b"a")}, {"seq": 7, "message": b64(b"b")}],
            }
        ),
        after=4,
    )
    assert [e.seq for e in page.entries] == [5, 7]
    assert page.more
    empty = api.parse_log(answer({"last_seq": 4, "messages": []}), after=4)
    assert not empty.more


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        [],
        {"messages": []},
        {"last_seq": 3, "messages": [{"seq": 3, "message": "AA"}]},
        {"last_seq": 9, "messages": [{"seq": 6, "message": "AA"}, {"seq": 6, "message": "AA"}]},
        {"last_seq": 9, "messages": [{"seq": "6", "message": "AA"}]},
        {"last_seq": 9, "messages": [{"seq": 6, "message": "A="}]},
        {"last_seq": -1, "messages": []},
        {"last_seq": 9, "messages": ["x"]},
        {"last_seq": True, "messages": []},
    ],
    ids=lambda v: str(v)[:40],
)
def test_malformed_log_pages_are_protocol_errors(value: object) -> None:
    with pytest.raises(ProtocolError):
        api.parse_log(answer(value), after=3)


def test_claims_welcomes_and_counts() -> None:
    claimed, exhausted = api.parse_claimed(
        answer(
            {
                "key_packages": [
                    {"device_key": b64(b"d" * 32), "key_package": b64(b"kp"), "last_resort": True}
                ],
                "exhausted": [b64(b"e" * 32)],
            }
        )
    )
    assert claimed == [api.ClaimedKeyPackage(b"d" * 32, b"kp", last_resort=True)]
    assert exhausted == [b"e" * 32]
    with pytest.raises(ProtocolError):
        api.parse_claimed(answer({"key_packages": [], "exhausted": ["!"]}))
    with pytest.raises(ProtocolError):
        api.parse_claimed(answer({"key_packages": [], "exhausted": [1]}))
    welcomes = api.parse_welcomes(
        answer(
            {
                "welcomes": [
                    {"group_id": b64(b"g" * 16), "commit_seq": 3, "welcome": b64(b"w")},
                    {
                        "group_id": b64(b"h" * 16),
                        "commit_seq": 4,
                        "welcome": b64(b"w"),
                        "ratchet_tree": b64(b"t"),
                    },
                ]
            }
        )
    )
    assert [(w.commit_seq, w.ratchet_tree) for w in welcomes] == [(3, None), (4, b"t")]
    assert api.parse_counts(answer({"one_time": 3, "last_resort": False})) == (
        api.KeyPackageCounts(3, last_resort=False)
    )
    with pytest.raises(ProtocolError):
        api.parse_counts(answer({"one_time": 3, "last_resort": "yes"}))
    assert api.accepted_seq(answer({"seq": 12, "epoch": 1})) == 12


def test_problems_are_read_whatever_the_body() -> None:
    problem = api.parse_problem(
        answer({"code": "stale-epoch", "detail": "d", "epoch": 3}, 409, api.PROBLEM_JSON)
    )
    assert (problem.status, problem.code, problem.detail) == (409, "stale-epoch", "d")
    assert api.parse_problem(answer(b"<html>", 502, "text/html")).code == ""
    assert api.parse_problem(answer(b"{", 500, api.PROBLEM_JSON)).code == ""
    assert api.parse_problem(answer({"code": 5}, 400, api.PROBLEM_JSON)).code == ""


def test_push_frames() -> None:
    assert api.challenge_of(json.dumps({"type": "challenge", "challenge": b64(b"c")})) == b"c"
    for frame in (
        "{",
        "[]",
        '{"type": "ready"}',
        '{"type": "challenge"}',
        '{"type": "challenge", "challenge": "!"}',
    ):
        assert api.challenge_of(frame) is None
    assert json.loads(api.subscribe_frame([b"g" * 16])) == {
        "type": "subscribe",
        "groups": [b64(b"g" * 16)],
    }
    assert json.loads(api.auth_frame({"A": "b"})) == {"type": "auth", "headers": {"A": "b"}}
