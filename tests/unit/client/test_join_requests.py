"""
A join request to a group that requires approval: checked while it waits, settled when it goes.

The newcomer reads its own request (``GET …/join-requests/{device_key}``) at
every catch-up and every ``join_request_check_seconds``. Found gone, it
fetches its Welcomes once more (the approver stores the Welcome before it
deletes the request): joined by one, it says nothing more; without one, it
drops its join record and says ``JoinFailed(group, "not-approved")``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from townsquare import auth
from townsquare.client.core import (
    Client,
    GroupJoined,
    JoinFailed,
    JoinRequested,
    MemoryClientStore,
    RelayFailure,
)
from townsquare.client.core import relay_api as api
from townsquare.client.core.invites import JOIN_PREFIX
from townsquare.client.core.relay_api import PROBLEM_JSON, Request, Response
from townsquare.client.errors import StoreFailed
from townsquare.client.testing import Network

INTERVAL = 60.0  # ClientConfig's default join_request_check_seconds (the tests' CONFIG keeps it)


def problem(status: int, code: str) -> Response:
    return Response(
        status=status,
        body=json.dumps({"status": status, "code": code, "detail": code}).encode(),
        content_type=PROBLEM_JSON,
    )


def is_check(request: Request) -> bool:
    return request.method == "GET" and "/join-requests/" in request.target


@dataclass
class Approval:
    """An admin's group that requires approval, and a newcomer whose request waits."""

    network: Network
    admin: Client
    newcomer: Client
    store: MemoryClientStore
    group_id: bytes

    @property
    def newcomer_key(self) -> bytes:
        assert self.newcomer.device is not None
        return self.newcomer.device.device_key

    def _admin_asks(self, method: str, target: str) -> Response:
        assert self.admin.device is not None
        return self.network.relay.handle(self.admin.device.device_key, method, target, b"")

    def deny(self) -> None:
        answer = self._admin_asks(
            "DELETE", api.delete_join_request(0, self.group_id, self.newcomer_key).target
        )
        assert json.loads(answer.body) == {"deleted": True}

    def approve(self) -> None:
        """As ``townsquare approve`` does: add by commit (with the Welcome), then delete."""
        listed = self._admin_asks("GET", api.list_join_requests(0, self.group_id).target)
        (request,) = api.parse_join_requests(listed)
        assert request.device_key == self.newcomer_key
        self.admin.add_key_packages(self.group_id, [request.key_package], now=self.network.now)
        self.network.settle([self.admin])
        assert self.newcomer_key in {m.device_key for m in self.admin.members(self.group_id)}
        self.deny()

    def join_records(self) -> list[tuple[str, bytes]]:
        return self.store.device_records().scan(JOIN_PREFIX)

    def checks(self) -> int:
        return sum(
            1
            for key, method, target in self.network.relay.requests
            if key == self.newcomer_key and method == "GET" and "/join-requests/" in target
        )

    def join_posts(self) -> int:
        return sum(
            1
            for key, method, target in self.network.relay.requests
            if key == self.newcomer_key and method == "POST" and target.endswith("/join-requests")
        )

    def catch_up(self, client: Client | None = None) -> None:
        client = client or self.newcomer
        client.sync(self.network.now)
        self.network.settle([client])


@pytest.fixture
def approval(network: Network, make_client, drain) -> Approval:
    admin = make_client("admin")
    group_id = admin.create_group(title="Committee", approval_required=True, now=network.now)
    network.settle([admin])
    secret = admin.create_invite(group_id, now=network.now)
    network.settle([admin])
    assert admin.invite_ready(group_id, secret)
    store = MemoryClientStore()
    newcomer = make_client("newcomer", store=store)
    newcomer.join(group_id, secret, now=network.now)
    network.settle([newcomer])
    assert JoinRequested(group_id) in drain(newcomer)
    assert newcomer.join_requested(group_id)
    drain(admin)
    return Approval(network, admin, newcomer, store, group_id)


def test_a_denied_request_ends_the_join_with_not_approved(approval, drain, reopen) -> None:
    approval.deny()
    approval.catch_up()
    events = drain(approval.newcomer)
    assert JoinFailed(approval.group_id, "not-approved") in events
    assert JoinFailed.NOT_APPROVED == "not-approved"
    assert not any(isinstance(e, GroupJoined) for e in events)
    assert not approval.newcomer.join_requested(approval.group_id)
    assert approval.newcomer.joining() == ()
    assert approval.join_records() == []
    # It does not ask again, nor check: not with time passing, not after a restart.
    checks, posts = approval.checks(), approval.join_posts()
    approval.network.run([approval.newcomer], seconds=5 * INTERVAL)
    restarted = reopen(approval.newcomer, approval.store, "newcomer/restarted")
    assert restarted.joining() == ()
    assert not restarted.join_requested(approval.group_id)
    approval.catch_up(restarted)
    approval.network.run([restarted], seconds=5 * INTERVAL)
    assert (approval.checks(), approval.join_posts()) == (checks, posts)
    assert not any(isinstance(e, JoinFailed) for e in drain(restarted))
    assert approval.group_id not in restarted.group_ids()


def test_an_approved_request_joins_without_join_failed(approval, drain) -> None:
    approval.approve()
    approval.catch_up()
    events = drain(approval.newcomer)
    assert any(isinstance(e, GroupJoined) and e.group_id == approval.group_id for e in events)
    assert not any(isinstance(e, JoinFailed) for e in events)
    assert approval.newcomer.joining() == ()
    assert approval.join_records() == []
    approval.network.run([approval.newcomer], seconds=3 * INTERVAL)
    assert not any(isinstance(e, JoinFailed) for e in drain(approval.newcomer))


def _next_request(approval: Approval, wanted) -> Request:
    """The client's next request that ``wanted`` picks; the others are sent as they come."""
    client, relay, now = approval.newcomer, approval.network.relay, approval.network.now
    while (request := client.next_request(now)) is not None:
        if wanted(request):
            return request
        answer = relay.handle(approval.newcomer_key, request.method, request.target, request.body)
        client.receive_response(request.request_id, answer, now)
    raise AssertionError("no such request")


def test_a_welcome_fetch_from_before_the_404_does_not_settle_the_request(approval, drain) -> None:
    """The check sees 404 first; the Welcome fetch then answering began before the approval."""
    client, relay, now = approval.newcomer, approval.network.relay, approval.network.now
    client.sync(now)
    early = _next_request(approval, lambda r: r.target == "/v1/welcomes")
    early_answer = relay.handle(approval.newcomer_key, early.method, early.target, early.body)
    assert api.parse_welcomes(early_answer) == []
    check = _next_request(approval, is_check)
    approval.approve()
    gone = relay.handle(approval.newcomer_key, check.method, check.target, check.body)
    assert (gone.status, api.parse_problem(gone).code) == (404, "join-request-not-found")
    client.receive_response(check.request_id, gone, now)
    client.receive_response(early.request_id, early_answer, now)
    assert not any(isinstance(e, JoinFailed) for e in drain(client))
    assert client.join_requested(approval.group_id)
    approval.network.settle([client])
    events = drain(client)
    assert any(isinstance(e, GroupJoined) and e.group_id == approval.group_id for e in events)
    assert not any(isinstance(e, JoinFailed) for e in events)
    assert approval.join_records() == []


def test_a_waiting_request_is_checked_again_after_the_interval(approval, drain) -> None:
    network, client = approval.network, approval.newcomer
    approval.catch_up()
    assert approval.checks() == 1
    assert drain(client) == []
    assert client.join_requested(approval.group_id)
    assert not client.has_work()
    assert client.get_timer() == pytest.approx(network.now + INTERVAL)
    network.advance(INTERVAL - 1)
    client.handle_timer(network.now)
    network.settle([client])
    assert approval.checks() == 1
    network.advance(1)
    client.handle_timer(network.now)
    network.settle([client])
    assert approval.checks() == 2
    # Every interval while it waits; nothing happens while the relay holds the request.
    network.run([client], seconds=3 * INTERVAL)
    assert approval.checks() == 5
    assert drain(client) == []
    # The push channel coming up is a catch-up: it checks at once.
    client.push_connected(network.now)
    network.settle([client])
    assert approval.checks() == 6
    assert approval.join_records() != []


def test_a_relay_error_is_retried_with_backoff(approval, drain) -> None:
    network, client = approval.network, approval.newcomer
    network.filter = lambda c, r: problem(503, "unavailable") if is_check(r) else "deliver"
    approval.deny()
    approval.catch_up()
    assert drain(client) == []
    assert client.has_work()
    retry_at = client.get_timer()
    assert retry_at is not None
    assert network.now < retry_at <= network.now + 1.0  # the core's usual Backoff
    network.filter = lambda c, r: "lose" if is_check(r) else "deliver"
    network.advance(retry_at - network.now)
    network.settle([client])
    assert drain(client) == []
    assert approval.join_records() != []
    network.filter = lambda c, r: "deliver"
    network.run([client], seconds=60)
    assert JoinFailed(approval.group_id, "not-approved") in drain(client)
    assert approval.join_records() == []


@pytest.mark.parametrize("code", ["join-request-not-found", "unknown-group"])
def test_either_404_means_the_request_is_gone(approval, drain, code) -> None:
    network = approval.network
    network.filter = lambda c, r: problem(404, code) if is_check(r) else "deliver"
    approval.catch_up()
    assert JoinFailed(approval.group_id, "not-approved") in drain(approval.newcomer)
    assert approval.join_records() == []


def test_another_refusal_is_not_a_denial(approval, drain) -> None:
    """A relay without the route (404 ``not-found``) says nothing of the request: keep it."""
    network, client = approval.network, approval.newcomer
    network.filter = lambda c, r: problem(404, "not-found") if is_check(r) else "deliver"
    approval.catch_up()
    events = drain(client)
    assert RelayFailure("join-requests", 404, "not-found") in events
    assert not any(isinstance(e, JoinFailed) for e in events)
    assert client.join_requested(approval.group_id)
    assert approval.join_records() != []


@pytest.mark.parametrize("answer", ["denied", "approved"])
def test_a_crash_between_the_404_and_the_welcome_fetch(approval, drain, reopen, answer) -> None:
    network = approval.network
    approval.deny() if answer == "denied" else approval.approve()
    network.filter = lambda c, r: "lose" if r.target == "/v1/welcomes" else "deliver"
    approval.catch_up()
    assert approval.checks() == 1
    assert drain(approval.newcomer) == []
    assert approval.join_records() != []
    # The process dies here: the 404 was seen, no Welcome fetch completed after it.
    restarted = reopen(approval.newcomer, approval.store, "newcomer/restarted")
    approval.newcomer = restarted
    assert restarted.join_requested(approval.group_id)
    # It checks again (the Welcome fetch of the catch-up, sent first, is lost until then)
    # and sees 404 again; this time a Welcome fetch completes after it.
    network.filter = lambda c, r: (
        "lose" if r.target == "/v1/welcomes" and approval.checks() < 2 else "deliver"
    )
    restarted.sync(network.now)
    network.run([restarted], seconds=INTERVAL)
    assert approval.checks() == 2
    events = drain(restarted)
    joined = [e for e in events if isinstance(e, GroupJoined)]
    failed = [e for e in events if isinstance(e, JoinFailed)]
    if answer == "denied":
        assert (joined, failed) == ([], [JoinFailed(approval.group_id, "not-approved")])
    else:
        assert [e.group_id for e in joined] == [approval.group_id]
        assert failed == []
    assert approval.join_records() == []
    assert restarted.joining() == ()


def test_the_check_asks_for_our_own_request(approval) -> None:
    client = approval.newcomer
    client.sync(approval.network.now)
    check = _next_request(approval, is_check)
    group, key = auth.encode_b64u(approval.group_id), auth.encode_b64u(approval.newcomer_key)
    assert check == api.get_join_request(check.request_id, approval.group_id, approval.newcomer_key)
    assert check.target == f"/v1/groups/{group}/join-requests/{key}"
    answer = approval.network.relay.handle(
        approval.newcomer_key, check.method, check.target, check.body
    )
    assert api.parse_join_request(answer).device_key == approval.newcomer_key


def test_an_answer_about_another_device_is_retried(approval, drain) -> None:
    network, client = approval.network, approval.newcomer
    other = {
        "group_id": auth.encode_b64u(approval.group_id),
        "device_key": auth.encode_b64u(b"\x01" * 32),
        "invite_key": auth.encode_b64u(b"\x02" * 32),
        "key_package": auth.encode_b64u(b"kp"),
        "sealed_note": auth.encode_b64u(b"note"),
        "created_at": 0,
    }
    network.filter = lambda c, r: (
        Response(status=200, body=json.dumps(other).encode()) if is_check(r) else "deliver"
    )
    approval.catch_up()
    assert drain(client) == []
    assert client.has_work()  # asked again after a backoff
    network.filter = lambda c, r: "deliver"
    network.run([client], seconds=10)
    assert drain(client) == []
    assert not client.has_work()
    assert client.join_requested(approval.group_id)


class _FailingScope:
    """The device scope, failing the batch that deletes a join record (a crash there)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.armed = True

    def get(self, key: str) -> bytes | None:
        return self.inner.get(key)

    def scan(self, prefix: str) -> list[tuple[str, bytes]]:
        return self.inner.scan(prefix)

    def apply(self, puts, deletes) -> None:
        if self.armed and any(key.startswith(JOIN_PREFIX) for key in deletes):
            self.armed = False
            raise StoreFailed("the disk is full")
        self.inner.apply(puts, deletes)


class _FailingStore:
    def __init__(self, inner: MemoryClientStore) -> None:
        self.inner = inner
        self.device = _FailingScope(inner.device_records())

    def device_records(self) -> _FailingScope:
        return self.device

    def group_records(self, group_id: bytes):
        return self.inner.group_records(group_id)

    def group_ids(self) -> list[bytes]:
        return self.inner.group_ids()


def test_a_failed_deletion_of_the_record_is_settled_after_the_restart(
    approval, drain, reopen
) -> None:
    network = approval.network
    approval.deny()
    failing = reopen(approval.newcomer, _FailingStore(approval.store), "newcomer/failing")
    assert failing.join_requested(approval.group_id)
    failing.sync(network.now)
    with pytest.raises(StoreFailed):
        network.settle([failing])
    assert not any(isinstance(e, JoinFailed) for e in drain(failing))
    assert approval.join_records() != []
    restarted = reopen(failing, approval.store, "newcomer/restarted")
    approval.catch_up(restarted)
    assert JoinFailed(approval.group_id, "not-approved") in drain(restarted)
    assert approval.join_records() == []
