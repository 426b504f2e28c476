"""
townsquare.auth: base64url, device certificates and request signatures, byte for byte.

The known answers here are the ones docs/protocol.md prints, so that another
implementation (the web client) can check itself against them.
"""

from __future__ import annotations

import re

import pytest

from townsquare import auth

ACCOUNT_SEED = bytes(range(32))
DEVICE_SEED = bytes(range(32, 64))
CREATED_AT = 1_767_225_600

KAT_ACCOUNT_KEY = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
KAT_DEVICE_KEY = "29acbae141bccaf0b22e1a94d34d0bc7361e526d0bfe12c89794bc9322966dd7"
KAT_TBS = (
    "746f776e7371756172652f76312f6465766963652d636572746966696361746500"
    + KAT_ACCOUNT_KEY
    + KAT_DEVICE_KEY
    + "000000006955b900"
)
KAT_CERTIFICATE_SIGNATURE = (
    "d97b9da476576a77e43455b890975d4b803ea089a57903562f90515b1756de07"
    "c3db49777fb3fb1eff28a5e07333fac2d1507492be5156b93ab54aba9187e90e"
)
KAT_CANONICAL = (
    "townsquare/v1/request\n"
    "POST\n"
    "/v1/key-packages\n"
    "2966db07923bc43386aecee8fb6658db61ea099c9dd30ebf8502a16e63c086f8\n"
    "1767225600\n"
    "AAECAwQFBgcICQoLDA0ODw\n"
    "Kay64UG8yvCyLhqU000LxzYeUm0L_hLIl5S8kyKWbdc"
)
KAT_HEADERS = {
    "Townsquare-Device": "Kay64UG8yvCyLhqU000LxzYeUm0L_hLIl5S8kyKWbdc",
    "Townsquare-Timestamp": "1767225600",
    "Townsquare-Nonce": "AAECAwQFBgcICQoLDA0ODw",
    "Townsquare-Signature": (
        "_WsY5bjySCoVYJ8pHM9RbL4lF1QH1YiLTiGSfpDhhyOexOBI9kYJ-tcfrRYLp_6k6-ktFeygw8zs2uaBd_41Bw"
    ),
}
KAT_BODY = b'{"one_time":[]}'


def test_device_certificate_known_answer():
    certificate = auth.certify_device(ACCOUNT_SEED, auth.public_key(DEVICE_SEED), CREATED_AT)
    assert certificate.account_key.hex() == KAT_ACCOUNT_KEY
    assert certificate.device_key.hex() == KAT_DEVICE_KEY
    assert certificate.to_be_signed().hex() == KAT_TBS
    assert certificate.signature.hex() == KAT_CERTIFICATE_SIGNATURE
    certificate.verify()


def test_device_certificate_tbs_layout():
    tbs = auth.device_certificate_tbs(b"\x01" * 32, b"\x02" * 32, 1)
    assert tbs == b"townsquare/v1/device-certificate\x00" + b"\x01" * 32 + b"\x02" * 32 + (
        b"\x00" * 7 + b"\x01"
    )
    assert len(tbs) == 33 + 32 + 32 + 8


def test_certificate_signed_by_another_key_does_not_verify():
    good = auth.certify_device(ACCOUNT_SEED, auth.public_key(DEVICE_SEED), CREATED_AT)
    other = auth.certify_device(DEVICE_SEED, auth.public_key(DEVICE_SEED), CREATED_AT)
    forged = auth.DeviceCertificate(
        account_key=good.account_key,
        device_key=good.device_key,
        created_at=good.created_at,
        signature=other.signature,
    )
    with pytest.raises(auth.InvalidSignature):
        forged.verify()


def test_certificate_with_changed_time_does_not_verify():
    good = auth.certify_device(ACCOUNT_SEED, auth.public_key(DEVICE_SEED), CREATED_AT)
    moved = auth.DeviceCertificate(
        account_key=good.account_key,
        device_key=good.device_key,
        created_at=good.created_at + 1,
        signature=good.signature,
    )
    with pytest.raises(auth.InvalidSignature):
        moved.verify()


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("account_key", b"\x01" * 31, auth.InvalidKey),
        ("device_key", b"\x01" * 33, auth.InvalidKey),
        ("created_at", -1, auth.InvalidValue),
        ("created_at", 1 << 64, auth.InvalidValue),
        ("signature", b"\x00" * 63, auth.InvalidValue),
    ],
)
def test_certificate_fields_are_checked_on_construction(field, value, error):
    fields = {
        "account_key": b"\x01" * 32,
        "device_key": b"\x02" * 32,
        "created_at": 0,
        "signature": b"\x00" * 64,
    }
    fields[field] = value
    with pytest.raises(error):
        auth.DeviceCertificate(**fields)


def test_canonical_request_known_answer():
    canonical = auth.canonical_request(
        method="POST",
        target="/v1/key-packages",
        body=KAT_BODY,
        timestamp=CREATED_AT,
        nonce=bytes(range(16)),
        device_key=auth.public_key(DEVICE_SEED),
    )
    assert canonical.decode("ascii") == KAT_CANONICAL


def test_sign_request_known_answer_and_verifies():
    headers = auth.sign_request(
        device_private_key=DEVICE_SEED,
        method="POST",
        target="/v1/key-packages",
        body=KAT_BODY,
        timestamp=CREATED_AT,
        nonce=bytes(range(16)),
    )
    assert headers == KAT_HEADERS
    auth.verify_request_signature(
        auth.public_key(DEVICE_SEED),
        KAT_CANONICAL.encode("ascii"),
        auth.decode_b64u(headers["Townsquare-Signature"]),
    )


def test_request_signature_does_not_verify_for_another_body():
    signature = auth.decode_b64u(KAT_HEADERS["Townsquare-Signature"])
    tampered = KAT_CANONICAL.replace("2966db", "2966dc").encode("ascii")
    with pytest.raises(auth.InvalidSignature):
        auth.verify_request_signature(auth.public_key(DEVICE_SEED), tampered, signature)


@pytest.mark.parametrize(
    ("change", "value"),
    [
        ("method", "post"),
        ("method", ""),
        ("target", "v1/no-slash"),
        ("target", "/v1/a b"),
        ("target", "/v1/a\nb"),
        ("timestamp", -1),
        ("timestamp", 1 << 64),
        ("nonce", b"\x00" * 15),
    ],
)
def test_canonical_request_refuses_malformed_parts(change, value):
    parts = {
        "method": "GET",
        "target": "/v1/x",
        "body": b"",
        "timestamp": 0,
        "nonce": b"\x00" * 16,
        "device_key": b"\x01" * 32,
    }
    parts[change] = value
    with pytest.raises(auth.InvalidValue):
        auth.canonical_request(**parts)


def test_sign_request_with_a_bad_private_key_is_a_usage_error():
    with pytest.raises(auth.UsageError):
        auth.sign_request(
            device_private_key=b"\x00" * 31,
            method="GET",
            target="/",
            body=b"",
            timestamp=0,
            nonce=b"\x00" * 16,
        )


def test_sign_request_with_a_bad_target_is_a_usage_error():
    with pytest.raises(auth.UsageError):
        auth.sign_request(
            device_private_key=DEVICE_SEED,
            method="GET",
            target="/a b",
            body=b"",
            timestamp=0,
            nonce=b"\x00" * 16,
        )


@pytest.mark.parametrize("length", [0, 1, 2, 3, 16, 31, 32, 33, 64])
def test_b64u_round_trip_and_exact_pattern(length):
    data = bytes(range(256))[:length] if length else b""
    text = auth.encode_b64u(data)
    assert "=" not in text
    assert auth.decode_b64u(text, length=length) == data
    assert re.fullmatch(auth.exact_b64u_pattern(length), text)
    assert re.fullmatch(auth.B64U_PATTERN, text)


@pytest.mark.parametrize(
    "text",
    [
        "AA==",  # padding
        "A",  # a length no byte string has
        "AB",  # non-zero trailing bits: the canonical form of b"\x00" is "AA"
        "AAB",  # the same for two bytes
        "a+b/",  # the standard alphabet
        "AA AA",  # whitespace
        "AAAA\n",
    ],
)
def test_b64u_refuses_non_canonical_text(text):
    with pytest.raises(auth.MalformedText):
        auth.decode_b64u(text)


def test_b64u_refuses_the_wrong_length():
    with pytest.raises(auth.MalformedText):
        auth.decode_b64u(auth.encode_b64u(b"\x00" * 31), length=32)


def test_exact_pattern_refuses_a_negative_length():
    with pytest.raises(ValueError, match="negative"):
        auth.exact_b64u_pattern(-1)


def test_verify_refuses_wrong_lengths():
    with pytest.raises(auth.InvalidKey):
        auth.verify(b"\x00" * 31, b"", b"\x00" * 64)
    with pytest.raises(auth.InvalidSignature):
        auth.verify(auth.public_key(DEVICE_SEED), b"", b"\x00" * 63)


def test_verify_refuses_a_key_that_is_not_a_point():
    with pytest.raises(auth.InvalidSignature):
        auth.verify(b"\xff" * 32, b"message", b"\x00" * 64)
