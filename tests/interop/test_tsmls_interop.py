"""
Townsquare's MLS core (Python) against ts-mls 1.6.4 (Node), for cipher suites 1-7.

One ts-mls peer process (tests/interop/tsmls-peer.mjs, docs/interop.md) serves
the whole module; each suite runs the same scenario with its own members:

====  ==========================================================================
step  what happens
====  ==========================================================================
 1    alice (Python) creates the group and adds bob (ts-mls) by his KeyPackage
      (a BasicCredential with opaque identity bytes, Townsquare's encoding)
 2    bob commits an Update: an empty commit, so with an UpdatePath
 3    alice proposes an Update (by reference), bob commits it
 4    bob proposes an Add of carol (Python) by reference; alice commits it, carol
      joins from the Welcome
 5    dave (ts-mls) joins by external commit from alice's GroupInfo
 6    alice removes bob; bob sees that he is out
 7    dave removes carol (ts-mls removes a Python member); carol sees she is out
 8    alice proposes an Add of erin (ts-mls) by reference; dave commits it, erin
      joins from the Welcome
 9    frank (Python) joins by external commit from dave's GroupInfo
====  ==========================================================================

Ratchet trees travel inside the Welcome's or GroupInfo's ``ratchet_tree``
extension for odd suites and out of band for even ones, so both paths run.

After every commit all current members agree on the epoch, the epoch
authenticator, the tree hash, the confirmed transcript hash, the member list
(leaf index, identity, signature and encryption keys) and an exported secret,
and every member's application message decrypts on every other member. Every
handshake message, from either side, is a PublicMessage; every application
message a PrivateMessage.

Python's randomness is a seeded, hashlib-based rng, so a failure replays;
ts-mls uses its own randomness. The test installs nothing: ``npm ci`` in
tests/interop must have run (scripts/test does it), else it fails saying so.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from townsquare.mls.ciphersuite import CipherSuite, get_cipher_suite
from townsquare.mls.credentials import BasicCredential
from townsquare.mls.extensions import ExternalPub, find_extension
from townsquare.mls.framing import MLSMessage, PrivateMessage, PublicMessage
from townsquare.mls.group import (
    ApplicationMessage,
    Group,
    ProposalReceived,
    StagedCommit,
)
from townsquare.mls.key_package import KeyPackage, KeyPackageBundle, generate_key_package
from townsquare.mls.leaf_node import Lifetime
from townsquare.mls.proposals import Add, Remove
from townsquare.mls.registries import ExtensionType, ProtocolVersion
from townsquare.mls.welcome import GroupInfo


def _load_peer_module() -> Any:
    # The suite runs with --import-mode=importlib, so a sibling module is not
    # importable by name; load peer.py from its path (once).
    name = "townsquare_interop_peer"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("peer.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class PeerClient(Protocol):
    """
    What the test uses of ``peer.TsMlsPeer``.
    """

    def call(self, op: str, **fields: object) -> dict[str, Any]: ...


_peer = _load_peer_module()
TsMlsPeer = _peer.TsMlsPeer
PeerSetupError = _peer.PeerSetupError
unhex: Callable[[object], bytes] = _peer.unhex

pytestmark = pytest.mark.interop

SUITES = [1, 2, 3, 4, 5, 6, 7]
#: The time Python checks KeyPackage lifetimes against (ts-mls does not check them).
NOW = 1_760_000_000
EXPORT_LABEL = "townsquare interop"
#: The patches the peer checks for itself (its ``info.patches``).
PATCHES = (
    "001-ecdsa-uncompressed-keys",
    "002-unmerged-leaves-check",
    "003-optional-presence-octet",
    "004-minimal-varint",
    "005-external-pub-struct",
)


# -- Randomness ----------------------------------------------------------------------


class SeededRng:
    """
    Deterministic bytes: SHAKE-256 over (seed, call counter), so a run replays.
    """

    def __init__(self, seed: str) -> None:
        self._seed = hashlib.sha256(seed.encode()).digest()
        self._counter = 0

    def __call__(self, n: int) -> bytes:
        self._counter += 1
        return hashlib.shake_256(self._seed + self._counter.to_bytes(8, "big")).digest(n)


# -- The peer (one per module) ---------------------------------------------------------


def _setup_problem(client: Any) -> str | None:
    """
    :returns: why the running peer is unusable (wrong ts-mls, patches or suites), or ``None``.
    """
    info = client.call("info")
    if info["ts_mls"] != "1.6.4":
        return f"the peer runs ts-mls {info['ts_mls']}, not 1.6.4; run `npm ci` in tests/interop"
    missing = [name for name in PATCHES if not info["patches"].get(name)]
    if missing:
        return f"ts-mls patches not applied: {missing}; run `npm ci` in tests/interop"
    lacking = set(SUITES) - set(info["suites"])
    if lacking:
        return f"ts-mls lacks suites {sorted(lacking)} (has {info['suites']})"
    return None


@pytest.fixture(scope="module")
def tsmls() -> Iterator[PeerClient | str]:
    """
    The module's one peer process, or (a string) why it cannot run.

    A setup problem is handed to the tests, which fail with it: a missing
    ``npm ci`` must fail the run, not skip it, and a fixture's failure would
    be reported as an error at setup instead.
    """
    try:
        TsMlsPeer.check_setup()
    except PeerSetupError as exc:
        yield f"ts-mls interop peer not installed: {exc}"
        return
    client = TsMlsPeer()
    client.start()
    try:
        yield _setup_problem(client) or client
    finally:
        status = client.close()
    assert status == 0, f"the peer exited with status {status}:\n{client.stderr_tail}"


def require(peer: PeerClient | str) -> PeerClient:
    if isinstance(peer, str):
        pytest.fail(peer, pytrace=False)
    return peer


# -- Members on both sides -----------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """
    What every member of an epoch must agree on.
    """

    epoch: int
    epoch_authenticator: str
    tree_hash: str
    confirmed_transcript_hash: str
    #: (leaf index, identity, signature key, encryption key), by leaf index.
    members: tuple[tuple[int, str, str, str], ...]
    exported: str


class Participant(Protocol):
    name: str
    identity: bytes

    def view(self) -> View: ...

    def leaf(self) -> int: ...

    def send(self, data: bytes) -> bytes: ...

    def receive_application(self, message: bytes) -> bytes: ...


def _export_context(epoch: int) -> bytes:
    return b"epoch " + str(epoch).encode()


@dataclass
class PyMember:
    """
    A Townsquare member: a :class:`Group` and its seeded rng.
    """

    name: str
    suite: CipherSuite
    identity: bytes
    rng: SeededRng
    signature_private_key: bytes
    group: Group | None = None
    bundle: KeyPackageBundle | None = None

    @classmethod
    def new(cls, name: str, suite: CipherSuite, run: str) -> PyMember:
        rng = SeededRng(f"{run}/{name}")
        signature_private_key, _ = suite.generate_signature_key_pair(rng)
        # Townsquare's device credential: a BasicCredential whose identity is
        # opaque bytes (here deliberately not UTF-8).
        identity = name.encode() + b"\x00\xff" + rng(16)
        return cls(name, suite, identity, rng, signature_private_key)

    def key_package(self) -> KeyPackage:
        self.bundle = generate_key_package(
            self.suite,
            credential=BasicCredential(self.identity),
            signature_private_key=self.signature_private_key,
            rng=self.rng,
            lifetime=Lifetime(not_before=NOW - 3600, not_after=NOW + 90 * 86400),
        )
        return self.bundle.key_package

    @property
    def g(self) -> Group:
        assert self.group is not None, f"{self.name} is not in a group"
        return self.group

    def view(self) -> View:
        g = self.g
        return View(
            epoch=g.epoch,
            epoch_authenticator=g.epoch_authenticator.hex(),
            tree_hash=g.tree_hash.hex(),
            confirmed_transcript_hash=g.context.confirmed_transcript_hash.hex(),
            members=tuple(
                (
                    int(m.leaf_index),
                    m.leaf_node.credential.identity.hex()
                    if isinstance(m.leaf_node.credential, BasicCredential)
                    else "",
                    m.leaf_node.signature_key.hex(),
                    m.leaf_node.encryption_key.hex(),
                )
                for m in g.members()
            ),
            exported=g.export_secret(EXPORT_LABEL.encode(), _export_context(g.epoch), 32).hex(),
        )

    def leaf(self) -> int:
        return int(self.g.own_leaf)

    def send(self, data: bytes) -> bytes:
        return self.g.encrypt(data, rng=self.rng)

    def receive_application(self, message: bytes) -> bytes:
        result = self.g.process(message, now=NOW)
        assert isinstance(result, ApplicationMessage), result
        return result.data

    def receive_commit(self, message: bytes) -> StagedCommit:
        """
        Process a commit and merge it (unless it removes us).
        """
        staged = self.g.process(message, now=NOW)
        assert isinstance(staged, StagedCommit), staged
        if not staged.we_are_removed:
            self.g.merge(staged)
        return staged

    def receive_proposal(self, message: bytes) -> ProposalReceived:
        result = self.g.process(message, now=NOW)
        assert isinstance(result, ProposalReceived), result
        return result


@dataclass
class TsMember:
    """
    A ts-mls member, played by the peer under a name unique to the run.
    """

    peer: PeerClient
    name: str
    suite_id: int
    identity: bytes

    def call(self, op: str, **fields: object) -> dict[str, Any]:
        return self.peer.call(op, member=self.name, **fields)

    def key_package(self) -> dict[str, Any]:
        return self.call("key_package", suite=self.suite_id, identity=self.identity)

    def state(self) -> dict[str, Any]:
        return self.peer.call("state", member=self.name)

    def view(self) -> View:
        s = self.state()
        assert s["status"] == "active", s
        exported = self.peer.call(
            "export_secret",
            member=self.name,
            label=EXPORT_LABEL,
            context=_export_context(s["epoch"]),
            length=32,
        )["secret"]
        return View(
            epoch=s["epoch"],
            epoch_authenticator=s["epoch_authenticator"],
            tree_hash=s["tree_hash"],
            confirmed_transcript_hash=s["confirmed_transcript_hash"],
            members=tuple(
                (
                    m["leaf_index"],
                    m["identity"] or "",
                    m["signature_key"],
                    m["encryption_key"],
                )
                for m in s["members"]
            ),
            exported=exported,
        )

    def leaf(self) -> int:
        return int(self.state()["own_leaf_index"])

    def send(self, data: bytes) -> bytes:
        return unhex(self.peer.call("send", member=self.name, data=data)["message"])

    def receive_application(self, message: bytes) -> bytes:
        result = self.peer.call("process", member=self.name, message=message)
        assert result["kind"] == "application", result
        return unhex(result["data"])

    def receive_commit(self, message: bytes) -> dict[str, Any]:
        result = self.peer.call("process", member=self.name, message=message)
        assert result["kind"] == "commit", result
        return result

    def receive_proposal(self, message: bytes) -> dict[str, Any]:
        result = self.peer.call("process", member=self.name, message=message)
        assert result["kind"] == "proposal", result
        return result


# -- Checks ------------------------------------------------------------------------------


def wire_body(message: bytes) -> object:
    return MLSMessage.decode(message).body


def assert_public(message: bytes, what: str) -> None:
    # The issue asks for handshake messages as PublicMessage (a relay can check them).
    body = wire_body(message)
    assert isinstance(body, PublicMessage), f"{what}: {type(body).__name__}, not PublicMessage"


def external_pub(group_info: bytes) -> bytes:
    """
    :returns: the key in a GroupInfo's ``external_pub`` extension (an ExternalPub, §12.4.3.2).
    """
    body = wire_body(group_info)
    assert isinstance(body, GroupInfo)
    extension = find_extension(body.extensions, ExtensionType.EXTERNAL_PUB)
    assert extension is not None, "no external_pub extension"
    return ExternalPub.decode(extension.extension_data).external_pub


def assert_agree(step: str, members: list[Participant], expected_epoch: int) -> View:
    """
    Every member holds the same epoch, and their application messages decrypt everywhere.
    """
    views = {m.name: m.view() for m in members}
    first_name, first = next(iter(views.items()))
    assert first.epoch == expected_epoch, f"{step}: epoch {first.epoch}, not {expected_epoch}"
    for name, view in views.items():
        for attribute in (
            "epoch",
            "epoch_authenticator",
            "tree_hash",
            "confirmed_transcript_hash",
            "members",
            "exported",
        ):
            mine, theirs = getattr(view, attribute), getattr(first, attribute)
            assert mine == theirs, (
                f"{step}: {name} and {first_name} disagree on {attribute}:\n"
                f"  {name}: {mine}\n  {first_name}: {theirs}"
            )
    # Identities: each member finds itself at its own leaf, with its own identity.
    by_leaf = {leaf: identity for leaf, identity, _, _ in first.members}
    assert len(by_leaf) == len(members), f"{step}: members {sorted(by_leaf)} vs {len(members)}"
    for m in members:
        assert by_leaf.get(m.leaf()) == m.identity.hex(), f"{step}: {m.name}'s leaf"
    exchange(step, members, first.epoch)
    return first


def exchange(step: str, members: list[Participant], epoch: int) -> None:
    """
    Each member sends one application message (a PrivateMessage); all others decrypt it.
    """
    for sender in members:
        data = (
            f"{sender.name} in epoch {epoch} ({step})".encode()
            + hashlib.sha256(f"{sender.name}/{epoch}".encode()).digest()
        )
        message = sender.send(data)
        body = wire_body(message)
        assert isinstance(body, PrivateMessage), f"{step}: {sender.name} sent {body!r}"
        for receiver in members:
            if receiver is sender:
                continue
            got = receiver.receive_application(message)
            assert got == data, f"{step}: {receiver.name} decrypted {sender.name}'s message wrong"


# -- The scenario -------------------------------------------------------------------------


@pytest.mark.parametrize("suite_id", SUITES)
def test_python_and_tsmls_interoperate(tsmls: PeerClient | str, suite_id: int) -> None:
    peer = require(tsmls)
    suite = get_cipher_suite(suite_id)
    run = f"townsquare-interop/suite-{suite_id}"
    seed = SeededRng(run)

    def ts(name: str) -> TsMember:
        identity = name.encode() + b"\x00\xfe" + seed(16)
        return TsMember(peer, f"{name}-s{suite_id}", suite_id, identity)

    alice = PyMember.new("alice", suite, run)
    carol = PyMember.new("carol", suite, run)
    frank = PyMember.new("frank", suite, run)
    # Trees travel inside GroupInfos for odd suites and out of band for even ones.
    tree_in_band = suite_id % 2 == 1
    bob, dave, erin = ts("bob"), ts("dave"), ts("erin")

    # 0. alice creates the group.
    alice.key_package()
    assert alice.bundle is not None
    alice.group = Group.create(alice.bundle, group_id=seed(16), rng=alice.rng)
    assert alice.g.epoch == 0

    # 1. alice adds bob by his KeyPackage.
    kp = bob.key_package()
    bob_kp = wire_body(unhex(kp["key_package"]))
    assert isinstance(bob_kp, KeyPackage)
    assert bob_kp.cipher_suite == suite_id
    assert bob_kp.leaf_node.signature_key.hex() == kp["signature_key"]
    assert len(bob_kp.leaf_node.signature_key) == suite.signature_public_key_length
    assert bob_kp.leaf_node.credential == BasicCredential(bob.identity)
    pending = alice.g.commit(
        rng=alice.rng, proposals=[Add(bob_kp)], ratchet_tree_in_welcome=tree_in_band, now=NOW
    )
    assert_public(pending.commit, "alice's Add commit")
    assert pending.welcome is not None
    alice.g.merge(pending.staged)
    joined = bob.call(
        "join_welcome",
        welcome=pending.welcome,
        ratchet_tree=None if tree_in_band else alice.g.ratchet_tree(),
    )
    assert joined["own_leaf_index"] == 1
    assert_agree("1 add bob", [alice, bob], 1)

    # 2. bob commits an Update: a commit with no proposals carries an UpdatePath.
    bob_leaf_before = alice.view().members[1]
    result = bob.call("update")
    assert result["has_path"] is True
    assert_public(unhex(result["commit"]), "bob's update commit")
    staged = alice.receive_commit(unhex(result["commit"]))
    assert (staged.committer, staged.epoch) == (1, 2)
    assert alice.g.epoch_authenticator.hex() == result["epoch_authenticator"]
    view = assert_agree("2 bob updates", [alice, bob], 2)
    assert view.members[1][3] != bob_leaf_before[3], "bob's encryption key did not change"

    # 3. alice proposes an Update by reference; bob commits it.
    alice_key_before = view.members[0][3]
    proposal = alice.g.propose_update(rng=alice.rng)
    assert_public(proposal, "alice's Update proposal")
    received = bob.receive_proposal(proposal)
    assert received["proposal_type"] == "update", received
    assert received["sender"] == {"type": "member", "leaf_index": 0}
    assert unhex(received["proposal_ref"]) == alice.g.pending_proposals[-1]
    result = bob.call("commit", refs=[received["proposal_ref"]])
    assert result["has_path"] is True  # RFC 9420 §12.4: an Update needs a path
    assert_public(unhex(result["commit"]), "bob's commit of alice's Update")
    staged = alice.receive_commit(unhex(result["commit"]))
    assert staged.updated == (0,)
    view = assert_agree("3 alice's update, committed by bob", [alice, bob], 3)
    assert view.members[0][3] != alice_key_before, "alice's encryption key did not change"

    # 4. bob proposes an Add of carol (Python) by reference; alice commits it.
    carol_kp = carol.key_package()
    result = bob.call(
        "propose_add", key_package=MLSMessage(ProtocolVersion.MLS10, carol_kp).encode()
    )
    assert_public(unhex(result["proposal"]), "bob's Add proposal")
    received_py = alice.receive_proposal(unhex(result["proposal"]))
    assert received_py.ref.hex() == result["proposal_ref"], "ProposalRef differs (RFC 9420 §5.2)"
    assert isinstance(received_py.proposal, Add)
    pending = alice.g.commit(
        rng=alice.rng,
        by_reference=[received_py.ref],
        ratchet_tree_in_welcome=tree_in_band,
        now=NOW,
    )
    assert_public(pending.commit, "alice's commit of bob's Add")
    assert pending.welcome is not None
    alice.g.merge(pending.staged)
    processed = bob.receive_commit(pending.commit)
    assert processed["sender"] == {"type": "member", "leaf_index": 0}
    assert processed["epoch_authenticator"] == alice.g.epoch_authenticator.hex()
    assert carol.bundle is not None
    carol.group = Group.join(
        pending.welcome,
        carol.bundle,
        ratchet_tree=None if tree_in_band else alice.g.ratchet_tree(),
        now=NOW,
    )
    assert carol.g.own_leaf == 2
    assert_agree("4 bob proposes carol, alice commits", [alice, bob, carol], 4)

    # 5. dave (ts-mls) joins by external commit from alice's GroupInfo.
    result = dave.call(
        "join_external",
        group_info=alice.g.group_info(with_ratchet_tree=tree_in_band),
        ratchet_tree=None if tree_in_band else alice.g.ratchet_tree(),
        identity=dave.identity,
    )
    assert result["has_path"] is True
    assert result["own_leaf_index"] == 3
    commit = unhex(result["commit"])
    assert_public(commit, "dave's external commit")
    for member in (alice, carol):
        staged = member.receive_commit(commit)
        assert staged.added == (), staged
    processed = bob.receive_commit(commit)
    assert processed["sender"] == {"type": "new_member_commit"}
    assert_agree("5 dave joins externally", [alice, bob, carol, dave], 5)

    # 6. alice removes bob.
    pending = alice.g.commit(rng=alice.rng, proposals=[Remove(1)], now=NOW)
    assert_public(pending.commit, "alice's Remove commit")
    alice.g.merge(pending.staged)
    processed = bob.receive_commit(pending.commit)
    assert processed["removed"] is True, processed
    assert bob.state()["status"] == "removed"
    carol.receive_commit(pending.commit)
    processed = dave.receive_commit(pending.commit)
    assert processed["removed"] is False
    view = assert_agree("6 alice removes bob", [alice, carol, dave], 6)
    assert [leaf for leaf, *_ in view.members] == [0, 2, 3]

    # 7. dave removes carol: a ts-mls commit removing a Python member.
    result = dave.call("remove", leaf_index=2)
    commit = unhex(result["commit"])
    assert_public(commit, "dave's Remove commit")
    staged = carol.receive_commit(commit)
    assert staged.we_are_removed, "carol did not learn she was removed"
    staged = alice.receive_commit(commit)
    assert staged.removed == (2,)
    assert alice.g.epoch_authenticator.hex() == result["epoch_authenticator"]
    view = assert_agree("7 dave removes carol", [alice, dave], 7)
    assert [leaf for leaf, *_ in view.members] == [0, 3]

    # 8. alice proposes an Add of erin (ts-mls) by reference; dave commits it.
    kp = erin.key_package()
    erin_kp = wire_body(unhex(kp["key_package"]))
    assert isinstance(erin_kp, KeyPackage)
    proposal = alice.g.propose(Add(erin_kp), rng=alice.rng)
    assert_public(proposal, "alice's Add proposal")
    received = dave.receive_proposal(proposal)
    assert received["proposal_type"] == "add", received
    assert unhex(received["proposal_ref"]) == alice.g.pending_proposals[-1]
    result = dave.call(
        "commit", refs=[received["proposal_ref"]], ratchet_tree_extension=tree_in_band
    )
    assert result["has_path"] is False  # ts-mls adds no path to an Add-only commit
    commit = unhex(result["commit"])
    assert_public(commit, "dave's commit of alice's Add")
    staged = alice.receive_commit(commit)
    assert staged.added == (1,), staged  # the leftmost blank leaf, bob's old one
    erin.call(
        "join_welcome",
        welcome=result["welcome"],
        ratchet_tree=None if tree_in_band else result["ratchet_tree"],
    )
    assert_agree("8 alice proposes erin, dave commits", [alice, dave, erin], 8)

    # 9. frank (Python) joins by external commit from dave's (ts-mls) GroupInfo.
    info = dave.call("group_info", ratchet_tree_extension=tree_in_band)
    # RFC 9420 §12.4.3.2: both sides encode the same ExternalPub (ts-mls with patch 005).
    assert external_pub(unhex(info["group_info"])) == external_pub(alice.g.group_info())
    join = Group.join_external(
        unhex(info["group_info"]),
        credential=BasicCredential(frank.identity),
        signature_private_key=frank.signature_private_key,
        rng=frank.rng,
        ratchet_tree=None if tree_in_band else unhex(info["ratchet_tree"]),
        now=NOW,
    )
    assert_public(join.commit, "frank's external commit")
    staged = alice.receive_commit(join.commit)
    assert staged.added == ()
    for ts_member in (dave, erin):
        processed = ts_member.receive_commit(join.commit)
        assert processed["sender"] == {"type": "new_member_commit"}
    frank.group = join.group
    assert frank.g.own_leaf == 2
    assert_agree("9 frank joins externally", [alice, dave, erin, frank], 9)
