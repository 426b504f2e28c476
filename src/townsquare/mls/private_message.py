"""
PrivateMessage protection (RFC 9420 §6.3, §6.3.1, §6.3.2).

Protecting a signed AuthenticatedContent::

    PrivateMessageContent = content ‖ signature [‖ confirmation_tag] ‖ zero padding
    key, nonce, generation  = secret tree, sender's ratchet for the content type
    ciphertext              = AEAD(key, nonce XOR reuse_guard, PrivateContentAAD, content)
    encrypted_sender_data   = AEAD(sender_data key/nonce from ciphertext sample,
                                   SenderDataAAD, SenderData(leaf, generation, reuse_guard))

Unprotecting reverses it in this order, and a failure at any step leaves the
secret tree as it was: group and epoch; sender data decryption; leaf index in
range and not blank; the generation's key (looked up, not consumed); content
decryption; PrivateMessageContent parsing and zero padding; signature; and
only then is the key consumed (RFC 9420 §9.2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from townsquare.mls.ciphersuite import CipherSuite
from townsquare.mls.codec import Reader, Writer
from townsquare.mls.commit import Commit
from townsquare.mls.errors import InvalidPadding, InvalidSender, UsageError
from townsquare.mls.framing import (
    ApplicationData,
    AuthenticatedContent,
    Content,
    FramedContent,
    MemberSender,
    PrivateContentAAD,
    PrivateMessage,
    SenderData,
    SenderDataAAD,
)
from townsquare.mls.group_context import GroupContext
from townsquare.mls.proposals import PROPOSAL, Proposal
from townsquare.mls.public_message import check_group_and_epoch, verify_content_signature
from townsquare.mls.registries import ContentType, WireFormat
from townsquare.mls.secret_tree import SecretTree, ratchet_kind_for, sender_data_key_nonce
from townsquare.mls.tree_math import LeafIndex

__all__ = [
    "REUSE_GUARD_LENGTH",
    "PrivateMessageContent",
    "SignatureKeyLookup",
    "apply_reuse_guard",
    "decode_private_message_content",
    "encode_private_message_content",
    "protect_private",
    "unprotect_private",
]

# RFC 9420 §6.3.2: "opaque reuse_guard[4];"
REUSE_GUARD_LENGTH = 4

SignatureKeyLookup = Callable[[LeafIndex], bytes | None]
"""Given a leaf index inside the tree, the signature key of its member, or None if it is blank."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PrivateMessageContent:
    """
    RFC 9420 §6.3.1::

        struct {
            select (PrivateMessage.content_type) {
                case application:
                  opaque application_data<V>;

                case proposal:
                  Proposal proposal;

                case commit:
                  Commit commit;
            };

            FramedContentAuthData auth;
            opaque padding[length_of_padding];
        } PrivateMessageContent;

    Not a codec ``Struct``: its select is on a field of the enclosing
    PrivateMessage, so it is encoded and decoded by the functions below.
    ``FramedContentAuthData`` is inline; the padding, all zero, is kept as its length.
    """

    content: Content
    signature: bytes
    confirmation_tag: bytes | None = None
    padding_length: int = 0


def encode_private_message_content(value: PrivateMessageContent) -> bytes:
    """
    Encode a PrivateMessageContent: the content without its type, auth, then zero padding.

    :param value: the content.
    :returns: its encoding.
    :raises UsageError: if a commit lacks a confirmation tag, other content has
        one, or the padding length is negative.
    """
    is_commit = isinstance(value.content, Commit)
    if (value.confirmation_tag is not None) != is_commit:
        raise UsageError("a confirmation tag goes with a commit, and only with a commit")
    if value.padding_length < 0:
        raise UsageError("padding length must not be negative")
    w = Writer()
    content = value.content
    if isinstance(content, ApplicationData):
        ApplicationData.encode_into(w, content)
    elif isinstance(content, Commit):
        Commit.encode_into(w, content)
    else:
        PROPOSAL.encode_into(w, content)
    w.opaque(value.signature)
    if value.confirmation_tag is not None:
        w.opaque(value.confirmation_tag)
    # RFC 9420 §6.3.1: "The padding field is set by the sender, by first
    # encoding the content (via the select) and the auth field, and then
    # appending the chosen number of zero bytes."
    w.fixed(bytes(value.padding_length))
    return w.getvalue()


def decode_private_message_content(data: bytes, content_type: ContentType) -> PrivateMessageContent:
    """
    Decode a PrivateMessageContent whose select is ``content_type``.

    :param data: the decrypted plaintext.
    :param content_type: the enclosing PrivateMessage's content_type.
    :returns: the content.
    :raises DecodeError: if the content or auth field is malformed.
    :raises InvalidPadding: if the padding holds a non-zero byte.
    """
    r = Reader(data)
    content: Content
    if content_type == ContentType.APPLICATION:
        content = ApplicationData.decode_from(r)
    elif content_type == ContentType.PROPOSAL:
        proposal: Proposal = PROPOSAL.decode_from(r)
        content = proposal
    else:
        content = Commit.decode_from(r)
    signature = r.opaque()
    confirmation_tag = r.opaque() if content_type == ContentType.COMMIT else None
    # RFC 9420 §6.3.1: "the padding field comprises any remaining octets of
    # plaintext. ... A receiver MUST verify that there are no non-zero bytes in
    # the padding field, and if this check fails, the enclosing PrivateMessage
    # MUST be rejected as malformed."
    padding = r.rest()
    if padding.strip(b"\x00"):
        raise InvalidPadding("PrivateMessageContent padding holds a non-zero byte")
    r.finish()
    return PrivateMessageContent(
        content=content,
        signature=signature,
        confirmation_tag=confirmation_tag,
        padding_length=len(padding),
    )


def apply_reuse_guard(nonce: bytes, reuse_guard: bytes) -> bytes:
    """
    XOR the reuse guard into the first four bytes of a ratchet nonce (RFC 9420 §6.3.1).

    :param nonce: the nonce from the key schedule.
    :param reuse_guard: the four-byte guard.
    :returns: the nonce to encrypt or decrypt with.
    """
    head = bytes(a ^ b for a, b in zip(nonce[:REUSE_GUARD_LENGTH], reuse_guard, strict=True))
    return head + nonce[REUSE_GUARD_LENGTH:]


def protect_private(
    suite: CipherSuite,
    auth_content: AuthenticatedContent,
    *,
    secret_tree: SecretTree,
    sender_data_secret: bytes,
    rng: Callable[[int], bytes],
    padding_length: int = 0,
) -> PrivateMessage:
    """
    Encrypt signed content as a PrivateMessage (RFC 9420 §6.3), consuming one ratchet generation.

    :param suite: the group's cipher suite.
    :param auth_content: content from a member, signed for ``mls_private_message``.
    :param secret_tree: this epoch's secret tree (the sender's own view).
    :param sender_data_secret: this epoch's sender_data_secret.
    :param rng: the randomness source (for the reuse guard).
    :param padding_length: how many zero bytes of padding to add.
    :returns: the PrivateMessage.
    :raises InvalidSender: if the sender is not a member.
    :raises GenerationError: if the sender's ratchet is exhausted.
    :raises UsageError: if the content was signed for another wire format, its
        confirmation tag does not match its type, the padding is negative or
        ``rng`` returns the wrong number of bytes.
    """
    content = auth_content.content
    sender = content.sender
    if not isinstance(sender, MemberSender):
        # RFC 9420 §6.3.2: "When constructing a SenderData object from a Sender
        # object, the sender MUST verify Sender.sender_type is member and use
        # Sender.leaf_index for SenderData.leaf_index."
        raise InvalidSender("only a member can send a PrivateMessage")
    if auth_content.wire_format != WireFormat.MLS_PRIVATE_MESSAGE:
        raise UsageError("content signed for another wire format than mls_private_message")
    content_type = content.content_type
    plaintext = encode_private_message_content(
        PrivateMessageContent(
            content=content.content,
            signature=auth_content.signature,
            confirmation_tag=auth_content.confirmation_tag,
            padding_length=padding_length,
        )
    )
    # RFC 9420 §6.3.1: "the sender of a message MUST generate a fresh random
    # four-byte "reuse guard" value and XOR it with the first four bytes of the
    # nonce from the key schedule before using the nonce for encryption."
    reuse_guard = rng(REUSE_GUARD_LENGTH)
    if len(reuse_guard) != REUSE_GUARD_LENGTH:
        raise UsageError(f"rng returned {len(reuse_guard)} bytes, not {REUSE_GUARD_LENGTH}")
    # Everything that can fail has been done: only now is a generation taken.
    ratchet = secret_tree.next_key_nonce(
        LeafIndex(sender.leaf_index), ratchet_kind_for(content_type)
    )
    content_aad = PrivateContentAAD(
        group_id=content.group_id,
        epoch=content.epoch,
        content_type=content_type,
        authenticated_data=content.authenticated_data,
    )
    ciphertext = suite.aead_seal(
        ratchet.key,
        apply_reuse_guard(ratchet.nonce, reuse_guard),
        content_aad.encode(),
        plaintext,
    )
    # RFC 9420 §6.3.1: "The sender MUST include the reuse guard in the
    # reuse_guard field of the sender data object".
    sender_data = SenderData(sender.leaf_index, ratchet.generation, reuse_guard)
    sender_data_aad = SenderDataAAD(content.group_id, content.epoch, content_type)
    sender_key = sender_data_key_nonce(suite, sender_data_secret, ciphertext)
    encrypted_sender_data = suite.aead_seal(
        sender_key.key, sender_key.nonce, sender_data_aad.encode(), sender_data.encode()
    )
    return PrivateMessage(
        group_id=content.group_id,
        epoch=content.epoch,
        content_type=content_type,
        authenticated_data=content.authenticated_data,
        encrypted_sender_data=encrypted_sender_data,
        ciphertext=ciphertext,
    )


def unprotect_private(
    suite: CipherSuite,
    message: PrivateMessage,
    *,
    secret_tree: SecretTree,
    sender_data_secret: bytes,
    group_context: GroupContext,
    signature_key_for: SignatureKeyLookup,
) -> AuthenticatedContent:
    """
    Decrypt and verify a PrivateMessage (RFC 9420 §6.3), consuming its key only on success.

    :param suite: the group's cipher suite.
    :param message: the received message.
    :param secret_tree: this epoch's secret tree.
    :param sender_data_secret: this epoch's sender_data_secret.
    :param group_context: the current GroupContext.
    :param signature_key_for: the signature key of a leaf's member, None if the leaf is blank.
    :returns: the authenticated content (its commit's confirmation tag is checked
        later by the key schedule, RFC 9420 §8.1).
    :raises WrongGroup: if the message is for another group.
    :raises WrongEpoch: if the message is for another epoch.
    :raises DecryptError: if the sender data or the content does not decrypt.
    :raises DecodeError: if the decrypted SenderData or PrivateMessageContent is malformed.
    :raises InvalidSender: if the leaf index is outside the tree or blank.
    :raises GenerationError: if the generation was consumed, is too old or too far ahead.
    :raises InvalidPadding: if the padding holds a non-zero byte.
    :raises InvalidSignature: if the signature does not verify.
    :raises InvalidKey: if the member's signature key is not valid for the suite.
    """
    check_group_and_epoch(message.group_id, message.epoch, group_context)
    content_type = message.content_type

    sender_key = sender_data_key_nonce(suite, sender_data_secret, message.ciphertext)
    sender_data_aad = SenderDataAAD(message.group_id, message.epoch, content_type)
    sender_data = SenderData.decode(
        suite.aead_open(
            sender_key.key,
            sender_key.nonce,
            sender_data_aad.encode(),
            message.encrypted_sender_data,
        )
    )
    leaf = LeafIndex(sender_data.leaf_index)
    # RFC 9420 §6.3.2: "When parsing a SenderData struct as part of message
    # decryption, the recipient MUST verify that the leaf index indicated in
    # the leaf_index field identifies a non-blank node."
    if leaf >= secret_tree.n_leaves:
        raise InvalidSender(f"leaf {leaf} is outside a tree of {secret_tree.n_leaves} leaves")
    signature_public_key = signature_key_for(leaf)
    if signature_public_key is None:
        raise InvalidSender(f"leaf {leaf} is blank")

    # Looked up, not consumed: a failure below must leave the tree as it was.
    ratchet = secret_tree.key_nonce(leaf, ratchet_kind_for(content_type), sender_data.generation)
    content_aad = PrivateContentAAD(
        group_id=message.group_id,
        epoch=message.epoch,
        content_type=content_type,
        authenticated_data=message.authenticated_data,
    )
    plaintext = suite.aead_open(
        ratchet.key,
        apply_reuse_guard(ratchet.nonce, sender_data.reuse_guard),
        content_aad.encode(),
        message.ciphertext,
    )
    private_content = decode_private_message_content(plaintext, content_type)
    auth_content = AuthenticatedContent(
        wire_format=WireFormat.MLS_PRIVATE_MESSAGE,
        content=FramedContent(
            group_id=message.group_id,
            epoch=message.epoch,
            sender=MemberSender(leaf),
            authenticated_data=message.authenticated_data,
            content=private_content.content,
        ),
        signature=private_content.signature,
        confirmation_tag=private_content.confirmation_tag,
    )
    # RFC 9420 §6.3.1: "When decoding a PrivateMessageContent, the application
    # MUST check that the FramedContentAuthData is valid."
    verify_content_signature(
        suite,
        auth_content,
        signature_public_key=signature_public_key,
        group_context=group_context,
    )
    # Townsquare choice: the key is consumed (and deleted, RFC 9420 §9.2) only
    # once the whole message is accepted. Every member can derive every
    # leaf's keys, so consuming on AEAD success alone would let one member
    # burn another's generation with a message whose signature fails.
    secret_tree.consume(ratchet)
    return auth_content
