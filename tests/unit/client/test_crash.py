"""
Crashes at every write: nothing accepted is lost, nothing is delivered twice.

A :class:`CrashingStore` wraps the device's store and "kills the process"
(raises :class:`Crash`, a ``BaseException`` the core never catches) at its
N-th batch, before or after the batch lands. The test then throws the
:class:`Client` away, as a restart would, and builds a new one over the same
records. The scenario is replayed for every N, so every write of the run is
a crash point: while sending, while receiving, while merging commits and
joining. Separately, the three named cases of the exactly-once promise:
(a) after the outbox write, before the send; (b) after the relay stored the
message, before its answer was seen; (c) while processing a received commit.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

import pytest

from townsquare.client.core import Client, GroupStatus, MemoryClientStore
from townsquare.client.testing import FakeRelay, Network
from townsquare.mls.group_store import GroupStore


class Crash(BaseException):
    """The process died."""


class _CrashingScope:
    def __init__(self, inner: GroupStore, owner: CrashingStore) -> None:
        self._inner = inner
        self._owner = owner

    def get(self, key: str) -> bytes | None:
        return self._inner.get(key)

    def scan(self, prefix: str) -> list[tuple[str, bytes]]:
        return self._inner.scan(prefix)

    def apply(self, puts: Mapping[str, bytes], deletes: Collection[str]) -> None:
        owner = self._owner
        owner.batches += 1
        crash = owner.should_crash(owner.batches, puts)
        if crash and not owner.after:
            owner.armed = False
            raise Crash(owner.batches)
        self._inner.apply(puts, deletes)
        if crash:
            owner.armed = False
            raise Crash(owner.batches)


class CrashingStore:
    """A ClientStore that dies once, at a chosen batch."""

    def __init__(
        self,
        *,
        at: int | None = None,
        after: bool = False,
        when: Callable[[Mapping[str, bytes]], bool] | None = None,
    ) -> None:
        self.inner = MemoryClientStore()
        self.batches = 0
        self.at = at
        self.after = after
        self.when = when
        self.armed = True

    def should_crash(self, number: int, puts: Mapping[str, bytes]) -> bool:
        if not self.armed:
            return False
        if self.when is not None:
            return self.when(puts)
        return number == self.at

    def device_records(self) -> GroupStore:
        return _CrashingScope(self.inner.device_records(), self)

    def group_records(self, group_id: bytes) -> GroupStore:
        return _CrashingScope(self.inner.group_records(group_id), self)

    def group_ids(self) -> list[bytes]:
        return self.inner.group_ids()


class World:
    """bob's group with alice (on a crashing store) in it; bob never crashes."""

    def __init__(self, make_client, network: Network, store: CrashingStore, seed: str) -> None:
        self.network = network
        self.store = store
        self.seed = seed
        self.make_client = make_client
        self.crashes = 0
        self.bob = make_client("bob")
        self.alice = self._alice()
        if self.alice.device is None:
            self.guard(lambda: self.alice.initialize(display_name="alice", now=network.now))
        self.accepted: list[str] = []
        # A send that crashed after its batch landed was accepted without the
        # caller hearing so: it is delivered (once) or not at all.
        self.attempted: list[str] = []
        self.bob_sent: list[str] = []

    def _alice(self) -> Client:
        from townsquare.client.core import ClientConfig

        config = ClientConfig(
            key_packages_target=3, key_packages_low_water=2, commit_delay_seconds=0.0
        )
        rng = _rng(f"{self.seed}/{self.crashes}")
        return Client(self.store, rng=rng, config=config)

    def restart(self) -> None:
        self.crashes += 1
        self.alice = self._alice()
        if self.alice.device is None:
            # The crash hit the very first write: the device was never created.
            self.guard(lambda: self.alice.initialize(display_name="alice", now=self.network.now))

    def guard(self, action: Callable[[], object]) -> bool:
        """Run an action of alice's; on a crash, restart her. Returns whether it completed."""
        try:
            action()
        except Crash:
            self.restart()
            return False
        return True

    def settle(self) -> None:
        network = self.network
        for _ in range(20):
            ok = self.guard(lambda: (self.alice.sync(network.now), network.settle([self.alice])))
            self.bob.sync(network.now)
            network.settle([self.bob])
            if ok and not self.alice.has_work() and not self.bob.has_work():
                return
            network.advance(400)
        raise AssertionError("did not settle")

    def alice_sends(self, text: str) -> None:
        group_id = self.group_id
        self.attempted.append(text)
        if self.guard(lambda: self.alice.send_text(group_id, text, now=self.network.now)):
            self.accepted.append(text)

    def bob_sends(self, text: str) -> None:
        self.bob.send_text(self.group_id, text, now=self.network.now)
        self.bob_sent.append(text)


def _rng(seed: str):
    import hashlib

    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            out += hashlib.sha256(f"{seed}/{counter}".encode()).digest()
            counter += 1
        return out[:n]

    return rng


def run_scenario(make_client, network: Network, store: CrashingStore) -> World:
    world = World(make_client, network, store, "alice")
    world.settle()
    bob = world.bob
    world.group_id = bob.create_group(title="村里", now=network.now)
    network.settle([bob])
    bob.add_members(world.group_id, [world.alice.device.account_key], now=network.now)
    network.settle([bob])
    world.settle()
    world.settle()
    world.alice_sends("a1")
    world.bob_sends("b1")
    world.alice_sends("a2")
    world.settle()
    bob.update_keys(world.group_id, now=network.now)  # a commit alice must process
    network.settle([bob])
    world.alice_sends("a3")  # races the commit: stale, re-encrypted
    world.bob_sends("b2")
    world.settle()
    world.alice_sends("a4")
    world.settle()
    world.settle()
    return world


def run_committer_scenario(make_client, network: Network, store: CrashingStore) -> World:
    """alice creates the group, adds bob, and commits while bob's commit races hers."""
    world = World(make_client, network, store, "alice")
    world.settle()
    bob = world.bob
    created: list[bytes] = []
    while not created:
        world.guard(lambda: created.append(world.alice.create_group(title="村", now=network.now)))
        if not created and world.alice.group_ids():
            created.extend(world.alice.group_ids())  # the batch landed before the crash
    world.group_id = created[0]
    world.settle()
    group_id = world.group_id

    def add_bob() -> None:
        world.alice.add_members(group_id, [bob.device.account_key], now=network.now)

    while not world.guard(add_bob):
        pass
    world.settle()
    world.settle()
    world.alice_sends("a1")
    world.bob_sends("b1")
    world.settle()
    bob.update_keys(world.group_id, now=network.now)
    world.guard(lambda: world.alice.update_keys(world.group_id, now=network.now))
    network.settle([bob])  # bob's commit wins; alice's is rebuilt
    world.alice_sends("a2")
    world.settle()
    world.settle()
    return world


def check(world: World) -> None:
    group_id = world.group_id
    alice, bob = world.alice, world.bob
    assert alice.group(group_id).status == GroupStatus.ACTIVE
    bob_view = [m.text for m in bob.messages(group_id) if m.kind == "text"]
    alice_view = [m.text for m in alice.messages(group_id) if m.kind == "text"]
    from_alice = [t for t in bob_view if t.startswith("a")]
    assert len(from_alice) == len(set(from_alice))  # nothing twice
    assert set(world.accepted) <= set(from_alice) <= set(world.attempted)  # nothing lost
    assert sorted(t for t in alice_view if t.startswith("b")) == sorted(world.bob_sent)
    assert sorted(t for t in alice_view if t.startswith("a")) == sorted(from_alice)

    # Same log, same order, same places.
    def placed(client):
        return [(m.seq, m.sender, m.text) for m in client.messages(group_id) if m.kind == "text"]

    assert placed(alice) == placed(bob)
    assert alice.group(group_id).epoch == bob.group(group_id).epoch
    assert not alice.queued(group_id)


def _maker(network: Network):
    from townsquare.client.core import ClientConfig

    config = ClientConfig(key_packages_target=3, key_packages_low_water=2, commit_delay_seconds=0.0)

    def make(name: str) -> Client:
        client = Client(MemoryClientStore(), rng=_rng(name), config=config)
        client.initialize(display_name=name, now=network.now)
        network.settle([client])
        return client

    return make


SCENARIOS = {"receiver": run_scenario, "committer": run_committer_scenario}


def _run(store: CrashingStore, scenario: str = "receiver") -> World:
    network = Network(FakeRelay())
    return SCENARIOS[scenario](_maker(network), network, store)


def _batches(scenario: str) -> int:
    store = CrashingStore()
    check(_run(store, scenario))
    return store.batches


# Every batch of each scenario is a crash point; counted once, at collection.
CRASH_POINTS = [(scenario, at) for scenario in SCENARIOS for at in range(1, _batches(scenario) + 1)]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_without_crashes_delivers_everything_once(scenario: str) -> None:
    store = CrashingStore()
    world = _run(store, scenario)
    check(world)
    assert world.crashes == 0
    assert store.batches > 15


@pytest.mark.parametrize("after", [False, True], ids=["before-write", "after-write"])
@pytest.mark.parametrize(
    ("scenario", "at"), CRASH_POINTS, ids=[f"{s}-{a}" for s, a in CRASH_POINTS]
)
def test_crash_at_every_batch_loses_and_duplicates_nothing(
    at: int, *, after: bool, scenario: str
) -> None:
    store = CrashingStore(at=at, after=after)
    world = _run(store, scenario)
    assert world.crashes == 1
    check(world)


def test_a_crash_after_the_outbox_write_before_the_send() -> None:
    network = Network(FakeRelay())
    make = _maker(network)
    bob, alice_store = make("bob"), MemoryClientStore()
    from townsquare.client.core import ClientConfig

    config = ClientConfig(key_packages_target=3, commit_delay_seconds=0.0)
    alice = Client(alice_store, rng=_rng("alice"), config=config)
    alice.initialize(display_name="alice", now=network.now)
    network.settle([alice])
    group_id = alice.create_group(now=network.now)
    network.settle([alice])
    alice.add_members(group_id, [bob.device.account_key], now=network.now)
    network.settle([alice])
    for client in (alice, bob, bob):
        client.sync(network.now)
        network.settle([alice, bob])
    message_id = alice.send_text(group_id, "written, never sent", now=network.now)
    # The process dies here: nothing was sent.
    alice = Client(alice_store, rng=_rng("alice again"), config=config)
    assert alice.message_state(group_id, message_id) == "queued"
    network.settle([alice])
    bob.sync(network.now)
    network.settle([bob])
    assert [m.text for m in bob.messages(group_id) if m.kind == "text"] == ["written, never sent"]
    assert alice.message_state(group_id, message_id) == "sent"


def test_b_crash_after_the_relay_stored_before_the_answer() -> None:
    network = Network(FakeRelay())
    make = _maker(network)
    bob, alice_store = make("bob"), MemoryClientStore()
    from townsquare.client.core import ClientConfig

    config = ClientConfig(key_packages_target=3, commit_delay_seconds=0.0)
    alice = Client(alice_store, rng=_rng("alice"), config=config)
    alice.initialize(display_name="alice", now=network.now)
    network.settle([alice])
    group_id = alice.create_group(now=network.now)
    network.settle([alice])
    alice.add_members(group_id, [bob.device.account_key], now=network.now)
    network.settle([alice])
    for _ in range(2):
        bob.sync(network.now)
        alice.sync(network.now)
        network.settle([alice, bob])
    log = network.relay.groups[group_id].log
    before = len(log)
    alice.send_text(group_id, "stored, answer lost", now=network.now)
    request = alice.next_request(network.now)
    assert request is not None
    assert request.target.endswith("/messages")
    network.relay.handle(alice.device.device_key, request.method, request.target, request.body)
    # The answer never reaches alice: the process dies.
    alice = Client(alice_store, rng=_rng("alice again"), config=config)
    alice.sync(network.now)
    network.settle([alice])
    bob.sync(network.now)
    network.settle([bob])
    alice.sync(network.now)
    network.settle([alice])
    assert [m.text for m in bob.messages(group_id) if m.kind == "text"] == ["stored, answer lost"]
    assert [m.text for m in alice.messages(group_id) if m.kind == "text"] == ["stored, answer lost"]
    assert len(log) == before + 1  # the resend was answered from the relay's record
    assert not alice.queued(group_id)


def test_c_crash_while_processing_a_received_commit() -> None:
    network = Network(FakeRelay())
    make = _maker(network)
    bob = make("bob")
    # alice dies on the batch that merges a commit (it writes a new epoch record).
    store = CrashingStore(when=lambda puts: "epoch" in puts and "app/cursor" in puts)
    store.armed = False
    from townsquare.client.core import ClientConfig

    config = ClientConfig(key_packages_target=3, commit_delay_seconds=0.0)
    alice = Client(store, rng=_rng("alice"), config=config)
    alice.initialize(display_name="alice", now=network.now)
    network.settle([alice])
    group_id = bob.create_group(now=network.now)
    network.settle([bob])
    bob.add_members(group_id, [alice.device.account_key], now=network.now)
    network.settle([bob])
    for _ in range(2):
        alice.sync(network.now)
        bob.sync(network.now)
        network.settle([alice, bob])
    bob.send_text(group_id, "before the commit", now=network.now)
    bob.update_keys(group_id, now=network.now)
    network.settle([bob])
    bob.send_text(group_id, "after the commit", now=network.now)
    network.settle([bob])
    epoch = bob.group(group_id).epoch
    store.armed = True
    alice.sync(network.now)
    with pytest.raises(Crash):
        network.settle([alice])
    assert not store.armed  # it crashed
    alice = Client(store, rng=_rng("alice again"), config=config)
    assert alice.group(group_id).epoch == epoch - 1  # the merge did not land
    alice.sync(network.now)
    network.settle([alice])
    assert alice.group(group_id).epoch == epoch
    assert [m.text for m in alice.messages(group_id) if m.kind == "text"] == [
        "before the commit",
        "after the commit",
    ]
