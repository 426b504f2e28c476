"""
Storage on the device: the real implementations of the storage seams of the sans-I/O cores.

``townsquare.mls`` never imports ``sqlite3``; the stores here implement its
:class:`~townsquare.mls.group_store.GroupStore` protocol over SQLite.
"""

from __future__ import annotations

from townsquare.storage.sqlite_group_store import SCHEMA_VERSION, SqliteGroupStore, connect

__all__ = ["SCHEMA_VERSION", "SqliteGroupStore", "connect"]
