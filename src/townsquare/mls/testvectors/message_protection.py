"""
Checks ``message-protection.json``: PublicMessage and PrivateMessage protection (RFC 9420 §6).

For each of the proposal, the commit and the application data, exactly as
FORMAT.md lists: the given PublicMessage unprotects to the raw value (for
the application data, protecting as a PublicMessage must fail instead); a
fresh PublicMessage protected from the raw value unprotects; the given
PrivateMessage unprotects with a fresh two-leaf secret tree; and a fresh
PrivateMessage protected from the raw value unprotects.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping

from townsquare.mls.ciphersuite import CipherSuite, get_cipher_suite
from townsquare.mls.commit import Commit
from townsquare.mls.errors import InvalidContentType
from townsquare.mls.framing import (
    ApplicationData,
    AuthenticatedContent,
    Content,
    FramedContent,
    MemberSender,
    MLSMessage,
    PrivateMessage,
    PublicMessage,
)
from townsquare.mls.group_context import GroupContext
from townsquare.mls.private_message import protect_private, unprotect_private
from townsquare.mls.proposals import PROPOSAL, Proposal
from townsquare.mls.public_message import authenticate_content, protect_public, unprotect_public
from townsquare.mls.registries import ProtocolVersion, WireFormat
from townsquare.mls.secret_tree import SecretTree
from townsquare.mls.testvectors.fields import VectorMismatch, expect_equal, hex_field, int_field
from townsquare.mls.tree_math import LeafIndex

# FORMAT.md: "In all of these tests, use the member with LeafIndex 1 as the sender".
_SENDER = LeafIndex(1)


def _seeded_rng(seed: bytes) -> Callable[[int], bytes]:
    """
    A deterministic byte stream, so that a failing run replays exactly.
    """
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            out += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
            counter += 1
        return out[:n]

    return rng


def _public(data: bytes, what: str) -> PublicMessage:
    body = MLSMessage.decode(data).body
    if not isinstance(body, PublicMessage):
        raise VectorMismatch(f"{what} is not an MLSMessage(PublicMessage)")
    return body


def _private(data: bytes, what: str) -> PrivateMessage:
    body = MLSMessage.decode(data).body
    if not isinstance(body, PrivateMessage):
        raise VectorMismatch(f"{what} is not an MLSMessage(PrivateMessage)")
    return body


def _encode_content(content: Content) -> bytes:
    if isinstance(content, ApplicationData):
        return content.data
    if isinstance(content, Commit):
        return content.encode()
    return PROPOSAL.encode(content)


def _decode_content(name: str, raw: bytes) -> Content:
    if name == "application":
        return ApplicationData(raw)
    if name == "commit":
        return Commit.decode(raw)
    proposal: Proposal = PROPOSAL.decode(raw)
    return proposal


def _expect_content(what: str, auth_content: AuthenticatedContent, raw: bytes) -> None:
    expect_equal(f"{what} sender", auth_content.content.sender, MemberSender(_SENDER))
    expect_equal(f"{what} content", _encode_content(auth_content.content.content), raw)


class _Case:
    """
    The fixed inputs of one vector entry.
    """

    def __init__(self, case: Mapping[str, object]) -> None:
        cipher_suite = int_field(case, "cipher_suite")
        self.suite: CipherSuite = get_cipher_suite(cipher_suite)
        self.group_context = GroupContext(
            cipher_suite=cipher_suite,
            group_id=hex_field(case, "group_id"),
            epoch=int_field(case, "epoch"),
            tree_hash=hex_field(case, "tree_hash"),
            confirmed_transcript_hash=hex_field(case, "confirmed_transcript_hash"),
        )
        self.signature_priv = hex_field(case, "signature_priv")
        self.signature_pub = hex_field(case, "signature_pub")
        self.encryption_secret = hex_field(case, "encryption_secret")
        self.sender_data_secret = hex_field(case, "sender_data_secret")
        self.membership_key = hex_field(case, "membership_key")

    def new_tree(self) -> SecretTree:
        # FORMAT.md: "Initialize a secret tree for 2 members with the
        # specified encryption_secret".
        return SecretTree(self.suite, self.encryption_secret, 2)

    def signature_key_for(self, leaf: LeafIndex) -> bytes | None:
        return self.signature_pub if leaf == _SENDER else None

    def sign(
        self, content: Content, wire_format: WireFormat, confirmation_tag: bytes | None
    ) -> AuthenticatedContent:
        framed = FramedContent(
            group_id=self.group_context.group_id,
            epoch=self.group_context.epoch,
            sender=MemberSender(_SENDER),
            content=content,
        )
        return authenticate_content(
            self.suite,
            framed,
            wire_format=wire_format,
            signature_private_key=self.signature_priv,
            group_context=self.group_context,
            confirmation_tag=confirmation_tag,
        )

    def unprotect_public(self, message: PublicMessage) -> AuthenticatedContent:
        return unprotect_public(
            self.suite,
            message,
            membership_key=self.membership_key,
            group_context=self.group_context,
            signature_public_key=self.signature_pub,
        )

    def unprotect_private(self, message: PrivateMessage, tree: SecretTree) -> AuthenticatedContent:
        return unprotect_private(
            self.suite,
            message,
            secret_tree=tree,
            sender_data_secret=self.sender_data_secret,
            group_context=self.group_context,
            signature_key_for=self.signature_key_for,
        )


def _check_public(fixed: _Case, case: Mapping[str, object], name: str, raw: bytes) -> bytes | None:
    content = _decode_content(name, raw)
    if name == "application":
        # FORMAT.md: "For the application message, instead verify that
        # protecting as a PublicMessage fails".
        signed = fixed.sign(content, WireFormat.MLS_PUBLIC_MESSAGE, None)
        try:
            protect_public(
                fixed.suite,
                signed,
                membership_key=fixed.membership_key,
                group_context=fixed.group_context,
            )
        except InvalidContentType:
            return None
        raise VectorMismatch("application data was protected as a PublicMessage")

    given = _public(hex_field(case, f"{name}_pub"), f"{name}_pub")
    _expect_content(f"{name}_pub", fixed.unprotect_public(given), raw)

    # A commit needs a confirmation tag; any MAC-sized value serves, since
    # checking it is the key schedule's job. The given message's is reused.
    tag = given.confirmation_tag
    signed = fixed.sign(content, WireFormat.MLS_PUBLIC_MESSAGE, tag)
    protected = protect_public(
        fixed.suite, signed, membership_key=fixed.membership_key, group_context=fixed.group_context
    )
    wire = MLSMessage(ProtocolVersion.MLS10, protected).encode()
    _expect_content(
        f"{name} re-protected as public", fixed.unprotect_public(_public(wire, name)), raw
    )
    return tag


def _check_private(
    fixed: _Case, case: Mapping[str, object], name: str, raw: bytes, tag: bytes | None
) -> None:
    given = _private(hex_field(case, f"{name}_priv"), f"{name}_priv")
    _expect_content(f"{name}_priv", fixed.unprotect_private(given, fixed.new_tree()), raw)

    signed = fixed.sign(_decode_content(name, raw), WireFormat.MLS_PRIVATE_MESSAGE, tag)
    protected = protect_private(
        fixed.suite,
        signed,
        secret_tree=fixed.new_tree(),
        sender_data_secret=fixed.sender_data_secret,
        rng=_seeded_rng(name.encode()),
    )
    wire = MLSMessage(ProtocolVersion.MLS10, protected).encode()
    received = fixed.unprotect_private(_private(wire, name), fixed.new_tree())
    _expect_content(f"{name} re-protected as private", received, raw)


def check(case: Mapping[str, object]) -> None:
    """
    Verify one message-protection vector completely.

    :raises VectorMismatch: on the first difference.
    """
    fixed = _Case(case)
    for name in ("proposal", "commit", "application"):
        raw = hex_field(case, name)
        tag = _check_public(fixed, case, name, raw)
        if name == "commit" and tag is None:
            raise VectorMismatch("commit_pub carries no confirmation tag")
        _check_private(fixed, case, name, raw, tag)
