"""
The device's store, as the client core sees it: one record scope for the device, one per group.

Each scope is a :class:`~townsquare.mls.group_store.GroupStore`: sorted
records with atomic batches. Everything about one group lives in that
group's scope: its MLS state (written by
:class:`~townsquare.mls.group_store.GroupPersistence`) and, under ``app/``,
its cursor, outbox, message store and profiles. One batch in one scope is
therefore all it takes to save "a received message, the new state and the
cursor" together, or "an outbox entry and the group state that encrypted
it". The device scope holds the device's keys and its KeyPackage pool.

:class:`MemoryClientStore` is the fake (a dict per scope); the driver's
``SqliteClientStore`` is the real one. Both pass the same contract tests.
"""

from __future__ import annotations

from typing import Protocol

from townsquare.mls.group_store import GroupStore, MemoryGroupStore

__all__ = ["ClientStore", "MemoryClientStore"]


class ClientStore(Protocol):
    """
    The device's records: a device scope and one scope per group.
    """

    def device_records(self) -> GroupStore:
        """
        :returns: the device scope (keys, KeyPackage pool, settings).
        """
        ...

    def group_records(self, group_id: bytes) -> GroupStore:
        """
        :returns: the scope of ``group_id`` (created empty on first use).
        """
        ...

    def group_ids(self) -> list[bytes]:
        """
        :returns: the ids of the groups whose scope holds at least one record, sorted.
        """
        ...


class MemoryClientStore:
    """
    A :class:`ClientStore` in memory: the fake for tests.
    """

    __slots__ = ("_device", "_groups")

    def __init__(self) -> None:
        """
        Start empty.
        """
        self._device = MemoryGroupStore()
        self._groups: dict[bytes, MemoryGroupStore] = {}

    def device_records(self) -> GroupStore:
        """
        :returns: the device scope.
        """
        return self._device

    def group_records(self, group_id: bytes) -> GroupStore:
        """
        :returns: the scope of ``group_id``.
        """
        store = self._groups.get(group_id)
        if store is None:
            store = self._groups[group_id] = MemoryGroupStore()
        return store

    def group_ids(self) -> list[bytes]:
        """
        :returns: the ids of the groups with records, sorted.
        """
        return sorted(gid for gid, store in self._groups.items() if store.scan(""))
