"""
Accounts and devices: register an account with its first device, add a device, list them.

A registration is signed (``Townsquare-*`` headers) by the device it
registers, which proves that the device holds its key; the certificate in the
body proves that the account key certified it. Listing is signed by any
registered device, and returns the certificates so that a client can check
them itself rather than trust the relay.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict

from townsquare import auth
from townsquare.server.directory import Directory
from townsquare.server.errors import (
    AccountExists,
    BodyTooLarge,
    DeviceExists,
    DeviceLimitReached,
    InvalidCertificate,
    InvalidRequest,
    SignerMismatch,
    Unavailable,
    UnknownAccount,
)
from townsquare.server.http.fields import (
    KEY_PATTERN,
    KeyText,
    SignatureText,
    UnixTime,
    key_from_path,
)
from townsquare.server.http.problems import documented_errors
from townsquare.server.http.signing import (
    NEW_DEVICE_ERRORS,
    SIGNED_ERRORS,
    SIGNED_OPENAPI,
    Signatures,
)
from townsquare.server.storage import Device

__all__ = ["CertificateBody", "DeviceBody", "DeviceList", "Registration", "router"]


class CertificateBody(BaseModel):
    """
    A device certificate (``docs/protocol.md``): the account key's signature over the
    device key and ``created_at``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    account_key: KeyText
    device_key: KeyText
    created_at: UnixTime
    signature: SignatureText

    def to_certificate(self) -> auth.DeviceCertificate:
        """
        :returns: the certificate as a value.
        :raises InvalidCertificate: if a field has the wrong form.
        """
        try:
            return auth.DeviceCertificate(
                account_key=self.account_key,
                device_key=self.device_key,
                created_at=self.created_at,
                signature=self.signature,
            )
        except auth.VerificationError as exc:
            raise InvalidCertificate(str(exc)) from exc

    @classmethod
    def of(cls, certificate: auth.DeviceCertificate) -> CertificateBody:
        """
        :returns: the JSON form of ``certificate``.
        """
        return cls(
            account_key=certificate.account_key,
            device_key=certificate.device_key,
            created_at=certificate.created_at,
            signature=certificate.signature,
        )


class Registration(BaseModel):
    """
    A request to register a device (and, on ``POST /v1/accounts``, its account).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    certificate: CertificateBody


class DeviceBody(BaseModel):
    """
    A registered device.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    certificate: CertificateBody
    #: When the relay registered the device, in Unix seconds.
    registered_at: UnixTime

    @classmethod
    def of(cls, device: Device) -> DeviceBody:
        """
        :returns: the JSON form of ``device``.
        """
        return cls(
            certificate=CertificateBody.of(device.certificate), registered_at=device.registered_at
        )


class DeviceList(BaseModel):
    """
    An account's devices, in the order they were registered.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    account_key: KeyText
    devices: tuple[DeviceBody, ...]


AccountKeyPath = Annotated[
    str, Path(pattern=KEY_PATTERN, description="The account's key, unpadded base64url.")
]


def router(directory: Directory, signatures: Signatures) -> APIRouter:
    """
    Build the account and device routes.

    :param directory: the accounts and devices.
    :param signatures: the request-signature dependencies.
    :returns: the router.
    """
    routes = APIRouter(tags=["accounts"])

    @routes.post(
        "/v1/accounts",
        status_code=201,
        response_model=DeviceBody,
        summary="Register an account and its first device",
        description=(
            "Signed by the device being registered (its key is `Townsquare-Device`). The"
            " certificate names the account key, which becomes the account."
        ),
        responses=documented_errors(
            InvalidRequest,
            NEW_DEVICE_ERRORS,
            SignerMismatch,
            AccountExists,
            DeviceExists,
            BodyTooLarge,
            InvalidCertificate,
            Unavailable,
        ),
        openapi_extra=SIGNED_OPENAPI,
        operation_id="register_account",
    )
    async def register_account(
        registration: Registration, signer: bytes = Depends(signatures.new_device)
    ) -> DeviceBody:
        device = await directory.register_account(
            registration.certificate.to_certificate(), signer=signer
        )
        return DeviceBody.of(device)

    @routes.post(
        "/v1/devices",
        status_code=201,
        response_model=DeviceBody,
        summary="Add a device to an account",
        description=(
            "Signed by the device being added; the certificate, signed by the account key,"
            " authorises it."
        ),
        responses=documented_errors(
            InvalidRequest,
            NEW_DEVICE_ERRORS,
            SignerMismatch,
            UnknownAccount,
            DeviceExists,
            DeviceLimitReached,
            BodyTooLarge,
            InvalidCertificate,
            Unavailable,
        ),
        openapi_extra=SIGNED_OPENAPI,
        operation_id="add_device",
    )
    async def add_device(
        registration: Registration, signer: bytes = Depends(signatures.new_device)
    ) -> DeviceBody:
        device = await directory.add_device(
            registration.certificate.to_certificate(), signer=signer
        )
        return DeviceBody.of(device)

    @routes.get(
        "/v1/accounts/{account_key}/devices",
        response_model=DeviceList,
        summary="List an account's devices",
        description="Returns each device's certificate, for the client to verify.",
        responses=documented_errors(
            InvalidRequest, SIGNED_ERRORS, UnknownAccount, BodyTooLarge, Unavailable
        ),
        openapi_extra=SIGNED_OPENAPI,
        operation_id="list_devices",
    )
    async def list_devices(
        account_key: AccountKeyPath,
        _device: Device = Depends(signatures.device),
    ) -> DeviceList:
        key = key_from_path(account_key)
        devices = await directory.list_devices(key)
        return DeviceList(account_key=key, devices=tuple(DeviceBody.of(d) for d in devices))

    return routes
