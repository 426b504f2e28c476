"""
The delivery service's view of a group (RFC 9420 §12.4.2, minus the group secrets).

A :class:`PublicGroup` is what a relay keeps of one group: the GroupContext,
the public ratchet tree and the interim transcript hash, built from a
GroupInfo and then advanced by PublicMessage commits alone. It is sans-I/O
like :class:`~townsquare.mls.group.Group`: bytes in, values out, no clock
(``now`` is passed in) and no randomness.

What it checks, for every PublicMessage, exactly as a member does:

- the group id and epoch, the sender (a member's leaf exists; an external
  committer signs with its path's leaf; a new member's Add is signed with its
  KeyPackage's key) and the content's signature (RFC 9420 §6.1, §6.2);
- each proposal on its own (§12.1) when it arrives, and a commit's whole list
  (§12.2, §12.4.3.2 for external commits) with the same
  :func:`~townsquare.mls.proposal_list.apply_proposals` the members run:
  KeyPackages (§10.1), Update leaves (§7.3), duplicate members and keys;
- the UpdatePath: whether one is required (§12.4), its leaf node (§7.3, source
  ``commit``, a fresh encryption key, a signature key no other member holds),
  its keys (unique in the tree), its length and the number of ciphertexts at
  each node (§7.6), and the leaf's parent hash (§7.9.2);
- the new tree hash, GroupContext and confirmed transcript hash (§8.2), and
  for external commits the leftmost-blank placement of the joiner (§12.4.2).

What it cannot check, because each needs a secret of the epoch:

- membership tags (§6.2): the membership_key is secret, so a non-member that
  holds a member's signature key could send a commit only members refuse;
- the path ciphertexts (§7.6) and ExternalInit's ``kem_output`` (§8.3): they
  decrypt only with members' private keys;
- confirmation tags (§8.1): the confirmation_key is secret. The public view
  takes the commit's tag on trust for the next interim transcript hash;
- PreSharedKeys (§8.4): it does not hold them;
- anything inside a PrivateMessage, which it refuses with
  :class:`PrivateMessageUnreadable` (:func:`peek` reads the public header).

The consequence: a member may send a commit that passes every check here but
whose path secrets or confirmation tag are garbage. The relay accepts and
orders it; the members that cannot process it resync by an external commit
that replaces their own leaf (RFC 9420 §12.4.3.2), against the public view
that the accepted commit produced.

The relay's admin policy (who may add or remove) is not MLS and lives
outside this module: it reads :class:`PublicCommit` and decides.

Flow::

    from_group_info(GroupInfo, tree) ──► PublicGroup at the GroupInfo's epoch
    process(PublicMessage proposal) ──► PublicProposal (held by ref until the next merge)
    process(PublicMessage commit)   ──► PublicCommit (staged) ──► merge(staged)
    process(PrivateMessage)         ──► PrivateMessageUnreadable (peek() for routing)

Nothing changes until :meth:`PublicGroup.merge`, except that a verified
proposal is held for the epoch; a rejected message changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from townsquare.mls.ciphersuite import CipherSuite, get_cipher_suite
from townsquare.mls.commit import Commit, ProposalRef
from townsquare.mls.credentials import Credential
from townsquare.mls.errors import (
    DuplicateKey,
    GroupInfoMismatch,
    InvalidContentType,
    InvalidExternalCommit,
    InvalidProposal,
    InvalidSender,
    PathError,
    PathRequired,
    ProposalNotAllowed,
    UnknownProposalRef,
    WrongEpoch,
    WrongGroup,
)
from townsquare.mls.extensions import find_extension
from townsquare.mls.framing import (
    ApplicationData,
    AuthenticatedContent,
    MemberSender,
    MLSMessage,
    NewMemberCommitSender,
    NewMemberProposalSender,
    PrivateMessage,
    PublicMessage,
    Sender,
    public_message_content_bytes,
)
from townsquare.mls.group import Group, GroupConfig, proposal_ref
from townsquare.mls.group_context import GroupContext
from townsquare.mls.key_package import key_package_ref, validate_key_package
from townsquare.mls.leaf_node import (
    CredentialValidator,
    LeafNode,
    accept_any_credential,
    validate_leaf_node,
)
from townsquare.mls.proposal_list import (
    AppliedProposals,
    SenderProposal,
    apply_proposals,
    credential_types,
    required_capabilities,
)
from townsquare.mls.proposals import Add, ExternalInit, Proposal, Remove, Update
from townsquare.mls.public_message import check_group_and_epoch, verify_content_signature
from townsquare.mls.ratchet_tree import RatchetTree
from townsquare.mls.registries import (
    ContentType,
    ExtensionType,
    LeafNodeSource,
    WireFormat,
)
from townsquare.mls.transcript import confirmed_transcript_hash, interim_transcript_hash
from townsquare.mls.tree_math import LeafIndex, leaf_to_node
from townsquare.mls.treekem import merge_update_path
from townsquare.mls.update_path import UpdatePath
from townsquare.mls.welcome import GroupInfo, verify_group_info_signature

__all__ = [
    "AddedMember",
    "MessageHeader",
    "PrivateMessageUnreadable",
    "PublicCommit",
    "PublicGroup",
    "PublicMember",
    "PublicProposal",
    "peek",
]


class PrivateMessageUnreadable(InvalidContentType):
    """
    A PrivateMessage was given to the public view, which holds no key to read it (RFC 9420 §6.3).

    The relay stores and forwards such messages as they are; :func:`peek` gives
    their group, epoch and content type.
    """

    rfc_section = "RFC 9420 §6.3"


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageHeader:
    """
    The public framing of an MLSMessage: what a relay can route on without any key (RFC 9420 §6).

    ``group_id`` and ``epoch`` are ``None`` for a Welcome and a KeyPackage,
    ``content_type`` for anything but a PublicMessage or PrivateMessage, and
    ``sender`` for anything but a PublicMessage (a PrivateMessage encrypts it).
    """

    wire_format: WireFormat
    group_id: bytes | None
    epoch: int | None
    content_type: ContentType | None
    sender: Sender | None


def peek(message_bytes: bytes) -> MessageHeader:
    """
    Read the public framing of any MLSMessage, verifying nothing (RFC 9420 §6).

    The message is decoded strictly (so malformed bytes are refused) but no
    signature, tag or ciphertext is checked: use it to route a message, never
    to trust one.

    :param message_bytes: an encoded MLSMessage of any wire format.
    :returns: its wire format and, where public, group id, epoch, content type and sender.
    :raises DecodeError: (a subclass) if the bytes are not an MLSMessage.
    """
    message = MLSMessage.decode(message_bytes)
    body = message.body
    if isinstance(body, PublicMessage):
        content = body.content
        return MessageHeader(
            wire_format=message.wire_format,
            group_id=content.group_id,
            epoch=content.epoch,
            content_type=content.content_type,
            sender=content.sender,
        )
    if isinstance(body, PrivateMessage):
        return MessageHeader(
            wire_format=message.wire_format,
            group_id=body.group_id,
            epoch=body.epoch,
            content_type=body.content_type,
            sender=None,
        )
    if isinstance(body, GroupInfo):
        return MessageHeader(
            wire_format=message.wire_format,
            group_id=body.group_context.group_id,
            epoch=body.group_context.epoch,
            content_type=None,
            sender=None,
        )
    return MessageHeader(
        wire_format=message.wire_format,
        group_id=None,
        epoch=None,
        content_type=None,
        sender=None,
    )


@dataclass(frozen=True, slots=True)
class PublicMember:
    """
    A member as the public view sees it: a leaf index and the leaf's two public keys.
    """

    leaf_index: LeafIndex
    signature_key: bytes
    encryption_key: bytes


@dataclass(frozen=True, slots=True)
class AddedMember:
    """
    A member added by a commit's Add: its new leaf, its signature key and its KeyPackage's ref.
    """

    leaf_index: LeafIndex
    signature_key: bytes
    key_package_ref: bytes


@dataclass(frozen=True, slots=True)
class PublicProposal:
    """
    A proposal was verified and is held for the current epoch's commit (RFC 9420 §12.1).
    """

    ref: bytes
    proposal: Proposal
    sender: Sender


@dataclass(frozen=True, slots=True, kw_only=True)
class _PublicEpoch:
    """
    Everything the public view keeps of one epoch.
    """

    context: GroupContext
    tree: RatchetTree = field(repr=False)
    interim_transcript_hash: bytes
    confirmation_tag: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class PublicCommit:
    """
    A commit that passed every public check; its epoch becomes current on :meth:`PublicGroup.merge`.

    ``committer`` is the committer's leaf in the new epoch (for an external
    commit, the leaf the joiner was placed in); ``removed`` lists the members
    as they were before the commit; ``resync`` is the old leaf an external
    commit removed (RFC 9420 §12.4.3.2), if any.
    """

    epoch: int
    committer: LeafIndex
    added: tuple[AddedMember, ...]
    removed: tuple[PublicMember, ...]
    updated: tuple[LeafIndex, ...]
    external: bool
    resync: LeafIndex | None
    reinit: bool
    context: GroupContext
    _next: _PublicEpoch = field(repr=False)
    _previous_epoch: int = field(repr=False)
    #: The proposals the commit covers, each with its proposer (RFC 9420 §12.4): what the
    #: relay's authority rules (Townsquare's admins) judge a commit by.
    covered: tuple[SenderProposal, ...] = ()


def _public_member(leaf_index: LeafIndex, leaf: LeafNode) -> PublicMember:
    return PublicMember(leaf_index, leaf.signature_key, leaf.encryption_key)


class PublicGroup:
    """
    The public view of one MLS group, as a delivery service keeps it.

    See the module docstring for what it checks and what it cannot.
    """

    __slots__ = ("_credential_validator", "_epoch", "_proposals", "_suite")

    def __init__(
        self,
        *,
        suite: CipherSuite,
        epoch: _PublicEpoch,
        credential_validator: CredentialValidator,
    ) -> None:
        """
        Use :meth:`from_group_info` instead.
        """
        self._suite = suite
        self._epoch = epoch
        self._credential_validator = credential_validator
        self._proposals: dict[bytes, SenderProposal] = {}

    @classmethod
    def from_group_info(
        cls,
        group_info_message: bytes,
        *,
        ratchet_tree: bytes | None = None,
        credential_validator: CredentialValidator = accept_any_credential,
        now: int | None = None,
    ) -> PublicGroup:
        """
        Build the public view from a signed GroupInfo and the ratchet tree (RFC 9420 §12.4.3.1).

        Runs the checks a joiner runs that need no secret: the tree's hash is
        the GroupInfo's, the GroupInfo is signed by its signer's leaf, and the
        tree is sound (parent hashes, leaf signatures, unmerged leaves, unique
        keys, each leaf per §7.3). The GroupInfo's confirmation tag cannot be
        checked; it seeds the interim transcript hash (§8.2).

        :param group_info_message: the MLSMessage(GroupInfo) bytes.
        :param ratchet_tree: the encoded ``ratchet_tree`` if the GroupInfo does not carry it.
        :param credential_validator: the application's credential check (RFC 9420 §5.3.1).
        :param now: seconds since the epoch, for leaf lifetimes (``None`` skips the check).
        :returns: the public view at the GroupInfo's epoch.
        :raises DecodeError: if the GroupInfo or tree does not decode.
        :raises InvalidContentType: if the message is not a GroupInfo.
        :raises UnsupportedCipherSuite: if the group's cipher suite is not supported.
        :raises GroupInfoMismatch: if the signer is not a member.
        :raises MissingRatchetTree: if no ratchet tree is given or carried.
        :raises TreeHashMismatch: if the tree is not the one the GroupInfo names.
        :raises InvalidSignature: if the GroupInfo or a leaf is not validly signed.
        :raises TreeError: (a subclass) if the tree is otherwise invalid.
        """
        message = MLSMessage.decode(group_info_message)
        if not isinstance(message.body, GroupInfo):
            raise InvalidContentType("expected an MLSMessage(GroupInfo)")
        group_info = message.body
        # The codec refuses a GroupContext whose version is not mls10.
        context = group_info.group_context
        suite = get_cipher_suite(context.cipher_suite)
        tree = Group._tree_from(suite, group_info, ratchet_tree)
        config = GroupConfig(credential_validator=credential_validator)
        Group._verify_joined_tree(suite, tree, group_info, config, now)
        epoch = _PublicEpoch(
            context=context,
            tree=tree,
            interim_transcript_hash=interim_transcript_hash(
                suite, context.confirmed_transcript_hash, group_info.confirmation_tag
            ),
            confirmation_tag=group_info.confirmation_tag,
        )
        return cls(suite=suite, epoch=epoch, credential_validator=credential_validator)

    # -- Reading the state -----------------------------------------------------

    @property
    def cipher_suite(self) -> CipherSuite:
        """
        The group's cipher suite.
        """
        return self._suite

    @property
    def group_id(self) -> bytes:
        """
        The group's id.
        """
        return self._epoch.context.group_id

    @property
    def epoch(self) -> int:
        """
        The current epoch number.
        """
        return self._epoch.context.epoch

    @property
    def context(self) -> GroupContext:
        """
        The current GroupContext.
        """
        return self._epoch.context

    @property
    def tree_hash(self) -> bytes:
        """
        The current tree hash.
        """
        return self._epoch.context.tree_hash

    @property
    def confirmation_tag(self) -> bytes:
        """
        The confirmation tag that started this epoch, as received (it cannot be verified).
        """
        return self._epoch.confirmation_tag

    @property
    def interim_transcript_hash(self) -> bytes:
        """
        The current interim transcript hash (RFC 9420 §8.2).
        """
        return self._epoch.interim_transcript_hash

    @property
    def tree(self) -> RatchetTree:
        """
        The current ratchet tree (do not mutate: copy first).
        """
        return self._epoch.tree

    @property
    def pending_proposals(self) -> tuple[bytes, ...]:
        """
        The refs of the proposals held for the next commit.
        """
        return tuple(self._proposals)

    def ratchet_tree(self) -> bytes:
        """
        :returns: the encoded ratchet tree (``optional<Node> ratchet_tree<V>``, §12.4.3.3).
        """
        return self._epoch.tree.encode()

    def members(self) -> tuple[PublicMember, ...]:
        """
        :returns: every member with its signature and encryption keys, by leaf index.
        """
        return tuple(_public_member(i, leaf) for i, leaf in self._epoch.tree.leaves())

    # -- Receiving ---------------------------------------------------------------

    def process(
        self, message_bytes: bytes, *, now: int | None = None
    ) -> PublicProposal | PublicCommit:
        """
        Verify one PublicMessage of this group (RFC 9420 §6.2, §12.1, §12.4.2), except secrets.

        A proposal is held for the next commit at once; a commit is returned
        staged, for :meth:`merge`. A rejected message changes nothing.

        :param message_bytes: an MLSMessage holding a PublicMessage.
        :param now: seconds since the epoch, for the lifetimes of a commit's leaves and
            KeyPackages.
        :returns: what the message was.
        :raises PrivateMessageUnreadable: for a PrivateMessage (see :func:`peek`).
        :raises InvalidContentType: for another wire format, or application data in a
            PublicMessage.
        :raises DecodeError: (a subclass) if the bytes are not an MLSMessage.
        :raises WrongGroup: if the message is for another group.
        :raises WrongEpoch: if the message is for another epoch.
        :raises InvalidSender: if the sender is not a member or may not send this.
        :raises InvalidSignature: if a signature does not verify.
        :raises ProposalError: (a subclass) if a proposal or a commit's list is invalid.
        :raises CommitError: (a subclass) if a commit breaks RFC 9420 §12.4.
        :raises TreeError: (a subclass) if a leaf node or the UpdatePath is invalid.
        :raises KeyPackageError: (a subclass) if an Add's KeyPackage is invalid.
        :raises CryptoError: (a subclass) if a key in the message is not valid for the suite.
        """
        message = MLSMessage.decode(message_bytes)
        body = message.body
        if isinstance(body, PrivateMessage):
            raise PrivateMessageUnreadable(
                "a PrivateMessage cannot be read by the public view; store it as it is"
            )
        if not isinstance(body, PublicMessage):
            raise InvalidContentType("expected a PublicMessage")
        # The content as the sender signed it, found in the received bytes
        # rather than encoded again for the signature and the transcript hash.
        content_bytes = public_message_content_bytes(message_bytes, body)
        auth = self._authenticate(body, content_bytes)
        content = auth.content.content
        if isinstance(content, Commit):
            return self._process_commit(auth, content, now, content_bytes)
        if isinstance(content, ApplicationData):  # pragma: no cover - refused by _authenticate
            raise InvalidContentType("application data must be a PrivateMessage")
        sender = auth.content.sender
        self._check_proposal(content, sender)
        ref = proposal_ref(self._suite, auth)
        self._proposals[ref] = SenderProposal(content, sender)
        return PublicProposal(ref, content, sender)

    def _authenticate(self, message: PublicMessage, content_bytes: bytes) -> AuthenticatedContent:
        # The same checks in the same order as Group._unprotect_public and
        # unprotect_public, so that both refuse a message with the same error,
        # minus the membership tag, whose key the relay does not hold.
        content = message.content
        context = self.context
        check_group_and_epoch(content.group_id, content.epoch, context)
        sender = content.sender
        body = content.content
        if isinstance(sender, MemberSender):
            leaf = self._member_leaf(sender.leaf_index)
            if leaf is None:
                raise InvalidSender(f"sender leaf {sender.leaf_index} holds no member")
            key = leaf.signature_key
        elif isinstance(sender, NewMemberCommitSender):
            # RFC 9420 §12.4.3.2: an external commit is signed with the key in
            # the leaf node of its path.
            if not isinstance(body, Commit) or body.path is None:
                raise InvalidExternalCommit("an external commit must carry a path")
            key = body.path.leaf_node.signature_key
        elif isinstance(sender, NewMemberProposalSender) and isinstance(body, Add):
            # RFC 9420 §12.1.8: a new member's Add is signed with the key of
            # the KeyPackage it adds.
            key = body.key_package.leaf_node.signature_key
        elif isinstance(sender, NewMemberProposalSender):
            # RFC 9420 §6.1: for new_member_proposal, "the proposal_type of the
            # Proposal MUST be add".
            raise InvalidSender("a new_member_proposal sender may only propose add")
        else:
            # External senders need the external_senders extension, which
            # Townsquare groups do not use.
            raise InvalidSender("external senders are not configured for this group")
        if isinstance(body, ApplicationData):
            # RFC 9420 §6: "Applications MUST use PrivateMessage to encrypt
            # application messages".
            raise InvalidContentType("application data must not arrive as a PublicMessage")
        auth = AuthenticatedContent(
            wire_format=WireFormat.MLS_PUBLIC_MESSAGE,
            content=content,
            signature=message.signature,
            confirmation_tag=message.confirmation_tag,
        )
        # RFC 9420 §6.2: a member's membership tag is a MAC under the epoch's
        # membership_key, which the relay does not hold: it is not checked.
        verify_content_signature(
            self._suite,
            auth,
            signature_public_key=key,
            group_context=context,
            content_bytes=content_bytes,
        )
        return auth

    def _member_leaf(self, leaf_index: int) -> LeafNode | None:
        tree = self._epoch.tree
        return tree.leaf(LeafIndex(leaf_index)) if leaf_index < tree.leaf_count else None

    def _check_proposal(self, proposal: Proposal, sender: Sender) -> None:
        # The checks Group.process makes of a proposal by reference.
        if isinstance(proposal, Remove) and self._member_leaf(proposal.removed) is None:
            # RFC 9420 §12.1.3: "A Remove proposal is invalid if the removed
            # field does not identify a non-blank leaf node."
            raise InvalidProposal(f"Remove names leaf {proposal.removed}, which holds no member")
        if isinstance(proposal, ExternalInit):
            raise ProposalNotAllowed("an ExternalInit cannot be sent by reference")
        if isinstance(proposal, Update) and not isinstance(sender, MemberSender):
            # _authenticate admits an Update from a member only (RFC 9420 §6.1).
            raise InvalidSender("an Update must come from a member")  # pragma: no cover
        # Townsquare choice: the relay also refuses now what no commit of this
        # epoch can make valid, an Add's KeyPackage (§10.1) or an Update's leaf
        # node (§7.3) that is invalid in itself (signature, source, suite,
        # capabilities it lists), so that a bad proposal never reaches the
        # members, where it would make every commit that covers it fail. What
        # the rest of the commit can change (required capabilities and
        # extensions, credential types in use, key uniqueness, duplicate
        # members) and lifetimes (a KeyPackage may become valid later) are
        # checked when it is committed.
        if isinstance(proposal, Add):
            validate_key_package(
                self._suite,
                proposal.key_package,
                credential_validator=self._credential_validator,
            )
        elif isinstance(proposal, Update) and isinstance(sender, MemberSender):
            current = self._member_leaf(sender.leaf_index)
            validate_leaf_node(
                self._suite,
                proposal.leaf_node,
                source=LeafNodeSource.UPDATE,
                group_id=self.group_id,
                leaf_index=sender.leaf_index,
                credential_validator=self._credential_validator,
                replaced_encryption_key=None if current is None else current.encryption_key,
            )

    def _process_commit(
        self, auth: AuthenticatedContent, commit: Commit, now: int | None, content_bytes: bytes
    ) -> PublicCommit:
        suite = self._suite
        epoch = self._epoch
        sender = auth.content.sender
        if auth.confirmation_tag is None:  # pragma: no cover - enforced by the codec
            raise InvalidContentType("a commit without a confirmation tag")
        external = isinstance(sender, NewMemberCommitSender)
        committer: LeafIndex | None = (
            LeafIndex(sender.leaf_index) if isinstance(sender, MemberSender) else None
        )

        # RFC 9420 §12.4.2: "Verify that ... all proposals referenced by
        # reference are known".
        items: list[SenderProposal] = []
        for entry in commit.proposals:
            if isinstance(entry, ProposalRef):
                if external:
                    # RFC 9420 §12.4.3.2: an external commit's proposals are
                    # all by value.
                    raise InvalidExternalCommit("an external commit refers to a proposal")
                held = self._proposals.get(entry.ref)
                if held is None:
                    raise UnknownProposalRef("the commit refers to a proposal we do not hold")
                items.append(held)
            else:
                items.append(SenderProposal(entry, sender))
        applied = apply_proposals(
            suite,
            epoch.tree,
            epoch.context,
            items,
            committer=committer,
            credential_validator=self._credential_validator,
            now=now,
        )
        # RFC 9420 §12.4: "the path field MUST be populated if the Commit
        # covers at least one Update or Remove proposal ... or if it's an
        # empty commit".
        if applied.path_required and commit.path is None:
            raise PathRequired("this commit must carry an UpdatePath")

        tree = applied.tree
        resync: LeafIndex | None = None
        if external:
            if applied.external_init is None or commit.path is None:  # pragma: no cover
                # apply_proposals and _authenticate refuse both already.
                raise InvalidExternalCommit("an external commit needs an ExternalInit and a path")
            if applied.removed:
                resync = applied.removed[0]
                removed_credential = self._credential_of(resync)
                if removed_credential != commit.path.leaf_node.credential:
                    # RFC 9420 §12.4.3.2: the resyncing joiner's new leaf "MUST
                    # meet the same criteria as would the LeafNode in an Update
                    # for the removed leaf". Townsquare choice: the same
                    # credential, as Group requires.
                    raise InvalidExternalCommit(
                        "a resync must keep the removed member's credential"
                    )
            # RFC 9420 §12.4.2: "If this is an external Commit, assign the
            # sender the leftmost blank leaf node in the new ratchet tree". The
            # placeholder holds no key, so the path's keys are checked against
            # the tree as it was; merging the path replaces it.
            tree = tree.copy()
            committer = tree.add_leaf(replace(commit.path.leaf_node, encryption_key=b""))
        if committer is None:  # pragma: no cover - set above for both kinds of commit
            raise InvalidSender("a commit from neither a member nor a new member")

        if commit.path is not None:
            self._validate_path_leaf(
                commit.path.leaf_node,
                None if external else tree,
                committer,
                applied,
                now,
            )
            tree = self._merge_path(tree, committer, commit.path, applied)

        # RFC 9420 §8.2: the confirmed transcript hash covers the commit's
        # FramedContent and signature; the interim one adds its confirmation
        # tag, which the public view takes on trust (§8.1 needs the secret
        # confirmation_key).
        confirmed = confirmed_transcript_hash(
            suite, epoch.interim_transcript_hash, auth, content_bytes=content_bytes
        )
        context = GroupContext(
            cipher_suite=suite.suite_id,
            group_id=epoch.context.group_id,
            epoch=epoch.context.epoch + 1,
            tree_hash=tree.root_tree_hash(),
            confirmed_transcript_hash=confirmed,
            extensions=applied.extensions,
        )
        next_epoch = _PublicEpoch(
            context=context,
            tree=tree,
            interim_transcript_hash=interim_transcript_hash(
                suite, confirmed, auth.confirmation_tag
            ),
            confirmation_tag=auth.confirmation_tag,
        )
        return PublicCommit(
            epoch=context.epoch,
            committer=committer,
            added=tuple(
                AddedMember(
                    leaf,
                    key_package.leaf_node.signature_key,
                    key_package_ref(suite, key_package),
                )
                for leaf, key_package in applied.added
            ),
            removed=self._removed_members(applied.removed),
            updated=applied.updated,
            external=external,
            resync=resync,
            reinit=applied.reinit is not None,
            context=context,
            _next=next_epoch,
            _previous_epoch=epoch.context.epoch,
            covered=tuple(items),
        )

    def _credential_of(self, leaf_index: LeafIndex) -> Credential | None:
        leaf = self._epoch.tree.leaf(leaf_index)
        return None if leaf is None else leaf.credential

    def _removed_members(self, removed: Sequence[LeafIndex]) -> tuple[PublicMember, ...]:
        # apply_proposals removes only non-blank leaves (RFC 9420 §12.1.3).
        tree = self._epoch.tree
        return tuple(_public_member(i, leaf) for i in removed if (leaf := tree.leaf(i)) is not None)

    def _validate_path_leaf(
        self,
        leaf: LeafNode,
        tree: RatchetTree | None,
        committer: LeafIndex,
        applied: AppliedProposals,
        now: int | None,
    ) -> None:
        # RFC 9420 §12.4.2: "Validate the LeafNode as specified in Section 7.3.
        # The leaf_node_source field MUST be set to commit." and "Verify that
        # the encryption_key value in the LeafNode is different from the
        # committer's current leaf node." As Group._validate_path_leaf; an
        # external committer (``tree`` is None) replaces no leaf of its own.
        current = None if tree is None else tree.leaf(committer)
        in_use, supported = credential_types(applied.tree)
        validate_leaf_node(
            self._suite,
            leaf,
            source=LeafNodeSource.COMMIT,
            group_id=self.group_id,
            leaf_index=committer,
            credential_validator=self._credential_validator,
            required_capabilities=required_capabilities(applied.extensions),
            credential_types_in_use=in_use,
            credential_types_supported=supported,
            replaced_encryption_key=None if current is None else current.encryption_key,
            now=now,
        )
        # RFC 9420 §7.3: "Verify that the following fields are unique among
        # the members of the group: signature_key". The committer may keep its
        # own key; an external joiner's may be that of the leaf it removes,
        # which ``applied.tree`` no longer holds.
        kept = None if current is None else current.signature_key
        if leaf.signature_key != kept and applied.tree.has_signature_key(leaf.signature_key):
            raise DuplicateKey("the UpdatePath's leaf reuses another member's signature key")

    def _merge_path(
        self,
        tree: RatchetTree,
        committer: LeafIndex,
        path: UpdatePath,
        applied: AppliedProposals,
    ) -> RatchetTree:
        # The path's keys and length and the parent hash (RFC 9420 §7.5,
        # §7.9.2), as every member checks them; _validate_path_leaf has
        # verified the leaf's signature (as committer, in this group) already.
        merged = merge_update_path(
            tree, committer, path, group_id=self.group_id, leaf_signature_verified=True
        )
        # RFC 9420 §7.6: "The length of the encrypted_path_secret vector MUST
        # be equal to the length of the resolution of the copath node
        # (excluding new leaf nodes)". Each member checks the one node it
        # decrypts; the public view checks them all, so that no member is
        # handed a path it cannot process.
        excluded = {leaf_to_node(leaf) for leaf, _ in applied.added}
        for (node, copath_child), update_node in zip(
            merged.filtered_direct_path(committer), path.nodes, strict=True
        ):
            resolution = [n for n in merged.resolution(copath_child) if n not in excluded]
            if len(update_node.encrypted_path_secret) != len(resolution):
                raise PathError(
                    f"node {node} has {len(update_node.encrypted_path_secret)} ciphertexts, "
                    f"the resolution of its copath child has {len(resolution)} nodes"
                )
        return merged

    # -- Merging -----------------------------------------------------------------

    def merge(self, staged: PublicCommit) -> None:
        """
        Make a staged commit's epoch current and drop the held proposals (RFC 9420 §12.4.2).

        :param staged: a commit that :meth:`process` returned for the current epoch.
        :raises WrongEpoch: if the public view has moved on since it was staged.
        :raises WrongGroup: if it was staged by another group's view.
        """
        if staged.context.group_id != self.group_id:
            raise WrongGroup("the staged commit is for another group")
        if staged._previous_epoch != self.epoch:
            raise WrongEpoch("the staged commit is for another epoch")
        self._epoch = staged._next
        self._proposals.clear()

    def verify_group_info(
        self, group_info_message: bytes, *, staged: PublicCommit | None = None
    ) -> GroupInfo:
        """
        Check that a GroupInfo describes this view's epoch, or a staged commit's (RFC 9420 §12.4.3).

        A commit arrives with its new epoch's GroupInfo, which external joiners
        use. This checks what needs no secret: the same GroupContext, the
        commit's confirmation tag, a signer that is a member, its signature,
        and (if the GroupInfo carries one) the same ratchet tree.

        :param group_info_message: the MLSMessage(GroupInfo) bytes.
        :param staged: the staged commit whose epoch the GroupInfo is for (default: the
            current epoch).
        :returns: the decoded GroupInfo.
        :raises DecodeError: if it does not decode.
        :raises InvalidContentType: if the message is not a GroupInfo.
        :raises GroupInfoMismatch: if its context, tag, signer or tree differ from the view's.
        :raises InvalidSignature: if its signature does not verify.
        """
        epoch = self._epoch if staged is None else staged._next
        message = MLSMessage.decode(group_info_message)
        if not isinstance(message.body, GroupInfo):
            raise InvalidContentType("expected an MLSMessage(GroupInfo)")
        group_info = message.body
        if group_info.group_context != epoch.context:
            raise GroupInfoMismatch("the GroupInfo's GroupContext is not the public view's")
        if group_info.confirmation_tag != epoch.confirmation_tag:
            raise GroupInfoMismatch("the GroupInfo's confirmation tag is not the commit's")
        tree = epoch.tree
        signer = (
            tree.leaf(LeafIndex(group_info.signer)) if group_info.signer < tree.leaf_count else None
        )
        if signer is None:
            raise GroupInfoMismatch("the GroupInfo's signer is not a member")
        verify_group_info_signature(self._suite, group_info, signer.signature_key)
        # The tree encoding is canonical (RFC 9420 §12.4.3.3: no trailing
        # blanks), so equal trees have equal bytes.
        carried = find_extension(group_info.extensions, ExtensionType.RATCHET_TREE)
        if carried is not None and carried.extension_data != tree.encode():
            raise GroupInfoMismatch("the GroupInfo's ratchet tree is not the public view's")
        return group_info
