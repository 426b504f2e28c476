"""
Extensions (RFC 9420 §13) and the contents of the extension types this core understands.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

from townsquare.mls.codec import U16, Opaque, Struct, Vector
from townsquare.mls.credentials import CREDENTIAL, Credential

__all__ = [
    "Extension",
    "ExternalPub",
    "ExternalSender",
    "ExternalSenders",
    "RequiredCapabilities",
    "find_extension",
]


@dataclass(frozen=True, slots=True)
class Extension(Struct):
    """
    RFC 9420 §13.4::

        struct {
            ExtensionType extension_type;
            opaque extension_data<V>;
        } Extension;

    ``extension_type`` stays an ``int``: unknown types must be carried, not rejected.
    """

    extension_type: Annotated[int, U16]
    extension_data: Annotated[bytes, Opaque]


def find_extension(extensions: Iterable[Extension], extension_type: int) -> Extension | None:
    """
    :returns: the extension of the given type, or ``None``.
    """
    for extension in extensions:
        if extension.extension_type == extension_type:
            return extension
    return None


@dataclass(frozen=True, slots=True)
class RequiredCapabilities(Struct):
    """
    RFC 9420 §11.1::

        struct {
            ExtensionType extension_types<V>;
            ProposalType proposal_types<V>;
            CredentialType credential_types<V>;
        } RequiredCapabilities;
    """

    extension_types: Annotated[tuple[Annotated[int, U16], ...], Vector]
    proposal_types: Annotated[tuple[Annotated[int, U16], ...], Vector]
    credential_types: Annotated[tuple[Annotated[int, U16], ...], Vector]


@dataclass(frozen=True, slots=True)
class ExternalPub(Struct):
    """
    RFC 9420 §12.4.3.2: ``struct { HPKEPublicKey external_pub; } ExternalPub;``
    """

    external_pub: Annotated[bytes, Opaque]


@dataclass(frozen=True, slots=True)
class ExternalSender(Struct):
    """
    RFC 9420 §12.1.8.1::

        struct {
          SignaturePublicKey signature_key;
          Credential credential;
        } ExternalSender;
    """

    signature_key: Annotated[bytes, Opaque]
    credential: Annotated[Credential, CREDENTIAL]


@dataclass(frozen=True, slots=True)
class ExternalSenders(Struct):
    """
    RFC 9420 §12.1.8.1: ``ExternalSender external_senders<V>;`` (the extension's content).
    """

    senders: Annotated[tuple[ExternalSender, ...], Vector]
