"""
The relay's clock, a seam so that tests can set the time.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """
    Tells the wall-clock time.
    """

    def now(self) -> int:
        """
        :returns: the current time in whole Unix seconds.
        """
        ...


class SystemClock:
    """
    The operating system's wall clock.
    """

    def now(self) -> int:
        """
        :returns: the current time in whole Unix seconds.
        """
        return int(time.time())
