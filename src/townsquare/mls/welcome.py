"""
Welcome and GroupInfo (RFC 9420 §12.4.3): how a new member learns a group's state and secrets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from townsquare.mls.codec import U16, U32, Opaque, Optional, Struct, Vector
from townsquare.mls.extensions import Extension
from townsquare.mls.group_context import GroupContext
from townsquare.mls.psk import PreSharedKeyID
from townsquare.mls.update_path import HPKECiphertext

__all__ = [
    "EncryptedGroupSecrets",
    "GroupInfo",
    "GroupInfoTBS",
    "GroupSecrets",
    "PathSecret",
    "Welcome",
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
