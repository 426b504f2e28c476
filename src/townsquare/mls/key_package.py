"""
KeyPackages (RFC 9420 §10): what a client publishes so that others can add it to a group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from townsquare.mls.codec import U16, Opaque, Struct, Vector
from townsquare.mls.extensions import Extension
from townsquare.mls.leaf_node import LeafNode
from townsquare.mls.registries import ProtocolVersion

if TYPE_CHECKING:
    # For annotations only: the wire-struct modules never load the crypto
    # layer at run time, so no import cycle can form through it.
    from townsquare.mls.ciphersuite import CipherSuite

__all__ = ["KEY_PACKAGE_REF_LABEL", "KeyPackage", "KeyPackageTBS", "key_package_ref"]

#: The RefHash label of a KeyPackageRef (RFC 9420 §5.2), prefix included as the RFC writes it.
KEY_PACKAGE_REF_LABEL = b"MLS 1.0 KeyPackage Reference"


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


def key_package_ref(suite: CipherSuite, key_package: KeyPackage) -> bytes:
    """
    Compute the KeyPackageRef that names ``key_package`` in a Welcome (RFC 9420 §5.2).

    :param suite: the cipher suite the KeyPackage names (RFC 9420 §5.2: "the cipher suite
        specified in the KeyPackage determines the KDF used").
    :param key_package: the KeyPackage.
    :returns: ``RefHash("MLS 1.0 KeyPackage Reference", encoded KeyPackage)``.
    """
    return suite.ref_hash(KEY_PACKAGE_REF_LABEL, key_package.encode())
