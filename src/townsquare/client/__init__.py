"""
The Townsquare client SDK: a sans-I/O core and an asyncio driver.

- :mod:`townsquare.client.core`: the device's state machine (keys, MLS groups,
  outbox, cursors, message store), fed answers and told the time.
- :mod:`townsquare.client.driver`: HTTP and WebSocket I/O, SQLite in the
  device's home folder.
- :mod:`townsquare.client.errors`: every error the SDK raises.
- :mod:`townsquare.client.testing`: an in-memory relay for tests.

``docs/sdk.md`` describes the API and its durability guarantees.
"""

from __future__ import annotations

from townsquare.client.core import (
    Client,
    ClientConfig,
    ClientStore,
    Device,
    Event,
    GroupSettings,
    GroupStatus,
    GroupSummary,
    MemberInfo,
    MemoryClientStore,
    StoredMessage,
)
from townsquare.client.errors import (
    AlreadyInitialized,
    ClientError,
    ConnectionFailed,
    GroupClosed,
    InvalidMessage,
    NotAGroupMember,
    NotInitialized,
    ProtocolError,
    StoreCorrupt,
    StoreError,
    StoreFailed,
    UnknownGroup,
    UsageError,
)

__all__ = [
    "AlreadyInitialized",
    "Client",
    "ClientConfig",
    "ClientError",
    "ClientStore",
    "ConnectionFailed",
    "Device",
    "Event",
    "GroupClosed",
    "GroupSettings",
    "GroupStatus",
    "GroupSummary",
    "InvalidMessage",
    "MemberInfo",
    "MemoryClientStore",
    "NotAGroupMember",
    "NotInitialized",
    "ProtocolError",
    "StoreCorrupt",
    "StoreError",
    "StoreFailed",
    "StoredMessage",
    "UnknownGroup",
    "UsageError",
]
