"""
The relay's settings: where it keeps its data and the limits it enforces.

Limits that shape the API (the longest list, the largest value) are protocol
constants here, because ``/openapi.json`` publishes them and clients build to
them. Limits that an operator may tune (body size, rates, quotas) are fields
of :class:`Limits`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "MAX_KEY_PACKAGES_PER_UPLOAD",
    "MAX_KEY_PACKAGE_BYTES",
    "Limits",
    "Settings",
]

#: The largest KeyPackage (an encoded ``MLSMessage``) the relay stores. A suite-1
#: KeyPackage with a Townsquare credential is about 300 bytes; this leaves room
#: for larger suites and credentials.
MAX_KEY_PACKAGE_BYTES = 8 * 1024
#: The most one-time KeyPackages in one upload.
MAX_KEY_PACKAGES_PER_UPLOAD = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """
    Limits an operator may tune; the defaults suit a county of about 100,000 people.
    """

    #: The largest request body, in bytes; checked before the body is read.
    max_body_bytes: int = 256 * 1024
    #: How far a request's timestamp may be from the relay's clock, in seconds.
    clock_skew_seconds: int = 300
    #: The most devices one account may register.
    max_devices_per_account: int = 32
    #: The most one-time KeyPackages the relay stores for one device.
    max_stored_key_packages: int = 500
    #: How many claim requests one device may make per window.
    claims_per_window: int = 120
    #: The length of a claim-quota window, in seconds.
    claim_window_seconds: int = 60
    #: How often expired nonces and quota windows are deleted, in seconds.
    housekeeping_interval_seconds: float = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """
    Everything a relay process needs to start.
    """

    #: The folder holding the database (created if missing).
    data_dir: Path
    limits: Limits = field(default_factory=Limits)
