"""
The Townsquare relay: accounts, devices, KeyPackages and delivery, over HTTP and WebSocket.

:func:`create_app` builds the ASGI application; ``townsquare serve`` runs it
under uvicorn. The relay stores only keys, certificates, opaque MLS messages
and the metadata it needs to order and route them: ``docs/protocol.md``.
"""

from __future__ import annotations

from townsquare.server.app import create_app
from townsquare.server.config import Limits, Settings

__all__ = ["Limits", "Settings", "create_app"]
