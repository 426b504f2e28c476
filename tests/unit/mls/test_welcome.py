"""
RFC 9420 §12.4.3.1: sealing and opening Welcome messages and their GroupInfo.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from townsquare.mls.ciphersuite import CipherSuite, get_cipher_suite
from townsquare.mls.credentials import BasicCredential
from townsquare.mls.errors import (
    ConfirmationTagMismatch,
    DecryptError,
    InvalidSignature,
    NoMatchingKeyPackage,
)
from townsquare.mls.framing import MLSMessage
from townsquare.mls.group_context import GroupContext
from townsquare.mls.key_package import KEY_PACKAGE_REF_LABEL, KeyPackage, key_package_ref
from townsquare.mls.key_schedule import (
    EpochSecrets,
    confirmation_tag,
    derive_epoch_secrets_from_joiner,
    verify_confirmation_tag,
    welcome_secret,
)
from townsquare.mls.leaf_node import Capabilities, LeafNode, Lifetime
from townsquare.mls.psk import PreSharedKeyID
from townsquare.mls.registries import LeafNodeSource, ProtocolVersion, PSKType
from townsquare.mls.update_path import HPKECiphertext
from townsquare.mls.welcome import (
    GroupInfo,
    GroupSecrets,
    PathSecret,
    Welcome,
    decrypt_group_info,
    decrypt_group_secrets,
    encrypt_group_info,
    encrypt_group_secrets,
    find_encrypted_group_secrets,
    seal_welcome,
    sign_group_info,
    verify_group_info_signature,
    welcome_key,
    welcome_nonce,
)


def seeded_rng(seed: bytes) -> Callable[[int], bytes]:
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
            counter += 1
        return out[:n]

    return rng


@dataclass(frozen=True)
class Joiner:
    key_package: KeyPackage
    init_priv: bytes

    def ref(self, suite: CipherSuite) -> bytes:
        return key_package_ref(suite, self.key_package)


def make_joiner(suite: CipherSuite, name: bytes) -> Joiner:
    rng = seeded_rng(name)
    init_priv, init_pub = suite.hpke_generate_key_pair(rng)
    _, leaf_pub = suite.hpke_generate_key_pair(rng)
    _, signature_pub = suite.generate_signature_key_pair(rng)
    leaf = LeafNode(
        encryption_key=leaf_pub,
        signature_key=signature_pub,
        credential=BasicCredential(name),
        capabilities=Capabilities(
            versions=(ProtocolVersion.MLS10,),
            cipher_suites=(suite.suite_id,),
            extensions=(),
            proposals=(),
            credentials=(1,),
        ),
        leaf_node_source=LeafNodeSource.KEY_PACKAGE,
        lifetime=Lifetime(0, 2**64 - 1),
    )
    key_package = KeyPackage(cipher_suite=suite.suite_id, init_key=init_pub, leaf_node=leaf)
    return Joiner(key_package, init_priv)


@dataclass(frozen=True)
class Sealed:
    suite: CipherSuite
    welcome: Welcome
    group_info: GroupInfo
    group_secrets: GroupSecrets
    epoch_secrets: EpochSecrets
    signer_pub: bytes


def seal(
    suite: CipherSuite, joiners: list[Joiner], psks: tuple[PreSharedKeyID, ...] = ()
) -> Sealed:
    rng = seeded_rng(b"committer" + bytes([suite.suite_id]))
    signer_priv, signer_pub = suite.generate_signature_key_pair(rng)
    n = suite.hash_length
    group_context = GroupContext(
        cipher_suite=suite.suite_id,
        group_id=b"village",
        epoch=3,
        tree_hash=b"\x0a" * n,
        confirmed_transcript_hash=b"\x0b" * n,
    )
    joiner = rng(n)
    epoch_secrets = derive_epoch_secrets_from_joiner(
        suite, joiner_secret=joiner, psk_secret=None, group_context=group_context
    )
    group_info = sign_group_info(
        suite,
        GroupInfo(
            group_context=group_context,
            confirmation_tag=confirmation_tag(
                suite, epoch_secrets.confirmation_key, group_context.confirmed_transcript_hash
            ),
            signer=0,
        ),
        signer_priv,
    )
    group_secrets = GroupSecrets(joiner, PathSecret(rng(n)), psks)
    welcome = seal_welcome(
        suite,
        welcome_secret=epoch_secrets.welcome_secret,
        group_info=group_info,
        new_members=[(j.key_package, group_secrets) for j in joiners],
        rng=rng,
    )
    return Sealed(suite, welcome, group_info, group_secrets, epoch_secrets, signer_pub)


SUITE = get_cipher_suite(1)
ALICE = make_joiner(SUITE, b"alice")
BOB = make_joiner(SUITE, b"bob")
SEALED = seal(SUITE, [ALICE, BOB])


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


def test_key_package_ref_is_ref_hash_of_encoded_key_package() -> None:
    assert ALICE.ref(SUITE) == SUITE.ref_hash(
        b"MLS 1.0 KeyPackage Reference", ALICE.key_package.encode()
    )
    assert KEY_PACKAGE_REF_LABEL == b"MLS 1.0 KeyPackage Reference"


def test_welcome_key_and_nonce_follow_rfc() -> None:
    secret = SEALED.epoch_secrets.welcome_secret
    assert welcome_key(SUITE, secret) == SUITE.expand_with_label(
        secret, b"key", b"", SUITE.aead_key_length
    )
    assert welcome_nonce(SUITE, secret) == SUITE.expand_with_label(
        secret, b"nonce", b"", SUITE.aead_nonce_length
    )


@pytest.mark.parametrize("suite_id", range(1, 8))
def test_welcome_round_trip(suite_id: int) -> None:
    suite = get_cipher_suite(suite_id)
    joiner = make_joiner(suite, b"carol")
    sealed = seal(suite, [joiner])
    # Over the wire and back, as an MLSMessage.
    wire = MLSMessage(ProtocolVersion.MLS10, sealed.welcome).encode()
    welcome = MLSMessage.decode(wire).body
    assert isinstance(welcome, Welcome)

    group_secrets = decrypt_group_secrets(suite, welcome, joiner.ref(suite), joiner.init_priv)
    assert group_secrets == sealed.group_secrets
    secret = welcome_secret(suite, group_secrets.joiner_secret, None)
    group_info = decrypt_group_info(suite, secret, welcome.encrypted_group_info)
    assert group_info == sealed.group_info
    verify_group_info_signature(suite, group_info, sealed.signer_pub)
    epoch_secrets = derive_epoch_secrets_from_joiner(
        suite,
        joiner_secret=group_secrets.joiner_secret,
        psk_secret=None,
        group_context=group_info.group_context,
    )
    assert epoch_secrets == sealed.epoch_secrets
    verify_confirmation_tag(
        suite,
        epoch_secrets.confirmation_key,
        group_info.group_context.confirmed_transcript_hash,
        group_info.confirmation_tag,
    )


def test_welcome_carries_psk_ids() -> None:
    psk = PreSharedKeyID(psktype=PSKType.EXTERNAL, psk_id=b"club", psk_nonce=b"\x02" * 32)
    sealed = seal(SUITE, [ALICE], psks=(psk,))
    opened = decrypt_group_secrets(SUITE, sealed.welcome, ALICE.ref(SUITE), ALICE.init_priv)
    assert opened.psks == (psk,)


def test_each_member_opens_its_own_entry() -> None:
    assert [entry.new_member for entry in SEALED.welcome.secrets] == [
        ALICE.ref(SUITE),
        BOB.ref(SUITE),
    ]
    for joiner in (ALICE, BOB):
        opened = decrypt_group_secrets(SUITE, SEALED.welcome, joiner.ref(SUITE), joiner.init_priv)
        assert opened == SEALED.group_secrets


def test_encrypted_group_info_is_deterministic() -> None:
    secret = SEALED.epoch_secrets.welcome_secret
    assert encrypt_group_info(SUITE, secret, SEALED.group_info) == (
        SEALED.welcome.encrypted_group_info
    )


def test_welcome_for_another_key_package_is_rejected() -> None:
    carol = make_joiner(SUITE, b"carol")
    before = SEALED.welcome.encode()
    with pytest.raises(NoMatchingKeyPackage):
        decrypt_group_secrets(SUITE, SEALED.welcome, carol.ref(SUITE), carol.init_priv)
    with pytest.raises(NoMatchingKeyPackage):
        find_encrypted_group_secrets(SEALED.welcome, carol.ref(SUITE))
    assert SEALED.welcome.encode() == before


def test_welcome_for_another_cipher_suite_is_rejected() -> None:
    # RFC 9420 §12.4.3.1: "if the cipher suite indicated in the KeyPackage
    # does not match the one in the Welcome message, return an error."
    other = dataclasses.replace(SEALED.welcome, cipher_suite=3)
    with pytest.raises(NoMatchingKeyPackage):
        decrypt_group_secrets(SUITE, other, ALICE.ref(SUITE), ALICE.init_priv)


def _with_entry(welcome: Welcome, ciphertext: HPKECiphertext) -> Welcome:
    entry = dataclasses.replace(welcome.secrets[0], encrypted_group_secrets=ciphertext)
    return dataclasses.replace(welcome, secrets=(entry, *welcome.secrets[1:]))


def test_tampered_group_secrets_ciphertext_is_rejected() -> None:
    original = SEALED.welcome.secrets[0].encrypted_group_secrets
    tampered = _with_entry(
        SEALED.welcome,
        dataclasses.replace(original, ciphertext=flip_last_byte(original.ciphertext)),
    )
    before = tampered.encode()
    with pytest.raises(DecryptError):
        decrypt_group_secrets(SUITE, tampered, ALICE.ref(SUITE), ALICE.init_priv)
    assert tampered.encode() == before


def test_tampered_group_secrets_kem_output_is_rejected() -> None:
    original = SEALED.welcome.secrets[0].encrypted_group_secrets
    tampered = _with_entry(
        SEALED.welcome,
        dataclasses.replace(original, kem_output=flip_last_byte(original.kem_output)),
    )
    with pytest.raises(DecryptError):
        decrypt_group_secrets(SUITE, tampered, ALICE.ref(SUITE), ALICE.init_priv)


def test_group_secrets_for_another_init_key_are_rejected() -> None:
    with pytest.raises(DecryptError):
        decrypt_group_secrets(SUITE, SEALED.welcome, ALICE.ref(SUITE), BOB.init_priv)


def test_tampered_encrypted_group_info_is_rejected() -> None:
    tampered = flip_last_byte(SEALED.welcome.encrypted_group_info)
    with pytest.raises(DecryptError):
        decrypt_group_info(SUITE, SEALED.epoch_secrets.welcome_secret, tampered)
    # The encrypted GroupInfo is also the context of every member's
    # EncryptWithLabel, so swapping it breaks the group secrets too.
    swapped = dataclasses.replace(SEALED.welcome, encrypted_group_info=tampered)
    with pytest.raises(DecryptError):
        decrypt_group_secrets(SUITE, swapped, ALICE.ref(SUITE), ALICE.init_priv)


def test_group_info_under_another_welcome_secret_is_rejected() -> None:
    wrong_secret = welcome_secret(SUITE, b"\x00" * SUITE.hash_length, None)
    with pytest.raises(DecryptError):
        decrypt_group_info(SUITE, wrong_secret, SEALED.welcome.encrypted_group_info)


def test_forged_group_info_signature_is_rejected() -> None:
    forged = dataclasses.replace(SEALED.group_info, signer=1)
    before = forged.encode()
    with pytest.raises(InvalidSignature):
        verify_group_info_signature(SUITE, forged, SEALED.signer_pub)
    assert forged.encode() == before


def test_group_info_signed_by_someone_else_is_rejected() -> None:
    _, stranger_pub = SUITE.generate_signature_key_pair(seeded_rng(b"stranger"))
    with pytest.raises(InvalidSignature):
        verify_group_info_signature(SUITE, SEALED.group_info, stranger_pub)


def test_group_info_with_wrong_confirmation_tag_is_rejected() -> None:
    group_info = SEALED.group_info
    with pytest.raises(ConfirmationTagMismatch):
        verify_confirmation_tag(
            SUITE,
            SEALED.epoch_secrets.membership_key,
            group_info.group_context.confirmed_transcript_hash,
            group_info.confirmation_tag,
        )


def test_encrypt_group_secrets_names_the_key_package() -> None:
    entry = encrypt_group_secrets(
        SUITE,
        ALICE.key_package,
        SEALED.group_secrets,
        SEALED.welcome.encrypted_group_info,
        seeded_rng(b"again"),
    )
    assert entry.new_member == ALICE.ref(SUITE)
