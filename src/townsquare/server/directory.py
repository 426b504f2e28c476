"""
The directory: accounts, their devices and the devices' KeyPackages.

An account is an Ed25519 public key; a device is registered by its own signed
request carrying its certificate (:class:`townsquare.auth.DeviceCertificate`),
which the account key signed. The relay stores keys, certificates and opaque
KeyPackages: no password, phone number or name.

KeyPackages: each device uploads one-time packages and one last-resort
package. Anyone authenticated may claim one package of a device (or one of
every device of an account), rate-limited per claimer; a one-time package is
handed out once at most, the last-resort package only when none is left.
"""

from __future__ import annotations

from collections.abc import Sequence

from townsquare import auth
from townsquare.mls import errors as mls_errors
from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.credentials import BasicCredential, Credential
from townsquare.mls.errors import ProtocolError
from townsquare.mls.framing import MLSMessage
from townsquare.mls.key_package import KeyPackage, validate_key_package
from townsquare.mls.registries import ProtocolVersion
from townsquare.server.clock import Clock
from townsquare.server.config import Limits
from townsquare.server.errors import (
    InvalidCertificate,
    InvalidKeyPackage,
    KeyPackageNotOwned,
    SignerMismatch,
)
from townsquare.server.storage import (
    AccountClaim,
    ClaimedKeyPackage,
    Device,
    KeyPackageCount,
    Storage,
)

__all__ = ["CLAIM_ACTION", "Directory", "check_certificate", "check_key_package"]

#: The quota name of KeyPackage claims.
CLAIM_ACTION = "claim-key-package"


def check_certificate(certificate: auth.DeviceCertificate, *, now: int, clock_skew: int) -> None:
    """
    Check a device certificate before registering its device.

    :param certificate: the certificate.
    :param now: the relay's time.
    :param clock_skew: how far in the future ``created_at`` may be.
    :raises InvalidCertificate: if it does not verify, is dated after ``now + clock_skew``,
        or certifies the account key itself as a device.
    """
    if certificate.device_key == certificate.account_key:
        # Townsquare choice: the account key only certifies. Keeping it apart from
        # every device key lets it stay offline (on paper, or one trusted phone).
        raise InvalidCertificate("the device key must not be the account key")
    if certificate.created_at > now + clock_skew:
        raise InvalidCertificate("the certificate is dated in the future")
    try:
        certificate.verify()
    except auth.VerificationError as exc:
        raise InvalidCertificate("the account key's signature does not verify") from exc


def device_credential(credential: Credential, signature_key: bytes) -> None:
    """
    Accept a leaf's credential only if it names the leaf's own key (RFC 9420 §5.3.1).

    Townsquare, for now: a BasicCredential whose ``identity`` is the device key,
    which is also the leaf's ``signature_key``. (A credential carrying the device
    certificate, so that members see which account a device belongs to, replaces
    it with the account work.)

    :param credential: the leaf's credential.
    :param signature_key: the leaf's signature key.
    :raises InvalidCredential: if it is another kind of credential, or names another key.
    """
    if not isinstance(credential, BasicCredential):
        raise mls_errors.InvalidCredential("a member's credential must be a BasicCredential")
    if credential.identity != signature_key:
        raise mls_errors.InvalidCredential(
            "a member's credential must name its own signature key (the device key)"
        )


def check_key_package(data: bytes, *, device_key: bytes, now: int) -> None:
    """
    Check that uploaded bytes are an ``MLSMessage`` carrying a KeyPackage of this device.

    :param data: the encoded MLSMessage.
    :param device_key: the uploading device's key.
    :param now: the relay's time, for the leaf's lifetime.
    :raises InvalidKeyPackage: if the bytes do not decode as an MLSMessage (RFC 9420 §6)
        carrying an mls10 KeyPackage (§10) of a supported cipher suite, signed by its leaf's
        signature key, that passes RFC 9420 §10.1 and the leaf checks of §7.3.
    :raises KeyPackageNotOwned: if the leaf's signature key is not ``device_key``.
    """
    try:
        message = MLSMessage.decode(data)
    except ProtocolError as exc:
        raise InvalidKeyPackage(f"not an MLSMessage: {exc}") from exc
    key_package = message.body
    if not isinstance(key_package, KeyPackage):
        raise InvalidKeyPackage(
            f"the MLSMessage carries {message.wire_format.name}, not a KeyPackage"
        )
    if message.version != ProtocolVersion.MLS10 or key_package.version != ProtocolVersion.MLS10:
        raise InvalidKeyPackage("the KeyPackage is not for mls10")
    # Townsquare: a device's Ed25519 key is its MLS signature key, so each leaf it
    # publishes must carry that key; otherwise one device could publish another's.
    if key_package.leaf_node.signature_key != device_key:
        raise KeyPackageNotOwned("the KeyPackage's leaf signature key is not the uploading device")
    try:
        suite = get_cipher_suite(key_package.cipher_suite)
        # RFC 9420 §10.1: "Verify that the signature on the KeyPackage is valid
        # using the public key in leaf_node.credential."
        suite.verify_with_label(
            device_key, b"KeyPackageTBS", key_package.to_be_signed(), key_package.signature
        )
    except ProtocolError as exc:
        raise InvalidKeyPackage(f"the KeyPackage's signature does not verify: {exc}") from exc
    try:
        # RFC 9420 §10.1 and the leaf node checks of §7.3: init key distinct from the
        # leaf's key, the leaf's own signature, lifetime, capabilities, credential.
        validate_key_package(suite, key_package, credential_validator=device_credential, now=now)
    except ProtocolError as exc:
        raise InvalidKeyPackage(
            f"the KeyPackage is not valid ({type(exc).__name__}): {exc}"
        ) from exc


class Directory:
    """
    Registers accounts and devices and keeps their KeyPackages.
    """

    def __init__(self, storage: Storage, clock: Clock, limits: Limits) -> None:
        """
        :param storage: the store.
        :param clock: the relay's clock.
        :param limits: the limits to enforce.
        """
        self._storage = storage
        self._clock = clock
        self._limits = limits

    async def register_account(
        self, certificate: auth.DeviceCertificate, *, signer: bytes
    ) -> Device:
        """
        Register an account and its first device.

        :param certificate: the first device's certificate.
        :param signer: the key that signed the request (must be the device's).
        :returns: the registered device.
        :raises SignerMismatch: if ``signer`` is not the certified device.
        :raises InvalidCertificate: if the certificate is not valid.
        :raises AccountExists: if the account is registered.
        :raises DeviceExists: if the device is registered.
        """
        device = self._new_device(certificate, signer=signer)
        await self._storage.create_account(device)
        return device

    async def add_device(self, certificate: auth.DeviceCertificate, *, signer: bytes) -> Device:
        """
        Register another device of an account.

        :param certificate: the new device's certificate.
        :param signer: the key that signed the request (must be the new device's).
        :returns: the registered device.
        :raises SignerMismatch: if ``signer`` is not the certified device.
        :raises InvalidCertificate: if the certificate is not valid.
        :raises UnknownAccount: if the account is not registered.
        :raises DeviceExists: if the device is registered.
        :raises DeviceLimitReached: if the account has as many devices as allowed.
        """
        device = self._new_device(certificate, signer=signer)
        await self._storage.add_device(device, max_devices=self._limits.max_devices_per_account)
        return device

    def _new_device(self, certificate: auth.DeviceCertificate, *, signer: bytes) -> Device:
        if signer != certificate.device_key:
            raise SignerMismatch("the request must be signed by the device it registers")
        now = self._clock.now()
        check_certificate(certificate, now=now, clock_skew=self._limits.clock_skew_seconds)
        return Device(certificate=certificate, registered_at=now)

    async def list_devices(self, account_key: bytes) -> tuple[Device, ...]:
        """
        :returns: an account's devices, in registration order.
        :raises UnknownAccount: if the account is not registered.
        """
        return await self._storage.list_devices(account_key)

    async def upload_key_packages(
        self, device: Device, *, one_time: Sequence[bytes], last_resort: bytes | None
    ) -> KeyPackageCount:
        """
        Check and store a device's KeyPackages, all or none.

        :param device: the uploading device.
        :param one_time: encoded MLSMessages, each carrying a one-time KeyPackage.
        :param last_resort: an encoded MLSMessage carrying the new last-resort KeyPackage.
        :returns: the device's counts after the upload.
        :raises InvalidKeyPackage: if a package is not valid (``KeyPackageNotOwned`` if it is
            another device's).
        :raises DuplicateKeyPackage: if a package is repeated or already stored.
        :raises KeyPackageStoreFull: if the device would store too many.
        """
        now = self._clock.now()
        for data in (*one_time, *(() if last_resort is None else (last_resort,))):
            check_key_package(data, device_key=device.device_key, now=now)
        return await self._storage.add_key_packages(
            device.device_key,
            one_time=one_time,
            last_resort=last_resort,
            now=now,
            max_stored=self._limits.max_stored_key_packages,
        )

    async def count_key_packages(self, device: Device) -> KeyPackageCount:
        """
        :returns: how many KeyPackages ``device`` has stored.
        """
        return await self._storage.count_key_packages(device.device_key)

    async def claim_key_package(self, claimer: Device, device_key: bytes) -> ClaimedKeyPackage:
        """
        Claim one KeyPackage of a device.

        :param claimer: the authenticated device that claims.
        :param device_key: the device whose package is claimed.
        :returns: the package.
        :raises RateLimited: if the claimer used its claim quota.
        :raises DeviceNotFound: if the device is not registered.
        :raises KeyPackagesExhausted: if it has no package left.
        """
        await self._consume_claim_quota(claimer)
        return await self._storage.claim_key_package(device_key)

    async def claim_account_key_packages(self, claimer: Device, account_key: bytes) -> AccountClaim:
        """
        Claim one KeyPackage of every device of an account.

        :param claimer: the authenticated device that claims.
        :param account_key: the account.
        :returns: the packages, and the devices that had none.
        :raises RateLimited: if the claimer used its claim quota.
        :raises UnknownAccount: if the account is not registered.
        """
        await self._consume_claim_quota(claimer)
        return await self._storage.claim_account_key_packages(account_key)

    async def _consume_claim_quota(self, claimer: Device) -> None:
        # Townsquare choice: every claim request counts, found or not, so that probing
        # for exhausted devices costs quota too. An account claim counts once: it hands
        # out at most max_devices_per_account packages.
        await self._storage.consume_quota(
            claimer.device_key,
            CLAIM_ACTION,
            now=self._clock.now(),
            window_seconds=self._limits.claim_window_seconds,
            limit=self._limits.claims_per_window,
        )
