"""
Credentials (RFC 9420 §5.3): what binds a member's signature key to an identity.

Townsquare puts only keys in credentials (a device certificate, never a name);
the check that a credential is acceptable is the application's callback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from townsquare.mls.codec import U16, Opaque, Select, Struct, Vector
from townsquare.mls.registries import CredentialType

__all__ = ["CREDENTIAL", "BasicCredential", "Credential", "X509Credential"]


@dataclass(frozen=True, slots=True)
class BasicCredential(Struct):
    """
    RFC 9420 §5.3: ``case basic: opaque identity<V>;``
    """

    identity: Annotated[bytes, Opaque]


@dataclass(frozen=True, slots=True)
class X509Credential(Struct):
    """
    RFC 9420 §5.3: ``case x509: Certificate certificates<V>;`` with
    ``struct { opaque cert_data<V>; } Certificate;``
    """

    certificates: Annotated[tuple[Annotated[bytes, Opaque], ...], Vector]


Credential = BasicCredential | X509Credential

# RFC 9420 §5.3:
#   struct {
#       CredentialType credential_type;
#       select (Credential.credential_type) {
#           case basic: opaque identity<V>;
#           case x509:  Certificate certificates<V>;
#       };
#   } Credential;
CREDENTIAL = Select(
    "Credential",
    U16,
    lambda: {CredentialType.BASIC: BasicCredential, CredentialType.X509: X509Credential},
)
