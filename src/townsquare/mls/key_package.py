"""
KeyPackages (RFC 9420 §10): what a client publishes so that others can add it to a group.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from townsquare.mls.codec import U16, Opaque, Struct, Vector
from townsquare.mls.credentials import Credential
from townsquare.mls.errors import InitKeyReused, KeyPackageMismatch
from townsquare.mls.extensions import Extension
from townsquare.mls.leaf_node import (
    Capabilities,
    CredentialValidator,
    LeafNode,
    Lifetime,
    check_extension_types_unique,
    sign_leaf_node,
    validate_leaf_node,
)
from townsquare.mls.registries import CredentialType, LeafNodeSource, ProtocolVersion

if TYPE_CHECKING:
    # For annotations only: the wire-struct modules never load the crypto
    # layer at run time, so no import cycle can form through it.
    from townsquare.mls.ciphersuite import CipherSuite, Rng
    from townsquare.mls.extensions import RequiredCapabilities

__all__ = [
    "KEY_PACKAGE_REF_LABEL",
    "KeyPackage",
    "KeyPackageBundle",
    "KeyPackageTBS",
    "default_capabilities",
    "generate_key_package",
    "key_package_ref",
    "validate_key_package",
]

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


def default_capabilities(
    suite: CipherSuite,
    *,
    extensions: Sequence[int] = (),
    proposals: Sequence[int] = (),
) -> Capabilities:
    """
    :returns: capabilities for mls10, ``suite``, basic credentials and the given
        non-default extension and proposal types (RFC 9420 §7.2).
    """
    return Capabilities(
        versions=(ProtocolVersion.MLS10,),
        cipher_suites=(suite.suite_id,),
        extensions=tuple(extensions),
        proposals=tuple(proposals),
        credentials=(CredentialType.BASIC,),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyPackageBundle:
    """
    A KeyPackage with the private keys its owner keeps to join with it.
    """

    key_package: KeyPackage
    init_private_key: bytes = field(repr=False)
    encryption_private_key: bytes = field(repr=False)
    signature_private_key: bytes = field(repr=False)


def generate_key_package(
    suite: CipherSuite,
    *,
    credential: Credential,
    signature_private_key: bytes,
    rng: Rng,
    lifetime: Lifetime,
    capabilities: Capabilities | None = None,
    leaf_extensions: tuple[Extension, ...] = (),
    extensions: tuple[Extension, ...] = (),
) -> KeyPackageBundle:
    """
    Create and sign a KeyPackage with fresh init and encryption keys (RFC 9420 §10).

    :param credential: the credential for the leaf.
    :param signature_private_key: the client's signature key for this credential.
    :param rng: the randomness source for the two HPKE key pairs.
    :param lifetime: the leaf's lifetime (seconds since the epoch).
    :param capabilities: the leaf's capabilities (default: :func:`default_capabilities`).
    :param leaf_extensions: extensions of the leaf node.
    :param extensions: extensions of the KeyPackage (e.g. last_resort).
    :returns: the signed KeyPackage and its private keys.
    :raises InvalidKey: if the signature key is not valid for the suite.
    """
    init_private_key, init_key = suite.hpke_generate_key_pair(rng)
    encryption_private_key, encryption_key = suite.hpke_generate_key_pair(rng)
    leaf_node = sign_leaf_node(
        suite,
        LeafNode(
            encryption_key=encryption_key,
            signature_key=suite.signature_public_key(signature_private_key),
            credential=credential,
            capabilities=capabilities or default_capabilities(suite),
            leaf_node_source=LeafNodeSource.KEY_PACKAGE,
            lifetime=lifetime,
            extensions=leaf_extensions,
        ),
        signature_private_key,
    )
    unsigned = KeyPackage(
        cipher_suite=suite.suite_id,
        init_key=init_key,
        leaf_node=leaf_node,
        extensions=extensions,
    )
    signature = suite.sign_with_label(
        signature_private_key, b"KeyPackageTBS", unsigned.to_be_signed()
    )
    return KeyPackageBundle(
        key_package=KeyPackage(
            cipher_suite=unsigned.cipher_suite,
            init_key=init_key,
            leaf_node=leaf_node,
            extensions=extensions,
            signature=signature,
        ),
        init_private_key=init_private_key,
        encryption_private_key=encryption_private_key,
        signature_private_key=signature_private_key,
    )


def validate_key_package(
    suite: CipherSuite,
    key_package: KeyPackage,
    *,
    credential_validator: CredentialValidator,
    required_capabilities: RequiredCapabilities | None = None,
    credential_types_in_use: Collection[int] = (),
    credential_types_supported: Collection[int] | None = None,
    now: int | None = None,
    group_context_extensions: Sequence[Extension] = (),
) -> None:
    """
    Check a KeyPackage as RFC 9420 §10.1 requires before it is used to add a client.

    :param suite: the group's cipher suite.
    :param key_package: the KeyPackage.
    :param credential_validator: the application's credential check.
    :param required_capabilities: the group's required capabilities, if any.
    :param credential_types_in_use: credential types of the group's members.
    :param credential_types_supported: credential types all members support.
    :param now: the current time (seconds since the epoch) for the lifetime check.
    :param group_context_extensions: the group's GroupContext extensions, which the leaf
        must support (RFC 9420 §13.4).
    :raises KeyPackageMismatch: if the suite or version is not the group's.
    :raises InitKeyReused: if the init key equals the leaf's encryption key.
    :raises InvalidSignature: if the KeyPackage or its leaf is not validly signed.
    :raises InvalidLeafNode: (a subclass) if the leaf fails RFC 9420 §7.3.
    :raises DuplicateExtension: if the KeyPackage or its leaf has two extensions of one type.
    """
    # RFC 9420 §10.1: "Verify that the cipher suite and protocol version of the
    # KeyPackage match those in the GroupContext."
    if key_package.cipher_suite != suite.suite_id:
        raise KeyPackageMismatch(
            f"KeyPackage suite {key_package.cipher_suite} is not the group's {suite.suite_id}"
        )
    if key_package.version != ProtocolVersion.MLS10:
        raise KeyPackageMismatch(f"KeyPackage version {key_package.version} is not mls10")
    # RFC 9420 §10.1: "Verify that the value of leaf_node.encryption_key is
    # different from the value of the init_key field."
    if key_package.init_key == key_package.leaf_node.encryption_key:
        raise InitKeyReused("the KeyPackage's init_key is its leaf's encryption_key")
    # RFC 9420 §13.4: "Any field containing a list of extensions MUST NOT have
    # more than one extension of any given type."
    check_extension_types_unique(key_package.extensions)
    # RFC 9420 §10.1: "Verify that the signature on the KeyPackage is valid
    # using the public key in leaf_node.credential."
    suite.verify_with_label(
        key_package.leaf_node.signature_key,
        b"KeyPackageTBS",
        key_package.to_be_signed(),
        key_package.signature,
    )
    # RFC 9420 §10.1: "Verify that the leaf_node of the KeyPackage is valid for
    # a KeyPackage according to Section 7.3."
    validate_leaf_node(
        suite,
        key_package.leaf_node,
        source=LeafNodeSource.KEY_PACKAGE,
        group_id=None,
        leaf_index=None,
        credential_validator=credential_validator,
        required_capabilities=required_capabilities,
        credential_types_in_use=credential_types_in_use,
        credential_types_supported=credential_types_supported,
        now=now,
        group_context_extensions=group_context_extensions,
    )
