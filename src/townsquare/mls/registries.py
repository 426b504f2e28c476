"""
The enumerations of RFC 9420: the IANA registries of §17 and the presentation-language enums.

Where RFC 9420 requires unknown values to be tolerated (extension types in
§13.4, GREASE values in §13.5, the capability lists of §7.2), structs keep the
field as a plain ``int`` and compare it against these enums; elsewhere the
codec decodes straight into the enum and rejects unknown values.
"""

from __future__ import annotations

from enum import IntEnum


class ProtocolVersion(IntEnum):
    """
    RFC 9420 §6: ``enum { reserved(0), mls10(1), (65535) } ProtocolVersion;``
    """

    MLS10 = 1


class ContentType(IntEnum):
    """
    RFC 9420 §6: ``enum { reserved(0), application(1), proposal(2), commit(3), (255) }``
    """

    APPLICATION = 1
    PROPOSAL = 2
    COMMIT = 3


class SenderType(IntEnum):
    """
    RFC 9420 §6: ``enum { reserved(0), member(1), external(2), new_member_proposal(3),
    new_member_commit(4), (255) } SenderType;``
    """

    MEMBER = 1
    EXTERNAL = 2
    NEW_MEMBER_PROPOSAL = 3
    NEW_MEMBER_COMMIT = 4


class WireFormat(IntEnum):
    """
    RFC 9420 §17.2 "MLS Wire Formats" registry.
    """

    MLS_PUBLIC_MESSAGE = 1
    MLS_PRIVATE_MESSAGE = 2
    MLS_WELCOME = 3
    MLS_GROUP_INFO = 4
    MLS_KEY_PACKAGE = 5


class ExtensionType(IntEnum):
    """
    RFC 9420 §17.3 "MLS Extension Types" registry.
    """

    APPLICATION_ID = 1
    RATCHET_TREE = 2
    REQUIRED_CAPABILITIES = 3
    EXTERNAL_PUB = 4
    EXTERNAL_SENDERS = 5


class ProposalType(IntEnum):
    """
    RFC 9420 §17.4 "MLS Proposal Types" registry.
    """

    ADD = 1
    UPDATE = 2
    REMOVE = 3
    PSK = 4
    REINIT = 5
    EXTERNAL_INIT = 6
    GROUP_CONTEXT_EXTENSIONS = 7


class CredentialType(IntEnum):
    """
    RFC 9420 §17.5 "MLS Credential Types" registry.
    """

    BASIC = 1
    X509 = 2


class LeafNodeSource(IntEnum):
    """
    RFC 9420 §7.2: ``enum { reserved(0), key_package(1), update(2), commit(3), (255) }``
    """

    KEY_PACKAGE = 1
    UPDATE = 2
    COMMIT = 3


class NodeType(IntEnum):
    """
    RFC 9420 §7.8: ``enum { reserved(0), leaf(1), parent(2), (255) } NodeType;``
    """

    LEAF = 1
    PARENT = 2


class PSKType(IntEnum):
    """
    RFC 9420 §8.4: ``enum { reserved(0), external(1), resumption(2), (255) } PSKType;``
    """

    EXTERNAL = 1
    RESUMPTION = 2


class ResumptionPSKUsage(IntEnum):
    """
    RFC 9420 §8.4: ``enum { reserved(0), application(1), reinit(2), branch(3), (255) }``
    """

    APPLICATION = 1
    REINIT = 2
    BRANCH = 3


class ProposalOrRefType(IntEnum):
    """
    RFC 9420 §12.4: ``enum { reserved(0), proposal(1), reference(2), (255) }``
    """

    PROPOSAL = 1
    REFERENCE = 2


# RFC 9420 §13.5: GREASE values, which may appear in capability lists and
# extension lists and must be ignored.
GREASE_VALUES = frozenset(0x0A0A + 0x1010 * i for i in range(15))
