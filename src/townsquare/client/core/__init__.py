"""
The client core, sans-I/O: device keys, MLS groups, outbox, cursors and message store.

No ``asyncio``, sockets, ``sqlite3`` or HTTP here (an import-linter contract
keeps them out): the :class:`Client` is fed answers, pushes and the time, and
hands out requests as values (:class:`Request`) and events. The asyncio
driver in ``townsquare.client.driver`` does the I/O.
"""

from __future__ import annotations

from townsquare.client.core.client import Client, ClientConfig
from townsquare.client.core.device import Device, check_device_credential
from townsquare.client.core.events import (
    AddFailed,
    CommitAccepted,
    CommitRejected,
    DeviceRegistered,
    EpochAdvanced,
    Event,
    GroupCreated,
    GroupJoined,
    GroupResynced,
    InviteFailed,
    InviteReady,
    JoinFailed,
    JoinRequested,
    KeyPackagesUploaded,
    MemberJoined,
    MemberLeft,
    MessageReceived,
    MessageSent,
    MessageUndecryptable,
    ProfileChanged,
    RelayFailure,
    RemovedFromGroup,
    ResyncRequired,
    SendFailed,
    TitleChanged,
)
from townsquare.client.core.groups import GroupSettings, GroupStatus, GroupSummary, MemberInfo
from townsquare.client.core.messages import StoredMessage
from townsquare.client.core.relay_api import Request, Response
from townsquare.client.core.retry import Backoff
from townsquare.client.core.store import ClientStore, MemoryClientStore

__all__ = [
    "AddFailed",
    "Backoff",
    "Client",
    "ClientConfig",
    "ClientStore",
    "CommitAccepted",
    "CommitRejected",
    "Device",
    "DeviceRegistered",
    "EpochAdvanced",
    "Event",
    "GroupCreated",
    "GroupJoined",
    "GroupResynced",
    "GroupSettings",
    "GroupStatus",
    "GroupSummary",
    "InviteFailed",
    "InviteReady",
    "JoinFailed",
    "JoinRequested",
    "KeyPackagesUploaded",
    "MemberInfo",
    "MemberJoined",
    "MemberLeft",
    "MemoryClientStore",
    "MessageReceived",
    "MessageSent",
    "MessageUndecryptable",
    "ProfileChanged",
    "RelayFailure",
    "RemovedFromGroup",
    "Request",
    "Response",
    "ResyncRequired",
    "SendFailed",
    "StoredMessage",
    "TitleChanged",
    "check_device_credential",
]
