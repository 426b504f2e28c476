"""
The relay's HTTP API as values: requests the core asks the driver to send, answers it is fed.

This module is the only one that knows paths, JSON field names and problem
codes (``docs/protocol.md``); the core speaks to it in typed values. The
driver signs each request (``docs/protocol.md``, Request signing) and sends
it as is: ``target`` is the request target exactly as it goes on the wire.

Group ids, keys, client message ids and MLS messages travel as unpadded
base64url (``townsquare.auth.encode_b64u``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from townsquare import auth
from townsquare.client.errors import ProtocolError

__all__ = [
    "BLOB",
    "WEBSOCKET_PATH",
    "BlobRequest",
    "ClaimedKeyPackage",
    "FetchedLog",
    "KeyPackageCounts",
    "LogEntry",
    "PendingJoinRequest",
    "PendingWelcome",
    "Problem",
    "PublishedGroupInfo",
    "Request",
    "Response",
    "UploadedAttachment",
    "accepted_seq",
    "ack_cursor",
    "auth_frame",
    "challenge_of",
    "claim_account_key_packages",
    "create_group",
    "create_invite",
    "delete_join_request",
    "download_attachment",
    "fetch_log",
    "fetch_welcomes",
    "get_group_info",
    "get_invite",
    "get_join_request",
    "key_package_count",
    "list_join_requests",
    "parse_attachment_blob",
    "parse_claimed",
    "parse_counts",
    "parse_group_info",
    "parse_invite",
    "parse_join_request",
    "parse_join_requests",
    "parse_log",
    "parse_problem",
    "parse_uploaded_attachment",
    "parse_welcomes",
    "post_message",
    "register_account",
    "request_to_join",
    "reset_invites",
    "subscribe_frame",
    "update_invite",
    "upload_attachment",
    "upload_key_packages",
]

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """
    An HTTP request for the driver to sign and send.

    :param request_id: the core's id for it; the answer is fed back under this id.
    :param method: the HTTP method, upper case.
    :param target: the path and query, exactly as sent (and signed).
    :param body: the JSON body, or ``b""``.
    """

    request_id: int
    method: str
    target: str
    body: bytes = field(default=b"", repr=False)

    @property
    def content_type(self) -> str | None:
        """
        The body's media type, or ``None`` without a body.
        """
        return JSON if self.body else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    """
    An HTTP answer, as the driver received it.

    :param status: the HTTP status.
    :param body: the body bytes.
    :param content_type: the media type, without parameters.
    :param retry_after: ``Retry-After`` in seconds, if given.
    """

    status: int
    body: bytes = field(default=b"", repr=False)
    content_type: str = JSON
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        """
        Whether the status is 2xx.
        """
        return 200 <= self.status < 300


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """
    An RFC 9457 problem document (``docs/protocol.md``, Errors).
    """

    status: int
    code: str
    detail: str
    document: Mapping[str, object]


def _body(value: Mapping[str, object]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _b64(data: bytes) -> str:
    return auth.encode_b64u(data)


# -- Parsing answers ----------------------------------------------------------------------


def _json_object(response: Response) -> dict[str, object]:
    try:
        value = json.loads(response.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError("the relay's answer is not JSON") from exc
    if not isinstance(value, dict):
        raise ProtocolError("the relay's answer is not a JSON object")
    return {str(k): v for k, v in value.items()}


def _field(obj: Mapping[str, object], name: str) -> object:
    if name not in obj:
        raise ProtocolError(f"the relay's answer lacks {name!r}")
    return obj[name]


def _int(obj: Mapping[str, object], name: str) -> int:
    value = _field(obj, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"the relay's {name!r} is not a non-negative integer")
    return value


def _bool(obj: Mapping[str, object], name: str) -> bool:
    value = _field(obj, name)
    if not isinstance(value, bool):
        raise ProtocolError(f"the relay's {name!r} is not a boolean")
    return value


def _str(obj: Mapping[str, object], name: str) -> str:
    value = _field(obj, name)
    if not isinstance(value, str):
        raise ProtocolError(f"the relay's {name!r} is not a string")
    return value


def _bytes(obj: Mapping[str, object], name: str) -> bytes:
    try:
        return auth.decode_b64u(_str(obj, name))
    except auth.AuthError as exc:
        raise ProtocolError(f"the relay's {name!r} is not base64url") from exc


def _objects(obj: Mapping[str, object], name: str) -> list[dict[str, object]]:
    value = _field(obj, name)
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ProtocolError(f"the relay's {name!r} is not a list of objects")
    return [{str(k): v for k, v in item.items()} for item in value]


def parse_problem(response: Response) -> Problem:
    """
    Read an error answer; one that is not a problem document gets the code ``""``.

    :returns: the problem.
    """
    document: dict[str, object] = {}
    if response.content_type in (PROBLEM_JSON, JSON):
        try:
            document = _json_object(response)
        except ProtocolError:
            document = {}
    code = document.get("code")
    detail = document.get("detail")
    return Problem(
        status=response.status,
        code=code if isinstance(code, str) else "",
        detail=detail if isinstance(detail, str) else "",
        document=document,
    )


# -- Accounts and KeyPackages (docs/protocol.md, Endpoints) ----------------------------


def register_account(request_id: int, certificate: auth.DeviceCertificate) -> Request:
    """
    ``POST /v1/accounts``: register the account with its first device.
    """
    return Request(
        request_id=request_id,
        method="POST",
        target="/v1/accounts",
        body=_body(
            {
                "certificate": {
                    "account_key": _b64(certificate.account_key),
                    "device_key": _b64(certificate.device_key),
                    "created_at": certificate.created_at,
                    "signature": _b64(certificate.signature),
                }
            }
        ),
    )


def upload_key_packages(
    request_id: int, one_time: Sequence[bytes], last_resort: bytes | None
) -> Request:
    """
    ``POST /v1/key-packages``: upload KeyPackages (encoded MLSMessages).
    """
    body: dict[str, object] = {"one_time": [_b64(kp) for kp in one_time]}
    if last_resort is not None:
        body["last_resort"] = _b64(last_resort)
    return Request(
        request_id=request_id, method="POST", target="/v1/key-packages", body=_body(body)
    )


def key_package_count(request_id: int) -> Request:
    """
    ``GET /v1/key-packages/count``.
    """
    return Request(request_id=request_id, method="GET", target="/v1/key-packages/count")


@dataclass(frozen=True, slots=True)
class KeyPackageCounts:
    """
    How many KeyPackages the relay holds for this device.
    """

    one_time: int
    last_resort: bool


def parse_counts(response: Response) -> KeyPackageCounts:
    """
    :raises ProtocolError: if the answer is not ``{"one_time": n, "last_resort": bool}``.
    """
    obj = _json_object(response)
    return KeyPackageCounts(_int(obj, "one_time"), _bool(obj, "last_resort"))


def claim_account_key_packages(request_id: int, account_key: bytes) -> Request:
    """
    ``POST /v1/accounts/{account_key}/key-packages/claim``: one KeyPackage per device.
    """
    return Request(
        request_id=request_id,
        method="POST",
        target=f"/v1/accounts/{_b64(account_key)}/key-packages/claim",
        body=_body({}),
    )


@dataclass(frozen=True, slots=True)
class ClaimedKeyPackage:
    """
    One device's KeyPackage, claimed.
    """

    device_key: bytes
    key_package: bytes
    last_resort: bool


def parse_claimed(response: Response) -> tuple[list[ClaimedKeyPackage], list[bytes]]:
    """
    :returns: the claimed KeyPackages and the keys of the devices that had none.
    :raises ProtocolError: if the answer does not have that shape.
    """
    obj = _json_object(response)
    claimed = [
        ClaimedKeyPackage(
            _bytes(item, "device_key"), _bytes(item, "key_package"), _bool(item, "last_resort")
        )
        for item in _objects(obj, "key_packages")
    ]
    exhausted_value = obj.get("exhausted", [])
    if not isinstance(exhausted_value, list) or not all(
        isinstance(k, str) for k in exhausted_value
    ):
        raise ProtocolError("the relay's 'exhausted' is not a list of keys")
    try:
        exhausted = [auth.decode_b64u(k) for k in exhausted_value]
    except auth.AuthError as exc:
        raise ProtocolError("the relay's 'exhausted' is not base64url") from exc
    return claimed, exhausted


# -- Groups and delivery (docs/protocol.md, Groups) -------------------------------------------


def _group_path(group_id: bytes) -> str:
    return f"/v1/groups/{_b64(group_id)}"


def create_group(request_id: int, group_info: bytes) -> Request:
    """
    ``POST /v1/groups``: create a group from its epoch-0 GroupInfo (ratchet tree inside).
    """
    return Request(
        request_id=request_id,
        method="POST",
        target="/v1/groups",
        body=_body({"group_info": _b64(group_info)}),
    )


def post_message(
    request_id: int,
    group_id: bytes,
    client_message_id: bytes,
    message: bytes,
    *,
    welcome: bytes | None = None,
    group_info: bytes | None = None,
    invite_key: bytes | None = None,
    invite_signature: bytes | None = None,
) -> Request:
    """
    ``POST /v1/groups/{group_id}/messages``: an application message, a proposal, or a commit.

    A commit carries the GroupInfo of the epoch it creates and, if it adds
    members, their Welcome; the relay stores the three atomically. A
    newcomer's external commit carries the invite key and its signature.
    """
    body: dict[str, object] = {
        "client_message_id": _b64(client_message_id),
        "message": _b64(message),
    }
    if welcome is not None:
        body["welcome"] = _b64(welcome)
    if group_info is not None:
        body["group_info"] = _b64(group_info)
    if invite_key is not None and invite_signature is not None:
        body["invite_key"] = _b64(invite_key)
        body["invite_signature"] = _b64(invite_signature)
    return Request(
        request_id=request_id,
        method="POST",
        target=f"{_group_path(group_id)}/messages",
        body=_body(body),
    )


def accepted_seq(response: Response) -> int:
    """
    :returns: the ``seq`` the relay gave a message it stored (or had stored: a retry).
    :raises ProtocolError: if the answer has none.
    """
    return _int(_json_object(response), "seq")


def fetch_log(request_id: int, group_id: bytes, after: int, limit: int) -> Request:
    """
    ``GET /v1/groups/{group_id}/messages?after=N&limit=M``: the log after the cursor.
    """
    return Request(
        request_id=request_id,
        method="GET",
        target=f"{_group_path(group_id)}/messages?after={after}&limit={limit}",
    )


@dataclass(frozen=True, slots=True)
class LogEntry:
    """
    One entry of a group's log.
    """

    seq: int
    message: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class FetchedLog:
    """
    A page of a group's log, in order, and whether more follows.
    """

    entries: tuple[LogEntry, ...]
    more: bool


def parse_log(response: Response, *, after: int) -> FetchedLog:
    """
    :returns: the entries after ``after``, in strictly increasing seq order.
    :raises ProtocolError: if the answer is malformed or out of order.
    """
    obj = _json_object(response)
    entries = tuple(
        LogEntry(_int(item, "seq"), _bytes(item, "message")) for item in _objects(obj, "messages")
    )
    previous = after
    for entry in entries:
        if entry.seq <= previous:
            raise ProtocolError("the relay's log entries are not in increasing order")
        previous = entry.seq
    last_seq = _int(obj, "last_seq")
    return FetchedLog(entries, bool(entries) and entries[-1].seq < last_seq)


def ack_cursor(request_id: int, group_id: bytes, seq: int) -> Request:
    """
    ``POST /v1/groups/{group_id}/cursor``: this device has processed the log up to ``seq``.

    The relay drops our Welcomes of commits up to ``seq`` and, in time, the log before it.
    """
    return Request(
        request_id=request_id,
        method="POST",
        target=f"{_group_path(group_id)}/cursor",
        body=_body({"seq": seq}),
    )


def fetch_welcomes(request_id: int) -> Request:
    """
    ``GET /v1/welcomes``: the Welcomes waiting for this device, oldest first.
    """
    return Request(request_id=request_id, method="GET", target="/v1/welcomes")


@dataclass(frozen=True, slots=True)
class PendingWelcome:
    """
    A Welcome waiting for this device, with the seq of the commit that added it.
    """

    group_id: bytes
    commit_seq: int
    welcome: bytes = field(repr=False)
    ratchet_tree: bytes | None = field(default=None, repr=False)


def parse_welcomes(response: Response) -> list[PendingWelcome]:
    """
    :raises ProtocolError: if the answer is malformed.
    """
    obj = _json_object(response)
    return [
        PendingWelcome(
            _bytes(item, "group_id"),
            _int(item, "commit_seq"),
            _bytes(item, "welcome"),
            _bytes(item, "ratchet_tree") if item.get("ratchet_tree") is not None else None,
        )
        for item in _objects(obj, "welcomes")
    ]


# -- The push channel (docs/protocol.md, WebSocket) ------------------------------------------

#: The path of the push channel; its ``auth`` frame signs ``GET`` of it.
WEBSOCKET_PATH = "/v1/ws"


def create_invite(
    request_id: int,
    group_id: bytes,
    *,
    invite_key: bytes,
    sealed_group_info: bytes,
    expires_at: int,
    max_uses: int,
) -> Request:
    """
    ``POST /v1/groups/{group_id}/invites``: publish an invite (its key, never its secret).
    """
    body = {
        "invite_key": _b64(invite_key),
        "sealed_group_info": _b64(sealed_group_info),
        "expires_at": expires_at,
        "max_uses": max_uses,
    }
    return Request(
        request_id=request_id,
        method="POST",
        target=f"{_group_path(group_id)}/invites",
        body=_body(body),
    )


def update_invite(
    request_id: int, group_id: bytes, invite_key: bytes, sealed_group_info: bytes
) -> Request:
    """
    ``PUT /v1/groups/{group_id}/invites/{invite_key}``: reseal the current epoch's GroupInfo.
    """
    return Request(
        request_id=request_id,
        method="PUT",
        target=f"{_group_path(group_id)}/invites/{_b64(invite_key)}",
        body=_body({"sealed_group_info": _b64(sealed_group_info)}),
    )


def reset_invites(request_id: int, group_id: bytes) -> Request:
    """
    ``DELETE /v1/groups/{group_id}/invites``: revoke every invite of the group (admins).
    """
    return Request(
        request_id=request_id,
        method="DELETE",
        target=f"{_group_path(group_id)}/invites",
        body=b"",
    )


def get_invite(request_id: int, group_id: bytes, invite_key: bytes) -> Request:
    """
    ``GET /v1/groups/{group_id}/invites/{invite_key}``: a newcomer reads the sealed GroupInfo.
    """
    return Request(
        request_id=request_id,
        method="GET",
        target=f"{_group_path(group_id)}/invites/{_b64(invite_key)}",
        body=b"",
    )


def request_to_join(
    request_id: int,
    group_id: bytes,
    *,
    invite_key: bytes,
    key_package: bytes,
    sealed_note: bytes,
    invite_signature: bytes,
) -> Request:
    """
    ``POST /v1/groups/{group_id}/join-requests``: ask an approving group's admins to add us.
    """
    body = {
        "invite_key": _b64(invite_key),
        "key_package": _b64(key_package),
        "sealed_note": _b64(sealed_note),
        "invite_signature": _b64(invite_signature),
    }
    return Request(
        request_id=request_id,
        method="POST",
        target=f"{_group_path(group_id)}/join-requests",
        body=_body(body),
    )


def list_join_requests(request_id: int, group_id: bytes) -> Request:
    """
    ``GET /v1/groups/{group_id}/join-requests``: the requests waiting for the admins.
    """
    return Request(
        request_id=request_id,
        method="GET",
        target=f"{_group_path(group_id)}/join-requests",
        body=b"",
    )


def get_join_request(request_id: int, group_id: bytes, device_key: bytes) -> Request:
    """
    ``GET /v1/groups/{group_id}/join-requests/{device_key}``: whether a request still waits.

    The asking device reads its own (an admin any): 200 while it waits, 404
    ``join-request-not-found`` once it does not (withdrawn, denied, or the device was added).
    """
    return Request(
        request_id=request_id,
        method="GET",
        target=f"{_group_path(group_id)}/join-requests/{_b64(device_key)}",
        body=b"",
    )


def delete_join_request(request_id: int, group_id: bytes, device_key: bytes) -> Request:
    """
    ``DELETE /v1/groups/{group_id}/join-requests/{device_key}``: deny, or clear after adding.
    """
    return Request(
        request_id=request_id,
        method="DELETE",
        target=f"{_group_path(group_id)}/join-requests/{_b64(device_key)}",
        body=b"",
    )


@dataclass(frozen=True, slots=True)
class PendingJoinRequest:
    """
    A newcomer's request as an admin reads it: the device, its KeyPackage and sealed note.
    """

    device_key: bytes
    invite_key: bytes
    key_package: bytes
    sealed_note: bytes
    created_at: int


def _join_request(item: Mapping[str, object]) -> PendingJoinRequest:
    return PendingJoinRequest(
        device_key=_bytes(item, "device_key"),
        invite_key=_bytes(item, "invite_key"),
        key_package=_bytes(item, "key_package"),
        sealed_note=_bytes(item, "sealed_note"),
        created_at=_int(item, "created_at"),
    )


def parse_join_requests(response: Response) -> list[PendingJoinRequest]:
    """
    :returns: the join requests in the answer.
    :raises ProtocolError: if the answer is malformed.
    """
    return [_join_request(item) for item in _objects(_json_object(response), "requests")]


def parse_join_request(response: Response) -> PendingJoinRequest:
    """
    :returns: the one join request in the answer (``GET …/join-requests/{device_key}``).
    :raises ProtocolError: if the answer is malformed.
    """
    return _join_request(_json_object(response))


def get_group_info(request_id: int, group_id: bytes) -> Request:
    """
    ``GET /v1/groups/{group_id}/group-info``: a member reads the current GroupInfo (resync).
    """
    return Request(
        request_id=request_id,
        method="GET",
        target=f"{_group_path(group_id)}/group-info",
        body=b"",
    )


@dataclass(frozen=True, slots=True)
class PublishedGroupInfo:
    """
    What a joiner builds its external commit from: a GroupInfo and the group's tree.

    ``group_info`` is the encoded MLSMessage(GroupInfo); for an invite, the
    sealed blob still to be opened with the link's secret. ``ratchet_tree``
    is the relay's copy of the tree (checked against the GroupInfo's tree
    hash when joining), empty if the relay sent none.
    """

    group_info: bytes
    ratchet_tree: bytes


def parse_invite(response: Response) -> PublishedGroupInfo:
    """
    :returns: the invite's sealed GroupInfo and the group's current tree.
    :raises ProtocolError: if the answer lacks them.
    """
    obj = _json_object(response)
    tree = obj.get("ratchet_tree")
    return PublishedGroupInfo(
        group_info=_bytes(obj, "sealed_group_info"),
        ratchet_tree=b"" if tree is None else _bytes(obj, "ratchet_tree"),
    )


def parse_group_info(response: Response) -> PublishedGroupInfo:
    """
    :returns: the group's current GroupInfo and tree.
    :raises ProtocolError: if the answer lacks them.
    """
    obj = _json_object(response)
    tree = obj.get("ratchet_tree")
    return PublishedGroupInfo(
        group_info=_bytes(obj, "group_info"),
        ratchet_tree=b"" if tree is None else _bytes(obj, "ratchet_tree"),
    )


def subscribe_frame(group_ids: Sequence[bytes]) -> str:
    """
    :returns: the ``subscribe`` frame for ``group_ids`` (at most 256 per frame).
    """
    return json.dumps({"type": "subscribe", "groups": [_b64(g) for g in group_ids]})


def auth_frame(headers: Mapping[str, str]) -> str:
    """
    :returns: the ``auth`` frame carrying the signature headers of ``GET /v1/ws``.
    """
    return json.dumps({"type": "auth", "headers": dict(headers)})


def challenge_of(frame: str | bytes) -> bytes | None:
    """
    :returns: the challenge of a ``challenge`` frame, or ``None`` for any other frame.
    """
    try:
        value = json.loads(frame)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(value, dict) or value.get("type") != "challenge":
        return None
    challenge = value.get("challenge")
    if not isinstance(challenge, str):
        return None
    try:
        return auth.decode_b64u(challenge)
    except auth.AuthError:
        return None


# -- Attachments (docs/protocol.md, Attachments) ----------------------------------------------

#: The media type of an attachment's bytes, both ways.
BLOB = "application/octet-stream"


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobRequest(Request):
    """
    A request whose body is an attachment's bytes, sent as they are rather than as JSON.
    """

    @property
    def content_type(self) -> str | None:
        """
        Always :data:`BLOB`.
        """
        return BLOB


def upload_attachment(request_id: int, blob: bytes) -> BlobRequest:
    """
    ``POST /v1/attachments``: store an encrypted blob (``townsquare.client.attachments``).
    """
    return BlobRequest(request_id=request_id, method="POST", target="/v1/attachments", body=blob)


@dataclass(frozen=True, slots=True)
class UploadedAttachment:
    """
    Where the relay stored a blob: its SHA-256 (the address), its size and its expiry.
    """

    sha256: bytes
    size: int
    expires_at: int


def parse_uploaded_attachment(response: Response) -> UploadedAttachment:
    """
    :returns: the stored blob's hash, size and expiry (201, or 200 when stored before).
    :raises ProtocolError: if the answer lacks them or the hash is not 32 bytes.
    """
    obj = _json_object(response)
    sha256 = _bytes(obj, "hash")
    if len(sha256) != 32:
        raise ProtocolError("the relay's 'hash' is not 32 bytes")
    return UploadedAttachment(sha256, _int(obj, "size"), _int(obj, "expires_at"))


def download_attachment(request_id: int, sha256: bytes) -> Request:
    """
    ``GET /v1/attachments/{hash}``: a blob's bytes (410 once it has expired).
    """
    return Request(request_id=request_id, method="GET", target=f"/v1/attachments/{_b64(sha256)}")


def parse_attachment_blob(response: Response) -> bytes:
    """
    :returns: the blob's bytes, to check and decrypt with ``decrypt_ref``.
    :raises ProtocolError: if the answer is not ``application/octet-stream``.
    """
    if response.content_type != BLOB:
        raise ProtocolError(f"the relay's blob is {response.content_type!r}, not {BLOB}")
    return response.body
