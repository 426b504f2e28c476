"""
Retry slots: one kind of request at a time, retried with exponential backoff and jitter.

Each thing the core may ask the relay for (register, fetch a group's log,
send its outbox head, …) has a :class:`Slot`: at most one request of that
kind is in flight, and after a failure the next attempt waits
``base * 2**failures`` seconds (capped), half of it fixed and half drawn
from the injected rng ("equal jitter"), so that devices cut off together do
not all come back in the same instant.
"""

from __future__ import annotations

from dataclasses import dataclass

from townsquare.mls.ciphersuite import Rng

__all__ = ["Backoff", "Slot"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """
    How long to wait before the next attempt.

    :param initial_seconds: the wait after the first failure (before jitter).
    :param max_seconds: the cap.
    """

    initial_seconds: float = 1.0
    max_seconds: float = 300.0

    def delay(self, failures: int, rng: Rng) -> float:
        """
        :param failures: consecutive failures so far (1 after the first).
        :param rng: the randomness source for the jitter.
        :returns: seconds to wait, in ``[base / 2, base]`` with ``base`` the capped exponential.
        """
        exponent = min(max(failures - 1, 0), 32)
        base = min(self.max_seconds, self.initial_seconds * (2.0**exponent))
        fraction = int.from_bytes(rng(4), "big") / 2**32
        return base / 2 + fraction * base / 2


class Slot:
    """
    One kind of request: whether it is wanted, in flight, or waiting out a backoff.
    """

    __slots__ = ("failures", "in_flight", "not_before", "wanted")

    def __init__(self, *, wanted: bool = False) -> None:
        """
        Start idle (or wanted at once).
        """
        self.wanted = wanted
        self.in_flight: int | None = None
        self.not_before = 0.0
        self.failures = 0

    def due(self, now: float) -> bool:
        """
        :returns: whether a request of this kind should start now.
        """
        return self.wanted and self.in_flight is None and now >= self.not_before

    def ready(self, now: float) -> bool:
        """
        :returns: whether a request may start now if there is work (nothing in flight, no wait).
        """
        return self.in_flight is None and now >= self.not_before

    def start(self, request_id: int) -> None:
        """
        A request of this kind is now in flight.
        """
        self.in_flight = request_id
        self.wanted = False

    def done(self) -> None:
        """
        The request succeeded: forget past failures.
        """
        self.in_flight = None
        self.failures = 0
        self.not_before = 0.0

    def failed(
        self, now: float, backoff: Backoff, rng: Rng, *, retry_after: float | None = None
    ) -> None:
        """
        The request failed in a way worth retrying: want it again after a backoff.
        """
        self.in_flight = None
        self.wanted = True
        self.failures += 1
        delay = backoff.delay(self.failures, rng)
        if retry_after is not None:
            delay = max(delay, retry_after)
        self.not_before = now + delay
