"""
PrivateMessage protection (RFC 9420 §6.3): every rejection has its own error and changes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable

import pytest

from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.commit import Commit
from townsquare.mls.errors import (
    DecryptError,
    GenerationError,
    InvalidPadding,
    InvalidSender,
    InvalidSignature,
    Truncated,
    UsageError,
    WrongEpoch,
    WrongGroup,
)
from townsquare.mls.framing import (
    ApplicationData,
    AuthenticatedContent,
    Content,
    ExternalSenderRef,
    FramedContent,
    MemberSender,
    PrivateContentAAD,
    PrivateMessage,
    Sender,
    SenderData,
    SenderDataAAD,
)
from townsquare.mls.group_context import GroupContext
from townsquare.mls.private_message import (
    PrivateMessageContent,
    apply_reuse_guard,
    decode_private_message_content,
    encode_private_message_content,
    protect_private,
    unprotect_private,
)
from townsquare.mls.proposals import Remove
from townsquare.mls.public_message import authenticate_content
from townsquare.mls.registries import ContentType, WireFormat
from townsquare.mls.secret_tree import SecretTree, ratchet_kind_for, sender_data_key_nonce
from townsquare.mls.tree_math import LeafIndex

SUITE = get_cipher_suite(1)
CONTEXT = GroupContext(
    cipher_suite=SUITE.suite_id,
    group_id=b"village",
    epoch=7,
    tree_hash=bytes(32),
    confirmed_transcript_hash=bytes(range(32)),
)
ENCRYPTION_SECRET = b"e" * SUITE.hash_length
SENDER_DATA_SECRET = b"s" * SUITE.hash_length
SENDER = LeafIndex(1)
MEMBER = MemberSender(SENDER)
HELLO = ApplicationData(b"hello")


def _key_pair(seed: bytes) -> tuple[bytes, bytes]:
    return SUITE.generate_signature_key_pair(lambda n: hashlib.sha256(seed).digest()[:n])


PRIV, PUB = _key_pair(b"alice")
_, OTHER_PUB = _key_pair(b"mallory")


def _rng(n: int) -> bytes:
    return bytes(range(1, n + 1))


def _tree(n_leaves: int = 4, **limits: int) -> SecretTree:
    return SecretTree(SUITE, ENCRYPTION_SECRET, n_leaves, **limits)


def _signed(content: Content, sender: Sender = MEMBER) -> AuthenticatedContent:
    return authenticate_content(
        SUITE,
        FramedContent(
            group_id=CONTEXT.group_id,
            epoch=CONTEXT.epoch,
            sender=sender,
            authenticated_data=b"aad",
            content=content,
        ),
        wire_format=WireFormat.MLS_PRIVATE_MESSAGE,
        signature_private_key=PRIV,
        group_context=CONTEXT,
        confirmation_tag=b"t" * 32 if isinstance(content, Commit) else None,
    )


def _protect(
    content: Content = HELLO,
    *,
    tree: SecretTree | None = None,
    padding_length: int = 0,
) -> PrivateMessage:
    return protect_private(
        SUITE,
        _signed(content),
        secret_tree=_tree() if tree is None else tree,
        sender_data_secret=SENDER_DATA_SECRET,
        rng=_rng,
        padding_length=padding_length,
    )


def _members(leaf: LeafIndex) -> bytes | None:
    return {0: OTHER_PUB, 1: PUB}.get(leaf)


def _unprotect(
    message: PrivateMessage,
    tree: SecretTree,
    *,
    context: GroupContext = CONTEXT,
    lookup: Callable[[LeafIndex], bytes | None] = _members,
) -> AuthenticatedContent:
    return unprotect_private(
        SUITE,
        message,
        secret_tree=tree,
        sender_data_secret=SENDER_DATA_SECRET,
        group_context=context,
        signature_key_for=lookup,
    )


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x80]) + data[index + 1 :]


def _seal_plaintext(plaintext: bytes, sender_tree: SecretTree) -> PrivateMessage:
    """
    Encrypt an arbitrary PrivateMessageContent encoding as an honest sender would.
    """
    content_type = ContentType.APPLICATION
    ratchet = sender_tree.next_key_nonce(SENDER, ratchet_kind_for(content_type))
    guard = _rng(4)
    aad = PrivateContentAAD(
        group_id=CONTEXT.group_id,
        epoch=CONTEXT.epoch,
        content_type=content_type,
        authenticated_data=b"aad",
    )
    ciphertext = SUITE.aead_seal(
        ratchet.key, apply_reuse_guard(ratchet.nonce, guard), aad.encode(), plaintext
    )
    sender_key = sender_data_key_nonce(SUITE, SENDER_DATA_SECRET, ciphertext)
    encrypted_sender_data = SUITE.aead_seal(
        sender_key.key,
        sender_key.nonce,
        SenderDataAAD(CONTEXT.group_id, CONTEXT.epoch, content_type).encode(),
        SenderData(SENDER, ratchet.generation, guard).encode(),
    )
    return PrivateMessage(
        group_id=CONTEXT.group_id,
        epoch=CONTEXT.epoch,
        content_type=content_type,
        authenticated_data=b"aad",
        encrypted_sender_data=encrypted_sender_data,
        ciphertext=ciphertext,
    )


def _assert_rejected(
    error: type[Exception],
    message: PrivateMessage,
    tree: SecretTree,
    *,
    context: GroupContext = CONTEXT,
    lookup: Callable[[LeafIndex], bytes | None] = _members,
) -> None:
    before = tree.snapshot()
    with pytest.raises(error):
        _unprotect(message, tree, context=context, lookup=lookup)
    assert tree.snapshot() == before


@pytest.mark.parametrize(
    "content",
    [ApplicationData(b"hello"), Remove(2), Commit(proposals=())],
    ids=["application", "proposal", "commit"],
)
def test_round_trip_consumes_the_key(content: Content) -> None:
    message = PrivateMessage.decode(_protect(content, padding_length=17).encode())
    tree = _tree()
    before = tree.snapshot()
    assert _unprotect(message, tree) == _signed(content)
    assert tree.snapshot() != before
    # RFC 9420 §9.2: the consumed key is deleted, so the same message fails.
    _assert_rejected(GenerationError, message, tree)


def test_out_of_order_delivery() -> None:
    sender = _tree()
    messages = [_protect(ApplicationData(bytes([i])), tree=sender) for i in range(3)]
    receiver = _tree()
    for i in (2, 0, 1):
        content = _unprotect(messages[i], receiver).content.content
        assert content == ApplicationData(bytes([i]))


def test_tampered_ciphertext_is_rejected() -> None:
    message = _protect()
    # The last byte lies past the sender-data sample, so the sender data still
    # decrypts and the content AEAD is what fails.
    assert len(message.ciphertext) > SUITE.hash_length
    tampered = dataclasses.replace(message, ciphertext=_flip(message.ciphertext, -1))
    _assert_rejected(DecryptError, tampered, _tree())


def test_tampered_ciphertext_sample_is_rejected() -> None:
    message = _protect()
    tampered = dataclasses.replace(message, ciphertext=_flip(message.ciphertext, 0))
    _assert_rejected(DecryptError, tampered, _tree())


def test_tampered_sender_data_is_rejected() -> None:
    message = _protect()
    tampered = dataclasses.replace(
        message, encrypted_sender_data=_flip(message.encrypted_sender_data, 2)
    )
    _assert_rejected(DecryptError, tampered, _tree())


def test_tampered_authenticated_data_is_rejected() -> None:
    message = dataclasses.replace(_protect(), authenticated_data=b"aaX")
    _assert_rejected(DecryptError, message, _tree())


def test_message_for_other_epoch_is_rejected() -> None:
    message = dataclasses.replace(_protect(), epoch=8)
    _assert_rejected(WrongEpoch, message, _tree())


def test_message_for_other_group_is_rejected() -> None:
    message = dataclasses.replace(_protect(), group_id=b"town")
    _assert_rejected(WrongGroup, message, _tree())


def test_epoch_and_group_are_bound_by_the_aad() -> None:
    # A receiver at the message's claimed epoch and group still fails: the
    # sender data AAD covers both.
    message = dataclasses.replace(_protect(), epoch=8)
    _assert_rejected(DecryptError, message, _tree(), context=dataclasses.replace(CONTEXT, epoch=8))
    message = dataclasses.replace(_protect(), group_id=b"town")
    context = dataclasses.replace(CONTEXT, group_id=b"town")
    _assert_rejected(DecryptError, message, _tree(), context=context)


def test_content_type_is_bound_by_the_aad() -> None:
    message = dataclasses.replace(_protect(), content_type=ContentType.PROPOSAL)
    _assert_rejected(DecryptError, message, _tree())


def test_non_zero_padding_is_rejected() -> None:
    plaintext = encode_private_message_content(
        PrivateMessageContent(
            content=ApplicationData(b"hi"), signature=_signed(ApplicationData(b"hi")).signature
        )
    )
    message = _seal_plaintext(plaintext + b"\x00\x00\x01\x00", _tree())
    _assert_rejected(InvalidPadding, message, _tree())


def test_truncated_content_is_rejected() -> None:
    message = _seal_plaintext(b"\x05hi", _tree())
    _assert_rejected(Truncated, message, _tree())


def test_bad_signature_is_rejected() -> None:
    signed = _signed(ApplicationData(b"hello"))
    forged = dataclasses.replace(signed, signature=_flip(signed.signature, 0))
    message = protect_private(
        SUITE, forged, secret_tree=_tree(), sender_data_secret=SENDER_DATA_SECRET, rng=_rng
    )
    _assert_rejected(InvalidSignature, message, _tree())


def test_signature_of_other_member_is_rejected() -> None:
    _assert_rejected(InvalidSignature, _protect(), _tree(), lookup=lambda leaf: OTHER_PUB)


def test_replayed_generation_is_rejected() -> None:
    message = _protect()
    tree = _tree()
    _unprotect(message, tree)
    _assert_rejected(GenerationError, message, tree)


def test_generation_beyond_window_is_rejected() -> None:
    sender = _tree()
    messages = [_protect(tree=sender) for _ in range(4)]
    receiver = _tree(max_forward_distance=2)
    _assert_rejected(GenerationError, messages[3], receiver)
    _unprotect(messages[2], receiver)


def test_leaf_index_out_of_range_is_rejected() -> None:
    # Sent from leaf 1 of a 4-leaf tree, received by a tree of 1 leaf.
    _assert_rejected(InvalidSender, _protect(), SecretTree(SUITE, ENCRYPTION_SECRET, 1))


def test_blank_sender_leaf_is_rejected() -> None:
    _assert_rejected(InvalidSender, _protect(), _tree(), lookup=lambda leaf: None)


def test_only_members_send_private_messages() -> None:
    tree = _tree()
    before = tree.snapshot()
    with pytest.raises(InvalidSender):
        protect_private(
            SUITE,
            _signed(Remove(2), ExternalSenderRef(0)),
            secret_tree=tree,
            sender_data_secret=SENDER_DATA_SECRET,
            rng=_rng,
        )
    assert tree.snapshot() == before


def test_bad_rng_takes_no_generation() -> None:
    tree = _tree()
    before = tree.snapshot()
    with pytest.raises(UsageError):
        protect_private(
            SUITE,
            _signed(ApplicationData(b"x")),
            secret_tree=tree,
            sender_data_secret=SENDER_DATA_SECRET,
            rng=lambda n: b"",
        )
    assert tree.snapshot() == before


def test_content_signed_for_public_wire_format_is_refused() -> None:
    signed = dataclasses.replace(
        _signed(ApplicationData(b"x")), wire_format=WireFormat.MLS_PUBLIC_MESSAGE
    )
    with pytest.raises(UsageError):
        protect_private(
            SUITE, signed, secret_tree=_tree(), sender_data_secret=SENDER_DATA_SECRET, rng=_rng
        )


@pytest.mark.parametrize(
    ("content", "content_type", "tag"),
    [
        (ApplicationData(b"hi"), ContentType.APPLICATION, None),
        (Remove(9), ContentType.PROPOSAL, None),
        (Commit(proposals=()), ContentType.COMMIT, b"tag"),
    ],
    ids=["application", "proposal", "commit"],
)
def test_private_message_content_round_trips(
    content: Content, content_type: ContentType, tag: bytes | None
) -> None:
    value = PrivateMessageContent(
        content=content, signature=b"sig", confirmation_tag=tag, padding_length=5
    )
    data = encode_private_message_content(value)
    assert data.endswith(bytes(5))
    assert decode_private_message_content(data, content_type) == value


def test_private_message_content_rejects_mismatched_tag_and_padding() -> None:
    with pytest.raises(UsageError):
        encode_private_message_content(
            PrivateMessageContent(content=Remove(1), signature=b"", confirmation_tag=b"t")
        )
    with pytest.raises(UsageError):
        encode_private_message_content(
            PrivateMessageContent(content=Remove(1), signature=b"", padding_length=-1)
        )
