"""
The MLS group state machine (RFC 9420 §11-§12), sans-I/O.

A :class:`Group` is one member's view of one group. Its only inputs are API
calls and received message bytes; its outputs are bytes to send and result
values. It reads no clock (``now`` is passed in), no socket and no global
randomness (``rng`` is passed in).

Handshake flow::

    commit(...) ──► PendingCommit (commit, Welcome, GroupInfo bytes + StagedCommit)
                     │ the delivery service accepts it ──► merge(staged)
                     │ it rejects it (another commit won) ──► discard, process the winner
    process(bytes) ──► ApplicationMessage | ProposalReceived | StagedCommit
                     StagedCommit ──► merge(staged) makes its epoch current

Nothing changes the current epoch until :meth:`Group.merge` (RFC 9420 §14:
creating a commit "MUST NOT modify a client's state"); a rejected message
leaves the group as it was, except that a PrivateMessage's ratchet
generation is consumed once its signature verifies (RFC 9420 §9.2).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from townsquare.mls.ciphersuite import CipherSuite, Rng, get_cipher_suite
from townsquare.mls.commit import Commit, ProposalOrRef, ProposalRef
from townsquare.mls.credentials import Credential
from townsquare.mls.errors import (
    DuplicateKey,
    GroupInfoMismatch,
    InvalidContentType,
    InvalidExternalCommit,
    InvalidProposal,
    InvalidSender,
    MissingRatchetTree,
    NotOurCommit,
    OwnLeafNotFound,
    PathRequired,
    ProposalNotAllowed,
    PSKError,
    TreeHashMismatch,
    UnknownProposalRef,
    UsageError,
    WrongEpoch,
    WrongGroup,
)
from townsquare.mls.extensions import Extension, ExternalPub, find_extension
from townsquare.mls.framing import (
    ApplicationData,
    AuthenticatedContent,
    FramedContent,
    MemberSender,
    MLSMessage,
    NewMemberCommitSender,
    NewMemberProposalSender,
    PrivateMessage,
    PublicMessage,
    Sender,
    encode_public_mls_message,
    public_message_content_bytes,
)
from townsquare.mls.group_context import GroupContext
from townsquare.mls.key_package import KeyPackageBundle, default_capabilities, key_package_ref
from townsquare.mls.key_schedule import (
    EpochSecrets,
    confirmation_tag,
    derive_epoch_secrets,
    derive_epoch_secrets_from_joiner,
    external_key_pair,
    mls_exporter,
    verify_confirmation_tag,
)
from townsquare.mls.key_schedule import welcome_secret as derive_welcome_secret
from townsquare.mls.leaf_node import (
    Capabilities,
    CredentialValidator,
    LeafNode,
    accept_any_credential,
    check_extension_types_unique,
    sign_leaf_node,
    validate_leaf_node,
)
from townsquare.mls.private_message import protect_private, unprotect_private
from townsquare.mls.proposal_list import (
    AppliedProposals,
    SenderProposal,
    apply_proposals,
    credential_types,
    required_capabilities,
)
from townsquare.mls.proposals import Add, ExternalInit, Proposal, Remove, Update
from townsquare.mls.psk import PreSharedKeyID, psk_secret
from townsquare.mls.public_message import (
    authenticate_content,
    check_group_and_epoch,
    check_sender_content,
    protect_public,
    unprotect_public,
)
from townsquare.mls.ratchet_tree import RatchetTree
from townsquare.mls.registries import (
    ExtensionType,
    LeafNodeSource,
    ProtocolVersion,
    PSKType,
    ResumptionPSKUsage,
    WireFormat,
)
from townsquare.mls.secret_tree import SecretTree
from townsquare.mls.transcript import (
    INITIAL_CONFIRMED_TRANSCRIPT_HASH,
    confirmed_transcript_hash,
    interim_transcript_hash,
)
from townsquare.mls.tree_math import LeafIndex, NodeIndex, leaf_to_node, level
from townsquare.mls.treekem import (
    TreeKEMPrivate,
    create_update_path,
    merge_update_path,
    process_update_path,
)
from townsquare.mls.update_path import UpdatePath
from townsquare.mls.welcome import (
    GroupInfo,
    GroupSecrets,
    PathSecret,
    Welcome,
    decrypt_group_info,
    decrypt_group_secrets,
    seal_welcome,
    sign_group_info,
    verify_group_info_signature,
)

__all__ = [
    "ApplicationMessage",
    "ExternalJoin",
    "Group",
    "GroupConfig",
    "Member",
    "PSKLookup",
    "PendingCommit",
    "ProposalReceived",
    "StagedCommit",
    "proposal_ref",
]

PROPOSAL_REF_LABEL = b"MLS 1.0 Proposal Reference"
EXTERNAL_INIT_LABEL = b"MLS 1.0 external init secret"

PSKLookup = Callable[[PreSharedKeyID], bytes | None]
"""Returns the PSK an id names, or ``None`` if the application does not hold it."""


def _no_psks(psk_id: PreSharedKeyID) -> bytes | None:
    del psk_id
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupConfig:
    """
    The application's policy for a group.
    """

    #: The application's credential check (RFC 9420 §5.3.1).
    credential_validator: CredentialValidator = accept_any_credential
    #: External PSKs the application holds (RFC 9420 §8.4).
    external_psks: PSKLookup = _no_psks
    #: Send handshake messages as PublicMessage (so a relay can check them).
    public_handshake: bool = True
    #: Pad application PrivateMessages to a multiple of this many bytes (§6.3.1).
    padding_block: int = 32
    #: How many past epochs' keys to keep for late application messages.
    max_past_epochs: int = 2
    #: How many past epochs' resumption PSKs to keep (RFC 9420 §8.4).
    max_resumption_psks: int = 8


def proposal_ref(suite: CipherSuite, content: AuthenticatedContent) -> bytes:
    """
    :returns: ``RefHash("MLS 1.0 Proposal Reference", AuthenticatedContent)`` (RFC 9420 §5.2).
    """
    return suite.ref_hash(PROPOSAL_REF_LABEL, content.encode())


@dataclass(frozen=True, slots=True)
class Member:
    """
    A member of the group: its leaf index and leaf node.
    """

    leaf_index: LeafIndex
    leaf_node: LeafNode


@dataclass(frozen=True, slots=True, kw_only=True)
class _Epoch:
    """
    Everything that is fixed for one epoch of the group.
    """

    context: GroupContext
    tree: RatchetTree = field(repr=False)
    private: TreeKEMPrivate = field(repr=False)
    secrets: EpochSecrets = field(repr=False)
    interim_transcript_hash: bytes
    confirmation_tag: bytes
    own_leaf: LeafIndex


@dataclass(frozen=True, slots=True)
class ApplicationMessage:
    """
    An application message was decrypted (RFC 9420 §6.3).
    """

    sender: LeafIndex
    data: bytes = field(repr=False)
    authenticated_data: bytes
    epoch: int


@dataclass(frozen=True, slots=True)
class ProposalReceived:
    """
    A proposal was verified and stored for the current epoch's commit (RFC 9420 §12.1).
    """

    ref: bytes
    proposal: Proposal
    sender: Sender


@dataclass(frozen=True, slots=True, kw_only=True)
class StagedCommit:
    """
    A verified commit whose epoch becomes current on :meth:`Group.merge` (RFC 9420 §12.4.2).
    """

    epoch: int
    committer: LeafIndex
    added: tuple[LeafIndex, ...]
    removed: tuple[LeafIndex, ...]
    updated: tuple[LeafIndex, ...]
    own: bool
    we_are_removed: bool
    reinit: bool
    _next: _Epoch = field(repr=False)
    _previous_epoch: int = field(repr=False)
    #: The proposals the commit covers, each with its proposer (RFC 9420 §12.4): what an
    #: application's authority rules (Townsquare's admins) judge a commit by.
    covered: tuple[SenderProposal, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingCommit:
    """
    A commit we created, waiting for the delivery service to accept it.

    ``commit`` is the MLSMessage to send, ``welcome`` the MLSMessage(Welcome)
    for new members (or ``None``), ``group_info`` the new epoch's signed
    MLSMessage(GroupInfo) to publish for external joiners.
    """

    commit: bytes
    welcome: bytes | None
    group_info: bytes
    staged: StagedCommit


@dataclass(frozen=True, slots=True, kw_only=True)
class ExternalJoin:
    """
    An external commit we created (RFC 9420 §12.4.3.2) and the group it leads to once accepted.
    """

    commit: bytes
    group: Group = field(repr=False)


@dataclass(slots=True)
class _PastEpoch:
    context: GroupContext
    tree: RatchetTree
    secret_tree: SecretTree
    sender_data_secret: bytes = field(repr=False)


def _mls_message(body: PublicMessage | PrivateMessage | Welcome | GroupInfo) -> bytes:
    return MLSMessage(ProtocolVersion.MLS10, body).encode()


def _required_path(commit: Commit, applied: AppliedProposals) -> None:
    # RFC 9420 §12.4: "the path field MUST be populated if the Commit covers
    # at least one Update or Remove proposal ... or if it's an empty commit".
    if applied.path_required and commit.path is None:
        raise PathRequired("this commit must carry an UpdatePath")


class Group:
    """
    One member's state of one MLS group.
    """

    __slots__ = (
        "_config",
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
    )

    def __init__(
        self,
        *,
        suite: CipherSuite,
        epoch: _Epoch,
        signature_private_key: bytes,
        config: GroupConfig,
        resumption_psks: dict[int, bytes] | None = None,
    ) -> None:
        """
        Use :meth:`create`, :meth:`join` or :meth:`join_external` instead.
        """
        self._suite = suite
        self._epoch = epoch
        self._signature_private_key = signature_private_key
        self._config = config
        self._secret_tree = SecretTree(
            suite, epoch.secrets.encryption_secret, epoch.tree.leaf_count
        )
        self._proposals: dict[bytes, SenderProposal] = {}
        self._pending_updates: dict[bytes, bytes] = {}
        self._pending_commit: PendingCommit | None = None
        self._reinitialized = False
        self._past: dict[int, _PastEpoch] = {}
        self._resumption_psks: dict[int, bytes] = dict(resumption_psks or {})
        self._resumption_psks[epoch.context.epoch] = epoch.secrets.resumption_psk

    # -- Creating and joining ------------------------------------------------

    @classmethod
    def create(
        cls,
        bundle: KeyPackageBundle,
        *,
        group_id: bytes,
        rng: Rng,
        extensions: tuple[Extension, ...] = (),
        config: GroupConfig | None = None,
    ) -> Group:
        """
        Create a one-member group at epoch 0 (RFC 9420 §11).

        :param bundle: the creator's KeyPackage and keys (its leaf becomes leaf 0).
        :param group_id: the new group's id.
        :param rng: the randomness source (the initial init_secret).
        :param extensions: the GroupContext extensions.
        :param config: the group's policy.
        :returns: the group.
        """
        suite = get_cipher_suite(bundle.key_package.cipher_suite)
        config = config or GroupConfig()
        tree = RatchetTree(suite, (bundle.key_package.leaf_node,))
        context = GroupContext(
            cipher_suite=suite.suite_id,
            group_id=group_id,
            epoch=0,
            tree_hash=tree.root_tree_hash(),
            confirmed_transcript_hash=INITIAL_CONFIRMED_TRANSCRIPT_HASH,
            extensions=extensions,
        )
        # RFC 9420 §11: the creator sets "init_secret to a fresh random value of
        # size KDF.Nh" and derives the epoch with an all-zero commit secret;
        # the epoch-0 confirmation tag is computed "over the empty
        # confirmed_transcript_hash".
        secrets = derive_epoch_secrets(
            suite,
            init_secret=rng(suite.hash_length),
            commit_secret=None,
            psk_secret=None,
            group_context=context,
        )
        tag = confirmation_tag(suite, secrets.confirmation_key, b"")
        epoch = _Epoch(
            context=context,
            tree=tree,
            private=TreeKEMPrivate(suite, LeafIndex(0), bundle.encryption_private_key),
            secrets=secrets,
            interim_transcript_hash=interim_transcript_hash(suite, b"", tag),
            confirmation_tag=tag,
            own_leaf=LeafIndex(0),
        )
        return cls(
            suite=suite,
            epoch=epoch,
            signature_private_key=bundle.signature_private_key,
            config=config,
        )

    @classmethod
    def join(
        cls,
        welcome_message: bytes,
        bundle: KeyPackageBundle,
        *,
        ratchet_tree: bytes | None = None,
        config: GroupConfig | None = None,
        now: int | None = None,
    ) -> Group:
        """
        Join a group from a Welcome (RFC 9420 §12.4.3.1).

        :param welcome_message: the MLSMessage(Welcome) bytes.
        :param bundle: the KeyPackage the Welcome was made for, with its keys.
        :param ratchet_tree: the encoded ``ratchet_tree`` if the GroupInfo does not carry it.
        :param config: the group's policy (its ``external_psks`` resolve PSKs).
        :param now: seconds since the epoch, for leaf lifetimes (``None`` skips the check).
        :returns: the group at the Welcome's epoch.
        :raises WelcomeError: (a subclass) if the Welcome cannot be used.
        :raises DecodeError: if any part does not decode.
        :raises DecryptError: if the secrets or GroupInfo do not decrypt.
        :raises InvalidSignature: if the GroupInfo or a leaf is not validly signed.
        :raises TreeError: (a subclass) if the ratchet tree is invalid.
        :raises ConfirmationTagMismatch: if the GroupInfo's confirmation tag is wrong.
        :raises PSKError: if a PSK the Welcome names is not available.
        """
        config = config or GroupConfig()
        message = MLSMessage.decode(welcome_message)
        if not isinstance(message.body, Welcome):
            raise InvalidContentType("expected an MLSMessage(Welcome)")
        welcome = message.body
        key_package = bundle.key_package
        suite = get_cipher_suite(key_package.cipher_suite)
        # RFC 9420 §12.4.3.1: "If the cipher suite ... is not the one of the
        # KeyPackage, the new member MUST reject" (checked inside).
        group_secrets = decrypt_group_secrets(
            suite, welcome, key_package_ref(suite, key_package), bundle.init_private_key
        )
        psk_pairs = []
        for psk_id in group_secrets.psks:
            # RFC 9420 §12.4.3.1: "if a PreSharedKeyID has type resumption with
            # usage reinit or branch, verify that it is the only such PSK" and
            # "verify that the epoch field in the GroupInfo is equal to 1".
            # Townsquare choice: Townsquare neither reinitializes nor branches
            # groups (§11.2, §11.3), so it joins by no such Welcome.
            if psk_id.psktype == PSKType.RESUMPTION and psk_id.usage != (
                ResumptionPSKUsage.APPLICATION
            ):
                raise PSKError("the Welcome names a reinit or branch resumption PSK")
            # RFC 9420 §12.4.3.1: "If a PreSharedKeyID is part of the
            # GroupSecrets and the client is not in possession of the
            # corresponding PSK, return an error."
            value = config.external_psks(psk_id)
            if value is None:
                raise PSKError("the Welcome names a PSK we do not hold")
            psk_pairs.append((psk_id, value))
        psk = psk_secret(suite, psk_pairs) if psk_pairs else None
        welcome_secret = derive_welcome_secret(suite, group_secrets.joiner_secret, psk)
        group_info = decrypt_group_info(suite, welcome_secret, welcome.encrypted_group_info)
        context = group_info.group_context
        if context.cipher_suite != suite.suite_id:
            raise GroupInfoMismatch("the GroupInfo's cipher suite is not the KeyPackage's")
        if context.version != ProtocolVersion.MLS10:
            raise GroupInfoMismatch("the GroupInfo's version is not mls10")
        tree = cls._tree_from(suite, group_info, ratchet_tree)
        cls._verify_joined_tree(suite, tree, group_info, config, now)

        own_leaf = tree.find_leaf(key_package.leaf_node)
        if own_leaf is None:
            raise OwnLeafNotFound("no leaf of the tree is our KeyPackage's leaf")
        private = TreeKEMPrivate(suite, own_leaf, bundle.encryption_private_key)
        if group_secrets.path_secret is not None:
            # RFC 9420 §12.4.3.1: "Identify the lowest common ancestor of the
            # leaf node containing the new member and of the leaf node
            # containing the signer ... For each parent of the common ancestor,
            # up to the root of the tree, derive a new path secret, and set the
            # private keys for the node to the keys derived from the path
            # secret."
            nodes = [
                node
                for node, _ in tree.filtered_direct_path(LeafIndex(group_info.signer))
                if _covers(node, own_leaf)
            ]
            private = private.with_path_secrets(nodes, group_secrets.path_secret.path_secret)
        private.check_consistent(tree)

        secrets = derive_epoch_secrets_from_joiner(
            suite,
            joiner_secret=group_secrets.joiner_secret,
            psk_secret=psk,
            group_context=context,
        )
        # RFC 9420 §12.4.3.1: "Verify the confirmation tag in the GroupInfo
        # using the derived confirmation key and the confirmed_transcript_hash
        # from the GroupInfo."
        verify_confirmation_tag(
            suite,
            secrets.confirmation_key,
            context.confirmed_transcript_hash,
            group_info.confirmation_tag,
        )
        epoch = _Epoch(
            context=context,
            tree=tree,
            private=private,
            secrets=secrets,
            interim_transcript_hash=interim_transcript_hash(
                suite, context.confirmed_transcript_hash, group_info.confirmation_tag
            ),
            confirmation_tag=group_info.confirmation_tag,
            own_leaf=own_leaf,
        )
        return cls(
            suite=suite,
            epoch=epoch,
            signature_private_key=bundle.signature_private_key,
            config=config,
        )

    @staticmethod
    def _tree_from(
        suite: CipherSuite, group_info: GroupInfo, ratchet_tree: bytes | None
    ) -> RatchetTree:
        # RFC 9420 §13.4: "Any field containing a list of extensions MUST NOT
        # have more than one extension of any given type."
        check_extension_types_unique(group_info.extensions)
        check_extension_types_unique(group_info.group_context.extensions)
        extension = find_extension(group_info.extensions, ExtensionType.RATCHET_TREE)
        if extension is not None:
            return RatchetTree.decode(suite, extension.extension_data)
        if ratchet_tree is None:
            raise MissingRatchetTree("the ratchet tree is neither in the GroupInfo nor given")
        return RatchetTree.decode(suite, ratchet_tree)

    @staticmethod
    def _verify_joined_tree(
        suite: CipherSuite,
        tree: RatchetTree,
        group_info: GroupInfo,
        config: GroupConfig,
        now: int | None,
    ) -> None:
        context = group_info.group_context
        # RFC 9420 §12.4.3.1: "Verify that the tree hash of the ratchet tree
        # matches the tree_hash field in the GroupInfo."
        if tree.root_tree_hash() != context.tree_hash:
            raise TreeHashMismatch("the ratchet tree does not match the GroupInfo's tree hash")
        # RFC 9420 §12.4.3.1: "Verify the signature on the GroupInfo object.
        # The signature MUST verify using the public key in the signer's leaf".
        signer = (
            tree.leaf(LeafIndex(group_info.signer)) if group_info.signer < tree.leaf_count else None
        )
        if signer is None:
            raise GroupInfoMismatch("the GroupInfo's signer is not a member")
        verify_group_info_signature(suite, group_info, signer.signature_key)
        # RFC 9420 §12.4.3.1: verify "the integrity of the ratchet tree":
        # parent hashes, leaf signatures, unmerged leaves, unique keys, and
        # each leaf node per §7.3.
        tree.verify(context.group_id)
        required = required_capabilities(context.extensions)
        in_use, supported = credential_types(tree)
        for leaf_index, leaf in tree.leaves():
            validate_leaf_node(
                suite,
                leaf,
                source=leaf.leaf_node_source,
                group_id=context.group_id,
                leaf_index=leaf_index,
                credential_validator=config.credential_validator,
                required_capabilities=required,
                credential_types_in_use=in_use,
                credential_types_supported=supported,
                now=now,
                # RFC 9420 §13.4: "an extension in use by the group MUST be
                # supported by all members of the group", the joiner included:
                # "A client joining a group MUST verify that it supports every
                # extension in the GroupContext for the group."
                group_context_extensions=context.extensions,
                # tree.verify() above checked every leaf signature.
                signature_verified=True,
            )

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
    def own_leaf(self) -> LeafIndex:
        """
        Our leaf index.
        """
        return self._epoch.own_leaf

    @property
    def epoch_authenticator(self) -> bytes:
        """
        The current epoch's authenticator (RFC 9420 §8.7).
        """
        return self._epoch.secrets.epoch_authenticator

    @property
    def tree_hash(self) -> bytes:
        """
        The current tree hash.
        """
        return self._epoch.context.tree_hash

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

    def members(self) -> tuple[Member, ...]:
        """
        :returns: every member, by leaf index.
        """
        return tuple(Member(i, leaf) for i, leaf in self._epoch.tree.leaves())

    def export_secret(self, label: bytes, context: bytes, length: int) -> bytes:
        """
        :returns: ``MLS-Exporter(label, context, length)`` of the current epoch (RFC 9420 §8.5).
        """
        return mls_exporter(
            self._suite, self._epoch.secrets.exporter_secret, label, context, length
        )

    def group_info(self, *, with_ratchet_tree: bool = True) -> bytes:
        """
        Sign a GroupInfo for the current epoch, with ``external_pub`` (RFC 9420 §12.4.3).

        :param with_ratchet_tree: include the ``ratchet_tree`` extension.
        :returns: the MLSMessage(GroupInfo) bytes.
        """
        return _mls_message(self._group_info(self._epoch, with_ratchet_tree=with_ratchet_tree))

    def ratchet_tree(self) -> bytes:
        """
        :returns: the encoded ratchet tree (``optional<Node> ratchet_tree<V>``).
        """
        return self._epoch.tree.encode()

    def _group_info(self, epoch: _Epoch, *, with_ratchet_tree: bool) -> GroupInfo:
        _, external_pub = external_key_pair(self._suite, epoch.secrets.external_secret)
        extensions = [Extension(ExtensionType.EXTERNAL_PUB, ExternalPub(external_pub).encode())]
        if with_ratchet_tree:
            extensions.append(Extension(ExtensionType.RATCHET_TREE, epoch.tree.encode()))
        unsigned = GroupInfo(
            group_context=epoch.context,
            extensions=tuple(extensions),
            confirmation_tag=epoch.confirmation_tag,
            signer=epoch.own_leaf,
        )
        return sign_group_info(self._suite, unsigned, self._signature_private_key)

    # -- Application messages --------------------------------------------------

    def _check_can_send(self) -> None:
        if self._reinitialized:
            raise UsageError("the group was reinitialized; wait for the new group's Welcome")

    def encrypt(self, data: bytes, *, rng: Rng, authenticated_data: bytes = b"") -> bytes:
        """
        Encrypt application data as a PrivateMessage of the current epoch (RFC 9420 §6.3).

        :param data: the application data.
        :param rng: the randomness source (the reuse guard).
        :param authenticated_data: data authenticated but not encrypted.
        :returns: the MLSMessage bytes.
        :raises GenerationError: if our ratchet is exhausted.
        :raises UsageError: if a ReInit has been committed (RFC 9420 §12.4.2).
        """
        self._check_can_send()
        content = FramedContent(
            group_id=self.group_id,
            epoch=self.epoch,
            sender=MemberSender(self.own_leaf),
            authenticated_data=authenticated_data,
            content=ApplicationData(data),
        )
        auth = authenticate_content(
            self._suite,
            content,
            wire_format=WireFormat.MLS_PRIVATE_MESSAGE,
            signature_private_key=self._signature_private_key,
            group_context=self.context,
        )
        block = self._config.padding_block
        padding = (-(len(data) + len(authenticated_data))) % block if block > 1 else 0
        message = protect_private(
            self._suite,
            auth,
            secret_tree=self._secret_tree,
            sender_data_secret=self._epoch.secrets.sender_data_secret,
            rng=rng,
            padding_length=padding,
        )
        return _mls_message(message)

    # -- Proposals -------------------------------------------------------------

    def _send_handshake(
        self, content: FramedContent, rng: Rng
    ) -> tuple[bytes, AuthenticatedContent]:
        wire_format = (
            WireFormat.MLS_PUBLIC_MESSAGE
            if self._config.public_handshake
            else WireFormat.MLS_PRIVATE_MESSAGE
        )
        auth = authenticate_content(
            self._suite,
            content,
            wire_format=wire_format,
            signature_private_key=self._signature_private_key,
            group_context=self.context,
        )
        return self._frame(auth, rng), auth

    def _frame(
        self, auth: AuthenticatedContent, rng: Rng, content_bytes: bytes | None = None
    ) -> bytes:
        if auth.wire_format == WireFormat.MLS_PUBLIC_MESSAGE:
            message = protect_public(
                self._suite,
                auth,
                membership_key=self._epoch.secrets.membership_key,
                group_context=self.context,
                content_bytes=content_bytes,
            )
            if content_bytes is None:
                return _mls_message(message)
            return encode_public_mls_message(message, content_bytes)
        return _mls_message(
            protect_private(
                self._suite,
                auth,
                secret_tree=self._secret_tree,
                sender_data_secret=self._epoch.secrets.sender_data_secret,
                rng=rng,
            )
        )

    def propose(self, proposal: Proposal, *, rng: Rng, authenticated_data: bytes = b"") -> bytes:
        """
        Send a proposal by reference and hold it for the next commit (RFC 9420 §12.1).

        For an Update use :meth:`propose_update`, which also keeps the new leaf's key.

        :param proposal: the proposal.
        :param rng: the randomness source.
        :param authenticated_data: data authenticated with the message.
        :returns: the MLSMessage bytes.
        :raises UsageError: if a ReInit has been committed (RFC 9420 §12.4.2).
        """
        self._check_can_send()
        content = FramedContent(
            group_id=self.group_id,
            epoch=self.epoch,
            sender=MemberSender(self.own_leaf),
            authenticated_data=authenticated_data,
            content=proposal,
        )
        message, auth = self._send_handshake(content, rng)
        self._proposals[proposal_ref(self._suite, auth)] = SenderProposal(
            proposal, MemberSender(self.own_leaf)
        )
        return message

    def propose_update(self, *, rng: Rng) -> bytes:
        """
        Propose a fresh encryption key for our leaf (RFC 9420 §12.1.2).

        :returns: the MLSMessage bytes.
        """
        private_key, public_key = self._suite.hpke_generate_key_pair(rng)
        leaf = self._leaf_for(LeafNodeSource.UPDATE, public_key)
        message = self.propose(Update(leaf), rng=rng)
        ref = list(self._proposals)[-1]
        self._pending_updates[ref] = private_key
        return message

    def _leaf_for(self, source: LeafNodeSource, encryption_key: bytes) -> LeafNode:
        current = self._epoch.tree.leaf(self.own_leaf)
        if current is None:  # pragma: no cover - our own leaf is never blank
            raise UsageError("our leaf is blank")
        return sign_leaf_node(
            self._suite,
            replace(
                current,
                encryption_key=encryption_key,
                leaf_node_source=source,
                lifetime=None,
                parent_hash=None,
            ),
            self._signature_private_key,
            group_id=self.group_id,
            leaf_index=self.own_leaf,
        )

    # -- Commits ---------------------------------------------------------------

    def commit(
        self,
        *,
        rng: Rng,
        proposals: Sequence[Proposal] = (),
        by_reference: Sequence[bytes] | None = None,
        force_path: bool = False,
        ratchet_tree_in_welcome: bool = True,
        authenticated_data: bytes = b"",
        now: int | None = None,
    ) -> PendingCommit:
        """
        Create a commit of held proposals (by reference) and new ones (by value) (§12.4.1).

        The group does not change: :meth:`merge` the returned ``staged`` commit
        once the delivery service has accepted it.

        :param rng: the randomness source.
        :param proposals: proposals to include by value.
        :param by_reference: refs of held proposals to include (default: all held).
        :param force_path: include an UpdatePath even where none is required.
        :param ratchet_tree_in_welcome: put the ratchet tree in the Welcome's GroupInfo.
        :param authenticated_data: data authenticated with the commit.
        :param now: seconds since the epoch, for KeyPackage lifetimes.
        :returns: the commit, Welcome and GroupInfo bytes and the staged commit.
        :raises ProposalError: (a subclass) if the proposal list is invalid.
        :raises UnknownProposalRef: if a ref is not held.
        :raises PSKError: if a PSK is not available.
        """
        self._check_can_send()
        suite = self._suite
        epoch = self._epoch
        refs = list(self._proposals) if by_reference is None else list(by_reference)
        covered: list[ProposalOrRef] = []
        items: list[SenderProposal] = []
        for ref in refs:
            held = self._proposals.get(ref)
            if held is None:
                raise UnknownProposalRef("a ref names no held proposal")
            covered.append(ProposalRef(ref))
            items.append(held)
        own_sender = MemberSender(epoch.own_leaf)
        for proposal in proposals:
            covered.append(proposal)
            items.append(SenderProposal(proposal, own_sender))
        applied = apply_proposals(
            suite,
            epoch.tree,
            epoch.context,
            items,
            committer=epoch.own_leaf,
            credential_validator=self._config.credential_validator,
            now=now,
        )
        psk = self._psk_secret(applied.psks)
        private = epoch.private.without_blank_nodes(applied.tree)
        provisional = replace(
            epoch.context, epoch=epoch.context.epoch + 1, extensions=applied.extensions
        )
        tree = applied.tree
        path: UpdatePath | None = None
        commit_secret: bytes | None = None
        created = None
        if applied.path_required or force_path:
            created = create_update_path(
                tree,
                private,
                group_context=provisional,
                signature_private_key=self._signature_private_key,
                rng=rng,
                excluded_leaves=[leaf for leaf, _ in applied.added],
            )
            tree, private, path = created.tree, created.private, created.update_path
            commit_secret = created.commit_secret
        commit = Commit(tuple(covered), path)
        content = FramedContent(
            group_id=self.group_id,
            epoch=self.epoch,
            sender=own_sender,
            authenticated_data=authenticated_data,
            content=commit,
        )
        wire_format = (
            WireFormat.MLS_PUBLIC_MESSAGE
            if self._config.public_handshake
            else WireFormat.MLS_PRIVATE_MESSAGE
        )
        # The commit (with its UpdatePath) is encoded once, for the signature,
        # the transcript hash, the membership tag and the message itself.
        content_bytes = content.encode()
        signed = authenticate_content(
            suite,
            content,
            wire_format=wire_format,
            signature_private_key=self._signature_private_key,
            group_context=epoch.context,
            confirmation_tag=b"",
            content_bytes=content_bytes,
        )
        next_epoch = self._next_epoch(
            signed=signed,
            tree=tree,
            private=private,
            extensions=applied.extensions,
            init_secret=epoch.secrets.init_secret,
            commit_secret=commit_secret,
            psk=psk,
            own_leaf=epoch.own_leaf,
            received_tag=None,
            content_bytes=content_bytes,
        )
        auth = replace(signed, confirmation_tag=next_epoch.confirmation_tag)
        commit_message = self._frame(auth, rng, content_bytes)

        welcome_message = None
        if applied.added:
            group_info = self._group_info(next_epoch, with_ratchet_tree=ratchet_tree_in_welcome)
            new_members = []
            for leaf, key_package in applied.added:
                path_secret = (
                    PathSecret(created.path_secret_for(leaf)) if created is not None else None
                )
                new_members.append(
                    (
                        key_package,
                        GroupSecrets(
                            joiner_secret=next_epoch.secrets.joiner_secret,
                            path_secret=path_secret,
                            psks=applied.psks,
                        ),
                    )
                )
            welcome = seal_welcome(
                suite,
                welcome_secret=next_epoch.secrets.welcome_secret,
                group_info=group_info,
                new_members=new_members,
                rng=rng,
            )
            welcome_message = _mls_message(welcome)

        staged = StagedCommit(
            epoch=next_epoch.context.epoch,
            committer=epoch.own_leaf,
            added=tuple(leaf for leaf, _ in applied.added),
            removed=applied.removed,
            updated=applied.updated,
            own=True,
            we_are_removed=False,
            reinit=applied.reinit is not None,
            _next=next_epoch,
            _previous_epoch=epoch.context.epoch,
            covered=tuple(items),
        )
        pending = PendingCommit(
            commit=commit_message,
            welcome=welcome_message,
            # Townsquare choice: the published GroupInfo carries no ratchet
            # tree (RFC 9420 §12.4.3.3 makes the extension optional); the
            # relay keeps the tree from the commits it checks and serves it
            # beside the GroupInfo. Encoding and signing a 10,000-member tree
            # on every commit cost about 37 ms of a 54 ms commit.
            group_info=_mls_message(self._group_info(next_epoch, with_ratchet_tree=False)),
            staged=staged,
        )
        self._pending_commit = pending
        return pending

    def _psk_secret(self, psks: Sequence[PreSharedKeyID]) -> bytes | None:
        if not psks:
            return None
        pairs = []
        for psk_id in psks:
            value: bytes | None
            if psk_id.psktype == PSKType.EXTERNAL:
                value = self._config.external_psks(psk_id)
            elif (
                psk_id.usage == ResumptionPSKUsage.APPLICATION
                and psk_id.psk_group_id == self.group_id
                and psk_id.psk_epoch is not None
            ):
                value = self._resumption_psks.get(psk_id.psk_epoch)
            else:
                value = self._config.external_psks(psk_id)
            # RFC 9420 §12.4.2: "Verify that all PreSharedKey proposals in the
            # proposals vector are available."
            if value is None:
                raise PSKError("a PreSharedKey proposal names a PSK we do not hold")
            pairs.append((psk_id, value))
        return psk_secret(self._suite, pairs)

    def _next_epoch(
        self,
        *,
        signed: AuthenticatedContent,
        tree: RatchetTree,
        private: TreeKEMPrivate,
        extensions: tuple[Extension, ...],
        init_secret: bytes,
        commit_secret: bytes | None,
        psk: bytes | None,
        own_leaf: LeafIndex,
        received_tag: bytes | None,
        interim_before: bytes | None = None,
        context_before: GroupContext | None = None,
        content_bytes: bytes | None = None,
    ) -> _Epoch:
        suite = self._suite
        before = context_before or self._epoch.context
        interim = self._epoch.interim_transcript_hash if interim_before is None else interim_before
        # RFC 9420 §8.2: the confirmed transcript hash covers the commit's
        # FramedContent and signature, not its confirmation tag.
        confirmed = confirmed_transcript_hash(suite, interim, signed, content_bytes=content_bytes)
        context = GroupContext(
            cipher_suite=suite.suite_id,
            group_id=before.group_id,
            epoch=before.epoch + 1,
            tree_hash=tree.root_tree_hash(),
            confirmed_transcript_hash=confirmed,
            extensions=extensions,
        )
        secrets = derive_epoch_secrets(
            suite,
            init_secret=init_secret,
            commit_secret=commit_secret,
            psk_secret=psk,
            group_context=context,
        )
        tag = confirmation_tag(suite, secrets.confirmation_key, confirmed)
        if received_tag is not None:
            # RFC 9420 §12.4.2: "Use the confirmation_key for the new epoch to
            # compute the confirmation tag for this message ... and verify that
            # it is the same as the confirmation_tag field".
            verify_confirmation_tag(suite, secrets.confirmation_key, confirmed, received_tag)
        return _Epoch(
            context=context,
            tree=tree,
            private=private,
            secrets=secrets,
            interim_transcript_hash=interim_transcript_hash(suite, confirmed, tag),
            confirmation_tag=tag,
            own_leaf=own_leaf,
        )

    # -- Receiving -------------------------------------------------------------

    def process(
        self, message_bytes: bytes, *, now: int | None = None
    ) -> ApplicationMessage | ProposalReceived | StagedCommit:
        """
        Verify and decrypt one message of this group (RFC 9420 §6, §12.1, §12.4.2).

        Application messages and proposals take effect at once (a proposal is
        held for the next commit); a commit is returned staged, for :meth:`merge`.

        :param message_bytes: an MLSMessage (PublicMessage or PrivateMessage).
        :param now: seconds since the epoch, for leaf lifetimes.
        :returns: what the message was.
        :raises ProtocolError: (a subclass) for any invalid message; the group is unchanged.
        """
        message = MLSMessage.decode(message_bytes)
        body = message.body
        content_bytes: bytes | None = None
        if isinstance(body, PublicMessage):
            # The content as the sender encoded and signed it, found in the
            # received bytes rather than encoded again (three times over).
            content_bytes = public_message_content_bytes(message_bytes, body)
            auth = self._unprotect_public(body, content_bytes)
        elif isinstance(body, PrivateMessage):
            if body.group_id != self.group_id:
                raise WrongGroup("message is for another group")
            auth = self._unprotect_private(body)
            if isinstance(auth.content.content, ApplicationData):
                sender = auth.content.sender
                if not isinstance(sender, MemberSender):  # pragma: no cover - checked by framing
                    raise InvalidSender("application data from a non-member")
                return ApplicationMessage(
                    LeafIndex(sender.leaf_index),
                    auth.content.content.data,
                    auth.content.authenticated_data,
                    auth.content.epoch,
                )
        else:
            raise InvalidContentType("expected a PublicMessage or a PrivateMessage")

        content = auth.content.content
        if isinstance(content, Commit):
            return self._process_commit(message_bytes, auth, content, now, content_bytes)
        if isinstance(content, ApplicationData):  # pragma: no cover - refused by framing
            raise InvalidContentType("application data must be a PrivateMessage")
        ref = proposal_ref(self._suite, auth)
        self._check_proposal(content, auth.content.sender)
        self._proposals[ref] = SenderProposal(content, auth.content.sender)
        return ProposalReceived(ref, content, auth.content.sender)

    def _check_proposal(self, proposal: Proposal, sender: Sender) -> None:
        # RFC 9420 §12.1: proposals are validated when committed, against the
        # state they are committed in; a Remove of a blank leaf or an Update
        # from a non-member cannot become valid later, so refuse it now.
        tree = self._epoch.tree
        if isinstance(proposal, Remove) and (
            proposal.removed >= tree.leaf_count or tree.leaf(LeafIndex(proposal.removed)) is None
        ):
            raise InvalidProposal(f"Remove names leaf {proposal.removed}, which holds no member")
        if isinstance(proposal, ExternalInit):
            raise ProposalNotAllowed("an ExternalInit cannot be sent by reference")
        if isinstance(proposal, Update) and not isinstance(sender, MemberSender):
            raise InvalidSender("an Update must come from a member")

    def _unprotect_public(
        self, message: PublicMessage, content_bytes: bytes | None = None
    ) -> AuthenticatedContent:
        content = message.content
        check_group_and_epoch(content.group_id, content.epoch, self.context)
        # RFC 9420 §6.1: for new_member_commit "The content_type of the message
        # MUST be commit", for new_member_proposal "The content_type of the
        # message MUST be proposal and the proposal_type of the Proposal MUST
        # be add". Checked before the sender type picks the signature key.
        check_sender_content(content)
        sender = content.sender
        if isinstance(sender, MemberSender):
            leaf = (
                self._epoch.tree.leaf(LeafIndex(sender.leaf_index))
                if sender.leaf_index < self._epoch.tree.leaf_count
                else None
            )
            if leaf is None:
                raise InvalidSender(f"sender leaf {sender.leaf_index} holds no member")
            key = leaf.signature_key
        elif isinstance(sender, NewMemberCommitSender):
            # RFC 9420 §12.4.3.2: an external commit is signed with the key in
            # the leaf node of its path.
            commit = content.content
            if not isinstance(commit, Commit) or commit.path is None:
                raise InvalidExternalCommit("an external commit must carry a path")
            key = commit.path.leaf_node.signature_key
        elif isinstance(sender, NewMemberProposalSender) and isinstance(content.content, Add):
            # RFC 9420 §12.1.8: a new member's Add is signed with the key of
            # the KeyPackage it adds.
            key = content.content.key_package.leaf_node.signature_key
        else:
            # External senders need the external_senders extension, which
            # Townsquare groups do not use.
            raise InvalidSender("external senders are not configured for this group")
        return unprotect_public(
            self._suite,
            message,
            membership_key=self._epoch.secrets.membership_key,
            group_context=self.context,
            signature_public_key=key,
            content_bytes=content_bytes,
        )

    def _unprotect_private(self, message: PrivateMessage) -> AuthenticatedContent:
        if message.epoch == self.epoch:
            context, tree = self.context, self._epoch.tree
            secret_tree, sender_data_secret = (
                self._secret_tree,
                self._epoch.secrets.sender_data_secret,
            )
        else:
            past = self._past.get(message.epoch)
            if past is None:
                raise WrongEpoch(f"no keys for epoch {message.epoch} (at {self.epoch})")
            context, tree = past.context, past.tree
            secret_tree, sender_data_secret = past.secret_tree, past.sender_data_secret

        def signature_key_for(leaf_index: LeafIndex) -> bytes | None:
            if leaf_index >= tree.leaf_count:
                return None
            leaf = tree.leaf(leaf_index)
            return None if leaf is None else leaf.signature_key

        auth = unprotect_private(
            self._suite,
            message,
            secret_tree=secret_tree,
            sender_data_secret=sender_data_secret,
            group_context=context,
            signature_key_for=signature_key_for,
        )
        if message.epoch != self.epoch and not isinstance(auth.content.content, ApplicationData):
            raise WrongEpoch("a handshake message for a past epoch")
        return auth

    def _process_commit(
        self,
        message_bytes: bytes,
        auth: AuthenticatedContent,
        commit: Commit,
        now: int | None,
        content_bytes: bytes | None = None,
    ) -> StagedCommit:
        suite = self._suite
        epoch = self._epoch
        sender = auth.content.sender
        pending = self._pending_commit
        if isinstance(sender, MemberSender) and sender.leaf_index == epoch.own_leaf:
            # RFC 9420 §12.4.2 leaves it to the committer to recognise its own
            # commit when the delivery service hands it back.
            if pending is not None and hmac.compare_digest(pending.commit, message_bytes):
                return pending.staged
            raise NotOurCommit("a commit from our leaf that we did not create")
        if auth.confirmation_tag is None:  # pragma: no cover - enforced by the codec
            raise InvalidContentType("a commit without a confirmation tag")

        external = isinstance(sender, NewMemberCommitSender)
        committer: LeafIndex | None = None if external else LeafIndex(sender.leaf_index)  # type: ignore[union-attr]
        items: list[SenderProposal] = []
        update_refs: list[bytes] = []
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
                update_refs.append(entry.ref)
            else:
                items.append(SenderProposal(entry, sender))
        applied = apply_proposals(
            suite,
            epoch.tree,
            epoch.context,
            items,
            committer=committer,
            credential_validator=self._config.credential_validator,
            now=now,
        )
        _required_path(commit, applied)
        psk = self._psk_secret(applied.psks)

        # Our own state after the proposals: an Update of ours that is
        # committed replaces our leaf's private key.
        own_leaf = epoch.own_leaf
        we_are_removed = own_leaf in applied.removed
        private = epoch.private
        if own_leaf in applied.updated:
            for ref in update_refs:
                if ref in self._pending_updates:
                    private = TreeKEMPrivate(suite, own_leaf, self._pending_updates[ref])
        private = private.without_blank_nodes(applied.tree)

        tree = applied.tree
        init_secret = epoch.secrets.init_secret
        if external:
            external_init = applied.external_init
            if external_init is None or commit.path is None:
                raise InvalidExternalCommit("an external commit needs an ExternalInit and a path")
            removed_credential = self._removed_credential(applied)
            if removed_credential is not None and (
                removed_credential != commit.path.leaf_node.credential
            ):
                # RFC 9420 §12.4.3.2: the resyncing joiner's new leaf "MUST
                # meet the same criteria as would the LeafNode in an Update for
                # the removed leaf". Townsquare choice: the same credential.
                raise InvalidExternalCommit("a resync must keep the removed member's credential")
            external_private, _ = external_key_pair(suite, epoch.secrets.external_secret)
            # RFC 9420 §8.3: the external init secret is exported from an HPKE
            # context set up to the external_pub.
            init_secret = suite.hpke_export_receiver(
                external_private,
                external_init.kem_output,
                b"",
                EXTERNAL_INIT_LABEL,
                suite.hash_length,
            )
            # RFC 9420 §12.4.2: "If this is an external Commit, assign the
            # sender the leftmost blank leaf node in the new ratchet tree". The
            # placeholder holds no key, so the path's keys are checked against
            # the tree as it was; merging the path replaces it.
            tree = tree.copy()
            committer = tree.add_leaf(replace(commit.path.leaf_node, encryption_key=b""))

        if committer is None:  # pragma: no cover - set above for both kinds of commit
            raise UsageError("no committer")
        commit_secret: bytes | None = None
        if commit.path is not None and not we_are_removed:
            if not external:
                replaced = tree.leaf(committer)
            elif applied.removed:
                # RFC 9420 §12.2: a resync's new leaf "MUST meet the same
                # criteria as would the LeafNode in an Update for the removed
                # leaf".
                replaced = self._epoch.tree.leaf(applied.removed[0])
            else:
                replaced = None
            self._validate_path_leaf(commit.path.leaf_node, replaced, committer, applied, now)
            provisional = replace(
                epoch.context, epoch=epoch.context.epoch + 1, extensions=applied.extensions
            )
            processed = process_update_path(
                tree,
                private,
                sender=committer,
                update_path=commit.path,
                group_context=provisional,
                excluded_leaves=[leaf for leaf, _ in applied.added],
                # _validate_path_leaf has just verified it (as committer, in this group).
                leaf_signature_verified=True,
            )
            tree, private, commit_secret = (
                processed.tree,
                processed.private,
                processed.commit_secret,
            )
        elif commit.path is not None:
            tree = merge_update_path(tree, committer, commit.path, group_id=self.group_id)

        if we_are_removed:
            # A removed member cannot derive the next epoch (it holds no
            # path secret); it only learns that it is out.
            return StagedCommit(
                epoch=epoch.context.epoch + 1,
                committer=committer,
                added=tuple(leaf for leaf, _ in applied.added),
                removed=applied.removed,
                updated=applied.updated,
                own=False,
                we_are_removed=True,
                reinit=applied.reinit is not None,
                _next=epoch,
                _previous_epoch=epoch.context.epoch,
            )
        next_epoch = self._next_epoch(
            signed=auth,
            tree=tree,
            private=private,
            extensions=applied.extensions,
            init_secret=init_secret,
            commit_secret=commit_secret,
            psk=psk,
            own_leaf=own_leaf,
            received_tag=auth.confirmation_tag,
            content_bytes=content_bytes,
        )
        return StagedCommit(
            epoch=next_epoch.context.epoch,
            committer=committer,
            added=tuple(leaf for leaf, _ in applied.added),
            removed=applied.removed,
            updated=applied.updated,
            own=False,
            we_are_removed=False,
            reinit=applied.reinit is not None,
            _next=next_epoch,
            _previous_epoch=epoch.context.epoch,
            covered=tuple(items),
        )

    def _removed_credential(self, applied: AppliedProposals) -> Credential | None:
        if not applied.removed:
            return None
        leaf = self._epoch.tree.leaf(applied.removed[0])
        return None if leaf is None else leaf.credential

    def _validate_path_leaf(
        self,
        leaf: LeafNode,
        current: LeafNode | None,
        committer: LeafIndex,
        applied: AppliedProposals,
        now: int | None,
    ) -> None:
        # RFC 9420 §12.4.2: "Validate the LeafNode as specified in Section 7.3.
        # The leaf_node_source field MUST be set to commit." and "Verify that
        # the encryption_key value in the LeafNode is different from the
        # committer's current leaf node."
        # ``current`` is the leaf the path leaf replaces: the committer's own,
        # or for an external commit the leaf a resync removes (None otherwise).
        in_use, supported = credential_types(applied.tree)
        validate_leaf_node(
            self._suite,
            leaf,
            source=LeafNodeSource.COMMIT,
            group_id=self.group_id,
            leaf_index=committer,
            credential_validator=self._config.credential_validator,
            required_capabilities=required_capabilities(applied.extensions),
            credential_types_in_use=in_use,
            credential_types_supported=supported,
            replaced_encryption_key=None if current is None else current.encryption_key,
            now=now,
            group_context_extensions=applied.extensions,
        )
        # RFC 9420 §7.3: "Verify that the following fields are unique among the
        # members of the group: signature_key, encryption_key." The committer
        # may keep its own signature key; it may not take another member's.
        kept = None if current is None else current.signature_key
        if leaf.signature_key != kept and applied.tree.has_signature_key(leaf.signature_key):
            raise DuplicateKey("the UpdatePath's leaf reuses another member's signature key")

    def merge(self, staged: StagedCommit) -> None:
        """
        Make a staged commit's epoch current (RFC 9420 §12.4.2, last step).

        :param staged: a commit returned by :meth:`process` or :meth:`commit` for this epoch.
        :raises WrongEpoch: if the group has moved on since it was staged.
        :raises UsageError: if we were removed by it (the group has ended for us).
        """
        if staged._previous_epoch != self.epoch:
            raise WrongEpoch("the staged commit is for another epoch")
        if staged.we_are_removed:
            raise UsageError("we were removed by this commit; the group is over for us")
        # RFC 9420 §12.4.2: "If the Commit included a ReInit proposal, the
        # client MUST NOT use the group to send messages anymore."
        self._reinitialized = staged.reinit
        old = self._epoch
        self._past[old.context.epoch] = _PastEpoch(
            old.context, old.tree, self._secret_tree, old.secrets.sender_data_secret
        )
        while len(self._past) > self._config.max_past_epochs:
            del self._past[min(self._past)]
        new = staged._next
        self._epoch = new
        self._secret_tree = SecretTree(
            self._suite, new.secrets.encryption_secret, new.tree.leaf_count
        )
        self._proposals.clear()
        self._pending_updates.clear()
        self._pending_commit = None
        self._resumption_psks[new.context.epoch] = new.secrets.resumption_psk
        while len(self._resumption_psks) > self._config.max_resumption_psks:
            del self._resumption_psks[min(self._resumption_psks)]

    def discard_pending_commit(self) -> None:
        """
        Forget our pending commit (the delivery service chose another).
        """
        self._pending_commit = None

    # -- External commits --------------------------------------------------------

    @classmethod
    def join_external(
        cls,
        group_info_message: bytes,
        *,
        credential: Credential,
        signature_private_key: bytes,
        rng: Rng,
        ratchet_tree: bytes | None = None,
        resync_leaf: LeafIndex | None = None,
        config: GroupConfig | None = None,
        authenticated_data: bytes = b"",
        now: int | None = None,
        capabilities: Capabilities | None = None,
    ) -> ExternalJoin:
        """
        Join by external commit from a published GroupInfo (RFC 9420 §12.4.3.2).

        :param group_info_message: the MLSMessage(GroupInfo) bytes (with ``external_pub``).
        :param credential: our credential.
        :param signature_private_key: our signature key.
        :param rng: the randomness source.
        :param ratchet_tree: the encoded tree if the GroupInfo does not carry it.
        :param resync_leaf: our old leaf to remove (a resync, RFC 9420 §12.4.3.2).
        :param config: the group's policy.
        :param authenticated_data: data authenticated with the commit.
        :param now: seconds since the epoch, for leaf lifetimes.
        :param capabilities: our new leaf's capabilities (default: the suite's, with no
            non-default extensions); they must cover the group's GroupContext extensions
            (RFC 9420 §7.2, §12.1.7).
        :returns: the commit to send and the group it leads to once accepted.
        :raises ProtocolError: (a subclass) if the GroupInfo or tree is invalid.
        """
        config = config or GroupConfig()
        message = MLSMessage.decode(group_info_message)
        if not isinstance(message.body, GroupInfo):
            raise InvalidContentType("expected an MLSMessage(GroupInfo)")
        group_info = message.body
        context = group_info.group_context
        suite = get_cipher_suite(context.cipher_suite)
        tree = cls._tree_from(suite, group_info, ratchet_tree)
        cls._verify_joined_tree(suite, tree, group_info, config, now)
        external = find_extension(group_info.extensions, ExtensionType.EXTERNAL_PUB)
        if external is None:
            raise GroupInfoMismatch("the GroupInfo has no external_pub")
        external_pub = ExternalPub.decode(external.extension_data).external_pub
        # RFC 9420 §8.3: "kem_output, context = SetupBaseS(external_pub, "");
        # init_secret = context.export("MLS 1.0 external init secret", KDF.Nh)".
        kem_output, init_secret = suite.hpke_export_sender(
            external_pub, b"", EXTERNAL_INIT_LABEL, suite.hash_length, rng
        )
        proposals: list[Proposal] = [ExternalInit(kem_output)]
        if resync_leaf is not None:
            proposals.append(Remove(resync_leaf))
        sender = NewMemberCommitSender()
        items = [SenderProposal(p, sender) for p in proposals]
        applied = apply_proposals(
            suite,
            tree,
            context,
            items,
            committer=None,
            credential_validator=config.credential_validator,
            now=now,
        )
        leaf_private, leaf_public = suite.hpke_generate_key_pair(rng)
        template = LeafNode(
            encryption_key=leaf_public,
            signature_key=suite.signature_public_key(signature_private_key),
            credential=credential,
            capabilities=capabilities or default_capabilities(suite),
            leaf_node_source=LeafNodeSource.COMMIT,
            parent_hash=b"",
        )
        new_tree = applied.tree.copy()
        own_leaf = new_tree.add_leaf(template)
        private = TreeKEMPrivate(suite, own_leaf, leaf_private)
        provisional = replace(context, epoch=context.epoch + 1, extensions=applied.extensions)
        created = create_update_path(
            new_tree,
            private,
            group_context=provisional,
            signature_private_key=signature_private_key,
            rng=rng,
            leaf_node=template,
        )
        commit = Commit(tuple(proposals), created.update_path)
        content = FramedContent(
            group_id=context.group_id,
            epoch=context.epoch,
            sender=sender,
            authenticated_data=authenticated_data,
            content=commit,
        )
        signed = authenticate_content(
            suite,
            content,
            wire_format=WireFormat.MLS_PUBLIC_MESSAGE,
            signature_private_key=signature_private_key,
            group_context=context,
            confirmation_tag=b"",
        )
        interim = interim_transcript_hash(
            suite, context.confirmed_transcript_hash, group_info.confirmation_tag
        )
        confirmed = confirmed_transcript_hash(suite, interim, signed)
        new_context = GroupContext(
            cipher_suite=suite.suite_id,
            group_id=context.group_id,
            epoch=context.epoch + 1,
            tree_hash=created.tree.root_tree_hash(),
            confirmed_transcript_hash=confirmed,
            extensions=applied.extensions,
        )
        secrets = derive_epoch_secrets(
            suite,
            init_secret=init_secret,
            commit_secret=created.commit_secret,
            psk_secret=None,
            group_context=new_context,
        )
        tag = confirmation_tag(suite, secrets.confirmation_key, confirmed)
        auth = replace(signed, confirmation_tag=tag)
        public = protect_public(suite, auth, membership_key=b"", group_context=context)
        epoch = _Epoch(
            context=new_context,
            tree=created.tree,
            private=created.private,
            secrets=secrets,
            interim_transcript_hash=interim_transcript_hash(suite, confirmed, tag),
            confirmation_tag=tag,
            own_leaf=own_leaf,
        )
        group = cls(
            suite=suite,
            epoch=epoch,
            signature_private_key=signature_private_key,
            config=config,
        )
        return ExternalJoin(commit=_mls_message(public), group=group)


def _covers(node: NodeIndex, leaf: LeafIndex) -> bool:
    # Whether ``node``'s subtree holds ``leaf``: a node at level k spans the
    # 2^k leaves whose node indices lie within 2^k - 1 of it.
    k = level(node)
    return abs(int(leaf_to_node(leaf)) - int(node)) < (1 << k)
