"""
Errors raised by the MLS core (RFC 9420).

Every error raised by ``townsquare.mls`` derives from :class:`MLSError`. Each
subclass names one cause; catching a parent catches its whole branch::

    MLSError
    ├── UsageError               the caller misused the API (a bug in the caller)
    └── ProtocolError            bad input from the network or a peer
        ├── DecodeError          bytes that are not a valid encoding (RFC 9420 §2.1)
        │   ├── Truncated
        │   ├── TrailingBytes
        │   ├── NonMinimalVarint
        │   ├── InvalidVarintPrefix
        │   ├── InvalidOptionalPrefix
        │   ├── UnknownEnumValue
        │   ├── UnknownVariant
        │   └── InvalidValue
        │       └── DuplicateExtension
        ├── CryptoError          a cryptographic check failed
        │   ├── InvalidSignature
        │   ├── InvalidMAC
        │   ├── DecryptError
        │   ├── InvalidKey
        │   └── UnsupportedCipherSuite
        ├── FramingError         RFC 9420 §6
        │   ├── MembershipTagMismatch
        │   ├── WrongEpoch
        │   ├── WrongGroup
        │   ├── InvalidSender
        │   ├── InvalidContentType
        │   ├── InvalidPadding
        │   ├── ReuseGuardMismatch
        │   └── GenerationError
        ├── KeyScheduleError     RFC 9420 §8
        │   ├── ConfirmationTagMismatch
        │   └── PSKError
        ├── TreeError            RFC 9420 §7
        │   ├── TreeHashMismatch
        │   ├── ParentHashMismatch
        │   ├── InvalidLeafNode
        │   │   ├── LeafNodeSourceMismatch
        │   │   ├── UnsupportedCapability
        │   │   ├── LifetimeInvalid
        │   │   ├── InvalidCredential
        │   │   └── EncryptionKeyNotUpdated
        │   ├── InvalidTreeShape
        │   ├── InvalidUnmergedLeaves
        │   ├── DuplicateKey
        │   ├── PrivateKeyMismatch
        │   └── PathError
        ├── KeyPackageError      RFC 9420 §10.1
        │   ├── KeyPackageMismatch
        │   └── InitKeyReused
        ├── ProposalError        RFC 9420 §12.1, §12.2
        │   ├── InvalidProposal
        │   ├── UnknownProposalRef
        │   ├── CommitterUpdateOrRemove
        │   ├── ConflictingLeafChanges
        │   ├── DuplicateMember
        │   ├── DuplicatePSK
        │   ├── MultipleGroupContextExtensions
        │   ├── ReInitNotAlone
        │   ├── ProposalNotAllowed
        │   └── UnsupportedProposal
        ├── CommitError          RFC 9420 §12.4
        │   ├── PathRequired
        │   ├── InvalidExternalCommit
        │   └── NotOurCommit
        └── WelcomeError         RFC 9420 §12.4.3.1
            ├── NoMatchingKeyPackage
            ├── GroupInfoMismatch
            ├── MissingRatchetTree
            └── OwnLeafNotFound

Errors carry the RFC section they enforce in ``rfc_section`` so that logs and
tests can say which rule was broken.
"""

from __future__ import annotations

from typing import ClassVar


class MLSError(Exception):
    """
    Root of every error raised by the MLS core.
    """

    rfc_section: ClassVar[str] = "RFC 9420"


class UsageError(MLSError):
    """
    The caller used the API wrongly (a bug in the calling code, not bad input).
    """


class ProtocolError(MLSError):
    """
    Input from the network or a peer broke the protocol.
    """


# -- Decoding (RFC 9420 §2.1) -------------------------------------------------


class DecodeError(ProtocolError):
    """
    Bytes that are not a valid encoding; ``offset`` is where decoding stopped.
    """

    rfc_section = "RFC 9420 §2.1"

    def __init__(self, message: str, offset: int = -1) -> None:
        """
        Describe where decoding failed.

        :param message: what was wrong.
        :param offset: the input position where decoding stopped (-1 if unknown).
        """
        super().__init__(f"{message} (at byte {offset})" if offset >= 0 else message)
        self.offset = offset


class Truncated(DecodeError):
    """
    The input ended before the value did.
    """


class TrailingBytes(DecodeError):
    """
    Bytes remain after a complete top-level value.
    """


class NonMinimalVarint(DecodeError):
    """
    A variable-length integer was not encoded in its shortest form (RFC 9420 §2.1.2).
    """

    rfc_section = "RFC 9420 §2.1.2"


class InvalidVarintPrefix(DecodeError):
    """
    A variable-length integer started with the reserved prefix 0b11 (RFC 9420 §2.1.2).
    """

    rfc_section = "RFC 9420 §2.1.2"


class InvalidOptionalPrefix(DecodeError):
    """
    An optional value's presence octet was neither 0 nor 1 (RFC 9420 §2.1.1).
    """

    rfc_section = "RFC 9420 §2.1.1"


class UnknownEnumValue(DecodeError):
    """
    An enumerated field held a value that the RFC does not allow here.
    """


class UnknownVariant(DecodeError):
    """
    A ``select`` tag named no known variant, so its body cannot be parsed.
    """


class InvalidValue(DecodeError):
    """
    A field decoded but holds a value its structure forbids (for example a wrong length).
    """


# -- Cryptography (RFC 9420 §5) -----------------------------------------------


class CryptoError(ProtocolError):
    """
    A cryptographic check failed.
    """

    rfc_section = "RFC 9420 §5"


class InvalidSignature(CryptoError):
    """
    A signature did not verify (RFC 9420 §5.1.2).
    """

    rfc_section = "RFC 9420 §5.1.2"


class InvalidMAC(CryptoError):
    """
    A MAC computed with the suite's hash did not verify (RFC 9420 §5.1, ``MAC``).
    """

    rfc_section = "RFC 9420 §5.1"


class DecryptError(CryptoError):
    """
    An AEAD or HPKE ciphertext did not decrypt (wrong key, nonce, AAD or a tampered byte).
    """


class InvalidKey(CryptoError):
    """
    A public or private key is not valid for the cipher suite.
    """


class UnsupportedCipherSuite(CryptoError):
    """
    The cipher suite is not one of RFC 9420 §17.1's suites 1-7.
    """

    rfc_section = "RFC 9420 §17.1"


# -- Framing (RFC 9420 §6) -----------------------------------------------------


class FramingError(ProtocolError):
    """
    A message's framing is invalid (RFC 9420 §6).
    """

    rfc_section = "RFC 9420 §6"


class MembershipTagMismatch(FramingError):
    """
    A PublicMessage's membership tag did not verify (RFC 9420 §6.2).
    """

    rfc_section = "RFC 9420 §6.2"


class WrongEpoch(FramingError):
    """
    A message is for an epoch other than the one expected (RFC 9420 §6).
    """


class WrongGroup(FramingError):
    """
    A message is for another group (RFC 9420 §6).
    """


class InvalidSender(FramingError):
    """
    A sender type or index is not allowed for this message (RFC 9420 §6).
    """


class InvalidContentType(FramingError):
    """
    The content type is not allowed in this wire format (RFC 9420 §6.2, §6.3).
    """


class InvalidPadding(FramingError):
    """
    PrivateMessageContent padding held a non-zero byte (RFC 9420 §6.3.1).
    """

    rfc_section = "RFC 9420 §6.3.1"


class ReuseGuardMismatch(FramingError):
    """
    Sender data is inconsistent with the message it protects (RFC 9420 §6.3.2).
    """

    rfc_section = "RFC 9420 §6.3.2"


class GenerationError(FramingError):
    """
    A ratchet generation is consumed, too old or too far ahead (RFC 9420 §9.1, §9.2).
    """

    rfc_section = "RFC 9420 §9.2"


# -- Key schedule (RFC 9420 §8) ------------------------------------------------


class KeyScheduleError(ProtocolError):
    """
    A key-schedule check failed (RFC 9420 §8).
    """

    rfc_section = "RFC 9420 §8"


class ConfirmationTagMismatch(KeyScheduleError):
    """
    A confirmation tag did not verify (RFC 9420 §8.1).
    """

    rfc_section = "RFC 9420 §8.1"


class PSKError(KeyScheduleError):
    """
    A pre-shared key is missing or malformed (RFC 9420 §8.4).
    """

    rfc_section = "RFC 9420 §8.4"


# -- Ratchet tree (RFC 9420 §7) ------------------------------------------------


class TreeError(ProtocolError):
    """
    A ratchet tree or path is invalid (RFC 9420 §7).
    """

    rfc_section = "RFC 9420 §7"


class TreeHashMismatch(TreeError):
    """
    A tree hash differs from the one expected (RFC 9420 §7.8).
    """

    rfc_section = "RFC 9420 §7.8"


class ParentHashMismatch(TreeError):
    """
    A parent hash does not verify (RFC 9420 §7.9.2).
    """

    rfc_section = "RFC 9420 §7.9.2"


class InvalidLeafNode(TreeError):
    """
    A leaf node failed validation (RFC 9420 §7.3).
    """

    rfc_section = "RFC 9420 §7.3"


class InvalidTreeShape(TreeError):
    """
    The tree's array is malformed: wrong size, trailing blanks, a leaf in a parent slot (§7.1).
    """

    rfc_section = "RFC 9420 §7.1"


class InvalidUnmergedLeaves(TreeError):
    """
    A parent's ``unmerged_leaves`` is unsorted or names a leaf it may not (RFC 9420 §12.4.3.1).
    """

    rfc_section = "RFC 9420 §12.4.3.1"


class DuplicateKey(TreeError):
    """
    An encryption or signature key appears in more than one node of the tree (RFC 9420 §7.3).
    """

    rfc_section = "RFC 9420 §7.3"


class PrivateKeyMismatch(TreeError):
    """
    A private key we hold does not match the public key of its node in the tree (RFC 9420 §7.4).
    """

    rfc_section = "RFC 9420 §7.4"


class PathError(TreeError):
    """
    An UpdatePath is malformed or cannot be applied (RFC 9420 §7.6).
    """

    rfc_section = "RFC 9420 §7.6"


# -- Welcome (RFC 9420 §12.4.3.1) ----------------------------------------------


class WelcomeError(ProtocolError):
    """
    A Welcome message cannot be used to join (RFC 9420 §12.4.3.1).
    """

    rfc_section = "RFC 9420 §12.4.3.1"


class NoMatchingKeyPackage(WelcomeError):
    """
    No entry in the Welcome's secrets is for any of our KeyPackages (RFC 9420 §12.4.3.1).
    """


class LeafNodeSourceMismatch(InvalidLeafNode):
    """
    A leaf node's ``leaf_node_source`` is not the one its place requires (RFC 9420 §7.3).
    """


class UnsupportedCapability(InvalidLeafNode):
    """
    A leaf node lacks a capability the group needs, or uses one it does not list (§7.3).
    """


class LifetimeInvalid(InvalidLeafNode):
    """
    The current time is outside a leaf node's lifetime (RFC 9420 §7.3).
    """


class InvalidCredential(InvalidLeafNode):
    """
    The application's credential check rejected a credential (RFC 9420 §5.3.1).
    """

    rfc_section = "RFC 9420 §5.3.1"


class EncryptionKeyNotUpdated(InvalidLeafNode):
    """
    An Update or commit leaf reuses the encryption key of the leaf it replaces (§7.3, §12.4.2).
    """


# -- KeyPackages (RFC 9420 §10.1) ------------------------------------------------


class KeyPackageError(ProtocolError):
    """
    A KeyPackage is not valid (RFC 9420 §10.1).
    """

    rfc_section = "RFC 9420 §10.1"


class KeyPackageMismatch(KeyPackageError):
    """
    A KeyPackage's cipher suite or protocol version is not the group's (RFC 9420 §10.1).
    """


class InitKeyReused(KeyPackageError):
    """
    A KeyPackage's ``init_key`` equals its leaf's ``encryption_key`` (RFC 9420 §10.1).
    """


# -- Proposals (RFC 9420 §12.1, §12.2) -------------------------------------------


class ProposalError(ProtocolError):
    """
    A proposal, or a commit's list of proposals, is invalid (RFC 9420 §12.1, §12.2).
    """

    rfc_section = "RFC 9420 §12.2"


class InvalidProposal(ProposalError):
    """
    One proposal is invalid on its own (RFC 9420 §12.1).
    """

    rfc_section = "RFC 9420 §12.1"


class UnknownProposalRef(ProposalError):
    """
    A commit refers to a proposal the receiver does not hold for this epoch (RFC 9420 §12.4).
    """

    rfc_section = "RFC 9420 §12.4"


class CommitterUpdateOrRemove(ProposalError):
    """
    A commit covers an Update from, or a Remove of, the committer itself (RFC 9420 §12.2).
    """


class ConflictingLeafChanges(ProposalError):
    """
    A commit covers more than one Update or Remove for the same leaf (RFC 9420 §12.2).
    """


class DuplicateMember(ProposalError):
    """
    An Add names a client that is already in the group or added twice (RFC 9420 §12.2).
    """


class DuplicatePSK(ProposalError):
    """
    A commit covers two PreSharedKey proposals with the same PreSharedKeyID (RFC 9420 §12.2).
    """


class MultipleGroupContextExtensions(ProposalError):
    """
    A commit covers more than one GroupContextExtensions proposal (RFC 9420 §12.2).
    """


class ReInitNotAlone(ProposalError):
    """
    A commit covers a ReInit together with another proposal (RFC 9420 §12.2).
    """


class ProposalNotAllowed(ProposalError):
    """
    A proposal type is not allowed here (an ExternalInit in a member's commit, §12.2).
    """


class UnsupportedProposal(ProposalError):
    """
    A proposal's type is not supported by a member that must process it (RFC 9420 §12.2).
    """


# -- Commits (RFC 9420 §12.4) -----------------------------------------------------


class CommitError(ProtocolError):
    """
    A commit is invalid (RFC 9420 §12.4).
    """

    rfc_section = "RFC 9420 §12.4"


class PathRequired(CommitError):
    """
    A commit that must carry an UpdatePath has none (RFC 9420 §12.4).
    """


class InvalidExternalCommit(CommitError):
    """
    An external commit breaks the rules of RFC 9420 §12.4.3.2.
    """

    rfc_section = "RFC 9420 §12.4.3.2"


class NotOurCommit(CommitError):
    """
    A commit from our own leaf is not the one we have pending (RFC 9420 §12.4.2).
    """


# -- Welcome (RFC 9420 §12.4.3.1) -------------------------------------------------


class GroupInfoMismatch(WelcomeError):
    """
    A Welcome's GroupInfo disagrees with its KeyPackage, tree or secrets (RFC 9420 §12.4.3.1).
    """


class MissingRatchetTree(WelcomeError):
    """
    Neither the GroupInfo nor the caller supplied the ratchet tree (RFC 9420 §12.4.3.3).
    """

    rfc_section = "RFC 9420 §12.4.3.3"


class OwnLeafNotFound(WelcomeError):
    """
    The ratchet tree of a Welcome has no leaf equal to our KeyPackage's (RFC 9420 §12.4.3.1).
    """


# -- Extensions (RFC 9420 §13.4) ---------------------------------------------------


class DuplicateExtension(InvalidValue):
    """
    A list of extensions holds two extensions of the same type (RFC 9420 §13.4).
    """

    rfc_section = "RFC 9420 §13.4"
