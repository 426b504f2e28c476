"""
Convergence of 2-12 members under random operations (a Hypothesis state machine).

Members add, remove, update (by value and by reference), send, race two commits
for one epoch (the first wins, the loser processes the winner and retries), and
a malicious member sends a commit whose path holds one corrupted ciphertext:
the members that cannot decrypt it (and the committer, whose own state is not
the group's) resync by external commit. After every step every member agrees
on the epoch, tree hash and epoch authenticator; every message decrypts for
exactly the members of its epoch.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.commit import Commit
from townsquare.mls.credentials import BasicCredential
from townsquare.mls.errors import DecryptError, MLSError, ProtocolError
from townsquare.mls.framing import FramedContent, MemberSender, MLSMessage
from townsquare.mls.group import ApplicationMessage, Group, ProposalReceived, StagedCommit
from townsquare.mls.key_package import KeyPackageBundle, generate_key_package
from townsquare.mls.key_schedule import confirmation_tag, derive_epoch_secrets
from townsquare.mls.leaf_node import Lifetime
from townsquare.mls.proposals import Add, Remove
from townsquare.mls.public_message import authenticate_content, protect_public
from townsquare.mls.registries import ProtocolVersion, WireFormat
from townsquare.mls.transcript import confirmed_transcript_hash
from townsquare.mls.treekem import create_update_path
from townsquare.mls.update_path import HPKECiphertext

SUITE = get_cipher_suite(1)
MAX_MEMBERS = 12


class SeededRng:
    def __init__(self, seed: bytes) -> None:
        self._seed = seed
        self._counter = 0

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            self._counter += 1
            out += hashlib.sha512(self._seed + self._counter.to_bytes(8, "big")).digest()
        return out[:n]


class Member:
    def __init__(self, name: str, bundle: KeyPackageBundle, group: Group) -> None:
        self.name = name
        self.bundle = bundle
        self.group = group


def malicious_commit(member: Member, rng: SeededRng, corrupt_node: int) -> bytes:
    """
    A commit with a path whose ``corrupt_node``-th node has one garbled ciphertext.

    Built from the primitives, as a broken or malicious client would, and signed
    correctly: the signature, membership tag and confirmation tag all verify, so
    only a member that must decrypt the garbled ciphertext can tell.
    """
    group = member.group
    epoch = group._epoch
    provisional = replace(epoch.context, epoch=epoch.context.epoch + 1)
    created = create_update_path(
        epoch.tree,
        epoch.private,
        group_context=provisional,
        signature_private_key=member.bundle.signature_private_key,
        rng=rng,
    )
    nodes = list(created.update_path.nodes)
    target = nodes[corrupt_node]
    first = target.encrypted_path_secret[0]
    garbled = HPKECiphertext(
        first.kem_output, bytes([first.ciphertext[0] ^ 1]) + first.ciphertext[1:]
    )
    nodes[corrupt_node] = replace(
        target, encrypted_path_secret=(garbled, *target.encrypted_path_secret[1:])
    )
    path = replace(created.update_path, nodes=tuple(nodes))
    content = FramedContent(
        group_id=group.group_id,
        epoch=group.epoch,
        sender=MemberSender(group.own_leaf),
        content=Commit((), path),
    )
    signed = authenticate_content(
        SUITE,
        content,
        wire_format=WireFormat.MLS_PUBLIC_MESSAGE,
        signature_private_key=member.bundle.signature_private_key,
        group_context=epoch.context,
        confirmation_tag=b"",
    )
    confirmed = confirmed_transcript_hash(SUITE, epoch.interim_transcript_hash, signed)
    context = replace(
        created.group_context,
        confirmed_transcript_hash=confirmed,
    )
    secrets = derive_epoch_secrets(
        SUITE,
        init_secret=epoch.secrets.init_secret,
        commit_secret=created.commit_secret,
        psk_secret=None,
        group_context=context,
    )
    auth = replace(
        signed, confirmation_tag=confirmation_tag(SUITE, secrets.confirmation_key, confirmed)
    )
    public = protect_public(
        SUITE, auth, membership_key=epoch.secrets.membership_key, group_context=epoch.context
    )
    return MLSMessage(ProtocolVersion.MLS10, public).encode()


class Convergence(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.rng = SeededRng(b"unset")
        self.members: list[Member] = []
        self.removed: list[Member] = []
        self.counter = 0

    def _bundle(self, name: str) -> KeyPackageBundle:
        signature_private_key, _ = SUITE.generate_signature_key_pair(self.rng)
        return generate_key_package(
            SUITE,
            credential=BasicCredential(name.encode()),
            signature_private_key=signature_private_key,
            rng=self.rng,
            lifetime=Lifetime(not_before=0, not_after=2**63),
        )

    def _new_name(self) -> str:
        self.counter += 1
        return f"m{self.counter}"

    def _apply(self, committer: Member, commit_bytes: bytes, staged: StagedCommit) -> None:
        for member in self.members:
            if member is committer:
                continue
            result = member.group.process(commit_bytes)
            assert isinstance(result, StagedCommit)
            if not result.we_are_removed:
                member.group.merge(result)
        committer.group.merge(staged)

    @initialize(seed=st.binary(min_size=8, max_size=8), size=st.integers(2, 4))
    def start(self, seed: bytes, size: int) -> None:
        self.rng = SeededRng(seed)
        name = self._new_name()
        bundle = self._bundle(name)
        group = Group.create(bundle, group_id=b"village-" + seed, rng=self.rng)
        self.members = [Member(name, bundle, group)]
        for _ in range(size - 1):
            self._add(0)

    def _add(self, committer_index: int) -> None:
        committer = self.members[committer_index % len(self.members)]
        name = self._new_name()
        bundle = self._bundle(name)
        pending = committer.group.commit(rng=self.rng, proposals=[Add(bundle.key_package)])
        self._apply(committer, pending.commit, pending.staged)
        assert pending.welcome is not None
        self.members.append(Member(name, bundle, Group.join(pending.welcome, bundle)))

    @precondition(lambda self: len(self.members) < MAX_MEMBERS)
    @rule(committer=st.integers(0, 100))
    def add(self, committer: int) -> None:
        self._add(committer)

    @precondition(lambda self: len(self.members) > 2)
    @rule(committer=st.integers(0, 100), victim=st.integers(0, 100))
    def remove(self, committer: int, victim: int) -> None:
        by = self.members[committer % len(self.members)]
        removed = self.members[victim % len(self.members)]
        if by is removed:
            return
        pending = by.group.commit(rng=self.rng, proposals=[Remove(removed.group.own_leaf)])
        result = removed.group.process(pending.commit)
        assert isinstance(result, StagedCommit)
        assert result.we_are_removed
        self.members.remove(removed)
        self._apply(by, pending.commit, pending.staged)
        self.removed.append(removed)

    @rule(committer=st.integers(0, 100))
    def update(self, committer: int) -> None:
        by = self.members[committer % len(self.members)]
        pending = by.group.commit(rng=self.rng, force_path=True)
        self._apply(by, pending.commit, pending.staged)

    @rule(proposer=st.integers(0, 100), committer=st.integers(0, 100))
    def update_by_reference(self, proposer: int, committer: int) -> None:
        who = self.members[proposer % len(self.members)]
        by = self.members[committer % len(self.members)]
        if who is by:
            return
        proposal = who.group.propose_update(rng=self.rng)
        for member in self.members:
            if member is not who:
                assert isinstance(member.group.process(proposal), ProposalReceived)
        pending = by.group.commit(rng=self.rng)
        self._apply(by, pending.commit, pending.staged)

    @rule(sender=st.integers(0, 100), text=st.text(max_size=40))
    def send(self, sender: int, text: str) -> None:
        who = self.members[sender % len(self.members)]
        data = text.encode()
        message = who.group.encrypt(data, rng=self.rng)
        for member in self.members:
            if member is who:
                continue
            result = member.group.process(message)
            assert isinstance(result, ApplicationMessage)
            assert result.data == data
            assert result.sender == who.group.own_leaf
        for gone in self.removed:
            with pytest.raises(MLSError):
                gone.group.process(message)

    @precondition(lambda self: len(self.members) >= 3)
    @rule(first=st.integers(0, 100), second=st.integers(0, 100))
    def race(self, first: int, second: int) -> None:
        winner = self.members[first % len(self.members)]
        loser = self.members[second % len(self.members)]
        if winner is loser:
            return
        won = winner.group.commit(rng=self.rng, force_path=True)
        lost = loser.group.commit(rng=self.rng, force_path=True)
        # The delivery service accepts the first; the loser discards its own
        # commit, processes the winner and tries again in the new epoch.
        loser.group.discard_pending_commit()
        self._apply(winner, won.commit, won.staged)
        with pytest.raises(ProtocolError):
            winner.group.process(lost.commit)
        event("race")
        retry = loser.group.commit(rng=self.rng, force_path=True)
        self._apply(loser, retry.commit, retry.staged)

    @precondition(lambda self: len(self.members) >= 3)
    @rule(committer=st.integers(0, 100), node=st.integers(0, 100))
    def corrupted_path_and_resync(self, committer: int, node: int) -> None:
        bad = self.members[committer % len(self.members)]
        path_length = len(bad.group.tree.filtered_direct_path(bad.group.own_leaf))
        if path_length == 0:
            return
        message = malicious_commit(bad, self.rng, node % path_length)
        healthy: list[tuple[Member, StagedCommit]] = []
        broken: list[Member] = [bad]
        for member in self.members:
            if member is bad:
                continue
            try:
                result = member.group.process(message)
            except DecryptError:
                broken.append(member)
                continue
            assert isinstance(result, StagedCommit)
            healthy.append((member, result))
        event(f"corrupted path: {len(broken) - 1} of {len(self.members) - 1} could not follow")
        if not healthy:
            return  # nobody could follow: the group never accepted it
        for member, staged in healthy:
            member.group.merge(staged)
        # Each member that could not follow (and the committer) rejoins by an
        # external commit that replaces its old leaf (RFC 9420 §12.4.3.2).
        for member in broken:
            source = healthy[0][0].group
            # A corrupted path changes no leaf index, so the old leaf is where it was.
            join = Group.join_external(
                source.group_info(),
                credential=BasicCredential(member.name.encode()),
                signature_private_key=member.bundle.signature_private_key,
                rng=self.rng,
                resync_leaf=member.group.own_leaf,
            )
            for other, _ in healthy:
                staged_join = other.group.process(join.commit)
                assert isinstance(staged_join, StagedCommit)
                other.group.merge(staged_join)
            member.group = join.group
            healthy.append((member, healthy[0][1]))

    @invariant()
    def members_agree(self) -> None:
        if not self.members:
            return
        first = self.members[0].group
        for member in self.members[1:]:
            assert member.group.epoch == first.epoch
            assert member.group.tree_hash == first.tree_hash
            assert member.group.epoch_authenticator == first.epoch_authenticator
        assert len(first.members()) == len(self.members)
        # The tree's running credential census equals a scan of its leaves.
        leaves = [member.leaf_node for member in first.members()]
        in_use = frozenset(
            1 if isinstance(leaf.credential, BasicCredential) else 2 for leaf in leaves
        )
        supported = frozenset.intersection(
            *(frozenset(leaf.capabilities.credentials) for leaf in leaves)
        )
        assert first.tree.credential_census() == (in_use, supported)


TestConvergence = Convergence.TestCase
TestConvergence.settings = settings(
    max_examples=80 if os.environ.get("CI") == "true" else 25,
    stateful_step_count=20 if os.environ.get("CI") == "true" else 15,
    deadline=None,
)
pytestmark = pytest.mark.slow
