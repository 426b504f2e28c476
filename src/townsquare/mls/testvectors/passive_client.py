"""
Checks the passive-client vectors: join by Welcome, then follow every commit (RFC 9420 §12).

The three kinds (``passive-client-welcome``, ``passive-client-handling-commit``
and ``passive-client-random``) share one format: FORMAT.md's "Passive Client
Scenarios". After the join and after every epoch the epoch authenticator must
match the vector's.
"""

from __future__ import annotations

from collections.abc import Mapping

from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.errors import DecodeError
from townsquare.mls.framing import MLSMessage
from townsquare.mls.group import Group, GroupConfig, ProposalReceived, StagedCommit
from townsquare.mls.key_package import KeyPackage, KeyPackageBundle
from townsquare.mls.psk import PreSharedKeyID
from townsquare.mls.registries import PSKType
from townsquare.mls.testvectors.fields import (
    VectorMismatch,
    expect_equal,
    hex_field,
    int_field,
    list_field,
    optional_hex_field,
)


def _key_package(data: bytes) -> KeyPackage:
    # The vectors carry the KeyPackage inside an MLSMessage; accept a bare one too.
    try:
        message = MLSMessage.decode(data)
    except DecodeError:
        return KeyPackage.decode(data)
    if not isinstance(message.body, KeyPackage):
        raise VectorMismatch("key_package is not a KeyPackage")
    return message.body


def check(case: Mapping[str, object]) -> None:
    """
    Join from the Welcome and follow every epoch, comparing epoch authenticators.

    :raises VectorMismatch: on a different key or authenticator, or a commit not applied.
    :raises ProtocolError: if a message of the scenario is refused.
    """
    suite = get_cipher_suite(int_field(case, "cipher_suite"))
    key_package = _key_package(hex_field(case, "key_package"))
    signature_priv = hex_field(case, "signature_priv")
    encryption_priv = hex_field(case, "encryption_priv")
    init_priv = hex_field(case, "init_priv")
    # FORMAT.md: "Verify that signature_priv, leaf_priv, and init_priv
    # correspond to the public keys ... in the KeyPackage".
    leaf = key_package.leaf_node
    expect_equal("signature key", suite.signature_public_key(signature_priv), leaf.signature_key)
    expect_equal("encryption key", suite.hpke_public_key(encryption_priv), leaf.encryption_key)
    expect_equal("init key", suite.hpke_public_key(init_priv), key_package.init_key)

    psks: dict[bytes, bytes] = {}
    for entry in list_field(case, "external_psks"):
        if not isinstance(entry, Mapping):
            raise VectorMismatch("external_psks entry is not an object")
        psks[hex_field(entry, "psk_id")] = hex_field(entry, "psk")

    def external_psk(psk_id: PreSharedKeyID) -> bytes | None:
        if psk_id.psktype != PSKType.EXTERNAL or psk_id.psk_id is None:
            return None
        return psks.get(psk_id.psk_id)

    config = GroupConfig(external_psks=external_psk)
    bundle = KeyPackageBundle(
        key_package=key_package,
        init_private_key=init_priv,
        encryption_private_key=encryption_priv,
        signature_private_key=signature_priv,
    )
    group = Group.join(
        hex_field(case, "welcome"),
        bundle,
        ratchet_tree=optional_hex_field(case, "ratchet_tree"),
        config=config,
    )
    expect_equal(
        "initial epoch authenticator",
        group.epoch_authenticator,
        hex_field(case, "initial_epoch_authenticator"),
    )
    for number, epoch in enumerate(list_field(case, "epochs")):
        if not isinstance(epoch, Mapping):
            raise VectorMismatch("epoch entry is not an object")
        for proposal in list_field(epoch, "proposals"):
            if not isinstance(proposal, str):
                raise VectorMismatch("proposal is not hex")
            result = group.process(bytes.fromhex(proposal))
            if not isinstance(result, ProposalReceived):
                raise VectorMismatch(f"epoch {number}: a proposal gave {type(result).__name__}")
        staged = group.process(hex_field(epoch, "commit"))
        if not isinstance(staged, StagedCommit):
            raise VectorMismatch(f"epoch {number}: the commit gave {type(staged).__name__}")
        group.merge(staged)
        expect_equal(
            f"epoch {number} authenticator",
            group.epoch_authenticator,
            hex_field(epoch, "epoch_authenticator"),
        )
