"""
The relay's public view of a group (RFC 9420 §12.4.2 without the secrets).

Three parts: a PublicGroup follows real ``Group`` members through every kind
of commit and agrees with them on the GroupContext after each; it follows the
IETF passive-client vectors; and it refuses the same hand-made malformed
messages as a member, with the same error class, both sides unchanged. Where
the two legitimately differ (checks that need a secret, or that only some
members can make), the tests say so.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import pytest

from townsquare.mls.ciphersuite import Rng, get_cipher_suite
from townsquare.mls.commit import Commit, ProposalOrRef, ProposalRef
from townsquare.mls.credentials import BasicCredential
from townsquare.mls.errors import (
    CommitterUpdateOrRemove,
    ConfirmationTagMismatch,
    ConflictingLeafChanges,
    DecodeError,
    DecryptError,
    DuplicateKey,
    DuplicateMember,
    DuplicatePSK,
    EncryptionKeyNotUpdated,
    GroupInfoMismatch,
    InitKeyReused,
    InvalidContentType,
    InvalidExternalCommit,
    InvalidKey,
    InvalidProposal,
    InvalidSender,
    InvalidSignature,
    KeyPackageMismatch,
    LeafNodeSourceMismatch,
    MembershipTagMismatch,
    MissingRatchetTree,
    MLSError,
    MultipleGroupContextExtensions,
    ParentHashMismatch,
    PathError,
    PathRequired,
    ProposalNotAllowed,
    PSKError,
    ReInitNotAlone,
    TreeHashMismatch,
    UnknownProposalRef,
    UnsupportedCapability,
    WrongEpoch,
    WrongGroup,
)
from townsquare.mls.extensions import Extension, RequiredCapabilities
from townsquare.mls.framing import (
    ApplicationData,
    AuthenticatedContent,
    ExternalSenderRef,
    FramedContent,
    MemberSender,
    MLSMessage,
    NewMemberCommitSender,
    NewMemberProposalSender,
    PrivateMessage,
    PublicMessage,
    Sender,
)
from townsquare.mls.group import (
    ExternalJoin,
    Group,
    GroupConfig,
    PendingCommit,
    ProposalReceived,
    StagedCommit,
)
from townsquare.mls.group_context import GroupContext
from townsquare.mls.key_package import KeyPackage, KeyPackageBundle, key_package_ref
from townsquare.mls.key_schedule import confirmation_tag, derive_epoch_secrets
from townsquare.mls.leaf_node import LeafNode, sign_leaf_node
from townsquare.mls.proposals import (
    Add,
    ExternalInit,
    GroupContextExtensions,
    PreSharedKey,
    Proposal,
    ReInit,
    Remove,
    Update,
)
from townsquare.mls.psk import PreSharedKeyID
from townsquare.mls.public_group import (
    AddedMember,
    MessageHeader,
    PrivateMessageUnreadable,
    PublicCommit,
    PublicGroup,
    PublicMember,
    PublicProposal,
    peek,
)
from townsquare.mls.public_message import (
    authenticate_content,
    framed_content_tbs,
    membership_tag,
    protect_public,
)
from townsquare.mls.registries import (
    ContentType,
    ExtensionType,
    LeafNodeSource,
    ProtocolVersion,
    PSKType,
    WireFormat,
)
from townsquare.mls.testvectors import VectorCase, default_vector_dir, load_file
from townsquare.mls.transcript import confirmed_transcript_hash
from townsquare.mls.tree_math import LeafIndex
from townsquare.mls.treekem import create_update_path
from townsquare.mls.update_path import HPKECiphertext, UpdatePath
from townsquare.mls.welcome import GroupInfo, sign_group_info

# The conftest fixtures' types (conftest.py is not importable as a module).
MakeBundle = Callable[..., KeyPackageBundle]
MakeGroup = Callable[..., list[Group]]

SUITE = get_cipher_suite(1)
PUBLIC = WireFormat.MLS_PUBLIC_MESSAGE


# -- Comparing the public view with a member ---------------------------------------------


def assert_same_view(public: PublicGroup, group: Group) -> None:
    assert public.epoch == group.epoch
    assert public.tree_hash == group.tree_hash
    assert public.context.confirmed_transcript_hash == group.context.confirmed_transcript_hash
    assert public.context == group.context
    assert public.ratchet_tree() == group.ratchet_tree()
    assert public.members() == tuple(
        PublicMember(m.leaf_index, m.leaf_node.signature_key, m.leaf_node.encryption_key)
        for m in group.members()
    )


def public_state(public: PublicGroup) -> tuple[object, ...]:
    return (
        public.context,
        public.tree_hash,
        public.pending_proposals,
        public.ratchet_tree(),
        public.interim_transcript_hash,
        public.confirmation_tag,
    )


def member_state(group: Group) -> tuple[object, ...]:
    return (group.context, group.tree_hash, group.pending_proposals, group.ratchet_tree())


def mls_message(body: PublicMessage) -> bytes:
    return MLSMessage(ProtocolVersion.MLS10, body).encode()


def flip(data: bytes, at: int = -1) -> bytes:
    index = at % len(data)
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1 :]


# -- 1. Following a real group -------------------------------------------------------------


class Village:
    """
    Members (by leaf) and the relay's view, delivering every handshake message to all.
    """

    def __init__(self, founder: Group) -> None:
        self.members: dict[int, Group] = {founder.own_leaf: founder}
        self.public = PublicGroup.from_group_info(founder.group_info())
        self.check()

    def check(self) -> None:
        for member in self.members.values():
            assert_same_view(self.public, member)

    def propose(self, sender: Group | None, message: bytes) -> PublicProposal:
        event = self.public.process(message)
        assert isinstance(event, PublicProposal)
        for member in self.members.values():
            if member is sender:
                continue
            received = member.process(message)
            assert isinstance(received, ProposalReceived)
            assert received.ref == event.ref
            assert received.proposal == event.proposal
        return event

    def commit(self, committer: Group, pending: PendingCommit) -> PublicCommit:
        before = public_state(self.public)
        staged = self.public.process(pending.commit)
        assert isinstance(staged, PublicCommit)
        # Processing changes nothing: the state moves on merge only.
        assert public_state(self.public) == before
        self.public.verify_group_info(pending.group_info, staged=staged)
        self.public.merge(staged)
        own = pending.staged
        assert staged.epoch == own.epoch
        assert staged.committer == own.committer
        assert tuple(a.leaf_index for a in staged.added) == own.added
        assert tuple(r.leaf_index for r in staged.removed) == own.removed
        assert staged.updated == own.updated
        assert not staged.external
        assert staged.resync is None
        committer.merge(own)
        for leaf, member in list(self.members.items()):
            if member is committer:
                continue
            received = member.process(pending.commit)
            assert isinstance(received, StagedCommit)
            if received.we_are_removed:
                del self.members[leaf]
            else:
                member.merge(received)
        self.check()
        return staged

    def external(self, join: ExternalJoin, *, replaces: Group | None = None) -> PublicCommit:
        staged = self.public.process(join.commit)
        assert isinstance(staged, PublicCommit)
        assert staged.external
        self.public.merge(staged)
        for leaf, member in list(self.members.items()):
            if member is replaces:
                del self.members[leaf]
                continue
            received = member.process(join.commit)
            assert isinstance(received, StagedCommit)
            assert received.committer == staged.committer
            member.merge(received)
        self.members[join.group.own_leaf] = join.group
        self.check()
        return staged

    def welcome(self, pending: PendingCommit, *bundles: KeyPackageBundle) -> None:
        assert pending.welcome is not None
        for bundle in bundles:
            # The relay serves the tree to joiners whose Welcome lacks it.
            group = Group.join(pending.welcome, bundle, ratchet_tree=self.public.ratchet_tree())
            self.members[group.own_leaf] = group
        self.check()


def new_member_add(public: PublicGroup, bundle: KeyPackageBundle) -> bytes:
    # RFC 9420 §12.1.8: a would-be member proposes its own Add, signed with its
    # KeyPackage's key and carrying no membership tag.
    content = FramedContent(
        group_id=public.group_id,
        epoch=public.epoch,
        sender=NewMemberProposalSender(),
        authenticated_data=b"",
        content=Add(bundle.key_package),
    )
    auth = authenticate_content(
        SUITE,
        content,
        wire_format=PUBLIC,
        signature_private_key=bundle.signature_private_key,
        group_context=None,
    )
    return mls_message(
        protect_public(SUITE, auth, membership_key=b"", group_context=public.context)
    )


def test_public_group_follows_a_group_through_every_kind_of_commit(
    rng: Rng, make_bundle: MakeBundle
) -> None:
    alice = Group.create(make_bundle(b"alice"), group_id=b"village", rng=rng)
    village = Village(alice)

    # Adds (one Welcome for two), no path needed.
    bob_bundle, carol_bundle = make_bundle(b"bob"), make_bundle(b"carol")
    pending = alice.commit(
        rng=rng, proposals=[Add(bob_bundle.key_package), Add(carol_bundle.key_package)]
    )
    staged = village.commit(alice, pending)
    assert staged.added == (
        AddedMember(
            LeafIndex(1),
            bob_bundle.key_package.leaf_node.signature_key,
            key_package_ref(SUITE, bob_bundle.key_package),
        ),
        AddedMember(
            LeafIndex(2),
            carol_bundle.key_package.leaf_node.signature_key,
            key_package_ref(SUITE, carol_bundle.key_package),
        ),
    )
    village.welcome(pending, bob_bundle, carol_bundle)
    bob, carol = village.members[1], village.members[2]

    # An Update by reference, committed by another member.
    village.propose(bob, bob.propose_update(rng=rng))
    staged = village.commit(alice, alice.commit(rng=rng))
    assert staged.updated == (LeafIndex(1),)

    # Leaving: Carol proposes her own removal, Bob commits it.
    carol_leaf = carol.tree.leaf(carol.own_leaf)
    assert carol_leaf is not None
    village.propose(carol, carol.propose(Remove(carol.own_leaf), rng=rng))
    staged = village.commit(bob, bob.commit(rng=rng))
    assert staged.removed == (
        PublicMember(LeafIndex(2), carol_leaf.signature_key, carol_leaf.encryption_key),
    )
    assert 2 not in village.members

    # An empty commit (path required).
    village.commit(alice, alice.commit(rng=rng))

    # An external join lands in the leftmost blank leaf, Carol's old one.
    dave_key, _ = SUITE.generate_signature_key_pair(rng)
    join = Group.join_external(
        alice.group_info(),
        credential=BasicCredential(b"dave"),
        signature_private_key=dave_key,
        rng=rng,
    )
    staged = village.external(join)
    assert (staged.committer, staged.resync, staged.removed) == (LeafIndex(2), None, ())

    # Bob lost his state: he resyncs by an external commit replacing his leaf.
    bob_leaf = bob.tree.leaf(bob.own_leaf)
    assert bob_leaf is not None
    join = Group.join_external(
        alice.group_info(with_ratchet_tree=False),
        ratchet_tree=village.public.ratchet_tree(),
        credential=bob_leaf.credential,
        signature_private_key=bob._signature_private_key,
        rng=rng,
        resync_leaf=bob.own_leaf,
    )
    staged = village.external(join, replaces=bob)
    assert staged.resync == LeafIndex(1)
    assert staged.committer == LeafIndex(1)
    assert [m.leaf_index for m in staged.removed] == [1]
    bob = village.members[1]

    # A new member's own Add proposal (by reference), committed with a Remove
    # by value and an Add without a Welcome tree: the joiner gets it from the relay.
    erin_bundle, frank_bundle = make_bundle(b"erin"), make_bundle(b"frank")
    event = village.propose(None, new_member_add(village.public, erin_bundle))
    assert event.sender == NewMemberProposalSender()
    pending = bob.commit(
        rng=rng,
        proposals=[Remove(LeafIndex(2)), Add(frank_bundle.key_package)],
        ratchet_tree_in_welcome=False,
    )
    staged = village.commit(bob, pending)
    assert [m.signature_key for m in staged.added] == [
        erin_bundle.key_package.leaf_node.signature_key,
        frank_bundle.key_package.leaf_node.signature_key,
    ]
    village.welcome(pending, erin_bundle, frank_bundle)

    # GroupContextExtensions change the context the public view keeps.
    required = RequiredCapabilities(extension_types=(), proposal_types=(), credential_types=(1,))
    extensions = (Extension(ExtensionType.REQUIRED_CAPABILITIES, required.encode()),)
    village.commit(alice, alice.commit(rng=rng, proposals=[GroupContextExtensions(extensions)]))
    assert village.public.context.extensions == extensions

    # An Add with no path, then one with a forced path.
    grace_bundle = make_bundle(b"grace")
    pending = alice.commit(rng=rng, proposals=[Add(grace_bundle.key_package)])
    assert MLSMessage.decode(pending.commit).body.content.content.path is None  # type: ignore[union-attr]
    village.commit(alice, pending)
    village.welcome(pending, grace_bundle)
    village.commit(bob, bob.commit(rng=rng, force_path=True))
    assert village.public.epoch == 10


def test_public_group_refuses_a_private_message(make_group: MakeGroup, rng: Rng) -> None:
    alice, _ = make_group(2)
    public = PublicGroup.from_group_info(alice.group_info())
    before = public_state(public)
    message = alice.encrypt(b"hello", rng=rng, authenticated_data=b"ad")
    with pytest.raises(PrivateMessageUnreadable):
        public.process(message)
    assert public_state(public) == before
    assert peek(message) == MessageHeader(
        wire_format=WireFormat.MLS_PRIVATE_MESSAGE,
        group_id=b"group",
        epoch=1,
        content_type=ContentType.APPLICATION,
        sender=None,
    )


def test_public_group_refuses_a_private_handshake_message(
    rng: Rng, make_bundle: MakeBundle
) -> None:
    config = GroupConfig(public_handshake=False)
    alice = Group.create(make_bundle(b"alice"), group_id=b"hidden", rng=rng, config=config)
    public = PublicGroup.from_group_info(alice.group_info())
    pending = alice.commit(rng=rng)
    with pytest.raises(PrivateMessageUnreadable):
        public.process(pending.commit)
    header = peek(pending.commit)
    assert (header.wire_format, header.content_type, header.epoch, header.sender) == (
        WireFormat.MLS_PRIVATE_MESSAGE,
        ContentType.COMMIT,
        0,
        None,
    )


def test_peek_reads_the_public_framing_of_every_wire_format(
    make_group: MakeGroup, rng: Rng, make_bundle: MakeBundle
) -> None:
    alice, _ = make_group(2)
    bundle = make_bundle(b"newcomer")
    pending = alice.commit(rng=rng, proposals=[Add(bundle.key_package)])
    assert peek(pending.commit) == MessageHeader(
        wire_format=PUBLIC,
        group_id=b"group",
        epoch=1,
        content_type=ContentType.COMMIT,
        sender=MemberSender(0),
    )
    assert peek(pending.group_info) == MessageHeader(
        wire_format=WireFormat.MLS_GROUP_INFO,
        group_id=b"group",
        epoch=2,
        content_type=None,
        sender=None,
    )
    assert pending.welcome is not None
    assert peek(pending.welcome).wire_format == WireFormat.MLS_WELCOME
    assert peek(pending.welcome).group_id is None
    key_package = MLSMessage(ProtocolVersion.MLS10, bundle.key_package).encode()
    assert peek(key_package) == MessageHeader(
        wire_format=WireFormat.MLS_KEY_PACKAGE,
        group_id=None,
        epoch=None,
        content_type=None,
        sender=None,
    )
    with pytest.raises(DecodeError):
        peek(pending.commit[:-1])


def test_public_group_refuses_a_message_that_is_not_a_public_or_private_message(
    make_group: MakeGroup, rng: Rng, make_bundle: MakeBundle
) -> None:
    (alice,) = make_group(1)
    public = PublicGroup.from_group_info(alice.group_info())
    pending = alice.commit(rng=rng, proposals=[Add(make_bundle(b"b").key_package)])
    for message in (pending.group_info, pending.welcome):
        assert message is not None
        with pytest.raises(InvalidContentType):
            public.process(message)
    with pytest.raises(InvalidContentType):
        PublicGroup.from_group_info(pending.commit)


def test_public_group_from_a_group_info_without_its_tree(make_group: MakeGroup) -> None:
    alice, bob, _ = make_group(3)
    group_info = alice.group_info(with_ratchet_tree=False)
    with pytest.raises(MissingRatchetTree):
        PublicGroup.from_group_info(group_info)
    public = PublicGroup.from_group_info(group_info, ratchet_tree=alice.ratchet_tree())
    assert_same_view(public, bob)
    assert public.cipher_suite is SUITE
    assert public.group_id == b"group"
    assert public.tree.leaf_count == 4


def test_public_group_from_a_group_info_with_another_tree_is_rejected(
    make_group: MakeGroup,
) -> None:
    alice, _, _ = make_group(3)
    (other,) = make_group(1)
    with pytest.raises(TreeHashMismatch):
        PublicGroup.from_group_info(
            alice.group_info(with_ratchet_tree=False), ratchet_tree=other.ratchet_tree()
        )


def test_public_group_from_a_forged_group_info_is_rejected(make_group: MakeGroup) -> None:
    alice, _ = make_group(2)
    message = MLSMessage.decode(alice.group_info())
    assert isinstance(message.body, GroupInfo)
    forged = replace(message.body, signature=flip(message.body.signature))
    with pytest.raises(InvalidSignature):
        PublicGroup.from_group_info(MLSMessage(ProtocolVersion.MLS10, forged).encode())
    not_a_member = replace(message.body, signer=7)
    with pytest.raises(GroupInfoMismatch):
        PublicGroup.from_group_info(MLSMessage(ProtocolVersion.MLS10, not_a_member).encode())


def test_verify_group_info_refuses_one_that_does_not_match_the_commit(
    make_group: MakeGroup, rng: Rng
) -> None:
    alice, _ = make_group(2)
    public = PublicGroup.from_group_info(alice.group_info())
    old_group_info = alice.group_info()
    pending = alice.commit(rng=rng)
    staged = public.process(pending.commit)
    assert isinstance(staged, PublicCommit)
    # The GroupInfo of the epoch it starts matches; the old one does not.
    public.verify_group_info(pending.group_info, staged=staged)
    with pytest.raises(GroupInfoMismatch):
        public.verify_group_info(old_group_info, staged=staged)
    public.verify_group_info(old_group_info)
    public.verify_group_info(alice.group_info(with_ratchet_tree=False))
    info = MLSMessage.decode(pending.group_info).body
    assert isinstance(info, GroupInfo)
    wrong_tag = replace(info, confirmation_tag=flip(info.confirmation_tag))
    with pytest.raises(GroupInfoMismatch):
        public.verify_group_info(
            MLSMessage(ProtocolVersion.MLS10, wrong_tag).encode(), staged=staged
        )
    for signer in (1, 9):
        with pytest.raises((InvalidSignature, GroupInfoMismatch)):
            public.verify_group_info(
                MLSMessage(ProtocolVersion.MLS10, replace(info, signer=signer)).encode(),
                staged=staged,
            )
    # A GroupInfo carrying another tree than the commit's is refused too.
    other_tree = Extension(ExtensionType.RATCHET_TREE, public.ratchet_tree())
    others = tuple(e for e in info.extensions if e.extension_type != ExtensionType.RATCHET_TREE)
    resigned = _sign_group_info(alice, replace(info, extensions=(*others, other_tree)))
    with pytest.raises(GroupInfoMismatch):
        public.verify_group_info(resigned, staged=staged)
    with pytest.raises(InvalidContentType):
        public.verify_group_info(pending.commit)


def _sign_group_info(signer: Group, info: GroupInfo) -> bytes:
    signed = sign_group_info(SUITE, info, signer._signature_private_key)
    return MLSMessage(ProtocolVersion.MLS10, signed).encode()


def test_only_merge_changes_the_public_group_and_one_commit_wins(
    make_group: MakeGroup, rng: Rng
) -> None:
    alice, bob = make_group(2)
    public = PublicGroup.from_group_info(alice.group_info())
    first = public.process(alice.commit(rng=rng).commit)
    second = public.process(bob.commit(rng=rng).commit)
    assert isinstance(first, PublicCommit)
    assert isinstance(second, PublicCommit)
    assert public.epoch == 1
    public.merge(first)
    assert public.epoch == 2
    assert public.context == first.context
    with pytest.raises(WrongEpoch):
        public.merge(second)
    (stranger,) = make_group(1, group_id=b"elsewhere")
    other = PublicGroup.from_group_info(stranger.group_info())
    foreign = other.process(stranger.commit(rng=rng).commit)
    assert isinstance(foreign, PublicCommit)
    with pytest.raises(WrongGroup):
        public.merge(foreign)


# -- 2. The IETF passive-client vectors ----------------------------------------------------


def _passive_client_cases() -> list[tuple[VectorCase, str | None]]:
    # Each case, with why the relay cannot follow it (None if it can).
    folder = default_vector_dir()
    cases: list[tuple[VectorCase, str | None]] = []
    for name in (
        "passive-client-welcome",
        "passive-client-handling-commit",
        "passive-client-random",
    ):
        path = folder / f"{name}.json"
        if path.exists():
            cases.extend((case, _unreadable_reason(case.data)) for case in load_file(path))
    return cases


def _unreadable_reason(data: Mapping[str, object]) -> str | None:
    epochs = data.get("epochs")
    assert isinstance(epochs, list)
    for number, epoch in enumerate(epochs):
        assert isinstance(epoch, dict)
        for message in (*epoch["proposals"], epoch["commit"]):
            if isinstance(MLSMessage.decode(bytes.fromhex(message)).body, PrivateMessage):
                return f"epoch {number} has a PrivateMessage handshake, which the relay cannot read"
    return None


def _hex(data: Mapping[str, object], key: str) -> bytes:
    value = data[key]
    assert isinstance(value, str)
    return bytes.fromhex(value)


def _vector_key_package(data: bytes) -> KeyPackage:
    try:
        body = MLSMessage.decode(data).body
    except DecodeError:
        return KeyPackage.decode(data)
    assert isinstance(body, KeyPackage)
    return body


PASSIVE_CLIENT_CASES = _passive_client_cases()


@pytest.mark.vectors
@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            case,
            id=case.case_id,
            marks=[pytest.mark.skip(reason=reason)] if reason is not None else [],
        )
        for case, reason in PASSIVE_CLIENT_CASES
    ],
)
def test_public_group_follows_the_passive_client_vectors(case: VectorCase) -> None:
    # A passive-client Welcome's GroupInfo is encrypted, so the relay's view
    # starts from the GroupInfo that the joined member signs.
    data = case.data
    psks: dict[bytes, bytes] = {}
    entries = data["external_psks"]
    assert isinstance(entries, list)
    for entry in entries:
        psks[_hex(entry, "psk_id")] = _hex(entry, "psk")

    def external_psk(psk_id: PreSharedKeyID) -> bytes | None:
        if psk_id.psktype != PSKType.EXTERNAL or psk_id.psk_id is None:
            return None
        return psks.get(psk_id.psk_id)

    tree = data.get("ratchet_tree")
    group = Group.join(
        _hex(data, "welcome"),
        KeyPackageBundle(
            key_package=_vector_key_package(_hex(data, "key_package")),
            init_private_key=_hex(data, "init_priv"),
            encryption_private_key=_hex(data, "encryption_priv"),
            signature_private_key=_hex(data, "signature_priv"),
        ),
        ratchet_tree=bytes.fromhex(tree) if isinstance(tree, str) else None,
        config=GroupConfig(external_psks=external_psk),
    )
    public = PublicGroup.from_group_info(group.group_info())
    assert_same_view(public, group)
    epochs = data["epochs"]
    assert isinstance(epochs, list)
    for epoch in epochs:
        for proposal in epoch["proposals"]:
            message = bytes.fromhex(proposal)
            event = public.process(message)
            received = group.process(message)
            assert isinstance(event, PublicProposal)
            assert isinstance(received, ProposalReceived)
            assert event.ref == received.ref
        commit = _hex(epoch, "commit")
        staged = public.process(commit)
        assert isinstance(staged, PublicCommit)
        public.merge(staged)
        own = group.process(commit)
        assert isinstance(own, StagedCommit)
        group.merge(own)
        assert (staged.committer, staged.updated) == (own.committer, own.updated)
        assert tuple(r.leaf_index for r in staged.removed) == own.removed
        assert tuple(a.leaf_index for a in staged.added) == own.added
        assert_same_view(public, group)


def test_every_passive_client_vector_is_followed() -> None:
    # The shared vectors send every handshake message as a PublicMessage, so
    # no case is skipped; passive-client-random, where present, may differ.
    path = default_vector_dir() / "passive-client-handling-commit.json"
    with path.open() as f:
        expected = len(json.load(f))
    followed = [c for c, reason in PASSIVE_CLIENT_CASES if reason is None]
    assert len([c for c in followed if c.file == path.name]) == expected


# -- 3. Malformed messages: the member and the public view refuse them alike -------------


@dataclass
class Town:
    """
    Five members at leaves 0-4 (of 8: leaves 5-7 are blank) and the relay's view.

    Member 0 forges; member 1 is the receiver compared with the public view.
    """

    members: list[Group]
    public: PublicGroup
    rng: Rng
    make_bundle: MakeBundle

    @property
    def forger(self) -> Group:
        return self.members[0]

    @property
    def receiver(self) -> Group:
        return self.members[1]

    @property
    def context(self) -> GroupContext:
        return self.forger.context

    def leaf(self, index: int) -> LeafNode:
        leaf = self.forger.tree.leaf(LeafIndex(index))
        assert leaf is not None
        return leaf

    def deliver(self, message: bytes) -> bytes:
        """
        Give a proposal to the receiver and the public view; return its ref.
        """
        received = self.receiver.process(message)
        event = self.public.process(message)
        assert isinstance(received, ProposalReceived)
        assert isinstance(event, PublicProposal)
        assert received.ref == event.ref
        return event.ref

    def framed(
        self,
        body: Commit | Proposal | ApplicationData,
        *,
        sender: Sender | None = None,
        epoch: int | None = None,
        group_id: bytes | None = None,
    ) -> FramedContent:
        return FramedContent(
            group_id=self.context.group_id if group_id is None else group_id,
            epoch=self.context.epoch if epoch is None else epoch,
            sender=MemberSender(0) if sender is None else sender,
            authenticated_data=b"",
            content=body,
        )

    def frame(
        self,
        content: FramedContent,
        *,
        signature_key: bytes | None = None,
        confirmation_tag: bytes | None = None,
        tamper_signature: bool = False,
        tamper_membership_tag: bool = False,
    ) -> bytes:
        """
        Sign content with the forger's key (or ``signature_key``) and add a valid membership tag.
        """
        key = self.forger._signature_private_key if signature_key is None else signature_key
        tbs = framed_content_tbs(content, wire_format=PUBLIC, group_context=self.context)
        signature = SUITE.sign_with_label(key, b"FramedContentTBS", tbs.encode())
        if tamper_signature:
            signature = flip(signature)
        if isinstance(content.content, Commit) and confirmation_tag is None:
            confirmation_tag = bytes(SUITE.hash_length)
        auth = AuthenticatedContent(
            wire_format=PUBLIC,
            content=content,
            signature=signature,
            confirmation_tag=confirmation_tag,
        )
        tag = None
        if isinstance(content.sender, MemberSender):
            tag = membership_tag(
                SUITE,
                auth,
                membership_key=self.forger._epoch.secrets.membership_key,
                group_context=self.context,
            )
            if tamper_membership_tag:
                tag = flip(tag)
        return mls_message(
            PublicMessage(
                content=content,
                signature=signature,
                confirmation_tag=confirmation_tag,
                membership_tag=tag,
            )
        )

    def commit(
        self, proposals: Sequence[ProposalOrRef] = (), path: UpdatePath | None = None
    ) -> bytes:
        return self.frame(self.framed(Commit(tuple(proposals), path)))

    def valid_commit(self, proposals: Sequence[Proposal] = ()) -> PublicMessage:
        """
        A real commit by the forger (with a path), decoded; the forger's state is unchanged.
        """
        pending = self.forger.commit(rng=self.rng, proposals=proposals, force_path=True)
        self.forger.discard_pending_commit()
        body = MLSMessage.decode(pending.commit).body
        assert isinstance(body, PublicMessage)
        return body

    def with_path(
        self,
        mutate: Callable[[UpdatePath], UpdatePath] = lambda path: path,
        *,
        leaf_node: LeafNode | None = None,
        leaf_signature_key: bytes | None = None,
    ) -> bytes:
        """
        An empty commit by the forger whose path ``mutate`` changes, signed, with a valid tag.

        The confirmation tag is the one a member computes whenever the change
        leaves the public tree as it was (a ciphertext changed or dropped), so
        that the change is what a member refuses, not the tag. ``leaf_node``
        and ``leaf_signature_key`` start the path's leaf from another template,
        signed by another key: the commit is then fully valid.
        """
        forger = self.forger
        context = forger.context
        provisional = replace(context, epoch=context.epoch + 1)
        created = create_update_path(
            forger.tree,
            forger._epoch.private,
            group_context=provisional,
            signature_private_key=(
                forger._signature_private_key if leaf_signature_key is None else leaf_signature_key
            ),
            rng=self.rng,
            leaf_node=leaf_node,
        )
        content = self.framed(Commit((), mutate(created.update_path)))
        signed = authenticate_content(
            SUITE,
            content,
            wire_format=PUBLIC,
            signature_private_key=forger._signature_private_key,
            group_context=context,
            confirmation_tag=b"",
        )
        confirmed = confirmed_transcript_hash(SUITE, forger._epoch.interim_transcript_hash, signed)
        new_context = replace(
            provisional,
            tree_hash=created.tree.root_tree_hash(),
            confirmed_transcript_hash=confirmed,
        )
        secrets = derive_epoch_secrets(
            SUITE,
            init_secret=forger._epoch.secrets.init_secret,
            commit_secret=created.commit_secret,
            psk_secret=None,
            group_context=new_context,
        )
        tag = confirmation_tag(SUITE, secrets.confirmation_key, confirmed)
        return self.frame(content, confirmation_tag=tag)

    def resign_leaf(
        self, leaf: LeafNode, *, key: bytes | None = None, leaf_index: int = 0
    ) -> LeafNode:
        return sign_leaf_node(
            SUITE,
            leaf,
            self.forger._signature_private_key if key is None else key,
            group_id=self.context.group_id,
            leaf_index=leaf_index,
        )

    def external_join(
        self, *, name: bytes = b"newcomer", key: bytes | None = None, resync: int | None = None
    ) -> tuple[PublicMessage, bytes]:
        """
        A real external commit, decoded, and the joiner's signature key.
        """
        if key is None:
            key, _ = SUITE.generate_signature_key_pair(self.rng)
        join = Group.join_external(
            self.forger.group_info(),
            credential=BasicCredential(name),
            signature_private_key=key,
            rng=self.rng,
            resync_leaf=None if resync is None else LeafIndex(resync),
        )
        body = MLSMessage.decode(join.commit).body
        assert isinstance(body, PublicMessage)
        return body, key

    def external(
        self,
        *,
        proposals: Callable[[tuple[ProposalOrRef, ...]], Sequence[ProposalOrRef]] | None = None,
        path: Callable[[UpdatePath, bytes], UpdatePath | None] | None = None,
        epoch: int | None = None,
        tamper_signature: bool = False,
    ) -> bytes:
        """
        A real external commit with its proposals or path changed, re-signed by the joiner.
        """
        message, key = self.external_join()
        commit = message.content.content
        assert isinstance(commit, Commit)
        assert commit.path is not None
        new_commit = Commit(
            tuple(commit.proposals if proposals is None else proposals(commit.proposals)),
            commit.path if path is None else path(commit.path, key),
        )
        content = self.framed(new_commit, sender=NewMemberCommitSender(), epoch=epoch)
        return self.frame(
            content,
            signature_key=key,
            confirmation_tag=message.confirmation_tag,
            tamper_signature=tamper_signature,
        )

    def bundle(self, name: bytes = b"newcomer", **kwargs: bytes) -> KeyPackageBundle:
        return self.make_bundle(name, **kwargs)


@pytest.fixture
def town(make_group: MakeGroup, rng: Rng, make_bundle: MakeBundle) -> Town:
    members = make_group(5)
    public = PublicGroup.from_group_info(members[0].group_info())
    assert_same_view(public, members[1])
    return Town(members, public, rng, make_bundle)


def _update_of(town: Town, member: int, encryption_key: bytes | None = None) -> bytes:
    # A real Update proposal from ``member`` (its fresh key, or ``encryption_key``).
    group = town.members[member]
    if encryption_key is None:
        return group.propose_update(rng=town.rng)
    leaf = group._leaf_for(LeafNodeSource.UPDATE, encryption_key)
    return group.propose(Update(leaf), rng=town.rng)


def _psk(nonce_length: int = 32, psk_id: bytes = b"village-psk") -> PreSharedKey:
    return PreSharedKey(
        PreSharedKeyID(psktype=PSKType.EXTERNAL, psk_id=psk_id, psk_nonce=bytes(nonce_length))
    )


def _reinit() -> ReInit:
    return ReInit(
        group_id=b"group-2",
        version=ProtocolVersion.MLS10,
        cipher_suite=SUITE.suite_id,
        extensions=(),
    )


def _fresh_key(town: Town) -> bytes:
    return SUITE.hpke_generate_key_pair(town.rng)[1]


def _node(path: UpdatePath, index: int, **changes: object) -> UpdatePath:
    nodes = list(path.nodes)
    nodes[index] = replace(nodes[index], **changes)  # type: ignore[arg-type]
    return replace(path, nodes=tuple(nodes))


def _leaf(
    town: Town, path: UpdatePath, *, key: bytes | None = None, **changes: object
) -> UpdatePath:
    # Change the path's leaf node and sign it again, so the change is what fails.
    leaf = replace(path.leaf_node, **changes)  # type: ignore[arg-type]
    return replace(path, leaf_node=town.resign_leaf(leaf, key=key))


def _add_member_again(town: Town) -> bytes:
    # A KeyPackage for a client already in the group: member 2's signature key.
    bundle = town.bundle(b"member-2", signature_private_key=town.members[2]._signature_private_key)
    return town.commit([Add(bundle.key_package)])


def _add_twice(town: Town) -> bytes:
    key_package = town.bundle().key_package
    return town.commit([Add(key_package), Add(key_package)])


def _add_init_key_reused(town: Town) -> bytes:
    key_package = town.bundle().key_package
    reused = replace(key_package, init_key=key_package.leaf_node.encryption_key)
    return town.commit([Add(reused)])


def _add_changed(town: Town, **changes: object) -> bytes:
    key_package = town.bundle().key_package
    return town.commit([Add(replace(key_package, **changes))])  # type: ignore[arg-type]


def _new_member_proposal(town: Town, body: Proposal) -> bytes:
    bundle = town.bundle()
    content = town.framed(body, sender=NewMemberProposalSender())
    return town.frame(content, signature_key=bundle.signature_private_key)


def _external_leaf(town: Town, path: UpdatePath, key: bytes, **changes: object) -> UpdatePath:
    leaf = replace(path.leaf_node, **changes)  # type: ignore[arg-type]
    return replace(path, leaf_node=town.resign_leaf(leaf, key=key, leaf_index=5))


def _external_leaf_at(town: Town, path: UpdatePath, key: bytes, leaf_index: int) -> UpdatePath:
    return replace(path, leaf_node=town.resign_leaf(path.leaf_node, key=key, leaf_index=leaf_index))


def _external_resync_as_someone_else(town: Town) -> bytes:
    message, _ = town.external_join(name=b"not-member-2", resync=2)
    return mls_message(message)


def _path_leaf_with_a_members_key(town: Town) -> bytes:
    # The committer's new leaf carries member 2's signature key (and is signed
    # by it): a fully valid commit except for RFC 9420 §7.3's uniqueness rule.
    other = town.members[2]
    template = replace(
        town.leaf(0), signature_key=SUITE.signature_public_key(other._signature_private_key)
    )
    return town.with_path(leaf_node=template, leaf_signature_key=other._signature_private_key)


def _external_with_a_members_key(town: Town) -> bytes:
    # A member that lost its state rejoins without naming its old leaf: its
    # new leaf reuses a signature key the tree already holds (RFC 9420 §7.3).
    message, _ = town.external_join(name=b"member-2", key=town.members[2]._signature_private_key)
    return mls_message(message)


def _committer_update_by_reference(town: Town) -> bytes:
    ref = town.deliver(_update_of(town, 0))
    return town.commit([ProposalRef(ref)])


def _update_and_remove(town: Town) -> bytes:
    ref = town.deliver(_update_of(town, 2))
    return town.commit([ProposalRef(ref), Remove(2)], _valid_commit_path(town))


def _update_reusing_a_key(town: Town) -> bytes:
    ref = town.deliver(_update_of(town, 2, town.leaf(3).encryption_key))
    return town.commit([ProposalRef(ref)], _valid_commit_path(town))


def _committer_update_by_value(town: Town) -> bytes:
    leaf = town.forger._leaf_for(LeafNodeSource.UPDATE, _fresh_key(town))
    return town.commit([Update(leaf)])


def _valid_commit_path(town: Town) -> UpdatePath:
    # The path of a real empty commit: valid, so that another rule fires.
    commit = town.valid_commit().content.content
    assert isinstance(commit, Commit)
    assert commit.path is not None
    return commit.path


def _resend(town: Town, **framing: object) -> bytes:
    # A real empty commit, framed anew (epoch, group id or sender changed) and re-signed.
    message = town.valid_commit()
    content = replace(message.content, **framing)  # type: ignore[arg-type]
    return town.frame(content, confirmation_tag=message.confirmation_tag)


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Town], bytes]
    error: type[MLSError]
    marks: tuple[pytest.MarkDecorator, ...] = ()


SAME_ERROR = [
    # Framing and authentication (RFC 9420 §6).
    Case("commit-for-next-epoch", lambda t: _resend(t, epoch=t.context.epoch + 1), WrongEpoch),
    Case("commit-for-old-epoch", lambda t: _resend(t, epoch=t.context.epoch - 1), WrongEpoch),
    Case("commit-for-another-group", lambda t: _resend(t, group_id=b"another"), WrongGroup),
    Case(
        "commit-with-forged-signature",
        lambda t: t.frame(t.framed(Commit((), _valid_commit_path(t))), tamper_signature=True),
        InvalidSignature,
    ),
    Case(
        "commit-signed-by-another-member",
        lambda t: t.frame(
            t.framed(Commit((), _valid_commit_path(t))),
            signature_key=t.members[3]._signature_private_key,
        ),
        InvalidSignature,
    ),
    Case("commit-from-a-blank-leaf", lambda t: _resend(t, sender=MemberSender(6)), InvalidSender),
    Case(
        "commit-from-outside-the-tree",
        lambda t: _resend(t, sender=MemberSender(99)),
        InvalidSender,
    ),
    Case(
        "commit-from-an-external-sender",
        lambda t: _resend(t, sender=ExternalSenderRef(0)),
        InvalidSender,
    ),
    Case(
        "commit-from-a-new-member-proposal-sender",
        lambda t: _resend(t, sender=NewMemberProposalSender()),
        InvalidSender,
    ),
    Case(
        "application-data-in-a-public-message",
        lambda t: t.frame(t.framed(ApplicationData(b"hello"))),
        InvalidContentType,
    ),
    Case(
        "proposal-for-old-epoch",
        lambda t: t.frame(t.framed(Remove(3), epoch=0)),
        WrongEpoch,
    ),
    Case(
        "proposal-with-forged-signature",
        lambda t: t.frame(t.framed(Remove(3)), tamper_signature=True),
        InvalidSignature,
    ),
    Case(
        "proposal-to-remove-a-blank-leaf", lambda t: t.frame(t.framed(Remove(6))), InvalidProposal
    ),
    Case(
        "proposal-external-init-by-reference",
        lambda t: t.frame(t.framed(ExternalInit(bytes(32)))),
        ProposalNotAllowed,
    ),
    Case(
        "new-member-proposal-that-is-not-an-add",
        lambda t: _new_member_proposal(t, Remove(3)),
        InvalidSender,
    ),
    Case(
        "new-member-add-signed-by-another-key",
        lambda t: t.frame(
            t.framed(Add(t.bundle().key_package), sender=NewMemberProposalSender()),
            signature_key=t.members[3]._signature_private_key,
        ),
        InvalidSignature,
    ),
    # The proposal list (RFC 9420 §12.1, §12.2).
    Case(
        "unknown-proposal-ref",
        lambda t: t.commit([ProposalRef(bytes(32))]),
        UnknownProposalRef,
    ),
    Case("remove-of-a-blank-leaf", lambda t: t.commit([Remove(6)]), InvalidProposal),
    Case("remove-outside-the-tree", lambda t: t.commit([Remove(99)]), InvalidProposal),
    Case("committer-removes-itself", lambda t: t.commit([Remove(0)]), CommitterUpdateOrRemove),
    Case(
        "two-removes-of-one-leaf",
        lambda t: t.commit([Remove(3), Remove(3)]),
        ConflictingLeafChanges,
    ),
    Case("committer-update-by-reference", _committer_update_by_reference, CommitterUpdateOrRemove),
    Case("committer-update-by-value", _committer_update_by_value, CommitterUpdateOrRemove),
    Case("update-and-remove-of-one-leaf", _update_and_remove, ConflictingLeafChanges),
    Case("update-reusing-a-key-in-the-tree", _update_reusing_a_key, DuplicateKey),
    Case("add-of-an-existing-member", _add_member_again, DuplicateMember),
    Case("two-adds-of-one-client", _add_twice, DuplicateMember),
    Case(
        "add-with-forged-key-package-signature",
        lambda t: _add_changed(t, signature=bytes(64)),
        InvalidSignature,
    ),
    Case(
        "add-of-another-cipher-suite", lambda t: _add_changed(t, cipher_suite=3), KeyPackageMismatch
    ),
    Case(
        "add-whose-init-key-is-its-leaf-key",
        _add_init_key_reused,
        InitKeyReused,
    ),
    Case(
        "external-init-in-a-member-commit",
        lambda t: t.commit([ExternalInit(bytes(32))], _valid_commit_path(t)),
        ProposalNotAllowed,
    ),
    Case(
        "two-group-context-extensions",
        lambda t: t.commit([GroupContextExtensions(()), GroupContextExtensions(())]),
        MultipleGroupContextExtensions,
    ),
    Case(
        "group-context-extension-no-member-supports",
        lambda t: t.commit(
            [GroupContextExtensions((Extension(0xF0F0, b""),))], _valid_commit_path(t)
        ),
        UnsupportedCapability,
    ),
    Case(
        "reinit-with-another-proposal",
        lambda t: t.commit([_reinit(), Remove(3)]),
        ReInitNotAlone,
    ),
    Case("psk-with-a-short-nonce", lambda t: t.commit([_psk(nonce_length=3)]), InvalidProposal),
    Case("two-psks-with-one-id", lambda t: t.commit([_psk(), _psk()]), DuplicatePSK),
    # The path (RFC 9420 §12.4, §7.3, §7.5, §7.6, §7.9.2).
    Case("remove-without-path", lambda t: t.commit([Remove(3)]), PathRequired),
    Case("empty-commit-without-path", lambda t: t.commit([]), PathRequired),
    Case(
        "path-leaf-signature-tampered",
        lambda t: t.with_path(
            lambda p: replace(
                p, leaf_node=replace(p.leaf_node, signature=flip(p.leaf_node.signature))
            )
        ),
        InvalidSignature,
    ),
    Case(
        "path-leaf-parent-hash-tampered",
        lambda t: t.with_path(lambda p: _leaf(t, p, parent_hash=bytes(32))),
        ParentHashMismatch,
    ),
    Case(
        "path-leaf-source-is-update",
        lambda t: t.with_path(
            lambda p: _leaf(t, p, leaf_node_source=LeafNodeSource.UPDATE, parent_hash=None)
        ),
        LeafNodeSourceMismatch,
    ),
    Case(
        "path-leaf-keeps-its-encryption-key",
        lambda t: t.with_path(lambda p: _leaf(t, p, encryption_key=t.leaf(0).encryption_key)),
        EncryptionKeyNotUpdated,
    ),
    Case(
        "path-leaf-takes-another-members-key",
        lambda t: t.with_path(lambda p: _leaf(t, p, encryption_key=t.leaf(3).encryption_key)),
        DuplicateKey,
    ),
    Case(
        "path-node-key-already-in-the-tree",
        lambda t: t.with_path(lambda p: _node(p, 1, encryption_key=t.leaf(3).encryption_key)),
        DuplicateKey,
    ),
    Case(
        "path-key-twice",
        lambda t: t.with_path(lambda p: _node(p, 1, encryption_key=p.nodes[0].encryption_key)),
        DuplicateKey,
    ),
    Case(
        "path-node-key-not-a-key",
        lambda t: t.with_path(lambda p: _node(p, 0, encryption_key=b"\x01" * 5)),
        InvalidKey,
    ),
    Case(
        "path-missing-a-node",
        lambda t: t.with_path(lambda p: replace(p, nodes=p.nodes[:-1])),
        PathError,
    ),
    Case(
        "path-with-an-extra-node",
        lambda t: t.with_path(
            lambda p: replace(
                p, nodes=(*p.nodes, replace(p.nodes[-1], encryption_key=_fresh_key(t)))
            )
        ),
        PathError,
    ),
    Case(
        "path-missing-the-receivers-ciphertext",
        lambda t: t.with_path(lambda p: _node(p, 0, encrypted_path_secret=())),
        PathError,
    ),
    # External commits (RFC 9420 §12.4.3.2).
    Case(
        "external-commit-without-external-init",
        lambda t: t.external(proposals=lambda ps: ()),
        InvalidExternalCommit,
    ),
    Case(
        "external-commit-with-two-external-inits",
        lambda t: t.external(proposals=lambda ps: (*ps, *ps)),
        InvalidExternalCommit,
    ),
    Case(
        "external-commit-with-two-removes",
        lambda t: t.external(proposals=lambda ps: (*ps, Remove(2), Remove(3))),
        InvalidExternalCommit,
    ),
    Case(
        "external-commit-with-an-add",
        lambda t: t.external(proposals=lambda ps: (*ps, Add(t.bundle().key_package))),
        InvalidExternalCommit,
    ),
    Case(
        "external-commit-with-a-proposal-ref",
        lambda t: t.external(proposals=lambda ps: (*ps, ProposalRef(bytes(32)))),
        InvalidExternalCommit,
    ),
    Case(
        "external-commit-removing-a-blank-leaf",
        lambda t: t.external(proposals=lambda ps: (*ps, Remove(6))),
        InvalidProposal,
    ),
    Case(
        "new-member-commit-without-path",
        lambda t: t.external(path=lambda p, key: None),
        InvalidExternalCommit,
    ),
    Case(
        "external-commit-with-forged-signature",
        lambda t: t.external(tamper_signature=True),
        InvalidSignature,
    ),
    Case("external-commit-for-old-epoch", lambda t: t.external(epoch=0), WrongEpoch),
    Case(
        "external-resync-with-another-credential",
        _external_resync_as_someone_else,
        InvalidExternalCommit,
    ),
    Case(
        "external-leaf-signed-for-another-leaf",
        lambda t: t.external(path=lambda p, key: _external_leaf_at(t, p, key, 6)),
        InvalidSignature,
    ),
    Case(
        "external-leaf-parent-hash-tampered",
        lambda t: t.external(path=lambda p, key: _external_leaf(t, p, key, parent_hash=bytes(32))),
        ParentHashMismatch,
    ),
    Case(
        "path-leaf-reuses-a-members-signature-key",
        _path_leaf_with_a_members_key,
        DuplicateKey,
    ),
    Case(
        "external-leaf-reuses-a-members-signature-key",
        _external_with_a_members_key,
        DuplicateKey,
    ),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in SAME_ERROR])
def test_public_group_rejects_what_a_member_rejects(town: Town, case: Case) -> None:
    message = case.build(town)
    member_before = member_state(town.receiver)
    public_before = public_state(town.public)
    with pytest.raises(MLSError) as member_error:
        town.receiver.process(message)
    with pytest.raises(MLSError) as public_error:
        town.public.process(message)
    assert type(public_error.value) is case.error, public_error.value
    assert type(member_error.value) is case.error, member_error.value
    assert member_state(town.receiver) == member_before
    assert public_state(town.public) == public_before


# -- Where they legitimately differ ------------------------------------------------------


def _tampered_ciphertext(town: Town) -> bytes:
    def tamper(path: UpdatePath) -> UpdatePath:
        (ciphertext,) = path.nodes[0].encrypted_path_secret
        changed = HPKECiphertext(ciphertext.kem_output, flip(ciphertext.ciphertext))
        return _node(path, 0, encrypted_path_secret=(changed,))

    return town.with_path(tamper)


def _tampered_confirmation_tag(town: Town) -> bytes:
    message = town.valid_commit()
    assert message.confirmation_tag is not None
    return town.frame(message.content, confirmation_tag=flip(message.confirmation_tag))


def _tampered_membership_tag(town: Town) -> bytes:
    message = town.valid_commit()
    return town.frame(
        message.content, confirmation_tag=message.confirmation_tag, tamper_membership_tag=True
    )


def _kem_output(town: Town, kem_output: bytes) -> bytes:
    return town.external(
        proposals=lambda ps: tuple(
            ExternalInit(kem_output) if isinstance(p, ExternalInit) else p for p in ps
        )
    )


MEMBER_ONLY = [
    # Each needs a secret of the epoch: the relay cannot check it.
    Case("path-ciphertext-tampered", _tampered_ciphertext, DecryptError),
    Case("confirmation-tag-tampered", _tampered_confirmation_tag, ConfirmationTagMismatch),
    Case("membership-tag-tampered", _tampered_membership_tag, MembershipTagMismatch),
    Case("external-init-kem-output-malformed", lambda t: _kem_output(t, b"\x00" * 5), DecryptError),
    Case(
        "external-init-kem-output-of-another-key",
        lambda t: _kem_output(t, _fresh_key(t)),
        ConfirmationTagMismatch,
    ),
    Case("psk-the-members-do-not-hold", lambda t: t.commit([_psk()]), PSKError),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in MEMBER_ONLY])
def test_public_group_accepts_what_only_a_secret_can_refuse(town: Town, case: Case) -> None:
    message = case.build(town)
    member_before = member_state(town.receiver)
    public_before = public_state(town.public)
    with pytest.raises(MLSError) as member_error:
        town.receiver.process(message)
    assert type(member_error.value) is case.error, member_error.value
    assert member_state(town.receiver) == member_before
    staged = town.public.process(message)
    assert isinstance(staged, PublicCommit)
    assert public_state(town.public) == public_before


def test_public_group_checks_the_ciphertexts_of_every_path_node(town: Town) -> None:
    # A member checks the ciphertext count of the one node it decrypts; the
    # relay checks them all (RFC 9420 §7.6), so no member is handed a commit
    # it cannot process while others can.
    def drop_one(path: UpdatePath) -> UpdatePath:
        return _node(path, 1, encrypted_path_secret=path.nodes[1].encrypted_path_secret[:1])

    message = town.with_path(drop_one)
    public_before = public_state(town.public)
    with pytest.raises(PathError):
        town.public.process(message)
    assert public_state(town.public) == public_before
    # Member 1 decrypts at node 0 and does not notice; member 3 decrypts at node 1.
    assert isinstance(town.members[1].process(message), StagedCommit)
    with pytest.raises(PathError):
        town.members[3].process(message)


@pytest.mark.parametrize(
    "build",
    [_path_leaf_with_a_members_key, _external_with_a_members_key],
    ids=["member", "external"],
)
def test_path_leaf_reusing_a_members_signature_key_is_rejected(
    town: Town, build: Callable[[Town], bytes]
) -> None:
    # RFC 9420 §7.3: "Verify that the following fields are unique among the
    # members of the group: signature_key". A tree that breaks it can no longer
    # be joined: Group.join and PublicGroup.from_group_info refuse it.
    message = build(town)
    public_before = public_state(town.public)
    with pytest.raises(DuplicateKey):
        town.public.process(message)
    assert public_state(town.public) == public_before


def test_a_path_leaf_reusing_a_signature_key_is_refused_so_joins_stay_possible(
    town: Town,
) -> None:
    # Were it accepted, nobody could join by Welcome afterwards (the tree would
    # hold one signature key twice, which §7.3 forbids).
    before = (town.receiver.epoch, town.receiver.tree_hash, town.receiver.pending_proposals)
    with pytest.raises(DuplicateKey):
        town.receiver.process(_external_with_a_members_key(town))
    after = (town.receiver.epoch, town.receiver.tree_hash, town.receiver.pending_proposals)
    assert after == before


@pytest.mark.parametrize("kind", ["add", "update"])
def test_public_group_refuses_a_proposal_no_commit_can_cover(town: Town, kind: str) -> None:
    # Townsquare choice: an Add whose KeyPackage, or an Update whose leaf, is
    # invalid can never be committed. The relay refuses it at once; a member
    # holds it, and then every commit of all held proposals fails.
    proposer = town.members[2]
    if kind == "add":
        bad = replace(town.bundle().key_package, signature=bytes(64))
        message = proposer.propose(Add(bad), rng=town.rng)
    else:
        leaf = proposer._leaf_for(LeafNodeSource.UPDATE, _fresh_key(town))
        message = proposer.propose(Update(replace(leaf, signature=bytes(64))), rng=town.rng)
    public_before = public_state(town.public)
    with pytest.raises(InvalidSignature):
        town.public.process(message)
    assert public_state(town.public) == public_before
    assert isinstance(town.receiver.process(message), ProposalReceived)
    with pytest.raises(InvalidSignature):
        town.receiver.commit(rng=town.rng)


def test_public_group_holds_a_proposal_the_rest_of_the_commit_makes_valid(town: Town) -> None:
    # Re-adding a device: an Add for a client still in the group is valid once
    # a Remove of its old leaf is in the same commit (RFC 9420 §12.2), so the
    # relay holds the proposal rather than judge it alone.
    old = town.members[2]
    again = town.bundle(b"member-2", signature_private_key=old._signature_private_key)
    message = town.members[3].propose(Add(again.key_package), rng=town.rng)
    town.deliver(message)
    pending = town.receiver.commit(rng=town.rng, proposals=[Remove(2)])
    staged = town.public.process(pending.commit)
    assert isinstance(staged, PublicCommit)
    assert [m.leaf_index for m in staged.removed] == [2]
    assert staged.added == (
        AddedMember(
            LeafIndex(2),
            again.key_package.leaf_node.signature_key,
            key_package_ref(SUITE, again.key_package),
        ),
    )
    town.public.merge(staged)
    town.receiver.merge(pending.staged)
    assert_same_view(town.public, town.receiver)


def test_public_group_holds_proposals_until_the_commit_is_merged(town: Town) -> None:
    ref = town.deliver(_update_of(town, 2))
    assert town.public.pending_proposals == (ref,)
    pending = town.receiver.commit(rng=town.rng)
    staged = town.public.process(pending.commit)
    assert isinstance(staged, PublicCommit)
    assert staged.updated == (LeafIndex(2),)
    assert town.public.pending_proposals == (ref,)
    town.public.merge(staged)
    assert not town.public.pending_proposals


def test_dataclass_fields_of_events_are_frozen(town: Town) -> None:
    event = town.public.process(_update_of(town, 2))
    assert isinstance(event, PublicProposal)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.ref = b""  # type: ignore[misc]
