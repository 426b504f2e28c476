"""
Validating a commit's list of proposals and applying it to a tree (RFC 9420 §12.1-§12.3).

Both the full group and the relay's public view run this module: nothing
here needs a group secret. The flow::

    resolved proposals (each with its sender)
      ──► each proposal on its own (§12.1.1-§12.1.7)
      ──► the list as a whole (§12.2, or §12.4.3.2 for an external commit)
      ──► applied to a copy of the tree in the order of §12.3:
          GroupContextExtensions, Updates, Removes, Adds
      ──► AppliedProposals (the new tree and extensions, who joined and left,
          the PSKs and ExternalInit for the key schedule)

The input tree is never changed, so a rejected list changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from townsquare.mls.errors import (
    CommitterUpdateOrRemove,
    ConflictingLeafChanges,
    DuplicateKey,
    DuplicateMember,
    DuplicatePSK,
    InvalidExternalCommit,
    InvalidProposal,
    InvalidSender,
    MultipleGroupContextExtensions,
    ProposalNotAllowed,
    ReInitNotAlone,
    UnsupportedCapability,
    UnsupportedProposal,
)
from townsquare.mls.extensions import Extension, RequiredCapabilities, find_extension
from townsquare.mls.framing import (
    ExternalSenderRef,
    MemberSender,
    NewMemberCommitSender,
    NewMemberProposalSender,
    Sender,
)
from townsquare.mls.key_package import KeyPackage, validate_key_package
from townsquare.mls.leaf_node import (
    DEFAULT_EXTENSION_TYPES,
    DEFAULT_PROPOSAL_TYPES,
    CredentialValidator,
    check_extension_types_unique,
    validate_leaf_node,
)
from townsquare.mls.proposals import (
    Add,
    ExternalInit,
    GroupContextExtensions,
    PreSharedKey,
    Proposal,
    ReInit,
    Remove,
    Update,
    proposal_type,
)
from townsquare.mls.psk import PreSharedKeyID
from townsquare.mls.registries import (
    ExtensionType,
    LeafNodeSource,
    ProposalType,
    PSKType,
    ResumptionPSKUsage,
)
from townsquare.mls.tree_math import LeafIndex

if TYPE_CHECKING:
    from townsquare.mls.ciphersuite import CipherSuite
    from townsquare.mls.group_context import GroupContext
    from townsquare.mls.ratchet_tree import RatchetTree

__all__ = [
    "PATH_REQUIRED_TYPES",
    "AppliedProposals",
    "SenderProposal",
    "apply_proposals",
    "credential_types",
    "path_required",
    "required_capabilities",
]

# RFC 9420 §17.4: the registry's "Path Required" column. A commit covering any
# of these (or covering nothing) must carry an UpdatePath (§12.4).
PATH_REQUIRED_TYPES = frozenset(
    (
        ProposalType.UPDATE,
        ProposalType.REMOVE,
        ProposalType.EXTERNAL_INIT,
        ProposalType.GROUP_CONTEXT_EXTENSIONS,
    )
)


@dataclass(frozen=True, slots=True)
class SenderProposal:
    """
    A proposal a commit covers, with who proposed it (the committer for proposals by value).
    """

    proposal: Proposal
    sender: Sender


@dataclass(frozen=True, slots=True, kw_only=True)
class AppliedProposals:
    """
    The result of applying a valid proposal list (RFC 9420 §12.3).
    """

    tree: RatchetTree = field(repr=False)
    extensions: tuple[Extension, ...]
    added: tuple[tuple[LeafIndex, KeyPackage], ...]
    removed: tuple[LeafIndex, ...]
    updated: tuple[LeafIndex, ...]
    psks: tuple[PreSharedKeyID, ...]
    external_init: ExternalInit | None
    reinit: ReInit | None
    path_required: bool


def path_required(proposals: Sequence[Proposal]) -> bool:
    """
    :returns: whether a commit covering ``proposals`` must carry a path (RFC 9420 §12.4).
    """
    # RFC 9420 §12.4: "the path field MUST be populated if the Commit covers at
    # least one Update or Remove proposal", an ExternalInit or a
    # GroupContextExtensions, or "if it's an empty commit".
    return not proposals or any(proposal_type(p) in PATH_REQUIRED_TYPES for p in proposals)


def required_capabilities(extensions: Sequence[Extension]) -> RequiredCapabilities | None:
    """
    :returns: the decoded required_capabilities extension among ``extensions``, if any.
    :raises DecodeError: if it does not decode.
    """
    found = find_extension(extensions, ExtensionType.REQUIRED_CAPABILITIES)
    return None if found is None else RequiredCapabilities.decode(found.extension_data)


def credential_types(tree: RatchetTree) -> tuple[frozenset[int], frozenset[int] | None]:
    """
    :returns: the credential types members use, and those every member supports
        (``None`` for an empty tree), from the tree's running census.
    """
    return tree.credential_census()


def _leaf_of(sender: Sender) -> LeafIndex | None:
    return LeafIndex(sender.leaf_index) if isinstance(sender, MemberSender) else None


def _check_sender(item: SenderProposal, *, external_commit: bool) -> None:
    kind = proposal_type(item.proposal)
    sender = item.sender
    if isinstance(sender, NewMemberProposalSender) and kind != ProposalType.ADD:
        # RFC 9420 §12.1.8: a new_member_proposal sender "MUST only be used
        # for ... an Add proposal".
        raise InvalidSender("a new member may propose only its own Add")
    if isinstance(sender, ExternalSenderRef) and kind not in (
        ProposalType.ADD,
        ProposalType.REMOVE,
        ProposalType.PSK,
        ProposalType.REINIT,
        ProposalType.GROUP_CONTEXT_EXTENSIONS,
    ):
        # RFC 9420 §12.1.8.1: external senders may propose only these types.
        raise InvalidSender(f"an external sender may not propose {kind.name}")
    if isinstance(sender, NewMemberCommitSender) and not external_commit:
        raise InvalidSender("a new_member_commit sender outside an external commit")


def _check_psk(suite: CipherSuite, psk: PreSharedKeyID) -> None:
    # RFC 9420 §12.1.4: "A PreSharedKey proposal is invalid if ... The psktype
    # in the PreSharedKeyID struct is set to resumption and the usage is
    # reinit or branch" and "The psk_nonce is not of length KDF.Nh".
    if psk.psktype == PSKType.RESUMPTION and psk.usage != ResumptionPSKUsage.APPLICATION:
        raise InvalidProposal("a PreSharedKey proposal's resumption usage must be application")
    if len(psk.psk_nonce) != suite.hash_length:
        raise InvalidProposal(f"psk_nonce is {len(psk.psk_nonce)} bytes, not {suite.hash_length}")


def _check_new_extensions(tree: RatchetTree, extensions: Sequence[Extension]) -> None:
    # RFC 9420 §12.1.7: "A GroupContextExtensions proposal is invalid if it
    # includes a required_capabilities extension and some members of the group
    # do not support some of the required capabilities"; §13.4: "an extension
    # in use by the group MUST be supported by all members of the group."
    required = required_capabilities(extensions)
    for leaf_index, leaf in tree.leaves():
        listed = set(leaf.capabilities.extensions) | DEFAULT_EXTENSION_TYPES
        for extension in extensions:
            if extension.extension_type not in listed:
                raise UnsupportedCapability(
                    f"member {leaf_index} does not support extension {extension.extension_type}"
                )
        if required is not None:
            caps = leaf.capabilities
            if (
                set(required.extension_types) - set(caps.extensions) - DEFAULT_EXTENSION_TYPES
                or set(required.proposal_types) - set(caps.proposals) - DEFAULT_PROPOSAL_TYPES
                or set(required.credential_types) - set(caps.credentials)
            ):
                raise UnsupportedCapability(f"member {leaf_index} lacks required capabilities")


def apply_proposals(
    suite: CipherSuite,
    tree: RatchetTree,
    context: GroupContext,
    proposals: Sequence[SenderProposal],
    *,
    committer: LeafIndex | None,
    credential_validator: CredentialValidator,
    now: int | None = None,
) -> AppliedProposals:
    """
    Validate a commit's proposals (RFC 9420 §12.1, §12.2) and apply them to a copy of the tree.

    :param suite: the group's cipher suite.
    :param tree: the current tree; it is not changed.
    :param context: the current GroupContext.
    :param proposals: the proposals the commit covers, in its order, with their senders.
    :param committer: the committer's leaf, or ``None`` for an external commit (§12.4.3.2).
    :param credential_validator: the application's credential check.
    :param now: seconds since the epoch, for lifetimes (``None`` skips the check).
    :returns: the new tree and what changed.
    :raises ProposalError: (a subclass) if a proposal or the list is invalid.
    :raises InvalidExternalCommit: if an external commit's list breaks §12.4.3.2.
    :raises InvalidSender: if a sender may not make a proposal it made.
    :raises InvalidLeafNode: (a subclass) if an Add's or Update's leaf is invalid.
    :raises KeyPackageError: (a subclass) if an Add's KeyPackage is invalid.
    :raises InvalidSignature: if a KeyPackage or leaf signature does not verify.
    :raises DuplicateKey: if a new leaf reuses a key already in the tree.
    :raises DuplicateExtension: if a GroupContextExtensions proposal, KeyPackage or leaf
        lists two extensions of one type.
    """
    external = committer is None
    kinds = [proposal_type(item.proposal) for item in proposals]
    for item in proposals:
        _check_sender(item, external_commit=external)

    if external:
        # RFC 9420 §12.4.3.2: an external commit MUST contain "Exactly one
        # ExternalInit", "At most one Remove proposal, with which the joiner
        # removes an old version of themselves", zero or more PreSharedKey
        # proposals, and "No other proposals".
        if kinds.count(ProposalType.EXTERNAL_INIT) != 1:
            raise InvalidExternalCommit("an external commit needs exactly one ExternalInit")
        if kinds.count(ProposalType.REMOVE) > 1:
            raise InvalidExternalCommit("an external commit may remove at most one leaf")
        allowed = {ProposalType.EXTERNAL_INIT, ProposalType.REMOVE, ProposalType.PSK}
        if any(kind not in allowed for kind in kinds):
            raise InvalidExternalCommit(
                "an external commit may cover only ExternalInit, Remove, PSK"
            )
    elif ProposalType.EXTERNAL_INIT in kinds:
        # RFC 9420 §12.2: invalid if "It contains an ExternalInit proposal."
        raise ProposalNotAllowed("only an external commit may cover an ExternalInit")

    # RFC 9420 §12.2: invalid if "It contains a ReInit proposal together with
    # any other proposal."
    if ProposalType.REINIT in kinds and len(kinds) > 1:
        raise ReInitNotAlone("a ReInit must be the only proposal of its commit")
    # RFC 9420 §12.2: invalid if "It contains multiple GroupContextExtensions
    # proposals."
    if kinds.count(ProposalType.GROUP_CONTEXT_EXTENSIONS) > 1:
        raise MultipleGroupContextExtensions("more than one GroupContextExtensions proposal")

    # RFC 9420 §12.2: invalid if "It contains a Proposal with a non-default
    # proposal type that is not supported by some members of the group".
    for kind in kinds:
        if kind not in DEFAULT_PROPOSAL_TYPES:
            raise UnsupportedProposal(f"proposal type {kind} is not supported")

    extensions = context.extensions
    gce = [i.proposal for i in proposals if isinstance(i.proposal, GroupContextExtensions)]
    if gce:
        extensions = gce[0].extensions
        check_extension_types_unique(extensions)
    required = required_capabilities(extensions)

    changed_leaves: set[LeafIndex] = set()
    updates: list[tuple[LeafIndex, Update]] = []
    removes: list[LeafIndex] = []
    for item in proposals:
        proposal = item.proposal
        if isinstance(proposal, Update):
            leaf_index = _leaf_of(item.sender)
            if leaf_index is None:
                raise InvalidSender("an Update must come from a member")
            # RFC 9420 §12.2: invalid if "It contains an Update proposal
            # generated by the committer."
            if leaf_index == committer:
                raise CommitterUpdateOrRemove("the committer cannot commit its own Update")
            if leaf_index in changed_leaves:
                raise ConflictingLeafChanges(f"leaf {leaf_index} is updated or removed twice")
            changed_leaves.add(leaf_index)
            updates.append((leaf_index, proposal))
        elif isinstance(proposal, Remove):
            removed = LeafIndex(proposal.removed)
            # RFC 9420 §12.1.3: "A Remove proposal is invalid if the removed
            # field does not identify a non-blank leaf node."
            if removed >= tree.leaf_count or tree.leaf(removed) is None:
                raise InvalidProposal(f"Remove names leaf {removed}, which holds no member")
            # RFC 9420 §12.2: invalid if "It contains a Remove proposal that
            # removes the committer."
            if removed == committer:
                raise CommitterUpdateOrRemove("the committer cannot remove itself")
            if removed in changed_leaves:
                raise ConflictingLeafChanges(f"leaf {removed} is updated or removed twice")
            changed_leaves.add(removed)
            removes.append(removed)

    # RFC 9420 §12.2: invalid if "It contains multiple PreSharedKey proposals
    # that reference the same PreSharedKeyID."
    psks: list[PreSharedKeyID] = []
    for item in proposals:
        if isinstance(item.proposal, PreSharedKey):
            _check_psk(suite, item.proposal.psk)
            if item.proposal.psk in psks:
                raise DuplicatePSK("two PreSharedKey proposals name the same PSK")
            psks.append(item.proposal.psk)

    in_use, supported = credential_types(tree)
    # The input tree is never changed: it is copied when a proposal changes it,
    # and handed back as it is otherwise (callers copy before they mutate).
    changes_tree = bool(updates or removes) or any(isinstance(i.proposal, Add) for i in proposals)
    new_tree = tree.copy() if changes_tree else tree
    # RFC 9420 §12.3: apply Updates, then Removes, then Adds.
    for leaf_index, update in updates:
        old = tree.leaf(leaf_index)
        if old is None:
            raise InvalidProposal(f"Update from leaf {leaf_index}, which holds no member")
        validate_leaf_node(
            suite,
            update.leaf_node,
            source=LeafNodeSource.UPDATE,
            group_id=context.group_id,
            leaf_index=leaf_index,
            credential_validator=credential_validator,
            required_capabilities=required,
            credential_types_in_use=in_use,
            credential_types_supported=supported,
            replaced_encryption_key=old.encryption_key,
            now=now,
            group_context_extensions=extensions,
        )
        _check_unique(
            new_tree,
            update.leaf_node.encryption_key,
            update.leaf_node.signature_key,
            replacing=old.signature_key,
        )
        new_tree.update_leaf(leaf_index, update.leaf_node)
    for removed in removes:
        new_tree.remove_leaf(removed)
    if gce:
        # RFC 9420 §12.1.7: the proposal is invalid if "some members of the
        # group do not support some of the required capabilities (including
        # those added in the same Commit, and excluding those removed)". So the
        # members who stay are checked here, after Updates and Removes; the
        # Adds below are checked against the new extensions one by one.
        _check_new_extensions(new_tree, extensions)

    added: list[tuple[LeafIndex, KeyPackage]] = []
    added_signature_keys: set[bytes] = set()
    for item in proposals:
        if not isinstance(item.proposal, Add):
            continue
        key_package = item.proposal.key_package
        validate_key_package(
            suite,
            key_package,
            credential_validator=credential_validator,
            required_capabilities=required,
            credential_types_in_use=in_use,
            credential_types_supported=supported,
            now=now,
            group_context_extensions=extensions,
        )
        leaf = key_package.leaf_node
        # RFC 9420 §12.2: invalid if "It contains multiple Add proposals that
        # contain KeyPackages that represent the same client" or "an Add
        # proposal with a KeyPackage that represents a client already in the
        # group ... unless there is a Remove proposal ... removing the matching
        # client". Townsquare choice: a client is its signature key.
        if leaf.signature_key in added_signature_keys or new_tree.has_signature_key(
            leaf.signature_key
        ):
            raise DuplicateMember("an Add names a client that is already a member")
        added_signature_keys.add(leaf.signature_key)
        _check_unique(new_tree, leaf.encryption_key, None, replacing=None)
        if new_tree.has_encryption_key(key_package.init_key):
            raise DuplicateKey("an Add's init_key is already a key in the tree")
        added.append((new_tree.add_leaf(leaf), key_package))

    external_init = next(
        (i.proposal for i in proposals if isinstance(i.proposal, ExternalInit)), None
    )
    reinit = next((i.proposal for i in proposals if isinstance(i.proposal, ReInit)), None)
    return AppliedProposals(
        tree=new_tree,
        extensions=extensions,
        added=tuple(added),
        removed=tuple(removes),
        updated=tuple(leaf for leaf, _ in updates),
        psks=tuple(psks),
        external_init=external_init,
        reinit=reinit,
        path_required=path_required([i.proposal for i in proposals]),
    )


def _check_unique(
    tree: RatchetTree,
    encryption_key: bytes,
    signature_key: bytes | None,
    *,
    replacing: bytes | None,
) -> None:
    # RFC 9420 §7.3: "Verify that the following fields are unique among the
    # members of the group: signature_key, encryption_key."
    if tree.has_encryption_key(encryption_key):
        raise DuplicateKey("a new leaf's encryption key is already in the tree")
    if (
        signature_key is not None
        and signature_key != replacing
        and tree.has_signature_key(signature_key)
    ):
        raise DuplicateKey("a new leaf's signature key is already in the tree")
