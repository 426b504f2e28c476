"""
HPKE base mode (RFC 9180): the RFC's known answers, every failure path, and replay.

The known answers are the mode-0 entries of RFC 9180's ``test-vectors.json``
for the (KEM, KDF, AEAD) combinations MLS uses (``tests/vectors/hpke/``); the
P-384 KEM, absent from that file, gets its ``DeriveKeyPair`` checked against
``external_pub`` in the IETF MLS ``key-schedule.json``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from townsquare.mls.errors import DecryptError, InvalidKey, UsageError
from townsquare.mls.hpke import (
    HPKE,
    AEADId,
    KDFId,
    KEMId,
    RecipientContext,
    SenderContext,
    get_hpke,
)

VECTORS = Path(__file__).resolve().parents[2] / "vectors"
RFC9180_FILE = VECTORS / "hpke" / "rfc9180-base-mls.json"
KEY_SCHEDULE_FILE = VECTORS / "mls" / "key-schedule.json"

# RFC 9420 §17.1: the HPKE suite of each MLS cipher suite.
MLS_HPKE = {
    1: (KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES_128_GCM),
    2: (KEMId.DHKEM_P256_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES_128_GCM),
    3: (KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.CHACHA20_POLY1305),
    4: (KEMId.DHKEM_X448_HKDF_SHA512, KDFId.HKDF_SHA512, AEADId.AES_256_GCM),
    5: (KEMId.DHKEM_P521_HKDF_SHA512, KDFId.HKDF_SHA512, AEADId.AES_256_GCM),
    6: (KEMId.DHKEM_X448_HKDF_SHA512, KDFId.HKDF_SHA512, AEADId.CHACHA20_POLY1305),
    7: (KEMId.DHKEM_P384_HKDF_SHA384, KDFId.HKDF_SHA384, AEADId.AES_256_GCM),
}
SUITES = [pytest.param(get_hpke(*ids), id=f"mls-suite{n}") for n, ids in MLS_HPKE.items()]
NIST_KEMS = {
    KEMId.DHKEM_P256_HKDF_SHA256,
    KEMId.DHKEM_P384_HKDF_SHA384,
    KEMId.DHKEM_P521_HKDF_SHA512,
}
NIST_SUITES = [
    pytest.param(get_hpke(*ids), id=f"mls-suite{n}")
    for n, ids in MLS_HPKE.items()
    if ids[0] in NIST_KEMS
]

INFO = b"townsquare test info"
AAD = b"townsquare test aad"
PLAINTEXT = b"the village hall meets on thursday"


def seeded_rng(seed: bytes) -> Callable[[int], bytes]:
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        counter += 1
        return hashlib.shake_256(counter.to_bytes(4, "big") + seed).digest(n)

    return rng


def fixed_rng(ikm: bytes) -> Callable[[int], bytes]:
    def rng(n: int) -> bytes:
        assert n == len(ikm), "the ephemeral ikm must be drawn as Nsk bytes"
        return ikm

    return rng


def flip(data: bytes, index: int = -1) -> bytes:
    tampered = bytearray(data)
    tampered[index] ^= 0x01
    return bytes(tampered)


def key_pair(hpke: HPKE, seed: bytes = b"recipient") -> tuple[bytes, bytes]:
    return hpke.generate_key_pair(seeded_rng(seed))


# -- RFC 9180 known answers -----------------------------------------------------


def _rfc9180_cases() -> list[object]:
    entries = json.loads(RFC9180_FILE.read_text())
    params = []
    for index, entry in enumerate(entries):
        kem, kdf, aead = KEMId(entry["kem_id"]), KDFId(entry["kdf_id"]), AEADId(entry["aead_id"])
        case_id = f"rfc9180[{index}]-{kem.name}-{kdf.name}-{aead.name}"
        params.append(pytest.param(entry, id=case_id))
    return params


def _hex(entry: Mapping[str, object], name: str) -> bytes:
    value = entry[name]
    assert isinstance(value, str)
    return bytes.fromhex(value)


def _suite_of(entry: Mapping[str, object]) -> HPKE:
    kem, kdf, aead = entry["kem_id"], entry["kdf_id"], entry["aead_id"]
    assert isinstance(kem, int)
    assert isinstance(kdf, int)
    assert isinstance(aead, int)
    return get_hpke(KEMId(kem), KDFId(kdf), AEADId(aead))


@pytest.mark.vectors
@pytest.mark.parametrize("entry", _rfc9180_cases())
def test_rfc9180_vector(entry: Mapping[str, object]) -> None:
    hpke = _suite_of(entry)
    assert entry["mode"] == 0
    info = _hex(entry, "info")
    sk_r, pk_r = _hex(entry, "skRm"), _hex(entry, "pkRm")
    sk_e, pk_e = _hex(entry, "skEm"), _hex(entry, "pkEm")

    # DeriveKeyPair (RFC 9180 §7.1.3) and (de)serialisation, both key pairs.
    assert hpke.derive_key_pair(_hex(entry, "ikmR")) == (sk_r, pk_r)
    assert hpke.derive_key_pair(_hex(entry, "ikmE")) == (sk_e, pk_e)
    assert hpke.public_key(sk_r) == pk_r
    assert hpke.public_key(sk_e) == pk_e

    # SetupBaseS with the vector's ephemeral ikm gives the vector's enc.
    enc, sender = hpke.setup_base_s(pk_r, info, fixed_rng(_hex(entry, "ikmE")))
    assert enc == _hex(entry, "enc")
    receiver = hpke.setup_base_r(sk_r, enc, info)

    encryptions = entry["encryptions"]
    assert isinstance(encryptions, list)
    assert encryptions
    for sequence, encryption in enumerate(encryptions):
        aad, pt, ct = _hex(encryption, "aad"), _hex(encryption, "pt"), _hex(encryption, "ct")
        assert sender.seal(aad, pt) == ct, f"encryption {sequence}"
        assert receiver.open(aad, ct) == pt, f"decryption {sequence}"

    exports = entry["exports"]
    assert isinstance(exports, list)
    assert exports
    for export in exports:
        context, length = _hex(export, "exporter_context"), export["L"]
        assert isinstance(length, int)
        want = _hex(export, "exported_value")
        assert sender.export(context, length) == want
        assert receiver.export(context, length) == want

    # The single-shot forms agree with the contexts on the first message.
    first = encryptions[0]
    aad, pt, ct = _hex(first, "aad"), _hex(first, "pt"), _hex(first, "ct")
    assert hpke.seal(pk_r, info, aad, pt, fixed_rng(_hex(entry, "ikmE"))) == (enc, ct)
    assert hpke.open(sk_r, enc, info, aad, ct) == pt


def test_rfc9180_file_holds_every_mls_combination_upstream_has() -> None:
    entries = json.loads(RFC9180_FILE.read_text())
    combos = {(e["kem_id"], e["kdf_id"], e["aead_id"]) for e in entries}
    assert all(e["mode"] == 0 for e in entries)
    # RFC 9180's test-vectors.json has no P-384 KEM and no HKDF-SHA384 entry,
    # so MLS suite 7 is covered by key-schedule.json and the tests below.
    assert combos == {ids for n, ids in MLS_HPKE.items() if n != 7}


def _external_pub_cases() -> list[object]:
    entries = json.loads(KEY_SCHEDULE_FILE.read_text())
    return [
        pytest.param(entry, id=f"key-schedule.json[{i}]-suite{entry['cipher_suite']}")
        for i, entry in enumerate(entries)
    ]


@pytest.mark.vectors
@pytest.mark.parametrize("entry", _external_pub_cases())
def test_derive_key_pair_matches_mls_external_pub(entry: Mapping[str, object]) -> None:
    # RFC 9420 §8: external_pub is the public key of
    # KEM.DeriveKeyPair(external_secret); this covers every KEM, P-384 included.
    suite = entry["cipher_suite"]
    assert isinstance(suite, int)
    hpke = get_hpke(*MLS_HPKE[suite])
    epochs = entry["epochs"]
    assert isinstance(epochs, list)
    assert epochs
    for epoch in epochs:
        private, public = hpke.derive_key_pair(_hex(epoch, "external_secret"))
        assert public == _hex(epoch, "external_pub")
        assert len(private) == hpke.n_sk
        assert hpke.public_key(private) == public


# -- Round trips and replay ---------------------------------------------------


@pytest.mark.parametrize("hpke", SUITES)
def test_seal_then_open_round_trips(hpke: HPKE) -> None:
    private, public = key_pair(hpke)
    kem_output, ciphertext = hpke.seal(public, INFO, AAD, PLAINTEXT, seeded_rng(b"e"))
    assert len(kem_output) == hpke.n_enc
    assert len(ciphertext) == len(PLAINTEXT) + 16
    assert hpke.open(private, kem_output, INFO, AAD, ciphertext) == PLAINTEXT


@pytest.mark.parametrize("hpke", SUITES)
def test_seeded_rng_replays_byte_for_byte(hpke: HPKE) -> None:
    _, public = key_pair(hpke)
    first = hpke.seal(public, INFO, AAD, PLAINTEXT, seeded_rng(b"same seed"))
    second = hpke.seal(public, INFO, AAD, PLAINTEXT, seeded_rng(b"same seed"))
    other = hpke.seal(public, INFO, AAD, PLAINTEXT, seeded_rng(b"other seed"))
    assert first == second
    assert other[0] != first[0]


@pytest.mark.parametrize("hpke", SUITES)
def test_ephemeral_key_is_derive_key_pair_of_rng_output(hpke: HPKE) -> None:
    _, public = key_pair(hpke)
    ikm = bytes(range(hpke.n_sk))
    kem_output, _ = hpke.seal(public, INFO, AAD, PLAINTEXT, fixed_rng(ikm))
    assert kem_output == hpke.derive_key_pair(ikm)[1]


@pytest.mark.parametrize("hpke", SUITES)
def test_export_sender_and_receiver_agree(hpke: HPKE) -> None:
    private, public = key_pair(hpke)
    label = b"MLS 1.0 external init secret"
    kem_output, secret = hpke.send_export(public, b"", label, hpke.n_h, seeded_rng(b"e"))
    assert len(secret) == hpke.n_h
    assert hpke.receive_export(private, kem_output, b"", label, hpke.n_h) == secret
    assert hpke.receive_export(private, kem_output, b"", b"other", hpke.n_h) != secret
    assert hpke.receive_export(private, kem_output, b"info", label, hpke.n_h) != secret


@pytest.mark.parametrize("hpke", SUITES)
def test_generated_key_pair_is_consistent(hpke: HPKE) -> None:
    private, public = key_pair(hpke)
    assert len(private) == hpke.n_sk
    assert len(public) == hpke.n_pk
    assert hpke.public_key(private) == public
    hpke.check_public_key(public)


def test_sizes_follow_rfc9180_tables() -> None:
    sizes = {
        KEMId.DHKEM_P256_HKDF_SHA256: (32, 65, 65, 32),
        KEMId.DHKEM_P384_HKDF_SHA384: (48, 97, 97, 48),
        KEMId.DHKEM_P521_HKDF_SHA512: (64, 133, 133, 66),
        KEMId.DHKEM_X25519_HKDF_SHA256: (32, 32, 32, 32),
        KEMId.DHKEM_X448_HKDF_SHA512: (64, 56, 56, 56),
    }
    for kem, kdf, aead in MLS_HPKE.values():
        hpke = get_hpke(kem, kdf, aead)
        assert (hpke.n_secret, hpke.n_enc, hpke.n_pk, hpke.n_sk) == sizes[kem]
        assert hpke.n_k == (16 if aead == AEADId.AES_128_GCM else 32)
        assert hpke.n_n == 12
        assert (
            hpke.n_h == {KDFId.HKDF_SHA256: 32, KDFId.HKDF_SHA384: 48, KDFId.HKDF_SHA512: 64}[kdf]
        )


def test_get_hpke_shares_instances_and_rejects_unknown_ids() -> None:
    ids = MLS_HPKE[1]
    assert get_hpke(*ids) is get_hpke(*ids)
    assert get_hpke(*ids) is get_hpke(0x0020, 0x0001, 0x0001)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        get_hpke(0x0030, KDFId.HKDF_SHA256, AEADId.AES_128_GCM)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        get_hpke(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, 0xFFFF)  # type: ignore[arg-type]


# -- Decryption failures --------------------------------------------------------


@pytest.fixture(params=SUITES)
def sealed(request: pytest.FixtureRequest) -> tuple[HPKE, bytes, bytes, bytes]:
    hpke: HPKE = request.param
    private, public = key_pair(hpke)
    kem_output, ciphertext = hpke.seal(public, INFO, AAD, PLAINTEXT, seeded_rng(b"e"))
    return hpke, private, kem_output, ciphertext


def test_tampered_ciphertext_is_rejected(sealed: tuple[HPKE, bytes, bytes, bytes]) -> None:
    hpke, private, kem_output, ciphertext = sealed
    for index in (0, len(ciphertext) // 2, -1):
        with pytest.raises(DecryptError):
            hpke.open(private, kem_output, INFO, AAD, flip(ciphertext, index))
    with pytest.raises(DecryptError):
        hpke.open(private, kem_output, INFO, AAD, ciphertext[:-1])
    with pytest.raises(DecryptError):
        hpke.open(private, kem_output, INFO, AAD, b"")


def test_tampered_kem_output_is_rejected(sealed: tuple[HPKE, bytes, bytes, bytes]) -> None:
    hpke, private, kem_output, ciphertext = sealed
    for index in (1, len(kem_output) // 2, -1):
        with pytest.raises(DecryptError):
            hpke.open(private, flip(kem_output, index), INFO, AAD, ciphertext)


def test_kem_output_of_wrong_form_is_rejected(sealed: tuple[HPKE, bytes, bytes, bytes]) -> None:
    hpke, private, kem_output, ciphertext = sealed
    for bad in (kem_output[:-1], kem_output + b"\x00", b""):
        with pytest.raises(DecryptError):
            hpke.open(private, bad, INFO, AAD, ciphertext)
    if hpke.kem_id in NIST_KEMS:
        # RFC 9180 §7.1.1: encapsulated keys are uncompressed points.
        for prefix in (0x02, 0x03, 0x06, 0x07):
            with pytest.raises(DecryptError):
                hpke.open(private, bytes((prefix,)) + kem_output[1:], INFO, AAD, ciphertext)
    else:
        # An all-zero X25519/X448 point is of low order: the shared secret is
        # all zero, which RFC 9180 §7.1.4 requires rejecting.
        with pytest.raises(DecryptError):
            hpke.open(private, bytes(hpke.n_enc), INFO, AAD, ciphertext)


def test_wrong_aad_info_or_key_is_rejected(sealed: tuple[HPKE, bytes, bytes, bytes]) -> None:
    hpke, private, kem_output, ciphertext = sealed
    with pytest.raises(DecryptError):
        hpke.open(private, kem_output, INFO, flip(AAD), ciphertext)
    with pytest.raises(DecryptError):
        hpke.open(private, kem_output, INFO, b"", ciphertext)
    with pytest.raises(DecryptError):
        hpke.open(private, kem_output, flip(INFO), AAD, ciphertext)
    other_private, _ = key_pair(hpke, b"someone else")
    with pytest.raises(DecryptError):
        hpke.open(other_private, kem_output, INFO, AAD, ciphertext)


@pytest.mark.parametrize("hpke", SUITES)
def test_failed_open_does_not_advance_the_sequence(hpke: HPKE) -> None:
    # RFC 9180 §5.2: ContextR.Open increments seq only after a successful open.
    private, public = key_pair(hpke)
    enc, sender = hpke.setup_base_s(public, INFO, seeded_rng(b"e"))
    first = sender.seal(AAD, b"first")
    second = sender.seal(AAD, b"second")
    receiver = hpke.setup_base_r(private, enc, INFO)
    with pytest.raises(DecryptError):
        receiver.open(AAD, flip(first))
    assert receiver.open(AAD, first) == b"first"
    assert receiver.open(AAD, second) == b"second"
    with pytest.raises(DecryptError):
        receiver.open(AAD, first)


# -- Key validation ------------------------------------------------------------


@pytest.mark.parametrize("hpke", SUITES)
def test_public_key_of_wrong_length_is_rejected(hpke: HPKE) -> None:
    _, public = key_pair(hpke)
    for bad in (public[:-1], public + b"\x00", b""):
        with pytest.raises(InvalidKey):
            hpke.seal(bad, INFO, AAD, PLAINTEXT, seeded_rng(b"e"))
        with pytest.raises(InvalidKey):
            hpke.check_public_key(bad)
        with pytest.raises(InvalidKey):
            hpke.send_export(bad, b"", b"x", 32, seeded_rng(b"e"))


@pytest.mark.parametrize("hpke", SUITES)
def test_invalid_public_key_bytes_are_rejected(hpke: HPKE) -> None:
    _, public = key_pair(hpke)
    if hpke.kem_id in NIST_KEMS:
        bad_keys = [
            flip(public),  # off the curve
            b"\x04" + bytes(hpke.n_pk - 1),  # the point at infinity's coordinates
            b"\x02" + public[1:],  # a compressed-point prefix
            b"\x06" + public[1:],  # a hybrid-point prefix
        ]
    else:
        # Every string of the right length is an X25519/X448 key; the all-zero
        # one gives an all-zero shared secret (RFC 9180 §7.1.4).
        bad_keys = [bytes(hpke.n_pk)]
    for bad in bad_keys:
        with pytest.raises(InvalidKey):
            hpke.seal(bad, INFO, AAD, PLAINTEXT, seeded_rng(b"e"))


@pytest.mark.parametrize("hpke", SUITES)
def test_private_key_of_wrong_length_is_rejected(hpke: HPKE) -> None:
    private, public = key_pair(hpke)
    kem_output, ciphertext = hpke.seal(public, INFO, AAD, PLAINTEXT, seeded_rng(b"e"))
    too_short = private[2:] if hpke.kem_id == KEMId.DHKEM_P521_HKDF_SHA512 else private[1:]
    for bad in (too_short, private + b"\x00", b""):
        with pytest.raises(InvalidKey):
            hpke.open(bad, kem_output, INFO, AAD, ciphertext)
        with pytest.raises(InvalidKey):
            hpke.public_key(bad)


@pytest.mark.parametrize("hpke", NIST_SUITES)
def test_nist_scalar_out_of_range_is_rejected(hpke: HPKE) -> None:
    # RFC 9180 §7.1.2: a NIST private key is a scalar in [1, order - 1].
    for bad in (bytes(hpke.n_sk), b"\xff" * hpke.n_sk):
        with pytest.raises(InvalidKey):
            hpke.public_key(bad)


def test_p521_private_key_missing_its_leading_zero_is_padded() -> None:
    hpke = get_hpke(*MLS_HPKE[5])
    ikm = next(
        bytes([i]) * 66 for i in range(256) if hpke.derive_key_pair(bytes([i]) * 66)[0][0] == 0
    )
    private, public = hpke.derive_key_pair(ikm)
    assert hpke.public_key(private[1:]) == public
    kem_output, ciphertext = hpke.seal(public, INFO, AAD, PLAINTEXT, seeded_rng(b"e"))
    assert hpke.open(private[1:], kem_output, INFO, AAD, ciphertext) == PLAINTEXT


# -- Usage errors ---------------------------------------------------------------


@pytest.mark.parametrize("hpke", SUITES)
def test_rng_returning_the_wrong_length_is_a_usage_error(hpke: HPKE) -> None:
    _, public = key_pair(hpke)
    with pytest.raises(UsageError):
        hpke.seal(public, INFO, AAD, PLAINTEXT, lambda n: bytes(n - 1))
    with pytest.raises(UsageError):
        hpke.generate_key_pair(lambda n: bytes(n + 1))


@pytest.mark.parametrize("hpke", SUITES)
def test_export_length_is_bounded(hpke: HPKE) -> None:
    private, public = key_pair(hpke)
    kem_output, context = hpke.setup_base_s(public, INFO, seeded_rng(b"e"))
    assert len(context.export(b"x", 255 * hpke.n_h)) == 255 * hpke.n_h
    with pytest.raises(UsageError):
        context.export(b"x", 255 * hpke.n_h + 1)
    with pytest.raises(UsageError):
        hpke.receive_export(private, kem_output, INFO, b"x", -1)


def test_contexts_keep_secrets_out_of_repr() -> None:
    hpke = get_hpke(*MLS_HPKE[1])
    private, public = key_pair(hpke)
    enc, sender = hpke.setup_base_s(public, INFO, seeded_rng(b"e"))
    receiver = hpke.setup_base_r(private, enc, INFO)
    assert isinstance(sender, SenderContext)
    assert isinstance(receiver, RecipientContext)
    assert repr(sender) == "<SenderContext seq=0>"
    assert repr(receiver) == "<RecipientContext seq=0>"
    assert "X25519" in repr(hpke)
