"""
/openapi.json describes every operation exactly, and the error hierarchy is consistent.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from townsquare import auth
from townsquare.server import Settings, create_app
from townsquare.server.config import MAX_GROUP_ID_BYTES, MIN_GROUP_ID_BYTES
from townsquare.server.errors import (
    PROBLEM_TYPE_PREFIX,
    InvalidRequest,
    ServerError,
    all_error_classes,
)
from townsquare.server.http.fields import GROUP_ID_PATTERN, group_id_from_path

OPERATIONS = {
    ("get", "/healthz"),
    ("post", "/v1/accounts"),
    ("post", "/v1/devices"),
    ("get", "/v1/accounts/{account_key}/devices"),
    ("post", "/v1/key-packages"),
    ("get", "/v1/key-packages/count"),
    ("post", "/v1/devices/{device_key}/key-packages/claim"),
    ("post", "/v1/accounts/{account_key}/key-packages/claim"),
    ("post", "/v1/groups"),
    ("post", "/v1/groups/{group_id}/messages"),
    ("get", "/v1/groups/{group_id}/messages"),
    ("post", "/v1/groups/{group_id}/cursor"),
    ("get", "/v1/groups/{group_id}/group-info"),
    ("post", "/v1/groups/{group_id}/invites"),
    ("delete", "/v1/groups/{group_id}/invites"),
    ("get", "/v1/groups/{group_id}/invites/{invite_key}"),
    ("put", "/v1/groups/{group_id}/invites/{invite_key}"),
    ("put", "/v1/groups/{group_id}/invite-settings"),
    ("post", "/v1/groups/{group_id}/join-requests"),
    ("get", "/v1/groups/{group_id}/join-requests"),
    ("get", "/v1/groups/{group_id}/join-requests/{device_key}"),
    ("delete", "/v1/groups/{group_id}/join-requests/{device_key}"),
    ("get", "/v1/welcomes"),
    ("post", "/v1/attachments"),
    ("get", "/v1/attachments/{hash}"),
}
SIGNATURE_HEADERS = [
    "Townsquare-Device",
    "Townsquare-Timestamp",
    "Townsquare-Nonce",
    "Townsquare-Signature",
]
PROTOCOL_MD = Path(__file__).parents[3] / "docs" / "protocol.md"


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("openapi")))
    return app.openapi()


@pytest.mark.anyio
async def test_openapi_json_is_served_unsigned(relay, spec):
    response = await relay.client.get("/openapi.json")
    assert response.status_code == 200
    assert response.json() == spec


def test_every_operation_is_described(spec):
    described = {(m, p) for p, item in spec["paths"].items() for m in item}
    assert described == OPERATIONS
    assert {op["operationId"] for item in spec["paths"].values() for op in item.values()}


def test_signed_operations_require_the_signature_headers(spec):
    for path, item in spec["paths"].items():
        for operation in item.values():
            headers = [p["name"] for p in operation.get("parameters", []) if p["in"] == "header"]
            if path == "/healthz":
                assert headers == []
                continue
            assert headers == SIGNATURE_HEADERS
            assert all(
                p["required"] for p in operation["parameters"] if p["name"] in SIGNATURE_HEADERS
            )
            assert {"401", "409", "413"} <= set(operation["responses"])


def test_error_responses_are_problems_with_known_types(spec):
    known = {cls.problem_type() for cls in all_error_classes()}
    for item in spec["paths"].values():
        for operation in item.values():
            for status, response in operation["responses"].items():
                if status.startswith("2"):
                    # Attachments travel as bytes; everything else is JSON.
                    binary = operation["operationId"] == "download_attachment"
                    expected = "application/octet-stream" if binary else "application/json"
                    assert list(response["content"]) == [expected]
                    continue
                schema = response["content"]["application/problem+json"]["schema"]
                assert set(schema["properties"]["type"]["enum"]) <= known
                assert schema["properties"]["status"]["const"] == int(status)


def test_the_generic_validation_error_is_gone(spec):
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for item in spec["paths"].values():
        for operation in item.values():
            assert "422" not in operation["responses"] or (
                "application/problem+json" in operation["responses"]["422"]["content"]
            )


def test_codes_are_unique_kebab_case_and_statuses_are_http_errors():
    classes = all_error_classes()
    codes = [cls.code for cls in classes]
    assert len(codes) == len(set(codes))
    for cls in classes:
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", cls.code)
        assert 400 <= cls.status <= 599
        assert cls.problem_type() == PROBLEM_TYPE_PREFIX + cls.code
        assert cls.title
        assert cls.__doc__


def test_children_keep_their_parents_status():
    for cls in all_error_classes():
        for parent in cls.__mro__[1:]:
            if issubclass(parent, ServerError) and parent not in (ServerError, cls):
                assert cls.status == parent.status, cls


def test_docs_protocol_lists_every_problem_type():
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    missing = [cls.code for cls in all_error_classes() if f"`{cls.code}`" not in text]
    assert missing == []


def test_problem_extension_members_are_described(spec):
    post = spec["paths"]["/v1/groups/{group_id}/messages"]["post"]["responses"]
    conflict = post["409"]["content"]["application/problem+json"]["schema"]
    assert {"epoch", "winner"} <= set(conflict["properties"])
    assert "winner" not in conflict["required"]
    invalid = post["400"]["content"]["application/problem+json"]["schema"]
    assert {"mls_error", "rfc_section"} <= set(invalid["properties"])
    assert set(post) >= {"200", "201", "400", "401", "403", "404", "409", "413", "422"}
    claim = spec["paths"]["/v1/devices/{device_key}/key-packages/claim"]["post"]["responses"]
    limited = claim["429"]["content"]["application/problem+json"]["schema"]
    assert "retry_after" in limited["required"]


# -- Group ids in paths: the published pattern is exactly what the relay takes -------------
# Schemathesis found that the old pattern (22 to 86 base64url characters) let
# /openapi.json call texts valid that the relay refuses with 400: a length that
# is no whole number of bytes, or a last character with nonzero unused bits.


@given(st.from_regex(GROUP_ID_PATTERN, fullmatch=True))
def test_every_group_id_the_schema_allows_is_one_the_relay_takes(text):
    group_id = group_id_from_path(text)
    assert MIN_GROUP_ID_BYTES <= len(group_id) <= MAX_GROUP_ID_BYTES
    assert auth.encode_b64u(group_id) == text


@given(st.binary(max_size=MAX_GROUP_ID_BYTES + 8))
def test_the_group_id_pattern_matches_exactly_the_lengths_the_relay_takes(group_id):
    matches = re.fullmatch(GROUP_ID_PATTERN, auth.encode_b64u(group_id)) is not None
    assert matches == (MIN_GROUP_ID_BYTES <= len(group_id) <= MAX_GROUP_ID_BYTES)


@pytest.mark.parametrize(
    "text",
    [
        "G" + "0" * 21,  # 22 characters whose last one has nonzero unused bits
        "A" * 21,  # no whole number of bytes
        "A" * 20,  # 15 bytes: too short
        "A" * 87,  # 65 bytes: too long
    ],
)
def test_a_group_id_the_relay_refuses_is_outside_the_pattern(text):
    assert re.fullmatch(GROUP_ID_PATTERN, text) is None
    with pytest.raises(InvalidRequest):
        group_id_from_path(text)


def test_group_routes_publish_the_exact_group_id_pattern(spec):
    patterns = {
        parameter["schema"]["pattern"]
        for item in spec["paths"].values()
        for operation in item.values()
        for parameter in operation.get("parameters", [])
        if parameter["name"] == "group_id"
    }
    assert patterns == {GROUP_ID_PATTERN}
