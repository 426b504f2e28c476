"""
Invite links and the keys their secret derives, sans-I/O.

An invite is a link ``https://RELAY/j/GROUP#SECRET``: ``GROUP`` is the MLS
group id and ``SECRET`` 32 random bytes, both unpadded base64url. The secret
lives only in the URL fragment, which browsers never send to a server. From it
HKDF-SHA256 (RFC 5869; salt :data:`INVITE_SALT`) derives, each with its own
``info`` label:

- the *GroupInfo key* (:data:`GROUP_INFO_KEY_LABEL`, 32 bytes): the
  ChaCha20-Poly1305 key (RFC 8439) under which members publish the group's
  GroupInfo and ratchet tree for the invite (:func:`seal_group_info`);
- the *invite signing key* (:data:`SIGNING_KEY_LABEL`, a 32-byte Ed25519
  seed): its public half, which is also the invite's id, is all the relay
  holds; the newcomer signs its external commit with the private half
  (:func:`sign_external_commit`), and the relay checks it
  (:func:`verify_external_commit`).

Where a group requires an admin's approval, the newcomer asks instead: it
signs its KeyPackage and a note sealed under the GroupInfo key (its display
name, which only holders of the link read: :func:`seal_join_note`) with the
invite key (:func:`sign_join_request`); an admin's device adds it.

``docs/protocol.md`` (Invites) describes every byte.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from townsquare.auth.encoding import decode_b64u, encode_b64u
from townsquare.auth.errors import InvalidValue, MalformedText, UsageError
from townsquare.auth.keys import public_key, sign, verify

__all__ = [
    "EXTERNAL_COMMIT_LABEL",
    "GROUP_INFO_AAD_LABEL",
    "GROUP_INFO_KEY_LABEL",
    "INVITE_SALT",
    "JOIN_NOTE_AAD_LABEL",
    "JOIN_REQUEST_LABEL",
    "NONCE_BYTES",
    "SECRET_BYTES",
    "SIGNING_KEY_LABEL",
    "InviteKeys",
    "InviteLink",
    "derive_invite_keys",
    "external_commit_tbs",
    "generate_invite_secret",
    "invite_link",
    "join_request_tbs",
    "open_group_info",
    "open_join_note",
    "parse_invite_link",
    "seal_group_info",
    "seal_join_note",
    "sign_external_commit",
    "sign_join_request",
    "verify_external_commit",
    "verify_join_request",
]

#: The length of an invite secret.
SECRET_BYTES = 32
#: The length of the ChaCha20-Poly1305 nonce that starts a sealed GroupInfo.
NONCE_BYTES = 12
#: HKDF-Extract's salt for every invite key.
INVITE_SALT = b"townsquare/v1/invite"
#: HKDF-Expand's info for the GroupInfo key.
GROUP_INFO_KEY_LABEL = b"townsquare/v1/invite/group-info-key"
#: HKDF-Expand's info for the invite signing key (an Ed25519 seed).
SIGNING_KEY_LABEL = b"townsquare/v1/invite/signing-key"
#: The start of a sealed GroupInfo's associated data, followed by the group id.
GROUP_INFO_AAD_LABEL = b"townsquare/v1/invite/group-info\x00"
#: The start of what an invite key signs for an external commit, followed by the commit.
EXTERNAL_COMMIT_LABEL = b"townsquare/v1/invite/external-commit\x00"
#: What an invite key's signature over a join request starts with.
JOIN_REQUEST_LABEL = b"townsquare/v1/invite/join-request\x00"
#: The associated data of a join request's sealed note starts with this.
JOIN_NOTE_AAD_LABEL = b"townsquare/v1/invite/join-note\x00"

_LEN = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class InviteKeys:
    """
    What an invite secret derives.
    """

    #: The ChaCha20-Poly1305 key of the published GroupInfo.
    group_info_key: bytes
    #: The Ed25519 seed of the invite signing key.
    signing_private_key: bytes
    #: Its public half: the invite's id, which the relay holds.
    signing_public_key: bytes


@dataclass(frozen=True, slots=True)
class InviteLink:
    """
    A parsed invite link.
    """

    #: The relay's base URL (``https://host[:port][/prefix]``).
    relay: str
    group_id: bytes
    secret: bytes


def generate_invite_secret() -> bytes:
    """
    :returns: a new invite secret from the operating system's randomness.
    """
    return os.urandom(SECRET_BYTES)


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=INVITE_SALT, info=info).derive(secret)


def derive_invite_keys(secret: bytes) -> InviteKeys:
    """
    Derive an invite's GroupInfo key and signing key from its secret.

    :param secret: the invite secret.
    :returns: the keys.
    :raises UsageError: if the secret is not :data:`SECRET_BYTES` long.
    """
    if len(secret) != SECRET_BYTES:
        raise UsageError(f"an invite secret is {SECRET_BYTES} bytes, not {len(secret)}")
    seed = _hkdf(secret, SIGNING_KEY_LABEL)
    return InviteKeys(
        group_info_key=_hkdf(secret, GROUP_INFO_KEY_LABEL),
        signing_private_key=seed,
        signing_public_key=public_key(seed),
    )


def _aad(group_id: bytes) -> bytes:
    return GROUP_INFO_AAD_LABEL + group_id


def seal_group_info(
    keys: InviteKeys,
    group_id: bytes,
    group_info: bytes,
    ratchet_tree: bytes = b"",
    *,
    nonce: bytes | None = None,
) -> bytes:
    """
    Encrypt a GroupInfo (and ratchet tree) for an invite.

    The plaintext is ``uint32 len(group_info) || group_info || ratchet_tree`` (an empty
    tree when the GroupInfo carries it); the blob is ``nonce || ciphertext``, the
    associated data :data:`GROUP_INFO_AAD_LABEL` ``|| group_id``.

    :param keys: the invite's keys.
    :param group_id: the group's id.
    :param group_info: the encoded MLSMessage(GroupInfo).
    :param ratchet_tree: the encoded ratchet tree, or empty.
    :param nonce: the nonce (tests only; default: random).
    :returns: the sealed blob.
    """
    if nonce is None:
        nonce = os.urandom(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise UsageError(f"a nonce is {NONCE_BYTES} bytes")
    plaintext = _LEN.pack(len(group_info)) + group_info + ratchet_tree
    return nonce + ChaCha20Poly1305(keys.group_info_key).encrypt(nonce, plaintext, _aad(group_id))


def open_group_info(keys: InviteKeys, group_id: bytes, blob: bytes) -> tuple[bytes, bytes]:
    """
    Decrypt a sealed GroupInfo.

    :returns: the GroupInfo and the ratchet tree (empty if none was sealed).
    :raises InvalidValue: if the blob does not decrypt under the keys for this group.
    """
    if len(blob) < NONCE_BYTES + 16:
        raise InvalidValue("the sealed GroupInfo is too short")
    try:
        plaintext = ChaCha20Poly1305(keys.group_info_key).decrypt(
            blob[:NONCE_BYTES], blob[NONCE_BYTES:], _aad(group_id)
        )
    except InvalidTag as exc:
        raise InvalidValue("the sealed GroupInfo does not decrypt with this invite") from exc
    if len(plaintext) < _LEN.size:
        raise InvalidValue("the sealed GroupInfo is malformed")
    (length,) = _LEN.unpack_from(plaintext)
    if _LEN.size + length > len(plaintext):
        raise InvalidValue("the sealed GroupInfo is malformed")
    return plaintext[_LEN.size : _LEN.size + length], plaintext[_LEN.size + length :]


def external_commit_tbs(commit: bytes) -> bytes:
    """
    :returns: what an invite key signs for an external commit (the encoded MLSMessage).
    """
    return EXTERNAL_COMMIT_LABEL + commit


def sign_external_commit(keys: InviteKeys, commit: bytes) -> bytes:
    """
    :returns: the invite key's signature over an external commit.
    """
    return sign(keys.signing_private_key, external_commit_tbs(commit))


def verify_external_commit(invite_key: bytes, commit: bytes, signature: bytes) -> None:
    """
    Check an invite key's signature over an external commit.

    :raises InvalidSignature: if it does not verify.
    :raises InvalidKey: if ``invite_key`` is not an Ed25519 public key.
    """
    verify(invite_key, external_commit_tbs(commit), signature)


def _join_note_aad(group_id: bytes) -> bytes:
    return JOIN_NOTE_AAD_LABEL + group_id


def seal_join_note(keys: InviteKeys, group_id: bytes, note: bytes, *, nonce: bytes) -> bytes:
    """
    Encrypt a newcomer's note (its display name, UTF-8) for the group's admins.

    :returns: ``nonce || ChaCha20-Poly1305(GroupInfo key, nonce, note, aad)`` with the
        associated data :data:`JOIN_NOTE_AAD_LABEL` ``|| group_id``.
    """
    if len(nonce) != NONCE_BYTES:
        raise UsageError(f"a nonce is {NONCE_BYTES} bytes")
    return nonce + ChaCha20Poly1305(keys.group_info_key).encrypt(
        nonce, note, _join_note_aad(group_id)
    )


def open_join_note(keys: InviteKeys, group_id: bytes, blob: bytes) -> bytes:
    """
    :returns: the note of a join request.
    :raises InvalidValue: if it does not decrypt under the keys for this group.
    """
    if len(blob) < NONCE_BYTES + 16:
        raise InvalidValue("the sealed note is too short")
    try:
        return ChaCha20Poly1305(keys.group_info_key).decrypt(
            blob[:NONCE_BYTES], blob[NONCE_BYTES:], _join_note_aad(group_id)
        )
    except InvalidTag as exc:
        raise InvalidValue("the note does not decrypt with this invite") from exc


def join_request_tbs(group_id: bytes, key_package: bytes, sealed_note: bytes) -> bytes:
    """
    :returns: what an invite key signs for a join request: the label, then the group id,
        the KeyPackage and the sealed note, each as ``uint32_be(length) || bytes``.
    """
    parts = (group_id, key_package, sealed_note)
    return JOIN_REQUEST_LABEL + b"".join(_LEN.pack(len(p)) + p for p in parts)


def sign_join_request(
    keys: InviteKeys, group_id: bytes, key_package: bytes, sealed_note: bytes
) -> bytes:
    """
    :returns: the invite key's signature over a join request.
    """
    return sign(keys.signing_private_key, join_request_tbs(group_id, key_package, sealed_note))


def verify_join_request(
    invite_key: bytes, group_id: bytes, key_package: bytes, sealed_note: bytes, signature: bytes
) -> None:
    """
    Check an invite key's signature over a join request.

    :raises InvalidSignature: if it does not verify.
    :raises InvalidKey: if ``invite_key`` is not an Ed25519 public key.
    """
    verify(invite_key, join_request_tbs(group_id, key_package, sealed_note), signature)


def invite_link(relay: str, group_id: bytes, secret: bytes) -> str:
    """
    :returns: the link ``{relay}/j/{group}#{secret}``.
    """
    if len(secret) != SECRET_BYTES:
        raise UsageError(f"an invite secret is {SECRET_BYTES} bytes")
    return f"{relay.rstrip('/')}/j/{encode_b64u(group_id)}#{encode_b64u(secret)}"


def parse_invite_link(link: str) -> InviteLink:
    """
    Read an invite link.

    :raises MalformedText: if it is not ``http(s)://host[/prefix]/j/GROUP#SECRET``.
    """
    parts = urlsplit(link)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query:
        raise MalformedText("an invite link is http(s)://RELAY/j/GROUP#SECRET")
    prefix, sep, group_text = parts.path.rpartition("/j/")
    if not sep or not group_text or "/" in group_text:
        raise MalformedText("an invite link's path ends in /j/GROUP")
    return InviteLink(
        relay=f"{parts.scheme}://{parts.netloc}{prefix}",
        group_id=decode_b64u(group_text),
        secret=decode_b64u(parts.fragment, length=SECRET_BYTES),
    )
