"""
The client core: one device's groups, outbox, cursors and message store, sans-I/O.

A :class:`Client` is a state machine in the manner of aioquic's
``QuicConnection``. Its only inputs are

- API calls (:meth:`Client.initialize`, :meth:`Client.create_group`,
  :meth:`Client.send`, :meth:`Client.add_members`, :meth:`Client.remove_member`,
  :meth:`Client.leave`, :meth:`Client.sync`, …),
- answers to the requests it asked for (:meth:`Client.receive_response`,
  :meth:`Client.request_failed`),
- pushes from the relay's WebSocket (:meth:`Client.receive_push`,
  :meth:`Client.push_connected`, :meth:`Client.push_disconnected`),
- the passing of time (:meth:`Client.handle_timer`);

and its outputs are pulled: :meth:`Client.next_request` (an HTTP request as a
value, for the driver to sign and send), :meth:`Client.get_timer` and
:meth:`Client.next_event`. Every input is told ``now``; nothing reads a
clock, socket or file except through the :class:`ClientStore` seam, and
randomness comes from the injected ``rng``.

Townsquare choice: ``now`` is Unix time in seconds (a float). The core needs
calendar time (KeyPackage lifetimes, RFC 9420 §7.2; the ``sent_at`` of
messages) as much as it needs timers; one clock keeps the inputs simple, and
a clock step only lengthens or shortens one backoff.

Durability (``docs/sdk.md``): each transition of a group is one atomic batch
in that group's scope, written through
:class:`~townsquare.mls.group_store.GroupPersistence`, and events are queued
only once their batch is stored::

    send(text) ──► encrypt ──► batch{group state, outbox entry} ──► returns
    next_request ──► POST …/messages ──► 2xx seq ──► batch{outbox entry gone, msg/<seq>}
                                      └─► stale-epoch ──► fetch, merge ──► re-encrypt (same id)
    fetch ──► for each entry after the cursor, in order:
                ours (digest in the outbox, or sent/<seq>) ──► accounted for, skipped
                application ──► decrypt, decode, msg/<seq>
                proposal ──► held;  commit ──► merge (ours: our pending commit)
              ──► batch{group state, messages, cursor}
    a batch fails ──► the group is reloaded from the store; StoreFailed is raised

A join request (a group that requires approval) waits for an admin; the core
reads it at every catch-up (:meth:`Client.sync`) and every
``join_request_check_seconds`` while it waits. The approver stores the
Welcome before it deletes the request, so a request found gone means a
Welcome waits, or none ever will::

    waiting ──► GET …/join-requests/{our key} ──► 200 ──► waiting (check again later)
                                              ├─► 404 ──► gone ──► GET /v1/welcomes (started after)
                                              │            ├─► a Welcome joins us ──► record dropped
                                              │            └─► none ──► record dropped, JoinFailed
                                              └─► network, 5xx ──► backoff, ask again
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from townsquare import auth, wire
from townsquare.auth import group_policy as rules
from townsquare.auth import invites as invite_keys
from townsquare.client.core import relay_api as api
from townsquare.client.core.device import Device, check_device_credential, device_capabilities
from townsquare.client.core.events import (
    AddFailed,
    CommitAccepted,
    CommitRejected,
    DeviceRegistered,
    EpochAdvanced,
    Event,
    GroupCreated,
    GroupJoined,
    GroupResynced,
    InviteFailed,
    InviteReady,
    JoinFailed,
    JoinRequested,
    KeyPackagesUploaded,
    MemberJoined,
    MemberLeft,
    MessageReceived,
    MessageSent,
    MessageUndecryptable,
    ProfileChanged,
    RelayFailure,
    RemovedFromGroup,
    ResyncRequired,
    SendFailed,
    TitleChanged,
)
from townsquare.client.core.groups import (
    CURSOR_KEY,
    META_KEY,
    PROFILE_PREFIX,
    RESYNC_KEY,
    TITLE_KEY,
    GroupSettings,
    GroupStatus,
    GroupSummary,
    MemberInfo,
    check_transition,
    decode_cursor,
    decode_named,
    decode_status,
    encode_cursor,
    encode_named,
    encode_status,
    profile_key,
)
from townsquare.client.core.invites import (
    INVITE_PREFIX,
    JOIN_PREFIX,
    InviteRecord,
    JoinRecord,
    decode_invite,
    decode_join,
    invite_record_key,
    join_record_key,
)
from townsquare.client.core.key_packages import KeyPackagePool, PooledKeyPackage
from townsquare.client.core.messages import (
    MESSAGE_PREFIX,
    StoredMessage,
    decode_message_record,
    decode_wire,
    encode_message_record,
    message_id_key,
    message_key,
)
from townsquare.client.core.outbox import (
    OUTBOX_PREFIX,
    CommitIntent,
    EntryKind,
    OutboxEntry,
    decode_entry,
    encode_entry,
    outbox_key,
    sent_key,
)
from townsquare.client.core.retry import Backoff, Slot
from townsquare.client.core.store import ClientStore
from townsquare.client.errors import (
    AlreadyInitialized,
    GroupClosed,
    InvalidInvite,
    InvalidMessage,
    NotAGroupMember,
    NotAnAdmin,
    NotInitialized,
    ProtocolError,
    StoreCorrupt,
    StoreError,
    StoreFailed,
    UnknownGroup,
    UsageError,
)
from townsquare.mls.ciphersuite import CipherSuite, Rng, get_cipher_suite
from townsquare.mls.errors import DecodeError, MLSError
from townsquare.mls.extensions import Extension
from townsquare.mls.framing import MLSMessage
from townsquare.mls.group import ApplicationMessage, ExternalJoin, Group, GroupConfig, StagedCommit
from townsquare.mls.group_store import GroupNotStored, GroupPersistence, GroupStore
from townsquare.mls.group_store import StoreCorrupt as MLSStoreCorrupt
from townsquare.mls.key_package import KeyPackage, validate_key_package
from townsquare.mls.proposals import Add, ExternalInit, GroupContextExtensions, Proposal, Remove
from townsquare.mls.public_group import peek
from townsquare.mls.ratchet_tree import RatchetTree
from townsquare.mls.registries import ContentType
from townsquare.mls.tree_math import LeafIndex
from townsquare.mls.welcome import GroupInfo, Welcome

__all__ = ["Client", "ClientConfig"]

_DEVICE_KEY = "device"
_REGISTERED_KEY = "registered"
_DISPLAY_NAME_KEY = "display-name"
_MESSAGE_ID_BYTES = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """
    The client's policy.

    :param cipher_suite: the MLS cipher suite of new groups and KeyPackages (RFC 9420 §17.1).
    :param key_packages_target: one-time KeyPackages to keep on the relay.
    :param key_packages_low_water: top up when the relay holds fewer than this.
    :param key_package_lifetime_seconds: how long a KeyPackage stays valid.
    :param fetch_limit: log entries per fetch.
    :param retry: the backoff after a failed request.
    :param poll_interval_seconds: how often to fetch every group while the push channel is down.
    :param commit_delay_seconds: the most a device waits (at random) before committing
        another member's proposal, so that not every member online commits at once.
    :param padding_block: pad application messages to a multiple of this (RFC 9420 §6.3.1).
    :param max_past_epochs: past epochs whose keys are kept for late messages.
    :param invite_lifetime_seconds: how long a new invite link works.
    :param invite_max_uses: how many devices may join by one invite link.
    :param join_request_check_seconds: how often to ask whether our join request still
        waits for an admin (besides at every :meth:`Client.sync`).
    """

    cipher_suite: int = 1
    key_packages_target: int = 20
    key_packages_low_water: int = 5
    key_package_lifetime_seconds: int = 90 * 86_400
    fetch_limit: int = 100
    retry: Backoff = field(default_factory=Backoff)
    poll_interval_seconds: float = 60.0
    commit_delay_seconds: float = 3.0
    padding_block: int = 32
    max_past_epochs: int = 2
    invite_lifetime_seconds: int = 30 * 86_400
    invite_max_uses: int = 1_000
    join_request_check_seconds: float = 60.0

    def group_config(self) -> GroupConfig:
        """
        :returns: the MLS policy of every group: Townsquare credentials, public handshakes.
        """
        return GroupConfig(
            credential_validator=check_device_credential,
            public_handshake=True,
            padding_block=self.padding_block,
            max_past_epochs=self.max_past_epochs,
        )


# -- What each request in flight is for ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Register:
    pass


@dataclass(frozen=True, slots=True)
class _Count:
    pass


@dataclass(frozen=True, slots=True)
class _Upload:
    refs: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class _Welcomes:
    #: The groups whose join request was found gone before this fetch started: its
    #: answer settles them (joined by a Welcome, or not approved).
    settles: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class _Claim:
    group_id: bytes
    number: int
    account_key: bytes


@dataclass(frozen=True, slots=True)
class _Send:
    group_id: bytes
    number: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class _Fetch:
    group_id: bytes
    after: int
    limit: int


@dataclass(frozen=True, slots=True)
class _CursorAck:
    group_id: bytes
    seq: int


@dataclass(frozen=True, slots=True)
class _InviteSync:
    group_id: bytes
    invite_key: bytes
    epoch: int
    create: bool


@dataclass(frozen=True, slots=True)
class _ExternalInfo:
    group_id: bytes
    by_invite: bool


@dataclass(frozen=True, slots=True)
class _ExternalPost:
    group_id: bytes
    digest: bytes


@dataclass(frozen=True, slots=True)
class _JoinRequestPost:
    group_id: bytes


@dataclass(frozen=True, slots=True)
class _JoinRequestCheck:
    group_id: bytes


_Purpose = (
    _Register
    | _Count
    | _Upload
    | _Welcomes
    | _Claim
    | _Send
    | _Fetch
    | _CursorAck
    | _InviteSync
    | _ExternalInfo
    | _ExternalPost
    | _JoinRequestPost
    | _JoinRequestCheck
)

#: Problem codes of ``GET …/join-requests/{device_key}`` meaning no request of ours waits.
_REQUEST_GONE_CODES = frozenset({"join-request-not-found", "unknown-group"})

#: Problem codes that end a join by link for good.
_JOIN_REFUSALS = frozenset(
    {
        "invite-not-found",
        "invite-expired",
        "invite-used-up",
        "invite-signature-invalid",
        "external-commit-refused",
        "invalid-commit",
        "unknown-group",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class _BuiltExternal:
    """
    An external commit ready to post, and the group it leads to once accepted.
    """

    join: ExternalJoin
    group_info: bytes
    client_message_id: bytes
    invite_key: bytes | None
    invite_signature: bytes | None
    digest: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class _BuiltRequest:
    """
    A join request ready to post, for a group that requires an admin's approval.
    """

    key_package: bytes
    sealed_note: bytes
    invite_key: bytes
    invite_signature: bytes


class _External:
    """
    An external commit being made (RFC 9420 §12.4.3.2): a join by invite link, or a resync.

    A join reads the invite's sealed GroupInfo (``secret`` set); a resync, or a
    join whose commit the relay stored before a crash (so that the device is
    a member already), reads the group's current GroupInfo as a member.

    Once ``requested``, ``slot`` is the check of our join request (see the module
    docstring): wanted at each catch-up and at ``check_at``; ``request_gone`` once the
    relay said it no longer waits, until a Welcome fetch started after that settles it.
    Neither is stored: after a restart the request is checked again.
    """

    __slots__ = (
        "built",
        "by_invite",
        "check_at",
        "group_id",
        "request_gone",
        "requested",
        "secret",
        "slot",
    )

    def __init__(self, group_id: bytes, secret: bytes | None, *, requested: bool = False) -> None:
        self.group_id = group_id
        self.secret = secret
        self.by_invite = secret is not None
        # Asked an approving group's admins; waiting for their Welcome.
        self.requested = requested
        self.slot = Slot(wanted=not requested)
        self.built: _BuiltExternal | _BuiltRequest | None = None
        # When to check the waiting request next (None: at the next catch-up).
        self.check_at: float | None = None
        self.request_gone = False


class _Outcome(enum.Enum):
    """
    What an answer means for the request that got it.
    """

    OK = "ok"  # 2xx
    EXISTS = "exists"  # it was done before (a retry of a request that arrived)
    STALE = "stale"  # stale-epoch, commit-conflict: catch up and rebuild
    NOT_MEMBER = "not-member"  # the relay says we are out: catch up to learn why
    GONE = "gone"  # 410: the log was pruned past our cursor
    REREGISTER = "reregister"  # unknown-device: the relay does not know us (any more)
    RETRY = "retry"  # transport failure, 5xx, 429, clock skew
    REFUSED = "refused"  # any other 4xx: retrying the same request will not help


_EXISTS_CODES = frozenset(
    {"account-exists", "device-exists", "group-exists", "duplicate-key-package"}
)
_STALE_CODES = frozenset({"stale-epoch", "commit-conflict"})
_RETRY_CODES = frozenset({"stale-timestamp", "replayed-request", "rate-limited"})


@dataclass(frozen=True, slots=True)
class _Answer:
    """
    An answer being handled: its request's slot, what it means, and when it came.
    """

    slot: Slot
    outcome: _Outcome
    problem: api.Problem | None
    response: api.Response
    now: float


@dataclass(frozen=True, slots=True, kw_only=True)
class _Merge:
    """
    What merging a commit from the log needs besides the commit.
    """

    before: dict[LeafIndex, bytes]
    own: OutboxEntry | None
    txn: _Txn
    now: float


def _classify(response: api.Response) -> tuple[_Outcome, api.Problem | None]:
    if response.ok:
        return _Outcome.OK, None
    problem = api.parse_problem(response)
    status, code = response.status, problem.code
    outcome = _Outcome.REFUSED
    if code in _EXISTS_CODES:
        outcome = _Outcome.EXISTS
    elif code in _STALE_CODES:
        outcome = _Outcome.STALE
    elif code == "not-a-member":
        outcome = _Outcome.NOT_MEMBER
    elif code == "unknown-device":
        outcome = _Outcome.REREGISTER
    elif status == 410:
        outcome = _Outcome.GONE
    elif code in _RETRY_CODES or status in (408, 425, 429) or status >= 500:
        outcome = _Outcome.RETRY
    return outcome, problem


def _digest(message: bytes) -> bytes:
    return hashlib.sha256(message).digest()


def _short(data: bytes) -> str:
    return data[:4].hex()


class _Txn:
    """
    The application records and events of one batch, applied by one ``GroupPersistence.save``.
    """

    __slots__ = ("deletes", "events", "puts", "store")

    def __init__(self, store: GroupStore) -> None:
        self.store = store
        self.puts: dict[str, bytes] = {}
        self.deletes: set[str] = set()
        self.events: list[Event] = []

    def get(self, key: str) -> bytes | None:
        if key in self.puts:
            return self.puts[key]
        if key in self.deletes:
            return None
        return self.store.get(key)

    def put(self, key: str, value: bytes) -> None:
        self.deletes.discard(key)
        self.puts[key] = value

    def delete(self, key: str) -> None:
        self.puts.pop(key, None)
        self.deletes.add(key)


class _GroupState:
    """
    One group in memory: its persisted state, cursor, outbox, and request slots.
    """

    __slots__ = (
        "acked_cursor",
        "commit_not_before",
        "cursor",
        "cursor_ack",
        "fetch",
        "group_id",
        "invite_records",
        "invites",
        "needs_resync",
        "outbox",
        "persistence",
        "reseal_epoch",
        "send",
        "send_blocked",
        "stale_epoch",
        "status",
    )

    def __init__(self, group_id: bytes) -> None:
        self.group_id = group_id
        self.persistence: GroupPersistence | None = None
        self.status = GroupStatus.ACTIVE
        self.cursor = 0
        self.acked_cursor = 0
        self.outbox: dict[int, OutboxEntry] = {}
        self.needs_resync = False
        self.fetch = Slot()
        self.send = Slot()
        self.cursor_ack = Slot()
        # After a stale answer, the outbox head waits for the next fetch to finish.
        self.send_blocked = False
        self.stale_epoch: int | None = None
        self.commit_not_before = 0.0
        self.invites = Slot()
        self.invite_records: dict[bytes, InviteRecord] = {}
        # The epoch this device committed or joined at: it reseals every invite it
        # holds the secret of (another's invites only then, its own always).
        self.reseal_epoch = -1

    @property
    def group(self) -> Group:
        if self.persistence is None:  # pragma: no cover - set by _load_group
            raise RuntimeError("group state not loaded")
        return self.persistence.group

    def saver(self) -> GroupPersistence:
        if self.persistence is None:  # pragma: no cover - set by _load_group
            raise RuntimeError("group state not loaded")
        return self.persistence

    @property
    def store(self) -> GroupStore:
        if self.persistence is None:  # pragma: no cover - set by _load_group
            raise RuntimeError("group state not loaded")
        return self.persistence.store

    def head(self) -> OutboxEntry | None:
        return next(iter(self.outbox.values()), None)


class Client:
    """
    One device's client state machine (see the module docstring for its inputs and outputs).
    """

    __slots__ = (
        "_config",
        "_count",
        "_device",
        "_display_name",
        "_events",
        "_external",
        "_group_config",
        "_groups",
        "_in_flight",
        "_last_now",
        "_next_number",
        "_next_request_id",
        "_poll_at",
        "_pool",
        "_register",
        "_registered",
        "_rng",
        "_store",
        "_suite",
        "_unuploaded",
        "_upload",
        "_welcomes",
    )

    def __init__(self, store: ClientStore, *, rng: Rng, config: ClientConfig | None = None) -> None:
        """
        Load the device and its groups from ``store`` (empty for a new home).

        :param store: the device's store.
        :param rng: the randomness source (keys, message ids, jitter).
        :param config: the client's policy.
        :raises StoreCorrupt: if the store's records do not decode or fit together.
        """
        self._store = store
        self._rng = rng
        self._config = config or ClientConfig()
        self._group_config = self._config.group_config()
        self._suite: CipherSuite = get_cipher_suite(self._config.cipher_suite)
        self._events: deque[Event] = deque()
        self._in_flight: dict[int, _Purpose] = {}
        self._next_request_id = 1
        self._next_number = 0
        self._groups: dict[bytes, _GroupState] = {}
        self._register = Slot()
        self._count = Slot()
        self._upload = Slot()
        self._welcomes = Slot()
        self._poll_at: float | None = None
        self._last_now = 0.0
        self._device: Device | None = None
        self._pool: KeyPackagePool | None = None
        self._registered = False
        self._display_name: str | None = None
        self._unuploaded: list[PooledKeyPackage] = []
        self._external: dict[bytes, _External] = {}

        records = store.device_records()
        device_bytes = records.get(_DEVICE_KEY)
        if device_bytes is not None:
            self._load_device(Device.decode(device_bytes))
        for group_id in store.group_ids():
            self._load_group(group_id)
        for key, value in records.scan(JOIN_PREFIX):
            group_id = bytes.fromhex(key[len(JOIN_PREFIX) :])
            join = decode_join(key, value)
            self._external[group_id] = _External(
                group_id, join.secret, requested=bool(join.requested)
            )
        for state in self._groups.values():
            if state.needs_resync and not state.status.closed:
                self._external.setdefault(state.group_id, _External(state.group_id, None))

    def _load_device(self, device: Device) -> None:
        records = self._store.device_records()
        self._device = device
        self._pool = KeyPackagePool(records, device, self._suite)
        self._registered = records.get(_REGISTERED_KEY) is not None
        name = records.get(_DISPLAY_NAME_KEY)
        self._display_name = None if name is None else name.decode("utf-8")
        self._unuploaded = [p for p in self._pool.all() if not p.uploaded]
        self._register.wanted = not self._registered
        self._upload.wanted = bool(self._unuploaded)

    def _load_group(self, group_id: bytes) -> _GroupState:
        """
        (Re)load one group from its scope, keeping its request slots.
        """
        state = self._groups.get(group_id) or _GroupState(group_id)
        store = self._store.group_records(group_id)
        try:
            persistence = GroupPersistence.load(store, config=self._group_config)
        except GroupNotStored as exc:
            raise StoreCorrupt(f"group {_short(group_id)} has records but no MLS state") from exc
        except (MLSStoreCorrupt, DecodeError) as exc:
            raise StoreCorrupt(f"group {_short(group_id)}'s MLS state is corrupt") from exc
        meta = store.get(META_KEY)
        cursor = store.get(CURSOR_KEY)
        if meta is None or cursor is None:
            raise StoreCorrupt(f"group {_short(group_id)} lacks its status or cursor")
        state.persistence = persistence
        state.status = decode_status(meta)
        state.cursor = decode_cursor(cursor)
        state.needs_resync = store.get(RESYNC_KEY) is not None
        outbox: dict[int, OutboxEntry] = {}
        for key, value in store.scan(OUTBOX_PREFIX):
            number = int(key[len(OUTBOX_PREFIX) :])
            try:
                outbox[number] = decode_entry(number, value)
            except (DecodeError, ValueError) as exc:
                raise StoreCorrupt(f"outbox record {key!r} does not decode") from exc
            self._next_number = max(self._next_number, number + 1)
        state.outbox = outbox
        state.send_blocked = False
        state.invite_records = {
            bytes.fromhex(key[len(INVITE_PREFIX) :]): decode_invite(key, value)
            for key, value in store.scan(INVITE_PREFIX)
        }
        state.invites.wanted = bool(state.invite_records)
        self._groups[group_id] = state
        return state

    # -- Reading the state ---------------------------------------------------------------

    @property
    def device(self) -> Device | None:
        """
        This device, or ``None`` before :meth:`initialize`.
        """
        return self._device

    @property
    def registered(self) -> bool:
        """
        Whether the relay has registered this device.
        """
        return self._registered

    @property
    def display_name(self) -> str | None:
        """
        The name this device announces in its groups (a Profile message), or ``None``.
        """
        return self._display_name

    def group_ids(self) -> tuple[bytes, ...]:
        """
        :returns: the ids of every group this device holds (open or closed).
        """
        return tuple(self._groups)

    def _state(self, group_id: bytes) -> _GroupState:
        state = self._groups.get(group_id)
        if state is None:
            raise UnknownGroup(f"no group {_short(group_id)} on this device")
        return state

    def group(self, group_id: bytes) -> GroupSummary:
        """
        :returns: what this device knows of the group.
        :raises UnknownGroup: if it holds no such group.
        """
        state = self._state(group_id)
        title = state.store.get(TITLE_KEY)
        return GroupSummary(
            group_id=group_id,
            status=state.status,
            epoch=state.group.epoch,
            title=None if title is None else decode_named(TITLE_KEY, title).text,
            cursor=state.cursor,
            members=len(state.group.members()),
            outbox=len(state.outbox),
            needs_resync=state.needs_resync,
        )

    def _names(self, state: _GroupState) -> dict[bytes, str]:
        names = {}
        for key, value in state.store.scan(PROFILE_PREFIX):
            names[bytes.fromhex(key[len(PROFILE_PREFIX) :])] = decode_named(key, value).text
        return names

    def members(self, group_id: bytes) -> tuple[MemberInfo, ...]:
        """
        :returns: the members of the group's current epoch (as last known, if closed).
        :raises UnknownGroup: if this device holds no such group.
        """
        state = self._state(group_id)
        names = self._names(state)
        group = state.group
        return tuple(
            MemberInfo(
                device_key=m.leaf_node.signature_key,
                leaf_index=int(m.leaf_index),
                display_name=names.get(m.leaf_node.signature_key),
                is_self=m.leaf_index == group.own_leaf,
            )
            for m in group.members()
        )

    def messages(self, group_id: bytes) -> tuple[StoredMessage, ...]:
        """
        :returns: the group's stored messages in log order, each with its sender's current name.
        :raises UnknownGroup: if this device holds no such group.
        :raises StoreCorrupt: if a record does not decode.
        """
        state = self._state(group_id)
        names = self._names(state)
        out = []
        for key, value in state.store.scan(MESSAGE_PREFIX):
            try:
                message = decode_message_record(group_id, value)
            except (DecodeError, wire.InvalidMessage) as exc:
                raise StoreCorrupt(f"message record {key!r} does not decode") from exc
            out.append(message.named(names.get(message.sender)))
        return tuple(out)

    def queued(self, group_id: bytes) -> tuple[bytes, ...]:
        """
        :returns: the wire message ids of the group's messages still in the outbox, in order.
        :raises UnknownGroup: if this device holds no such group.
        """
        state = self._state(group_id)
        return tuple(
            e.client_message_id for e in state.outbox.values() if e.kind == EntryKind.MESSAGE
        )

    def message_state(self, group_id: bytes, message_id: bytes) -> str | None:
        """
        :returns: ``"queued"`` while our message waits in the outbox, ``"sent"`` once the relay
            acknowledged it, ``None`` if this device holds no such message of its own.
        :raises UnknownGroup: if this device holds no such group.
        """
        state = self._state(group_id)
        if message_id in self.queued(group_id):
            return "queued"
        device = self._device
        if device is not None and state.store.get(message_id_key(device.device_key, message_id)):
            return "sent"
        return None

    # -- API calls -------------------------------------------------------------------------

    def _require_device(self) -> tuple[Device, KeyPackagePool]:
        if self._device is None or self._pool is None:
            raise NotInitialized("this home holds no device yet")
        return self._device, self._pool

    def initialize(self, *, display_name: str | None, now: float) -> Device:
        """
        Create this device (a new account with its first device) and its KeyPackages.

        The device is stored before this returns; registering it with the relay
        and uploading the KeyPackages are requests that follow.

        :param display_name: the name to announce in groups (a Profile message), or ``None``.
        :param now: Unix seconds.
        :returns: the device.
        :raises AlreadyInitialized: if the store already holds a device.
        :raises InvalidMessage: if the name breaks the Profile rules (RFC-free: ``docs/wire.md``).
        :raises StoreError: if the store fails.
        """
        if self._device is not None:
            raise AlreadyInitialized("this home already holds a device")
        if display_name is not None:
            self._profile(display_name, now)  # Checks the name before anything is stored.
        device = Device.generate(rng=self._rng, created_at=int(now))
        puts = {_DEVICE_KEY: device.encode()}
        if display_name is not None:
            puts[_DISPLAY_NAME_KEY] = display_name.encode("utf-8")
        self._store.device_records().apply(puts, ())
        self._load_device(device)
        pool = self._require_device()[1]
        self._unuploaded = pool.generate(
            self._config.key_packages_target,
            last_resort=True,
            rng=self._rng,
            now=int(now),
            lifetime_seconds=self._config.key_package_lifetime_seconds,
        )
        self._upload.wanted = True
        return device

    def set_display_name(self, display_name: str, *, now: float) -> None:
        """
        Set this device's name and announce it (a Profile message) in every open group.

        :raises NotInitialized: before :meth:`initialize`.
        :raises InvalidMessage: if the name breaks the Profile rules.
        :raises StoreError: if the store fails.
        """
        self._require_device()
        self._profile(display_name, now)
        self._store.device_records().apply({_DISPLAY_NAME_KEY: display_name.encode("utf-8")}, ())
        self._display_name = display_name
        for state in self._groups.values():
            if not state.status.closed:
                self.send(state.group_id, self._profile(display_name, now), now=now)

    def _new_id(self) -> wire.MessageId:
        return wire.MessageId(self._rng(_MESSAGE_ID_BYTES))

    @staticmethod
    def _at(now: float) -> datetime:
        return datetime.fromtimestamp(now, UTC)

    def _profile(self, display_name: str, now: float) -> wire.Profile:
        try:
            return wire.Profile(display_name, message_id=self._new_id(), sent_at=self._at(now))
        except wire.UsageError as exc:
            raise InvalidMessage(str(exc)) from exc

    def create_group(
        self,
        *,
        title: str | None = None,
        members_can_add: bool = False,
        approval_required: bool = False,
        now: float,
    ) -> bytes:
        """
        Create a group with this device as its only member.

        The group, its creation request and its first messages (the title and
        our Profile) are stored in one batch before this returns.

        :param title: the group's title (a GroupTitle message), or ``None``.
        :param members_can_add: whether any member may add members (else only admins; this
            device is the first admin).
        :param approval_required: whether newcomers with an invite link ask, and an admin
            adds them, rather than join alone.
        :param now: Unix seconds.
        :returns: the new group's id (16 random bytes).
        :raises NotInitialized: before :meth:`initialize`.
        :raises InvalidMessage: if the title breaks the GroupTitle rules.
        :raises StoreError: if the store fails.
        """
        _, pool = self._require_device()
        first: list[wire.Message] = []
        try:
            if title is not None:
                first.append(
                    wire.GroupTitle(title, message_id=self._new_id(), sent_at=self._at(now))
                )
        except wire.UsageError as exc:
            raise InvalidMessage(str(exc)) from exc
        if self._display_name is not None:
            first.append(self._profile(self._display_name, now))
        group_id = self._rng(16)
        bundle = pool.bundle(
            rng=self._rng,
            now=int(now),
            lifetime_seconds=self._config.key_package_lifetime_seconds,
        )
        device = self._require_device()[0]
        # The creator is the group's first admin (townsquare.auth.group_policy).
        policy = rules.GroupPolicy(
            admins=(device.device_key,),
            members_can_add=members_can_add,
            approval_required=approval_required,
        )
        group = Group.create(
            bundle,
            group_id=group_id,
            rng=self._rng,
            extensions=(policy.extension(),),
            config=self._group_config,
        )
        state = _GroupState(group_id)
        state.persistence = GroupPersistence(group, self._store.group_records(group_id))
        state.status = GroupStatus.CREATING
        txn = _Txn(state.store)
        txn.put(META_KEY, encode_status(GroupStatus.CREATING))
        txn.put(CURSOR_KEY, encode_cursor(0))
        group_info = group.group_info(with_ratchet_tree=True)
        self._enqueue(
            state,
            txn,
            OutboxEntry(
                number=self._take_number(),
                kind=EntryKind.CREATE,
                client_message_id=self._new_id(),
                epoch=0,
                message=group_info,
                sent_digests=(_digest(group_info),),
            ),
        )
        for message in first:
            self._enqueue(state, txn, self._encrypted(state, message))
        self._groups[group_id] = state
        self._save(state, txn)
        return group_id

    def _take_number(self) -> int:
        number = self._next_number
        self._next_number += 1
        return number

    def _enqueue(self, state: _GroupState, txn: _Txn, entry: OutboxEntry) -> None:
        state.outbox[entry.number] = entry
        txn.put(outbox_key(entry.number), encode_entry(entry))

    def _writable(self, group_id: bytes) -> _GroupState:
        self._require_device()
        state = self._state(group_id)
        if state.status.closed:
            raise GroupClosed(f"group {_short(group_id)} is closed on this device")
        return state

    def _encrypted(self, state: _GroupState, message: wire.Message) -> OutboxEntry:
        data = wire.encode(message)
        ciphertext = state.group.encrypt(data, rng=self._rng)
        return OutboxEntry(
            number=self._take_number(),
            kind=EntryKind.MESSAGE,
            client_message_id=message.message_id,
            epoch=state.group.epoch,
            data=data,
            message=ciphertext,
            sent_digests=(_digest(ciphertext),),
        )

    def send(self, group_id: bytes, message: wire.Message, *, now: float) -> bytes:
        """
        Accept a message for the group: encrypt it and put it in the outbox.

        The outbox entry and the group state that encrypted it are stored in one
        batch before this returns; the relay is asked later (:meth:`next_request`).

        :param group_id: the group.
        :param message: any wire message; its ``message_id`` is the client message id.
        :param now: Unix seconds.
        :returns: the message id.
        :raises UnknownGroup: if this device holds no such group.
        :raises GroupClosed: if we left or were removed.
        :raises InvalidMessage: if the message id is already used by one of our messages.
        :raises StoreFailed: if the store fails (nothing was accepted).
        """
        del now  # The message carries its own sent_at.
        state = self._writable(group_id)
        if message.message_id in self.queued(group_id) or self.message_state(
            group_id, message.message_id
        ):
            raise InvalidMessage("this message id was already used")
        txn = _Txn(state.store)
        entry = self._encrypted(state, message)
        self._enqueue(state, txn, entry)
        self._save(state, txn)
        return message.message_id

    def send_text(self, group_id: bytes, text: str, *, now: float) -> bytes:
        """
        Accept a text message for the group (see :meth:`send`).

        :raises InvalidMessage: if the text breaks the Text rules (empty, too long).
        """
        try:
            message = wire.Text(text, message_id=self._new_id(), sent_at=self._at(now))
        except wire.UsageError as exc:
            raise InvalidMessage(str(exc)) from exc
        return self.send(group_id, message, now=now)

    def set_title(self, group_id: bytes, title: str, *, now: float) -> bytes:
        """
        Accept a new title for the group (a GroupTitle message; see :meth:`send`).

        :raises InvalidMessage: if the title breaks the GroupTitle rules.
        """
        try:
            message = wire.GroupTitle(title, message_id=self._new_id(), sent_at=self._at(now))
        except wire.UsageError as exc:
            raise InvalidMessage(str(exc)) from exc
        return self.send(group_id, message, now=now)

    def _committable(self, group_id: bytes) -> _GroupState:
        state = self._writable(group_id)
        if state.status == GroupStatus.LEAVING:
            raise GroupClosed(f"group {_short(group_id)}: we are leaving it")
        return state

    def _enqueue_commit(self, state: _GroupState, intent: CommitIntent, txn: _Txn) -> None:
        self._enqueue(
            state,
            txn,
            OutboxEntry(
                number=self._take_number(),
                kind=EntryKind.COMMIT,
                client_message_id=self._new_id(),
                epoch=None,
                intent=intent,
            ),
        )

    def add_members(self, group_id: bytes, account_keys: Sequence[bytes], *, now: float) -> None:
        """
        Add every device of each account, by one commit.

        The intent is stored in the outbox before this returns. When it reaches
        the head of the outbox, one KeyPackage per device is claimed for each
        account (an :class:`AddFailed` event names an account that had none),
        and the commit is built from them.

        :raises UnknownGroup: if this device holds no such group.
        :raises GroupClosed: if we left, are leaving, or were removed.
        :raises UsageError: if a key is not 32 bytes.
        :raises StoreFailed: if the store fails (nothing was accepted).
        """
        del now
        state = self._committable(group_id)
        self._require_admin(state, "add members", adds=True)
        for account_key in account_keys:
            try:
                auth.check_public_key(account_key)
            except auth.AuthError as exc:
                raise UsageError("an account key is 32 bytes") from exc
        txn = _Txn(state.store)
        self._enqueue_commit(
            state, CommitIntent(add_accounts=tuple(dict.fromkeys(account_keys))), txn
        )
        self._save(state, txn)

    def add_key_packages(
        self, group_id: bytes, key_packages: Sequence[bytes], *, now: float
    ) -> None:
        """
        Add the devices whose KeyPackages (encoded MLSMessages) are given, by one commit.

        :raises UnknownGroup: if this device holds no such group.
        :raises GroupClosed: if we left, are leaving, or were removed.
        :raises UsageError: if a KeyPackage is not valid (RFC 9420 §10.1).
        :raises StoreFailed: if the store fails (nothing was accepted).
        """
        state = self._committable(group_id)
        self._require_admin(state, "add members", adds=True)
        for key_package in key_packages:
            self._check_key_package(key_package, now)
        txn = _Txn(state.store)
        self._enqueue_commit(state, CommitIntent(add_key_packages=tuple(key_packages)), txn)
        self._save(state, txn)

    def _check_key_package(self, key_package_bytes: bytes, now: float) -> KeyPackage:
        try:
            message = MLSMessage.decode(key_package_bytes)
            if not isinstance(message.body, KeyPackage):
                raise UsageError("not an MLSMessage(KeyPackage)")
            validate_key_package(
                self._suite,
                message.body,
                credential_validator=check_device_credential,
                now=int(now),
            )
        except MLSError as exc:
            raise UsageError(f"invalid KeyPackage: {type(exc).__name__}") from exc
        return message.body

    def remove_member(self, group_id: bytes, device_key: bytes, *, now: float) -> None:
        """
        Remove a member (a device) by one commit.

        :raises UnknownGroup: if this device holds no such group.
        :raises GroupClosed: if we left, are leaving, or were removed.
        :raises NotAGroupMember: if no member has that key.
        :raises UsageError: if it is this device (use :meth:`leave`).
        :raises StoreFailed: if the store fails (nothing was accepted).
        """
        del now
        state = self._committable(group_id)
        device, _ = self._require_device()
        if device_key == device.device_key:
            raise UsageError("a device cannot remove itself; leave the group instead")
        self._require_admin(state, "remove members")
        if device_key not in {m.leaf_node.signature_key for m in state.group.members()}:
            raise NotAGroupMember(f"no member {_short(device_key)} in {_short(group_id)}")
        txn = _Txn(state.store)
        self._enqueue_commit(state, CommitIntent(remove_devices=(device_key,)), txn)
        self._save(state, txn)

    def set_admin(self, group_id: bytes, device_key: bytes, *, admin: bool, now: float) -> None:
        """
        Make a member an admin of the group, or stop it being one, by one commit (a
        GroupContextExtensions proposal changing the group policy).

        Townsquare choice: a group keeps at least one admin among its members, so the
        last one cannot be demoted (hand over first). Naming a second admin is how a
        group survives the loss of its admin's phone.

        :raises UnknownGroup: if this device holds no such group.
        :raises GroupClosed: if we left, are leaving, or were removed.
        :raises NotAnAdmin: if we are not an admin.
        :raises NotAGroupMember: if no member has that key.
        :raises UsageError: if the group has no policy, or it would be left without an admin.
        :raises StoreFailed: if the store fails (nothing was accepted).
        """
        del now
        state = self._committable(group_id)
        group = state.group
        policy = rules.group_policy(group.context.extensions)
        if policy is None:
            raise UsageError("this group has no admins to change (another client made it)")
        self._require_admin(state, "name admins")
        members = {m.leaf_node.signature_key for m in group.members()}
        if device_key not in members:
            raise NotAGroupMember(f"no member {_short(device_key)} in {_short(group_id)}")
        changed = policy.with_admin(device_key, admin=admin)
        if not set(changed.admins) & members:
            raise UsageError("the group would have no admin left: name another one first")
        txn = _Txn(state.store)
        intent = (
            CommitIntent(promote_devices=(device_key,))
            if admin
            else CommitIntent(demote_devices=(device_key,))
        )
        self._enqueue_commit(state, intent, txn)
        self._save(state, txn)

    def set_group_settings(
        self,
        group_id: bytes,
        *,
        approval_required: bool | None = None,
        members_can_add: bool | None = None,
        now: float,
    ) -> bool:
        """
        Change the flags of the group's policy by one commit (a GroupContextExtensions
        proposal), as :meth:`set_admin` changes its admins.

        The change is compared with the settings as they will be once the commits
        already in our outbox are merged: one that changes nothing queues nothing.
        The intent holds the values asked for, so a commit rebuilt after losing a
        race changes only what the winner did not already change.

        :param approval_required: whether newcomers with an invite link ask, and an admin
            adds them; ``None`` leaves it as it is.
        :param members_can_add: whether any member may add members; ``None`` leaves it.
        :returns: whether a commit was queued (``False``: nothing to change).
        :raises UnknownGroup: if this device holds no such group.
        :raises GroupClosed: if we left, are leaving, or were removed.
        :raises UsageError: if the group has no policy (another client made it).
        :raises NotAnAdmin: if we are not an admin.
        :raises StoreFailed: if the store fails (nothing was accepted).
        """
        del now
        state = self._committable(group_id)
        policy = rules.group_policy(state.group.context.extensions)
        if policy is None:
            raise UsageError("this group has no settings to change (another client made it)")
        self._require_admin(state, "change its settings")
        intent = CommitIntent(
            approval_required=None if approval_required is None else int(approval_required),
            members_can_add=None if members_can_add is None else int(members_can_add),
        )
        # The settings as our queued commits will leave them: asking for the same
        # twice queues one commit, and undoing a queued change is not a no-op.
        expected = policy
        for queued in state.outbox.values():
            if queued.kind == EntryKind.COMMIT and queued.intent is not None:
                expected = _with_settings(expected, queued.intent)
        if _with_settings(expected, intent) == expected:
            return False
        txn = _Txn(state.store)
        self._enqueue_commit(state, intent, txn)
        self._save(state, txn)
        return True

    def update_keys(self, group_id: bytes, *, now: float) -> None:
        """
        Refresh this device's leaf keys (an empty commit with a path; RFC 9420 §12.4).

        :raises UnknownGroup: if this device holds no such group.
        :raises GroupClosed: if we left, are leaving, or were removed.
        :raises StoreFailed: if the store fails.
        """
        del now
        state = self._committable(group_id)
        txn = _Txn(state.store)
        self._enqueue_commit(state, CommitIntent(update=1), txn)
        self._save(state, txn)

    def leave(self, group_id: bytes, *, now: float) -> None:
        """
        Leave the group: propose our own removal, for the next member online to commit.

        RFC 9420 §12.2 forbids committing one's own removal. A sole member
        closes the group here at once.

        :raises UnknownGroup: if this device holds no such group.
        :raises GroupClosed: if we already left, are leaving, or were removed.
        :raises StoreFailed: if the store fails.
        """
        del now
        state = self._committable(group_id)
        txn = _Txn(state.store)
        if len(state.group.members()) == 1:
            self._close(state, GroupStatus.LEFT, txn, reason="left")
            txn.events.append(RemovedFromGroup(group_id, state.group.epoch, left=True))
        else:
            self._set_status(state, GroupStatus.LEAVING, txn)
            self._enqueue(
                state,
                txn,
                OutboxEntry(
                    number=self._take_number(),
                    kind=EntryKind.PROPOSAL,
                    client_message_id=self._new_id(),
                    epoch=None,
                ),
            )
        self._save(state, txn)

    # -- Authority and invites ---------------------------------------------------------

    def admins(self, group_id: bytes) -> frozenset[bytes] | None:
        """
        :returns: the device keys acting as the group's admins (see
            :mod:`townsquare.auth.group_policy`), or ``None`` if the group has no policy.
        :raises UnknownGroup: if this device holds no such group.
        """
        group = self._state(group_id).group
        policy = rules.group_policy(group.context.extensions)
        if policy is None:
            return None
        members = {int(m.leaf_index): m.leaf_node.signature_key for m in group.members()}
        return rules.effective_admins(policy, members)

    def group_settings(self, group_id: bytes) -> GroupSettings | None:
        """
        :returns: the flags of the group's policy in our current epoch (as last known, if
            closed), or ``None`` if the group has no policy (another client made it: every
            member may add, and nobody approves newcomers).
        :raises UnknownGroup: if this device holds no such group.
        """
        group = self._state(group_id).group
        policy = rules.group_policy(group.context.extensions)
        if policy is None:
            return None
        return GroupSettings(
            approval_required=policy.approval_required,
            members_can_add=policy.members_can_add,
        )

    def _require_admin(self, state: _GroupState, what: str, *, adds: bool = False) -> None:
        group = state.group
        policy = rules.group_policy(group.context.extensions)
        if policy is None or (adds and policy.members_can_add):
            return
        admins = self.admins(state.group_id) or frozenset()
        if self._require_device()[0].device_key not in admins:
            raise NotAnAdmin(f"only an admin of the group may {what}")

    def create_invite(
        self,
        group_id: bytes,
        *,
        now: float,
        lifetime_seconds: int | None = None,
        max_uses: int | None = None,
    ) -> bytes:
        """
        Make an invite link's secret for the group, and publish the invite.

        The secret (``townsquare.auth.invites``) never reaches the relay: it
        gets the invite's public key and the current GroupInfo sealed under
        the secret, now and after every epoch change. The link works once an
        :class:`InviteReady` event names it (:meth:`invite_ready`).

        :returns: the secret, for :func:`townsquare.auth.invites.invite_link`.
        :raises UnknownGroup: if this device holds no such group.
        :raises GroupClosed: if we left, are leaving, or were removed.
        :raises NotAnAdmin: if the group's policy lets only admins invite.
        :raises UsageError: if the lifetime or use count is not positive.
        :raises StoreFailed: if the store fails (nothing was accepted).
        """
        state = self._committable(group_id)
        self._require_admin(state, "invite")
        lifetime = lifetime_seconds or self._config.invite_lifetime_seconds
        uses = max_uses or self._config.invite_max_uses
        if lifetime <= 0 or uses <= 0:
            raise UsageError("an invite's lifetime and use count are positive")
        secret = self._rng(invite_keys.SECRET_BYTES)
        invite_key = invite_keys.derive_invite_keys(secret).signing_public_key
        record = InviteRecord(
            secret=secret, expires_at=int(now) + lifetime, max_uses=uses, sealed_epoch=0, mine=1
        )
        txn = _Txn(state.store)
        txn.put(invite_record_key(invite_key), record.encode())
        self._save(state, txn)
        state.invite_records[invite_key] = record
        state.invites.wanted = True
        state.invites.not_before = min(state.invites.not_before, now)
        return secret

    def invite_ready(self, group_id: bytes, secret: bytes) -> bool | None:
        """
        :returns: whether the relay holds the invite (``True``), not yet (``False``), or
            refused or revoked it (``None``).
        :raises UnknownGroup: if this device holds no such group.
        """
        state = self._state(group_id)
        record = state.invite_records.get(invite_keys.derive_invite_keys(secret).signing_public_key)
        if record is None:
            return None
        return record.sealed_epoch > 0

    def read_join_note(self, group_id: bytes, invite_key: bytes, sealed_note: bytes) -> str | None:
        """
        :returns: a join request's note (the newcomer's name), if this device holds the
            invite's secret and the note opens; else ``None``.
        :raises UnknownGroup: if this device holds no such group.
        """
        record = self._state(group_id).invite_records.get(invite_key)
        if record is None:
            return None
        keys = invite_keys.derive_invite_keys(record.secret)
        try:
            return invite_keys.open_join_note(keys, group_id, sealed_note).decode("utf-8")
        except (auth.AuthError, UnicodeDecodeError):
            return None

    def join(self, group_id: bytes, secret: bytes, *, now: float) -> None:
        """
        Join a group by an invite link (its group id and secret), by external commit.

        The join is stored before this returns and goes on across restarts:
        the invite's sealed GroupInfo is read and opened, an external commit
        (RFC 9420 §12.4.3.2) signed with the invite key is posted, and once the
        relay accepts it a :class:`GroupJoined` event follows (or
        :class:`JoinFailed` if the invite is reset, expired or used up). Where
        the group requires approval, a join request is posted instead
        (:class:`JoinRequested`), and checked while it waits: an admin's Welcome
        joins us, or ``JoinFailed(group_id, "not-approved")`` follows once the
        request is gone without one.

        :raises NotInitialized: before :meth:`initialize`.
        :raises UsageError: if this device is already a member of the group.
        :raises InvalidInvite: if the secret is not an invite secret.
        :raises StoreFailed: if the store fails.
        """
        self._require_device()
        if len(secret) != invite_keys.SECRET_BYTES:
            raise InvalidInvite("an invite secret is 32 bytes")
        existing = self._groups.get(group_id)
        if existing is not None and not existing.status.closed:
            raise UsageError("this device is already a member of the group")
        if group_id in self._external:
            return
        record = JoinRecord(secret=secret, created_at=int(now))
        try:
            self._store.device_records().apply({join_record_key(group_id): record.encode()}, ())
        except StoreError as exc:
            raise StoreFailed(f"saving the join failed: {exc}") from exc
        self._external[group_id] = _External(group_id, secret)

    def join_requested(self, group_id: bytes) -> bool:
        """
        :returns: whether this device asked to join the group and waits for an admin.
        """
        external = self._external.get(group_id)
        return external is not None and external.requested

    def joining(self) -> tuple[bytes, ...]:
        """
        :returns: the groups this device is joining by link (not yet accepted).
        """
        return tuple(g for g, e in self._external.items() if e.by_invite or g not in self._groups)

    def sync(self, now: float) -> None:
        """
        Ask for everything: registration, KeyPackage counts, Welcomes, every open group's log.

        The outbox is always being sent; this wakes any request waiting out a backoff.
        """
        for slot in (self._register, self._count, self._upload, self._welcomes):
            slot.not_before = min(slot.not_before, now)
        self._register.wanted = self._device is not None and not self._registered
        self._count.wanted = self._device is not None
        self._upload.wanted = bool(self._unuploaded)
        self._welcomes.wanted = self._device is not None
        for external in self._external.values():
            if external.requested and not external.request_gone:
                self._check_request(external, now)
        for state in self._groups.values():
            if state.status.closed or state.needs_resync:
                continue
            if state.status != GroupStatus.CREATING:
                state.fetch.wanted = True
            for slot in (state.fetch, state.send, state.cursor_ack):
                slot.not_before = min(slot.not_before, now)

    @staticmethod
    def _check_request(external: _External, now: float) -> None:
        """
        Ask soon whether our join request still waits (unless that is being asked now).
        """
        external.check_at = None
        slot = external.slot
        if slot.in_flight is None:
            slot.wanted = True
            slot.not_before = min(slot.not_before, now)

    # -- Transitions ------------------------------------------------------------------------

    def _set_status(self, state: _GroupState, status: GroupStatus, txn: _Txn) -> None:
        check_transition(state.status, status)
        state.status = status
        txn.put(META_KEY, encode_status(status))

    def _close(self, state: _GroupState, status: GroupStatus, txn: _Txn, *, reason: str) -> None:
        if state.status == GroupStatus.LEAVING:
            status = GroupStatus.LEFT
        elif status == GroupStatus.LEFT:
            # A sole member leaving: ACTIVE ─► LEAVING ─► LEFT in one step.
            self._set_status(state, GroupStatus.LEAVING, txn)
        self._set_status(state, status, txn)
        for entry in state.outbox.values():
            txn.delete(outbox_key(entry.number))
            if entry.kind == EntryKind.MESSAGE:
                txn.events.append(SendFailed(state.group_id, entry.client_message_id, reason))
            elif entry.kind == EntryKind.COMMIT:
                txn.events.append(CommitRejected(state.group_id, reason))
        state.outbox = {}

    def _save(self, state: _GroupState, txn: _Txn) -> None:
        """
        Write the group's changes and ``txn``'s records in one batch, then queue its events.

        :raises StoreFailed: if the store fails; the group is reloaded from the store first
            (or forgotten, if the store holds nothing of it).
        """
        try:
            state.saver().save(app_puts=txn.puts, app_deletes=txn.deletes)
        except StoreError as exc:
            if self._groups.get(state.group_id) is state:
                if self._store.group_records(state.group_id).scan(""):
                    self._load_group(state.group_id)
                else:
                    del self._groups[state.group_id]
            raise StoreFailed(f"saving group {_short(state.group_id)} failed: {exc}") from exc
        self._events.extend(txn.events)

    # -- Outputs ----------------------------------------------------------------------------

    def next_event(self) -> Event | None:
        """
        :returns: the next event, or ``None``.
        """
        return self._events.popleft() if self._events else None

    def _request(self, purpose: _Purpose, slot: Slot | None) -> int:
        request_id = self._next_request_id
        self._next_request_id += 1
        self._in_flight[request_id] = purpose
        if slot is not None:
            slot.start(request_id)
        return request_id

    def next_request(self, now: float) -> api.Request | None:
        """
        :returns: the next request to send, or ``None`` if nothing is due now.
        :raises StoreFailed: if re-encrypting or rebuilding the outbox head could not be stored.
        """
        self._last_now = max(self._last_now, now)
        if self._device is None:
            return None
        device = self._device
        if self._register.due(now):
            rid = self._request(_Register(), self._register)
            return api.register_account(rid, device.certificate)
        if not self._registered:
            return None
        if self._upload.due(now) and self._unuploaded:
            batch = self._unuploaded[:100]
            rid = self._request(_Upload(tuple(p.ref for p in batch)), self._upload)
            one_time = [p.message for p in batch if not p.last_resort]
            last_resort = next((p.message for p in batch if p.last_resort), None)
            return api.upload_key_packages(rid, one_time, last_resort)
        if self._count.due(now) and self._upload.in_flight is None and not self._unuploaded:
            return api.key_package_count(self._request(_Count(), self._count))
        if self._welcomes.due(now):
            settles = tuple(g for g, e in self._external.items() if e.request_gone)
            return api.fetch_welcomes(self._request(_Welcomes(settles), self._welcomes))
        for external in list(self._external.values()):
            request = self._external_request(external, now)
            if request is not None:
                return request
        for state in list(self._groups.values()):
            request = self._group_request(state, now)
            if request is not None:
                return request
        return None

    def _group_request(self, state: _GroupState, now: float) -> api.Request | None:
        if state.status.closed or state.needs_resync:
            return None
        if state.status != GroupStatus.CREATING and state.fetch.due(now):
            rid = self._request(
                _Fetch(state.group_id, state.cursor, self._config.fetch_limit), state.fetch
            )
            return api.fetch_log(rid, state.group_id, state.cursor, self._config.fetch_limit)
        if state.send.ready(now) and not state.send_blocked:
            head = state.head()
            if (
                head is not None
                and head.intent is not None
                and head.intent.add_accounts
                and state.status != GroupStatus.CREATING
            ):
                account_key = head.intent.add_accounts[0]
                rid = self._request(_Claim(state.group_id, head.number, account_key), state.send)
                return api.claim_account_key_packages(rid, account_key)
            entry = self._ready_head(state, now)
            if entry is not None and entry.message is not None:
                digest = entry.sent_digests[-1]
                rid = self._request(_Send(state.group_id, entry.number, digest), state.send)
                return self._send_request(rid, state, entry)
        if (
            state.invites.due(now)
            and state.status != GroupStatus.CREATING
            and not state.fetch.wanted
            and state.fetch.in_flight is None
        ):
            request = self._invite_request(state, now)
            if request is not None:
                return request
            state.invites.wanted = False  # every invite is sealed for this epoch
        if (
            state.cursor_ack.ready(now)
            and state.cursor > state.acked_cursor
            and not state.fetch.wanted
            and state.fetch.in_flight is None
        ):
            rid = self._request(_CursorAck(state.group_id, state.cursor), state.cursor_ack)
            return api.ack_cursor(rid, state.group_id, state.cursor)
        return None

    def _invite_request(self, state: _GroupState, now: float) -> api.Request | None:
        """
        Publish or reseal the first invite whose sealed GroupInfo is not the current epoch's.
        """
        group = state.group
        epoch = group.epoch
        for invite_key, record in state.invite_records.items():
            if record.sealed_epoch == epoch + 2 or record.expires_at <= now:
                continue
            if not record.mine and state.reseal_epoch != epoch:
                continue
            keys = invite_keys.derive_invite_keys(record.secret)
            # Townsquare choice: the sealed GroupInfo leaves the tree out; the relay
            # hands it to the newcomer, who checks it against the GroupInfo's tree hash.
            sealed = invite_keys.seal_group_info(
                keys,
                state.group_id,
                group.group_info(with_ratchet_tree=False),
                nonce=self._rng(invite_keys.NONCE_BYTES),
            )
            create = record.sealed_epoch == 0
            rid = self._request(
                _InviteSync(state.group_id, invite_key, epoch, create), state.invites
            )
            if create:
                return api.create_invite(
                    rid,
                    state.group_id,
                    invite_key=invite_key,
                    sealed_group_info=sealed,
                    expires_at=record.expires_at,
                    max_uses=record.max_uses,
                )
            return api.update_invite(rid, state.group_id, invite_key, sealed)
        return None

    def _external_request(self, external: _External, now: float) -> api.Request | None:
        if not external.slot.due(now):
            return None
        group_id = external.group_id
        if external.requested:
            if external.request_gone:  # pragma: no cover - the slot is not wanted then
                return None
            device, _ = self._require_device()
            rid = self._request(_JoinRequestCheck(group_id), external.slot)
            return api.get_join_request(rid, group_id, device.device_key)
        built = external.built
        if isinstance(built, _BuiltRequest):
            rid = self._request(_JoinRequestPost(group_id), external.slot)
            return api.request_to_join(
                rid,
                group_id,
                invite_key=built.invite_key,
                key_package=built.key_package,
                sealed_note=built.sealed_note,
                invite_signature=built.invite_signature,
            )
        if built is not None:
            rid = self._request(_ExternalPost(group_id, built.digest), external.slot)
            return api.post_message(
                rid,
                group_id,
                built.client_message_id,
                built.join.commit,
                group_info=built.group_info,
                invite_key=built.invite_key,
                invite_signature=built.invite_signature,
            )
        rid = self._request(_ExternalInfo(group_id, external.by_invite), external.slot)
        if external.by_invite and external.secret is not None:
            keys = invite_keys.derive_invite_keys(external.secret)
            return api.get_invite(rid, group_id, keys.signing_public_key)
        return api.get_group_info(rid, group_id)

    @staticmethod
    def _send_request(rid: int, state: _GroupState, entry: OutboxEntry) -> api.Request:
        message = entry.message
        if message is None:  # pragma: no cover - checked by the caller
            raise RuntimeError("an unbuilt outbox entry")
        if entry.kind == EntryKind.CREATE:
            return api.create_group(rid, message)
        if entry.kind == EntryKind.COMMIT:
            if entry.group_info is None:  # pragma: no cover - set when built
                raise RuntimeError("a commit without its GroupInfo")
            return api.post_message(
                rid,
                state.group_id,
                entry.client_message_id,
                message,
                welcome=entry.welcome,
                group_info=entry.group_info,
            )
        return api.post_message(rid, state.group_id, entry.client_message_id, message)

    def _ready_head(self, state: _GroupState, now: float) -> OutboxEntry | None:
        """
        The outbox head, re-encrypted or rebuilt for the current epoch if it must be.

        Entries that have become pointless (a commit with nothing left to do)
        are dropped on the way. ``None`` if the head must wait.
        """
        while True:
            entry = state.head()
            if entry is None:
                return None
            if entry.kind == EntryKind.CREATE:
                return entry
            if state.status == GroupStatus.CREATING:
                return None
            if entry.kind == EntryKind.COMMIT and entry.accepted_seq:
                # Accepted: it is merged when the log reaches it, not sent again.
                state.fetch.wanted = True
                return None
            group = state.group
            if entry.epoch == group.epoch and entry.message is not None:
                return entry
            if entry.kind == EntryKind.COMMIT and now < state.commit_not_before:
                return None
            txn = _Txn(state.store)
            rebuilt = self._rebuild(state, entry, txn, now)
            if rebuilt is None:
                del state.outbox[entry.number]
                txn.delete(outbox_key(entry.number))
            else:
                state.outbox[entry.number] = rebuilt
                txn.put(outbox_key(entry.number), encode_entry(rebuilt))
            try:
                self._save(state, txn)
            except StoreFailed:
                # Try again after a backoff (a timer), not in a tight loop.
                state.send.failed(now, self._config.retry, self._rng)
                raise
            if rebuilt is not None:
                return rebuilt

    def _rebuild(
        self, state: _GroupState, entry: OutboxEntry, txn: _Txn, now: float
    ) -> OutboxEntry | None:
        group = state.group
        if entry.kind == EntryKind.MESSAGE:
            # Same client message id: the relay deduplicates on it, so if an
            # earlier encryption was stored after all, this one is not.
            ciphertext = group.encrypt(entry.data, rng=self._rng)
            return entry.built(epoch=group.epoch, message=ciphertext, digest=_digest(ciphertext))
        if entry.kind == EntryKind.PROPOSAL:
            if state.status != GroupStatus.LEAVING:
                return None
            proposal = group.propose(Remove(int(group.own_leaf)), rng=self._rng)
            return entry.built(
                epoch=group.epoch,
                message=proposal,
                digest=_digest(proposal),
                client_message_id=self._new_id(),
            )
        return self._build_commit(state, entry, txn, now)

    def _build_commit(
        self, state: _GroupState, entry: OutboxEntry, txn: _Txn, now: float
    ) -> OutboxEntry | None:
        group = state.group
        intent = entry.intent or CommitIntent()
        members = {leaf.signature_key: index for index, leaf in group.tree.leaves()}
        proposals: list[Proposal] = []
        for key_package_bytes in intent.add_key_packages:
            key_package = MLSMessage.decode(key_package_bytes).body
            if isinstance(key_package, KeyPackage) and (
                key_package.leaf_node.signature_key not in members
            ):
                proposals.append(Add(key_package))
        for device_key in intent.remove_devices:
            leaf = members.get(device_key)
            if leaf is not None and leaf != group.own_leaf:
                proposals.append(Remove(int(leaf)))
        if intent.changes_policy:
            changed = _changed_policy(group, intent)
            if changed is not None:
                proposals.append(GroupContextExtensions(changed))
        held = bool(group.pending_proposals) and state.status == GroupStatus.ACTIVE
        if not proposals and not intent.update:
            if not intent.commit_held:
                if _policy_only(intent):
                    # Another admin's commit already made the policy what we asked for
                    # (two admins turning the same setting on): done, not refused.
                    return None
                txn.events.append(CommitRejected(state.group_id, "nothing left to commit"))
                return None
            if not held:
                return None  # Another member committed the proposals first.
        # Held proposals (a member's leave, say) ride along when they can; if
        # they make the commit invalid, it is made of our own proposals alone.
        options: list[Sequence[bytes] | None] = []
        if held:
            options.append(None)
        if proposals or intent.update:
            options.append(())
        reason = "nothing left to commit"
        for by_reference in options:
            try:
                pending = group.commit(
                    rng=self._rng,
                    proposals=proposals,
                    by_reference=by_reference,
                    force_path=bool(intent.update),
                    # The relay hands joiners the tree with the Welcome (checked
                    # against the GroupInfo's tree hash), so the Welcome stays small.
                    ratchet_tree_in_welcome=False,
                    now=int(now),
                )
            except MLSError as exc:
                reason = f"cannot commit: {type(exc).__name__}"
                continue
            return entry.built(
                epoch=group.epoch,
                message=pending.commit,
                digest=_digest(pending.commit),
                client_message_id=self._new_id(),
                welcome=pending.welcome,
                group_info=pending.group_info,
            )
        if not intent.commit_held:
            txn.events.append(CommitRejected(state.group_id, reason))
        return None

    def get_timer(self) -> float | None:
        """
        :returns: the next time at which the passage of time alone lets :meth:`next_request`
            (or :meth:`handle_timer`) do something it could not at the last call, or ``None``.
            Work blocked by anything else resumes with the input that unblocks it.
        """
        times = [t for t in self._waits() if t > self._last_now]
        return min(times) if times else None

    def _waits(self) -> list[float]:
        # The not_before of every request next_request would start but for the
        # time, under the same conditions as next_request.
        times: list[float] = []
        if self._poll_at is not None:
            times.append(self._poll_at)
        if self._device is None:
            return times
        if self._register.wanted and self._register.in_flight is None:
            times.append(self._register.not_before)
        if not self._registered:
            return times
        if self._unuploaded and self._upload.in_flight is None:
            times.append(self._upload.not_before)
        elif (
            self._count.wanted and self._count.in_flight is None and self._upload.in_flight is None
        ):
            times.append(self._count.not_before)
        slots: list[Slot] = [self._welcomes, *(e.slot for e in self._external.values())]
        times.extend(s.not_before for s in slots if s.wanted and s.in_flight is None)
        times.extend(e.check_at for e in self._external.values() if e.check_at is not None)
        for state in self._groups.values():
            if state.status.closed or state.needs_resync:
                continue
            if state.status != GroupStatus.CREATING and state.fetch.wanted:
                if state.fetch.in_flight is None:
                    times.append(state.fetch.not_before)
                continue
            if state.outbox and state.send.in_flight is None and not state.send_blocked:
                times.append(max(state.send.not_before, state.commit_not_before))
            if (
                state.cursor > state.acked_cursor
                and state.cursor_ack.in_flight is None
                and state.fetch.in_flight is None
            ):
                times.append(state.cursor_ack.not_before)
            if state.invites.wanted and state.invites.in_flight is None:
                times.append(state.invites.not_before)
        return times

    def handle_timer(self, now: float) -> None:
        """
        Let time pass: while the push channel is down, poll every group now and then; while
        a join request waits, ask whether it still does every ``join_request_check_seconds``.
        """
        if self._poll_at is not None and now >= self._poll_at:
            self.sync(now)
            self._poll_at = now + self._config.poll_interval_seconds
        for external in self._external.values():
            if external.check_at is not None and now >= external.check_at:
                self._check_request(external, now)

    def has_work(self) -> bool:
        """
        :returns: whether a request is in flight or wanted, or an outbox holds an entry
            that can still be sent (the driver's "sync until settled").
        """
        if self._in_flight:
            return True
        slots = [self._register, self._count, self._upload, self._welcomes]
        if any(s.wanted for s in slots) or (self._registered and self._unuploaded):
            return True
        if any(not e.requested or e.slot.wanted or e.request_gone for e in self._external.values()):
            return True
        for state in self._groups.values():
            if state.status.closed or state.needs_resync:
                continue
            if state.fetch.wanted or state.outbox or state.invites.wanted:
                return True
            if state.cursor > state.acked_cursor:
                return True
        return False

    # -- Push channel -----------------------------------------------------------------------

    def push_connected(self, now: float) -> None:
        """
        The push channel is up: catch up on everything missed while it was down.
        """
        self._poll_at = None
        self.sync(now)

    def push_disconnected(self, now: float) -> None:
        """
        The push channel is down: poll until it is back.
        """
        self._poll_at = now + self._config.poll_interval_seconds

    def subscriptions(self) -> tuple[bytes, ...]:
        """
        :returns: the groups whose news the push channel should carry: every open group the
            relay knows (not one still being created: the relay would refuse it, and the
            channel subscribes each group once per connection).
        """
        return tuple(
            gid
            for gid, s in self._groups.items()
            if not s.status.closed and s.status != GroupStatus.CREATING
        )

    def receive_push(self, data: bytes | str, now: float) -> None:
        """
        A frame from the push channel (``docs/protocol.md``, WebSocket): a hint to fetch.

        - ``message`` (``group``, ``seq``, perhaps the ``message`` itself): the
          entry right after the cursor, if carried, is processed at once;
          otherwise the group's log is fetched if ``seq`` is past its cursor.
        - ``welcome``: Welcomes are fetched. ``removed``: the group's log is
          fetched (the relay answers ``not-a-member``, which closes the group).
        - ``lagged``, an unknown or malformed frame: everything is fetched.

        :raises StoreFailed: if an entry processed at once could not be stored (it will be
            fetched again).
        """
        try:
            frame = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            frame = None
        if not isinstance(frame, dict):
            self.sync(now)
            return
        kind = frame.get("type")
        if kind in ("challenge", "ready", "subscribed", "pong"):
            return
        if kind == "welcome":
            self._welcomes.wanted = True
            return
        if kind not in ("message", "removed"):
            self.sync(now)
            return
        state = self._pushed_group(frame.get("group"))
        seq = frame.get("seq")
        if state is None or state.status.closed or not isinstance(seq, int) or seq <= state.cursor:
            return
        inline = frame.get("message")
        if (
            kind == "message"
            and isinstance(inline, str)
            and seq == state.cursor + 1
            and state.fetch.in_flight is None
            and not state.fetch.wanted
            and not state.needs_resync
            and state.status != GroupStatus.CREATING
        ):
            try:
                message = auth.decode_b64u(inline)
            except auth.AuthError:
                message = None
            if message is not None:
                self._process_log(state, (api.LogEntry(seq, message),), now)
                return
        state.fetch.wanted = True

    def _pushed_group(self, value: object) -> _GroupState | None:
        if not isinstance(value, str):
            return None
        try:
            return self._groups.get(auth.decode_b64u(value))
        except auth.AuthError:
            return None

    # -- Answers ----------------------------------------------------------------------------

    def request_failed(self, request_id: int, now: float) -> None:
        """
        A request got no answer (connection refused or lost, timeout): retry it later.

        The request may have arrived; every request the core makes is safe to repeat.
        """
        purpose = self._in_flight.pop(request_id, None)
        if purpose is None:
            return
        slot = self._slot_of(purpose)
        if slot is not None and slot.in_flight == request_id:
            slot.failed(now, self._config.retry, self._rng)

    def _slot_of(self, purpose: _Purpose) -> Slot | None:
        match purpose:
            case _Register():
                return self._register
            case _Count():
                return self._count
            case _Upload():
                return self._upload
            case _Welcomes():
                return self._welcomes
            case (
                _ExternalInfo(group_id)
                | _ExternalPost(group_id)
                | _JoinRequestPost(group_id)
                | _JoinRequestCheck(group_id)
            ):
                external = self._external.get(group_id)
                return None if external is None else external.slot
            case _InviteSync(group_id):
                invite_state = self._groups.get(group_id)
                return None if invite_state is None else invite_state.invites
            case _Send(group_id) | _Claim(group_id) | _Fetch(group_id) | _CursorAck(group_id):
                state = self._groups.get(group_id)
                if state is None:
                    return None
                if isinstance(purpose, (_Send, _Claim)):
                    return state.send
                return state.fetch if isinstance(purpose, _Fetch) else state.cursor_ack

    def receive_response(self, request_id: int, response: api.Response, now: float) -> None:
        """
        Feed the answer to a request from :meth:`next_request`.

        :param request_id: the request's id.
        :param response: the answer.
        :param now: Unix seconds.
        :raises StoreFailed: if what the answer changed could not be stored (the group was
            reloaded; the answer is as if never received, and the request will be repeated).
        """
        purpose = self._in_flight.pop(request_id, None)
        if purpose is None:
            return
        slot = self._slot_of(purpose)
        if slot is None or slot.in_flight != request_id:
            return
        outcome, problem = _classify(response)
        if outcome == _Outcome.RETRY:
            slot.failed(now, self._config.retry, self._rng, retry_after=response.retry_after)
            return
        if outcome == _Outcome.REREGISTER:
            self._registered = False
            self._register.wanted = True
            self._store.device_records().apply({}, (_REGISTERED_KEY,))
            slot.failed(now, self._config.retry, self._rng)
            return
        try:
            self._dispatch(purpose, _Answer(slot, outcome, problem, response, now))
        except ProtocolError:
            slot.failed(now, self._config.retry, self._rng)
        except StoreError:
            slot.failed(now, self._config.retry, self._rng)
            raise

    def _dispatch(self, purpose: _Purpose, answer: _Answer) -> None:
        match purpose:
            case _Register():
                self._on_register(answer)
            case _Upload():
                self._on_upload(answer, purpose)
            case _Count():
                self._on_count(answer)
            case _Welcomes():
                self._on_welcomes(answer, purpose)
            case _Claim():
                self._on_claim(answer, purpose)
            case _Send():
                self._on_send(answer, purpose)
            case _Fetch():
                self._on_fetch(answer, purpose)
            case _CursorAck():
                self._on_cursor_ack(answer, purpose)
            case _InviteSync():
                self._on_invite_sync(answer, purpose)
            case _ExternalInfo():
                self._on_external_info(answer, purpose)
            case _ExternalPost():
                self._on_external_post(answer, purpose)
            case _JoinRequestPost():
                self._on_join_request_post(answer, purpose)
            case _JoinRequestCheck():
                self._on_join_request_check(answer, purpose)

    def _refused(self, slot: Slot, problem: api.Problem | None, path: str, now: float) -> None:
        # Retrying the same request will not help soon; try again much later,
        # in case the relay (or its operator) changes its mind.
        code = problem.code if problem else ""
        status = problem.status if problem else 0
        self._events.append(RelayFailure(path, status, code))
        slot.failed(now, Backoff(initial_seconds=60.0, max_seconds=3600.0), self._rng)

    def _on_register(self, a: _Answer) -> None:
        slot, outcome, problem, now = a.slot, a.outcome, a.problem, a.now
        if outcome in (_Outcome.OK, _Outcome.EXISTS):
            self._store.device_records().apply({_REGISTERED_KEY: b""}, ())
            self._registered = True
            slot.done()
            self._count.wanted = True
            self._welcomes.wanted = True
            for state in self._groups.values():
                if not state.status.closed and state.status != GroupStatus.CREATING:
                    state.fetch.wanted = True
            if self._device is not None:
                self._events.append(DeviceRegistered(self._device.device_key))
            return
        self._refused(slot, problem, "/v1/accounts", now)

    def _on_upload(self, a: _Answer, p: _Upload) -> None:
        slot, outcome, problem, response, now = a.slot, a.outcome, a.problem, a.response, a.now
        refs = p.refs
        pool = self._require_device()[1]
        uploaded = [p for p in self._unuploaded if p.ref in refs]
        if outcome in (_Outcome.OK, _Outcome.EXISTS):
            # All packages of an upload are stored or none; a duplicate means an
            # earlier attempt of this same upload arrived.
            pool.mark_uploaded(uploaded)
            self._unuploaded = [p for p in self._unuploaded if p.ref not in refs]
            slot.done()
            self._upload.wanted = bool(self._unuploaded)
            if outcome == _Outcome.OK:
                counts = api.parse_counts(response)
                self._events.append(KeyPackagesUploaded(counts.one_time, counts.last_resort))
            return
        # The relay refuses these packages (its store is full, say): drop them from
        # the upload queue; a later count tops up.
        self._unuploaded = [p for p in self._unuploaded if p.ref not in refs]
        self._refused(slot, problem, "/v1/key-packages", now)

    def _on_count(self, a: _Answer) -> None:
        slot, outcome, problem, response, now = a.slot, a.outcome, a.problem, a.response, a.now
        if outcome != _Outcome.OK:
            self._refused(slot, problem, "/v1/key-packages/count", now)
            return
        counts = api.parse_counts(response)
        slot.done()
        config = self._config
        if counts.one_time < config.key_packages_low_water or not counts.last_resort:
            pool = self._require_device()[1]
            self._unuploaded.extend(
                pool.generate(
                    max(0, config.key_packages_target - counts.one_time),
                    last_resort=not counts.last_resort,
                    rng=self._rng,
                    now=int(now),
                    lifetime_seconds=config.key_package_lifetime_seconds,
                )
            )
            self._upload.wanted = bool(self._unuploaded)

    def _on_claim(self, a: _Answer, p: _Claim) -> None:
        slot, outcome, problem, response, now = a.slot, a.outcome, a.problem, a.response, a.now
        group_id, number, account_key = p.group_id, p.number, p.account_key
        state = self._groups.get(group_id)
        entry = None if state is None else state.outbox.get(number)
        intent = None if entry is None else entry.intent
        if state is None or entry is None or intent is None:
            slot.done()
            return
        if outcome not in (_Outcome.OK, _Outcome.REFUSED):
            slot.failed(now, self._config.retry, self._rng)
            return
        slot.done()
        key_packages: list[bytes] = []
        if outcome == _Outcome.OK:
            claimed, _exhausted = api.parse_claimed(response)
            for item in claimed:
                try:
                    key_package = self._check_key_package(item.key_package, now)
                except UsageError:
                    continue
                if key_package.leaf_node.signature_key == item.device_key:
                    key_packages.append(item.key_package)
        txn = _Txn(state.store)
        if not key_packages:
            reason = problem.code if problem else "no KeyPackage to claim"
            txn.events.append(AddFailed(group_id, account_key, reason))
        claimed_intent = replace(
            intent,
            add_accounts=tuple(a for a in intent.add_accounts if a != account_key),
            add_key_packages=(*intent.add_key_packages, *key_packages),
        )
        updated = replace(entry, intent=claimed_intent)
        if claimed_intent == CommitIntent():
            del state.outbox[number]
            txn.delete(outbox_key(number))
        else:
            state.outbox[number] = updated
            txn.put(outbox_key(number), encode_entry(updated))
        self._save(state, txn)

    def _on_send(self, a: _Answer, p: _Send) -> None:
        slot, outcome, problem, response, now = a.slot, a.outcome, a.problem, a.response, a.now
        group_id, number, digest = p.group_id, p.number, p.digest
        state = self._groups.get(group_id)
        entry = None if state is None else state.outbox.get(number)
        if state is None or entry is None or digest not in entry.sent_digests:
            # Already accounted for (the log reached it first), or the group closed.
            slot.done()
            return
        code = problem.code if problem else ""
        if outcome in (_Outcome.OK, _Outcome.EXISTS):
            slot.done()
            if entry.kind == EntryKind.CREATE:
                txn = _Txn(state.store)
                del state.outbox[number]
                txn.delete(outbox_key(number))
                self._set_status(state, GroupStatus.ACTIVE, txn)
                txn.events.append(GroupCreated(group_id))
                self._save(state, txn)
                state.fetch.wanted = True
                return
            seq = api.accepted_seq(response)
            self._accepted(state, entry, seq)
            return
        if outcome in (_Outcome.STALE, _Outcome.NOT_MEMBER):
            # Catch up first: merging the winning commit (or learning that we were
            # removed) decides what happens to the entry.
            # A second stale answer at the same epoch means the catching up did
            # not help (yet): back off. The first is retried as soon as it did.
            state.fetch.wanted = True
            state.send_blocked = True
            if entry.epoch == state.stale_epoch:
                slot.failed(now, self._config.retry, self._rng)
            else:
                slot.done()
            state.stale_epoch = entry.epoch
            return
        # Refused for good: the entry leaves the outbox.
        slot.done()
        txn = _Txn(state.store)
        del state.outbox[number]
        txn.delete(outbox_key(number))
        if entry.kind == EntryKind.MESSAGE:
            txn.events.append(SendFailed(group_id, entry.client_message_id, "refused", code))
        elif entry.kind == EntryKind.COMMIT:
            state.group.discard_pending_commit()
            txn.events.append(CommitRejected(group_id, "refused by the relay", code))
        elif entry.kind == EntryKind.CREATE:
            # The group will never exist on this relay: nothing queued behind it can go.
            txn.events.append(RelayFailure("/v1/groups", response.status, code))
            self._close(state, GroupStatus.REMOVED, txn, reason="the relay refused the group")
        else:
            txn.events.append(RelayFailure("messages", response.status, code))
        self._save(state, txn)

    def _accepted(self, state: _GroupState, entry: OutboxEntry, seq: int) -> None:
        txn = _Txn(state.store)
        if entry.kind == EntryKind.COMMIT:
            # Merged when the log reaches it, in order with everything before it.
            accepted = replace(entry, accepted_seq=seq)
            state.outbox[entry.number] = accepted
            txn.put(outbox_key(entry.number), encode_entry(accepted))
            state.fetch.wanted = True
        else:
            self._account_own(state, entry, seq, txn)
        self._save(state, txn)

    def _account_own(self, state: _GroupState, entry: OutboxEntry, seq: int, txn: _Txn) -> None:
        """
        One of our messages or proposals has its place ``seq``: take it out of the outbox.
        """
        del state.outbox[entry.number]
        txn.delete(outbox_key(entry.number))
        if seq > state.cursor:
            txn.put(sent_key(seq), b"")
        if entry.kind != EntryKind.MESSAGE:
            return
        device, _ = self._require_device()
        stored = StoredMessage(
            group_id=state.group_id,
            seq=seq,
            sender=device.device_key,
            sender_leaf=int(state.group.own_leaf),
            epoch=entry.epoch or 0,
            own=True,
            message=decode_wire(entry.data),
            data=entry.data,
        )
        self._store_message(state, stored, txn)
        txn.events.append(MessageSent(state.group_id, entry.client_message_id, seq))

    def _store_message(self, state: _GroupState, stored: StoredMessage, txn: _Txn) -> bool:
        """
        Store a message once (by sender and message id), with its effect on names and title.

        :returns: whether it was new.
        """
        message = stored.message
        if message is not None:
            dedup = message_id_key(stored.sender, message.message_id)
            if txn.get(dedup) is not None:
                return False
            txn.put(dedup, encode_cursor(stored.seq))
        txn.put(message_key(stored.seq), encode_message_record(stored))
        if isinstance(message, wire.Profile):
            key = profile_key(stored.sender)
            old = txn.get(key)
            if old is None or decode_named(key, old).seq < stored.seq:
                txn.put(key, encode_named(stored.seq, message.display_name))
                txn.events.append(
                    ProfileChanged(state.group_id, stored.sender, message.display_name)
                )
        elif isinstance(message, wire.GroupTitle):
            old = txn.get(TITLE_KEY)
            if old is None or decode_named(TITLE_KEY, old).seq < stored.seq:
                txn.put(TITLE_KEY, encode_named(stored.seq, message.title))
                txn.events.append(TitleChanged(state.group_id, message.title))
        return True

    def _on_cursor_ack(self, a: _Answer, p: _CursorAck) -> None:
        slot, outcome, problem, now = a.slot, a.outcome, a.problem, a.now
        group_id, seq = p.group_id, p.seq
        state = self._groups.get(group_id)
        if outcome == _Outcome.OK and state is not None:
            slot.done()
            state.acked_cursor = max(state.acked_cursor, seq)
            return
        if outcome == _Outcome.NOT_MEMBER and state is not None:
            # We are out: nothing to acknowledge. The log tells us why.
            state.acked_cursor = max(state.acked_cursor, seq)
            state.fetch.wanted = True
            slot.done()
            return
        self._refused(slot, problem, "cursor", now)
        if state is not None:
            state.acked_cursor = max(state.acked_cursor, seq)

    # -- Invites and external commits -------------------------------------------------------

    def _on_invite_sync(self, a: _Answer, p: _InviteSync) -> None:
        slot, outcome, problem, now = a.slot, a.outcome, a.problem, a.now
        state = self._groups.get(p.group_id)
        record = None if state is None else state.invite_records.get(p.invite_key)
        if state is None or record is None:
            slot.done()
            return
        key = invite_record_key(p.invite_key)
        txn = _Txn(state.store)
        if outcome in (_Outcome.OK, _Outcome.EXISTS):
            # "exists": an earlier attempt was stored (we crashed before its answer);
            # its epoch is unknown, so the next round reseals (1: published, epoch unknown).
            sealed = p.epoch + 2 if outcome == _Outcome.OK else 1
            updated = replace(record, sealed_epoch=sealed)
            txn.put(key, updated.encode())
            if record.sealed_epoch == 0 and record.mine:
                txn.events.append(InviteReady(p.group_id, p.invite_key))
            self._save(state, txn)
            state.invite_records[p.invite_key] = updated
            slot.done()
            state.invites.wanted = True  # the next stale invite, if any
            return
        if outcome == _Outcome.STALE:
            slot.failed(now, self._config.retry, self._rng)
            return
        # Refused (not an admin, revoked, expired, not a member): this invite is over here.
        code = problem.code if problem else ""
        txn.delete(key)
        txn.events.append(InviteFailed(p.group_id, p.invite_key, code))
        self._save(state, txn)
        del state.invite_records[p.invite_key]
        slot.done()
        state.invites.wanted = bool(state.invite_records)

    def _open_group(self, group_id: bytes) -> _GroupState | None:
        state = self._groups.get(group_id)
        return None if state is None or state.status.closed else state

    def _end_external(self, external: _External) -> None:
        self._external.pop(external.group_id, None)
        if external.secret is not None:
            self._store.device_records().apply({}, (join_record_key(external.group_id),))

    def _join_failed(self, external: _External, code: str) -> None:
        self._end_external(external)
        self._events.append(JoinFailed(external.group_id, code))

    def _on_external_info(self, a: _Answer, p: _ExternalInfo) -> None:
        slot, outcome, problem, response, now = a.slot, a.outcome, a.problem, a.response, a.now
        external = self._external.get(p.group_id)
        if external is None:
            slot.done()
            return
        code = problem.code if problem else ""
        if outcome == _Outcome.OK:
            published = (
                api.parse_invite(response) if p.by_invite else api.parse_group_info(response)
            )
            try:
                external.built = self._build_external(external, published, now)
            except (MLSError, auth.AuthError) as exc:
                if external.by_invite and self._open_group(external.group_id) is None:
                    self._join_failed(external, f"invalid-group-info: {type(exc).__name__}")
                    slot.done()
                    return
                # The relay's GroupInfo may be mid-update: try again later.
                self._refused(slot, problem, "group-info", now)
                return
            slot.done()
            external.slot.wanted = True
            return
        if outcome == _Outcome.NOT_MEMBER:
            slot.done()
            state = self._groups.get(p.group_id)
            if external.secret is not None:
                # Not (yet) a member: back to the invite.
                external.by_invite = True
                slot.failed(now, self._config.retry, self._rng)
                return
            self._end_external(external)
            if state is not None and not state.status.closed:
                txn = _Txn(state.store)
                self._close(state, GroupStatus.REMOVED, txn, reason="removed")
                txn.events.append(RemovedFromGroup(p.group_id, state.group.epoch, left=False))
                self._save(state, txn)
            return
        if p.by_invite and code in _JOIN_REFUSALS and self._open_group(p.group_id) is None:
            slot.done()
            self._join_failed(external, code)
            return
        self._refused(slot, problem, "group-info", now)

    def _build_external(
        self, external: _External, published: api.PublishedGroupInfo, now: float
    ) -> _BuiltExternal | _BuiltRequest:
        """
        Build an external commit (RFC 9420 §12.4.3.2) from a published GroupInfo.

        If the tree already holds this device's key (a resync, or a join the
        relay stored before we crashed), the commit removes that old leaf.
        """
        device, _ = self._require_device()
        group_info, tree = published.group_info, published.ratchet_tree
        keys = None
        if external.by_invite and external.secret is not None:
            keys = invite_keys.derive_invite_keys(external.secret)
            group_info, sealed_tree = invite_keys.open_group_info(
                keys, external.group_id, group_info
            )
            tree = sealed_tree or tree
        old_leaf = None
        if tree:
            decoded = RatchetTree.decode(self._suite, tree)
            old_leaf = next(
                (i for i, leaf in decoded.leaves() if leaf.signature_key == device.device_key),
                None,
            )
        if keys is not None and old_leaf is None:
            message = MLSMessage.decode(group_info)
            if isinstance(message.body, GroupInfo):
                policy = rules.group_policy(message.body.group_context.extensions)
                if policy is not None and policy.approval_required:
                    return self._join_request(external.group_id, keys, now)
        joined = Group.join_external(
            group_info,
            credential=device.credential,
            signature_private_key=device.device_private_key,
            rng=self._rng,
            ratchet_tree=tree or None,
            resync_leaf=old_leaf,
            config=self._group_config,
            now=int(now),
            capabilities=device_capabilities(self._suite),
        )
        if joined.group.group_id != external.group_id:
            raise ProtocolError("the GroupInfo is of another group")
        return _BuiltExternal(
            join=joined,
            group_info=joined.group.group_info(with_ratchet_tree=False),
            client_message_id=self._new_id(),
            invite_key=None if keys is None else keys.signing_public_key,
            invite_signature=(
                None if keys is None else invite_keys.sign_external_commit(keys, joined.commit)
            ),
            digest=_digest(joined.commit),
        )

    def _join_request(
        self, group_id: bytes, keys: invite_keys.InviteKeys, now: float
    ) -> _BuiltRequest:
        """
        Ask an approving group's admins to add us: a KeyPackage kept for their Welcome, and
        our name sealed so that only holders of the link read it.
        """
        _, pool = self._require_device()
        (package,) = pool.generate(
            1,
            last_resort=False,
            rng=self._rng,
            now=int(now),
            lifetime_seconds=self._config.key_package_lifetime_seconds,
        )
        # Kept for the admins' Welcome only: never offered to others' claims.
        pool.mark_uploaded([package])
        note = invite_keys.seal_join_note(
            keys,
            group_id,
            (self._display_name or "").encode("utf-8"),
            nonce=self._rng(invite_keys.NONCE_BYTES),
        )
        return _BuiltRequest(
            key_package=package.message,
            sealed_note=note,
            invite_key=keys.signing_public_key,
            invite_signature=invite_keys.sign_join_request(keys, group_id, package.message, note),
        )

    def _on_join_request_post(self, a: _Answer, p: _JoinRequestPost) -> None:
        slot, outcome, problem, now = a.slot, a.outcome, a.problem, a.now
        external = self._external.get(p.group_id)
        if external is None or external.secret is None:
            slot.done()
            return
        code = problem.code if problem else ""
        external.built = None
        if outcome == _Outcome.OK:
            slot.done()
            record = JoinRecord(secret=external.secret, created_at=int(now), requested=1)
            self._store.device_records().apply({join_record_key(p.group_id): record.encode()}, ())
            external.requested = True
            external.check_at = now + self._config.join_request_check_seconds
            self._events.append(JoinRequested(p.group_id))
            return
        if code == "approval-not-required":
            # The admins changed the policy: read the invite again and join by commit.
            slot.done()
            external.slot.wanted = True
            return
        if code in _JOIN_REFUSALS or code == "invalid-request":
            slot.done()
            self._join_failed(external, code)
            return
        self._refused(slot, problem, "join-requests", now)

    def _on_join_request_check(self, a: _Answer, p: _JoinRequestCheck) -> None:
        slot, outcome, problem, response, now = a.slot, a.outcome, a.problem, a.response, a.now
        external = self._external.get(p.group_id)
        if external is None or not external.requested:  # pragma: no cover - slot_of checked
            slot.done()
            return
        if outcome == _Outcome.OK:
            request = api.parse_join_request(response)
            if request.device_key != self._require_device()[0].device_key:
                raise ProtocolError("the relay answered with another device's join request")
            slot.done()
            external.check_at = now + self._config.join_request_check_seconds
            return
        if problem is not None and problem.status == 404 and problem.code in _REQUEST_GONE_CODES:
            # Townsquare choice: the approver stores the commit and our Welcome before it
            # deletes the request, so a Welcome fetch that starts from now on has ours if
            # we were approved. Until one completes, the join record stays (a restart
            # checks again); then it goes, with JoinFailed if no Welcome joined us.
            slot.done()
            external.request_gone = True
            self._welcomes.wanted = True
            self._welcomes.not_before = min(self._welcomes.not_before, now)
            return
        self._refused(slot, problem, "join-requests", now)

    def _settle_requests(self, group_ids: Iterable[bytes]) -> None:
        """
        A Welcome fetch that started after these join requests were found gone has been
        processed: each group is joined now, or the request was not approved.

        The join record goes as every join record does (:meth:`_end_external`), and the
        event only after it: if the process dies or the store fails first, the record is
        still on disk, and the request is checked again after the restart.
        """
        for group_id in group_ids:
            external = self._external.get(group_id)
            if external is None or not external.request_gone:
                continue
            if self._open_group(group_id) is not None:
                self._end_external(external)  # joined; only the record was left
            else:
                self._join_failed(external, JoinFailed.NOT_APPROVED)

    def _on_external_post(self, a: _Answer, p: _ExternalPost) -> None:
        slot, outcome, problem, response, now = a.slot, a.outcome, a.problem, a.response, a.now
        external = self._external.get(p.group_id)
        built = None if external is None else external.built
        if external is None or not isinstance(built, _BuiltExternal) or built.digest != p.digest:
            slot.done()
            return
        code = problem.code if problem else ""
        if outcome in (_Outcome.OK, _Outcome.EXISTS):
            slot.done()
            self._install_external(external, built, api.accepted_seq(response), now)
            return
        external.built = None
        if outcome == _Outcome.STALE or code == "approval-required":
            # The GroupInfo was stale (a commit came first, and nobody holding the
            # secret resealed yet): read it again after a moment.
            slot.failed(now, self._config.retry, self._rng)
            return
        if outcome == _Outcome.NOT_MEMBER:
            slot.done()
            self._on_external_info(
                _Answer(slot, outcome, problem, response, now),
                _ExternalInfo(p.group_id, external.by_invite),
            )
            return
        if external.by_invite and code in _JOIN_REFUSALS and self._open_group(p.group_id) is None:
            slot.done()
            self._join_failed(external, code)
            return
        self._refused(slot, problem, "messages", now)

    def _install_external(
        self, external: _External, built: _BuiltExternal, seq: int, now: float
    ) -> None:
        """
        The relay accepted our external commit at ``seq``: its group is ours now.

        A resync keeps the group's messages, names and outbox (re-encrypted for
        the new epoch when sent); what was sent between our last readable entry
        and ``seq`` is lost to this device (RFC 9420 §16.6: a new leaf cannot
        read earlier epochs).
        """
        group = built.join.group
        group_id = external.group_id
        existing = self._groups.get(group_id)
        resync = existing is not None and not existing.status.closed
        state = existing or _GroupState(group_id)
        state.persistence = GroupPersistence(group, self._store.group_records(group_id))
        txn = _Txn(state.store)
        if not resync:
            state.outbox = {}
            txn.put(META_KEY, encode_status(GroupStatus.ACTIVE))
            state.status = GroupStatus.ACTIVE
        txn.put(CURSOR_KEY, encode_cursor(seq))
        txn.delete(RESYNC_KEY)
        if external.secret is not None:
            keys = invite_keys.derive_invite_keys(external.secret)
            record = state.invite_records.get(keys.signing_public_key) or InviteRecord(
                secret=external.secret, expires_at=2**63 - 1, max_uses=1, sealed_epoch=1, mine=0
            )
            state.invite_records[keys.signing_public_key] = record
            txn.put(invite_record_key(keys.signing_public_key), record.encode())
        if resync:
            txn.events.append(GroupResynced(group_id, group.epoch))
        else:
            txn.events.append(GroupJoined(group_id, group.epoch))
            if self._display_name is not None:
                self._enqueue(
                    state, txn, self._encrypted(state, self._profile(self._display_name, now))
                )
        self._groups[group_id] = state
        self._save(state, txn)
        state.cursor = seq
        state.acked_cursor = 0
        state.needs_resync = False
        state.send_blocked = False
        state.reseal_epoch = group.epoch
        state.fetch.wanted = True
        state.invites.wanted = bool(state.invite_records)
        self._end_external(external)

    # -- Welcomes ---------------------------------------------------------------------------

    def _on_welcomes(self, a: _Answer, p: _Welcomes) -> None:
        slot, outcome, problem, response, now = a.slot, a.outcome, a.problem, a.response, a.now
        if outcome != _Outcome.OK:
            self._refused(slot, problem, "/v1/welcomes", now)
            return
        welcomes = api.parse_welcomes(response)
        slot.done()
        for pending in welcomes:
            self._join(pending, now)
        if welcomes:
            self._count.wanted = True
        self._settle_requests(p.settles)

    def _join(self, pending: api.PendingWelcome, now: float) -> None:
        """
        Join a group from a Welcome, once.

        The relay keeps a Welcome until our cursor in its group passes the
        commit that added us, so one seen again (after a crash, or before
        that acknowledgement) is recognised by its group and commit seq and
        only acknowledged. A Welcome we cannot use is remembered as refused.
        """
        device_records = self._store.device_records()
        refused_key = f"welcome-refused/{pending.group_id.hex()}/{pending.commit_seq}"
        existing = self._groups.get(pending.group_id)
        if existing is not None and not (
            existing.status.closed and pending.commit_seq > existing.cursor
        ):
            return
        if device_records.get(refused_key) is not None:
            return
        _, pool = self._require_device()
        group, package = self._open_welcome(pool, pending, now)
        if group is None or package is None:
            device_records.apply({refused_key: b""}, ())
            return
        state = existing or _GroupState(pending.group_id)
        # A device re-added to a group it was removed from starts a new MLS
        # state (the first save replaces the old one) but keeps its messages.
        state.persistence = GroupPersistence(group, self._store.group_records(group.group_id))
        state.outbox = {}
        state.needs_resync = False
        txn = _Txn(state.store)
        txn.put(META_KEY, encode_status(GroupStatus.ACTIVE))
        txn.put(CURSOR_KEY, encode_cursor(pending.commit_seq))
        txn.delete(RESYNC_KEY)
        txn.events.append(GroupJoined(group.group_id, group.epoch))
        state.status = GroupStatus.ACTIVE
        state.cursor = pending.commit_seq
        state.acked_cursor = 0
        if self._display_name is not None:
            self._enqueue(
                state, txn, self._encrypted(state, self._profile(self._display_name, now))
            )
        self._groups[group.group_id] = state
        self._save(state, txn)
        state.fetch.wanted = True
        pool.consume(package)
        external = self._external.get(group.group_id)
        if external is not None:
            self._end_external(external)  # an admin approved our request

    def _open_welcome(
        self, pool: KeyPackagePool, pending: api.PendingWelcome, now: float
    ) -> tuple[Group | None, PooledKeyPackage | None]:
        try:
            message = MLSMessage.decode(pending.welcome)
        except DecodeError:
            return None, None
        welcome = message.body
        if not isinstance(welcome, Welcome):
            return None, None
        package = None
        for secrets in welcome.secrets:
            package = pool.find(secrets.new_member)
            if package is not None:
                break
        if package is None:
            return None, None
        try:
            group = Group.join(
                pending.welcome,
                package.bundle,
                ratchet_tree=pending.ratchet_tree,
                config=self._group_config,
                now=int(now),
            )
        except MLSError:
            return None, None
        if group.group_id != pending.group_id:
            return None, None
        return group, package

    # -- The log ----------------------------------------------------------------------------

    def _on_fetch(self, a: _Answer, p: _Fetch) -> None:
        slot, outcome, problem, response, now = a.slot, a.outcome, a.problem, a.response, a.now
        group_id, after = p.group_id, p.after
        state = self._groups.get(group_id)
        if state is None:
            slot.done()
            return
        if outcome == _Outcome.NOT_MEMBER:
            # The relay no longer delivers to us, and we never saw the commit
            # that removed us: the group is over here.
            slot.done()
            txn = _Txn(state.store)
            if not state.status.closed:
                left = state.status == GroupStatus.LEAVING
                self._close(state, GroupStatus.REMOVED, txn, reason="removed")
                txn.events.append(RemovedFromGroup(group_id, state.group.epoch, left=left))
            self._save(state, txn)
            return
        if outcome == _Outcome.GONE:
            slot.done()
            self._need_resync(state, state.cursor + 1, "the relay pruned the log past our cursor")
            return
        if outcome != _Outcome.OK:
            self._refused(slot, problem, "messages", now)
            return
        log = api.parse_log(response, after=after)
        slot.done()
        if after != state.cursor:
            # The cursor moved meanwhile (an inline push, say): ask again.
            state.fetch.wanted = True
            return
        self._process_log(state, log.entries, now)
        if log.more and log.entries and not state.status.closed and not state.needs_resync:
            state.fetch.wanted = True
        else:
            state.send_blocked = False

    def _need_resync(self, state: _GroupState, seq: int, reason: str) -> None:
        txn = _Txn(state.store)
        txn.put(RESYNC_KEY, encode_cursor(seq))
        txn.events.append(ResyncRequired(state.group_id, seq, reason))
        self._save(state, txn)
        state.needs_resync = True
        self._external.setdefault(state.group_id, _External(state.group_id, None))

    def _process_log(self, state: _GroupState, entries: Iterable[api.LogEntry], now: float) -> None:
        """
        Process log entries in order and save everything in one batch with the new cursor.
        """
        txn = _Txn(state.store)
        cursor = state.cursor
        resync: tuple[int, str] | None = None
        proposals_arrived = False
        for entry in entries:
            if entry.seq <= cursor or state.status.closed:
                continue
            outcome = self._process_entry(state, entry, txn, now)
            if isinstance(outcome, str):
                resync = (entry.seq, outcome)
                break
            proposals_arrived = proposals_arrived or outcome
            cursor = entry.seq
            if txn.get(sent_key(entry.seq)) is not None:
                txn.delete(sent_key(entry.seq))
        if cursor != state.cursor:
            txn.put(CURSOR_KEY, encode_cursor(cursor))
        if resync is not None:
            txn.put(RESYNC_KEY, encode_cursor(resync[0]))
            txn.events.append(ResyncRequired(state.group_id, resync[0], resync[1]))
        if (
            proposals_arrived
            and state.status == GroupStatus.ACTIVE
            and state.group.pending_proposals
            and not any(e.kind == EntryKind.COMMIT for e in state.outbox.values())
        ):
            # Townsquare choice: a member's own removal (leave) is committed by
            # the next member online; each waits a random moment so that usually
            # one commits and the others find nothing left to do.
            self._enqueue_commit(state, CommitIntent(commit_held=1), txn)
            fraction = int.from_bytes(self._rng(4), "big") / 2**32
            state.commit_not_before = now + fraction * self._config.commit_delay_seconds
        self._save(state, txn)
        state.cursor = cursor
        if resync is not None:
            state.needs_resync = True
            self._external.setdefault(state.group_id, _External(state.group_id, None))

    def _own_entry(self, state: _GroupState, digest: bytes) -> OutboxEntry | None:
        for entry in state.outbox.values():
            if digest in entry.sent_digests:
                return entry
        return None

    def _process_entry(
        self, state: _GroupState, entry: api.LogEntry, txn: _Txn, now: float
    ) -> bool | str:
        """
        Process one log entry into ``txn``.

        :returns: whether a proposal arrived, or the reason a resync is needed.
        """
        group_id = state.group_id
        if txn.get(sent_key(entry.seq)) is not None:
            return False  # Ours, accounted for when the relay acknowledged it.
        own = self._own_entry(state, _digest(entry.message))
        if own is not None and own.kind in (EntryKind.MESSAGE, EntryKind.PROPOSAL):
            self._account_own(state, own, entry.seq, txn)
            return False
        group = state.group
        try:
            header = peek(entry.message)
        except DecodeError:
            txn.events.append(MessageUndecryptable(group_id, entry.seq, "not an MLSMessage"))
            return False
        before = {m.leaf_index: m.leaf_node.signature_key for m in group.members()}
        try:
            result = group.process(entry.message, now=int(now))
        except MLSError as exc:
            reason = type(exc).__name__
            if (
                header.content_type == ContentType.COMMIT
                and header.group_id == group.group_id
                and header.epoch == group.epoch
            ):
                return f"cannot process the commit at seq {entry.seq}: {reason}"
            txn.events.append(MessageUndecryptable(group_id, entry.seq, reason))
            return False
        if isinstance(result, ApplicationMessage):
            self._receive_application(state, entry.seq, result, txn)
            return False
        if isinstance(result, StagedCommit):
            refusal = _policy_refusal(group, result)
            if refusal is not None:
                return f"the commit at seq {entry.seq} breaks the group's rules: {refusal}"
            self._merge(state, result, _Merge(before=before, own=own, txn=txn, now=now))
            return False
        return True

    def _tells_title(
        self, state: _GroupState, staged: StagedCommit, before: dict[LeafIndex, bytes]
    ) -> bool:
        """
        Whether this device tells newcomers who joined by external commit the title.

        The joiner committed, and it cannot know the title; Townsquare choice: the
        admin in the lowest leaf tells it (or, in a group without admins, the
        member in the lowest leaf), so that exactly one member does.
        """
        if not any(isinstance(item.proposal, ExternalInit) for item in staged.covered):
            return False
        admins = self.admins(state.group_id)
        members = sorted(before.items())
        tellers = [i for i, key in members if admins is None or key in admins] or [
            i for i, _ in members
        ]
        return bool(tellers) and tellers[0] == state.group.own_leaf

    def _introduce(self, state: _GroupState, txn: _Txn, now: float, *, with_title: bool) -> None:
        """
        Send our Profile (and, if we added someone, the title) again for the new members.

        Newcomers cannot read what was said before they joined (RFC 9420 §16.6),
        names and titles included; Townsquare choice: every member announces its
        own name again after a commit that adds members, and the committer the
        title. O(members) small messages per join.
        """
        messages: list[wire.Message] = []
        if with_title:
            title = txn.get(TITLE_KEY)
            if title is not None:
                messages.append(
                    wire.GroupTitle(
                        decode_named(TITLE_KEY, title).text,
                        message_id=self._new_id(),
                        sent_at=self._at(now),
                    )
                )
        if self._display_name is not None:
            messages.append(self._profile(self._display_name, now))
        for message in messages:
            self._enqueue(state, txn, self._encrypted(state, message))

    def _receive_application(
        self, state: _GroupState, seq: int, result: ApplicationMessage, txn: _Txn
    ) -> None:
        leaf = state.group.tree.leaf(result.sender)
        if leaf is None:  # pragma: no cover - process() checked the sender's leaf
            return
        try:
            message = wire.decode(result.data)
        except wire.NotUnderstood:
            message = None
        except wire.InvalidMessage as exc:
            txn.events.append(MessageUndecryptable(state.group_id, seq, type(exc).__name__))
            return
        stored = StoredMessage(
            group_id=state.group_id,
            seq=seq,
            sender=leaf.signature_key,
            sender_leaf=int(result.sender),
            epoch=result.epoch,
            own=False,
            message=message,
            data=result.data,
        )
        if self._store_message(state, stored, txn):
            name_record = txn.get(profile_key(stored.sender))
            name = (
                None
                if name_record is None
                else decode_named(profile_key(stored.sender), name_record).text
            )
            txn.events.append(MessageReceived(state.group_id, stored.named(name)))

    def _merge(self, state: _GroupState, staged: StagedCommit, context: _Merge) -> None:
        before, own, txn, now = context.before, context.own, context.txn, context.now
        group = state.group
        group_id = state.group_id
        if own is not None:
            del state.outbox[own.number]
            txn.delete(outbox_key(own.number))
        if staged.we_are_removed:
            left = state.status == GroupStatus.LEAVING
            self._close(state, GroupStatus.REMOVED, txn, reason="removed")
            txn.events.append(RemovedFromGroup(group_id, staged.epoch, left=left))
            return
        group.merge(staged)
        after = {m.leaf_index: m.leaf_node.signature_key for m in group.members()}
        epoch = group.epoch
        txn.events.append(EpochAdvanced(group_id, epoch))
        if staged.own:
            txn.events.append(CommitAccepted(group_id, epoch))
            state.reseal_epoch = epoch
        if state.invite_records:
            state.invites.wanted = True
        old_keys, new_keys = set(before.values()), set(after.values())
        for leaf_index, key in sorted(after.items()):
            if key not in old_keys:
                txn.events.append(MemberJoined(group_id, key, int(leaf_index), epoch))
        for leaf_index, key in sorted(before.items()):
            if key not in new_keys:
                txn.events.append(MemberLeft(group_id, key, int(leaf_index), epoch))
        if new_keys - old_keys:
            self._introduce(
                state, txn, now, with_title=staged.own or self._tells_title(state, staged, before)
            )
        if state.status == GroupStatus.LEAVING and not any(
            e.kind == EntryKind.PROPOSAL for e in state.outbox.values()
        ):
            # The epoch moved on without our removal: our proposal is void; propose again.
            self._enqueue(
                state,
                txn,
                OutboxEntry(
                    number=self._take_number(),
                    kind=EntryKind.PROPOSAL,
                    client_message_id=self._new_id(),
                    epoch=None,
                ),
            )


def _policy_refusal(group: Group, staged: StagedCommit) -> str | None:
    """
    :returns: why the group's policy forbids a verified commit, or ``None`` if it allows it.
    """
    members = {int(m.leaf_index): m.leaf_node.signature_key for m in group.members()}
    external = any(isinstance(item.proposal, ExternalInit) for item in staged.covered)
    try:
        policy = rules.group_policy(group.context.extensions)
        committer = members.get(int(staged.committer), b"")
        rules.check_commit(
            policy,
            committer=committer,
            members=members,
            covered=staged.covered,
            external=external,
        )
    except (rules.NotPermitted, rules.InvalidGroupPolicy) as exc:
        return str(exc)
    return None


def _with_settings(policy: rules.GroupPolicy, intent: CommitIntent) -> rules.GroupPolicy:
    """
    :returns: ``policy`` with the flags the intent sets (its admins untouched).
    """
    changed = policy
    if intent.approval_required is not None:
        changed = replace(changed, approval_required=bool(intent.approval_required))
    if intent.members_can_add is not None:
        changed = replace(changed, members_can_add=bool(intent.members_can_add))
    return changed


def _policy_only(intent: CommitIntent) -> bool:
    # An intent that changes only the group policy (admins, settings).
    return intent.changes_policy and not (
        intent.add_accounts
        or intent.add_key_packages
        or intent.remove_devices
        or intent.update
        or intent.commit_held
    )


def _changed_policy(group: Group, intent: CommitIntent) -> tuple[Extension, ...] | None:
    """
    :returns: the group's GroupContext extensions with the intent's admin and settings
        changes made to its policy, or ``None`` if nothing would change (another commit
        did it first).
    """
    policy = rules.group_policy(group.context.extensions)
    if policy is None:
        return None
    changed = _with_settings(policy, intent)
    for key in intent.promote_devices:
        changed = changed.with_admin(key, admin=True)
    for key in intent.demote_devices:
        changed = changed.with_admin(key, admin=False)
    if set(changed.admins) == set(policy.admins) and (
        changed.approval_required,
        changed.members_can_add,
    ) == (policy.approval_required, policy.members_can_add):
        return None
    return tuple(
        changed.extension() if e.extension_type == rules.GROUP_POLICY_EXTENSION else e
        for e in group.context.extensions
    )
