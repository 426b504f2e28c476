"""
Pre-shared keys (RFC 9420 §8.4): their identifiers and how several combine into ``psk_secret``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from townsquare.mls.codec import U8, U16, U64, Opaque, Struct, When
from townsquare.mls.errors import UsageError
from townsquare.mls.registries import PSKType, ResumptionPSKUsage

if TYPE_CHECKING:
    # For annotations only: the wire-struct modules never load the crypto
    # layer at run time, so no import cycle can form through it.
    from townsquare.mls.ciphersuite import CipherSuite

__all__ = ["MAX_PSKS", "PSKLabel", "PreSharedKeyID", "psk_secret"]

#: The most PSKs one epoch can inject: PSKLabel's ``count`` is a ``uint16`` (RFC 9420 §8.4).
MAX_PSKS = 0xFFFF


def _is_external(fields: Mapping[str, object]) -> bool:
    return fields["psktype"] == PSKType.EXTERNAL


def _is_resumption(fields: Mapping[str, object]) -> bool:
    return fields["psktype"] == PSKType.RESUMPTION


@dataclass(frozen=True, slots=True, kw_only=True)
class PreSharedKeyID(Struct):
    """
    RFC 9420 §8.4::

        struct {
          PSKType psktype;
          select (PreSharedKeyID.psktype) {
            case external:
              opaque psk_id<V>;

            case resumption:
              ResumptionPSKUsage usage;
              opaque psk_group_id<V>;
              uint64 psk_epoch;
          };
          opaque psk_nonce<V>;
        } PreSharedKeyID;
    """

    psktype: Annotated[PSKType, U8]
    psk_id: Annotated[bytes | None, Opaque, When(_is_external)] = None
    usage: Annotated[ResumptionPSKUsage | None, U8, When(_is_resumption)] = None
    psk_group_id: Annotated[bytes | None, Opaque, When(_is_resumption)] = None
    psk_epoch: Annotated[int | None, U64, When(_is_resumption)] = None
    psk_nonce: Annotated[bytes, Opaque]


@dataclass(frozen=True, slots=True)
class PSKLabel(Struct):
    """
    RFC 9420 §8.4::

        struct {
            PreSharedKeyID id;
            uint16 index;
            uint16 count;
        } PSKLabel;
    """

    id: PreSharedKeyID
    index: Annotated[int, U16]
    count: Annotated[int, U16]


def psk_secret(suite: CipherSuite, psks: Sequence[tuple[PreSharedKeyID, bytes]]) -> bytes:
    """
    Combine an epoch's PSKs into its ``psk_secret`` (RFC 9420 §8.4)::

        psk_extracted_[i] = KDF.Extract(0, psk_[i])
        psk_input_[i] = ExpandWithLabel(psk_extracted_[i], "derived psk",
                          PSKLabel, KDF.Nh)

        psk_secret_[0] = 0
        psk_secret_[i] = KDF.Extract(psk_input_[i-1], psk_secret_[i-1])
        psk_secret     = psk_secret_[n]

    :param suite: the group's cipher suite.
    :param psks: each PSK's identifier and value, in the order of the Commit's PreSharedKey
        proposals or of the Welcome's ``GroupSecrets.psks``.
    :returns: ``psk_secret``; the all-zero vector of length ``KDF.Nh`` when ``psks`` is empty.
    :raises UsageError: if there are more PSKs than PSKLabel's ``uint16`` count can hold.
    """
    count = len(psks)
    if count > MAX_PSKS:
        # PSKLabel.index and PSKLabel.count are uint16 (RFC 9420 §8.4); more
        # PSKs than that cannot be labelled, so the caller has a bug.
        raise UsageError(f"{count} PSKs exceed the {MAX_PSKS} that PSKLabel can count")
    # RFC 9420 §8.4: "Here 0 represents the all-zero vector of length KDF.Nh."
    zero = bytes(suite.hash_length)
    secret = zero
    for index, (psk_id, psk) in enumerate(psks):
        extracted = suite.kdf_extract(zero, psk)
        label = PSKLabel(psk_id, index, count).encode()
        psk_input = suite.expand_with_label(extracted, b"derived psk", label, suite.hash_length)
        secret = suite.kdf_extract(psk_input, secret)
    return secret
