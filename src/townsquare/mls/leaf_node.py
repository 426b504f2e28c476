"""
Leaf nodes (RFC 9420 §7.2): a member's keys, credential and capabilities in the ratchet tree.

Validation of leaf nodes (§7.3) lives beside the ratchet tree, which knows the
group context it needs.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated

from townsquare.mls.codec import (
    U8,
    U16,
    U32,
    U64,
    Opaque,
    Struct,
    Vector,
    When,
    encode_opaque,
    opaque_size,
)
from townsquare.mls.credentials import CREDENTIAL, BasicCredential, Credential
from townsquare.mls.errors import (
    DuplicateExtension,
    EncryptionKeyNotUpdated,
    LeafNodeSourceMismatch,
    LifetimeInvalid,
    UnsupportedCapability,
)
from townsquare.mls.extensions import Extension
from townsquare.mls.registries import (
    CredentialType,
    ExtensionType,
    LeafNodeSource,
    ProposalType,
    ProtocolVersion,
)

if TYPE_CHECKING:
    from townsquare.mls.ciphersuite import CipherSuite
    from townsquare.mls.extensions import RequiredCapabilities

# RFC 9420 §7.2: the extension and proposal types that every implementation
# supports, which therefore need not appear in ``capabilities``.
DEFAULT_EXTENSION_TYPES = frozenset(int(t) for t in ExtensionType)
DEFAULT_PROPOSAL_TYPES = frozenset(int(t) for t in ProposalType)

CredentialValidator = Callable[["Credential", bytes], None]
"""The application's check of a credential and its signature key (RFC 9420 §5.3.1).

It returns to accept and raises :class:`~townsquare.mls.errors.InvalidCredential`
to reject."""


def accept_any_credential(credential: Credential, signature_key: bytes) -> None:
    """
    A :data:`CredentialValidator` that accepts every credential (for tests and vectors).
    """
    del credential, signature_key


__all__ = [
    "DEFAULT_EXTENSION_TYPES",
    "DEFAULT_PROPOSAL_TYPES",
    "Capabilities",
    "CredentialValidator",
    "LeafNode",
    "LeafNodeTBS",
    "Lifetime",
    "accept_any_credential",
    "check_extension_types_unique",
    "sign_leaf_node",
    "validate_leaf_node",
]


@dataclass(frozen=True, slots=True)
class Capabilities(Struct):
    """
    RFC 9420 §7.2::

        struct {
            ProtocolVersion versions<V>;
            CipherSuite cipher_suites<V>;
            ExtensionType extensions<V>;
            ProposalType proposals<V>;
            CredentialType credentials<V>;
        } Capabilities;

    Every list stays a tuple of ``int``: GREASE and unknown values (§13.5) are
    carried, not rejected.
    """

    versions: Annotated[tuple[Annotated[int, U16], ...], Vector]
    cipher_suites: Annotated[tuple[Annotated[int, U16], ...], Vector]
    extensions: Annotated[tuple[Annotated[int, U16], ...], Vector]
    proposals: Annotated[tuple[Annotated[int, U16], ...], Vector]
    credentials: Annotated[tuple[Annotated[int, U16], ...], Vector]


@dataclass(frozen=True, slots=True)
class Lifetime(Struct):
    """
    RFC 9420 §7.2: ``struct { uint64 not_before; uint64 not_after; } Lifetime;``
    """

    not_before: Annotated[int, U64]
    not_after: Annotated[int, U64]


def _from_key_package(fields: Mapping[str, object]) -> bool:
    return fields["leaf_node_source"] == LeafNodeSource.KEY_PACKAGE


def _from_commit(fields: Mapping[str, object]) -> bool:
    return fields["leaf_node_source"] == LeafNodeSource.COMMIT


def _in_group(fields: Mapping[str, object]) -> bool:
    return fields["leaf_node_source"] != LeafNodeSource.KEY_PACKAGE


@dataclass(frozen=True, slots=True, kw_only=True)
class LeafNode(Struct):
    """
    RFC 9420 §7.2::

        struct {
            HPKEPublicKey encryption_key;
            SignaturePublicKey signature_key;
            Credential credential;
            Capabilities capabilities;

            LeafNodeSource leaf_node_source;
            select (LeafNode.leaf_node_source) {
                case key_package:
                    Lifetime lifetime;

                case update:
                    struct{};

                case commit:
                    opaque parent_hash<V>;
            };

            Extension extensions<V>;
            /* SignWithLabel(., "LeafNodeTBS", LeafNodeTBS) */
            opaque signature<V>;
        } LeafNode;
    """

    encryption_key: Annotated[bytes, Opaque]
    signature_key: Annotated[bytes, Opaque]
    credential: Annotated[Credential, CREDENTIAL]
    capabilities: Capabilities
    leaf_node_source: Annotated[LeafNodeSource, U8]
    lifetime: Annotated[Lifetime | None, When(_from_key_package)] = None
    parent_hash: Annotated[bytes | None, Opaque, When(_from_commit)] = None
    extensions: Annotated[tuple[Extension, ...], Vector] = ()
    signature: Annotated[bytes, Opaque] = b""

    def to_be_signed(
        self,
        group_id: bytes | None = None,
        leaf_index: int | None = None,
        *,
        encoding: bytes | None = None,
    ) -> bytes:
        """
        Encode the LeafNodeTBS that this leaf's signature covers (RFC 9420 §7.2).

        :param group_id: the group's id; required unless the source is ``key_package``.
        :param leaf_index: the leaf's index; required unless the source is ``key_package``.
        :param encoding: ``self.encode()``, if the caller has it (a ratchet tree keeps its
            leaves' encodings), so that the fields are not encoded again.
        :returns: the encoded LeafNodeTBS.
        :raises UsageError: if the group id or leaf index is missing where required.
        """
        in_group = self.leaf_node_source != LeafNodeSource.KEY_PACKAGE
        if encoding is not None:
            # LeafNodeTBS is the LeafNode's fields up to its extensions, that
            # is its encoding without the signature<V> at the end, then for
            # update and commit sources opaque group_id<V> and uint32 leaf_index
            # (a missing or out-of-range one is left to the struct to refuse).
            unsigned = encoding[: len(encoding) - opaque_size(len(self.signature))]
            if not in_group:
                return unsigned
            if group_id is not None and leaf_index is not None and 0 <= leaf_index <= 0xFFFFFFFF:
                return unsigned + encode_opaque(group_id) + leaf_index.to_bytes(4, "big")
        return LeafNodeTBS(
            encryption_key=self.encryption_key,
            signature_key=self.signature_key,
            credential=self.credential,
            capabilities=self.capabilities,
            leaf_node_source=self.leaf_node_source,
            lifetime=self.lifetime,
            parent_hash=self.parent_hash,
            extensions=self.extensions,
            group_id=group_id if in_group else None,
            leaf_index=leaf_index if in_group else None,
        ).encode()


@dataclass(frozen=True, slots=True, kw_only=True)
class LeafNodeTBS(Struct):
    """
    RFC 9420 §7.2::

        struct {
            HPKEPublicKey encryption_key;
            SignaturePublicKey signature_key;
            Credential credential;
            Capabilities capabilities;

            LeafNodeSource leaf_node_source;
            select (LeafNodeTBS.leaf_node_source) {
                case key_package:
                    Lifetime lifetime;

                case update:
                    struct{};

                case commit:
                    opaque parent_hash<V>;
            };

            Extension extensions<V>;

            select (LeafNodeTBS.leaf_node_source) {
                case key_package:
                    struct{};

                case update:
                    opaque group_id<V>;
                    uint32 leaf_index;

                case commit:
                    opaque group_id<V>;
                    uint32 leaf_index;
            };
        } LeafNodeTBS;
    """

    encryption_key: Annotated[bytes, Opaque]
    signature_key: Annotated[bytes, Opaque]
    credential: Annotated[Credential, CREDENTIAL]
    capabilities: Capabilities
    leaf_node_source: Annotated[LeafNodeSource, U8]
    lifetime: Annotated[Lifetime | None, When(_from_key_package)]
    parent_hash: Annotated[bytes | None, Opaque, When(_from_commit)]
    extensions: Annotated[tuple[Extension, ...], Vector]
    group_id: Annotated[bytes | None, Opaque, When(_in_group)]
    leaf_index: Annotated[int | None, U32, When(_in_group)]


def sign_leaf_node(
    suite: CipherSuite,
    leaf_node: LeafNode,
    signature_private_key: bytes,
    *,
    group_id: bytes | None = None,
    leaf_index: int | None = None,
) -> LeafNode:
    """
    Sign a leaf node: ``SignWithLabel(., "LeafNodeTBS", LeafNodeTBS)`` (RFC 9420 §7.2).

    :param leaf_node: the node to sign (its ``signature`` is ignored).
    :param group_id: the group's id, unless the source is ``key_package``.
    :param leaf_index: the node's leaf index, unless the source is ``key_package``.
    :returns: the node with its signature.
    :raises InvalidKey: if the private key is not valid for the suite.
    """
    signature = suite.sign_with_label(
        signature_private_key, b"LeafNodeTBS", leaf_node.to_be_signed(group_id, leaf_index)
    )
    return replace(leaf_node, signature=signature)


def check_extension_types_unique(extensions: Iterable[Extension]) -> None:
    """
    Check that a list of extensions holds at most one extension of each type (RFC 9420 §13.4).

    :param extensions: a KeyPackage's, LeafNode's, GroupContext's or GroupInfo's extensions.
    :raises DuplicateExtension: if two extensions have the same type.
    """
    seen: set[int] = set()
    for extension in extensions:
        # RFC 9420 §13.4: "Any field containing a list of extensions MUST NOT
        # have more than one extension of any given type."
        if extension.extension_type in seen:
            raise DuplicateExtension(f"extension type {extension.extension_type} appears twice")
        seen.add(extension.extension_type)


def _credential_type(credential: Credential) -> int:
    return int(
        CredentialType.BASIC if isinstance(credential, BasicCredential) else CredentialType.X509
    )


def validate_leaf_node(
    suite: CipherSuite,
    leaf_node: LeafNode,
    *,
    source: LeafNodeSource,
    group_id: bytes | None,
    leaf_index: int | None,
    credential_validator: CredentialValidator,
    required_capabilities: RequiredCapabilities | None = None,
    credential_types_in_use: Collection[int] = (),
    credential_types_supported: Collection[int] | None = None,
    replaced_encryption_key: bytes | None = None,
    now: int | None = None,
    group_context_extensions: Sequence[Extension] = (),
    signature_verified: bool = False,
) -> None:
    """
    Check a leaf node against RFC 9420 §7.3, except key uniqueness, which needs the tree.

    :param source: the ``leaf_node_source`` its place requires.
    :param group_id: the group id the signature covers (``None`` for ``key_package``).
    :param leaf_index: the leaf index the signature covers (``None`` for ``key_package``).
    :param credential_validator: the application's credential check.
    :param required_capabilities: the group's required_capabilities extension, if any.
    :param credential_types_in_use: credential types of the other members.
    :param credential_types_supported: credential types every other member supports
        (``None`` when the group has no other member).
    :param replaced_encryption_key: the encryption key of the leaf this one replaces.
    :param now: the current time in seconds since the epoch, to check the lifetime.
    :param group_context_extensions: the group's GroupContext extensions, each of which the
        leaf must support (RFC 9420 §13.4).
    :param signature_verified: the caller has already verified this leaf's signature over
        the same group id and leaf index (``RatchetTree.verify`` at join, say); a join of a
        10,000-member group then checks each signature once, not twice.
    :raises InvalidCredential: if the application rejects the credential.
    :raises InvalidSignature: if the signature does not verify.
    :raises UnsupportedCapability: on a capability mismatch.
    :raises LifetimeInvalid: if ``now`` is outside the lifetime.
    :raises LeafNodeSourceMismatch: if the source is not ``source``.
    :raises DuplicateExtension: if two of its extensions have the same type.
    :raises EncryptionKeyNotUpdated: if the encryption key was not changed.
    """
    # RFC 9420 §7.3: "Verify the leaf_node_source field".
    if leaf_node.leaf_node_source != source:
        raise LeafNodeSourceMismatch(
            f"leaf node source is {leaf_node.leaf_node_source.name}, expected {source.name}"
        )
    # RFC 9420 §7.3: "Verify that the credential in the LeafNode is valid, as
    # described in Section 5.3.1."
    credential_validator(leaf_node.credential, leaf_node.signature_key)
    # RFC 9420 §7.3: "Verify that the signature on the LeafNode is valid using
    # signature_key."
    if not signature_verified:
        suite.verify_with_label(
            leaf_node.signature_key,
            b"LeafNodeTBS",
            leaf_node.to_be_signed(group_id, leaf_index),
            leaf_node.signature,
        )
    capabilities = leaf_node.capabilities
    if ProtocolVersion.MLS10 not in capabilities.versions:
        raise UnsupportedCapability("capabilities do not list mls10")
    if suite.suite_id not in capabilities.cipher_suites:
        raise UnsupportedCapability(f"capabilities do not list cipher suite {suite.suite_id}")
    # RFC 9420 §7.3: "If the GroupContext has a required_capabilities extension,
    # then the required extensions, proposals, and credential types MUST be
    # listed in the LeafNode's capabilities field."
    if required_capabilities is not None:
        missing_extensions = (
            set(required_capabilities.extension_types)
            - set(capabilities.extensions)
            - DEFAULT_EXTENSION_TYPES
        )
        missing_proposals = (
            set(required_capabilities.proposal_types)
            - set(capabilities.proposals)
            - DEFAULT_PROPOSAL_TYPES
        )
        missing_credentials = set(required_capabilities.credential_types) - set(
            capabilities.credentials
        )
        if missing_extensions or missing_proposals or missing_credentials:
            raise UnsupportedCapability(
                "leaf lacks required capabilities: "
                f"extensions {sorted(missing_extensions)}, proposals {sorted(missing_proposals)}, "
                f"credentials {sorted(missing_credentials)}"
            )
    # RFC 9420 §13.4: "A client adding a new member to a group MUST verify that
    # the LeafNode for the new member is compatible with the group's
    # extensions. The capabilities field MUST indicate support for each
    # extension in the GroupContext." (§13.4 adds that "an extension in use by
    # the group MUST be supported by all members", so Updates are held to it too.)
    for extension in group_context_extensions:
        if (
            extension.extension_type not in capabilities.extensions
            and extension.extension_type not in DEFAULT_EXTENSION_TYPES
        ):
            raise UnsupportedCapability(
                f"leaf does not support the group's extension {extension.extension_type}"
            )
    # RFC 9420 §7.3: "Verify that the credential type is supported by all
    # members of the group ... and that the capabilities field of this LeafNode
    # indicates support for all the credential types currently in use by other
    # members."
    own_type = _credential_type(leaf_node.credential)
    if own_type not in capabilities.credentials:
        raise UnsupportedCapability(f"leaf does not list its own credential type {own_type}")
    if credential_types_supported is not None and own_type not in credential_types_supported:
        raise UnsupportedCapability(f"credential type {own_type} is not supported by all members")
    unsupported = set(credential_types_in_use) - set(capabilities.credentials)
    if unsupported:
        raise UnsupportedCapability(f"leaf does not support credential types {sorted(unsupported)}")
    # RFC 9420 §7.3: "Verify the lifetime field".
    if now is not None and leaf_node.lifetime is not None:
        lifetime = leaf_node.lifetime
        if not lifetime.not_before <= now <= lifetime.not_after:
            raise LifetimeInvalid(
                f"time {now} is outside the lifetime [{lifetime.not_before}, {lifetime.not_after}]"
            )
    # RFC 9420 §7.3: "Verify that the extensions in the LeafNode are supported by
    # checking that the ID for each extension in the extensions field is listed in
    # the capabilities.extensions field of the LeafNode."
    for extension in leaf_node.extensions:
        if (
            extension.extension_type not in capabilities.extensions
            and extension.extension_type not in DEFAULT_EXTENSION_TYPES
        ):
            raise UnsupportedCapability(
                f"extension {extension.extension_type} is not in the leaf's capabilities"
            )
    check_extension_types_unique(leaf_node.extensions)
    # RFC 9420 §7.3: an Update's leaf must carry "a different public key than the
    # encryption_key in the leaf node being replaced"; §12.4.2 says the same of
    # a commit's path leaf.
    if replaced_encryption_key is not None and replaced_encryption_key == leaf_node.encryption_key:
        raise EncryptionKeyNotUpdated("the new leaf keeps the old encryption key")
