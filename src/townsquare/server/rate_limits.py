"""
Per-device rate limits on what fills the store: posted messages and uploaded attachments.

Both use the store's fixed-window quotas (:meth:`Storage.consume_quota`), the
mechanism KeyPackage claims use, kept in the database so that every relay
process sharing it counts together. They differ from claims in one way:

Townsquare choice: only what the relay accepts counts, so a refused request, by
the limit or for any other reason, changes nothing in the store, and a device
that sends a malformed message is told why rather than losing quota.

A post is checked and counted in the transaction that stores it: the route
builds a :class:`~townsquare.server.storage.interface.QuotaCharge`
(:meth:`DeviceRateLimits.post_charge`) and the append checks it after the
retry check (a retry answered from the store is neither charged nor refused)
and charges it with the new entry. So posts of one device in flight at the
same moment can no longer take a window over its limit. (Handshake messages,
whose checks are expensive, are also checked with :meth:`Storage.check_quota`
before that work, so that a device over its quota is refused cheaply.)

An upload is checked before the work (:meth:`Storage.check_quota`, which writes
nothing) and counted after it succeeded. The cost: uploads of one device that
run at the same moment may all pass the check, so a window can end up over its
limit by the uploads in flight; each was within the limit when it was checked,
each is counted, and the next one is refused until the window ends.
"""

from __future__ import annotations

from townsquare.server.clock import Clock
from townsquare.server.config import Limits
from townsquare.server.storage import Device, Storage
from townsquare.server.storage.interface import QuotaCharge

__all__ = ["ATTACHMENT_BYTES_ACTION", "POST_ACTION", "DeviceRateLimits"]

#: The quota name of posted messages (one use per message stored).
POST_ACTION = "post-message"
#: The quota name of uploaded attachment bytes (one use per byte).
ATTACHMENT_BYTES_ACTION = "attachment-bytes"

# Counting after the work records what was accepted; it never refuses, because the
# check came before the work, and what was stored is stored.
_RECORD_ONLY = 1 << 62


class DeviceRateLimits:
    """
    Charges posts, and checks and counts uploads, against each device's quotas.
    """

    def __init__(self, storage: Storage, clock: Clock, limits: Limits) -> None:
        """
        :param storage: where quota windows are kept.
        :param clock: the relay's clock.
        :param limits: ``posts_per_window``, ``attachment_bytes_per_window`` and their windows.
        """
        self._storage = storage
        self._clock = clock
        self._limits = limits

    def post_charge(self, device: Device) -> QuotaCharge:
        """
        The charge of one post to the device's post quota, for the store to check and count.

        :param device: the posting device.
        :returns: one use of its ``post-message`` quota, now.
        """
        return QuotaCharge(
            subject=device.device_key,
            action=POST_ACTION,
            now=self._clock.now(),
            window_seconds=self._limits.post_window_seconds,
            limit=self._limits.posts_per_window,
        )

    async def check_upload(self, device: Device, size: int) -> None:
        """
        Refuse an upload of ``size`` bytes that would pass the device's byte quota.

        :raises RateLimited: if it would; ``retry_after`` says when the window ends.
        """
        await self._storage.check_quota(
            device.device_key,
            ATTACHMENT_BYTES_ACTION,
            now=self._clock.now(),
            window_seconds=self._limits.attachment_window_seconds,
            limit=self._limits.attachment_bytes_per_window,
            # An empty blob still costs a request; count it as one byte.
            amount=max(1, size),
        )

    async def count_upload(self, device: Device, size: int) -> None:
        """
        Count the bytes of an accepted upload (a blob stored before counts too: it was sent).
        """
        await self._count(
            device,
            ATTACHMENT_BYTES_ACTION,
            amount=max(1, size),
            window_seconds=self._limits.attachment_window_seconds,
        )

    async def _count(
        self, device: Device, action: str, *, amount: int, window_seconds: int
    ) -> None:
        await self._storage.consume_quota(
            device.device_key,
            action,
            now=self._clock.now(),
            window_seconds=window_seconds,
            limit=_RECORD_ONLY,
            amount=amount,
        )
