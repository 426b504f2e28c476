"""
Fakes for testing clients without a relay process: an in-memory relay and a network to step.

:class:`FakeRelay` implements the delivery semantics of ``docs/protocol.md``
that the client depends on, sans-I/O (as trio ships ``trio.testing``):

- accounts, one-time and last-resort KeyPackages, claims per account;
- per group, an append-only log with sequence numbers from 1, and the
  group's public view (:class:`~townsquare.mls.public_group.PublicGroup`),
  which checks every handshake message as a real relay does;
- application messages accepted for the current epoch only (else
  ``stale-epoch``); the first valid commit for an epoch wins, a later one
  gets ``commit-conflict`` carrying the winner;
- sends deduplicated on (device, client message id): a repeat answers the
  first ``seq`` and stores nothing;
- Welcomes kept for the devices a commit added until their cursor passes it;
- a member is served the log after the commit that added it, and nothing
  once a commit removed it (``not-a-member``), as the real relay does;
- invites (publish, reseal, read, reset), without expiry: the fake has no
  clock (an external commit by invite is not accepted: only a member's resync);
- join requests to groups whose policy requires approval: kept per device
  (a second replaces the first), listed for members (the fake does not tell
  admins from members), read by the asking device or a member (404
  ``join-request-not-found`` once none waits, or the device is a member by
  now), deleted by either;
- push frames queued per device (:meth:`FakeRelay.take_notices`).

:class:`Network` wires clients to a relay and steps them with a
hand-advanced clock (aioquic's ``transfer()``): no sockets, no sleeps. It
can lose requests and answers, which is how the tests crash a client
between the relay storing a message and the client seeing the answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from townsquare import auth
from townsquare.auth import group_policy as rules
from townsquare.auth import invites as invite_keys
from townsquare.client.core.client import Client
from townsquare.client.core.device import check_device_credential
from townsquare.client.core.relay_api import PROBLEM_JSON, Request, Response
from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.errors import MLSError
from townsquare.mls.framing import MLSMessage
from townsquare.mls.key_package import KeyPackage, key_package_ref
from townsquare.mls.public_group import PublicCommit, PublicGroup, peek
from townsquare.mls.registries import ContentType, WireFormat

__all__ = ["FakeRelay", "Network", "RelayGroup"]

_JSONObject = dict[str, object]


class _Problem(Exception):
    def __init__(self, status: int, code: str, **extensions: object) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.extensions = extensions


def _b64(data: bytes) -> str:
    return auth.encode_b64u(data)


def _unb64(value: object) -> bytes:
    if not isinstance(value, str):
        raise _Problem(400, "invalid-request")
    try:
        return auth.decode_b64u(value)
    except auth.AuthError as exc:
        raise _Problem(400, "invalid-request") from exc


def _member_keys(public: PublicGroup) -> set[bytes]:
    return {m.signature_key for m in public.members()}


@dataclass
class _Entry:
    seq: int
    message: bytes
    sender: bytes
    epoch: int
    kind: str


@dataclass
class RelayGroup:
    """
    One group on the fake relay: its public view, log, and who may read it.
    """

    group_id: bytes
    public: PublicGroup
    log: list[_Entry] = field(default_factory=list)
    #: The seq of each epoch's winning commit.
    winners: dict[int, int] = field(default_factory=dict)
    #: The member devices, and the seq of the commit that added each (0: the creator).
    joined: dict[bytes, int] = field(default_factory=dict)
    cursors: dict[bytes, int] = field(default_factory=dict)
    group_info: bytes = b""
    #: Invites by invite key: their JSON form (``sealed_group_info`` resealed by members).
    invites: dict[bytes, _JSONObject] = field(default_factory=dict)
    #: Join requests waiting, by the asking device's key, in their JSON form.
    join_requests: dict[bytes, _JSONObject] = field(default_factory=dict)

    def entries(self) -> list[tuple[int, bytes]]:
        """
        :returns: the log as (seq, message) pairs.
        """
        return [(e.seq, e.message) for e in self.log]


@dataclass
class _KeyPackages:
    one_time: list[bytes] = field(default_factory=list)
    last_resort: bytes | None = None


class FakeRelay:
    """
    An in-memory relay (see the module docstring); :meth:`handle` answers one request.
    """

    def __init__(self) -> None:
        """
        Start with no accounts and no groups.
        """
        self.accounts: dict[bytes, list[bytes]] = {}
        self.devices: dict[bytes, bytes] = {}
        self.key_packages: dict[bytes, _KeyPackages] = {}
        self.key_package_owners: dict[bytes, bytes] = {}
        self.groups: dict[bytes, RelayGroup] = {}
        self.sent: dict[tuple[bytes, bytes], tuple[bytes, str, int]] = {}
        self.welcomes: dict[bytes, list[_JSONObject]] = {}
        self.notices: dict[bytes, list[str]] = {}
        self.requests: list[tuple[bytes, str, str]] = []
        #: The problem code of every refused request, in order.
        self.problems: list[str] = []
        self.push_inline_max_bytes = 4096
        self._suite = get_cipher_suite(1)

    # -- Entry point ------------------------------------------------------------------------

    def handle(self, device_key: bytes, method: str, target: str, body: bytes) -> Response:
        """
        Answer one request signed by ``device_key`` (the fake trusts the signer's key).

        :returns: the answer: JSON, or an RFC 9457 problem document.
        """
        self.requests.append((device_key, method, target))
        try:
            status, value = self._route(device_key, method, target, body)
        except _Problem as problem:
            self.problems.append(problem.code)
            document: _JSONObject = {
                "type": f"urn:townsquare:problem:{problem.code}",
                "title": problem.code,
                "status": problem.status,
                "detail": problem.code,
                "code": problem.code,
                **problem.extensions,
            }
            return Response(
                status=problem.status,
                body=json.dumps(document).encode(),
                content_type=PROBLEM_JSON,
            )
        return Response(status=status, body=json.dumps(value).encode())

    def _route(
        self, device_key: bytes, method: str, target: str, body_bytes: bytes
    ) -> tuple[int, _JSONObject]:
        url = urlsplit(target)
        parts = url.path.strip("/").split("/")
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        body: _JSONObject = {}
        if body_bytes:
            loaded = json.loads(body_bytes)
            if not isinstance(loaded, dict):
                raise _Problem(400, "invalid-request")
            body = loaded
        if parts == ["v1", "accounts"] and method == "POST":
            return self._register(device_key, body)
        if device_key not in self.devices:
            raise _Problem(401, "unknown-device")
        match (method, parts):
            case ("POST", ["v1", "key-packages"]):
                return self._upload(device_key, body)
            case ("GET", ["v1", "key-packages", "count"]):
                return 200, self._counts(device_key)
            case ("POST", ["v1", "accounts", account, "key-packages", "claim"]):
                return self._claim(_unb64(account))
            case ("POST", ["v1", "groups"]):
                return self._create(device_key, body)
            case ("POST", ["v1", "groups", group, "messages"]):
                return self._post(device_key, _unb64(group), body)
            case ("GET", ["v1", "groups", group, "messages"]):
                return self._fetch(device_key, _unb64(group), query)
            case ("POST", ["v1", "groups", group, "cursor"]):
                return self._cursor(device_key, _unb64(group), body)
            case ("GET", ["v1", "groups", group, "group-info"]):
                relay_group = self._member(device_key, _unb64(group))
                return 200, {
                    "group_id": group,
                    "epoch": relay_group.public.epoch,
                    "group_info": _b64(relay_group.group_info),
                    "ratchet_tree": _b64(relay_group.public.ratchet_tree()),
                }
            case ("GET", ["v1", "welcomes"]):
                return 200, {"welcomes": list(self.welcomes.get(device_key, []))}
            case ("POST", ["v1", "groups", group, "invites"]):
                return self._create_invite(device_key, _unb64(group), body)
            case ("DELETE", ["v1", "groups", group, "invites"]):
                relay_group = self._member(device_key, _unb64(group))
                revoked = len(relay_group.invites)
                relay_group.invites.clear()
                return 200, {"revoked": revoked}
            case ("PUT", ["v1", "groups", group, "invites", invite]):
                relay_group = self._member(device_key, _unb64(group))
                invite_json = self._invite(relay_group, _unb64(invite))
                invite_json["sealed_group_info"] = _b64(_unb64(body.get("sealed_group_info")))
                return 200, dict(invite_json)
            case ("GET", ["v1", "groups", group, "invites", invite]):
                relay_group = self._group(_unb64(group))
                invite_json = self._invite(relay_group, _unb64(invite))
                return 200, {
                    **invite_json,
                    "epoch": relay_group.public.epoch,
                    "ratchet_tree": _b64(relay_group.public.ratchet_tree()),
                }
            case ("POST", ["v1", "groups", group, "join-requests"]):
                return self._request_to_join(device_key, _unb64(group), body)
            case ("GET", ["v1", "groups", group, "join-requests"]):
                relay_group = self._member(device_key, _unb64(group))
                waiting = [
                    r
                    for key, r in relay_group.join_requests.items()
                    if key not in relay_group.joined
                ]
                return 200, {"requests": waiting}
            case ("GET", ["v1", "groups", group, "join-requests", asking]):
                relay_group = self._join_request_reader(device_key, _unb64(group), _unb64(asking))
                request = relay_group.join_requests.get(_unb64(asking))
                if request is None or _unb64(asking) in relay_group.joined:
                    raise _Problem(404, "join-request-not-found")
                return 200, dict(request)
            case ("DELETE", ["v1", "groups", group, "join-requests", asking]):
                relay_group = self._join_request_reader(device_key, _unb64(group), _unb64(asking))
                deleted = relay_group.join_requests.pop(_unb64(asking), None) is not None
                return 200, {"deleted": deleted}
        raise _Problem(404, "not-found")

    # -- Accounts and KeyPackages -------------------------------------------------------------

    def _register(self, device_key: bytes, body: _JSONObject) -> tuple[int, _JSONObject]:
        certificate = body.get("certificate")
        if not isinstance(certificate, dict):
            raise _Problem(400, "invalid-request")
        account_key = _unb64(certificate.get("account_key"))
        if _unb64(certificate.get("device_key")) != device_key:
            raise _Problem(401, "signer-mismatch")
        if account_key in self.accounts:
            raise _Problem(409, "account-exists")
        if device_key in self.devices:
            raise _Problem(409, "device-exists")
        self.accounts[account_key] = [device_key]
        self.devices[device_key] = account_key
        self.key_packages[device_key] = _KeyPackages()
        return 201, {"certificate": certificate, "registered_at": 0}

    def _counts(self, device_key: bytes) -> _JSONObject:
        packages = self.key_packages[device_key]
        return {"one_time": len(packages.one_time), "last_resort": packages.last_resort is not None}

    def _check_key_package(self, device_key: bytes, data: bytes) -> bytes:
        try:
            message = MLSMessage.decode(data)
        except MLSError as exc:
            raise _Problem(422, "invalid-key-package") from exc
        if not isinstance(message.body, KeyPackage):
            raise _Problem(422, "invalid-key-package")
        if message.body.leaf_node.signature_key != device_key:
            raise _Problem(422, "key-package-not-owned")
        return key_package_ref(self._suite, message.body)

    def _upload(self, device_key: bytes, body: _JSONObject) -> tuple[int, _JSONObject]:
        one_time_value = body.get("one_time", [])
        if not isinstance(one_time_value, list):
            raise _Problem(400, "invalid-request")
        one_time = [_unb64(v) for v in one_time_value]
        last_resort = None if body.get("last_resort") is None else _unb64(body["last_resort"])
        packages = self.key_packages[device_key]
        refs = {}
        for data in [*one_time, *([last_resort] if last_resort else [])]:
            ref = self._check_key_package(device_key, data)
            if ref in self.key_package_owners or ref in refs:
                raise _Problem(409, "duplicate-key-package")
            refs[ref] = device_key
        self.key_package_owners.update(refs)
        packages.one_time.extend(one_time)
        if last_resort is not None:
            packages.last_resort = last_resort
        return 200, self._counts(device_key)

    def _claim(self, account_key: bytes) -> tuple[int, _JSONObject]:
        devices = self.accounts.get(account_key)
        if devices is None:
            raise _Problem(404, "unknown-account")
        claimed: list[_JSONObject] = []
        exhausted = []
        for device in devices:
            packages = self.key_packages[device]
            if packages.one_time:
                claimed.append(
                    {
                        "device_key": _b64(device),
                        "key_package": _b64(packages.one_time.pop(0)),
                        "last_resort": False,
                    }
                )
            elif packages.last_resort is not None:
                claimed.append(
                    {
                        "device_key": _b64(device),
                        "key_package": _b64(packages.last_resort),
                        "last_resort": True,
                    }
                )
            else:
                exhausted.append(_b64(device))
        return 200, {
            "account_key": _b64(account_key),
            "key_packages": claimed,
            "exhausted": exhausted,
        }

    # -- Groups --------------------------------------------------------------------------------

    def _notify(self, device_key: bytes, frame: _JSONObject) -> None:
        self.notices.setdefault(device_key, []).append(json.dumps(frame))

    def take_notices(self, device_key: bytes) -> list[str]:
        """
        :returns: the push frames queued for a device (as the WebSocket would send them).
        """
        return self.notices.pop(device_key, [])

    def _create(self, device_key: bytes, body: _JSONObject) -> tuple[int, _JSONObject]:
        group_info = _unb64(body.get("group_info"))
        try:
            public = PublicGroup.from_group_info(
                group_info, credential_validator=check_device_credential
            )
        except MLSError as exc:
            raise _Problem(400, "invalid-group-info") from exc
        group_id = public.group_id
        if group_id in self.groups:
            raise _Problem(409, "group-exists")
        if public.epoch != 0 or _member_keys(public) != {device_key}:
            raise _Problem(400, "invalid-new-group")
        self.groups[group_id] = RelayGroup(
            group_id, public, group_info=group_info, joined={device_key: 0}
        )
        return 201, {"group_id": _b64(group_id), "epoch": 0, "last_seq": 0, "created_at": 0}

    def _group(self, group_id: bytes) -> RelayGroup:
        group = self.groups.get(group_id)
        if group is None:
            raise _Problem(404, "unknown-group")
        return group

    def _member(self, device_key: bytes, group_id: bytes) -> RelayGroup:
        group = self._group(group_id)
        if device_key not in group.joined:
            raise _Problem(403, "not-a-member")
        return group

    # -- Invites and join requests ---------------------------------------------------------

    def _create_invite(
        self, device_key: bytes, group_id: bytes, body: _JSONObject
    ) -> tuple[int, _JSONObject]:
        group = self._member(device_key, group_id)
        invite_key = _unb64(body.get("invite_key"))
        if invite_key in group.invites:
            raise _Problem(409, "invite-exists")
        expires_at, max_uses = body.get("expires_at"), body.get("max_uses")
        if not isinstance(expires_at, int) or not isinstance(max_uses, int):
            raise _Problem(400, "invalid-request")
        invite: _JSONObject = {
            "group_id": _b64(group_id),
            "invite_key": _b64(invite_key),
            "sealed_group_info": _b64(_unb64(body.get("sealed_group_info"))),
            "expires_at": expires_at,
            "max_uses": max_uses,
            "uses": 0,
            "created_at": 0,
            "updated_at": 0,
        }
        group.invites[invite_key] = invite
        return 201, dict(invite)

    @staticmethod
    def _invite(group: RelayGroup, invite_key: bytes) -> _JSONObject:
        invite = group.invites.get(invite_key)
        if invite is None:
            raise _Problem(404, "invite-not-found")
        return invite

    def _request_to_join(
        self, device_key: bytes, group_id: bytes, body: _JSONObject
    ) -> tuple[int, _JSONObject]:
        group = self._group(group_id)
        invite_key = _unb64(body.get("invite_key"))
        self._invite(group, invite_key)
        key_package = _unb64(body.get("key_package"))
        sealed_note = _unb64(body.get("sealed_note"))
        try:
            invite_keys.verify_join_request(
                invite_key, group_id, key_package, sealed_note, _unb64(body.get("invite_signature"))
            )
        except auth.AuthError as exc:
            raise _Problem(403, "invite-signature-invalid") from exc
        self._check_key_package(device_key, key_package)
        policy = rules.group_policy(group.public.context.extensions)
        if policy is None or not policy.approval_required:
            raise _Problem(409, "approval-not-required")
        if device_key in group.joined:
            raise _Problem(400, "invalid-request")
        request: _JSONObject = {
            "group_id": _b64(group_id),
            "device_key": _b64(device_key),
            "invite_key": _b64(invite_key),
            "key_package": _b64(key_package),
            "sealed_note": _b64(sealed_note),
            "created_at": 0,
        }
        # A second request from the device replaces its first (at the end of the line).
        group.join_requests.pop(device_key, None)
        group.join_requests[device_key] = request
        return 201, dict(request)

    def _join_request_reader(self, device_key: bytes, group_id: bytes, asking: bytes) -> RelayGroup:
        """
        The group, if ``device_key`` may read or delete ``asking``'s request (itself, or a member).
        """
        if device_key == asking:
            return self._group(group_id)
        return self._member(device_key, group_id)

    def _post(
        self, device_key: bytes, group_id: bytes, body: _JSONObject
    ) -> tuple[int, _JSONObject]:
        message = _unb64(body.get("message"))
        try:
            header = peek(message)
        except MLSError as exc:
            raise _Problem(400, "malformed-mls") from exc
        if header.group_id != group_id:
            raise _Problem(400, "group-mismatch")
        if header.content_type == ContentType.COMMIT:
            kind = "commit"
        elif header.content_type == ContentType.PROPOSAL:
            kind = "proposal"
        elif header.wire_format == WireFormat.MLS_PRIVATE_MESSAGE:
            kind = "application"
        else:
            raise _Problem(400, "unexpected-message")
        client_message_id = _unb64(body.get("client_message_id"))
        if len(client_message_id) != 16:
            raise _Problem(400, "invalid-request")
        seen = self.sent.get((device_key, client_message_id))
        if seen is not None:
            if seen[:2] != (group_id, kind):
                raise _Problem(409, "message-id-reused")
            entry = self.groups[group_id].log[seen[2] - 1]
            return 200, self._posted(entry, duplicate=True)
        group = self._member(device_key, group_id)
        epoch = group.public.epoch
        if header.epoch != epoch:
            if kind == "commit" and header.epoch is not None and header.epoch < epoch:
                # Townsquare choice (RFC 9420 §14): the first commit for an epoch wins.
                winner = group.log[group.winners[header.epoch] - 1]
                raise _Problem(
                    409,
                    "commit-conflict",
                    epoch=epoch,
                    winner={
                        "seq": winner.seq,
                        "epoch": winner.epoch,
                        "message": _b64(winner.message),
                    },
                )
            raise _Problem(409, "stale-epoch", epoch=epoch)
        if kind == "application":
            entry = self._append(group, device_key, message, kind)
        elif kind == "proposal":
            try:
                group.public.process(message)
            except MLSError as exc:
                raise _Problem(400, "invalid-proposal") from exc
            entry = self._append(group, device_key, message, kind)
        else:
            entry = self._commit(group, device_key, message, body)
        self.sent[(device_key, client_message_id)] = (group_id, kind, entry.seq)
        return 201, self._posted(entry, duplicate=False)

    @staticmethod
    def _posted(entry: _Entry, *, duplicate: bool) -> _JSONObject:
        return {"seq": entry.seq, "epoch": entry.epoch, "kind": entry.kind, "duplicate": duplicate}

    def _append(self, group: RelayGroup, device_key: bytes, message: bytes, kind: str) -> _Entry:
        entry = _Entry(
            seq=len(group.log) + 1,
            message=message,
            sender=device_key,
            epoch=group.public.epoch,
            kind=kind,
        )
        group.log.append(entry)
        frame: _JSONObject = {
            "type": "message",
            "group": _b64(group.group_id),
            "seq": entry.seq,
            "epoch": entry.epoch,
            "kind": kind,
        }
        if len(message) <= self.push_inline_max_bytes:
            frame["message"] = _b64(message)
        for member in group.joined:
            self._notify(member, frame)
        return entry

    def _commit(
        self, group: RelayGroup, device_key: bytes, message: bytes, body: _JSONObject
    ) -> _Entry:
        if body.get("group_info") is None:
            raise _Problem(400, "invalid-request")
        group_info = _unb64(body.get("group_info"))
        welcome = None if body.get("welcome") is None else _unb64(body["welcome"])
        try:
            staged = group.public.process(message)
        except MLSError as exc:
            raise _Problem(400, "invalid-commit") from exc
        if not isinstance(staged, PublicCommit):
            raise _Problem(400, "unexpected-message")
        if bool(staged.added) != (welcome is not None):
            raise _Problem(400, "welcome-mismatch")
        for added in staged.added:
            if added.signature_key not in self.devices:
                raise _Problem(422, "unknown-member-device")
        epoch = group.public.epoch
        group.public.merge(staged)
        entry = self._append(group, device_key, message, "commit")
        entry.epoch = epoch
        group.winners[epoch] = entry.seq
        group.group_info = group_info
        for removed in staged.removed:
            group.joined.pop(removed.signature_key, None)
            if staged.resync is None:
                self._notify(
                    removed.signature_key,
                    {"type": "removed", "group": _b64(group.group_id), "seq": entry.seq},
                )
        if staged.external:
            # A member's resync (its own old leaf removed) or a newcomer: served from here.
            group.joined[device_key] = entry.seq
        for added in staged.added:
            group.joined[added.signature_key] = entry.seq
            if welcome is None:  # pragma: no cover - checked above
                continue
            self.welcomes.setdefault(added.signature_key, []).append(
                {
                    "group_id": _b64(group.group_id),
                    "commit_seq": entry.seq,
                    "epoch": epoch + 1,
                    "welcome": _b64(welcome),
                    "ratchet_tree": _b64(group.public.ratchet_tree()),
                    "created_at": 0,
                }
            )
            self._notify(
                added.signature_key,
                {"type": "welcome", "group": _b64(group.group_id), "seq": entry.seq},
            )
        return entry

    def _fetch(
        self, device_key: bytes, group_id: bytes, query: Mapping[str, str]
    ) -> tuple[int, _JSONObject]:
        group = self._member(device_key, group_id)
        after = max(int(query.get("after", "0")), group.joined[device_key])
        limit = int(query.get("limit", "100"))
        page = [e for e in group.log if e.seq > after][:limit]
        return 200, {
            "group_id": _b64(group_id),
            "epoch": group.public.epoch,
            "last_seq": len(group.log),
            "messages": [
                {
                    "seq": e.seq,
                    "epoch": e.epoch,
                    "kind": e.kind,
                    "message": _b64(e.message),
                    "received_at": 0,
                }
                for e in page
            ],
        }

    def _cursor(
        self, device_key: bytes, group_id: bytes, body: _JSONObject
    ) -> tuple[int, _JSONObject]:
        group = self._member(device_key, group_id)
        seq = body.get("seq")
        if not isinstance(seq, int) or seq < 0:
            raise _Problem(400, "invalid-request")
        if seq > len(group.log):
            raise _Problem(409, "cursor-ahead")
        group.cursors[device_key] = max(group.cursors.get(device_key, 0), seq)
        self.welcomes[device_key] = [
            w
            for w in self.welcomes.get(device_key, [])
            if w["group_id"] != _b64(group_id) or _int_of(w["commit_seq"]) > seq
        ]
        return 200, {"seq": group.cursors[device_key]}


def _int_of(value: object) -> int:
    if not isinstance(value, int):  # pragma: no cover - the fake writes ints
        raise TypeError("not an int")
    return value


RequestFilter = Callable[[Client, Request], "str | Response"]
"""
Decides a request's fate: ``"deliver"``, ``"lose"`` (never arrives), ``"drop-answer"``
(arrives, its answer is lost), or a :class:`Response` to answer with instead of the relay's.
"""


def _deliver_all(client: Client, request: Request) -> str | Response:
    del client, request
    return "deliver"


class Network:
    """
    Clients wired to a :class:`FakeRelay`, stepped by hand.

    :param relay: the relay.
    :param now: the starting time (Unix seconds); advanced only by :meth:`advance`.
    """

    def __init__(self, relay: FakeRelay, *, now: float = 1_767_225_600.0) -> None:
        """
        Start with the clock at ``now``.
        """
        self.relay = relay
        self.now = now
        self.filter: RequestFilter = _deliver_all
        self.delivered = 0

    def advance(self, seconds: float) -> None:
        """
        Move the clock forward.
        """
        self.now += seconds

    def step(self, client: Client) -> bool:
        """
        Send one request of ``client``, if it has one due, and feed it the answer.

        :returns: whether a request was sent.
        """
        request = client.next_request(self.now)
        if request is None:
            return False
        fate = self.filter(client, request)
        if isinstance(fate, Response):
            client.receive_response(request.request_id, fate, self.now)
            return True
        if fate == "lose":
            client.request_failed(request.request_id, self.now)
            return True
        device = client.device
        if device is None:  # pragma: no cover - a client without a device asks nothing
            raise RuntimeError("a request from a client without a device")
        response = self.relay.handle(
            device.device_key, request.method, request.target, request.body
        )
        self.delivered += 1
        if fate == "drop-answer":
            client.request_failed(request.request_id, self.now)
            return True
        client.receive_response(request.request_id, response, self.now)
        return True

    def settle(self, clients: Iterable[Client], *, max_steps: int = 10_000) -> int:
        """
        Step every client, round-robin, until none has a request due now.

        :returns: how many requests were sent.
        """
        clients = list(clients)
        steps = 0
        while True:
            progressed = False
            for client in clients:
                if self.step(client):
                    progressed = True
                    steps += 1
            if not progressed:
                return steps
            if steps > max_steps:
                raise RuntimeError("the network did not settle")

    def run(self, clients: Iterable[Client], *, seconds: float = 600.0, tick: float = 1.0) -> None:
        """
        Settle, then let time pass in ticks (firing timers and backoffs) for ``seconds``.
        """
        clients = list(clients)
        end = self.now + seconds
        self.settle(clients)
        while self.now < end:
            timers = [t for c in clients if (t := c.get_timer()) is not None]
            if not timers and not any(c.has_work() for c in clients):
                return
            self.now = min(end, max(self.now + tick, min(timers, default=self.now + tick)))
            for client in clients:
                client.handle_timer(self.now)
            self.settle(clients)
