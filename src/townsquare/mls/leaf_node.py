"""
Leaf nodes (RFC 9420 §7.2): a member's keys, credential and capabilities in the ratchet tree.

Validation of leaf nodes (§7.3) lives beside the ratchet tree, which knows the
group context it needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from townsquare.mls.codec import U8, U16, U32, U64, Opaque, Struct, Vector, When
from townsquare.mls.credentials import CREDENTIAL, Credential
from townsquare.mls.extensions import Extension
from townsquare.mls.registries import LeafNodeSource

__all__ = ["Capabilities", "LeafNode", "LeafNodeTBS", "Lifetime"]


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

    def to_be_signed(self, group_id: bytes | None = None, leaf_index: int | None = None) -> bytes:
        """
        Encode the LeafNodeTBS that this leaf's signature covers (RFC 9420 §7.2).

        :param group_id: the group's id; required unless the source is ``key_package``.
        :param leaf_index: the leaf's index; required unless the source is ``key_package``.
        :returns: the encoded LeafNodeTBS.
        :raises UsageError: if the group id or leaf index is missing where required.
        """
        in_group = self.leaf_node_source != LeafNodeSource.KEY_PACKAGE
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
