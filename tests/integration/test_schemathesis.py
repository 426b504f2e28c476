"""
Schemathesis against the real relay's ``/openapi.json``, every request signed by a member device.

A ``townsquare serve`` subprocess is seeded over HTTP with real state: two
registered devices with KeyPackages, an MLS group (created by one device, which
adds the other by a real commit) and an invite. The schema is then loaded from
the running relay, so operations added later are covered without a list here,
and every operation gets a bounded, derandomized run of positive and negative
examples. A ``flatmap_case`` hook swaps, for a share of the examples, path
parameters and body fields for real values (the group, the devices, the
accounts, the invite, KeyPackages, an encrypted application message..., and
for any other path parameter the values earlier 2xx responses carried under
its name), so that examples get past "unknown group" into deeper checks.

Every request is signed as the member device over the exact method, target and
body bytes that ``requests`` sends (a registration is signed by the device it
registers, as the protocol requires). Checked for every response: no 5xx,
status, content type, headers and body as ``/openapi.json`` declares them,
errors as ``application/problem+json`` documents, and no 401 except
``signer-mismatch`` (a correctly signed request must authenticate). A table of
examples that passed authentication per operation is printed, added to the
terminal summary and recorded as a test property; each operation must have some.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.core.result import Err
from schemathesis.errors import FailureGroup

from townsquare import auth
from townsquare.auth import invites
from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.credentials import BasicCredential
from townsquare.mls.framing import MLSMessage
from townsquare.mls.group import Group
from townsquare.mls.key_package import KeyPackage, KeyPackageBundle, generate_key_package
from townsquare.mls.leaf_node import Lifetime
from townsquare.mls.proposals import Add
from townsquare.mls.registries import ProtocolVersion

pytestmark = pytest.mark.integration

#: Examples per operation and mode: enough to reach every documented answer of
#: a route, few enough that the whole run stays well under two minutes.
EXAMPLES = {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 12}
SETTINGS = settings(
    deadline=None,
    # The same examples on every run, so that a failure in CI replays locally.
    derandomize=True,
    database=None,
    # No shrinking: a failure is recorded with its request and the run goes on
    # to the other operations, so one report lists every distinct failure.
    phases=[Phase.generate],
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.negative_data_rejection,
]
Operation = APIOperation[Any, Any, Any, Any]
#: Explicit, so no ``schemathesis.toml`` around changes the run. A query parameter
#: the operation does not declare is not generated as a negative example: the
#: relay, like most HTTP servers, ignores unknown query parameters.
CONFIG = schemathesis.Config.from_dict({"generation": {"allow-extra-parameters": False}})
#: Stand-ins for the signature headers that ``/openapi.json`` declares: fixed,
#: so that schemathesis neither generates nor negates them, and replaced by
#: the real signature when the request is sent.
PLACEHOLDER_HEADERS = {
    auth.DEVICE_HEADER: "A" * 43,
    auth.TIMESTAMP_HEADER: "0",
    auth.NONCE_HEADER: "A" * 22,
    auth.SIGNATURE_HEADER: "A" * 86,
}
PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_PREFIX = "urn:townsquare:problem:"
SUITE_ID = 1
REGISTRATION_KINDS = ("new-account", "new-device", "member")
INVITE_SECONDS = 3600


def b64u(data: bytes) -> str:
    return auth.encode_b64u(data)


def rng(n: int) -> bytes:
    return secrets.token_bytes(n)


def bundle(identity: Any) -> KeyPackageBundle:
    """A fresh KeyPackage of the device, in suite 1, its leaf key the device key."""
    return generate_key_package(
        get_cipher_suite(SUITE_ID),
        credential=BasicCredential(identity.device_key),
        signature_private_key=identity.device_private,
        rng=rng,
        lifetime=Lifetime(0, 2**64 - 1),
    )


# -- Real state on the relay --------------------------------------------------------------


@dataclass
class RealState:
    """
    What the relay holds after seeding, and fresh real values for the case hook.

    ``member`` signs every request and is in ``group``; ``other`` is in it too
    and has KeyPackages to claim. ``registrations`` maps the device keys of
    certificates made for registration bodies to their private keys, so that
    such a request is signed by the device it registers.
    """

    http: httpx.Client
    member: Any
    other: Any
    group: Group
    new_identity: Callable[..., Any]
    invite_keys: invites.InviteKeys | None = None
    registrations: dict[str, bytes] = field(default_factory=dict)
    registrations_made: int = 0

    @property
    def group_id(self) -> str:
        return b64u(self.group.group_id)

    def post(self, identity: Any, path: str, body: object) -> httpx.Response:
        return self.http.post(path, json=body, auth=identity.signer())

    def key_package(self, identity: Any) -> str:
        package = bundle(identity).key_package
        return b64u(MLSMessage(ProtocolVersion.MLS10, package).encode())

    def refresh_invite(self) -> None:
        """Create a new invite, so that one is current whatever a previous run revoked."""
        self.invite_keys = invites.derive_invite_keys(invites.generate_invite_secret())
        created = self.post(
            self.member,
            f"/v1/groups/{self.group_id}/invites",
            {
                "invite_key": b64u(self.invite_keys.signing_public_key),
                "sealed_group_info": self.sealed_group_info(),
                "expires_at": int(time.time()) + INVITE_SECONDS,
                "max_uses": 10,
            },
        )
        assert created.status_code == 201, created.text

    @property
    def invite_key(self) -> str:
        assert self.invite_keys is not None
        return b64u(self.invite_keys.signing_public_key)

    def sealed_group_info(self) -> str:
        assert self.invite_keys is not None
        return b64u(
            invites.seal_group_info(self.invite_keys, self.group.group_id, self.group.group_info())
        )

    def registration(self) -> dict[str, object]:
        """
        A certificate body: a new account, a new device of the member's account, or the member's.

        The three take turns rather than being drawn, so that both registration
        routes see each of them however few certificates a run fills in.
        """
        kind = REGISTRATION_KINDS[self.registrations_made % len(REGISTRATION_KINDS)]
        self.registrations_made += 1
        if kind == "member":
            identity = self.member
        else:
            identity = (
                self.new_identity() if kind == "new-account" else self.member.another_device()
            )
            self.registrations[identity.device_id] = identity.device_private
        certificate: dict[str, object] = identity.registration()["certificate"]
        return certificate

    def new_group_info(self) -> str:
        """The GroupInfo of a new one-member group of the member, as ``POST /v1/groups`` takes."""
        return b64u(Group.create(bundle(self.member), group_id=rng(32), rng=rng).group_info())

    def application_message(self) -> str:
        return b64u(self.group.encrypt(b"schemathesis " + secrets.token_bytes(8), rng=rng))


def seed_relay(http: httpx.Client, new_identity: Callable[[], Any]) -> RealState:
    """Register two devices, make an MLS group of both and an invite, all over HTTP."""
    member, other = new_identity(), new_identity()
    for identity in (member, other):
        response = http.post("/v1/accounts", json=identity.registration(), auth=identity.signer())
        assert response.status_code == 201, response.text
    state = RealState(
        http=http,
        member=member,
        other=other,
        group=Group.create(bundle(member), group_id=rng(32), rng=rng),
        new_identity=new_identity,
    )
    uploaded = state.post(
        other,
        "/v1/key-packages",
        {
            "one_time": [state.key_package(other) for _ in range(4)],
            "last_resort": state.key_package(other),
        },
    )
    assert uploaded.status_code == 200, uploaded.text
    created = state.post(member, "/v1/groups", {"group_info": b64u(state.group.group_info())})
    assert created.status_code == 201, created.text

    # The member adds the other device with a KeyPackage claimed from the relay.
    claimed = state.post(member, f"/v1/devices/{other.device_id}/key-packages/claim", None)
    assert claimed.status_code == 200, claimed.text
    key_package = MLSMessage.decode(auth.decode_b64u(claimed.json()["key_package"])).body
    assert isinstance(key_package, KeyPackage)
    add = state.group.commit(rng=rng, proposals=[Add(key_package)])
    assert add.welcome is not None
    posted = state.post(
        member,
        f"/v1/groups/{state.group_id}/messages",
        {
            "client_message_id": b64u(rng(16)),
            "message": b64u(add.commit),
            "welcome": b64u(add.welcome),
            "group_info": b64u(add.group_info),
        },
    )
    assert posted.status_code == 201, posted.text
    state.group.merge(add.staged)
    state.refresh_invite()
    return state


# -- The case hook: real values for a share of the examples ------------------------------

#: How the hook fills a case: not at all, value by value (each keeps its generated
#: value or takes a real one), or every value that has a real counterpart, leaving
#: out optional body fields that have none (so an application message goes alone).
FILL_MODES = ("generated", "mixed", "real")


def body_fillers(state: RealState) -> dict[str, Callable[[], st.SearchStrategy[Any]]]:
    """Real values per JSON body field name, drawn fresh (KeyPackages and keys are single-use)."""
    return {
        "certificate": lambda: st.builds(state.registration),
        "one_time": lambda: st.integers(0, 3).map(
            lambda n: [state.key_package(state.member) for _ in range(n)]
        ),
        "last_resort": lambda: st.builds(lambda: state.key_package(state.member)),
        "group_info": lambda: st.builds(state.new_group_info),
        "message": lambda: st.builds(state.application_message),
        "invite_key": lambda: st.builds(lambda: b64u(auth.public_key(auth.generate_private_key()))),
        "expires_at": lambda: st.builds(lambda: int(time.time()) + INVITE_SECONDS),
        "sealed_group_info": lambda: st.builds(state.sealed_group_info),
        # The log holds the group's creation at 0 and the Add at 1: both acknowledge.
        "seq": lambda: st.integers(0, 1),
    }


def _maybe(original: object, real: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # Either the generated value or a real one, chosen by Hypothesis, so the share
    # is reproducible under derandomize.
    return st.one_of(st.just(original), real)


def _required_fields(case: Case[Any]) -> set[str]:
    alternative = (
        case.operation.get_body_for_media_type(case.media_type) if case.media_type else None
    )
    schema = getattr(alternative, "resolved_schema", None)
    if isinstance(schema, dict):
        return set(schema.get("required", ()))
    # Unknown: treat every field as required, so none is left out.
    return set(case.body) if isinstance(case.body, dict) else set()


class RealValues:
    """
    Real values by path parameter and body field name, and the hook that puts them in cases.

    The seeded state answers ``group_id``, ``account_key``, ``device_key`` and
    ``invite_key``. Any other path parameter (an attachment's ``hash``, say)
    takes the values that successful responses carried under its name, so
    that operations added later reach past "not found" without a change here.
    """

    def __init__(self, state: RealState, path_names: set[str]) -> None:
        self.state = state
        self.bodies = body_fillers(state)
        self.harvested: dict[str, list[str]] = {
            name: [] for name in path_names if not self.seeded(name)
        }

    def seeded(self, name: str) -> list[str]:
        state = self.state
        values = {
            "group_id": [state.group_id],
            "account_key": [state.member.account_id, state.other.account_id],
            "device_key": [state.member.device_id, state.other.device_id],
            "invite_key": [state.invite_key],
        }
        return values.get(name, [])

    def path_values(self, name: str) -> list[str]:
        return self.seeded(name) or list(self.harvested.get(name, ()))

    def harvest(self, document: object) -> None:
        """Keep the values a 2xx JSON response carries under a path parameter's name."""
        if not isinstance(document, dict):
            return
        for name, values in self.harvested.items():
            value = document.get(name)
            if isinstance(value, str) and value not in values and len(values) < 32:
                values.append(value)

    def flatmap_case(
        self, context: schemathesis.HookContext, case: Case[Any]
    ) -> st.SearchStrategy[Case[Any]]:
        """The ``flatmap_case`` hook."""
        return st.sampled_from(FILL_MODES).flatmap(lambda mode: self._filled(case, mode))

    def _filled(self, case: Case[Any], mode: str) -> st.SearchStrategy[Case[Any]]:
        if mode == "generated":
            return st.just(case)

        def choose(original: object, real: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
            return real if mode == "real" else _maybe(original, real)

        path: dict[str, st.SearchStrategy[Any]] = {}
        for name, value in (case.path_parameters or {}).items():
            values = self.path_values(name)
            path[name] = choose(value, st.sampled_from(values)) if values else st.just(value)
        body: st.SearchStrategy[Any] = st.just(case.body)
        if isinstance(case.body, dict):
            required = _required_fields(case)
            fields: dict[str, st.SearchStrategy[Any]] = {}
            for name, value in case.body.items():
                if name in self.bodies:
                    fields[name] = choose(value, self.bodies[name]())
                elif mode != "real" or name in required:
                    fields[name] = st.just(value)
            body = st.fixed_dictionaries(fields)

        def fill(parts: tuple[dict[str, Any], Any]) -> Case[Any]:
            # Only a changed container is assigned: schemathesis then revalidates the
            # case, so a negative example made valid is no longer expected to be
            # refused (and an untouched binary body keeps its positive label).
            path_parameters, new_body = parts
            if path_parameters != case.path_parameters:
                case.path_parameters = path_parameters
            if new_body != case.body:
                case.body = new_body
            return case

        return st.tuples(st.fixed_dictionaries(path), body).map(fill)


# -- Signing ------------------------------------------------------------------------------


class DeviceSignature(requests.auth.AuthBase):
    """
    Sign a request as the member device over the exact bytes ``requests`` will send.

    ``requests`` calls an auth after the body is encoded and the URL quoted, so
    ``path_url`` and ``body`` are what goes on the wire. A registration whose
    certificate names a device made by :meth:`RealState.registration` is signed
    by that device instead, as ``POST /v1/accounts`` and ``/v1/devices`` require.
    """

    def __init__(self, member_private: bytes, registrations: Mapping[str, bytes]) -> None:
        self.member_private = member_private
        self.registrations = registrations

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        assert isinstance(body, bytes), type(body)
        headers = auth.sign_request(
            device_private_key=self._signer(body),
            method=(request.method or "").upper(),
            target=request.path_url,
            body=body,
            timestamp=int(time.time()),
            nonce=secrets.token_bytes(auth.NONCE_BYTES),
        )
        request.headers.update(headers)
        return request

    def _signer(self, body: bytes) -> bytes:
        try:
            document = json.loads(body)
        except ValueError:
            return self.member_private
        certificate = document.get("certificate") if isinstance(document, dict) else None
        device_key = certificate.get("device_key") if isinstance(certificate, dict) else None
        if isinstance(device_key, str) and device_key in self.registrations:
            return self.registrations[device_key]
        return self.member_private


# -- Outcomes -----------------------------------------------------------------------------


def content_type(response: schemathesis.Response) -> str | None:
    # Schemathesis keeps headers with lower-case names and a list of values each.
    values = response.headers.get("content-type")
    return values[0] if values else None


def problem_code(response: schemathesis.Response) -> str | None:
    if content_type(response) != PROBLEM_MEDIA_TYPE:
        return None
    try:
        document = json.loads(response.content)
    except ValueError:
        return None
    code = document.get("code") if isinstance(document, dict) else None
    return code if isinstance(code, str) else None


def is_authenticated(status: int, code: str | None) -> bool:
    """Whether the request got past request signing: not a 401, not a replayed nonce."""
    return status != 401 and code != "replayed-request"


def problem_failures(status: int, content_type: str | None, content: bytes) -> list[str]:
    """What is wrong with an error response as an RFC 9457 problem of the relay."""
    if status < 400:
        return []
    if content_type != PROBLEM_MEDIA_TYPE:
        return [f"{status} answered as {content_type!r}, not {PROBLEM_MEDIA_TYPE}"]
    try:
        document = json.loads(content)
    except ValueError:
        return [f"{status} problem body is not JSON: {content[:200]!r}"]
    if not isinstance(document, dict):
        return [f"{status} problem body is not an object"]
    wrong = []
    if document.get("status") != status:
        wrong.append(f"problem status {document.get('status')!r} on a {status} response")
    code = document.get("code")
    if not isinstance(code, str) or document.get("type") != PROBLEM_PREFIX + code:
        wrong.append(f"problem type {document.get('type')!r} does not match code {code!r}")
    if not isinstance(document.get("title"), str) or not isinstance(document.get("detail"), str):
        wrong.append("problem without a title and a detail")
    return wrong


@dataclass
class Tally:
    """Per operation: examples sent by mode, examples that passed authentication, 2xx answers."""

    sent: dict[str, Counter[GenerationMode]] = field(default_factory=dict)
    authenticated: Counter[str] = field(default_factory=Counter)
    succeeded: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    unsatisfiable: set[tuple[str, GenerationMode]] = field(default_factory=set)

    def record(self, label: str, mode: GenerationMode, status: int, code: str | None) -> None:
        self.sent.setdefault(label, Counter())[mode] += 1
        self.statuses.setdefault(label, Counter())[status] += 1
        if is_authenticated(status, code):
            self.authenticated[label] += 1
        if 200 <= status < 300:
            self.succeeded[label] += 1

    def table(self, labels: list[str]) -> list[str]:
        width = max(len(label) for label in labels)
        lines = [f"{'operation':<{width}}  examples (+/-)  authenticated  2xx  statuses"]
        for label in labels:
            sent = self.sent.get(label, Counter())
            counts = "/".join(
                "-" if (label, mode) in self.unsatisfiable else str(sent[mode]) for mode in EXAMPLES
            )
            statuses = " ".join(
                f"{status}x{count}"
                for status, count in sorted(self.statuses.get(label, Counter()).items())
            )
            lines.append(
                f"{label:<{width}}  {counts:>14}  {self.authenticated[label]:>13}"
                f"  {self.succeeded[label]:>3}  {statuses}"
            )
        return lines


class TerminalSummary:
    """A plugin registered at run time, so the table also ends pytest's output without -s."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        terminalreporter.section("schemathesis: examples that passed authentication")
        for line in self.lines:
            terminalreporter.write_line(line)


# -- The run ------------------------------------------------------------------------------


class SchemathesisRun:
    """Sends each generated case signed, records its outcome and every distinct failure."""

    def __init__(self, base_url: str, session: requests.Session, state: RealState) -> None:
        self.base_url = base_url
        self.session = session
        self.state = state
        self.signer = DeviceSignature(state.member.device_private, state.registrations)
        self.tally = Tally()
        self.failures: dict[tuple[str, str], str] = {}
        self.real_values: RealValues | None = None

    def load_operations(self) -> list[Operation]:
        """Every operation ``/openapi.json`` lists, with the real-value hook on this schema only."""
        schema = schemathesis.openapi.from_url(f"{self.base_url}/openapi.json", config=CONFIG)
        operations = []
        for result in schema.get_all_operations():
            if isinstance(result, Err):
                raise result.err()
            operations.append(result.ok())
        path_names = {p.name for operation in operations for p in operation.path_parameters}
        self.real_values = RealValues(self.state, path_names)
        schema.hooks.register_hook_with_name(self.real_values.flatmap_case, "flatmap_case")
        return operations

    def run_operation(self, operation: Operation) -> None:
        for mode, examples in EXAMPLES.items():
            # A fresh invite for every run: an earlier one may have revoked them all.
            self.state.refresh_invite()
            try:
                self._run(operation, mode, examples)
            except Unsatisfiable:
                # Nothing to negate: the only input is fixed (the signature headers
                # of GET /healthz) or cannot be sent invalid (a binary body).
                if mode is not GenerationMode.NEGATIVE:
                    raise
                self.tally.unsatisfiable.add((operation.label, mode))

    def _run(self, operation: Operation, mode: GenerationMode, examples: int) -> None:
        strategy = operation.as_strategy(generation_mode=mode, headers=PLACEHOLDER_HEADERS)

        @settings(SETTINGS, max_examples=examples)
        @given(case=strategy)
        def run(case: Case[Any]) -> None:
            self.exercise(case, mode)

        run()

    def exercise(self, case: Case[Any], mode: GenerationMode) -> None:
        label = case.operation.label
        response = case.call(base_url=self.base_url, session=self.session, auth=self.signer)
        code = problem_code(response)
        self.tally.record(label, mode, response.status_code, code)
        if 200 <= response.status_code < 300 and content_type(response) == "application/json":
            assert self.real_values is not None
            self.real_values.harvest(json.loads(response.content))
        found = problem_failures(response.status_code, content_type(response), response.content)
        # Every request is signed correctly by a registered device with a fresh
        # nonce: the only 401 it may meet is a registration signed by the member
        # for a certificate of another device.
        if response.status_code == 401 and code != "signer-mismatch":
            found.append(f"a correctly signed request was refused: {code}")
        for message in found:
            curl = case.as_curl_command(headers=dict(response.request.headers))
            self.failures.setdefault((label, message), f"{message}\n{curl}")
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as group:
            for failure in group.exceptions:
                self.failures.setdefault((label, failure.title), str(group))


# -- The test -----------------------------------------------------------------------------


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    own_relay_process: Any,
    new_identity: Callable[[], Any],
    record_property: Callable[[str, object], None],
    request: pytest.FixtureRequest,
) -> None:
    base_url = own_relay_process.url
    with httpx.Client(base_url=base_url, timeout=10.0) as http, requests.Session() as session:
        run = SchemathesisRun(base_url, session, seed_relay(http, new_identity))
        labels = []
        for operation in run.load_operations():
            labels.append(operation.label)
            run.run_operation(operation)

    lines = run.tally.table(labels)
    print("\n" + "\n".join(lines))  # noqa: T201 - pytest -s shows the table
    record_property(
        "schemathesis_authenticated",
        json.dumps({label: run.tally.authenticated[label] for label in labels}),
    )
    request.config.pluginmanager.register(TerminalSummary(lines))

    assert labels, "/openapi.json lists no operation"
    assert not run.failures, "\n\n".join(run.failures.values())
    unauthenticated = [label for label in labels if run.tally.authenticated[label] == 0]
    assert unauthenticated == [], "operations with no example that passed authentication"
