"""
Invite secrets and what they derive: known answers, sealing, signing, links.

The HKDF known answers are recomputed here with ``hmac`` from the standard
library (RFC 5869 §2.2-2.3), independently of the module's ``cryptography``.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest

from townsquare import auth
from townsquare.auth import invites
from townsquare.auth.invites import (
    derive_invite_keys,
    open_group_info,
    parse_invite_link,
    seal_group_info,
    sign_external_commit,
    verify_external_commit,
)

SECRET = bytes(range(32))
GROUP = b"g" * 16


def rfc5869(secret: bytes, salt: bytes, info: bytes) -> bytes:
    prk = hmac.new(salt, secret, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def test_labels_are_domain_separated():
    labels = [
        invites.GROUP_INFO_KEY_LABEL,
        invites.SIGNING_KEY_LABEL,
        invites.GROUP_INFO_AAD_LABEL,
        invites.EXTERNAL_COMMIT_LABEL,
        auth.DEVICE_CERTIFICATE_LABEL,
        auth.REQUEST_SIGNATURE_LABEL.encode(),
    ]
    assert len(set(labels)) == len(labels)
    assert all(label.startswith(b"townsquare/v1/") for label in labels)


def test_known_answers():
    keys = derive_invite_keys(SECRET)
    assert keys.group_info_key.hex() == (
        "1de3a23a9ad4e4e7a22a83219b7ae5cd443e1d6494edb1af5fec9d751015a1a4"
    )
    assert keys.signing_private_key.hex() == (
        "cf90a85495af4e59845c24d8168336df89da56b2648f8fa8f8891ccba7dc1216"
    )
    assert keys.signing_public_key.hex() == (
        "62cd609bdeb9a08c19ef016c4d72df6cfaf2b9e5bd41a8706ef04cd9d5bf70d3"
    )
    assert keys.group_info_key == rfc5869(
        SECRET, b"townsquare/v1/invite", b"townsquare/v1/invite/group-info-key"
    )
    assert keys.signing_private_key == rfc5869(
        SECRET, b"townsquare/v1/invite", b"townsquare/v1/invite/signing-key"
    )
    assert keys.signing_public_key == auth.public_key(keys.signing_private_key)
    sealed = seal_group_info(keys, GROUP, b"GI", b"TREE", nonce=bytes(12))
    assert sealed.hex() == (
        "000000000000000000000000291a8da334e0e89ed3485c70c96cefd4f4840d9e7d7201e33b53"
    )
    # Ed25519 is deterministic (RFC 8032 §5.1.6).
    assert sign_external_commit(keys, b"commit").hex() == (
        "4c2e5dd0c7d1e8146f3caf6610d975c1e5e281d15e41a5cde6fe69456f5a55cf"
        "3cf814b634304f28ae5966b8c7570c52731fca288f4fe8175de9ea9dc86f6500"
    )


def test_keys_differ_per_secret():
    one, two = derive_invite_keys(SECRET), derive_invite_keys(bytes(32))
    assert one.group_info_key != two.group_info_key
    assert one.signing_public_key != two.signing_public_key
    assert one.group_info_key != one.signing_private_key


def test_secret_length_is_checked():
    with pytest.raises(auth.UsageError):
        derive_invite_keys(b"short")
    assert len(invites.generate_invite_secret()) == invites.SECRET_BYTES


def test_seal_round_trips_and_binds_group_and_key():
    keys = derive_invite_keys(SECRET)
    sealed = seal_group_info(keys, GROUP, b"group info", b"tree")
    assert open_group_info(keys, GROUP, sealed) == (b"group info", b"tree")
    assert open_group_info(keys, GROUP, seal_group_info(keys, GROUP, b"gi")) == (b"gi", b"")
    with pytest.raises(auth.InvalidValue):
        open_group_info(keys, b"h" * 16, sealed)
    with pytest.raises(auth.InvalidValue):
        open_group_info(derive_invite_keys(bytes(32)), GROUP, sealed)
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(auth.InvalidValue):
        open_group_info(keys, GROUP, bytes(tampered))
    with pytest.raises(auth.InvalidValue):
        open_group_info(keys, GROUP, b"short")
    with pytest.raises(auth.UsageError):
        seal_group_info(keys, GROUP, b"gi", nonce=b"x")


def test_malformed_plaintext_is_refused():
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    keys = derive_invite_keys(SECRET)
    aad = invites.GROUP_INFO_AAD_LABEL + GROUP
    for plaintext in (b"\x00", b"\x00\x00\x00\x09abc"):
        blob = bytes(12) + ChaCha20Poly1305(keys.group_info_key).encrypt(bytes(12), plaintext, aad)
        with pytest.raises(auth.InvalidValue):
            open_group_info(keys, GROUP, blob)


def test_external_commit_signature():
    keys = derive_invite_keys(SECRET)
    signature = sign_external_commit(keys, b"commit")
    verify_external_commit(keys.signing_public_key, b"commit", signature)
    with pytest.raises(auth.InvalidSignature):
        verify_external_commit(keys.signing_public_key, b"commit!", signature)
    # Domain separated: a plain signature over the same bytes does not count.
    plain = auth.sign(keys.signing_private_key, b"commit")
    with pytest.raises(auth.InvalidSignature):
        verify_external_commit(keys.signing_public_key, b"commit", plain)


def test_links_round_trip():
    link = invites.invite_link("https://relay.example/", GROUP, SECRET)
    assert link == (f"https://relay.example/j/{auth.encode_b64u(GROUP)}#{auth.encode_b64u(SECRET)}")
    parsed = parse_invite_link(link)
    assert (parsed.relay, parsed.group_id, parsed.secret) == (
        "https://relay.example",
        GROUP,
        SECRET,
    )
    prefixed = parse_invite_link(invites.invite_link("http://h:8080/ts", GROUP, SECRET))
    assert prefixed.relay == "http://h:8080/ts"
    with pytest.raises(auth.UsageError):
        invites.invite_link("https://r", GROUP, b"x")


@pytest.mark.parametrize(
    "link",
    [
        "ftp://r/j/Z2dn#" + "A" * 43,
        "https://r/x/Z2dn#" + "A" * 43,
        "https://r/j/Z2dn?x=1#" + "A" * 43,
        "https://r/j/#" + "A" * 43,
        "https://r/j/Z2dn",
        "https://r/j/Z2dn#short",
        "https://r/j/a/b#" + "A" * 43,
    ],
)
def test_malformed_links_are_refused(link):
    with pytest.raises(auth.MalformedText):
        parse_invite_link(link)
