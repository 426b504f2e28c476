"""
One test per validation rule of RFC 9420 that a receiver applies (docs/mls-rules.md).

Each test builds an input that breaks exactly one rule: everything that must
stay valid (signatures, membership tags, confirmation tags, parent hashes,
path encryption) is recomputed, so the check under test is the one that
fires. Each asserts the exact error class and that nothing changed: a
``Group``'s epoch, epoch authenticator, tree hash and held proposals, or a
pure function's inputs.

Tests are named ``test_<id>_<rule>`` after the rule ids of docs/mls-rules.md.
Group state is built with the public API and a seeded rng; the forging
helpers below reach into a group's private state only to sign and MAC as its
member would.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import pytest

from townsquare.mls.ciphersuite import CipherSuiteId, Rng, get_cipher_suite
from townsquare.mls.commit import Commit, ProposalOrRef, ProposalRef
from townsquare.mls.credentials import BasicCredential, Credential, X509Credential
from townsquare.mls.errors import (
    CommitterUpdateOrRemove,
    ConfirmationTagMismatch,
    ConflictingLeafChanges,
    DuplicateExtension,
    DuplicateKey,
    DuplicateMember,
    DuplicatePSK,
    EncryptionKeyNotUpdated,
    GenerationError,
    GroupInfoMismatch,
    InitKeyReused,
    InvalidContentType,
    InvalidCredential,
    InvalidExternalCommit,
    InvalidPadding,
    InvalidProposal,
    InvalidSender,
    InvalidSignature,
    InvalidTreeShape,
    InvalidUnmergedLeaves,
    KeyPackageMismatch,
    LeafNodeSourceMismatch,
    LifetimeInvalid,
    MembershipTagMismatch,
    MissingRatchetTree,
    MultipleGroupContextExtensions,
    NoMatchingKeyPackage,
    NotOurCommit,
    OwnLeafNotFound,
    ParentHashMismatch,
    PathError,
    PathRequired,
    PrivateKeyMismatch,
    ProposalNotAllowed,
    PSKError,
    ReInitNotAlone,
    TreeHashMismatch,
    UnknownEnumValue,
    UnknownProposalRef,
    UnknownVariant,
    UnsupportedCapability,
    UsageError,
    WrongEpoch,
    WrongGroup,
)
from townsquare.mls.extensions import Extension, RequiredCapabilities, find_extension
from townsquare.mls.framing import (
    ApplicationData,
    AuthenticatedContent,
    ExternalSenderRef,
    FramedContent,
    MemberSender,
    MLSMessage,
    NewMemberCommitSender,
    NewMemberProposalSender,
    PrivateContentAAD,
    PrivateMessage,
    PublicMessage,
    Sender,
    SenderData,
    SenderDataAAD,
)
from townsquare.mls.group import (
    EXTERNAL_INIT_LABEL,
    Group,
    GroupConfig,
    ProposalReceived,
    StagedCommit,
)
from townsquare.mls.group_context import GroupContext
from townsquare.mls.key_package import (
    KeyPackage,
    KeyPackageBundle,
    default_capabilities,
    generate_key_package,
    key_package_ref,
    validate_key_package,
)
from townsquare.mls.key_schedule import (
    confirmation_tag,
    derive_epoch_secrets,
    derive_epoch_secrets_from_joiner,
    external_key_pair,
    welcome_secret,
)
from townsquare.mls.leaf_node import (
    Capabilities,
    CredentialValidator,
    LeafNode,
    Lifetime,
    accept_any_credential,
    sign_leaf_node,
    validate_leaf_node,
)
from townsquare.mls.private_message import (
    PrivateMessageContent,
    apply_reuse_guard,
    encode_private_message_content,
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
)
from townsquare.mls.psk import PreSharedKeyID, psk_secret
from townsquare.mls.public_message import framed_content_tbs, membership_tag
from townsquare.mls.ratchet_tree import ParentNode, RatchetTree, RatchetTreeNodes
from townsquare.mls.registries import (
    ExtensionType,
    LeafNodeSource,
    ProtocolVersion,
    PSKType,
    ResumptionPSKUsage,
    WireFormat,
)
from townsquare.mls.secret_tree import ratchet_kind_for, sender_data_key_nonce
from townsquare.mls.transcript import confirmed_transcript_hash
from townsquare.mls.tree_math import LeafIndex, NodeIndex, leaf_to_node
from townsquare.mls.treekem import TreeKEMPrivate, create_update_path
from townsquare.mls.update_path import HPKECiphertext, UpdatePath, UpdatePathNode
from townsquare.mls.welcome import (
    GroupInfo,
    GroupSecrets,
    PathSecret,
    Welcome,
    decrypt_group_info,
    decrypt_group_secrets,
    encrypt_group_info,
    encrypt_group_secrets,
    sign_group_info,
)

SUITE = get_cipher_suite(CipherSuiteId.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519)
GROUP_ID = b"townsquare rules"
FOREVER = Lifetime(not_before=0, not_after=2**64 - 1)
#: A non-default extension type (private use, RFC 9420 §17.3), not a GREASE value.
CUSTOM_EXTENSION = 0xF0F1
#: A proposal type no member supports (a GREASE value, RFC 9420 §13.5).
UNKNOWN_PROPOSAL_TYPE = 0x0A0A
PSK_ID = PreSharedKeyID(psktype=PSKType.EXTERNAL, psk_id=b"shared", psk_nonce=bytes(32))
PSK_VALUE = b"\x07" * 32


# -- Deterministic inputs ------------------------------------------------------


def rng_for(seed: bytes) -> Rng:
    """
    A deterministic rng: SHA-256 of the seed and a block counter, one block per 32 bytes.
    """
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
def signature_pair(name: bytes) -> tuple[bytes, bytes]:
    return SUITE.generate_signature_key_pair(rng_for(b"signature key " + name))


def key_package_seed(name: bytes, variant: bytes) -> bytes:
    return b"key package " + name + b"/" + variant


@functools.cache
def bundle(
    name: bytes,
    *,
    variant: bytes = b"",
    capabilities: Capabilities | None = None,
    lifetime: Lifetime = FOREVER,
    leaf_extensions: tuple[Extension, ...] = (),
    extensions: tuple[Extension, ...] = (),
) -> KeyPackageBundle:
    """
    The KeyPackage of client ``name`` (its signature key depends on the name only).
    """
    private_key, _ = signature_pair(name)
    return generate_key_package(
        SUITE,
        credential=BasicCredential(name),
        signature_private_key=private_key,
        rng=rng_for(key_package_seed(name, variant)),
        lifetime=lifetime,
        capabilities=capabilities,
        leaf_extensions=leaf_extensions,
        extensions=extensions,
    )


def encryption_key_ikm(name: bytes, variant: bytes = b"") -> bytes:
    # generate_key_package draws the init key pair first, then the leaf's
    # encryption key pair, each as DeriveKeyPair(rng(Nsk)) with Nsk = 32.
    rng = rng_for(key_package_seed(name, variant))
    rng(32)
    return rng(32)


def capabilities_with(*extensions: int) -> Capabilities:
    return default_capabilities(SUITE, extensions=extensions)


def sign_leaf(
    leaf: LeafNode, signer: bytes, *, group_id: bytes | None = None, leaf_index: int | None = None
) -> LeafNode:
    return sign_leaf_node(SUITE, leaf, signer, group_id=group_id, leaf_index=leaf_index)


def sign_key_package(key_package: KeyPackage, signer: bytes) -> KeyPackage:
    signature = SUITE.sign_with_label(signer, b"KeyPackageTBS", key_package.to_be_signed())
    return replace(key_package, signature=signature)


def flip(data: bytes) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:]


def fresh_hpke_key(seed: bytes) -> bytes:
    return SUITE.hpke_generate_key_pair(rng_for(seed))[1]


# -- Groups ----------------------------------------------------------------------


ALICE, BOB, CAROL, DAVE = b"alice", b"bob", b"carol", b"dave"


def make_group(
    *members: KeyPackageBundle,
    configs: Sequence[GroupConfig | None] = (),
    extensions: tuple[Extension, ...] = (),
    force_path: bool = True,
) -> list[Group]:
    """
    The first member creates a group and adds the others in one commit; they join.

    With ``force_path`` (the default) the commit carries a path, so the tree
    has parent nodes and the Welcome a path secret. Default members: alice,
    bob and carol, at leaves 0, 1 and 2 of a four-leaf tree (leaf 3 blank).
    """
    members = members or (bundle(ALICE), bundle(BOB), bundle(CAROL))
    config_of = [*configs, *[None] * len(members)]
    creator = Group.create(
        members[0],
        group_id=GROUP_ID,
        rng=rng_for(b"create"),
        extensions=extensions,
        config=config_of[0],
    )
    pending = creator.commit(
        rng=rng_for(b"add"),
        proposals=[Add(member.key_package) for member in members[1:]],
        force_path=force_path,
    )
    creator.merge(pending.staged)
    assert pending.welcome is not None
    joined = [
        Group.join(pending.welcome, member, config=config_of[i + 1])
        for i, member in enumerate(members[1:])
    ]
    return [creator, *joined]


def state(group: Group) -> tuple[object, ...]:
    return (group.epoch, group.epoch_authenticator, group.tree_hash, group.pending_proposals)


def assert_rejects(
    group: Group, message: bytes, error: type[Exception], *, now: int | None = None
) -> None:
    """
    ``group`` refuses ``message`` with exactly ``error`` and is left as it was.
    """
    before = state(group)
    with pytest.raises(error) as caught:
        group.process(message, now=now)
    assert type(caught.value) is error, f"raised {type(caught.value).__name__}: {caught.value}"
    assert state(group) == before


def assert_raises_exactly(error: type[Exception], call: Callable[[], object]) -> None:
    with pytest.raises(error) as caught:
        call()
    assert type(caught.value) is error, f"raised {type(caught.value).__name__}: {caught.value}"


# -- Forging messages --------------------------------------------------------------


def sign_content(
    content: FramedContent,
    signer: bytes,
    *,
    context: GroupContext | None,
    wire_format: WireFormat = WireFormat.MLS_PUBLIC_MESSAGE,
) -> bytes:
    """
    SignWithLabel(., "FramedContentTBS", ...) without the sender-type checks of the real signer.
    """
    tbs = framed_content_tbs(content, wire_format=wire_format, group_context=context)
    return SUITE.sign_with_label(signer, b"FramedContentTBS", tbs.encode())


def public_message(
    content: FramedContent,
    signer: bytes,
    *,
    context: GroupContext,
    membership_key: bytes = b"",
    confirmation_tag: bytes | None = None,
) -> bytes:
    signature = sign_content(content, signer, context=context)
    tag = None
    if isinstance(content.sender, MemberSender):
        auth = AuthenticatedContent(
            wire_format=WireFormat.MLS_PUBLIC_MESSAGE,
            content=content,
            signature=signature,
            confirmation_tag=confirmation_tag,
        )
        tag = membership_tag(SUITE, auth, membership_key=membership_key, group_context=context)
    message = PublicMessage(
        content=content, signature=signature, confirmation_tag=confirmation_tag, membership_tag=tag
    )
    return MLSMessage(ProtocolVersion.MLS10, message).encode()


def member_message(
    sender: Group,
    body: Proposal | Commit | ApplicationData,
    *,
    group_id: bytes | None = None,
    epoch: int | None = None,
    sender_leaf: int | None = None,
    membership_key: bytes | None = None,
    signer: bytes | None = None,
    confirmation_tag: bytes | None = None,
) -> bytes:
    """
    A PublicMessage from ``sender``'s leaf, signed and MACed as that member would.
    """
    content = FramedContent(
        group_id=sender.group_id if group_id is None else group_id,
        epoch=sender.epoch if epoch is None else epoch,
        sender=MemberSender(sender.own_leaf if sender_leaf is None else sender_leaf),
        authenticated_data=b"",
        content=body,
    )
    return public_message(
        content,
        sender._signature_private_key if signer is None else signer,
        context=sender.context,
        membership_key=(
            sender._epoch.secrets.membership_key if membership_key is None else membership_key
        ),
        confirmation_tag=confirmation_tag,
    )


def private_message(
    sender: Group,
    body: Proposal | ApplicationData,
    *,
    group_id: bytes | None = None,
    epoch: int | None = None,
    sender_leaf: int | None = None,
    signature: bytes | None = None,
    padding: bytes = b"",
) -> bytes:
    """
    A PrivateMessage from ``sender``'s ratchets, with any sender leaf, signature and padding.
    """
    leaf = sender.own_leaf if sender_leaf is None else LeafIndex(sender_leaf)
    content = FramedContent(
        group_id=sender.group_id if group_id is None else group_id,
        epoch=sender.epoch if epoch is None else epoch,
        sender=MemberSender(leaf),
        authenticated_data=b"",
        content=body,
    )
    if signature is None:
        signature = sign_content(
            content,
            sender._signature_private_key,
            context=sender.context,
            wire_format=WireFormat.MLS_PRIVATE_MESSAGE,
        )
    plaintext = (
        encode_private_message_content(PrivateMessageContent(content=body, signature=signature))
        + padding
    )
    content_type = content.content_type
    ratchet = sender._secret_tree.next_key_nonce(leaf, ratchet_kind_for(content_type))
    reuse_guard = b"\x01\x02\x03\x04"
    content_aad = PrivateContentAAD(
        group_id=content.group_id,
        epoch=content.epoch,
        content_type=content_type,
        authenticated_data=b"",
    )
    ciphertext = SUITE.aead_seal(
        ratchet.key,
        apply_reuse_guard(ratchet.nonce, reuse_guard),
        content_aad.encode(),
        plaintext,
    )
    sender_key = sender_data_key_nonce(SUITE, sender._epoch.secrets.sender_data_secret, ciphertext)
    encrypted_sender_data = SUITE.aead_seal(
        sender_key.key,
        sender_key.nonce,
        SenderDataAAD(content.group_id, content.epoch, content_type).encode(),
        SenderData(leaf, ratchet.generation, reuse_guard).encode(),
    )
    message = PrivateMessage(
        group_id=content.group_id,
        epoch=content.epoch,
        content_type=content_type,
        authenticated_data=b"",
        encrypted_sender_data=encrypted_sender_data,
        ciphertext=ciphertext,
    )
    return MLSMessage(ProtocolVersion.MLS10, message).encode()


LeafTweak = Callable[[LeafNode], LeafNode]
KeysTweak = Callable[[list[bytes]], list[bytes]]
PathTweak = Callable[[UpdatePath], UpdatePath]


@dataclass(frozen=True, slots=True, kw_only=True)
class PathEdit:
    """
    How to bend an UpdatePath while keeping it otherwise consistent.

    ``leaf`` edits the new leaf before it is signed (its parent hash already
    set); ``keys`` edits the path's public keys before parent hashes are
    computed; the path secrets are then encrypted again under the provisional
    GroupContext of the resulting tree. ``after`` edits the finished path
    (which then no longer matches that tree); ``signer`` signs the leaf
    instead of the committer.
    """

    leaf: LeafTweak | None = None
    keys: KeysTweak | None = None
    after: PathTweak | None = None
    parent_hash: bytes | None = None
    signer: bytes | None = None


def build_path(
    tree: RatchetTree,
    sender: LeafIndex,
    private: TreeKEMPrivate,
    *,
    signer: bytes,
    provisional: GroupContext,
    excluded: Sequence[LeafIndex],
    edit: PathEdit | None,
    rng: Rng,
    leaf_node: LeafNode | None = None,
) -> tuple[UpdatePath, RatchetTree, bytes]:
    """
    An UpdatePath from ``sender`` over ``tree``: the path, the merged tree and the commit secret.
    """
    created = create_update_path(
        tree,
        private,
        group_context=provisional,
        signature_private_key=signer,
        rng=rng,
        excluded_leaves=excluded,
        leaf_node=leaf_node,
    )
    if edit is None:
        return created.update_path, created.tree, created.commit_secret
    keys = [node.encryption_key for node in created.update_path.nodes]
    if edit.keys is not None:
        keys = edit.keys(keys)
    merged = tree.copy()
    parent_hash = merged.merge_path(sender, keys)
    leaf = replace(
        created.update_path.leaf_node,
        parent_hash=parent_hash if edit.parent_hash is None else edit.parent_hash,
        signature=b"",
    )
    if edit.leaf is not None:
        leaf = edit.leaf(leaf)
    leaf = sign_leaf(
        leaf,
        signer if edit.signer is None else edit.signer,
        group_id=provisional.group_id,
        leaf_index=sender,
    )
    merged.set_leaf(sender, leaf)
    context = replace(provisional, tree_hash=merged.root_tree_hash()).encode()
    excluded_nodes = {leaf_to_node(leaf_index) for leaf_index in excluded}
    nodes = []
    for ((_, copath_child), (_, path_secret)), key in zip(
        zip(merged.filtered_direct_path(sender), created.path_secrets, strict=True),
        keys,
        strict=True,
    ):
        ciphertexts = tuple(
            HPKECiphertext(
                *SUITE.encrypt_with_label(
                    merged.encryption_key(recipient), b"UpdatePathNode", context, path_secret, rng
                )
            )
            for recipient in merged.resolution(copath_child)
            if recipient not in excluded_nodes
        )
        nodes.append(UpdatePathNode(encryption_key=key, encrypted_path_secret=ciphertexts))
    path = UpdatePath(leaf_node=leaf, nodes=tuple(nodes))
    if edit.after is not None:
        path = edit.after(path)
    return path, merged, created.commit_secret


def apply_naively(
    tree: RatchetTree, proposals: Sequence[tuple[Proposal, Sender]]
) -> tuple[RatchetTree, list[LeafIndex]]:
    """
    Apply proposals in the order of RFC 9420 §12.3 without validating anything.
    """
    tree = tree.copy()
    for proposal, sender in proposals:
        if isinstance(proposal, Update) and isinstance(sender, MemberSender):
            tree.update_leaf(LeafIndex(sender.leaf_index), proposal.leaf_node)
    for proposal, _ in proposals:
        if isinstance(proposal, Remove):
            leaf = LeafIndex(proposal.removed)
            if leaf < tree.leaf_count and tree.leaf(leaf) is not None:
                tree.remove_leaf(leaf)
    added = [
        tree.add_leaf(proposal.key_package.leaf_node)
        for proposal, _ in proposals
        if isinstance(proposal, Add)
    ]
    return tree, added


def forge_commit(
    committer: Group,
    proposals: Sequence[ProposalOrRef] = (),
    *,
    path: bool = True,
    edit: PathEdit | None = None,
    psks: Sequence[tuple[PreSharedKeyID, bytes]] = (),
    tamper_tag: bool = False,
) -> bytes:
    """
    A commit from ``committer`` that no validation stopped, with a correct confirmation tag.

    The tag is the one a receiver that accepted the proposal list would
    compute, so a rule left unenforced shows as a commit that is accepted.
    """
    epoch = committer._epoch
    resolved: list[tuple[Proposal, Sender]] = []
    for entry in proposals:
        if isinstance(entry, ProposalRef):
            held = committer._proposals.get(entry.ref)
            if held is not None:
                resolved.append((held.proposal, held.sender))
        else:
            resolved.append((entry, MemberSender(committer.own_leaf)))
    extensions = committer.context.extensions
    for proposal, _ in resolved:
        if isinstance(proposal, GroupContextExtensions):
            extensions = proposal.extensions
    tree, added = apply_naively(epoch.tree, resolved)
    private = epoch.private.without_blank_nodes(tree)
    provisional = replace(committer.context, epoch=committer.epoch + 1, extensions=extensions)
    update_path = None
    commit_secret = None
    if path:
        update_path, tree, commit_secret = build_path(
            tree,
            committer.own_leaf,
            private,
            signer=committer._signature_private_key,
            provisional=provisional,
            excluded=added,
            edit=edit,
            rng=rng_for(b"forged path"),
        )
    content = FramedContent(
        group_id=committer.group_id,
        epoch=committer.epoch,
        sender=MemberSender(committer.own_leaf),
        authenticated_data=b"",
        content=Commit(tuple(proposals), update_path),
    )
    signature = sign_content(content, committer._signature_private_key, context=committer.context)
    signed = AuthenticatedContent(
        wire_format=WireFormat.MLS_PUBLIC_MESSAGE,
        content=content,
        signature=signature,
        confirmation_tag=b"",
    )
    next_epoch = committer._next_epoch(
        signed=signed,
        tree=tree,
        private=private,
        extensions=extensions,
        init_secret=epoch.secrets.init_secret,
        commit_secret=commit_secret,
        psk=psk_secret(SUITE, list(psks)) if psks else None,
        own_leaf=committer.own_leaf,
        received_tag=None,
    )
    tag = next_epoch.confirmation_tag
    auth = replace(signed, confirmation_tag=flip(tag) if tamper_tag else tag)
    message = PublicMessage(
        content=content,
        signature=signature,
        confirmation_tag=auth.confirmation_tag,
        membership_tag=membership_tag(
            SUITE,
            auth,
            membership_key=epoch.secrets.membership_key,
            group_context=committer.context,
        ),
    )
    return MLSMessage(ProtocolVersion.MLS10, message).encode()


def forge_external_commit(
    group: Group,
    joiner: bytes,
    *,
    proposals: Callable[[ExternalInit], Sequence[ProposalOrRef]] = lambda init: (init,),
    path: bool = True,
    credential: Credential | None = None,
    edit: PathEdit | None = None,
    signer: bytes | None = None,
) -> bytes:
    """
    An external commit by client ``joiner`` against ``group``'s current epoch.

    Built from what a GroupInfo publishes (the tree, the context, the
    external_pub), with a correct confirmation tag for the proposals given.
    """
    context = group.context
    _, external_pub = external_key_pair(SUITE, group._epoch.secrets.external_secret)
    kem_output, init_secret = SUITE.hpke_export_sender(
        external_pub, b"", EXTERNAL_INIT_LABEL, SUITE.hash_length, rng_for(b"external init")
    )
    covered = tuple(proposals(ExternalInit(kem_output)))
    by_value = [
        (entry, NewMemberCommitSender()) for entry in covered if not isinstance(entry, ProposalRef)
    ]
    tree, _ = apply_naively(group.tree, by_value)
    signature_private_key, signature_public_key = signature_pair(joiner)
    leaf_private, leaf_public = SUITE.hpke_generate_key_pair(rng_for(b"external leaf " + joiner))
    template = LeafNode(
        encryption_key=leaf_public,
        signature_key=signature_public_key,
        credential=credential or BasicCredential(joiner),
        capabilities=default_capabilities(SUITE),
        leaf_node_source=LeafNodeSource.COMMIT,
        parent_hash=b"",
    )
    tree = tree.copy()
    own_leaf = tree.add_leaf(template)
    provisional = replace(context, epoch=context.epoch + 1)
    update_path, tree, commit_secret = build_path(
        tree,
        own_leaf,
        TreeKEMPrivate(SUITE, own_leaf, leaf_private),
        signer=signature_private_key,
        provisional=provisional,
        excluded=(),
        edit=edit,
        rng=rng_for(b"external path " + joiner),
        leaf_node=template,
    )
    content = FramedContent(
        group_id=context.group_id,
        epoch=context.epoch,
        sender=NewMemberCommitSender(),
        authenticated_data=b"",
        content=Commit(covered, update_path if path else None),
    )
    signature = sign_content(
        content, signature_private_key if signer is None else signer, context=context
    )
    signed = AuthenticatedContent(
        wire_format=WireFormat.MLS_PUBLIC_MESSAGE,
        content=content,
        signature=signature,
        confirmation_tag=b"",
    )
    confirmed = confirmed_transcript_hash(SUITE, group._epoch.interim_transcript_hash, signed)
    new_context = replace(
        context,
        epoch=context.epoch + 1,
        tree_hash=tree.root_tree_hash(),
        confirmed_transcript_hash=confirmed,
    )
    secrets = derive_epoch_secrets(
        SUITE,
        init_secret=init_secret,
        commit_secret=commit_secret,
        psk_secret=None,
        group_context=new_context,
    )
    tag = confirmation_tag(SUITE, secrets.confirmation_key, confirmed)
    message = PublicMessage(content=content, signature=signature, confirmation_tag=tag)
    return MLSMessage(ProtocolVersion.MLS10, message).encode()


def rewrite_welcome(
    welcome_message: bytes,
    joiner: KeyPackageBundle,
    *,
    group_info: Callable[[GroupInfo], GroupInfo] | None = None,
    group_secrets: Callable[[GroupSecrets], GroupSecrets] | None = None,
    psk_values: Callable[[PreSharedKeyID], bytes] = lambda psk_id: PSK_VALUE,
    signer: bytes | None = None,
    retag: bool = True,
    recipient: KeyPackage | None = None,
) -> bytes:
    """
    Open ``joiner``'s entry of a Welcome, edit its GroupInfo or GroupSecrets, and seal it again.

    By default the GroupInfo's confirmation tag is recomputed for its (edited)
    GroupContext and it is re-signed by ``signer`` (alice), so only the edit
    breaks anything; ``recipient`` seals the secrets to another KeyPackage.
    """
    welcome = MLSMessage.decode(welcome_message).body
    assert isinstance(welcome, Welcome)
    secrets = decrypt_group_secrets(
        SUITE, welcome, key_package_ref(SUITE, joiner.key_package), joiner.init_private_key
    )

    def psk_of(group_secrets: GroupSecrets) -> bytes | None:
        if not group_secrets.psks:
            return None
        return psk_secret(SUITE, [(psk_id, psk_values(psk_id)) for psk_id in group_secrets.psks])

    info = decrypt_group_info(
        SUITE,
        welcome_secret(SUITE, secrets.joiner_secret, psk_of(secrets)),
        welcome.encrypted_group_info,
    )
    new_secrets = secrets if group_secrets is None else group_secrets(secrets)
    new_info = info if group_info is None else group_info(info)
    psk = psk_of(new_secrets)
    if retag:
        epoch_secrets = derive_epoch_secrets_from_joiner(
            SUITE,
            joiner_secret=new_secrets.joiner_secret,
            psk_secret=psk,
            group_context=new_info.group_context,
        )
        new_info = replace(
            new_info,
            confirmation_tag=confirmation_tag(
                SUITE,
                epoch_secrets.confirmation_key,
                new_info.group_context.confirmed_transcript_hash,
            ),
        )
    new_info = sign_group_info(
        SUITE, new_info, bundle(ALICE).signature_private_key if signer is None else signer
    )
    encrypted_group_info = encrypt_group_info(
        SUITE, welcome_secret(SUITE, new_secrets.joiner_secret, psk), new_info
    )
    entry = encrypt_group_secrets(
        SUITE,
        joiner.key_package if recipient is None else recipient,
        new_secrets,
        encrypted_group_info,
        rng_for(b"rewrite welcome"),
    )
    rewritten = Welcome(welcome.cipher_suite, (entry,), encrypted_group_info)
    return MLSMessage(ProtocolVersion.MLS10, rewritten).encode()


def with_tree(info: GroupInfo, tree: RatchetTree) -> GroupInfo:
    """
    ``info`` carrying ``tree`` in its ratchet_tree extension, its tree hash updated to match.
    """
    extensions = tuple(
        Extension(ExtensionType.RATCHET_TREE, tree.encode())
        if extension.extension_type == ExtensionType.RATCHET_TREE
        else extension
        for extension in info.extensions
    )
    return replace(
        info,
        group_context=replace(info.group_context, tree_hash=tree.root_tree_hash()),
        extensions=extensions,
    )


def tree_of(info: GroupInfo) -> RatchetTree:
    extension = find_extension(info.extensions, ExtensionType.RATCHET_TREE)
    assert extension is not None
    return RatchetTree.decode(SUITE, extension.extension_data)


def replace_node(tree: RatchetTree, index: int, node: LeafNode | ParentNode | None) -> RatchetTree:
    nodes = list(tree.to_nodes().nodes)
    nodes[index] = node
    return RatchetTree(SUITE, nodes)


def parent_at(tree: RatchetTree, index: int) -> ParentNode:
    node = tree.node(NodeIndex(index))
    assert isinstance(node, ParentNode)
    return node


def rejecting(*identities: bytes) -> CredentialValidator:
    """
    An application credential check that refuses basic credentials with these identities.
    """

    def validator(credential: Credential, signature_key: bytes) -> None:
        del signature_key
        if isinstance(credential, BasicCredential) and credential.identity in identities:
            raise InvalidCredential(f"{credential.identity!r} is not acceptable")

    return validator


# == §6 Framing and epochs (FR) ====================================================


def test_fr_1_public_message_for_another_group_is_rejected() -> None:
    alice, bob, _ = make_group()
    message = member_message(bob, Remove(2), group_id=b"another group")
    assert_rejects(alice, message, WrongGroup)


def test_fr_2_private_message_for_another_group_is_rejected() -> None:
    alice, bob, _ = make_group()
    message = private_message(bob, ApplicationData(b"hi"), group_id=b"another group")
    assert_rejects(alice, message, WrongGroup)


def test_fr_3_proposal_for_another_epoch_is_rejected() -> None:
    alice, bob, _ = make_group()
    message = member_message(bob, Remove(2), epoch=bob.epoch - 1)
    assert_rejects(alice, message, WrongEpoch)


def test_fr_4_commit_for_another_epoch_is_rejected() -> None:
    alice, bob, _ = make_group()
    commit = Commit((), None)
    message = member_message(bob, commit, epoch=bob.epoch + 1, confirmation_tag=bytes(32))
    assert_rejects(alice, message, WrongEpoch)


def test_fr_5_private_handshake_message_for_a_past_epoch_is_rejected() -> None:
    config = GroupConfig(public_handshake=False)
    alice, bob, _ = make_group(configs=[config, config, config])
    late = private_message(bob, Remove(2))
    pending = alice.commit(rng=rng_for(b"next epoch"))
    alice.merge(pending.staged)
    assert_rejects(alice, late, WrongEpoch)


def test_fr_6_private_message_for_an_unknown_epoch_is_rejected() -> None:
    alice, bob, _ = make_group()
    message = private_message(bob, ApplicationData(b"hi"), epoch=bob.epoch + 1)
    assert_rejects(alice, message, WrongEpoch)


def test_fr_7_public_message_with_a_wrong_membership_tag_is_rejected() -> None:
    alice, bob, _ = make_group()
    message = member_message(bob, Remove(2), membership_key=b"\x00" * 32)
    assert_rejects(alice, message, MembershipTagMismatch)


def test_fr_8_public_message_with_a_wrong_signature_is_rejected() -> None:
    alice, bob, _ = make_group()
    # Signed with carol's key but sent (and MACed) as bob's.
    message = member_message(bob, Remove(2), signer=bundle(CAROL).signature_private_key)
    assert_rejects(alice, message, InvalidSignature)


def test_fr_9_private_message_with_a_wrong_signature_is_rejected() -> None:
    alice, bob, _ = make_group()
    message = private_message(bob, ApplicationData(b"hi"), signature=b"\x00" * 64)
    assert_rejects(alice, message, InvalidSignature)


def test_fr_10_new_member_commit_sender_sending_a_proposal_is_rejected() -> None:
    alice, _, _ = make_group()
    content = FramedContent(
        group_id=alice.group_id,
        epoch=alice.epoch,
        sender=NewMemberCommitSender(),
        authenticated_data=b"",
        content=Remove(2),
    )
    message = public_message(content, bundle(DAVE).signature_private_key, context=alice.context)
    assert_rejects(alice, message, InvalidSender)


def test_fr_11_new_member_proposal_sender_proposing_other_than_add_is_rejected() -> None:
    alice, _, _ = make_group()
    content = FramedContent(
        group_id=alice.group_id,
        epoch=alice.epoch,
        sender=NewMemberProposalSender(),
        authenticated_data=b"",
        content=Remove(2),
    )
    message = public_message(content, bundle(DAVE).signature_private_key, context=alice.context)
    assert_rejects(alice, message, InvalidSender)


def test_fr_12_external_sender_without_external_senders_extension_is_rejected() -> None:
    alice, _, _ = make_group()
    content = FramedContent(
        group_id=alice.group_id,
        epoch=alice.epoch,
        sender=ExternalSenderRef(0),
        authenticated_data=b"",
        content=Remove(2),
    )
    message = public_message(content, bundle(DAVE).signature_private_key, context=alice.context)
    assert_rejects(alice, message, InvalidSender)


def test_fr_13_application_data_in_a_public_message_is_rejected() -> None:
    alice, bob, _ = make_group()
    message = member_message(bob, ApplicationData(b"in the clear"))
    assert_rejects(alice, message, InvalidContentType)


def test_fr_14_public_message_from_a_blank_leaf_is_rejected() -> None:
    alice, bob, _ = make_group()
    # Leaf 3 of the four-leaf tree is blank; the message is otherwise bob's.
    message = member_message(bob, Remove(2), sender_leaf=3)
    assert_rejects(alice, message, InvalidSender)


def test_fr_15_private_message_whose_sender_data_names_a_blank_leaf_is_rejected() -> None:
    alice, bob, _ = make_group()
    message = private_message(bob, ApplicationData(b"hi"), sender_leaf=3)
    assert_rejects(alice, message, InvalidSender)


def test_fr_16_private_message_with_non_zero_padding_is_rejected() -> None:
    alice, bob, _ = make_group()
    message = private_message(bob, ApplicationData(b"hi"), padding=b"\x00\x00\x01")
    assert_rejects(alice, message, InvalidPadding)


def test_fr_17_replayed_private_message_is_rejected() -> None:
    alice, bob, _ = make_group()
    message = bob.encrypt(b"once", rng=rng_for(b"message"))
    alice.process(message)
    assert_rejects(alice, message, GenerationError)


# == §7.3 Leaf nodes (LN) ==========================================================


def dave_leaf(**changes: object) -> LeafNode:
    """
    Dave's KeyPackage leaf with ``changes``, signed again by dave.
    """
    leaf = bundle(DAVE).key_package.leaf_node
    return sign_leaf(replace(leaf, **changes), bundle(DAVE).signature_private_key)


def assert_leaf_rejected(
    leaf: LeafNode,
    error: type[Exception],
    *,
    credential_validator: CredentialValidator = accept_any_credential,
    required_capabilities: RequiredCapabilities | None = None,
    credential_types_in_use: frozenset[int] = frozenset({1}),
    credential_types_supported: frozenset[int] | None = frozenset({1}),
    now: int | None = None,
) -> None:
    before = leaf.encode()
    assert_raises_exactly(
        error,
        lambda: validate_leaf_node(
            SUITE,
            leaf,
            source=LeafNodeSource.KEY_PACKAGE,
            group_id=None,
            leaf_index=None,
            credential_validator=credential_validator,
            required_capabilities=required_capabilities,
            credential_types_in_use=credential_types_in_use,
            credential_types_supported=credential_types_supported,
            now=now,
        ),
    )
    assert leaf.encode() == before


def test_ln_0_valid_leaf_node_is_accepted() -> None:
    # The baseline the LN tests break one rule of.
    validate_leaf_node(
        SUITE,
        dave_leaf(),
        source=LeafNodeSource.KEY_PACKAGE,
        group_id=None,
        leaf_index=None,
        credential_validator=accept_any_credential,
        required_capabilities=RequiredCapabilities((), (), (1,)),
        credential_types_in_use=frozenset({1}),
        credential_types_supported=frozenset({1}),
        now=1_700_000_000,
    )


def test_ln_1_leaf_whose_credential_the_application_rejects_is_rejected() -> None:
    assert_leaf_rejected(dave_leaf(), InvalidCredential, credential_validator=rejecting(DAVE))


def test_ln_2_leaf_with_a_wrong_signature_is_rejected() -> None:
    leaf = dave_leaf()
    assert_leaf_rejected(replace(leaf, signature=flip(leaf.signature)), InvalidSignature)


def test_ln_3_leaf_lacking_a_required_capability_is_rejected() -> None:
    required = RequiredCapabilities((CUSTOM_EXTENSION,), (), ())
    assert_leaf_rejected(dave_leaf(), UnsupportedCapability, required_capabilities=required)


def test_ln_4_leaf_whose_credential_type_some_member_does_not_support_is_rejected() -> None:
    leaf = dave_leaf(
        credential=X509Credential((b"certificate",)),
        capabilities=replace(default_capabilities(SUITE), credentials=(1, 2)),
    )
    assert_leaf_rejected(leaf, UnsupportedCapability, credential_types_supported=frozenset({1}))


def test_ln_5_leaf_not_supporting_a_credential_type_in_use_is_rejected() -> None:
    assert_leaf_rejected(
        dave_leaf(),
        UnsupportedCapability,
        credential_types_in_use=frozenset({1, 2}),
        credential_types_supported=frozenset({1, 2}),
    )


def test_ln_6_leaf_outside_its_lifetime_is_rejected() -> None:
    leaf = dave_leaf(lifetime=Lifetime(not_before=1_000, not_after=2_000))
    assert_leaf_rejected(leaf, LifetimeInvalid, now=2_001)


def test_ln_7_leaf_extension_missing_from_its_capabilities_is_rejected() -> None:
    leaf = dave_leaf(extensions=(Extension(CUSTOM_EXTENSION, b""),))
    assert_leaf_rejected(leaf, UnsupportedCapability)


def test_ln_8_leaf_credential_type_missing_from_its_capabilities_is_rejected() -> None:
    leaf = dave_leaf(credential=X509Credential((b"certificate",)))
    assert_leaf_rejected(leaf, UnsupportedCapability, credential_types_supported=frozenset({1, 2}))


def test_ln_9_leaf_not_supporting_the_group_cipher_suite_is_rejected() -> None:
    leaf = dave_leaf(capabilities=replace(default_capabilities(SUITE), cipher_suites=(2,)))
    assert_leaf_rejected(leaf, UnsupportedCapability)


def test_ln_10_leaf_not_supporting_the_protocol_version_is_rejected() -> None:
    leaf = dave_leaf(capabilities=replace(default_capabilities(SUITE), versions=()))
    assert_leaf_rejected(leaf, UnsupportedCapability)


def test_ln_11_leaf_with_two_extensions_of_one_type_is_rejected() -> None:
    application_id = ExtensionType.APPLICATION_ID
    leaf = dave_leaf(
        extensions=(Extension(application_id, b"one"), Extension(application_id, b"two"))
    )
    assert_leaf_rejected(leaf, DuplicateExtension)


def test_ln_12_key_package_leaf_whose_source_is_not_key_package_is_rejected() -> None:
    dave = bundle(DAVE)
    leaf = sign_leaf(
        replace(dave.key_package.leaf_node, leaf_node_source=LeafNodeSource.UPDATE, lifetime=None),
        dave.signature_private_key,
        group_id=GROUP_ID,
        leaf_index=3,
    )
    key_package = sign_key_package(
        replace(dave.key_package, leaf_node=leaf), dave.signature_private_key
    )
    assert_raises_exactly(
        LeafNodeSourceMismatch,
        lambda: validate_key_package(
            SUITE, key_package, credential_validator=accept_any_credential
        ),
    )


def proposed_update(sender: Group, **changes: object) -> tuple[bytes, bytes]:
    """
    An Update from ``sender`` with a fresh encryption key and ``changes``, signed for its leaf.

    :returns: the proposal message and its ref.
    """
    current = sender.tree.leaf(sender.own_leaf)
    assert current is not None
    leaf = replace(
        current,
        encryption_key=fresh_hpke_key(b"update " + bytes([sender.own_leaf])),
        leaf_node_source=LeafNodeSource.UPDATE,
        lifetime=None,
        parent_hash=None,
    )
    signer = changes.pop("signer", sender._signature_private_key)
    assert isinstance(signer, bytes)
    leaf = sign_leaf(
        replace(leaf, **changes), signer, group_id=sender.group_id, leaf_index=sender.own_leaf
    )
    message = member_message(sender, Update(leaf))
    return message, sender_ref(sender, message)


def sender_ref(receiver: Group, message: bytes) -> bytes:
    event = receiver.process(message)
    assert isinstance(event, ProposalReceived)
    return event.ref


def test_ln_13_update_whose_leaf_source_is_not_update_is_rejected() -> None:
    alice, bob, carol = make_group()
    message, ref = proposed_update(bob, leaf_node_source=LeafNodeSource.COMMIT, parent_hash=b"")
    alice.process(message)
    carol.process(message)
    assert_rejects(carol, forge_commit(alice, [ProposalRef(ref)]), LeafNodeSourceMismatch)


def test_ln_14_update_keeping_the_old_encryption_key_is_rejected() -> None:
    alice, bob, carol = make_group()
    current = bob.tree.leaf(bob.own_leaf)
    assert current is not None
    message, ref = proposed_update(bob, encryption_key=current.encryption_key)
    alice.process(message)
    carol.process(message)
    assert_rejects(carol, forge_commit(alice, [ProposalRef(ref)]), EncryptionKeyNotUpdated)


def test_ln_15_update_reusing_another_members_encryption_key_is_rejected() -> None:
    alice, bob, carol = make_group()
    carol_leaf = carol.tree.leaf(carol.own_leaf)
    assert carol_leaf is not None
    message, ref = proposed_update(bob, encryption_key=carol_leaf.encryption_key)
    alice.process(message)
    carol.process(message)
    assert_rejects(carol, forge_commit(alice, [ProposalRef(ref)]), DuplicateKey)


def test_ln_16_update_reusing_another_members_signature_key_is_rejected() -> None:
    alice, bob, carol = make_group()
    message, ref = proposed_update(
        bob,
        signature_key=signature_pair(CAROL)[1],
        signer=signature_pair(CAROL)[0],
    )
    alice.process(message)
    carol.process(message)
    assert_rejects(carol, forge_commit(alice, [ProposalRef(ref)]), DuplicateKey)


def test_ln_17_update_dropping_a_group_extension_is_rejected() -> None:
    alice, bob, carol = custom_group()
    message, ref = proposed_update(bob, capabilities=default_capabilities(SUITE))
    alice.process(message)
    carol.process(message)
    assert_rejects(carol, forge_commit(alice, [ProposalRef(ref)]), UnsupportedCapability)


# == §7.1, §7.9, §12.4.3.1 The ratchet tree and parent hashes (TREE) ==================

TREE_CONTEXT = GroupContext(
    cipher_suite=SUITE.suite_id,
    group_id=GROUP_ID,
    epoch=1,
    tree_hash=b"",
    confirmed_transcript_hash=b"",
)


def member_names(count: int) -> list[bytes]:
    return [b"member %d" % i for i in range(count)]


@functools.cache
def path_tree(members: int, added_after: int = 0) -> RatchetTree:
    """
    A valid tree: ``members`` leaves, leaf 0 commits a path, then ``added_after`` more Adds.
    """
    names = member_names(members + added_after)
    committer = bundle(names[0])
    tree = RatchetTree(SUITE, (committer.key_package.leaf_node,))
    for name in names[1:members]:
        tree.add_leaf(bundle(name).key_package.leaf_node)
    created = create_update_path(
        tree,
        TreeKEMPrivate(SUITE, LeafIndex(0), committer.encryption_private_key),
        group_context=TREE_CONTEXT,
        signature_private_key=committer.signature_private_key,
        rng=rng_for(b"tree path"),
    )
    tree = created.tree
    for name in names[members:]:
        tree.add_leaf(bundle(name).key_package.leaf_node)
    tree.verify(GROUP_ID)
    return tree


def assert_tree_rejected(tree: RatchetTree, error: type[Exception]) -> None:
    before = (tree.encode(), tree.root_tree_hash())
    assert_raises_exactly(error, lambda: tree.verify(GROUP_ID))
    assert (tree.encode(), tree.root_tree_hash()) == before


def test_tree_1_parent_node_that_is_not_parent_hash_valid_is_rejected() -> None:
    # Three members, leaf 0 committed: parents 1 and 3 (the root). A new key
    # at the root leaves node 1's parent hash pointing at nothing.
    tree = path_tree(3)
    root = parent_at(tree, 3)
    tampered = replace_node(tree, 3, replace(root, encryption_key=fresh_hpke_key(b"root")))
    assert_tree_rejected(tampered, ParentHashMismatch)


def test_tree_2_commit_leaf_with_a_wrong_parent_hash_is_rejected() -> None:
    alice, bob, _ = make_group()
    edit = PathEdit(parent_hash=b"\x00" * SUITE.hash_length)
    assert_rejects(bob, forge_commit(alice, edit=edit), ParentHashMismatch)


def test_tree_3_unsorted_unmerged_leaves_are_rejected() -> None:
    # Five members of an eight-leaf tree, leaf 0 committed (root 7 set),
    # then two Adds: the root lists leaves 5 and 6 as unmerged.
    tree = path_tree(5, added_after=2)
    root = parent_at(tree, 7)
    assert root.unmerged_leaves == (5, 6)
    tampered = replace_node(tree, 7, replace(root, unmerged_leaves=(6, 5)))
    assert_tree_rejected(tampered, InvalidUnmergedLeaves)


def test_tree_4_unmerged_leaf_outside_the_parents_subtree_is_rejected() -> None:
    tree = path_tree(5, added_after=2)
    node_3 = parent_at(tree, 3)
    tampered = replace_node(tree, 3, replace(node_3, unmerged_leaves=(5,)))
    assert_tree_rejected(tampered, InvalidUnmergedLeaves)


def test_tree_5_blank_unmerged_leaf_is_rejected() -> None:
    tree = path_tree(5, added_after=2)
    root = parent_at(tree, 7)
    tampered = replace_node(tree, 7, replace(root, unmerged_leaves=(5, 6, 7)))
    assert_tree_rejected(tampered, InvalidUnmergedLeaves)


def test_tree_6_intermediate_node_not_listing_an_unmerged_leaf_is_rejected() -> None:
    # Node 11 lies between leaf 5 (unmerged at the root) and the root.
    tree = path_tree(5, added_after=2)
    node_11 = ParentNode(
        encryption_key=fresh_hpke_key(b"node 11"), parent_hash=b"", unmerged_leaves=()
    )
    assert_tree_rejected(replace_node(tree, 11, node_11), InvalidUnmergedLeaves)


def test_tree_7_parent_key_appearing_in_another_node_is_rejected() -> None:
    tree = path_tree(3)
    leaf_2 = tree.leaf(LeafIndex(2))
    assert leaf_2 is not None
    root = parent_at(tree, 3)
    tampered = replace_node(tree, 3, replace(root, encryption_key=leaf_2.encryption_key))
    assert_tree_rejected(tampered, DuplicateKey)


def test_tree_8_two_leaves_with_one_signature_key_are_rejected() -> None:
    # No parent nodes, so no parent hash covers the leaves.
    first = bundle(b"twin").key_package.leaf_node
    second = bundle(b"twin", variant=b"again").key_package.leaf_node
    assert first.signature_key == second.signature_key
    tree = RatchetTree(SUITE, (first, None, second))
    assert_tree_rejected(tree, DuplicateKey)


def test_tree_9_leaf_with_a_wrong_signature_in_a_joined_tree_is_rejected() -> None:
    first = bundle(DAVE).key_package.leaf_node
    second = bundle(b"erin").key_package.leaf_node
    tree = RatchetTree(SUITE, (first, None, replace(second, signature=flip(second.signature))))
    assert_tree_rejected(tree, InvalidSignature)


def test_tree_10_tree_ending_in_a_blank_node_is_rejected() -> None:
    leaf = bundle(DAVE).key_package.leaf_node
    encoded = RatchetTreeNodes((leaf, None, None)).encode()
    assert_raises_exactly(InvalidTreeShape, lambda: RatchetTree.decode(SUITE, encoded))


def test_tree_11_parent_node_in_a_leaf_slot_is_rejected() -> None:
    leaf = bundle(DAVE).key_package.leaf_node
    parent = ParentNode(encryption_key=fresh_hpke_key(b"p"), parent_hash=b"", unmerged_leaves=())
    encoded = RatchetTreeNodes((parent, None, leaf)).encode()
    assert_raises_exactly(InvalidTreeShape, lambda: RatchetTree.decode(SUITE, encoded))


# == §10.1 KeyPackages (KP) ========================================================


def assert_key_package_rejected(key_package: KeyPackage, error: type[Exception]) -> None:
    before = key_package.encode()
    assert_raises_exactly(
        error,
        lambda: validate_key_package(
            SUITE, key_package, credential_validator=accept_any_credential
        ),
    )
    assert key_package.encode() == before


def dave_key_package(**changes: object) -> KeyPackage:
    """
    Dave's KeyPackage with ``changes``, signed again by dave.
    """
    dave = bundle(DAVE)
    return sign_key_package(replace(dave.key_package, **changes), dave.signature_private_key)


def test_kp_0_valid_key_package_is_accepted() -> None:
    validate_key_package(SUITE, dave_key_package(), credential_validator=accept_any_credential)


def test_kp_1_key_package_for_another_cipher_suite_is_rejected() -> None:
    assert_key_package_rejected(dave_key_package(cipher_suite=2), KeyPackageMismatch)


def test_kp_2_key_package_for_another_protocol_version_is_rejected() -> None:
    assert_key_package_rejected(dave_key_package(version=2), KeyPackageMismatch)


def test_kp_3_key_package_with_an_invalid_leaf_is_rejected() -> None:
    leaf = bundle(DAVE).key_package.leaf_node
    broken = replace(leaf, signature=flip(leaf.signature))
    assert_key_package_rejected(dave_key_package(leaf_node=broken), InvalidSignature)


def test_kp_4_key_package_with_a_wrong_signature_is_rejected() -> None:
    key_package = dave_key_package()
    broken = replace(key_package, signature=flip(key_package.signature))
    assert_key_package_rejected(broken, InvalidSignature)


def test_kp_5_key_package_whose_init_key_is_its_encryption_key_is_rejected() -> None:
    leaf = bundle(DAVE).key_package.leaf_node
    assert_key_package_rejected(dave_key_package(init_key=leaf.encryption_key), InitKeyReused)


def test_kp_6_key_package_with_two_extensions_of_one_type_is_rejected() -> None:
    extensions = (Extension(CUSTOM_EXTENSION, b"one"), Extension(CUSTOM_EXTENSION, b"two"))
    leaf = sign_leaf(
        replace(
            bundle(DAVE).key_package.leaf_node, capabilities=capabilities_with(CUSTOM_EXTENSION)
        ),
        bundle(DAVE).signature_private_key,
    )
    key_package = dave_key_package(leaf_node=leaf, extensions=extensions)
    assert_key_package_rejected(key_package, DuplicateExtension)


def test_kp_7_key_package_whose_version_differs_from_its_message_is_rejected() -> None:
    # Only mls10 exists, so a KeyPackage of any other version cannot be
    # decoded: its version cannot equal the MLSMessage's mls10.
    message = MLSMessage(ProtocolVersion.MLS10, bundle(DAVE).key_package).encode()
    assert message[:6] == b"\x00\x01\x00\x05\x00\x01"
    tampered = message[:4] + b"\x00\x02" + message[6:]
    assert_raises_exactly(UnknownEnumValue, lambda: MLSMessage.decode(tampered))


def test_kp_8_add_of_a_client_not_supporting_a_group_context_extension_is_rejected() -> None:
    # The group uses CUSTOM_EXTENSION, which alice and bob list; dave does not.
    extensions = (Extension(CUSTOM_EXTENSION, b""),)
    custom = capabilities_with(CUSTOM_EXTENSION)
    alice, bob = make_group(
        bundle(ALICE, capabilities=custom), bundle(BOB, capabilities=custom), extensions=extensions
    )
    message = forge_commit(alice, [Add(bundle(DAVE).key_package)], path=False)
    assert_rejects(bob, message, UnsupportedCapability)


def test_kp_9_add_with_an_invalid_key_package_is_rejected() -> None:
    alice, bob, _ = make_group()
    key_package = dave_key_package()
    broken = replace(key_package, signature=flip(key_package.signature))
    assert_rejects(bob, forge_commit(alice, [Add(broken)], path=False), InvalidSignature)


# == §12.1, §12.2 Proposals and proposal lists (PL) ==================================


def resumption_psk(usage: ResumptionPSKUsage, *, nonce: bytes = bytes(32)) -> PreSharedKeyID:
    return PreSharedKeyID(
        psktype=PSKType.RESUMPTION,
        usage=usage,
        psk_group_id=GROUP_ID,
        psk_epoch=1,
        psk_nonce=nonce,
    )


def test_pl_1_commit_removing_a_blank_leaf_is_rejected() -> None:
    alice, bob, _ = make_group()
    assert_rejects(bob, forge_commit(alice, [Remove(3)]), InvalidProposal)


def test_pl_2_remove_proposal_of_a_blank_leaf_is_refused_on_receipt() -> None:
    alice, bob, _ = make_group()
    assert_rejects(alice, member_message(bob, Remove(3)), InvalidProposal)


def test_pl_3_psk_proposal_with_a_short_nonce_is_rejected() -> None:
    alice, bob, _ = make_group()
    psk = replace(PSK_ID, psk_nonce=bytes(16))
    message = forge_commit(alice, [PreSharedKey(psk)], path=False, psks=[(psk, PSK_VALUE)])
    assert_rejects(bob, message, InvalidProposal)


def test_pl_4_psk_proposal_for_a_reinit_resumption_psk_is_rejected() -> None:
    alice, bob, _ = make_group()
    psk = resumption_psk(ResumptionPSKUsage.REINIT)
    message = forge_commit(alice, [PreSharedKey(psk)], path=False, psks=[(psk, PSK_VALUE)])
    assert_rejects(bob, message, InvalidProposal)


def test_pl_5_psk_proposal_for_a_branch_resumption_psk_is_rejected() -> None:
    alice, bob, _ = make_group()
    psk = resumption_psk(ResumptionPSKUsage.BRANCH)
    message = forge_commit(alice, [PreSharedKey(psk)], path=False, psks=[(psk, PSK_VALUE)])
    assert_rejects(bob, message, InvalidProposal)


def test_pl_6_reinit_to_a_lower_protocol_version_is_rejected() -> None:
    # Only mls10 exists: a ReInit to a lower version (reserved 0) does not decode.
    alice, bob, _ = make_group()
    reinit = ReInit(group_id=b"next", version=ProtocolVersion.MLS10, cipher_suite=1, extensions=())
    message = member_message(alice, reinit)
    lower = replace(reinit, version=0).encode()  # type: ignore[arg-type]
    tampered = message.replace(reinit.encode(), lower)
    assert tampered != message
    assert_rejects(bob, tampered, UnknownEnumValue)


def gce_group(*, carol_supports: bool) -> list[Group]:
    custom = capabilities_with(CUSTOM_EXTENSION)
    return make_group(
        bundle(ALICE, capabilities=custom),
        bundle(BOB, capabilities=custom),
        bundle(CAROL, capabilities=custom if carol_supports else None),
    )


REQUIRE_CUSTOM = Extension(
    ExtensionType.REQUIRED_CAPABILITIES,
    RequiredCapabilities((CUSTOM_EXTENSION,), (), ()).encode(),
)


def test_pl_7_gce_requiring_a_capability_a_member_lacks_is_rejected() -> None:
    alice, bob, _ = gce_group(carol_supports=False)
    message = forge_commit(alice, [GroupContextExtensions((REQUIRE_CUSTOM,))])
    assert_rejects(bob, message, UnsupportedCapability)


def test_pl_8_gce_requirement_ignores_members_removed_in_the_same_commit() -> None:
    alice, bob, _ = gce_group(carol_supports=False)
    message = forge_commit(alice, [GroupContextExtensions((REQUIRE_CUSTOM,)), Remove(2)])
    staged = bob.process(message)
    assert isinstance(staged, StagedCommit)
    assert staged.removed == (2,)


def test_pl_9_gce_with_an_extension_a_member_does_not_support_is_rejected() -> None:
    alice, bob, _ = gce_group(carol_supports=False)
    message = forge_commit(alice, [GroupContextExtensions((Extension(CUSTOM_EXTENSION, b""),))])
    assert_rejects(bob, message, UnsupportedCapability)


def test_pl_10_gce_with_two_extensions_of_one_type_is_rejected() -> None:
    alice, bob, _ = gce_group(carol_supports=True)
    twice = (Extension(CUSTOM_EXTENSION, b"one"), Extension(CUSTOM_EXTENSION, b"two"))
    assert_rejects(bob, forge_commit(alice, [GroupContextExtensions(twice)]), DuplicateExtension)


def test_pl_11_commit_covering_the_committers_own_update_is_rejected() -> None:
    alice, bob, _ = make_group()
    message, ref = proposed_update(bob)
    alice.process(message)
    assert_rejects(alice, forge_commit(bob, [ProposalRef(ref)]), CommitterUpdateOrRemove)


def test_pl_12_commit_removing_the_committer_is_rejected() -> None:
    alice, bob, _ = make_group()
    # No path: the committer's own leaf is gone, so no path can start from it.
    message = forge_commit(alice, [Remove(0)], path=False)
    assert_rejects(bob, message, CommitterUpdateOrRemove)


def test_pl_13_commit_with_an_update_and_a_remove_of_one_leaf_is_rejected() -> None:
    alice, bob, carol = make_group()
    message, ref = proposed_update(bob)
    alice.process(message)
    carol.process(message)
    assert_rejects(
        carol, forge_commit(alice, [ProposalRef(ref), Remove(1)]), ConflictingLeafChanges
    )


def test_pl_14_commit_adding_one_client_twice_is_rejected() -> None:
    alice, bob, _ = make_group()
    first = bundle(DAVE).key_package
    second = bundle(DAVE, variant=b"second device key").key_package
    assert first.leaf_node.signature_key == second.leaf_node.signature_key
    message = forge_commit(alice, [Add(first), Add(second)], path=False)
    assert_rejects(bob, message, DuplicateMember)


def test_pl_15_commit_adding_a_client_already_in_the_group_is_rejected() -> None:
    alice, bob, _ = make_group()
    again = bundle(CAROL, variant=b"new key package").key_package
    assert_rejects(bob, forge_commit(alice, [Add(again)], path=False), DuplicateMember)


def test_pl_16_adding_a_client_that_the_same_commit_removes_is_accepted() -> None:
    alice, bob, _ = make_group()
    again = bundle(CAROL, variant=b"new key package").key_package
    staged = bob.process(forge_commit(alice, [Remove(2), Add(again)]))
    assert isinstance(staged, StagedCommit)
    assert staged.added == (2,)


def test_pl_17_commit_with_two_psk_proposals_for_one_psk_is_rejected() -> None:
    alice, bob, _ = make_group()
    message = forge_commit(
        alice,
        [PreSharedKey(PSK_ID), PreSharedKey(PSK_ID)],
        path=False,
        psks=[(PSK_ID, PSK_VALUE), (PSK_ID, PSK_VALUE)],
    )
    assert_rejects(bob, message, DuplicatePSK)


def test_pl_18_commit_with_two_gce_proposals_is_rejected() -> None:
    alice, bob, _ = make_group()
    message = forge_commit(alice, [GroupContextExtensions(()), GroupContextExtensions(())])
    assert_rejects(bob, message, MultipleGroupContextExtensions)


def test_pl_19_commit_with_a_reinit_and_another_proposal_is_rejected() -> None:
    alice, bob, _ = make_group()
    reinit = ReInit(group_id=b"next", version=ProtocolVersion.MLS10, cipher_suite=1, extensions=())
    assert_rejects(bob, forge_commit(alice, [reinit, Remove(2)]), ReInitNotAlone)


def test_pl_20_member_commit_with_an_external_init_is_rejected() -> None:
    alice, bob, _ = make_group()
    assert_rejects(bob, forge_commit(alice, [ExternalInit(b"kem output")]), ProposalNotAllowed)


def test_pl_21_commit_with_a_proposal_type_no_member_supports_is_rejected() -> None:
    # Townsquare supports no non-default proposal type, so such a proposal
    # does not decode: its type names no known variant.
    alice, bob, _ = make_group()
    message = forge_commit(alice, [Remove(2)])
    needle = b"\x01\x00\x03" + Remove(2).encode()
    assert message.count(needle) == 1
    tampered = message.replace(
        needle, b"\x01" + UNKNOWN_PROPOSAL_TYPE.to_bytes(2, "big") + b"\x00\x00\x00\x02"
    )
    assert_rejects(bob, tampered, UnknownVariant)


def test_pl_22_commit_leaving_an_invalid_leaf_in_the_tree_is_rejected() -> None:
    # Dave's leaf has expired by the time bob processes the commit adding it.
    alice, bob, _ = make_group()
    dave = bundle(DAVE, lifetime=Lifetime(not_before=0, not_after=1_000))
    message = forge_commit(alice, [Add(dave.key_package)], path=False)
    assert_rejects(bob, message, LifetimeInvalid, now=2_000)


# == §12.4, §12.4.2 Commits (CM) ======================================================


def test_cm_1_commit_covering_a_remove_without_a_path_is_rejected() -> None:
    alice, bob, _ = make_group()
    assert_rejects(bob, forge_commit(alice, [Remove(2)], path=False), PathRequired)


def test_cm_2_commit_covering_an_update_without_a_path_is_rejected() -> None:
    alice, bob, carol = make_group()
    message, ref = proposed_update(bob)
    alice.process(message)
    carol.process(message)
    assert_rejects(carol, forge_commit(alice, [ProposalRef(ref)], path=False), PathRequired)


def test_cm_3_empty_commit_without_a_path_is_rejected() -> None:
    alice, bob, _ = make_group()
    assert_rejects(bob, forge_commit(alice, [], path=False), PathRequired)


def test_cm_4_commit_covering_a_gce_without_a_path_is_rejected() -> None:
    alice, bob, _ = make_group()
    message = forge_commit(alice, [GroupContextExtensions(())], path=False)
    assert_rejects(bob, message, PathRequired)


def test_cm_5_path_leaf_whose_source_is_not_commit_is_rejected() -> None:
    alice, bob, _ = make_group()
    edit = PathEdit(
        leaf=lambda leaf: replace(leaf, leaf_node_source=LeafNodeSource.UPDATE, parent_hash=None)
    )
    assert_rejects(bob, forge_commit(alice, edit=edit), LeafNodeSourceMismatch)


def test_cm_6_path_leaf_keeping_the_committers_encryption_key_is_rejected() -> None:
    alice, bob, _ = make_group()
    current = alice.tree.leaf(alice.own_leaf)
    assert current is not None
    edit = PathEdit(leaf=lambda leaf: replace(leaf, encryption_key=current.encryption_key))
    assert_rejects(bob, forge_commit(alice, edit=edit), EncryptionKeyNotUpdated)


def test_cm_7_path_key_already_in_the_tree_is_rejected() -> None:
    alice, bob, carol = make_group()
    carol_leaf = carol.tree.leaf(carol.own_leaf)
    assert carol_leaf is not None
    edit = PathEdit(keys=lambda keys: [*keys[:-1], carol_leaf.encryption_key])
    assert_rejects(bob, forge_commit(alice, edit=edit), DuplicateKey)


def test_cm_8_path_repeating_one_key_is_rejected() -> None:
    alice, bob, _ = make_group()
    edit = PathEdit(keys=lambda keys: [keys[0]] * len(keys))
    assert_rejects(bob, forge_commit(alice, edit=edit), DuplicateKey)


def test_cm_9_path_leaf_with_a_credential_the_application_rejects_is_rejected() -> None:
    alice, bob, _ = make_group(configs=[None, GroupConfig(credential_validator=rejecting(b"eve"))])
    edit = PathEdit(leaf=lambda leaf: replace(leaf, credential=BasicCredential(b"eve")))
    assert_rejects(bob, forge_commit(alice, edit=edit), InvalidCredential)


def test_cm_10_path_with_too_few_nodes_is_rejected() -> None:
    alice, bob, _ = make_group()
    edit = PathEdit(after=lambda path: replace(path, nodes=path.nodes[:-1]))
    assert_rejects(bob, forge_commit(alice, edit=edit), PathError)


def test_cm_11_path_node_with_too_few_ciphertexts_is_rejected() -> None:
    # Bob's path secret is at the first node of alice's filtered direct path.
    alice, bob, _ = make_group()

    def strip_first(path: UpdatePath) -> UpdatePath:
        first = replace(path.nodes[0], encrypted_path_secret=())
        return replace(path, nodes=(first, *path.nodes[1:]))

    assert_rejects(bob, forge_commit(alice, edit=PathEdit(after=strip_first)), PathError)


def test_cm_12_path_key_not_derived_from_its_path_secret_is_rejected() -> None:
    # The root's key is replaced and every parent hash and ciphertext made
    # to match it: only the key bob derives from the path secret differs.
    alice, bob, _ = make_group()
    edit = PathEdit(keys=lambda keys: [*keys[:-1], fresh_hpke_key(b"not derived")])
    assert_rejects(bob, forge_commit(alice, edit=edit), PathError)


def test_cm_13_commit_naming_a_psk_the_receiver_lacks_is_rejected() -> None:
    holds_psk = GroupConfig(external_psks=lambda psk_id: PSK_VALUE if psk_id == PSK_ID else None)
    alice, bob, _ = make_group(configs=[holds_psk])
    message = forge_commit(alice, [PreSharedKey(PSK_ID)], path=False, psks=[(PSK_ID, PSK_VALUE)])
    assert_rejects(bob, message, PSKError)


def test_cm_14_commit_with_a_wrong_confirmation_tag_is_rejected() -> None:
    alice, bob, _ = make_group()
    assert_rejects(bob, forge_commit(alice, tamper_tag=True), ConfirmationTagMismatch)


def test_cm_15_commit_referring_to_an_unknown_proposal_is_rejected() -> None:
    alice, bob, _ = make_group()
    message = forge_commit(alice, [ProposalRef(b"\x00" * SUITE.hash_length)])
    assert_rejects(bob, message, UnknownProposalRef)


def test_cm_16_commit_from_our_leaf_that_we_did_not_send_is_rejected() -> None:
    _, bob, _ = make_group()
    superseded = bob.commit(rng=rng_for(b"first"))
    bob.commit(rng=rng_for(b"second"))
    assert_rejects(bob, superseded.commit, NotOurCommit)


def test_cm_17_member_stops_sending_after_a_reinit_commit() -> None:
    alice, bob, _ = make_group()
    reinit = ReInit(group_id=b"next", version=ProtocolVersion.MLS10, cipher_suite=1, extensions=())
    staged = bob.process(forge_commit(alice, [reinit], path=False))
    assert isinstance(staged, StagedCommit)
    assert staged.reinit
    bob.merge(staged)
    before = state(bob)
    assert_raises_exactly(UsageError, lambda: bob.encrypt(b"after reinit", rng=rng_for(b"x")))
    assert state(bob) == before


def custom_group() -> list[Group]:
    """
    Alice, bob and carol, who all support CUSTOM_EXTENSION, in a group that uses it.
    """
    custom = capabilities_with(CUSTOM_EXTENSION)
    return make_group(
        bundle(ALICE, capabilities=custom),
        bundle(BOB, capabilities=custom),
        bundle(CAROL, capabilities=custom),
        extensions=(Extension(CUSTOM_EXTENSION, b""),),
    )


def test_cm_18_path_leaf_dropping_a_group_extension_is_rejected() -> None:
    alice, bob, _ = custom_group()
    edit = PathEdit(leaf=lambda leaf: replace(leaf, capabilities=default_capabilities(SUITE)))
    assert_rejects(bob, forge_commit(alice, edit=edit), UnsupportedCapability)


def test_cm_19_path_leaf_taking_another_members_signature_key_is_rejected() -> None:
    alice, bob, _ = make_group()
    carol_key = signature_pair(CAROL)[1]
    # The leaf is signed with carol's private key, so its own signature holds.
    edit = PathEdit(
        leaf=lambda leaf: replace(leaf, signature_key=carol_key), signer=signature_pair(CAROL)[0]
    )
    assert_rejects(bob, forge_commit(alice, edit=edit), DuplicateKey)


# == §12.4.3.1 Welcome (WEL) ===========================================================


def welcome_for_dave(
    *, configs: Sequence[GroupConfig | None] = (), proposals: Sequence[Proposal] = ()
) -> bytes:
    """
    Alice, bob and carol's group adds dave by a commit with a path; its Welcome for dave.
    """
    alice, _, _ = make_group(configs=configs)
    pending = alice.commit(
        rng=rng_for(b"add dave"),
        proposals=[*proposals, Add(bundle(DAVE).key_package)],
        force_path=True,
    )
    assert pending.welcome is not None
    return pending.welcome


def assert_join_rejected(
    welcome: bytes,
    error: type[Exception],
    *,
    joiner: KeyPackageBundle | None = None,
    config: GroupConfig | None = None,
    ratchet_tree: bytes | None = None,
) -> None:
    # Joining builds a Group only on success, so there is no state to compare:
    # the inputs are bytes and frozen values.
    assert_raises_exactly(
        error,
        lambda: Group.join(
            welcome,
            bundle(DAVE) if joiner is None else joiner,
            config=config,
            ratchet_tree=ratchet_tree,
        ),
    )


def dave_welcome(**rewrite: object) -> bytes:
    return rewrite_welcome(welcome_for_dave(), bundle(DAVE), **rewrite)  # type: ignore[arg-type]


def edit_context(**changes: object) -> Callable[[GroupInfo], GroupInfo]:
    return lambda info: replace(info, group_context=replace(info.group_context, **changes))


def test_wel_0_rewritten_welcome_is_accepted() -> None:
    # The baseline the WEL tests break one rule of: re-sealing changes nothing.
    group = Group.join(dave_welcome(), bundle(DAVE))
    assert group.epoch == 2


def test_wel_1_welcome_without_an_entry_for_our_key_package_is_rejected() -> None:
    assert_join_rejected(welcome_for_dave(), NoMatchingKeyPackage, joiner=bundle(b"erin"))


def test_wel_2_welcome_for_another_cipher_suite_is_rejected() -> None:
    welcome = MLSMessage.decode(welcome_for_dave()).body
    assert isinstance(welcome, Welcome)
    other = MLSMessage(ProtocolVersion.MLS10, replace(welcome, cipher_suite=3)).encode()
    assert_join_rejected(other, NoMatchingKeyPackage)


def test_wel_3_welcome_naming_a_psk_we_lack_is_rejected() -> None:
    holds_psk = GroupConfig(external_psks=lambda psk_id: PSK_VALUE if psk_id == PSK_ID else None)
    welcome = welcome_for_dave(configs=[holds_psk], proposals=[PreSharedKey(PSK_ID)])
    assert_join_rejected(welcome, PSKError)


def test_wel_4_welcome_with_two_branch_or_reinit_psks_is_rejected() -> None:
    # Alice's first commit adds dave, so the GroupInfo is at epoch 1, as a
    # branch or reinit Welcome must be.
    alice = Group.create(bundle(ALICE), group_id=GROUP_ID, rng=rng_for(b"create"))
    pending = alice.commit(rng=rng_for(b"add"), proposals=[Add(bundle(DAVE).key_package)])
    assert pending.welcome is not None
    branch = resumption_psk(ResumptionPSKUsage.BRANCH)
    reinit = resumption_psk(ResumptionPSKUsage.REINIT)
    welcome = rewrite_welcome(
        pending.welcome,
        bundle(DAVE),
        group_secrets=lambda secrets: replace(secrets, psks=(branch, reinit)),
    )
    holds_all = GroupConfig(external_psks=lambda psk_id: PSK_VALUE)
    assert_join_rejected(welcome, PSKError, config=holds_all)


def test_wel_5_welcome_with_a_branch_psk_not_at_epoch_1_is_rejected() -> None:
    # Dave's Welcome is for epoch 2.
    branch = resumption_psk(ResumptionPSKUsage.BRANCH)
    welcome = dave_welcome(group_secrets=lambda secrets: replace(secrets, psks=(branch,)))
    holds_all = GroupConfig(external_psks=lambda psk_id: PSK_VALUE)
    assert_join_rejected(welcome, PSKError, config=holds_all)


def test_wel_6_group_info_with_a_wrong_signature_is_rejected() -> None:
    welcome = dave_welcome(signer=bundle(BOB).signature_private_key)
    assert_join_rejected(welcome, InvalidSignature)


def test_wel_7_group_info_signed_by_a_blank_leaf_is_rejected() -> None:
    # Bob is removed and dave takes his leaf, so leaf 3 stays blank; the
    # GroupInfo names it as signer and is otherwise validly signed (by alice).
    welcome = rewrite_welcome(
        welcome_for_dave(proposals=[Remove(1)]),
        bundle(DAVE),
        group_info=lambda info: replace(info, signer=3),
    )
    assert_join_rejected(welcome, GroupInfoMismatch)


def test_wel_8_group_info_for_another_cipher_suite_is_rejected() -> None:
    welcome = dave_welcome(group_info=edit_context(cipher_suite=3))
    assert_join_rejected(welcome, GroupInfoMismatch)


def test_wel_9_ratchet_tree_not_matching_the_tree_hash_is_rejected() -> None:
    welcome = dave_welcome(group_info=edit_context(tree_hash=b"\x00" * SUITE.hash_length))
    assert_join_rejected(welcome, TreeHashMismatch)


def test_wel_10_ratchet_tree_that_is_not_parent_hash_valid_is_rejected() -> None:
    def tamper(info: GroupInfo) -> GroupInfo:
        tree = tree_of(info)
        root = parent_at(tree, tree.root)
        new_root = replace(root, parent_hash=b"\x01")
        return with_tree(info, replace_node(tree, tree.root, new_root))

    assert_join_rejected(dave_welcome(group_info=tamper), ParentHashMismatch)


def test_wel_11_ratchet_tree_with_an_invalid_leaf_is_rejected() -> None:
    refuses_bob = GroupConfig(credential_validator=rejecting(BOB))
    assert_join_rejected(welcome_for_dave(), InvalidCredential, config=refuses_bob)


def test_wel_12_welcome_whose_tree_lacks_our_leaf_is_rejected() -> None:
    # Another KeyPackage with dave's init key: the secrets open, but the
    # tree holds dave's original leaf, not this one.
    dave = bundle(DAVE)
    other_leaf = bundle(DAVE, variant=b"other leaf").key_package.leaf_node
    impostor = sign_key_package(
        replace(dave.key_package, leaf_node=other_leaf), dave.signature_private_key
    )
    welcome = rewrite_welcome(welcome_for_dave(), dave, recipient=impostor)
    joiner = KeyPackageBundle(
        key_package=impostor,
        init_private_key=dave.init_private_key,
        encryption_private_key=bundle(DAVE, variant=b"other leaf").encryption_private_key,
        signature_private_key=dave.signature_private_key,
    )
    assert_join_rejected(welcome, OwnLeafNotFound, joiner=joiner)


def test_wel_13_path_secret_not_matching_the_tree_is_rejected() -> None:
    welcome = dave_welcome(
        group_secrets=lambda secrets: replace(
            secrets, path_secret=PathSecret(b"\x00" * SUITE.hash_length)
        )
    )
    assert_join_rejected(welcome, PrivateKeyMismatch)


def test_wel_14_group_info_with_a_wrong_confirmation_tag_is_rejected() -> None:
    welcome = dave_welcome(
        group_info=lambda info: replace(info, confirmation_tag=flip(info.confirmation_tag)),
        retag=False,
    )
    assert_join_rejected(welcome, ConfirmationTagMismatch)


def test_wel_15_welcome_without_a_ratchet_tree_is_rejected() -> None:
    def drop_tree(info: GroupInfo) -> GroupInfo:
        kept = tuple(e for e in info.extensions if e.extension_type != ExtensionType.RATCHET_TREE)
        return replace(info, extensions=kept)

    assert_join_rejected(dave_welcome(group_info=drop_tree), MissingRatchetTree)


def welcome_into_custom_group(dave: KeyPackageBundle) -> bytes:
    """
    Alice, bob and carol all support CUSTOM_EXTENSION; alice adds ``dave``. Dave's Welcome.
    """
    custom = capabilities_with(CUSTOM_EXTENSION)
    alice, _, _ = make_group(
        bundle(ALICE, capabilities=custom),
        bundle(BOB, capabilities=custom),
        bundle(CAROL, capabilities=custom),
    )
    pending = alice.commit(rng=rng_for(b"add dave"), proposals=[Add(dave.key_package)])
    assert pending.welcome is not None
    return pending.welcome


def test_wel_16_group_using_an_extension_we_do_not_support_is_rejected() -> None:
    # Every member but dave supports the extension the GroupInfo says the
    # group uses.
    dave = bundle(DAVE)
    extensions = (Extension(CUSTOM_EXTENSION, b""),)
    welcome = rewrite_welcome(
        welcome_into_custom_group(dave), dave, group_info=edit_context(extensions=extensions)
    )
    assert_join_rejected(welcome, UnsupportedCapability, joiner=dave)


def test_wel_17_group_info_with_two_extensions_of_one_type_is_rejected() -> None:
    def duplicate(info: GroupInfo) -> GroupInfo:
        return replace(info, extensions=(*info.extensions, info.extensions[0]))

    assert_join_rejected(dave_welcome(group_info=duplicate), DuplicateExtension)


def test_wel_18_group_context_with_two_extensions_of_one_type_is_rejected() -> None:
    dave = bundle(DAVE, capabilities=capabilities_with(CUSTOM_EXTENSION))
    twice = (Extension(CUSTOM_EXTENSION, b"one"), Extension(CUSTOM_EXTENSION, b"two"))
    welcome = rewrite_welcome(
        welcome_into_custom_group(dave), dave, group_info=edit_context(extensions=twice)
    )
    assert_join_rejected(welcome, DuplicateExtension, joiner=dave)


# == §12.4.3.2 External commits (EXT) ==================================================


def test_ext_0_valid_external_commit_is_accepted() -> None:
    # The baseline the EXT tests break one rule of.
    alice, _, _ = make_group()
    staged = alice.process(forge_external_commit(alice, DAVE))
    assert isinstance(staged, StagedCommit)
    assert staged.committer == 3


def test_ext_1_external_commit_without_an_external_init_is_rejected() -> None:
    alice, _, _ = make_group()
    message = forge_external_commit(alice, DAVE, proposals=lambda init: ())
    assert_rejects(alice, message, InvalidExternalCommit)


def test_ext_2_external_commit_with_two_external_inits_is_rejected() -> None:
    alice, _, _ = make_group()
    message = forge_external_commit(alice, DAVE, proposals=lambda init: (init, init))
    assert_rejects(alice, message, InvalidExternalCommit)


def test_ext_3_external_commit_with_two_removes_is_rejected() -> None:
    alice, _, _ = make_group()
    message = forge_external_commit(
        alice, DAVE, proposals=lambda init: (init, Remove(1), Remove(2))
    )
    assert_rejects(alice, message, InvalidExternalCommit)


def test_ext_4_external_commit_with_another_proposal_type_is_rejected() -> None:
    alice, _, _ = make_group()
    message = forge_external_commit(
        alice, DAVE, proposals=lambda init: (init, Add(bundle(b"erin").key_package))
    )
    assert_rejects(alice, message, InvalidExternalCommit)


def test_ext_5_external_commit_without_a_path_is_rejected() -> None:
    alice, _, _ = make_group()
    assert_rejects(alice, forge_external_commit(alice, DAVE, path=False), InvalidExternalCommit)


def test_ext_6_external_commit_with_a_proposal_by_reference_is_rejected() -> None:
    alice, bob, _ = make_group()
    ref = sender_ref(alice, member_message(bob, Remove(2)))
    message = forge_external_commit(alice, DAVE, proposals=lambda init: (init, ProposalRef(ref)))
    assert_rejects(alice, message, InvalidExternalCommit)


def test_ext_7_external_commit_not_signed_by_its_path_leaf_is_rejected() -> None:
    alice, _, _ = make_group()
    message = forge_external_commit(alice, DAVE, signer=bundle(b"erin").signature_private_key)
    assert_rejects(alice, message, InvalidSignature)


def test_ext_8_resync_with_a_credential_not_the_removed_members_is_rejected() -> None:
    # Townsquare choice: a resync keeps the removed member's credential.
    alice, _, _ = make_group()
    message = forge_external_commit(alice, b"mallory", proposals=lambda init: (init, Remove(1)))
    assert_rejects(alice, message, InvalidExternalCommit)


def test_ext_9_resync_keeping_the_removed_leafs_encryption_key_is_rejected() -> None:
    # The new leaf must meet the criteria of an Update of the removed leaf
    # (§12.1.2, §7.3): its encryption key must differ from bob's.
    alice, bob, _ = make_group()
    bob_leaf = bob.tree.leaf(bob.own_leaf)
    assert bob_leaf is not None
    message = forge_external_commit(
        alice,
        b"bob again",
        proposals=lambda init: (init, Remove(1)),
        credential=BasicCredential(BOB),
        edit=PathEdit(leaf=lambda leaf: replace(leaf, encryption_key=bob_leaf.encryption_key)),
    )
    assert_rejects(alice, message, EncryptionKeyNotUpdated)
