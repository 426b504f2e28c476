"""
The MLS cipher suites (RFC 9420 §5.1, §17.1): primitives, labelled operations and their errors.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from townsquare.mls.ciphersuite import (
    CipherSuite,
    CipherSuiteId,
    SignatureScheme,
    get_cipher_suite,
)
from townsquare.mls.errors import (
    DecryptError,
    InvalidKey,
    InvalidMAC,
    InvalidSignature,
    UnsupportedCipherSuite,
    UsageError,
)

VECTORS = Path(__file__).resolve().parents[2] / "vectors"

SUITES = [pytest.param(get_cipher_suite(s), id=f"suite{int(s)}") for s in CipherSuiteId]
ECDSA_SCHEMES = {
    SignatureScheme.ecdsa_secp256r1_sha256,
    SignatureScheme.ecdsa_secp384r1_sha384,
    SignatureScheme.ecdsa_secp521r1_sha512,
}
ECDSA_SUITES = [
    pytest.param(get_cipher_suite(s), id=f"suite{int(s)}")
    for s in CipherSuiteId
    if get_cipher_suite(s).signature_scheme in ECDSA_SCHEMES
]

MESSAGE = b"petition: more benches on the green"


def seeded_rng(seed: bytes) -> Callable[[int], bytes]:
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        counter += 1
        return hashlib.shake_256(counter.to_bytes(4, "big") + seed).digest(n)

    return rng


def flip(data: bytes, index: int = -1) -> bytes:
    tampered = bytearray(data)
    tampered[index] ^= 0x01
    return bytes(tampered)


# -- The registry -------------------------------------------------------------


def test_every_registry_suite_has_the_rfc_parameters() -> None:
    # RFC 9420 §17.1: (Nh, Nk, Nn, signature scheme) of each suite.
    expected = {
        1: (32, 16, 12, SignatureScheme.ed25519),
        2: (32, 16, 12, SignatureScheme.ecdsa_secp256r1_sha256),
        3: (32, 32, 12, SignatureScheme.ed25519),
        4: (64, 32, 12, SignatureScheme.ed448),
        5: (64, 32, 12, SignatureScheme.ecdsa_secp521r1_sha512),
        6: (64, 32, 12, SignatureScheme.ed448),
        7: (48, 32, 12, SignatureScheme.ecdsa_secp384r1_sha384),
    }
    for suite_id, (nh, nk, nn, scheme) in expected.items():
        suite = get_cipher_suite(suite_id)
        assert suite.suite_id == suite_id
        assert (suite.hash_length, suite.aead_key_length, suite.aead_nonce_length) == (nh, nk, nn)
        assert suite.signature_scheme == scheme
        assert repr(suite) == f"CipherSuite({CipherSuiteId(suite_id).name})"


def test_get_cipher_suite_is_cached() -> None:
    assert get_cipher_suite(1) is get_cipher_suite(CipherSuiteId(1))


@pytest.mark.parametrize("suite_id", [0, 8, 0x0A0A, 0xFAFA, 0xFFFF, -1])
def test_unknown_cipher_suite_is_unsupported(suite_id: int) -> None:
    with pytest.raises(UnsupportedCipherSuite):
        get_cipher_suite(suite_id)


# -- Hash, KDF, MAC -------------------------------------------------------------


def test_hkdf_matches_rfc5869_test_case_1() -> None:
    suite = get_cipher_suite(1)
    ikm = bytes([0x0B] * 22)
    salt = bytes(range(13))
    info = bytes(range(0xF0, 0xFA))
    prk = suite.kdf_extract(salt, ikm)
    assert prk.hex() == "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
    okm = suite.kdf_expand(prk, info, 42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


@pytest.mark.parametrize("suite", SUITES)
def test_hkdf_agrees_with_cryptography(suite: CipherSuite) -> None:
    algorithm = {32: hashes.SHA256(), 48: hashes.SHA384(), 64: hashes.SHA512()}[suite.hash_length]
    for salt in (b"", b"salt"):
        for length in (1, suite.hash_length, 3 * suite.hash_length + 5):
            want = HKDF(algorithm, length, salt or None, b"info").derive(b"ikm")
            got = suite.kdf_expand(suite.kdf_extract(salt, b"ikm"), b"info", length)
            assert got == want
    assert len(suite.kdf_expand(b"k" * suite.hash_length, b"", 255 * suite.hash_length)) == (
        255 * suite.hash_length
    )
    with pytest.raises(UsageError):
        suite.kdf_expand(b"k" * suite.hash_length, b"", 255 * suite.hash_length + 1)


@pytest.mark.parametrize("suite", SUITES)
def test_hash_and_mac_use_the_suite_hash(suite: CipherSuite) -> None:
    name = {32: "sha256", 48: "sha384", 64: "sha512"}[suite.hash_length]
    assert suite.hash(MESSAGE) == hashlib.new(name, MESSAGE).digest()
    assert suite.mac(b"key", MESSAGE) == hmac.new(b"key", MESSAGE, name).digest()


@pytest.mark.parametrize("suite", SUITES)
def test_verify_mac_accepts_the_tag_and_rejects_any_change(suite: CipherSuite) -> None:
    tag = suite.mac(b"key", MESSAGE)
    suite.verify_mac(b"key", MESSAGE, tag)
    for key, data, bad_tag in (
        (b"key", MESSAGE, flip(tag)),
        (b"key", MESSAGE, tag[:-1]),
        (b"key", MESSAGE, b""),
        (b"kez", MESSAGE, tag),
        (b"key", flip(MESSAGE), tag),
    ):
        with pytest.raises(InvalidMAC):
            suite.verify_mac(key, data, bad_tag)


# -- Labelled KDF operations -----------------------------------------------------


def test_expand_with_label_encodes_kdf_label() -> None:
    # RFC 9420 §5.1: KDFLabel = uint16 length, opaque label<V>, opaque context<V>,
    # with the label prefixed by "MLS 1.0 ".
    suite = get_cipher_suite(1)
    label = b"MLS 1.0 " + b"test"
    kdf_label = b"\x00\x20" + bytes([len(label)]) + label + b"\x03ctx"
    want = suite.kdf_expand(b"secret", kdf_label, 32)
    assert suite.expand_with_label(b"secret", b"test", b"ctx", 32) == want
    assert suite.derive_secret(b"secret", b"test") == suite.expand_with_label(
        b"secret", b"test", b"", 32
    )


def test_derive_tree_secret_encodes_generation_as_uint32() -> None:
    suite = get_cipher_suite(1)
    want = suite.expand_with_label(b"secret", b"key", b"\x00\x00\x01\x02", 16)
    assert suite.derive_tree_secret(b"secret", b"key", 0x0102, 16) == want
    with pytest.raises(UsageError):
        suite.derive_tree_secret(b"secret", b"key", 1 << 32, 16)
    with pytest.raises(UsageError):
        suite.derive_tree_secret(b"secret", b"key", -1, 16)


def test_ref_hash_takes_the_full_label() -> None:
    # RFC 9420 §5.2 defines RefHash on the label as given, prefix included.
    suite = get_cipher_suite(1)
    label = b"MLS 1.0 KeyPackage Reference"
    value = b"\x01\x02"
    want = hashlib.sha256(bytes([len(label)]) + label + b"\x02\x01\x02").digest()
    assert suite.ref_hash(label, value) == want


def test_expand_with_label_length_must_fit_uint16_and_hkdf() -> None:
    suite = get_cipher_suite(1)
    with pytest.raises(UsageError):
        suite.expand_with_label(b"secret", b"x", b"", 0x10000)
    with pytest.raises(UsageError):
        suite.expand_with_label(b"secret", b"x", b"", 255 * 32 + 1)


# -- AEAD ---------------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES)
def test_aead_round_trip_and_tampering(suite: CipherSuite) -> None:
    key = bytes(range(suite.aead_key_length))
    nonce = bytes(range(100, 100 + suite.aead_nonce_length))
    ciphertext = suite.aead_seal(key, nonce, b"aad", MESSAGE)
    assert len(ciphertext) == len(MESSAGE) + 16
    assert suite.aead_open(key, nonce, b"aad", ciphertext) == MESSAGE
    for args in (
        (key, nonce, b"aad", flip(ciphertext)),
        (key, nonce, b"aad", flip(ciphertext, 0)),
        (key, nonce, b"aae", ciphertext),
        (key, flip(nonce), b"aad", ciphertext),
        (flip(key), nonce, b"aad", ciphertext),
        (key, nonce, b"aad", ciphertext[:15]),
    ):
        with pytest.raises(DecryptError):
            suite.aead_open(*args)


@pytest.mark.parametrize("suite", SUITES)
def test_aead_key_and_nonce_lengths_are_checked(suite: CipherSuite) -> None:
    key = bytes(suite.aead_key_length)
    nonce = bytes(suite.aead_nonce_length)
    for bad_key, bad_nonce in ((key[:-1], nonce), (key + b"\x00", nonce), (key, nonce[:-1])):
        with pytest.raises(UsageError):
            suite.aead_seal(bad_key, bad_nonce, b"", MESSAGE)
        with pytest.raises(UsageError):
            suite.aead_open(bad_key, bad_nonce, b"", bytes(32))


def _aead_known_answers() -> list[object]:
    # RFC 9180's vectors give each context's AEAD key and every nonce and
    # ciphertext, which makes them AEAD known answers for our suites too.
    entries = json.loads((VECTORS / "hpke" / "rfc9180-base-mls.json").read_text())
    by_components = {
        (1, 16): 1,  # AES-128-GCM
        (2, 32): 5,  # AES-256-GCM
        (3, 32): 3,  # ChaCha20Poly1305
    }
    params = []
    for index, entry in enumerate(entries):
        suite_id = by_components[(entry["aead_id"], len(entry["key"]) // 2)]
        params.append(pytest.param(suite_id, entry, id=f"rfc9180[{index}]-suite{suite_id}"))
    return params


@pytest.mark.vectors
@pytest.mark.parametrize(("suite_id", "entry"), _aead_known_answers())
def test_aead_matches_rfc9180_known_answers(suite_id: int, entry: dict[str, object]) -> None:
    suite = get_cipher_suite(suite_id)
    key = bytes.fromhex(str(entry["key"]))
    encryptions = entry["encryptions"]
    assert isinstance(encryptions, list)
    for encryption in encryptions[:8]:
        nonce = bytes.fromhex(encryption["nonce"])
        aad = bytes.fromhex(encryption["aad"])
        pt = bytes.fromhex(encryption["pt"])
        ct = bytes.fromhex(encryption["ct"])
        assert suite.aead_seal(key, nonce, aad, pt) == ct
        assert suite.aead_open(key, nonce, aad, ct) == pt


# -- Signatures ---------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES)
def test_sign_then_verify(suite: CipherSuite) -> None:
    private, public = suite.generate_signature_key_pair(seeded_rng(b"signer"))
    assert suite.signature_public_key(private) == public
    assert len(public) == suite.signature_public_key_length
    suite.check_signature_public_key(public)
    signature = suite.sign(private, MESSAGE)
    suite.verify(public, MESSAGE, signature)
    if suite.signature_scheme in ECDSA_SCHEMES:
        # RFC 9420 §5.1.1: uncompressed points and DER-encoded signatures.
        assert public[0] == 0x04
        assert signature[0] == 0x30
        assert signature[1] & 0x80 or signature[1] == len(signature) - 2


@pytest.mark.parametrize("suite", SUITES)
def test_signing_replays_under_a_seeded_rng(suite: CipherSuite) -> None:
    first = suite.generate_signature_key_pair(seeded_rng(b"signer"))
    second = suite.generate_signature_key_pair(seeded_rng(b"signer"))
    assert first == second
    assert suite.generate_signature_key_pair(seeded_rng(b"other"))[0] != first[0]
    # Townsquare choice: ECDSA signs deterministically (RFC 6979), so the
    # same key and message give the same signature in every suite.
    assert suite.sign(first[0], MESSAGE) == suite.sign(first[0], MESSAGE)


@pytest.mark.parametrize("suite", SUITES)
def test_tampered_signature_or_message_is_rejected(suite: CipherSuite) -> None:
    private, public = suite.generate_signature_key_pair(seeded_rng(b"signer"))
    signature = suite.sign(private, MESSAGE)
    for message, bad in (
        (MESSAGE, flip(signature)),
        (MESSAGE, flip(signature, len(signature) // 2)),
        (MESSAGE, signature[:-1]),
        (MESSAGE, signature + b"\x00"),
        (MESSAGE, b""),
        (flip(MESSAGE), signature),
        (b"", signature),
    ):
        with pytest.raises(InvalidSignature):
            suite.verify(public, message, bad)
    _, other_public = suite.generate_signature_key_pair(seeded_rng(b"someone else"))
    with pytest.raises(InvalidSignature):
        suite.verify(other_public, MESSAGE, signature)


@pytest.mark.parametrize("suite", SUITES)
def test_bad_signature_public_key_is_rejected(suite: CipherSuite) -> None:
    private, public = suite.generate_signature_key_pair(seeded_rng(b"signer"))
    signature = suite.sign(private, MESSAGE)
    bad_keys = [public[:-1], public + b"\x00", b""]
    if suite.signature_scheme in ECDSA_SCHEMES:
        bad_keys += [
            flip(public),  # off the curve
            b"\x04" + bytes(len(public) - 1),  # not a point
            b"\x02" + public[1:],  # compressed prefix
            b"\x06" + public[1:],  # hybrid prefix
        ]
    for bad in bad_keys:
        with pytest.raises(InvalidKey):
            suite.verify(bad, MESSAGE, signature)
        with pytest.raises(InvalidKey):
            suite.check_signature_public_key(bad)


@pytest.mark.parametrize("suite", SUITES)
def test_bad_signature_private_key_is_rejected(suite: CipherSuite) -> None:
    private, _ = suite.generate_signature_key_pair(seeded_rng(b"signer"))
    too_short = private[2:] if len(private) == 66 else private[1:]
    bad_keys = [too_short, private + b"\x00", b""]
    if suite.signature_scheme in ECDSA_SCHEMES:
        bad_keys += [bytes(len(private)), b"\xff" * len(private)]  # scalar out of range
    for bad in bad_keys:
        with pytest.raises(InvalidKey):
            suite.sign(bad, MESSAGE)
        with pytest.raises(InvalidKey):
            suite.signature_public_key(bad)


def test_p521_signature_key_missing_its_leading_zero_is_padded() -> None:
    suite = get_cipher_suite(CipherSuiteId.MLS_256_DHKEMP521_AES256GCM_SHA512_P521)
    seeds = (bytes([i]) for i in range(256))
    private, public = next(
        pair
        for pair in (suite.generate_signature_key_pair(seeded_rng(s)) for s in seeds)
        if pair[0][0] == 0
    )
    assert suite.signature_public_key(private[1:]) == public
    suite.verify(public, MESSAGE, suite.sign(private[1:], MESSAGE))


def test_ed25519_matches_rfc8032_test_1() -> None:
    suite = get_cipher_suite(1)
    private = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    public = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    signature = bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555"
        "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    assert suite.signature_public_key(private) == public
    assert suite.sign(private, b"") == signature
    suite.verify(public, b"", signature)


@pytest.mark.parametrize("suite", SUITES)
def test_sign_with_label_binds_the_label(suite: CipherSuite) -> None:
    private, public = suite.generate_signature_key_pair(seeded_rng(b"signer"))
    signature = suite.sign_with_label(private, b"LeafNodeTBS", MESSAGE)
    suite.verify_with_label(public, b"LeafNodeTBS", MESSAGE, signature)
    # RFC 9420 §5.1.2: SignContent = opaque label<V>, opaque content<V>.
    label = b"MLS 1.0 LeafNodeTBS"
    sign_content = bytes([len(label)]) + label + bytes([len(MESSAGE)]) + MESSAGE
    suite.verify(public, sign_content, signature)
    with pytest.raises(InvalidSignature):
        suite.verify_with_label(public, b"GroupInfoTBS", MESSAGE, signature)
    with pytest.raises(InvalidSignature):
        suite.verify_with_label(public, b"LeafNodeTBS", flip(MESSAGE), signature)
    with pytest.raises(InvalidSignature):
        suite.verify_with_label(public, b"LeafNodeTBS", MESSAGE, flip(signature))
    with pytest.raises(InvalidSignature):
        suite.verify(public, MESSAGE, signature)


@pytest.mark.parametrize("suite", SUITES)
def test_rng_of_wrong_length_is_a_usage_error_for_key_generation(suite: CipherSuite) -> None:
    with pytest.raises(UsageError):
        suite.generate_signature_key_pair(lambda n: bytes(n - 1))
    with pytest.raises(UsageError):
        suite.hpke_generate_key_pair(lambda n: bytes(n + 1))


@pytest.mark.parametrize("suite", ECDSA_SUITES)
def test_ecdsa_key_generation_rejects_a_stuck_rng(suite: CipherSuite) -> None:
    # A scalar of zero is never valid; an rng stuck on zeros cannot make a key.
    with pytest.raises(UsageError):
        suite.generate_signature_key_pair(bytes)


# -- HPKE -----------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES)
def test_hpke_seal_open_and_keys(suite: CipherSuite) -> None:
    private, public = suite.hpke_generate_key_pair(seeded_rng(b"recipient"))
    assert suite.hpke_public_key(private) == public
    assert len(public) == suite.hpke_public_key_length
    suite.check_hpke_public_key(public)
    assert suite.hpke_derive_key_pair(b"node secret") == suite.hpke_derive_key_pair(b"node secret")
    kem_output, ciphertext = suite.hpke_seal(public, b"info", b"aad", MESSAGE, seeded_rng(b"e"))
    assert len(kem_output) == suite.kem_output_length
    assert suite.hpke_open(private, kem_output, b"info", b"aad", ciphertext) == MESSAGE
    with pytest.raises(DecryptError):
        suite.hpke_open(private, kem_output, b"info", b"aad", flip(ciphertext))
    with pytest.raises(DecryptError):
        suite.hpke_open(private, flip(kem_output), b"info", b"aad", ciphertext)
    with pytest.raises(DecryptError):
        suite.hpke_open(private, kem_output, b"info", b"aae", ciphertext)
    with pytest.raises(InvalidKey):
        suite.hpke_seal(public[:-1], b"info", b"aad", MESSAGE, seeded_rng(b"e"))
    with pytest.raises(InvalidKey):
        suite.check_hpke_public_key(public + b"\x00")
    with pytest.raises(InvalidKey):
        suite.hpke_open(private[:-2], kem_output, b"info", b"aad", ciphertext)


@pytest.mark.parametrize("suite", SUITES)
def test_hpke_export_sender_and_receiver_agree(suite: CipherSuite) -> None:
    # RFC 9420 §12.4.3.2: an external joiner runs SetupBaseS(external_pub, "")
    # and exports "MLS 1.0 external init secret" of Nh bytes.
    private, public = suite.hpke_derive_key_pair(b"external secret")
    context = b"MLS 1.0 external init secret"
    kem_output, secret = suite.hpke_export_sender(
        public, b"", context, suite.hash_length, seeded_rng(b"e")
    )
    assert len(secret) == suite.hash_length
    assert suite.hpke_export_receiver(private, kem_output, b"", context, suite.hash_length) == (
        secret
    )
    try:
        other = suite.hpke_export_receiver(
            private, flip(kem_output), b"", context, suite.hash_length
        )
    except DecryptError:
        pass  # a NIST point that is no longer on the curve
    else:
        assert other != secret
    with pytest.raises(InvalidKey):
        suite.hpke_export_sender(public[1:], b"", context, 32, seeded_rng(b"e"))


@pytest.mark.parametrize("suite", SUITES)
def test_encrypt_with_label_binds_label_and_context(suite: CipherSuite) -> None:
    private, public = suite.hpke_generate_key_pair(seeded_rng(b"recipient"))
    kem_output, ciphertext = suite.encrypt_with_label(
        public, b"UpdatePathNode", b"group context", MESSAGE, seeded_rng(b"e")
    )
    assert (
        suite.decrypt_with_label(
            private, b"UpdatePathNode", b"group context", kem_output, ciphertext
        )
        == MESSAGE
    )
    # RFC 9420 §5.1.3: EncryptContext is the HPKE info, with an empty aad.
    label = b"MLS 1.0 UpdatePathNode"
    info = bytes([len(label)]) + label + bytes([13]) + b"group context"
    assert suite.hpke_open(private, kem_output, info, b"", ciphertext) == MESSAGE
    for label_, context in ((b"Welcome", b"group context"), (b"UpdatePathNode", b"other")):
        with pytest.raises(DecryptError):
            suite.decrypt_with_label(private, label_, context, kem_output, ciphertext)
    replay = suite.encrypt_with_label(
        public, b"UpdatePathNode", b"group context", MESSAGE, seeded_rng(b"e")
    )
    assert replay == (kem_output, ciphertext)
