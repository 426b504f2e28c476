"""
Welcome and GroupInfo (RFC 9420 §12.4.3): how a new member learns a group's state and secrets.

Sealing (the committer)::

    encrypted_group_info = AEAD.Seal(welcome_key, welcome_nonce, "", GroupInfo)
    for each new member's KeyPackage:
        EncryptedGroupSecrets(new_member = KeyPackageRef,
            encrypted_group_secrets = EncryptWithLabel(init_key, "Welcome",
                                          encrypted_group_info, GroupSecrets))

Opening (the new member, RFC 9420 §12.4.3.1): find the entry for one of its
KeyPackages (:func:`decrypt_group_secrets`), derive the welcome secret from the
joiner secret and PSKs (``key_schedule.welcome_secret``), decrypt the GroupInfo
(:func:`decrypt_group_info`), verify its signature
(:func:`verify_group_info_signature`), then derive the epoch's secrets and
verify the confirmation tag (``key_schedule``). Validating the ratchet tree is
the caller's next step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from townsquare.mls.codec import U16, U32, Opaque, Optional, Struct, Vector
from townsquare.mls.errors import NoMatchingKeyPackage
from townsquare.mls.extensions import Extension
from townsquare.mls.group_context import GroupContext
from townsquare.mls.key_package import KeyPackage, key_package_ref
from townsquare.mls.psk import PreSharedKeyID
from townsquare.mls.update_path import HPKECiphertext

if TYPE_CHECKING:
    # For annotations only: the wire-struct modules never load the crypto
    # layer at run time, so no import cycle can form through it.
    from townsquare.mls.ciphersuite import CipherSuite

__all__ = [
    "EncryptedGroupSecrets",
    "GroupInfo",
    "GroupInfoTBS",
    "GroupSecrets",
    "PathSecret",
    "Welcome",
    "decrypt_group_info",
    "decrypt_group_secrets",
    "encrypt_group_info",
    "encrypt_group_secrets",
    "find_encrypted_group_secrets",
    "seal_welcome",
    "sign_group_info",
    "verify_group_info_signature",
    "welcome_key",
    "welcome_nonce",
]


@dataclass(frozen=True, slots=True)
class PathSecret(Struct):
    """
    RFC 9420 §12.4.3.1: ``struct { opaque path_secret<V>; } PathSecret;``
    """

    path_secret: Annotated[bytes, Opaque] = field(repr=False)


@dataclass(frozen=True, slots=True)
class GroupSecrets(Struct):
    """
    RFC 9420 §12.4.3.1::

        struct {
          opaque joiner_secret<V>;
          optional<PathSecret> path_secret;
          PreSharedKeyID psks<V>;
        } GroupSecrets;
    """

    joiner_secret: Annotated[bytes, Opaque] = field(repr=False)
    path_secret: Annotated[PathSecret | None, Optional] = None
    psks: Annotated[tuple[PreSharedKeyID, ...], Vector] = ()


@dataclass(frozen=True, slots=True)
class EncryptedGroupSecrets(Struct):
    """
    RFC 9420 §12.4.3.1::

        struct {
          KeyPackageRef new_member;
          HPKECiphertext encrypted_group_secrets;
        } EncryptedGroupSecrets;
    """

    new_member: Annotated[bytes, Opaque]
    encrypted_group_secrets: HPKECiphertext


@dataclass(frozen=True, slots=True)
class Welcome(Struct):
    """
    RFC 9420 §12.4.3.1::

        struct {
          CipherSuite cipher_suite;
          EncryptedGroupSecrets secrets<V>;
          opaque encrypted_group_info<V>;
        } Welcome;
    """

    cipher_suite: Annotated[int, U16]
    secrets: Annotated[tuple[EncryptedGroupSecrets, ...], Vector]
    encrypted_group_info: Annotated[bytes, Opaque]


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupInfo(Struct):
    """
    RFC 9420 §12.4.3::

        struct {
            GroupContext group_context;
            Extension extensions<V>;
            MAC confirmation_tag;
            uint32 signer;
            /* SignWithLabel(., "GroupInfoTBS", GroupInfoTBS) */
            opaque signature<V>;
        } GroupInfo;
    """

    group_context: GroupContext
    extensions: Annotated[tuple[Extension, ...], Vector] = ()
    confirmation_tag: Annotated[bytes, Opaque]
    signer: Annotated[int, U32]
    signature: Annotated[bytes, Opaque] = b""

    def to_be_signed(self) -> bytes:
        """
        :returns: the encoded GroupInfoTBS that ``signature`` covers.
        """
        return GroupInfoTBS(
            group_context=self.group_context,
            extensions=self.extensions,
            confirmation_tag=self.confirmation_tag,
            signer=self.signer,
        ).encode()


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupInfoTBS(Struct):
    """
    RFC 9420 §12.4.3::

        struct {
            GroupContext group_context;
            Extension extensions<V>;
            MAC confirmation_tag;
            uint32 signer;
        } GroupInfoTBS;
    """

    group_context: GroupContext
    extensions: Annotated[tuple[Extension, ...], Vector]
    confirmation_tag: Annotated[bytes, Opaque]
    signer: Annotated[int, U32]


# -- Algorithms (RFC 9420 §12.4.3.1) ---------------------------------------------------------

# RFC 9420 §17.6 and §17.7: the labels of the signature and encryption that
# protect a Welcome, without the "MLS 1.0 " prefix the labelled operations add.
_GROUP_INFO_SIGNATURE_LABEL = b"GroupInfoTBS"
_WELCOME_ENCRYPTION_LABEL = b"Welcome"


def welcome_key(suite: CipherSuite, welcome_secret: bytes) -> bytes:
    """
    Derive the AEAD key that encrypts a Welcome's GroupInfo (RFC 9420 §12.4.3.1).

    :param suite: the group's cipher suite.
    :param welcome_secret: the new epoch's welcome secret.
    :returns: ``ExpandWithLabel(welcome_secret, "key", "", AEAD.Nk)``.
    """
    return suite.expand_with_label(welcome_secret, b"key", b"", suite.aead_key_length)


def welcome_nonce(suite: CipherSuite, welcome_secret: bytes) -> bytes:
    """
    Derive the AEAD nonce that encrypts a Welcome's GroupInfo (RFC 9420 §12.4.3.1).

    :param suite: the group's cipher suite.
    :param welcome_secret: the new epoch's welcome secret.
    :returns: ``ExpandWithLabel(welcome_secret, "nonce", "", AEAD.Nn)``.
    """
    return suite.expand_with_label(welcome_secret, b"nonce", b"", suite.aead_nonce_length)


def encrypt_group_info(suite: CipherSuite, welcome_secret: bytes, group_info: GroupInfo) -> bytes:
    """
    Encrypt a signed GroupInfo for a Welcome (RFC 9420 §12.4.3.1).

    The key and nonce depend only on ``welcome_secret``, so encrypt at most one
    GroupInfo per epoch: a second, different one would reuse the nonce.

    :param suite: the group's cipher suite.
    :param welcome_secret: the new epoch's welcome secret.
    :param group_info: the signed GroupInfo of the new epoch.
    :returns: ``encrypted_group_info``.
    """
    return suite.aead_seal(
        welcome_key(suite, welcome_secret),
        welcome_nonce(suite, welcome_secret),
        b"",
        group_info.encode(),
    )


def decrypt_group_info(
    suite: CipherSuite, welcome_secret: bytes, encrypted_group_info: bytes
) -> GroupInfo:
    """
    Decrypt and decode a Welcome's GroupInfo (RFC 9420 §12.4.3.1).

    The signature is not checked here: see :func:`verify_group_info_signature`.

    :param suite: the group's cipher suite.
    :param welcome_secret: the welcome secret derived from the GroupSecrets.
    :param encrypted_group_info: the Welcome's ``encrypted_group_info``.
    :returns: the GroupInfo.
    :raises DecryptError: if the ciphertext does not decrypt under the welcome key and nonce.
    :raises DecodeError: if the plaintext is not exactly one GroupInfo.
    """
    plaintext = suite.aead_open(
        welcome_key(suite, welcome_secret),
        welcome_nonce(suite, welcome_secret),
        b"",
        encrypted_group_info,
    )
    return GroupInfo.decode(plaintext)


def encrypt_group_secrets(
    suite: CipherSuite,
    key_package: KeyPackage,
    group_secrets: GroupSecrets,
    encrypted_group_info: bytes,
    rng: Callable[[int], bytes],
) -> EncryptedGroupSecrets:
    """
    Encrypt a new member's GroupSecrets to its KeyPackage's init key (RFC 9420 §12.4.3.1).

    :param suite: the group's cipher suite (the KeyPackage's).
    :param key_package: the new member's KeyPackage, from its Add proposal.
    :param group_secrets: the joiner secret, path secret and PSK ids for this member.
    :param encrypted_group_info: the Welcome's ``encrypted_group_info``, which the encryption
        binds as its context.
    :param rng: the source of the HPKE ephemeral key.
    :returns: the Welcome entry for this member.
    :raises InvalidKey: if the KeyPackage's init key is not a valid HPKE public key.
    :raises UsageError: if ``rng`` returns the wrong number of bytes.
    """
    kem_output, ciphertext = suite.encrypt_with_label(
        key_package.init_key,
        _WELCOME_ENCRYPTION_LABEL,
        encrypted_group_info,
        group_secrets.encode(),
        rng,
    )
    return EncryptedGroupSecrets(
        new_member=key_package_ref(suite, key_package),
        encrypted_group_secrets=HPKECiphertext(kem_output, ciphertext),
    )


def find_encrypted_group_secrets(welcome: Welcome, key_package_ref: bytes) -> EncryptedGroupSecrets:
    """
    Find the Welcome's entry for one of our KeyPackages (RFC 9420 §12.4.3.1).

    :param welcome: the Welcome.
    :param key_package_ref: the KeyPackageRef of our KeyPackage, computed with the Welcome's
        cipher suite.
    :returns: the first entry whose ``new_member`` is ``key_package_ref``.
    :raises NoMatchingKeyPackage: if no entry is for that KeyPackage.
    """
    for entry in welcome.secrets:
        if entry.new_member == key_package_ref:
            return entry
    # RFC 9420 §12.4.3.1: "Identify an entry in the secrets array where the
    # new_member value corresponds to one of this client's KeyPackages ... If
    # no such field exists ... return an error."
    raise NoMatchingKeyPackage(f"the Welcome has no entry for KeyPackage {key_package_ref.hex()}")


def decrypt_group_secrets(
    suite: CipherSuite, welcome: Welcome, key_package_ref: bytes, init_priv: bytes
) -> GroupSecrets:
    """
    Decrypt our GroupSecrets from a Welcome (RFC 9420 §12.4.3.1).

    :param suite: the cipher suite of our KeyPackage.
    :param welcome: the Welcome.
    :param key_package_ref: the KeyPackageRef of our KeyPackage.
    :param init_priv: the private key of that KeyPackage's ``init_key``.
    :returns: the GroupSecrets encrypted for us.
    :raises NoMatchingKeyPackage: if the Welcome is for another cipher suite or has no entry
        for our KeyPackage.
    :raises InvalidKey: if ``init_priv`` is not a valid HPKE private key for the suite.
    :raises DecryptError: if our entry does not decrypt with ``init_priv``.
    :raises DecodeError: if the plaintext is not exactly one GroupSecrets.
    """
    if welcome.cipher_suite != suite.suite_id:
        # RFC 9420 §12.4.3.1: "If no such field exists, or if the cipher
        # suite indicated in the KeyPackage does not match the one in the
        # Welcome message, return an error."
        raise NoMatchingKeyPackage(
            f"the Welcome is for cipher suite {welcome.cipher_suite}, "
            f"our KeyPackage for {suite.suite_id}"
        )
    entry = find_encrypted_group_secrets(welcome, key_package_ref)
    plaintext = suite.decrypt_with_label(
        init_priv,
        _WELCOME_ENCRYPTION_LABEL,
        welcome.encrypted_group_info,
        entry.encrypted_group_secrets.kem_output,
        entry.encrypted_group_secrets.ciphertext,
    )
    return GroupSecrets.decode(plaintext)


def sign_group_info(suite: CipherSuite, group_info: GroupInfo, signer_priv: bytes) -> GroupInfo:
    """
    Sign a GroupInfo as the member at leaf ``group_info.signer`` (RFC 9420 §12.4.3).

    :param suite: the group's cipher suite.
    :param group_info: the GroupInfo; its ``signature`` is ignored and replaced.
    :param signer_priv: the signature private key of the member at leaf ``signer``.
    :returns: the GroupInfo with ``signature = SignWithLabel(., "GroupInfoTBS", GroupInfoTBS)``.
    :raises InvalidKey: if ``signer_priv`` is not a valid signature private key for the suite.
    """
    signature = suite.sign_with_label(
        signer_priv, _GROUP_INFO_SIGNATURE_LABEL, group_info.to_be_signed()
    )
    return dataclasses.replace(group_info, signature=signature)


def verify_group_info_signature(
    suite: CipherSuite, group_info: GroupInfo, signer_pub: bytes
) -> None:
    """
    Verify a GroupInfo's signature (RFC 9420 §12.4.3, §12.4.3.1).

    :param suite: the group's cipher suite.
    :param group_info: the GroupInfo.
    :param signer_pub: the signature key in the LeafNode at leaf index ``group_info.signer``
        of the group's ratchet tree.
    :raises InvalidKey: if ``signer_pub`` is not a valid signature public key for the suite.
    :raises InvalidSignature: if the signature does not verify under ``signer_pub``.
    """
    # RFC 9420 §12.4.3: "New members also MUST verify the signature using
    # the public key taken from the leaf node of the ratchet tree with leaf
    # index signer." Finding that leaf (and rejecting a blank one) is the
    # caller's, which holds the tree.
    suite.verify_with_label(
        signer_pub, _GROUP_INFO_SIGNATURE_LABEL, group_info.to_be_signed(), group_info.signature
    )


def seal_welcome(
    suite: CipherSuite,
    *,
    welcome_secret: bytes,
    group_info: GroupInfo,
    new_members: Sequence[tuple[KeyPackage, GroupSecrets]],
    rng: Callable[[int], bytes],
) -> Welcome:
    """
    Build a Welcome for new members (RFC 9420 §12.4.3.1).

    :param suite: the group's cipher suite.
    :param welcome_secret: the new epoch's welcome secret.
    :param group_info: the signed GroupInfo of the new epoch.
    :param new_members: each new member's KeyPackage and the GroupSecrets to send it.
    :param rng: the source of the HPKE ephemeral keys.
    :returns: the Welcome.
    :raises InvalidKey: if a KeyPackage's init key is not a valid HPKE public key.
    :raises UsageError: if ``rng`` returns the wrong number of bytes.
    """
    encrypted_group_info = encrypt_group_info(suite, welcome_secret, group_info)
    secrets = tuple(
        encrypt_group_secrets(suite, key_package, group_secrets, encrypted_group_info, rng)
        for key_package, group_secrets in new_members
    )
    return Welcome(int(suite.suite_id), secrets, encrypted_group_info)
