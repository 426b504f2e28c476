"""
The MLS cipher suites of RFC 9420 §5.1 and §17.1 and the labelled operations built on them.

A cipher suite fixes a KDF (HKDF with the suite's hash), an AEAD, an HPKE
suite (RFC 9180) and a signature scheme. :func:`get_cipher_suite` returns the
shared :class:`CipherSuite` object of one of the seven suites of RFC 9420
§17.1:

====  ================================================  =====  ======  ========  =======
 id   name                                              KEM    AEAD    hash      sig
====  ================================================  =====  ======  ========  =======
  1   MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519      X25519 AES128  SHA-256   Ed25519
  2   MLS_128_DHKEMP256_AES128GCM_SHA256_P256           P-256  AES128  SHA-256   P-256
  3   MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_...   X25519 ChaCha  SHA-256   Ed25519
  4   MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448          X448   AES256  SHA-512   Ed448
  5   MLS_256_DHKEMP521_AES256GCM_SHA512_P521           P-521  AES256  SHA-512   P-521
  6   MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_Ed448   X448   ChaCha  SHA-512   Ed448
  7   MLS_256_DHKEMP384_AES256GCM_SHA384_P384           P-384  AES256  SHA-384   P-384
====  ================================================  =====  ======  ========  =======

Keys cross this API as bytes: HPKE keys as RFC 9180 §7.1 serialises them;
signature keys as RFC 9420 §5.1.1 and TLS 1.3 do (Ed25519/Ed448 keys raw,
ECDSA public keys as uncompressed points, ECDSA private keys as big-endian
scalars of the curve's size; 65-byte P-521 scalars are accepted and padded).
ECDSA signatures are DER-encoded, as in TLS 1.3.

The labelled operations of RFC 9420 §5 (``ExpandWithLabel``,
``DeriveSecret``, ``DeriveTreeSecret``, ``SignWithLabel``,
``EncryptWithLabel`` and their inverses) take labels *without* the
``"MLS 1.0 "`` prefix and add it. :meth:`CipherSuite.ref_hash` is the
exception, because RFC 9420 §5.2 defines ``RefHash`` on the full label
(``RefHash("MLS 1.0 KeyPackage Reference", value)``).

Every check raises (:class:`~townsquare.mls.errors.InvalidSignature`,
:class:`~townsquare.mls.errors.InvalidMAC`,
:class:`~townsquare.mls.errors.DecryptError`,
:class:`~townsquare.mls.errors.InvalidKey`); no ``cryptography`` exception
escapes. Randomness comes only from an ``rng`` argument.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeAlias

from cryptography.exceptions import InvalidSignature as _CryptographyInvalidSignature
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from townsquare.mls.codec import Writer
from townsquare.mls.errors import (
    DecryptError,
    InvalidKey,
    InvalidMAC,
    InvalidSignature,
    UnsupportedCipherSuite,
    UsageError,
)
from townsquare.mls.hpke import HPKE, AEADId, KDFId, KEMId, Rng, get_hpke

if TYPE_CHECKING:
    from _hashlib import HASH

__all__ = [
    "CipherSuite",
    "CipherSuiteId",
    "Rng",
    "SignatureScheme",
    "get_cipher_suite",
]

# RFC 9420 §5.1.2, §5.1.3, §5.2 and §8: the prefix of every MLS label.
_LABEL_PREFIX = b"MLS 1.0 "


class CipherSuiteId(enum.IntEnum):
    """
    The MLS Cipher Suites registry (RFC 9420 §17.1), suites 1-7.
    """

    MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519 = 0x0001
    MLS_128_DHKEMP256_AES128GCM_SHA256_P256 = 0x0002
    MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519 = 0x0003
    MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448 = 0x0004
    MLS_256_DHKEMP521_AES256GCM_SHA512_P521 = 0x0005
    MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_Ed448 = 0x0006
    MLS_256_DHKEMP384_AES256GCM_SHA384_P384 = 0x0007


class SignatureScheme(enum.IntEnum):
    """
    The TLS SignatureScheme values (RFC 8446 §4.2.3) that RFC 9420 §17.1 suites use.
    """

    ecdsa_secp256r1_sha256 = 0x0403
    ecdsa_secp384r1_sha384 = 0x0503
    ecdsa_secp521r1_sha512 = 0x0603
    ed25519 = 0x0807
    ed448 = 0x0808


# -- Signature schemes ----------------------------------------------------------


class _EdDSA:
    """
    Ed25519 or Ed448 (RFC 8032) with raw keys, as TLS 1.3 and RFC 9420 §5.1.1 use them.
    """

    __slots__ = ("_private_cls", "_public_cls", "key_length", "scheme")

    def __init__(self, scheme: SignatureScheme) -> None:
        self.scheme = scheme
        self._private_cls: type[ed25519.Ed25519PrivateKey] | type[ed448.Ed448PrivateKey]
        self._public_cls: type[ed25519.Ed25519PublicKey] | type[ed448.Ed448PublicKey]
        if scheme == SignatureScheme.ed25519:
            self._private_cls = ed25519.Ed25519PrivateKey
            self._public_cls = ed25519.Ed25519PublicKey
            self.key_length = 32
        else:
            self._private_cls = ed448.Ed448PrivateKey
            self._public_cls = ed448.Ed448PublicKey
            self.key_length = 57

    @property
    def public_key_length(self) -> int:
        return self.key_length

    def _load_private(self, data: bytes) -> ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey:
        if len(data) != self.key_length:
            raise InvalidKey(f"{self.scheme.name} private key must be {self.key_length} bytes")
        try:
            return self._private_cls.from_private_bytes(data)
        except ValueError as exc:
            raise InvalidKey(f"not a valid {self.scheme.name} private key") from exc

    def _load_public(self, data: bytes) -> ed25519.Ed25519PublicKey | ed448.Ed448PublicKey:
        if len(data) != self.key_length:
            raise InvalidKey(f"{self.scheme.name} public key must be {self.key_length} bytes")
        try:
            return self._public_cls.from_public_bytes(data)
        except ValueError as exc:
            raise InvalidKey(f"not a valid {self.scheme.name} public key") from exc

    def sign(self, private_key: bytes, message: bytes) -> bytes:
        return self._load_private(private_key).sign(message)

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> None:
        key = self._load_public(public_key)
        try:
            key.verify(signature, message)
        except _CryptographyInvalidSignature as exc:
            raise InvalidSignature(f"{self.scheme.name} signature does not verify") from exc

    def public_key(self, private_key: bytes) -> bytes:
        return self._load_private(private_key).public_key().public_bytes_raw()

    def check_public_key(self, public_key: bytes) -> None:
        self._load_public(public_key)

    def generate(self, rng: Rng) -> tuple[bytes, bytes]:
        # RFC 8032 §5.1.5: an EdDSA private key is a random string of the key length.
        private = _draw(rng, self.key_length)
        return private, self.public_key(private)


class _ECDSA:
    """
    ECDSA on a NIST curve with DER signatures (RFC 9420 §5.1.1, RFC 8446 §4.2.3).
    """

    __slots__ = ("_algorithm", "_bitmask", "_curve", "_order", "private_key_length", "scheme")

    def __init__(
        self,
        scheme: SignatureScheme,
        curve: ec.EllipticCurve,
        hash_algorithm: hashes.HashAlgorithm,
        order: int,
        private_key_length: int,
    ) -> None:
        self.scheme = scheme
        self._curve = curve
        # Townsquare choice: deterministic ECDSA (RFC 6979). Any valid ECDSA
        # signature satisfies RFC 9420, and deterministic signatures make runs
        # with a seeded rng replay byte for byte, without drawing on OpenSSL's
        # own randomness.
        self._algorithm = ec.ECDSA(hash_algorithm, deterministic_signing=True)
        self._order = order
        self.private_key_length = private_key_length
        # The top byte of a P-521 scalar holds one bit (RFC 9180 §7.1.3 uses
        # the same mask).
        self._bitmask = 0x01 if private_key_length == 66 else 0xFF

    @property
    def public_key_length(self) -> int:
        return 1 + 2 * self.private_key_length

    def _load_private(self, data: bytes) -> ec.EllipticCurvePrivateKey:
        n = self.private_key_length
        if n == 66 and len(data) == 65:
            # P-521 scalars have a top byte of 0 or 1; some encoders (and the
            # IETF MLS test vectors) drop a leading zero byte, so pad it back.
            data = b"\x00" + data
        if len(data) != n:
            raise InvalidKey(f"{self.scheme.name} private key must be {n} bytes")
        try:
            # cryptography rejects a scalar outside [1, order - 1] with ValueError.
            return ec.derive_private_key(int.from_bytes(data, "big"), self._curve)
        except ValueError as exc:
            raise InvalidKey(f"not a valid {self.scheme.name} private key") from exc

    def _load_public(self, data: bytes) -> ec.EllipticCurvePublicKey:
        # RFC 9420 §5.1.1: ECDSA public keys are uncompressed points (leading
        # 0x04); compressed and hybrid forms are refused.
        if len(data) != self.public_key_length or data[0] != 0x04:
            raise InvalidKey(f"not an uncompressed {self.scheme.name} public key")
        try:
            # from_encoded_point checks that the point is on the curve.
            return ec.EllipticCurvePublicKey.from_encoded_point(self._curve, data)
        except ValueError as exc:
            raise InvalidKey(f"not a valid {self.scheme.name} public key") from exc

    def sign(self, private_key: bytes, message: bytes) -> bytes:
        return self._load_private(private_key).sign(message, self._algorithm)

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> None:
        key = self._load_public(public_key)
        try:
            # A signature that is not valid DER also raises InvalidSignature.
            key.verify(signature, message, self._algorithm)
        except _CryptographyInvalidSignature as exc:
            raise InvalidSignature(f"{self.scheme.name} signature does not verify") from exc

    def public_key(self, private_key: bytes) -> bytes:
        return (
            self._load_private(private_key)
            .public_key()
            .public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        )

    def check_public_key(self, public_key: bytes) -> None:
        self._load_public(public_key)

    def generate(self, rng: Rng) -> tuple[bytes, bytes]:
        # Rejection sampling, as RFC 9180 §7.1.3 derives NIST scalars: draw a
        # candidate, mask the unused top bits, keep it if it is in [1, order - 1].
        for _ in range(256):
            candidate = bytearray(_draw(rng, self.private_key_length))
            candidate[0] &= self._bitmask
            scalar = int.from_bytes(candidate, "big")
            if 0 < scalar < self._order:
                private = bytes(candidate)
                return private, self.public_key(private)
        raise UsageError("rng produced no valid ECDSA scalar in 256 draws")


_Signer: TypeAlias = _EdDSA | _ECDSA

# Group orders from SEC 2 (also listed in RFC 9180's reference code).
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_P384_ORDER = int(
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
    16,
)
_P521_ORDER = int(
    "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA"
    "51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
    16,
)


def _signer(scheme: SignatureScheme) -> _Signer:
    if scheme == SignatureScheme.ecdsa_secp256r1_sha256:
        return _ECDSA(scheme, ec.SECP256R1(), hashes.SHA256(), _P256_ORDER, 32)
    if scheme == SignatureScheme.ecdsa_secp384r1_sha384:
        return _ECDSA(scheme, ec.SECP384R1(), hashes.SHA384(), _P384_ORDER, 48)
    if scheme == SignatureScheme.ecdsa_secp521r1_sha512:
        return _ECDSA(scheme, ec.SECP521R1(), hashes.SHA512(), _P521_ORDER, 66)
    return _EdDSA(scheme)


def _draw(rng: Rng, n: int) -> bytes:
    data = rng(n)
    if len(data) != n:
        raise UsageError(f"rng returned {len(data)} bytes, expected {n}")
    return data


# -- Cipher suites --------------------------------------------------------------

# RFC 9420 §17.1: the components of each suite. The HPKE KDF is HKDF with the
# suite's hash.
_SUITES: dict[CipherSuiteId, tuple[KEMId, AEADId, KDFId, SignatureScheme]] = {
    CipherSuiteId.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519: (
        KEMId.DHKEM_X25519_HKDF_SHA256,
        AEADId.AES_128_GCM,
        KDFId.HKDF_SHA256,
        SignatureScheme.ed25519,
    ),
    CipherSuiteId.MLS_128_DHKEMP256_AES128GCM_SHA256_P256: (
        KEMId.DHKEM_P256_HKDF_SHA256,
        AEADId.AES_128_GCM,
        KDFId.HKDF_SHA256,
        SignatureScheme.ecdsa_secp256r1_sha256,
    ),
    CipherSuiteId.MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519: (
        KEMId.DHKEM_X25519_HKDF_SHA256,
        AEADId.CHACHA20_POLY1305,
        KDFId.HKDF_SHA256,
        SignatureScheme.ed25519,
    ),
    CipherSuiteId.MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448: (
        KEMId.DHKEM_X448_HKDF_SHA512,
        AEADId.AES_256_GCM,
        KDFId.HKDF_SHA512,
        SignatureScheme.ed448,
    ),
    CipherSuiteId.MLS_256_DHKEMP521_AES256GCM_SHA512_P521: (
        KEMId.DHKEM_P521_HKDF_SHA512,
        AEADId.AES_256_GCM,
        KDFId.HKDF_SHA512,
        SignatureScheme.ecdsa_secp521r1_sha512,
    ),
    CipherSuiteId.MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_Ed448: (
        KEMId.DHKEM_X448_HKDF_SHA512,
        AEADId.CHACHA20_POLY1305,
        KDFId.HKDF_SHA512,
        SignatureScheme.ed448,
    ),
    CipherSuiteId.MLS_256_DHKEMP384_AES256GCM_SHA384_P384: (
        KEMId.DHKEM_P384_HKDF_SHA384,
        AEADId.AES_256_GCM,
        KDFId.HKDF_SHA384,
        SignatureScheme.ecdsa_secp384r1_sha384,
    ),
}

_HASH_NAMES: dict[KDFId, str] = {
    KDFId.HKDF_SHA256: "sha256",
    KDFId.HKDF_SHA384: "sha384",
    KDFId.HKDF_SHA512: "sha512",
}
# Bound constructors: about 30% cheaper per call than hashlib.new(name), and a
# join of a 10,000-member group hashes some 50,000 times.
_HASH_CONSTRUCTORS: dict[KDFId, Callable[[bytes], HASH]] = {
    KDFId.HKDF_SHA256: hashlib.sha256,
    KDFId.HKDF_SHA384: hashlib.sha384,
    KDFId.HKDF_SHA512: hashlib.sha512,
}


class CipherSuite:
    """
    The primitives and labelled operations of one MLS cipher suite (RFC 9420 §5.1).

    Obtain instances with :func:`get_cipher_suite`; they hold no secrets and are shared.
    Besides the methods, each has ``suite_id`` (:class:`CipherSuiteId`),
    ``signature_scheme`` (:class:`SignatureScheme`), ``hash_length`` (``KDF.Nh``, the
    output length of the hash and of ``KDF.Extract``), ``aead_key_length``
    (``AEAD.Nk``) and ``aead_nonce_length`` (``AEAD.Nn``).
    """

    __slots__ = (
        "_aead_cls",
        "_hash_constructor",
        "_hash_name",
        "_hpke",
        "_signer",
        "aead_key_length",
        "aead_nonce_length",
        "hash_length",
        "signature_scheme",
        "suite_id",
    )

    def __init__(self, suite_id: CipherSuiteId) -> None:
        """
        Assemble a suite's primitives; use :func:`get_cipher_suite` instead.

        :param suite_id: the suite.
        """
        kem_id, aead_id, kdf_id, scheme = _SUITES[suite_id]
        self.suite_id: Final = suite_id
        self.signature_scheme: Final = scheme
        self._hpke: Final[HPKE] = get_hpke(kem_id, kdf_id, aead_id)
        self._signer: Final[_Signer] = _signer(scheme)
        self._hash_name: Final = _HASH_NAMES[kdf_id]
        self._hash_constructor: Final = _HASH_CONSTRUCTORS[kdf_id]
        self._aead_cls: Final[type[AESGCM] | type[ChaCha20Poly1305]] = (
            ChaCha20Poly1305 if aead_id == AEADId.CHACHA20_POLY1305 else AESGCM
        )
        self.hash_length: Final = self._hpke.n_h
        self.aead_key_length: Final = self._hpke.n_k
        self.aead_nonce_length: Final = self._hpke.n_n

    def __repr__(self) -> str:
        """
        Name the suite.
        """
        return f"CipherSuite({self.suite_id.name})"

    @property
    def hpke_public_key_length(self) -> int:
        """
        Length of a serialised HPKE public key (``Npk``, RFC 9180 §7.1).
        """
        return self._hpke.n_pk

    @property
    def kem_output_length(self) -> int:
        """
        Length of an HPKE ``kem_output`` (``Nenc``, RFC 9180 §7.1).
        """
        return self._hpke.n_enc

    @property
    def signature_public_key_length(self) -> int:
        """
        Length of a serialised signature public key.
        """
        return self._signer.public_key_length

    # -- Hash, KDF and MAC (RFC 9420 §5.1) -------------------------------------

    def hash(self, data: bytes) -> bytes:
        """
        Hash with the suite's hash function.

        :param data: the input.
        :returns: its digest, :attr:`hash_length` bytes.
        """
        return self._hash_constructor(data).digest()

    def mac(self, key: bytes, data: bytes) -> bytes:
        """
        Compute ``MAC(key, data)``: HMAC with the suite's hash (RFC 9420 §5.1).

        :param key: the MAC key.
        :param data: the authenticated data.
        :returns: the tag, :attr:`hash_length` bytes.
        """
        return hmac.digest(key, data, self._hash_name)

    def verify_mac(self, key: bytes, data: bytes, tag: bytes) -> None:
        """
        Check a tag from :meth:`mac` in constant time.

        :param key: the MAC key.
        :param data: the authenticated data.
        :param tag: the tag received.
        :raises InvalidMAC: if the tag is wrong.
        """
        if not hmac.compare_digest(self.mac(key, data), tag):
            raise InvalidMAC("MAC does not verify")

    def kdf_extract(self, salt: bytes, ikm: bytes) -> bytes:
        """
        ``KDF.Extract(salt, ikm)``: HKDF-Extract with the suite's hash (RFC 5869 §2.2).

        :param salt: the salt (an empty salt means Nh zero bytes).
        :param ikm: the input keying material.
        :returns: a pseudorandom key of :attr:`hash_length` bytes.
        """
        # HMAC pads its key with zeros, so an empty salt is HKDF's default of
        # Nh zero bytes.
        return hmac.digest(salt, ikm, self._hash_name)

    def kdf_expand(self, prk: bytes, info: bytes, length: int) -> bytes:
        """
        ``KDF.Expand(prk, info, length)``: HKDF-Expand with the suite's hash (RFC 5869 §2.3).

        :param prk: the pseudorandom key.
        :param info: the context.
        :param length: the output length, at most 255 times :attr:`hash_length`.
        :returns: ``length`` bytes.
        :raises UsageError: if ``length`` is out of range.
        """
        if not 0 <= length <= 255 * self.hash_length:
            raise UsageError(f"cannot expand to {length} bytes (RFC 5869 §2.3: at most 255*Nh)")
        name = self._hash_name
        output = b""
        block = b""
        counter = 1
        while len(output) < length:
            block = hmac.digest(prk, block + info + bytes((counter,)), name)
            output += block
            counter += 1
        return output[:length]

    # -- Labelled KDF operations (RFC 9420 §5.1, §5.2, §9) ---------------------

    def expand_with_label(self, secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
        """
        ``ExpandWithLabel(Secret, Label, Context, Length)`` (RFC 9420 §5.1).

        :param secret: the secret to expand.
        :param label: the label without the ``"MLS 1.0 "`` prefix, which is added.
        :param context: the context.
        :param length: the output length (a ``uint16``, and at most 255 times Nh).
        :returns: ``KDF.Expand(Secret, KDFLabel, Length)``.
        :raises UsageError: if ``length`` is out of range.
        """
        # RFC 9420 §5.1:
        #   struct {
        #     uint16 length;
        #     opaque label<V>;
        #     opaque context<V>;
        #   } KDFLabel;
        # with length = Length and label = "MLS 1.0 " + Label.
        w = Writer()
        w.uint16(length)
        w.opaque(_LABEL_PREFIX + label)
        w.opaque(context)
        return self.kdf_expand(secret, w.getvalue(), length)

    def derive_secret(self, secret: bytes, label: bytes) -> bytes:
        """
        ``DeriveSecret(Secret, Label)`` (RFC 9420 §5.1).

        :param secret: the secret.
        :param label: the label without the ``"MLS 1.0 "`` prefix.
        :returns: ``ExpandWithLabel(Secret, Label, "", KDF.Nh)``.
        """
        return self.expand_with_label(secret, label, b"", self.hash_length)

    def derive_tree_secret(
        self, secret: bytes, label: bytes, generation: int, length: int
    ) -> bytes:
        """
        ``DeriveTreeSecret(Secret, Label, Generation, Length)`` (RFC 9420 §9).

        :param secret: the secret.
        :param label: the label without the ``"MLS 1.0 "`` prefix.
        :param generation: the ratchet generation, encoded as a ``uint32``.
        :param length: the output length.
        :returns: ``ExpandWithLabel(Secret, Label, Generation, Length)``.
        :raises UsageError: if ``generation`` does not fit a ``uint32`` or ``length`` is out
            of range.
        """
        w = Writer()
        w.uint32(generation)
        return self.expand_with_label(secret, label, w.getvalue(), length)

    def ref_hash(self, label: bytes, value: bytes) -> bytes:
        """
        ``RefHash(label, value)`` (RFC 9420 §5.2).

        Unlike the other labelled operations, ``RefHash`` is defined on the full label,
        prefix included: pass ``b"MLS 1.0 KeyPackage Reference"`` or
        ``b"MLS 1.0 Proposal Reference"``.

        :param label: the full label.
        :param value: the encoded value referenced.
        :returns: ``Hash(RefHashInput)``.
        """
        # RFC 9420 §5.2:
        #   struct {
        #     opaque label<V>;
        #     opaque value<V>;
        #   } RefHashInput;
        w = Writer()
        w.opaque(label)
        w.opaque(value)
        return self.hash(w.getvalue())

    # -- AEAD (RFC 9420 §5.1) ---------------------------------------------------

    def _aead(self, key: bytes, nonce: bytes) -> AESGCM | ChaCha20Poly1305:
        if len(key) != self.aead_key_length:
            raise UsageError(f"AEAD key must be {self.aead_key_length} bytes, got {len(key)}")
        if len(nonce) != self.aead_nonce_length:
            raise UsageError(f"AEAD nonce must be {self.aead_nonce_length} bytes, got {len(nonce)}")
        return self._aead_cls(key)

    def aead_seal(self, key: bytes, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
        """
        Encrypt with the suite's AEAD.

        :param key: the key, :attr:`aead_key_length` bytes.
        :param nonce: the nonce, :attr:`aead_nonce_length` bytes.
        :param aad: additional authenticated data.
        :param plaintext: the message.
        :returns: the ciphertext with its 16-byte tag appended.
        :raises UsageError: if the key or nonce has the wrong length.
        """
        return self._aead(key, nonce).encrypt(nonce, plaintext, aad)

    def aead_open(self, key: bytes, nonce: bytes, aad: bytes, ciphertext: bytes) -> bytes:
        """
        Decrypt with the suite's AEAD.

        :param key: the key, :attr:`aead_key_length` bytes.
        :param nonce: the nonce, :attr:`aead_nonce_length` bytes.
        :param aad: additional authenticated data.
        :param ciphertext: the ciphertext with its tag.
        :returns: the plaintext.
        :raises DecryptError: if the ciphertext does not authenticate.
        :raises UsageError: if the key or nonce has the wrong length.
        """
        aead = self._aead(key, nonce)
        try:
            return aead.decrypt(nonce, ciphertext, aad)
        except InvalidTag as exc:
            raise DecryptError("AEAD ciphertext did not authenticate") from exc

    # -- Signatures (RFC 9420 §5.1.1, §5.1.2) -----------------------------------

    def sign(self, private_key: bytes, message: bytes) -> bytes:
        """
        Sign a message with the suite's signature scheme.

        :param private_key: the serialised signature private key.
        :param message: the message.
        :returns: the signature (DER for ECDSA).
        :raises InvalidKey: if ``private_key`` is not a valid private key for the suite.
        """
        return self._signer.sign(private_key, message)

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> None:
        """
        Verify a signature with the suite's signature scheme.

        :param public_key: the serialised signature public key.
        :param message: the message.
        :param signature: the signature.
        :raises InvalidKey: if ``public_key`` is not a valid public key for the suite.
        :raises InvalidSignature: if the signature does not verify.
        """
        self._signer.verify(public_key, message, signature)

    def signature_public_key(self, private_key: bytes) -> bytes:
        """
        Compute the public key of a signature private key.

        :param private_key: the serialised signature private key.
        :returns: the serialised public key.
        :raises InvalidKey: if ``private_key`` is not a valid private key for the suite.
        """
        return self._signer.public_key(private_key)

    def check_signature_public_key(self, public_key: bytes) -> None:
        """
        Check that bytes are a valid signature public key for the suite.

        :param public_key: the candidate.
        :raises InvalidKey: if they are not.
        """
        self._signer.check_public_key(public_key)

    def generate_signature_key_pair(self, rng: Rng) -> tuple[bytes, bytes]:
        """
        Generate a signature key pair from ``rng``.

        :param rng: the randomness source.
        :returns: ``(private_key, public_key)``, serialised.
        :raises UsageError: if ``rng`` returns the wrong number of bytes, or (for ECDSA)
            256 draws in a row that are not valid scalars.
        """
        return self._signer.generate(rng)

    def sign_with_label(self, private_key: bytes, label: bytes, content: bytes) -> bytes:
        """
        ``SignWithLabel(SignatureKey, Label, Content)`` (RFC 9420 §5.1.2).

        :param private_key: the serialised signature private key.
        :param label: the label without the ``"MLS 1.0 "`` prefix.
        :param content: the content signed.
        :returns: ``Signature.Sign(SignatureKey, SignContent)``.
        :raises InvalidKey: if ``private_key`` is not a valid private key for the suite.
        """
        return self.sign(private_key, _sign_content(label, content))

    def verify_with_label(
        self, public_key: bytes, label: bytes, content: bytes, signature: bytes
    ) -> None:
        """
        ``VerifyWithLabel(VerificationKey, Label, Content, SignatureValue)`` (RFC 9420 §5.1.2).

        :param public_key: the serialised signature public key.
        :param label: the label without the ``"MLS 1.0 "`` prefix.
        :param content: the content signed.
        :param signature: the signature.
        :raises InvalidKey: if ``public_key`` is not a valid public key for the suite.
        :raises InvalidSignature: if the signature does not verify.
        """
        self.verify(public_key, _sign_content(label, content), signature)

    # -- HPKE (RFC 9420 §5.1, §5.1.3; RFC 9180) ---------------------------------

    def hpke_seal(
        self, public_key: bytes, info: bytes, aad: bytes, plaintext: bytes, rng: Rng
    ) -> tuple[bytes, bytes]:
        """
        HPKE ``SealBase`` with the suite's HPKE (RFC 9180 §6.1).

        :param public_key: the recipient's serialised HPKE public key.
        :param info: the HPKE ``info``.
        :param aad: additional authenticated data.
        :param plaintext: the message.
        :param rng: the randomness source for the ephemeral key.
        :returns: ``(kem_output, ciphertext)``.
        :raises InvalidKey: if ``public_key`` is not a valid HPKE public key for the suite.
        :raises UsageError: if ``rng`` returns the wrong number of bytes.
        """
        return self._hpke.seal(public_key, info, aad, plaintext, rng)

    def hpke_open(
        self, private_key: bytes, kem_output: bytes, info: bytes, aad: bytes, ciphertext: bytes
    ) -> bytes:
        """
        HPKE ``OpenBase`` with the suite's HPKE (RFC 9180 §6.1).

        :param private_key: the recipient's serialised HPKE private key.
        :param kem_output: the encapsulated key.
        :param info: the HPKE ``info``.
        :param aad: additional authenticated data.
        :param ciphertext: the ciphertext.
        :returns: the plaintext.
        :raises InvalidKey: if ``private_key`` is not a valid HPKE private key for the suite.
        :raises DecryptError: if any other input is wrong or tampered with.
        """
        return self._hpke.open(private_key, kem_output, info, aad, ciphertext)

    def hpke_export_sender(
        self, public_key: bytes, info: bytes, exporter_context: bytes, length: int, rng: Rng
    ) -> tuple[bytes, bytes]:
        """
        ``SetupBaseS(public_key, info)`` then ``context.export(exporter_context, length)``.

        RFC 9420 §12.4.3.2 derives an external commit's ``init_secret`` this way, with an
        empty ``info`` and ``exporter_context = b"MLS 1.0 external init secret"``.

        :param public_key: the recipient's serialised HPKE public key.
        :param info: the HPKE ``info``.
        :param exporter_context: the exporter context.
        :param length: the number of bytes to export.
        :param rng: the randomness source for the ephemeral key.
        :returns: ``(kem_output, secret)``.
        :raises InvalidKey: if ``public_key`` is not a valid HPKE public key for the suite.
        :raises UsageError: if ``rng`` returns the wrong number of bytes or ``length`` is
            out of range.
        """
        return self._hpke.send_export(public_key, info, exporter_context, length, rng)

    def hpke_export_receiver(
        self,
        private_key: bytes,
        kem_output: bytes,
        info: bytes,
        exporter_context: bytes,
        length: int,
    ) -> bytes:
        """
        ``SetupBaseR(kem_output, private_key, info)`` then ``context.export(...)``.

        :param private_key: the recipient's serialised HPKE private key.
        :param kem_output: the sender's encapsulated key.
        :param info: the HPKE ``info``.
        :param exporter_context: the exporter context.
        :param length: the number of bytes to export.
        :returns: the secret; equal to the sender's only if every input matches.
        :raises InvalidKey: if ``private_key`` is not a valid HPKE private key for the suite.
        :raises DecryptError: if ``kem_output`` is not a valid encapsulated key.
        :raises UsageError: if ``length`` is out of range.
        """
        return self._hpke.receive_export(private_key, kem_output, info, exporter_context, length)

    def hpke_derive_key_pair(self, ikm: bytes) -> tuple[bytes, bytes]:
        """
        HPKE ``DeriveKeyPair(ikm)`` (RFC 9180 §7.1.3), as RFC 9420 §7.4 and §8 use it.

        :param ikm: the input keying material (for MLS, a node or external secret).
        :returns: ``(private_key, public_key)``, serialised.
        :raises InvalidKey: if no valid key can be derived (probability about 2^-256).
        """
        return self._hpke.derive_key_pair(ikm)

    def hpke_generate_key_pair(self, rng: Rng) -> tuple[bytes, bytes]:
        """
        Generate a fresh HPKE key pair as ``DeriveKeyPair(rng(Nsk))``.

        :param rng: the randomness source.
        :returns: ``(private_key, public_key)``, serialised.
        :raises UsageError: if ``rng`` returns the wrong number of bytes.
        :raises InvalidKey: as :meth:`hpke_derive_key_pair`.
        """
        return self._hpke.generate_key_pair(rng)

    def hpke_public_key(self, private_key: bytes) -> bytes:
        """
        Compute the public key of an HPKE private key.

        :param private_key: the serialised HPKE private key.
        :returns: the serialised public key.
        :raises InvalidKey: if ``private_key`` is not a valid HPKE private key for the suite.
        """
        return self._hpke.public_key(private_key)

    def check_hpke_public_key(self, public_key: bytes) -> None:
        """
        Check that bytes are a valid HPKE public key for the suite.

        :param public_key: the candidate.
        :raises InvalidKey: if they are not.
        """
        self._hpke.check_public_key(public_key)

    def encrypt_with_label(
        self, public_key: bytes, label: bytes, context: bytes, plaintext: bytes, rng: Rng
    ) -> tuple[bytes, bytes]:
        """
        ``EncryptWithLabel(PublicKey, Label, Context, Plaintext)`` (RFC 9420 §5.1.3).

        :param public_key: the recipient's serialised HPKE public key.
        :param label: the label without the ``"MLS 1.0 "`` prefix.
        :param context: the context bound into the encryption.
        :param plaintext: the message.
        :param rng: the randomness source for the ephemeral key.
        :returns: ``(kem_output, ciphertext)`` from ``SealBase(PublicKey, EncryptContext,
            "", Plaintext)``.
        :raises InvalidKey: if ``public_key`` is not a valid HPKE public key for the suite.
        :raises UsageError: if ``rng`` returns the wrong number of bytes.
        """
        return self.hpke_seal(public_key, _encrypt_context(label, context), b"", plaintext, rng)

    def decrypt_with_label(
        self,
        private_key: bytes,
        label: bytes,
        context: bytes,
        kem_output: bytes,
        ciphertext: bytes,
    ) -> bytes:
        """
        ``DecryptWithLabel(PrivateKey, Label, Context, KEMOutput, Ciphertext)`` (§5.1.3).

        :param private_key: the recipient's serialised HPKE private key.
        :param label: the label without the ``"MLS 1.0 "`` prefix.
        :param context: the context given to :meth:`encrypt_with_label`.
        :param kem_output: the encapsulated key.
        :param ciphertext: the ciphertext.
        :returns: the plaintext.
        :raises InvalidKey: if ``private_key`` is not a valid HPKE private key for the suite.
        :raises DecryptError: if the label, context, ``kem_output`` or ciphertext is wrong.
        """
        return self.hpke_open(
            private_key, kem_output, _encrypt_context(label, context), b"", ciphertext
        )


def _sign_content(label: bytes, content: bytes) -> bytes:
    # RFC 9420 §5.1.2:
    #   struct {
    #     opaque label<V>;
    #     opaque content<V>;
    #   } SignContent;
    # with label = "MLS 1.0 " + Label.
    w = Writer()
    w.opaque(_LABEL_PREFIX + label)
    w.opaque(content)
    return w.getvalue()


def _encrypt_context(label: bytes, context: bytes) -> bytes:
    # RFC 9420 §5.1.3:
    #   struct {
    #     opaque label<V>;
    #     opaque context<V>;
    #   } EncryptContext;
    # with label = "MLS 1.0 " + Label.
    w = Writer()
    w.opaque(_LABEL_PREFIX + label)
    w.opaque(context)
    return w.getvalue()


def get_cipher_suite(suite_id: int) -> CipherSuite:
    """
    Return the shared :class:`CipherSuite` for an RFC 9420 §17.1 cipher suite id.

    :param suite_id: the ``CipherSuite`` value from the wire, 1 to 7.
    :returns: the suite.
    :raises UnsupportedCipherSuite: for any other value (GREASE and unassigned values
        included).
    """
    try:
        known = CipherSuiteId(suite_id)
    except ValueError as exc:
        raise UnsupportedCipherSuite(f"cipher suite {suite_id:#06x} is not supported") from exc
    return _cipher_suite(known)


@functools.cache
def _cipher_suite(suite_id: CipherSuiteId) -> CipherSuite:
    # Keyed by the enum member, so that 1 and CipherSuiteId(1) share one object.
    return CipherSuite(suite_id)
