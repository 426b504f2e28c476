"""
Saving a group incrementally and loading it back after a restart (townsquare.mls.group_store).

The store contract runs against the fake and SQLite. A scenario drives a
persisted device ("a") and in-memory peers through a fake delivery service;
the device saves after every transition (with its delivery cursor and outbox
in the same batch), and is reloaded after every save, or crashes at every
batch in turn, and must still agree with the peers and read every message
exactly once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import pytest

from townsquare.mls.ciphersuite import Rng, get_cipher_suite
from townsquare.mls.codec import Struct
from townsquare.mls.credentials import BasicCredential
from townsquare.mls.errors import UsageError
from townsquare.mls.group import (
    ApplicationMessage,
    Group,
    GroupConfig,
    PendingCommit,
    ProposalReceived,
    StagedCommit,
    _Epoch,
    _PastEpoch,
)
from townsquare.mls.group_context import GroupContext
from townsquare.mls.group_store import (
    GroupNotStored,
    GroupPersistence,
    GroupStore,
    MemoryGroupStore,
    SavedChanges,
    StoreCorrupt,
    _EpochRecord,
    _Header,
    _NodeValue,
    _PastRecord,
    _PendingRecord,
)
from townsquare.mls.key_package import KeyPackageBundle, generate_key_package
from townsquare.mls.leaf_node import LeafNode, Lifetime
from townsquare.mls.proposals import Add, PreSharedKey, Remove
from townsquare.mls.psk import PreSharedKeyID
from townsquare.mls.ratchet_tree import RatchetTree
from townsquare.mls.registries import PSKType, ResumptionPSKUsage
from townsquare.mls.secret_tree import RatchetKind, SecretTree
from townsquare.mls.tree_math import LeafIndex, NodeIndex
from townsquare.storage import SqliteGroupStore, connect

SUITE = get_cipher_suite(1)
S = TypeVar("S", bound=Struct)
GROUP_ID = b"townsquare persistence tests"
CONFIG = GroupConfig()


def seeded_rng(seed: bytes) -> Rng:
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
            counter += 1
        return out[:n]

    return rng


@functools.cache
def bundle(name: str) -> KeyPackageBundle:
    # Deterministic per name, and immutable, so worlds may share them.
    rng = seeded_rng(name.encode())
    signature_private_key, _ = SUITE.generate_signature_key_pair(rng)
    return generate_key_package(
        SUITE,
        credential=BasicCredential(name.encode()),
        signature_private_key=signature_private_key,
        rng=rng,
        lifetime=Lifetime(not_before=0, not_after=2**64 - 1),
    )


def epoch_digest(epoch: _Epoch) -> tuple[object, ...]:
    private = epoch.private
    return (
        epoch.context,
        epoch.tree.encode(),
        epoch.tree.leaf_count,
        tuple((n, private.private_key(n)) for n in private.nodes()),
        epoch.secrets,
        epoch.interim_transcript_hash,
        epoch.confirmation_tag,
        epoch.own_leaf,
    )


def pending_digest(pending: PendingCommit | None) -> tuple[object, ...] | None:
    if pending is None:
        return None
    staged = pending.staged
    return (
        pending.commit,
        pending.welcome,
        pending.group_info,
        staged.epoch,
        staged.committer,
        staged.added,
        staged.removed,
        staged.updated,
        staged.own,
        staged.we_are_removed,
        staged.reinit,
        staged._previous_epoch,
        epoch_digest(staged._next),
    )


def past_digest(past: _PastEpoch) -> tuple[object, ...]:
    return (
        past.context,
        past.tree.encode(),
        past.tree.leaf_count,
        past.secret_tree.snapshot(),
        past.sender_data_secret,
    )


def group_digest(group: Group) -> tuple[object, ...]:
    """
    Everything a Group holds (its __slots__, see test_every_slot_of_group_is_persisted).
    """
    return (
        group.cipher_suite.suite_id,
        epoch_digest(group._epoch),
        group._signature_private_key,
        group._secret_tree.snapshot(),
        tuple(group._proposals.items()),
        tuple(group._pending_updates.items()),
        pending_digest(group._pending_commit),
        tuple((e, past_digest(p)) for e, p in sorted(group._past.items())),
        tuple(sorted(group._resumption_psks.items())),
        group._reinitialized,
    )


# -- Stores -----------------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], GroupStore]]:
    connections: list[sqlite3.Connection] = []

    def make() -> GroupStore:
        if request.param == "memory":
            return MemoryGroupStore()
        connection = connect(tmp_path / f"groups{len(connections)}.sqlite")
        connections.append(connection)
        return SqliteGroupStore(connection, b"group")

    yield make
    for connection in connections:
        connection.close()


def dump(store: GroupStore) -> dict[str, bytes]:
    return dict(store.scan(""))


def test_store_starts_empty(make_store: Callable[[], GroupStore]) -> None:
    store = make_store()
    assert store.get("a") is None
    assert store.scan("") == []


def test_store_applies_puts_and_deletes(make_store: Callable[[], GroupStore]) -> None:
    store = make_store()
    store.apply({"a/1": b"one", "a/2": b"two", "b": b""}, ())
    store.apply({"a/1": b"uno", "c": b"3"}, ["a/2", "never/there"])
    assert store.get("a/1") == b"uno"
    assert store.get("a/2") is None
    assert store.get("b") == b""
    assert dump(store) == {"a/1": b"uno", "b": b"", "c": b"3"}


def test_store_scans_a_prefix_in_key_order(make_store: Callable[[], GroupStore]) -> None:
    store = make_store()
    keys = ["a/10", "a/02", "a/", "a0", "a", "a/~", "b/1", "Z"]
    store.apply({key: key.encode() for key in keys}, ())
    assert [k for k, _ in store.scan("a/")] == ["a/", "a/02", "a/10", "a/~"]
    assert store.scan("a/1") == [("a/10", b"a/10")]
    assert [k for k, _ in store.scan("a")] == ["a", "a/", "a/02", "a/10", "a/~", "a0"]
    assert [k for k, _ in store.scan("")] == sorted(keys)
    assert store.scan("~") == []


def test_store_empty_batch_changes_nothing(make_store: Callable[[], GroupStore]) -> None:
    store = make_store()
    store.apply({"k": b"v"}, ())
    store.apply({}, ())
    assert dump(store) == {"k": b"v"}


@pytest.mark.parametrize(
    ("puts", "deletes"),
    [
        ({"": b"v"}, ()),
        ({"has space": b"v"}, ()),
        ({"naïve": b"v"}, ()),
        ({"k" * 256: b"v"}, ()),
        ({"ok": b"v"}, ["bad\n"]),
        ({"ok": bytearray(b"v")}, ()),
        ({"ok": "v"}, ()),
        ({"ok": b"v", "both": b"v"}, ["both"]),
        ({1: b"v"}, ()),
    ],
    ids=[
        "empty-key",
        "space",
        "non-ascii",
        "too-long",
        "bad-delete",
        "bytearray",
        "str-value",
        "put-and-delete",
        "int-key",
    ],
)
def test_store_refuses_a_bad_batch_and_writes_nothing(
    make_store: Callable[[], GroupStore], puts: Mapping[str, bytes], deletes: Collection[str]
) -> None:
    store = make_store()
    store.apply({"k": b"v", "both": b"old"}, ())
    with pytest.raises(UsageError):
        store.apply(puts, deletes)
    assert dump(store) == {"both": b"old", "k": b"v"}


def test_store_refuses_a_bad_prefix(make_store: Callable[[], GroupStore]) -> None:
    store = make_store()
    with pytest.raises(UsageError):
        store.scan("a b")
    with pytest.raises(UsageError):
        store.scan(b"a")  # type: ignore[arg-type]


def test_sqlite_records_survive_reopening_and_scopes_are_separate(tmp_path: Path) -> None:
    path = tmp_path / "device.sqlite"
    connection = connect(path)
    SqliteGroupStore(connection, b"g1").apply({"k": b"one"}, ())
    SqliteGroupStore(connection, b"g2").apply({"k": b"two"}, ())
    connection.close()
    connection = connect(path)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert SqliteGroupStore(connection, b"g1").scan("") == [("k", b"one")]
        assert SqliteGroupStore(connection, b"g2").get("k") == b"two"
        assert SqliteGroupStore(connection, b"g3").get("k") is None
    finally:
        connection.close()


def test_sqlite_batch_that_fails_midway_is_rolled_back(tmp_path: Path) -> None:
    connection = connect(tmp_path / "device.sqlite")
    try:
        # The database refuses the second put of the batch, after the
        # deletes and the first put ran inside the transaction.
        connection.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON group_records WHEN NEW.key = 'z' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        store = SqliteGroupStore(connection, b"g")
        store.apply({"a": b"1", "b": b"2"}, ())
        with pytest.raises(sqlite3.IntegrityError):
            store.apply({"a": b"changed", "z": b"boom"}, ["b"])
        assert store.scan("") == [("a", b"1"), ("b", b"2")]
        assert not connection.in_transaction
        store.apply({"c": b"3"}, ())
        assert store.get("c") == b"3"
    finally:
        connection.close()


def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version=99")
    raw.close()
    with pytest.raises(UsageError, match="newer"):
        connect(path)


# -- The scenario: a fake delivery service, in-memory peers and a persisted device -------


class Crash(Exception):
    """
    The process died (raised by a store wrapper at a chosen batch).
    """


class ScriptedStore:
    """
    A store wrapper that records the state after each batch and crashes at one of them.

    ``after=False``: the crash happens before the batch reaches the store;
    ``after=True``: after it is stored, before the caller learns so.
    """

    def __init__(
        self, inner: GroupStore, *, crash_at: int | None = None, after: bool = False
    ) -> None:
        self.inner = inner
        self.crash_at = crash_at
        self.after = after
        self.applies = 0
        self.states: list[dict[str, bytes]] = [dump(inner)]

    def get(self, key: str) -> bytes | None:
        return self.inner.get(key)

    def scan(self, prefix: str) -> list[tuple[str, bytes]]:
        return self.inner.scan(prefix)

    def apply(self, puts: Mapping[str, bytes], deletes: Collection[str]) -> None:
        self.applies += 1
        if self.applies == self.crash_at and not self.after:
            raise Crash
        self.inner.apply(puts, deletes)
        self.states.append(dump(self.inner))
        if self.applies == self.crash_at:
            raise Crash


@dataclass(frozen=True)
class Entry:
    sender: str
    kind: str  # "commit", "proposal" or "application"
    epoch: int
    data: bytes


class DeliveryService:
    """
    One ordered log per group; the first commit for an epoch wins; resending is idempotent.
    """

    def __init__(self) -> None:
        self.log: list[Entry] = []
        self.welcomes: dict[int, bytes] = {}
        self.committed_epochs: set[int] = set()

    def submit(self, entry: Entry, welcome: bytes | None = None) -> bool:
        if entry in self.log:
            return True
        if entry.kind == "commit":
            if entry.epoch in self.committed_epochs:
                return False
            self.committed_epochs.add(entry.epoch)
        self.log.append(entry)
        if welcome is not None:
            self.welcomes[len(self.log) - 1] = welcome
        return True

    def welcome_for(self, name: str) -> tuple[int, bytes]:
        # The Welcome of the last commit that added ``name``'s KeyPackage.
        for index in sorted(self.welcomes, reverse=True):
            if bundle(name).key_package.encode() in self.log[index].data:
                return index, self.welcomes[index]
        raise AssertionError(f"no Welcome for {name}")


class Peer:
    """
    An in-memory member (never restarts).
    """

    def __init__(self, name: str, group: Group, cursor: int) -> None:
        self.name = name
        self.group = group
        self.cursor = cursor
        self.joined_epoch = group.epoch
        self.received: list[bytes] = []
        self.removed = False

    def catch_up(self, ds: DeliveryService) -> None:
        while self.cursor < len(ds.log) and not self.removed:
            entry = ds.log[self.cursor]
            self.cursor += 1
            if entry.epoch < self.joined_epoch or (
                entry.sender == self.name and entry.kind != "commit"
            ):
                continue
            result = self.group.process(entry.data)
            if isinstance(result, StagedCommit):
                if result.we_are_removed:
                    self.removed = True
                else:
                    self.group.merge(result)
            elif isinstance(result, ApplicationMessage):
                self.received.append(result.data)

    def send(self, ds: DeliveryService, text: bytes, rng: Rng) -> None:
        ds.submit(
            Entry(self.name, "application", self.group.epoch, self.group.encrypt(text, rng=rng))
        )

    def commit(self, ds: DeliveryService, rng: Rng, **kwargs: object) -> bool:
        pending = self.group.commit(rng=rng, **kwargs)  # type: ignore[arg-type]
        accepted = ds.submit(
            Entry(self.name, "commit", self.group.epoch, pending.commit), pending.welcome
        )
        if not accepted:
            self.group.discard_pending_commit()
        return accepted


def encode_outbox(entry: Entry, welcome: bytes | None) -> bytes:
    return json.dumps(
        {
            "kind": entry.kind,
            "epoch": entry.epoch,
            "data": entry.data.hex(),
            "welcome": None if welcome is None else welcome.hex(),
        }
    ).encode()


def decode_outbox(raw: bytes) -> tuple[Entry, bytes | None]:
    outbox = json.loads(raw)
    welcome = None if outbox["welcome"] is None else bytes.fromhex(outbox["welcome"])
    return Entry("a", outbox["kind"], outbox["epoch"], bytes.fromhex(outbox["data"])), welcome


class Device:
    """
    The persisted member "a": every transition is saved with its cursor or outbox in one batch.

    What an application driver does: process a message and save it with the
    cursor after it; make a message and save it with the outbox entry (and
    the intent it fulfils), then send, then save the outbox empty.
    """

    def __init__(
        self, store: GroupStore, ds: DeliveryService, rng: Rng, *, reload_every_save: bool
    ) -> None:
        self.store = store
        self.ds = ds
        self.rng = rng
        self.reload_every_save = reload_every_save
        self.persistence: GroupPersistence | None = None
        self.saves: list[SavedChanges] = []

    @property
    def group(self) -> Group:
        assert self.persistence is not None
        return self.persistence.group

    def save(
        self, app_puts: Mapping[str, bytes] | None = None, app_deletes: Collection[str] = ()
    ) -> None:
        assert self.persistence is not None
        self.saves.append(self.persistence.save(app_puts=app_puts, app_deletes=app_deletes))
        if self.reload_every_save:
            # A restart after every save: the loaded group must be the one
            # saved, in every field, and the device goes on with it.
            before = group_digest(self.group)
            self.persistence = GroupPersistence.load(self.store, config=CONFIG)
            assert group_digest(self.group) == before

    def restart(self) -> None:
        try:
            self.persistence = GroupPersistence.load(self.store, config=CONFIG)
        except GroupNotStored:
            self.persistence = None
            return
        self.flush_outbox()

    @property
    def cursor(self) -> int:
        raw = self.store.get("app/cursor")
        return 0 if raw is None else int(raw)

    def done(self, intent: str) -> bool:
        return self.store.get(f"app/intent/{intent}") is not None

    def create(self) -> None:
        if self.done("create"):
            return
        group = Group.create(bundle("a"), group_id=GROUP_ID, rng=self.rng, config=CONFIG)
        self.persistence = GroupPersistence(group, self.store)
        self.save({"app/intent/create": b""})

    def act(self, intent: str, make: Callable[[Group], tuple[str, bytes, bytes | None]]) -> None:
        if self.done(intent):
            return
        epoch = self.group.epoch
        kind, data, welcome = make(self.group)
        outbox = encode_outbox(Entry("a", kind, epoch, data), welcome)
        self.save({f"app/intent/{intent}": b"", "app/outbox": outbox})
        self.flush_outbox()

    def flush_outbox(self) -> None:
        raw = self.store.get("app/outbox")
        if raw is None:
            return
        entry, welcome = decode_outbox(raw)
        if not self.ds.submit(entry, welcome):
            # Another commit won the epoch (RFC 9420 §14): ours is dropped.
            self.group.discard_pending_commit()
        self.save(app_deletes=["app/outbox"])

    def catch_up(self) -> None:
        while self.cursor < len(self.ds.log):
            index = self.cursor
            entry = self.ds.log[index]
            puts = {"app/cursor": str(index + 1).encode()}
            if entry.sender != "a" or entry.kind == "commit":
                result = self.group.process(entry.data)
                if isinstance(result, StagedCommit):
                    self.group.merge(result)
                elif isinstance(result, ApplicationMessage):
                    puts[f"app/received/{index:06d}"] = result.data
            self.save(puts)

    def received(self) -> list[bytes]:
        return [value for _, value in self.store.scan("app/received/")]


def commit_of(**kwargs: object) -> Callable[[Group], tuple[str, bytes, bytes | None]]:
    def make(group: Group) -> tuple[str, bytes, bytes | None]:
        pending = group.commit(**kwargs)  # type: ignore[arg-type]
        return "commit", pending.commit, pending.welcome

    return make


class World:
    def __init__(self, store: GroupStore, *, reload_every_save: bool = False) -> None:
        self.rng = seeded_rng(b"townsquare persistence world")
        self.ds = DeliveryService()
        self.device = Device(store, self.ds, self.rng, reload_every_save=reload_every_save)
        self.peers: dict[str, Peer] = {}

    def join(self, name: str) -> Peer:
        index, welcome = self.ds.welcome_for(name)
        peer = Peer(name, Group.join(welcome, bundle(name), config=CONFIG), index + 1)
        self.peers[name] = peer
        return peer

    def catch_up(self, *names: str) -> None:
        for name in names:
            self.peers[name].catch_up(self.ds)

    def leaf_of(self, name: str) -> LeafIndex:
        signature_key = bundle(name).key_package.leaf_node.signature_key
        for member in self.device.group.members():
            if member.leaf_node.signature_key == signature_key:
                return member.leaf_index
        raise AssertionError(f"{name} is not a member")


def scenario(world: World) -> list[Callable[[], None]]:
    """
    The steps; a device step may be re-run after a crash, a peer step never is.
    """
    device, ds, rng = world.device, world.ds, world.rng

    def b_joins() -> None:
        world.join("b")

    def b_sends_and_proposes() -> None:
        b = world.peers["b"]
        b.send(ds, b"b1", rng)
        ds.submit(Entry("b", "proposal", b.group.epoch, b.group.propose_update(rng=rng)))
        b.send(ds, b"b2", rng)

    def b_adds_c_with_a_late_message() -> None:
        world.catch_up("b")
        b = world.peers["b"]
        # Encrypted in this epoch, delivered after the commit that ends it:
        # the device reads it with a past epoch's keys.
        late = Entry("b", "application", b.group.epoch, b.group.encrypt(b"late", rng=rng))
        assert b.commit(ds, rng, proposals=[Add(bundle("c").key_package)], force_path=True)
        ds.submit(late)
        world.catch_up("b")
        world.join("c")
        b.send(ds, b"b3", rng)

    def c_commits_the_devices_update() -> None:
        world.catch_up("b", "c")
        c = world.peers["c"]
        assert c.commit(ds, rng)  # covers the device's Update by reference
        world.catch_up("c")
        c.send(ds, b"c1", rng)

    def resumption_psk_commit(group: Group) -> tuple[str, bytes, bytes | None]:
        psk_id = PreSharedKeyID(
            psktype=PSKType.RESUMPTION,
            usage=ResumptionPSKUsage.APPLICATION,
            psk_group_id=GROUP_ID,
            psk_epoch=group.epoch - 1,
            psk_nonce=rng(SUITE.hash_length),
        )
        return commit_of(rng=rng, proposals=[PreSharedKey(psk_id)])(group)

    def b_wins_a_race() -> None:
        world.catch_up("b", "c")
        assert world.peers["b"].commit(ds, rng, force_path=True)

    def b_adds_d() -> None:
        world.catch_up("b", "c")
        assert world.peers["c"].removed
        b = world.peers["b"]
        assert b.commit(ds, rng, proposals=[Add(bundle("d").key_package)], force_path=True)
        world.catch_up("b")
        world.join("d")
        b.send(ds, b"b4", rng)

    def a_sends(group: Group) -> tuple[str, bytes, bytes | None]:
        return "application", group.encrypt(b"a1", rng=rng), None

    return [
        device.create,
        lambda: device.act("add-b", commit_of(rng=rng, proposals=[Add(bundle("b").key_package)])),
        device.catch_up,
        b_joins,
        b_sends_and_proposes,
        device.catch_up,
        # Commits b's Update by reference, with a path.
        lambda: device.act("commit-update", commit_of(rng=rng, force_path=True)),
        device.catch_up,
        b_adds_c_with_a_late_message,
        device.catch_up,
        lambda: device.act(
            "propose-update", lambda g: ("proposal", g.propose_update(rng=rng), None)
        ),
        c_commits_the_devices_update,
        device.catch_up,
        lambda: device.act("psk", resumption_psk_commit),
        device.catch_up,
        b_wins_a_race,
        # The device's commit for the same epoch loses: it is discarded.
        lambda: device.act("race", commit_of(rng=rng, force_path=True)),
        device.catch_up,
        lambda: device.act("remove-c", commit_of(rng=rng, proposals=[Remove(world.leaf_of("c"))])),
        device.catch_up,
        b_adds_d,
        device.catch_up,
        lambda: device.act("send", a_sends),
        lambda: world.catch_up("b", "d"),
    ]


EXPECTED_RECEIVED = [b"b1", b"b2", b"late", b"b3", b"c1", b"b4"]


def check_converged(world: World) -> None:
    device = world.device
    group = device.group
    assert group.epoch == 8
    for name in ("b", "d"):
        peer = world.peers[name]
        assert peer.group.epoch == group.epoch
        assert peer.group.epoch_authenticator == group.epoch_authenticator
        assert peer.group.tree_hash == group.tree_hash
    assert device.received() == EXPECTED_RECEIVED
    assert world.peers["b"].received[-1:] == [b"a1"]
    assert world.peers["d"].received == [b"b4", b"a1"]
    # And the group loads once more, still in the same state.
    reloaded = GroupPersistence.load(device.store, config=CONFIG).group
    assert group_digest(reloaded) == group_digest(group)


def run(world: World) -> None:
    for step in scenario(world):
        step()


@functools.cache
def reference_states() -> tuple[dict[str, bytes], ...]:
    """
    The device store's contents after each batch of an uninterrupted run.
    """
    store = ScriptedStore(MemoryGroupStore())
    world = World(store)
    run(world)
    check_converged(world)
    return tuple(store.states)


# How many batches the scenario writes; test_scenario_batch_count keeps it exact.
SCENARIO_BATCHES = 31


def test_scenario_batch_count() -> None:
    assert len(reference_states()) - 1 == SCENARIO_BATCHES


def test_device_restarted_after_every_save_agrees_with_its_peers() -> None:
    world = World(MemoryGroupStore(), reload_every_save=True)
    run(world)
    check_converged(world)


@pytest.mark.slow
def test_device_on_sqlite_restarted_after_every_save_agrees_with_its_peers(
    tmp_path: Path,
) -> None:
    # The same on the real store: some 30 transactions, each fsynced.
    connection = connect(tmp_path / "device.sqlite")
    try:
        world = World(SqliteGroupStore(connection, GROUP_ID), reload_every_save=True)
        run(world)
        check_converged(world)
    finally:
        connection.close()


@pytest.mark.parametrize("when", ["before-batch", "after-batch"])
@pytest.mark.parametrize("crash_at", range(1, SCENARIO_BATCHES + 1))
def test_crash_at_any_batch_leaves_a_whole_state_and_converges(crash_at: int, when: str) -> None:
    after = when == "after-batch"
    inner = MemoryGroupStore()
    store = ScriptedStore(inner, crash_at=crash_at, after=after)
    world = World(store)
    steps = scenario(world)
    crashed = False
    i = 0
    while i < len(steps):
        try:
            steps[i]()
        except Crash:
            assert not crashed
            crashed = True
            # The store holds the state before or after the interrupted
            # transition, never a mix of the two.
            expected = reference_states()[crash_at if after else crash_at - 1]
            assert dump(inner) == expected
            world.device.restart()
            continue  # re-run the step, from the stored state
        i += 1
    assert crashed
    check_converged(world)


# -- What each transition writes --------------------------------------------------------


def apply_commit(group: Group, commit: bytes) -> None:
    staged = group.process(commit)
    assert isinstance(staged, StagedCommit)
    group.merge(staged)


def grown_group(n: int, rng: Rng) -> tuple[Group, Group]:
    """
    ``a`` creates a group of ``n`` members by one commit; returns a and b (leaf 1).
    """
    a = Group.create(bundle("a"), group_id=GROUP_ID, rng=rng, config=CONFIG)
    names = [f"m{i}" for i in range(1, n)]
    pending = a.commit(rng=rng, proposals=[Add(bundle(name).key_package) for name in names])
    a.merge(pending.staged)
    assert pending.welcome is not None
    b = Group.join(pending.welcome, bundle(names[0]), config=CONFIG)
    return a, b


def test_decrypt_writes_only_the_ratchet_it_advanced() -> None:
    rng = seeded_rng(b"decrypt")
    a, b = grown_group(16, rng)
    persistence = GroupPersistence(a, MemoryGroupStore())
    persistence.save()
    a.process(b.encrypt(b"first", rng=rng))
    first = persistence.save()
    # The first message from b opens b's ratchets: one node secret goes,
    # its siblings on the way down to b's leaf come (log2(16) = 4).
    assert first.count("secret/") == len(first.put_keys) + len(first.deleted_keys)
    assert sum(1 for k in first.put_keys if "/ratchet/" in k) == 2
    assert sum(1 for k in first.put_keys if "/node/" in k) == 4
    assert len(first.deleted_keys) == 1
    a.process(b.encrypt(b"second", rng=rng))
    second = persistence.save()
    assert second.put_keys == ("secret/00000000000000000001/ratchet/0000000001/application",)
    assert second.deleted_keys == ()
    assert persistence.save() == SavedChanges((), (), 0)


def node_records(changes: SavedChanges) -> int:
    return changes.count("tree/")


@pytest.mark.parametrize("n", [2, 3, 16, 33])
def test_commit_with_a_path_writes_log_n_node_records(n: int) -> None:
    rng = seeded_rng(b"count %d" % n)
    a, b = grown_group(n, rng)
    persistence = GroupPersistence(a, MemoryGroupStore())
    persistence.save()
    pending = b.commit(rng=rng, force_path=True)
    apply_commit(a, pending.commit)
    changes = persistence.save()
    bound = 2 * math.ceil(math.log2(n)) + 4
    assert 1 <= node_records(changes) <= bound
    assert len(changes.put_keys) + len(changes.deleted_keys) <= 3 * bound


@pytest.mark.slow
def test_commit_at_1000_members_writes_log_n_node_records(
    record_property: Callable[[str, object], None],
) -> None:
    n = 1000
    rng = seeded_rng(b"thousand")
    a, b = grown_group(n, rng)
    store = MemoryGroupStore()
    persistence = GroupPersistence(a, store)
    bound = 2 * math.ceil(math.log2(n)) + 4
    figures: dict[str, tuple[int, int, int]] = {}
    families: dict[str, dict[str, int]] = {}

    def measure(label: str, changes: SavedChanges) -> None:
        keys = (*changes.put_keys, *changes.deleted_keys)
        figures[label] = (node_records(changes), len(keys), changes.bytes_written)
        by_family: dict[str, int] = {}
        for key in keys:
            family = key.split("/", 1)[0]
            by_family[family] = by_family.get(family, 0) + 1
        families[label] = by_family

    measure("first save (the whole group)", persistence.save())

    # Another member commits with a path; we process and merge it.
    pending = b.commit(rng=rng, force_path=True)
    apply_commit(a, pending.commit)
    b.merge(pending.staged)
    measure("merge a commit with a path", persistence.save())
    # We commit with a path: the pending commit, then its merge.
    own = a.commit(rng=rng, force_path=True)
    measure("create our commit (pending)", persistence.save())
    apply_commit(a, own.commit)
    apply_commit(b, own.commit)
    measure("merge our commit", persistence.save())
    # An Add and a Remove, each with a path (k = 1).
    pending = b.commit(rng=rng, proposals=[Add(bundle("late joiner").key_package)], force_path=True)
    apply_commit(a, pending.commit)
    b.merge(pending.staged)
    measure("merge an add with a path", persistence.save())
    pending = b.commit(rng=rng, proposals=[Remove(LeafIndex(500))])
    apply_commit(a, pending.commit)
    b.merge(pending.staged)
    measure("merge a remove with a path", persistence.save())
    a.process(b.encrypt(b"hello", rng=rng))
    measure("decrypt the first message of a sender", persistence.save())
    a.process(b.encrypt(b"again", rng=rng))
    measure("decrypt a second message", persistence.save())

    load_seconds = []
    for _ in range(3):
        started = time.perf_counter()
        loaded = GroupPersistence.load(store, config=CONFIG).group
        load_seconds.append(time.perf_counter() - started)
    assert group_digest(loaded) == group_digest(a)
    assert loaded.epoch_authenticator == b.epoch_authenticator

    lines = [f"{n} members: node records / all records / bytes per save (node bound {bound})"]
    lines += [
        f"  {label}: {nodes} / {total} / {size:,} B  {families[label]}"
        for label, (nodes, total, size) in figures.items()
    ]
    lines.append("  load: " + ", ".join(f"{t * 1000:.0f}" for t in load_seconds) + " ms")
    print("\n".join(lines))  # noqa: T201 - the measured figures are the point of this test
    record_property("records", figures)
    for label, (nodes, _, _) in figures.items():
        if label != "first save (the whole group)":
            assert nodes <= bound, label


# -- Restoring a pending commit ---------------------------------------------------------


def test_pending_commit_survives_a_restart_and_is_recognised_as_the_winner() -> None:
    rng = seeded_rng(b"pending")
    a, b = grown_group(5, rng)
    store = MemoryGroupStore()
    persistence = GroupPersistence(a, store)
    persistence.save()
    pending = a.commit(rng=rng, proposals=[Remove(LeafIndex(3))])
    assert persistence.save().put_keys == ("pending",)
    # The process dies before the delivery service answers.
    restored = GroupPersistence.load(store, config=CONFIG)
    assert pending_digest(restored.group._pending_commit) == pending_digest(pending)
    staged = restored.group.process(pending.commit)
    assert isinstance(staged, StagedCommit)
    assert staged.own
    # What the commit covers, with its proposer, survives too (authority rules use it).
    assert staged.covered == pending.staged.covered
    assert [type(c.proposal) for c in staged.covered] == [Remove]
    restored.group.merge(staged)
    restored.save()
    apply_commit(b, pending.commit)
    again = GroupPersistence.load(store, config=CONFIG).group
    assert again.epoch_authenticator == b.epoch_authenticator
    assert again.members() == b.members()


def test_pending_commit_that_lost_is_discarded_after_a_restart() -> None:
    rng = seeded_rng(b"lost")
    a, b = grown_group(4, rng)
    store = MemoryGroupStore()
    persistence = GroupPersistence(a, store)
    persistence.save()
    a.commit(rng=rng, force_path=True)
    persistence.save()
    winner = b.commit(rng=rng, force_path=True)
    b.merge(winner.staged)
    restored = GroupPersistence.load(store, config=CONFIG)
    restored.group.discard_pending_commit()
    assert restored.save().deleted_keys == ("pending",)
    apply_commit(restored.group, winner.commit)
    restored.save()
    again = GroupPersistence.load(store, config=CONFIG).group
    assert again.epoch_authenticator == b.epoch_authenticator


# -- Other paths of save and load -------------------------------------------------------


def test_two_merges_between_saves_are_saved_as_one_batch() -> None:
    rng = seeded_rng(b"two merges")
    a, b = grown_group(6, rng)
    store = MemoryGroupStore()
    persistence = GroupPersistence(a, store)
    persistence.save()
    for _ in range(3):
        pending = b.commit(rng=rng, force_path=True)
        apply_commit(a, pending.commit)
        b.merge(pending.staged)
        a.process(b.encrypt(b"m", rng=rng))
    persistence.save()
    loaded = GroupPersistence.load(store, config=CONFIG)
    assert group_digest(loaded.group) == group_digest(a)
    # A late message of the previous epoch still decrypts after the restart.
    late = b.encrypt(b"late", rng=rng)
    pending = b.commit(rng=rng, force_path=True)
    b.merge(pending.staged)
    group = loaded.group
    apply_commit(group, pending.commit)
    loaded.save()
    group = GroupPersistence.load(store, config=CONFIG).group
    message = group.process(late)
    assert isinstance(message, ApplicationMessage)
    assert message.data == b"late"


def test_load_after_removals_that_shrink_the_tree() -> None:
    rng = seeded_rng(b"shrink")
    a, b = grown_group(9, rng)
    store = MemoryGroupStore()
    persistence = GroupPersistence(a, store)
    persistence.save()
    assert a.tree.leaf_count == 16
    pending = b.commit(rng=rng, proposals=[Remove(LeafIndex(8))])
    apply_commit(a, pending.commit)
    b.merge(pending.staged)
    assert a.tree.leaf_count == 8
    changes = persistence.save()
    assert "tree/0000000016" in changes.deleted_keys
    loaded = GroupPersistence.load(store, config=CONFIG)
    assert group_digest(loaded.group) == group_digest(a)
    pending = b.commit(rng=rng, proposals=[Add(bundle("m8").key_package)])
    group = loaded.group
    apply_commit(group, pending.commit)
    b.merge(pending.staged)
    loaded.save()
    assert group_digest(GroupPersistence.load(store, config=CONFIG).group) == group_digest(group)


def test_first_save_replaces_another_group_and_keeps_app_records() -> None:
    rng = seeded_rng(b"replace")
    store = MemoryGroupStore()
    a, _ = grown_group(5, rng)
    GroupPersistence(a, store).save(app_puts={"app/cursor": b"7"})
    other = Group.create(bundle("x"), group_id=b"another group", rng=rng)
    GroupPersistence(other, store).save()
    assert store.get("app/cursor") == b"7"
    loaded = GroupPersistence.load(store).group
    assert group_digest(loaded) == group_digest(other)
    assert not store.scan("tree/0000000002")


def test_a_secret_tree_replaced_within_its_epoch_is_written_whole() -> None:
    rng = seeded_rng(b"replaced secret tree")
    a, b = grown_group(4, rng)
    store = MemoryGroupStore()
    persistence = GroupPersistence(a, store)
    assert persistence.store is store
    a.process(b.encrypt(b"m", rng=rng))
    persistence.save()
    # Not something Group does; the stored records of the epoch are replaced.
    a._secret_tree = SecretTree(SUITE, a._epoch.secrets.encryption_secret, a.tree.leaf_count)
    changes = persistence.save()
    assert any("/ratchet/" in key for key in changes.deleted_keys)
    assert group_digest(GroupPersistence.load(store).group) == group_digest(a)


def test_app_keys_must_be_under_app_prefix() -> None:
    rng = seeded_rng(b"app keys")
    store = MemoryGroupStore()
    persistence = GroupPersistence(Group.create(bundle("a"), group_id=GROUP_ID, rng=rng), store)
    with pytest.raises(UsageError):
        persistence.save(app_puts={"cursor": b"1"})
    with pytest.raises(UsageError):
        persistence.save(app_deletes=["epoch"])
    assert store.scan("") == []
    persistence.save(app_puts={"app/cursor": b"1"})
    assert persistence.save(app_deletes=["app/cursor"]).deleted_keys == ("app/cursor",)


class FailingStore(MemoryGroupStore):
    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    def apply(self, puts: Mapping[str, bytes], deletes: Collection[str]) -> None:
        if self.fail:
            raise OSError("disk full")
        super().apply(puts, deletes)


def test_a_failed_save_is_written_again_by_the_next() -> None:
    rng = seeded_rng(b"retry")
    a, b = grown_group(6, rng)
    store = FailingStore()
    persistence = GroupPersistence(a, store)
    persistence.save()
    pending = b.commit(rng=rng, force_path=True)
    apply_commit(a, pending.commit)
    b.merge(pending.staged)
    a.process(b.encrypt(b"m", rng=rng))
    store.fail = True
    with pytest.raises(OSError, match="disk full"):
        persistence.save()
    store.fail = False
    persistence.save()
    assert group_digest(GroupPersistence.load(store).group) == group_digest(a)


def test_load_trusts_the_store_and_verifies_no_signature() -> None:
    rng = seeded_rng(b"trust")
    a, _ = grown_group(4, rng)
    store = MemoryGroupStore()
    GroupPersistence(a, store).save()
    # Garble leaf 2's signature and make the epoch's tree hash match, as the
    # store of a device would hold them: loading must not check signatures
    # (a joiner does that once), only that the records fit together.
    tree = a.tree
    nodes = list(tree.to_nodes().nodes)
    leaf = nodes[4]
    assert isinstance(leaf, LeafNode)
    nodes[4] = replace(leaf, signature=bytes(64))
    garbled = RatchetTree(SUITE, nodes)
    context = replace(a.context, tree_hash=garbled.root_tree_hash())
    a._epoch = replace(a._epoch, context=context, tree=garbled)
    persistence = GroupPersistence(a, store)
    persistence.save()
    loaded = GroupPersistence.load(store).group
    assert loaded.tree.leaf(LeafIndex(2)) == nodes[4]


def test_empty_store_holds_no_group() -> None:
    with pytest.raises(GroupNotStored):
        GroupPersistence.load(MemoryGroupStore())


def saved_group_store() -> tuple[MemoryGroupStore, Group]:
    rng = seeded_rng(b"corrupt")
    a, b = grown_group(5, rng)
    store = MemoryGroupStore()
    persistence = GroupPersistence(a, store)
    persistence.save()
    pending = b.commit(rng=rng, force_path=True)
    apply_commit(a, pending.commit)
    b.merge(pending.staged)
    a.process(b.encrypt(b"m", rng=rng))
    received = a.process(b.propose_update(rng=rng))
    assert isinstance(received, ProposalReceived)
    a.propose_update(rng=rng)
    a.commit(rng=rng, by_reference=[received.ref])
    persistence.save()
    return store, a


def corrupt(store: MemoryGroupStore, key: str, value: bytes | None) -> None:
    if value is None:
        store.apply({}, [key])
    else:
        store.apply({key: value}, ())


EPOCH_1 = "00000000000000000001"
EPOCH_2 = "00000000000000000002"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("header", b"\x00", "does not decode"),
        ("header", None, None),
        ("epoch", None, "no epoch"),
        ("epoch", b"", "does not decode"),
        ("tree/0000000002", None, "tree hash"),
        ("tree/0000000099", None, "outside the tree"),
        ("tree/00000000x2", None, "number"),
        ("key/0000000000", None, "no private key"),
        ("key/0000000005", None, "private keys"),
        (f"past/{EPOCH_1}", None, "past epochs"),
        (f"past/{EPOCH_2}", None, "past epochs"),
        (f"secret/{EPOCH_1}/node/0000000007", None, "secret trees"),
        (f"secret/{EPOCH_2}/bogus", None, "unknown secret tree record"),
        (f"secret/{EPOCH_2}/node/0000000099", None, "secret tree is invalid"),
        ("proposal/zz", None, "hex ref"),
        ("pending", b"\x01", "does not decode"),
    ],
)
def test_a_store_that_does_not_fit_together_is_refused(
    key: str, value: bytes | None, message: str | None
) -> None:
    store, group = saved_group_store()
    assert group.epoch == 2
    original = store.get(key)
    if value is None and original is None:
        # Plant a record that should not be there, copied from a sibling.
        value = store.scan(key.rsplit("/", 1)[0] + "/")[0][1]
    corrupt(store, key, value)
    if message is None:
        with pytest.raises(GroupNotStored):
            GroupPersistence.load(store)
    else:
        with pytest.raises(StoreCorrupt, match=message):
            GroupPersistence.load(store)


def rewrite(store: MemoryGroupStore, key: str, cls: type[S], change: Callable[[S], S]) -> None:
    raw = store.get(key)
    assert raw is not None
    store.apply({key: change(cls.decode(raw)).encode()}, ())


def bump_epoch(context: GroupContext) -> GroupContext:
    return replace(context, epoch=context.epoch + 5)


RECORD_CORRUPTIONS: dict[str, tuple[Callable[[MemoryGroupStore], None], str]] = {
    "header-of-another-group": (
        lambda s: rewrite(s, "header", _Header, lambda h: replace(h, group_id=b"other")),
        "another group",
    ),
    "current-leaf-count": (
        lambda s: rewrite(s, "epoch", _EpochRecord, lambda r: replace(r, leaf_count=6)),
        "current epoch: a tree of 6 leaves",
    ),
    "current-tree-shape": (
        # Leaf 4 gone: the tree now ends with the root, a parent node.
        lambda s: s.apply({}, ["tree/0000000008"]),
        "ratchet tree is invalid",
    ),
    "current-tree-width": (
        # Leaf 4 and the root gone: what is left is a tree of 4 leaves.
        lambda s: s.apply({}, ["tree/0000000008", "tree/0000000007"]),
        "4 leaves, not 8",
    ),
    "past-leaf-count": (
        lambda s: rewrite(s, f"past/{EPOCH_1}", _PastRecord, lambda r: replace(r, leaf_count=0)),
        "past epoch 1: a tree of 0 leaves",
    ),
    "past-undo-outside": (
        lambda s: rewrite(
            s,
            f"past/{EPOCH_1}",
            _PastRecord,
            lambda r: replace(r, undo=(*r.undo, _NodeValue(99, None))),
        ),
        "past epoch 1: a node outside the tree",
    ),
    "past-tree-width": (
        lambda s: rewrite(
            s,
            f"past/{EPOCH_1}",
            _PastRecord,
            lambda r: replace(r, undo=(*r.undo, _NodeValue(8, None))),
        ),
        "past epoch 1: the stored tree has 4 leaves",
    ),
    "pending-epoch": (
        lambda s: rewrite(
            s,
            "pending",
            _PendingRecord,
            lambda r: replace(
                r, next_epoch=replace(r.next_epoch, context=bump_epoch(r.next_epoch.context))
            ),
        ),
        "not for the current epoch",
    ),
    "pending-leaf-count": (
        lambda s: rewrite(
            s,
            "pending",
            _PendingRecord,
            lambda r: replace(r, next_epoch=replace(r.next_epoch, leaf_count=3)),
        ),
        "pending commit: a tree of 3 leaves",
    ),
    "pending-node-outside": (
        lambda s: rewrite(
            s,
            "pending",
            _PendingRecord,
            lambda r: replace(r, next_tree=(*r.next_tree, _NodeValue(99, None))),
        ),
        "pending commit: a node outside the tree",
    ),
    "pending-keys": (
        lambda s: rewrite(s, "pending", _PendingRecord, lambda r: replace(r, next_keys=())),
        "pending commit: no private key",
    ),
}


@pytest.mark.parametrize("case", sorted(RECORD_CORRUPTIONS))
def test_records_that_contradict_each_other_are_refused(case: str) -> None:
    store, _ = saved_group_store()
    change, message = RECORD_CORRUPTIONS[case]
    change(store)
    with pytest.raises(StoreCorrupt, match=message):
        GroupPersistence.load(store)


def test_records_of_two_epochs_never_load_as_one() -> None:
    # A store that mixed the current tree with the previous epoch's epoch
    # record (a torn write, were batches not atomic) is refused.
    rng = seeded_rng(b"torn")
    a, b = grown_group(4, rng)
    store = MemoryGroupStore()
    persistence = GroupPersistence(a, store)
    persistence.save()
    old_epoch = store.get("epoch")
    assert old_epoch is not None
    pending = b.commit(rng=rng, force_path=True)
    apply_commit(a, pending.commit)
    persistence.save()
    corrupt(store, "epoch", old_epoch)
    with pytest.raises(StoreCorrupt):
        GroupPersistence.load(store)


def test_unknown_format_or_suite_is_refused() -> None:
    store, _ = saved_group_store()
    header = store.get("header")
    assert header is not None
    corrupt(store, "header", b"\x00\x02" + header[2:])
    with pytest.raises(StoreCorrupt, match="format"):
        GroupPersistence.load(store)
    corrupt(store, "header", header[:2] + b"\x7f\x7f" + header[4:])
    with pytest.raises(StoreCorrupt, match="cipher suite"):
        GroupPersistence.load(store)


def test_every_slot_of_group_is_persisted() -> None:
    # If this fails, Group (or one of its values) gained state: persist it in
    # group_store.py, add it to group_digest above, then update these sets.
    assert set(Group.__slots__) == {
        "_config",  # not stored: passed to load (it holds the application's callbacks)
        "_epoch",
        "_past",
        "_pending_commit",
        "_pending_updates",
        "_proposals",
        "_reinitialized",
        "_resumption_psks",
        "_secret_tree",
        "_signature_private_key",
        "_suite",
    }
    assert {f for f in _Epoch.__dataclass_fields__} == {
        "context",
        "tree",
        "private",
        "secrets",
        "interim_transcript_hash",
        "confirmation_tag",
        "own_leaf",
    }
    assert {f for f in _PastEpoch.__dataclass_fields__} == {
        "context",
        "tree",
        "secret_tree",
        "sender_data_secret",
    }
    assert {f for f in PendingCommit.__dataclass_fields__} == {
        "commit",
        "welcome",
        "group_info",
        "staged",
    }
    assert {f for f in StagedCommit.__dataclass_fields__} == {
        "epoch",
        "committer",
        "added",
        "removed",
        "updated",
        "own",
        "we_are_removed",
        "reinit",
        "_next",
        "_previous_epoch",
        "covered",
    }


def test_end_to_end_on_sqlite_across_connections(tmp_path: Path) -> None:
    rng = seeded_rng(b"sqlite")
    path = tmp_path / "device.sqlite"
    a, b = grown_group(6, rng)
    connection = connect(path)
    GroupPersistence(a, SqliteGroupStore(connection, GROUP_ID)).save()
    connection.close()
    pending = b.commit(rng=rng, force_path=True)
    b.merge(pending.staged)
    message = b.encrypt(b"after restart", rng=rng)
    connection = connect(path)
    try:
        persistence = GroupPersistence.load(SqliteGroupStore(connection, GROUP_ID))
        group = persistence.group
        apply_commit(group, pending.commit)
        assert group.epoch_authenticator == b.epoch_authenticator
        received = group.process(message)
        assert isinstance(received, ApplicationMessage)
        persistence.save()
    finally:
        connection.close()


# -- The tracking added to RatchetTree and SecretTree -----------------------------------


def test_ratchet_tree_reports_nodes_written_since_a_token() -> None:
    rng = seeded_rng(b"tracking")
    a, _ = grown_group(4, rng)
    tree = a.tree.copy()
    untracked = tree.copy()
    token = tree.track_changes()
    assert tree.changed_nodes(token) == frozenset()
    assert untracked.changed_nodes(token) is None
    child = tree.copy()
    child.remove_leaf(LeafIndex(3))
    assert child.changed_nodes(token) == frozenset({NodeIndex(6), NodeIndex(5), NodeIndex(3)})
    assert tree.changed_nodes(token) == frozenset()
    assert tree.changed_nodes(object()) is None
    newer = tree.track_changes()
    assert child.changed_nodes(newer) is None


def test_secret_tree_restores_from_a_snapshot_and_tracks_changes() -> None:
    secret = bytes(range(32))
    tree = SecretTree(SUITE, secret, 4)
    with pytest.raises(UsageError):
        tree.changes()
    tree.track_changes()
    tree.next_key_nonce(LeafIndex(1), RatchetKind.APPLICATION)
    changes = tree.changes()
    assert [n for n, _ in changes.node_secrets] == [0, 3, 5]
    assert dict(changes.node_secrets)[NodeIndex(3)] is None
    assert {(r.leaf_index, r.kind) for r in changes.ratchets} == {
        (1, RatchetKind.HANDSHAKE),
        (1, RatchetKind.APPLICATION),
    }
    restored = SecretTree.restore(SUITE, tree.snapshot())
    assert restored.snapshot() == tree.snapshot()
    assert restored.next_key_nonce(LeafIndex(1), RatchetKind.APPLICATION) == tree.next_key_nonce(
        LeafIndex(1), RatchetKind.APPLICATION
    )


@pytest.mark.parametrize("broken", ["suite", "node", "secret", "ratchet"])
def test_secret_tree_refuses_an_invalid_snapshot(broken: str) -> None:
    tree = SecretTree(SUITE, bytes(32), 4)
    tree.next_key_nonce(LeafIndex(1), RatchetKind.HANDSHAKE)
    state = tree.snapshot()
    if broken == "suite":
        state = replace(state, cipher_suite=2)
    elif broken == "node":
        state = replace(state, node_secrets=((NodeIndex(7), bytes(32)),))
    elif broken == "secret":
        state = replace(state, node_secrets=((NodeIndex(0), bytes(31)),))
    else:
        state = replace(state, ratchets=(replace(state.ratchets[0], leaf_index=LeafIndex(4)),))
    with pytest.raises(UsageError):
        SecretTree.restore(SUITE, state)


@pytest.mark.parametrize("windows", [(0, 1), (1, 2), (3, 8)])
def test_small_and_large_windows_of_past_epochs_and_psks(windows: tuple[int, int]) -> None:
    max_past_epochs, max_resumption_psks = windows
    config = GroupConfig(max_past_epochs=max_past_epochs, max_resumption_psks=max_resumption_psks)
    rng = seeded_rng(b"windows")
    a, b = grown_group(4, rng)
    store = MemoryGroupStore()
    persistence = GroupPersistence(a, store)
    persistence.save()
    for i in range(4):
        pending = b.commit(rng=rng, force_path=True)
        group = persistence.group
        apply_commit(group, pending.commit)
        b.merge(pending.staged)
        group.process(b.encrypt(b"%d" % i, rng=rng))
        persistence.save()
        before = group_digest(group)
        persistence = GroupPersistence.load(store, config=config)
        assert group_digest(persistence.group) == before
    group = persistence.group
    assert len(group._past) == max_past_epochs
    assert len(store.scan("past/")) == max_past_epochs
    assert len(store.scan("psk/")) == min(max_resumption_psks, group.epoch + 1)
    assert {key.split("/")[1] for key, _ in store.scan("secret/")} == {
        f"{e:020d}" for e in range(group.epoch - max_past_epochs, group.epoch + 1)
    }
