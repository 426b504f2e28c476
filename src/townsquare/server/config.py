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
    "ATTACHMENT_HASH_BYTES",
    "ATTACHMENT_READ_CHUNK_BYTES",
    "CLIENT_MESSAGE_ID_BYTES",
    "DEFAULT_FETCH_LIMIT",
    "MAX_FETCH_LIMIT",
    "MAX_GROUP_ID_BYTES",
    "MAX_JOIN_NOTE_BYTES",
    "MAX_KEY_PACKAGES_PER_UPLOAD",
    "MAX_KEY_PACKAGE_BYTES",
    "MAX_MLS_MESSAGE_BYTES",
    "MAX_SUBSCRIBE_GROUPS",
    "MAX_WEBSOCKET_FRAME_BYTES",
    "MAX_WELCOMES_PER_FETCH",
    "MIN_GROUP_ID_BYTES",
    "WEBSOCKET_CHALLENGE_BYTES",
    "Limits",
    "Settings",
]

#: The largest KeyPackage (an encoded ``MLSMessage``) the relay stores. A suite-1
#: KeyPackage with a Townsquare credential is about 300 bytes; this leaves room
#: for larger suites and credentials.
MAX_KEY_PACKAGE_BYTES = 8 * 1024
#: The most one-time KeyPackages in one upload.
MAX_KEY_PACKAGES_PER_UPLOAD = 100

#: The largest MLS message, Welcome, GroupInfo or ratchet tree in a request, in bytes.
#: Townsquare choice: a commit's GroupInfo need not carry the ratchet tree, since the
#: relay derives the tree itself; a 5,000-member tree (about 1 MB) never travels in
#: one request.
MAX_MLS_MESSAGE_BYTES = 128 * 1024
#: The shortest and longest group id (MLS ``group_id``), in bytes. Clients choose
#: random ids; 16 bytes make collisions and guessing negligible.
MIN_GROUP_ID_BYTES = 16
MAX_GROUP_ID_BYTES = 64
#: The largest sealed note of a join request (a display name and a few words, encrypted).
MAX_JOIN_NOTE_BYTES = 1024
#: The length of a client message id, the key of exactly-once delivery.
CLIENT_MESSAGE_ID_BYTES = 16
#: How many log entries one fetch returns by default, and at most.
DEFAULT_FETCH_LIMIT = 100
MAX_FETCH_LIMIT = 500
#: How many pending Welcomes one fetch returns at most.
MAX_WELCOMES_PER_FETCH = 20
#: The length of the WebSocket challenge the relay sends.
WEBSOCKET_CHALLENGE_BYTES = 32
#: The largest frame a client may send on the WebSocket, in bytes.
MAX_WEBSOCKET_FRAME_BYTES = 64 * 1024
#: The most groups one ``subscribe`` frame may name.
MAX_SUBSCRIBE_GROUPS = 256
#: The length of an attachment's content address: its SHA-256 digest.
ATTACHMENT_HASH_BYTES = 32
#: How much of a blob the relay reads from its store per piece of a download, so that
#: many devices fetching one photo do not each hold it whole in memory.
ATTACHMENT_READ_CHUNK_BYTES = 256 * 1024


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
    #: Messages up to this size (in bytes) are pushed whole on the WebSocket; larger
    #: ones as a notice, which the device follows with a fetch.
    push_inline_max_bytes: int = 4096
    #: How long a WebSocket may take to answer the challenge, in seconds.
    websocket_auth_timeout_seconds: float = 10.0
    #: How long one WebSocket send may take before the connection is dropped, in seconds.
    websocket_send_timeout_seconds: float = 10.0
    #: How many notices wait for one slow connection before it is told it lagged.
    websocket_queue_size: int = 256
    #: The most groups one connection may subscribe to.
    max_subscriptions_per_connection: int = 1024
    #: How many join requests one group keeps waiting for its admins.
    max_join_requests_per_group: int = 100
    #: How many groups' public views (PublicGroup) each relay process keeps in memory.
    public_group_cache_size: int = 64
    #: How long the relay keeps a log entry, a Welcome or an attachment, in seconds
    #: (30 days). Log entries go sooner once every member device has acknowledged them.
    retention_seconds: int = 30 * 86_400
    #: How many messages one device may post (accepted, retries excluded) per window.
    posts_per_window: int = 120
    #: The length of a post-quota window, in seconds.
    post_window_seconds: int = 60
    #: The largest attachment (an encrypted blob), in bytes; checked before the body is read.
    max_attachment_bytes: int = 10 * 1024 * 1024
    #: How many attachment bytes one device may upload per window.
    attachment_bytes_per_window: int = 100 * 1024 * 1024
    #: The length of an upload-quota window, in seconds.
    attachment_window_seconds: int = 3600

    def __post_init__(self) -> None:
        """
        Check the limits that only make sense together.

        :raises ValueError: if an attachment of the largest size could never fit in one
            upload-quota window, or a retention or window length is not positive.
        """
        if self.attachment_bytes_per_window < self.max_attachment_bytes:
            raise ValueError(
                "attachment_bytes_per_window must be at least max_attachment_bytes,"
                " or the largest attachment could never be uploaded"
            )
        for name in ("retention_seconds", "post_window_seconds", "attachment_window_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """
    Everything a relay process needs to start.
    """

    #: The folder holding the database (created if missing).
    data_dir: Path
    limits: Limits = field(default_factory=Limits)
