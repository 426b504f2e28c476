"""
Hybrid Public Key Encryption (RFC 9180) in base mode, for the suites MLS uses.

MLS (RFC 9420 §5.1) needs HPKE with five KEMs, DHKEM(P-256, HKDF-SHA256),
DHKEM(P-384, HKDF-SHA384), DHKEM(P-521, HKDF-SHA512), DHKEM(X25519,
HKDF-SHA256) and DHKEM(X448, HKDF-SHA512), the KDFs HKDF-SHA256/384/512 and
the AEADs AES-128-GCM, AES-256-GCM and ChaCha20Poly1305, and only base mode
(``mode_base``, RFC 9180 §5.1.1): no PSK, no sender authentication.

:class:`HPKE` is one (KEM, KDF, AEAD) combination, obtained with
:func:`get_hpke`. Keys cross this API as bytes in their RFC 9180 §7.1.1
serialisation (raw for X25519 and X448; uncompressed SEC1 points and
fixed-length big-endian scalars for the NIST curves), so callers never see
``pyhpke`` or ``cryptography`` objects.

Where the work is done:

* ``pyhpke`` runs the KEM of RFC 9180 §4.1: ``DeriveKeyPair`` (§7.1.3, for
  every KEM, P-521 included), ``Encap`` and ``Decap`` (the Diffie-Hellman,
  ``kem_context`` and ``ExtractAndExpand``). The RFC 9180 known-answer tests
  check it on every KEM.
* This module does the rest on ``cryptography`` and the standard library:
  key (de)serialisation and validation (``pyhpke`` serialises NIST private
  keys with the curve's size in *bits* as a byte count, and accepts compressed
  points and scalars of any length), the key schedule of §5.1, the encryption
  contexts of §5.2 (``pyhpke``'s recipient context advances its sequence
  number even when ``Open`` fails, which §5.2 forbids) and the secret exporter
  of §5.3, plus the mapping of every failure to :mod:`townsquare.mls.errors`.

Randomness is never drawn here: :meth:`HPKE.setup_base_s` and the functions
built on it take an ``rng: Callable[[int], bytes]`` and derive the ephemeral
key pair as ``DeriveKeyPair(rng(Nsk))`` (RFC 9180 §4: ``GenerateKeyPair`` may
be implemented this way), so a seeded ``rng`` replays a run exactly and the
RFC 9180 vectors' ``ikmE`` can be injected.
"""

from __future__ import annotations

import enum
import functools
import hmac
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias, cast

import pyhpke
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec, x448, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from townsquare.mls.errors import DecryptError, InvalidKey, UsageError

__all__ = [
    "HPKE",
    "AEADId",
    "KDFId",
    "KEMId",
    "RecipientContext",
    "Rng",
    "SenderContext",
    "get_hpke",
]

Rng: TypeAlias = Callable[[int], bytes]
"""A source of randomness: ``rng(n)`` returns ``n`` random bytes."""

_PrivateKey: TypeAlias = x25519.X25519PrivateKey | x448.X448PrivateKey | ec.EllipticCurvePrivateKey
_PublicKey: TypeAlias = x25519.X25519PublicKey | x448.X448PublicKey | ec.EllipticCurvePublicKey
_AEAD: TypeAlias = AESGCM | ChaCha20Poly1305


class KEMId(enum.IntEnum):
    """
    HPKE KEM identifiers (RFC 9180 §7.1, Table 2) that MLS cipher suites use.
    """

    DHKEM_P256_HKDF_SHA256 = 0x0010
    DHKEM_P384_HKDF_SHA384 = 0x0011
    DHKEM_P521_HKDF_SHA512 = 0x0012
    DHKEM_X25519_HKDF_SHA256 = 0x0020
    DHKEM_X448_HKDF_SHA512 = 0x0021


class KDFId(enum.IntEnum):
    """
    HPKE KDF identifiers (RFC 9180 §7.2, Table 3).
    """

    HKDF_SHA256 = 0x0001
    HKDF_SHA384 = 0x0002
    HKDF_SHA512 = 0x0003


class AEADId(enum.IntEnum):
    """
    HPKE AEAD identifiers (RFC 9180 §7.3, Table 5), without the export-only value.
    """

    AES_128_GCM = 0x0001
    AES_256_GCM = 0x0002
    CHACHA20_POLY1305 = 0x0003


@dataclass(frozen=True, slots=True)
class _KEMParams:
    """
    The sizes of one DHKEM (RFC 9180 §7.1, Table 2) and, for NIST curves, the curve.
    """

    curve: ec.EllipticCurve | None
    n_secret: int
    n_pk: int
    n_sk: int


# RFC 9180 §7.1, Table 2. Nenc equals Npk for every DHKEM.
_KEMS: dict[KEMId, _KEMParams] = {
    KEMId.DHKEM_P256_HKDF_SHA256: _KEMParams(ec.SECP256R1(), 32, 65, 32),
    KEMId.DHKEM_P384_HKDF_SHA384: _KEMParams(ec.SECP384R1(), 48, 97, 48),
    KEMId.DHKEM_P521_HKDF_SHA512: _KEMParams(ec.SECP521R1(), 64, 133, 66),
    KEMId.DHKEM_X25519_HKDF_SHA256: _KEMParams(None, 32, 32, 32),
    KEMId.DHKEM_X448_HKDF_SHA512: _KEMParams(None, 64, 56, 56),
}

# RFC 9180 §7.2, Table 3: the hash behind each HKDF, by hashlib name, and Nh.
_KDFS: dict[KDFId, tuple[str, int]] = {
    KDFId.HKDF_SHA256: ("sha256", 32),
    KDFId.HKDF_SHA384: ("sha384", 48),
    KDFId.HKDF_SHA512: ("sha512", 64),
}

# RFC 9180 §7.3, Table 5: Nk. Nn is 12 and Nt is 16 for all three.
_AEAD_KEY_LENGTHS: dict[AEADId, int] = {
    AEADId.AES_128_GCM: 16,
    AEADId.AES_256_GCM: 32,
    AEADId.CHACHA20_POLY1305: 32,
}
_AEAD_NONCE_LENGTH = 12

_HPKE_VERSION = b"HPKE-v1"
_MODE_BASE = 0x00


class _KDF:
    """
    HKDF (RFC 5869) with the labelled forms of RFC 9180 §4, for one ``suite_id``.
    """

    __slots__ = ("_hash_name", "_prefix", "n_h")

    def __init__(self, kdf_id: KDFId, suite_id: bytes) -> None:
        self._hash_name, self.n_h = _KDFS[kdf_id]
        self._prefix = _HPKE_VERSION + suite_id

    def labeled_extract(self, salt: bytes, label: bytes, ikm: bytes) -> bytes:
        # RFC 9180 §4: LabeledExtract(salt, label, ikm) =
        #   Extract(salt, "HPKE-v1" || suite_id || label || ikm).
        # HMAC pads its key with zeros, so the empty salt is HKDF's default
        # salt of Nh zero bytes (RFC 5869 §2.2).
        return hmac.digest(salt, self._prefix + label + ikm, self._hash_name)

    def labeled_expand(self, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
        # RFC 9180 §4: LabeledExpand(prk, label, info, L) =
        #   Expand(prk, I2OSP(L, 2) || "HPKE-v1" || suite_id || label || info, L).
        if not 0 <= length <= 255 * self.n_h:
            raise UsageError(f"cannot expand to {length} bytes (RFC 5869 §2.3: at most 255*Nh)")
        labeled_info = struct.pack(">H", length) + self._prefix + label + info
        output = b""
        block = b""
        counter = 1
        while len(output) < length:
            block = hmac.digest(prk, block + labeled_info + bytes((counter,)), self._hash_name)
            output += block
            counter += 1
        return output[:length]


class _Context:
    """
    The state shared by both ends of an HPKE context (RFC 9180 §5.2, §5.3).
    """

    __slots__ = ("_aead", "_base_nonce", "_exporter_secret", "_kdf", "_seq", "_seq_limit")

    def __init__(self, kdf: _KDF, aead: _AEAD, base_nonce: bytes, exporter_secret: bytes) -> None:
        self._kdf = kdf
        self._aead = aead
        self._base_nonce = int.from_bytes(base_nonce, "big")
        self._exporter_secret = exporter_secret
        self._seq = 0
        # RFC 9180 §5.2: the sequence number must not reach 2^(8*Nn) - 1.
        self._seq_limit = (1 << (8 * _AEAD_NONCE_LENGTH)) - 1

    def __repr__(self) -> str:
        """
        Show the sequence number only: keys, nonces and the exporter secret stay out.
        """
        return f"<{type(self).__name__} seq={self._seq}>"

    def _nonce(self) -> bytes:
        # RFC 9180 §5.2: ComputeNonce(seq) = base_nonce XOR I2OSP(seq, Nn).
        if self._seq >= self._seq_limit:
            raise UsageError("HPKE message limit reached (RFC 9180 §5.2)")
        return (self._base_nonce ^ self._seq).to_bytes(_AEAD_NONCE_LENGTH, "big")

    def export(self, exporter_context: bytes, length: int) -> bytes:
        """
        Derive a secret from the context (RFC 9180 §5.3, ``Context.Export``).

        :param exporter_context: the context string that separates exported secrets.
        :param length: the number of bytes to export, at most 255 times the KDF's Nh.
        :returns: ``LabeledExpand(exporter_secret, "sec", exporter_context, length)``.
        :raises UsageError: if ``length`` is out of range.
        """
        return self._kdf.labeled_expand(self._exporter_secret, b"sec", exporter_context, length)


class SenderContext(_Context):
    """
    The sender's side of an HPKE context (RFC 9180 §5.2, ``ContextS``).
    """

    __slots__ = ()

    def seal(self, aad: bytes, plaintext: bytes) -> bytes:
        """
        Encrypt the next message (RFC 9180 §5.2, ``ContextS.Seal``).

        :param aad: additional authenticated data.
        :param plaintext: the message.
        :returns: the ciphertext, tag included.
        :raises UsageError: if the context's message limit is reached.
        """
        ciphertext = self._aead.encrypt(self._nonce(), plaintext, aad)
        self._seq += 1
        return ciphertext


class RecipientContext(_Context):
    """
    The recipient's side of an HPKE context (RFC 9180 §5.2, ``ContextR``).
    """

    __slots__ = ()

    def open(self, aad: bytes, ciphertext: bytes) -> bytes:
        """
        Decrypt the next message (RFC 9180 §5.2, ``ContextR.Open``).

        A failed ``Open`` leaves the sequence number unchanged, as §5.2 requires.

        :param aad: additional authenticated data.
        :param ciphertext: the ciphertext, tag included.
        :returns: the plaintext.
        :raises DecryptError: if the ciphertext or ``aad`` does not authenticate.
        :raises UsageError: if the context's message limit is reached.
        """
        try:
            plaintext = self._aead.decrypt(self._nonce(), ciphertext, aad)
        except InvalidTag as exc:
            raise DecryptError("HPKE ciphertext did not authenticate") from exc
        self._seq += 1
        return plaintext


class HPKE:
    """
    One HPKE cipher suite (KEM, KDF, AEAD) in base mode (RFC 9180 §5.1.1).

    Obtain instances with :func:`get_hpke`; they hold no secrets and are shared.
    """

    __slots__ = (
        "_aead_cls",
        "_kdf",
        "_kem",
        "_params",
        "_psk_id_hash",
        "_xkem_kdf",
        "aead_id",
        "kdf_id",
        "kem_id",
    )

    def __init__(self, kem_id: KEMId, kdf_id: KDFId, aead_id: AEADId) -> None:
        """
        Assemble a suite; use :func:`get_hpke` instead, which shares instances.

        :param kem_id: the KEM.
        :param kdf_id: the KDF.
        :param aead_id: the AEAD.
        """
        self.kem_id = kem_id
        self.kdf_id = kdf_id
        self.aead_id = aead_id
        self._params = _KEMS[kem_id]
        self._kem = pyhpke.CipherSuite.new(
            pyhpke.KEMId(int(kem_id)), pyhpke.KDFId(int(kdf_id)), pyhpke.AEADId(int(aead_id))
        ).kem
        # RFC 9180 §5.1: suite_id = concat("HPKE", I2OSP(kem_id, 2),
        # I2OSP(kdf_id, 2), I2OSP(aead_id, 2)).
        suite_id = b"HPKE" + struct.pack(">HHH", kem_id, kdf_id, aead_id)
        self._kdf = _KDF(kdf_id, suite_id)
        # X25519 and X448 run their DHKEM here on cryptography's primitives
        # (RFC 9180 §4.1, §7.1.3): it saves pyhpke's per-call overhead, about
        # 15 µs of each of the 28 key derivations and seals of a commit. The
        # KEM's own KDF is keyed by suite_id = concat("KEM", I2OSP(kem_id, 2)).
        self._xkem_kdf: _KDF | None = None
        if kem_id == KEMId.DHKEM_X25519_HKDF_SHA256:
            self._xkem_kdf = _KDF(KDFId.HKDF_SHA256, b"KEM" + struct.pack(">H", kem_id))
        elif kem_id == KEMId.DHKEM_X448_HKDF_SHA512:
            self._xkem_kdf = _KDF(KDFId.HKDF_SHA512, b"KEM" + struct.pack(">H", kem_id))
        self._aead_cls: type[AESGCM] | type[ChaCha20Poly1305] = (
            ChaCha20Poly1305 if aead_id == AEADId.CHACHA20_POLY1305 else AESGCM
        )
        # Base mode has an empty psk_id, so its hash is the same for every setup.
        self._psk_id_hash = self._kdf.labeled_extract(b"", b"psk_id_hash", b"")

    def __repr__(self) -> str:
        """
        Name the suite's three components.
        """
        return f"HPKE({self.kem_id.name}, {self.kdf_id.name}, {self.aead_id.name})"

    # -- Sizes (RFC 9180 §7) ---------------------------------------------------

    @property
    def n_enc(self) -> int:
        """
        Length of an encapsulated key (``enc``, MLS's ``kem_output``).
        """
        return self._params.n_pk

    @property
    def n_pk(self) -> int:
        """
        Length of a serialised public key.
        """
        return self._params.n_pk

    @property
    def n_sk(self) -> int:
        """
        Length of a serialised private key, and of the ``ikm`` drawn for key generation.
        """
        return self._params.n_sk

    @property
    def n_secret(self) -> int:
        """
        Length of the KEM shared secret.
        """
        return self._params.n_secret

    @property
    def n_h(self) -> int:
        """
        Output length of the KDF's hash.
        """
        return self._kdf.n_h

    @property
    def n_k(self) -> int:
        """
        Length of the AEAD key.
        """
        return _AEAD_KEY_LENGTHS[self.aead_id]

    @property
    def n_n(self) -> int:
        """
        Length of the AEAD nonce.
        """
        return _AEAD_NONCE_LENGTH

    # -- Keys (RFC 9180 §4, §7.1) ----------------------------------------------

    def derive_key_pair(self, ikm: bytes) -> tuple[bytes, bytes]:
        """
        Derive a key pair deterministically from input keying material (RFC 9180 §7.1.3).

        :param ikm: the input keying material; RFC 9180 §7.1.3 asks for at least Nsk bytes
            of entropy.
        :returns: ``(private_key, public_key)``, serialised (RFC 9180 §7.1.1, §7.1.2).
        :raises InvalidKey: in the (probability about 2^-256) case that no candidate scalar
            is valid (``DeriveKeyPairError``).
        """
        private, public = self._derive(ikm)
        return self._serialize_private(private), _serialize_public(public)

    def generate_key_pair(self, rng: Rng) -> tuple[bytes, bytes]:
        """
        Generate a fresh key pair as ``DeriveKeyPair(rng(Nsk))`` (RFC 9180 §4).

        :param rng: the randomness source.
        :returns: ``(private_key, public_key)``, serialised.
        :raises UsageError: if ``rng`` returns the wrong number of bytes.
        :raises InvalidKey: as :meth:`derive_key_pair`.
        """
        return self.derive_key_pair(_draw(rng, self._params.n_sk))

    def public_key(self, private_key: bytes) -> bytes:
        """
        Compute the public key of a private key.

        :param private_key: a serialised private key.
        :returns: its serialised public key.
        :raises InvalidKey: if ``private_key`` is not a valid private key for this KEM.
        """
        return _serialize_public(self._load_private(private_key).public_key())

    def check_public_key(self, public_key: bytes) -> None:
        """
        Check that bytes are a valid serialised public key for this KEM (RFC 9180 §7.1.4).

        X25519 and X448 accept any string of the right length, as RFC 9180 §7.1.4
        allows; a low-order point is caught when it is used, by the all-zero check.

        :param public_key: the candidate.
        :raises InvalidKey: if it is not.
        """
        self._load_public(public_key)

    # -- Setup and single-shot use (RFC 9180 §5.1.1, §6) ----------------------

    def setup_base_s(self, public_key: bytes, info: bytes, rng: Rng) -> tuple[bytes, SenderContext]:
        """
        Set up a sender context to a recipient's public key (RFC 9180 §5.1.1, ``SetupBaseS``).

        :param public_key: the recipient's serialised public key (``pkR``).
        :param info: application context bound into the key schedule.
        :param rng: the randomness source; the ephemeral key is ``DeriveKeyPair(rng(Nsk))``.
        :returns: ``(enc, context)``, where ``enc`` is the encapsulated key (``kem_output``).
        :raises InvalidKey: if ``public_key`` is not a valid public key, or the
            Diffie-Hellman result is the all-zero value (a low-order X25519/X448 point,
            RFC 9180 §7.1.4).
        :raises UsageError: if ``rng`` returns the wrong number of bytes.
        """
        if self._xkem_kdf is not None:
            recipient_key = self._load_public(public_key)
            ephemeral_private, ephemeral_public = self._derive(_draw(rng, self._params.n_sk))
            enc = _serialize_public(ephemeral_public)
            shared_secret = self._x_shared_secret(
                ephemeral_private, recipient_key, enc + _serialize_public(recipient_key), InvalidKey
            )
            kdf, aead, base_nonce, exporter_secret = self._key_schedule(shared_secret, info)
            return enc, SenderContext(kdf, aead, base_nonce, exporter_secret)
        recipient = pyhpke.KEMKey.from_pyca_cryptography_key(self._load_public(public_key))
        ephemeral = self._derive_pair(_draw(rng, self._params.n_sk))
        try:
            shared_secret, enc = self._kem.encap(recipient, eks=ephemeral)
        except ValueError as exc:
            # cryptography rejects an all-zero X25519/X448 shared secret with
            # ValueError, as RFC 9180 §7.1.4 requires ("ValidationError").
            raise InvalidKey("HPKE public key gives a degenerate shared secret") from exc
        kdf, aead, base_nonce, exporter_secret = self._key_schedule(shared_secret, info)
        return enc, SenderContext(kdf, aead, base_nonce, exporter_secret)

    def setup_base_r(self, private_key: bytes, kem_output: bytes, info: bytes) -> RecipientContext:
        """
        Set up a recipient context (RFC 9180 §5.1.1, ``SetupBaseR(enc, skR, info)``).

        :param private_key: the recipient's serialised private key (``skR``).
        :param kem_output: the sender's encapsulated key (``enc``).
        :param info: application context bound into the key schedule.
        :returns: the context.
        :raises InvalidKey: if ``private_key`` is not a valid private key.
        :raises DecryptError: if ``kem_output`` is not a valid encapsulated key.
        """
        if self._xkem_kdf is not None:
            own = self._load_private(private_key)
            if len(kem_output) != self._params.n_pk:
                raise DecryptError(f"HPKE kem_output is not a {self.kem_id.name} public key")
            sender_key = self._load_public(kem_output)
            kem_context = kem_output + _serialize_public(own.public_key())
            shared_secret = self._x_shared_secret(own, sender_key, kem_context, DecryptError)
            kdf, aead, base_nonce, exporter_secret = self._key_schedule(shared_secret, info)
            return RecipientContext(kdf, aead, base_nonce, exporter_secret)
        recipient = pyhpke.KEMKey.from_pyca_cryptography_key(self._load_private(private_key))
        # RFC 9180 §7.1.1: an encapsulated DHKEM key is a public key of exactly
        # Npk bytes; for the NIST curves, an uncompressed point. pyhpke would
        # also accept a compressed point, so the form is checked here.
        if not self._is_public_key_form(kem_output):
            raise DecryptError(f"HPKE kem_output is not a {self.kem_id.name} public key")
        try:
            shared_secret = self._kem.decap(kem_output, recipient)
        except ValueError as exc:
            # An encapsulated key that is not on the curve, or that yields the
            # all-zero shared secret (RFC 9180 §7.1.4), cannot be decapsulated.
            raise DecryptError("HPKE kem_output cannot be decapsulated") from exc
        kdf, aead, base_nonce, exporter_secret = self._key_schedule(shared_secret, info)
        return RecipientContext(kdf, aead, base_nonce, exporter_secret)

    def seal(
        self, public_key: bytes, info: bytes, aad: bytes, plaintext: bytes, rng: Rng
    ) -> tuple[bytes, bytes]:
        """
        Encrypt one message to a public key (RFC 9180 §6.1, ``SealBase``).

        :param public_key: the recipient's serialised public key.
        :param info: application context bound into the key schedule.
        :param aad: additional authenticated data.
        :param plaintext: the message.
        :param rng: the randomness source for the ephemeral key.
        :returns: ``(kem_output, ciphertext)``.
        :raises InvalidKey: as :meth:`setup_base_s`.
        :raises UsageError: as :meth:`setup_base_s`.
        """
        enc, context = self.setup_base_s(public_key, info, rng)
        return enc, context.seal(aad, plaintext)

    def open(
        self, private_key: bytes, kem_output: bytes, info: bytes, aad: bytes, ciphertext: bytes
    ) -> bytes:
        """
        Decrypt one message (RFC 9180 §6.1, ``OpenBase(enc, skR, info, aad, ct)``).

        :param private_key: the recipient's serialised private key.
        :param kem_output: the encapsulated key from :meth:`seal`.
        :param info: the ``info`` given to :meth:`seal`.
        :param aad: the ``aad`` given to :meth:`seal`.
        :param ciphertext: the ciphertext from :meth:`seal`.
        :returns: the plaintext.
        :raises InvalidKey: if ``private_key`` is not a valid private key.
        :raises DecryptError: if ``kem_output``, ``info``, ``aad`` or ``ciphertext`` is wrong.
        """
        return self.setup_base_r(private_key, kem_output, info).open(aad, ciphertext)

    def send_export(
        self, public_key: bytes, info: bytes, exporter_context: bytes, length: int, rng: Rng
    ) -> tuple[bytes, bytes]:
        """
        Set up a sender context and export one secret from it (RFC 9180 §6.2, ``SendExport``).

        :param public_key: the recipient's serialised public key.
        :param info: application context bound into the key schedule.
        :param exporter_context: the exporter's context string.
        :param length: the number of bytes to export.
        :param rng: the randomness source for the ephemeral key.
        :returns: ``(kem_output, exported_secret)``.
        :raises InvalidKey: as :meth:`setup_base_s`.
        :raises UsageError: as :meth:`setup_base_s`, or if ``length`` is out of range.
        """
        enc, context = self.setup_base_s(public_key, info, rng)
        return enc, context.export(exporter_context, length)

    def receive_export(
        self,
        private_key: bytes,
        kem_output: bytes,
        info: bytes,
        exporter_context: bytes,
        length: int,
    ) -> bytes:
        """
        Set up a recipient context and export one secret (RFC 9180 §6.2, ``ReceiveExport``).

        :param private_key: the recipient's serialised private key.
        :param kem_output: the encapsulated key from :meth:`send_export`.
        :param info: the ``info`` given to :meth:`send_export`.
        :param exporter_context: the exporter's context string.
        :param length: the number of bytes to export.
        :returns: the exported secret; it matches the sender's only if every input does.
        :raises InvalidKey: if ``private_key`` is not a valid private key.
        :raises DecryptError: if ``kem_output`` is not a valid encapsulated key.
        :raises UsageError: if ``length`` is out of range.
        """
        return self.setup_base_r(private_key, kem_output, info).export(exporter_context, length)

    # -- Internals ------------------------------------------------------------

    def _key_schedule(self, shared_secret: bytes, info: bytes) -> tuple[_KDF, _AEAD, bytes, bytes]:
        # RFC 9180 §5.1, KeySchedule<ROLE>(mode_base, shared_secret, info, "", "").
        kdf = self._kdf
        info_hash = kdf.labeled_extract(b"", b"info_hash", info)
        key_schedule_context = bytes((_MODE_BASE,)) + self._psk_id_hash + info_hash
        secret = kdf.labeled_extract(shared_secret, b"secret", b"")
        key = kdf.labeled_expand(secret, b"key", key_schedule_context, self.n_k)
        base_nonce = kdf.labeled_expand(
            secret, b"base_nonce", key_schedule_context, _AEAD_NONCE_LENGTH
        )
        exporter_secret = kdf.labeled_expand(secret, b"exp", key_schedule_context, kdf.n_h)
        return kdf, self._aead_cls(key), base_nonce, exporter_secret

    def _derive_pair(self, ikm: bytes) -> pyhpke.KEMKeyPair:
        try:
            return self._kem.derive_key_pair(ikm)
        except ValueError as exc:
            # RFC 9180 §7.1.3: DeriveKeyPairError after 256 rejected candidates.
            raise InvalidKey("DeriveKeyPair found no valid scalar") from exc

    def _x_shared_secret(
        self,
        private_key: _PrivateKey,
        public_key: _PublicKey,
        kem_context: bytes,
        error: type[InvalidKey] | type[DecryptError],
    ) -> bytes:
        # RFC 9180 §4.1: dh = DH(sk, pk); shared_secret = ExtractAndExpand(dh,
        # kem_context), with eae_prk = LabeledExtract("", "eae_prk", dh).
        kdf = self._xkem_kdf
        if kdf is None:  # pragma: no cover - only called for X25519 and X448
            raise UsageError("not an X25519 or X448 KEM")
        try:
            # Two branches, not one: each exchange() takes its own key type.
            if isinstance(private_key, x25519.X25519PrivateKey) and isinstance(  # noqa: SIM114
                public_key, x25519.X25519PublicKey
            ):
                dh = private_key.exchange(public_key)
            elif isinstance(private_key, x448.X448PrivateKey) and isinstance(
                public_key, x448.X448PublicKey
            ):
                dh = private_key.exchange(public_key)
            else:  # pragma: no cover - keys are loaded for this KEM
                raise UsageError("key types do not match the KEM")
        except ValueError as exc:
            # RFC 9180 §7.1.4: an all-zero result (a low-order point) "MUST"
            # be rejected; cryptography raises ValueError for it.
            raise error("HPKE public key gives a degenerate shared secret") from exc
        eae_prk = kdf.labeled_extract(b"", b"eae_prk", dh)
        return kdf.labeled_expand(eae_prk, b"shared_secret", kem_context, self._params.n_secret)

    def _derive(self, ikm: bytes) -> tuple[_PrivateKey, _PublicKey]:
        kdf = self._xkem_kdf
        if kdf is not None:
            # RFC 9180 §7.1.3: for X25519 and X448, dkp_prk =
            # LabeledExtract("", "dkp_prk", ikm); sk = LabeledExpand(dkp_prk,
            # "sk", "", Nsk), used as the private key as it is.
            dkp_prk = kdf.labeled_extract(b"", b"dkp_prk", ikm)
            sk = kdf.labeled_expand(dkp_prk, b"sk", b"", self._params.n_sk)
            private: _PrivateKey = (
                x25519.X25519PrivateKey.from_private_bytes(sk)
                if self.kem_id == KEMId.DHKEM_X25519_HKDF_SHA256
                else x448.X448PrivateKey.from_private_bytes(sk)
            )
            return private, private.public_key()
        pair = self._derive_pair(ikm)
        return (
            cast(_PrivateKey, pair.private_key.raw),
            cast(_PublicKey, pair.public_key.raw),
        )

    def _serialize_private(self, key: _PrivateKey) -> bytes:
        # RFC 9180 §7.1.2: X25519 and X448 private keys are their raw bytes;
        # NIST private keys are the scalar as Nsk big-endian bytes.
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.private_numbers().private_value.to_bytes(self._params.n_sk, "big")
        return key.private_bytes_raw()

    def _load_private(self, data: bytes) -> _PrivateKey:
        params = self._params
        n_sk = params.n_sk
        if params.curve is not None and len(data) == n_sk - 1 and n_sk == 66:
            # P-521 scalars have a top byte of 0 or 1; some encoders (and the
            # IETF MLS test vectors) drop a leading zero byte, so pad it back.
            data = b"\x00" + data
        if len(data) != n_sk:
            raise InvalidKey(f"{self.kem_id.name} private key must be {n_sk} bytes")
        try:
            if params.curve is not None:
                # RFC 9180 §7.1.2: the scalar must be in [1, order - 1];
                # cryptography rejects anything else with ValueError.
                return ec.derive_private_key(int.from_bytes(data, "big"), params.curve)
            if self.kem_id == KEMId.DHKEM_X25519_HKDF_SHA256:
                return x25519.X25519PrivateKey.from_private_bytes(data)
            return x448.X448PrivateKey.from_private_bytes(data)
        except ValueError as exc:
            raise InvalidKey(f"not a valid {self.kem_id.name} private key") from exc

    def _is_public_key_form(self, data: bytes) -> bool:
        # RFC 9180 §7.1.1: Npk bytes, and for the NIST curves the uncompressed
        # SEC1 form (leading 0x04); compressed and hybrid forms are not allowed.
        return len(data) == self._params.n_pk and (self._params.curve is None or data[0] == 0x04)

    def _load_public(self, data: bytes) -> _PublicKey:
        if not self._is_public_key_form(data):
            raise InvalidKey(f"not a serialised {self.kem_id.name} public key")
        curve = self._params.curve
        try:
            if curve is not None:
                # from_encoded_point checks that the point is on the curve and
                # not the point at infinity (RFC 9180 §7.1.4).
                return ec.EllipticCurvePublicKey.from_encoded_point(curve, data)
            if self.kem_id == KEMId.DHKEM_X25519_HKDF_SHA256:
                return x25519.X25519PublicKey.from_public_bytes(data)
            return x448.X448PublicKey.from_public_bytes(data)
        except ValueError as exc:
            raise InvalidKey(f"not a valid {self.kem_id.name} public key") from exc


def _serialize_public(key: _PublicKey) -> bytes:
    # RFC 9180 §7.1.1: raw bytes for X25519 and X448, the uncompressed SEC1
    # point for the NIST curves.
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return key.public_bytes_raw()


def _draw(rng: Rng, n: int) -> bytes:
    data = rng(n)
    if len(data) != n:
        raise UsageError(f"rng returned {len(data)} bytes, expected {n}")
    return data


def get_hpke(kem_id: KEMId, kdf_id: KDFId, aead_id: AEADId) -> HPKE:
    """
    Return the shared :class:`HPKE` object for a (KEM, KDF, AEAD) combination.

    :param kem_id: the KEM.
    :param kdf_id: the KDF.
    :param aead_id: the AEAD.
    :returns: the cipher suite object.
    :raises UsageError: if an identifier is not one this module implements.
    """
    try:
        kem, kdf, aead = KEMId(kem_id), KDFId(kdf_id), AEADId(aead_id)
    except ValueError as exc:
        raise UsageError(f"unsupported HPKE suite ({kem_id}, {kdf_id}, {aead_id})") from exc
    return _hpke(kem, kdf, aead)


@functools.cache
def _hpke(kem_id: KEMId, kdf_id: KDFId, aead_id: AEADId) -> HPKE:
    # Keyed by enum members, so that plain integers share the same object.
    return HPKE(kem_id, kdf_id, aead_id)
