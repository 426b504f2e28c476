"""
KeyPackages: upload, count, and claim one per device or per account.

A device uploads its own one-time KeyPackages and its last-resort one (the
signing device owns them). Any registered device may claim: one package of a
device, or one of each device of an account; claims count against the
claimer's quota. A one-time package is handed out once at most; the
last-resort package is handed out, and kept, only when no one-time one is
left. Each package travels as an encoded ``MLSMessage`` (RFC 9420 §6) in
unpadded base64url.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from townsquare.server.config import MAX_KEY_PACKAGES_PER_UPLOAD
from townsquare.server.directory import Directory
from townsquare.server.errors import (
    BodyTooLarge,
    DeviceNotFound,
    DuplicateKeyPackage,
    FieldTooLarge,
    InvalidKeyPackage,
    InvalidRequest,
    KeyPackageNotOwned,
    KeyPackagesExhausted,
    KeyPackageStoreFull,
    RateLimited,
    TooManyItems,
    Unavailable,
    UnknownAccount,
)
from townsquare.server.http.fields import KEY_PATTERN, KeyPackageText, KeyText, key_from_path
from townsquare.server.http.problems import documented_errors
from townsquare.server.http.signing import SIGNED_ERRORS, SIGNED_OPENAPI, Signatures
from townsquare.server.storage import ClaimedKeyPackage, Device, KeyPackageCount

__all__ = ["AccountClaimBody", "ClaimedBody", "CountBody", "UploadBody", "router"]


class UploadBody(BaseModel):
    """
    KeyPackages to store for the signing device.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    one_time: tuple[KeyPackageText, ...] = Field(default=(), max_length=MAX_KEY_PACKAGES_PER_UPLOAD)
    #: Replaces the device's last-resort KeyPackage; ``null`` keeps the current one.
    last_resort: KeyPackageText | None = None


class CountBody(BaseModel):
    """
    How many KeyPackages a device has stored.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    one_time: int = Field(ge=0)
    last_resort: bool

    @classmethod
    def of(cls, count: KeyPackageCount) -> CountBody:
        """
        :returns: the JSON form of ``count``.
        """
        return cls(one_time=count.one_time, last_resort=count.last_resort)


class ClaimedBody(BaseModel):
    """
    A claimed KeyPackage.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    device_key: KeyText
    key_package: KeyPackageText
    #: True when this is the device's last-resort package (it stays on the relay).
    last_resort: bool

    @classmethod
    def of(cls, claimed: ClaimedKeyPackage) -> ClaimedBody:
        """
        :returns: the JSON form of ``claimed``.
        """
        return cls(
            device_key=claimed.device_key,
            key_package=claimed.key_package,
            last_resort=claimed.last_resort,
        )


class AccountClaimBody(BaseModel):
    """
    One KeyPackage of each of an account's devices.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    account_key: KeyText
    key_packages: tuple[ClaimedBody, ...]
    #: Devices that had no KeyPackage at all.
    exhausted: tuple[KeyText, ...]


DeviceKeyPath = Annotated[
    str, Path(pattern=KEY_PATTERN, description="The device's key, unpadded base64url.")
]
AccountKeyPath = Annotated[
    str, Path(pattern=KEY_PATTERN, description="The account's key, unpadded base64url.")
]


def router(directory: Directory, signatures: Signatures) -> APIRouter:
    """
    Build the KeyPackage routes.

    :param directory: where KeyPackages are kept.
    :param signatures: the request-signature dependencies.
    :returns: the router.
    """
    routes = APIRouter(tags=["key-packages"])

    @routes.post(
        "/v1/key-packages",
        response_model=CountBody,
        summary="Upload the signing device's KeyPackages",
        description=(
            f"At most {MAX_KEY_PACKAGES_PER_UPLOAD} one-time packages, each checked to be an"
            " MLSMessage carrying a KeyPackage whose leaf signature key is the signing"
            " device's. All are stored or none. Answers the counts after the upload."
        ),
        responses=documented_errors(
            InvalidRequest,
            SIGNED_ERRORS,
            DuplicateKeyPackage,
            KeyPackageStoreFull,
            BodyTooLarge,
            TooManyItems,
            FieldTooLarge,
            InvalidKeyPackage,
            KeyPackageNotOwned,
            Unavailable,
        ),
        openapi_extra=SIGNED_OPENAPI,
        operation_id="upload_key_packages",
    )
    async def upload(
        upload: UploadBody,
        device: Device = Depends(signatures.device),
    ) -> CountBody:
        count = await directory.upload_key_packages(
            device, one_time=upload.one_time, last_resort=upload.last_resort
        )
        return CountBody.of(count)

    @routes.get(
        "/v1/key-packages/count",
        response_model=CountBody,
        summary="Count the signing device's KeyPackages",
        description="For topping up: how many one-time packages are left, and whether a"
        " last-resort one is stored.",
        responses=documented_errors(SIGNED_ERRORS, BodyTooLarge, Unavailable),
        openapi_extra=SIGNED_OPENAPI,
        operation_id="count_key_packages",
    )
    async def count(
        device: Device = Depends(signatures.device),
    ) -> CountBody:
        return CountBody.of(await directory.count_key_packages(device))

    @routes.post(
        "/v1/devices/{device_key}/key-packages/claim",
        response_model=ClaimedBody,
        summary="Claim one KeyPackage of a device",
        description=(
            "The oldest one-time package, which is deleted; or, only when none is left, the"
            " last-resort package, which is kept. Counts against the claimer's quota."
        ),
        responses=documented_errors(
            InvalidRequest,
            SIGNED_ERRORS,
            DeviceNotFound,
            KeyPackagesExhausted,
            BodyTooLarge,
            RateLimited,
            Unavailable,
        ),
        openapi_extra=SIGNED_OPENAPI,
        operation_id="claim_device_key_package",
    )
    async def claim_for_device(
        device_key: DeviceKeyPath,
        claimer: Device = Depends(signatures.device),
    ) -> ClaimedBody:
        claimed = await directory.claim_key_package(claimer, key_from_path(device_key))
        return ClaimedBody.of(claimed)

    @routes.post(
        "/v1/accounts/{account_key}/key-packages/claim",
        response_model=AccountClaimBody,
        summary="Claim one KeyPackage of each device of an account",
        description=(
            "In one transaction; devices with no package at all are listed in `exhausted`."
            " Counts once against the claimer's quota."
        ),
        responses=documented_errors(
            InvalidRequest, SIGNED_ERRORS, UnknownAccount, BodyTooLarge, RateLimited, Unavailable
        ),
        openapi_extra=SIGNED_OPENAPI,
        operation_id="claim_account_key_packages",
    )
    async def claim_for_account(
        account_key: AccountKeyPath,
        claimer: Device = Depends(signatures.device),
    ) -> AccountClaimBody:
        key = key_from_path(account_key)
        claim = await directory.claim_account_key_packages(claimer, key)
        return AccountClaimBody(
            account_key=key,
            key_packages=tuple(ClaimedBody.of(c) for c in claim.claimed),
            exhausted=claim.exhausted,
        )

    return routes
