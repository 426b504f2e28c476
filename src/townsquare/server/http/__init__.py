"""
The relay's HTTP API: a module per resource, plus the edge concerns they share.

Resources: :mod:`.health`, :mod:`.accounts` (accounts and devices),
:mod:`.key_packages`, :mod:`.groups` (groups and their logs), :mod:`.welcomes`.
The WebSocket is :mod:`townsquare.server.websocket`. Shared: :mod:`.problems`
(errors as RFC 9457 problem documents: the one place), :mod:`.signing`
(request-signature dependencies), :mod:`.fields` (JSON forms of keys and
bytes), :mod:`.body_limit`.
"""

from __future__ import annotations
