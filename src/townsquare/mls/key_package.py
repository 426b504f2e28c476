"""
KeyPackages (RFC 9420 §10): what a client publishes so that others can add it to a group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from townsquare.mls.codec import U16, Opaque, Struct, Vector
from townsquare.mls.extensions import Extension
from townsquare.mls.leaf_node import LeafNode
from townsquare.mls.registries import ProtocolVersion

__all__ = ["KeyPackage", "KeyPackageTBS"]


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyPackage(Struct):
    """
    RFC 9420 §10::

        struct {
            ProtocolVersion version;
            CipherSuite cipher_suite;
            HPKEPublicKey init_key;
            LeafNode leaf_node;
            Extension extensions<V>;
            /* SignWithLabel(., "KeyPackageTBS", KeyPackageTBS) */
            opaque signature<V>;
        } KeyPackage;
    """

    version: Annotated[ProtocolVersion, U16] = ProtocolVersion.MLS10
    cipher_suite: Annotated[int, U16]
    init_key: Annotated[bytes, Opaque]
    leaf_node: LeafNode
    extensions: Annotated[tuple[Extension, ...], Vector] = ()
    signature: Annotated[bytes, Opaque] = b""

    def to_be_signed(self) -> bytes:
        """
        :returns: the encoded KeyPackageTBS that ``signature`` covers.
        """
        return KeyPackageTBS(
            version=self.version,
            cipher_suite=self.cipher_suite,
            init_key=self.init_key,
            leaf_node=self.leaf_node,
            extensions=self.extensions,
        ).encode()


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyPackageTBS(Struct):
    """
    RFC 9420 §10::

        struct {
            ProtocolVersion version;
            CipherSuite cipher_suite;
            HPKEPublicKey init_key;
            LeafNode leaf_node;
            Extension extensions<V>;
        } KeyPackageTBS;
    """

    version: Annotated[ProtocolVersion, U16]
    cipher_suite: Annotated[int, U16]
    init_key: Annotated[bytes, Opaque]
    leaf_node: LeafNode
    extensions: Annotated[tuple[Extension, ...], Vector]
